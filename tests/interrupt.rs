// Interrupted commands leave no plaintext behind: extract stopped by SIGINT, SIGTERM or SIGHUP
// mid-stream removes its hidden work dir (which holds the CA keys) and leaves --to empty.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

// extract killed by a signal left a directory with the plaintext CA key.
#[test]
fn extract_interrupted_by_a_signal_leaves_no_file_of_its_own() {
    let w = World::new();
    make_pki(&w.path("pki"));
    // Random bytes do not compress: a big archive keeps extract busy long enough to signal it.
    let st = Command::new("bash")
        .arg("-c")
        .arg("head -c 400000000 /dev/urandom > big.db")
        .current_dir(w.dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let r = w.backup(&["--file", "big.db", "--pki-dir", "pki"]);
    for signal in ["INT", "TERM", "HUP"] {
        let to = w.path(&format!("out-{signal}"));
        let child = cpvault_cmd(w.dir.path())
            .args(["extract", &r, "-i", w.key.to_str().unwrap(), "--to"])
            .arg(&to)
            .args(["--store", w.store.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until plaintext is being written into the work dir, then signal.
        let deadline = Instant::now() + Duration::from_secs(60);
        let work = loop {
            let found = std::fs::read_dir(w.dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".cpvault-extract-"))
                        && p.join("files/big.db").exists()
                });
            if let Some(p) = found {
                break p;
            }
            assert!(Instant::now() < deadline, "extract never started writing");
            std::thread::sleep(Duration::from_millis(5));
        };
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        assert!(
            !out.status.success(),
            "SIG{signal}: extract finished anyway"
        );
        assert!(
            stderr(&out).contains("interrupted"),
            "SIG{signal}: {}",
            stderr(&out)
        );
        assert!(
            !work.exists(),
            "SIG{signal}: the work dir {work:?} is still there"
        );
        let left = std::fs::read_dir(&to).map_or(0, |d| d.count());
        assert_eq!(left, 0, "SIG{signal}: files left in --to");
    }
}
