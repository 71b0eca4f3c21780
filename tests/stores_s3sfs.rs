//! The S3 store on s3s-fs, a second S3 server that, unlike moto, checks SigV4 signatures:
//! the backends conformance suite, conditional create honoured at the commit point, a wrong
//! secret refused without quoting it, and a CLI round trip through `--store s3://…`.

use bytes::Bytes;
use cpvault_backends::{conformance, StoreError};

use crate::support::{cli_round_trip, S3Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (cargo install s3s-fs@0.14.1 --locked --features binary)"]
async fn s3s_fs_passes_the_conformance_suite() {
    let s = S3Server::s3s_fs();
    conformance::run_all(&s.store("suite/prefix")).await;
}

// What cpvault sends over HTTPS (`UNSIGNED-PAYLOAD`, the default there), against a server
// that checks signatures: accepted, and every byte reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (cargo install s3s-fs@0.14.1 --locked --features binary)"]
async fn unsigned_payload_uploads_pass_the_conformance_suite() {
    let s = S3Server::s3s_fs();
    conformance::run_all(&s.store_with("unsigned", &[("AWS_UNSIGNED_PAYLOAD", "true")])).await;
}

// s3s-fs honours If-None-Match: *, so the create check lets commits through and the server
// itself refuses the second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (cargo install s3s-fs@0.14.1 --locked --features binary)"]
async fn a_second_create_is_refused_and_the_first_stays() {
    let s = S3Server::s3s_fs();
    let st = s.store("commit");
    let k = "admin/20261127T000000Z-0000abcd.manifest.json";
    st.put_create(k, Bytes::from_static(b"first"))
        .await
        .unwrap();
    let e = st
        .put_create(k, Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("s3://cpvault-test/commit") && msg.contains(k) && msg.contains("refusing"),
        "{msg}"
    );
    assert_eq!(&st.get_bytes(k).await.unwrap()[..], b"first");
}

// s3s-fs checks signatures (moto does not): a wrong secret fails with the store named and
// the secret nowhere in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (cargo install s3s-fs@0.14.1 --locked --features binary)"]
async fn a_wrong_secret_is_refused_without_quoting_it() {
    let s = S3Server::s3s_fs();
    let wrong = "not-the-secret-key-at-all";
    let st = s.store_with(
        "p",
        &[
            ("AWS_SECRET_ACCESS_KEY", wrong),
            ("CPVAULT_STORE_MAX_RETRIES", "0"),
        ],
    );
    conformance::bad_credentials_refused(&st, wrong).await;
}

#[test]
#[ignore = "needs s3s-fs (cargo install s3s-fs@0.14.1 --locked --features binary)"]
fn cli_round_trip_on_s3s_fs() {
    let s = S3Server::s3s_fs();
    let url = s.url("backups");
    cli_round_trip(&url, |cwd, args| s.cpvault(cwd, args));
}
