//! Unit tests of the kube source's pure parts.

use super::*;

#[test]
fn a_distroless_pod_and_a_missing_etcdctl_are_told_apart_from_other_failures() {
    let runc = "failed to exec in container: failed to start exec \"ab\": OCI runtime exec failed: exec failed: unable to start container process: exec: \"sh\": executable file not found in $PATH: unknown";
    assert_eq!(missing_tool(runc), Some("sh"));
    assert_eq!(
        missing_tool(
            "sh: etcdctl: not found (command terminated with non-zero exit code: exit status 98)"
        ),
        Some("etcdctl")
    );
    assert_eq!(
        missing_tool("Error: context deadline exceeded (command terminated with non-zero exit code: exit status 1)"),
        None
    );
}
