//! The Azure store on Azurite: the backends conformance suite, each way of configuring
//! credentials (emulator defaults, account key with an endpoint, SAS token), the refusal of
//! a second create at the commit point, a wrong key or SAS refused without quoting it, and a CLI
//! round trip through `--store az://…`.

use bytes::Bytes;
use cpvault_backends::{azure, conformance, Store, StoreError};

use crate::support::azurite::Azurite;
use crate::support::*;

fn store(vars: Vec<(String, String)>, url: &str) -> Store {
    let (inner, display) = azure::open_with_vars(url, vars).unwrap();
    Store::from_object_store(inner, display)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs azurite (npm install --no-save --prefix .ci/node azurite@3.35.0)"]
async fn azurite_passes_the_conformance_suite() {
    let a = Azurite::start();
    let url = format!("az://{}/suite/prefix", a.container);
    conformance::run_all(&store(a.vars(), &url)).await;
}

// The settings a real storage account takes (name, key or SAS, endpoint) reach the server
// and sign correctly; the emulator shortcut is not the only path that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs azurite (npm install --no-save --prefix .ci/node azurite@3.35.0)"]
async fn account_key_and_sas_settings_work_on_azurite() {
    let a = Azurite::start();
    for (name, vars) in [("key", a.account_vars()), ("sas", a.sas_vars())] {
        let s = store(vars, &format!("az://{}/{name}", a.container));
        conformance::put_get_list_delete(&s).await;
        conformance::create_if_absent(&s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs azurite (npm install --no-save --prefix .ci/node azurite@3.35.0)"]
async fn a_second_create_is_refused_and_the_first_stays() {
    let a = Azurite::start();
    let s = store(a.vars(), &format!("az://{}/commit", a.container));
    let k = "admin/20261127T000000Z-0000abcd.manifest.json";
    s.put_create(k, Bytes::from_static(b"first")).await.unwrap();
    let e = s
        .put_create(k, Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("az://cpvault-test/commit") && msg.contains(k) && msg.contains("refusing"),
        "{msg}"
    );
    assert_eq!(&s.get_bytes(k).await.unwrap()[..], b"first");
}

// A rejected key or SAS token fails the write and the read with the store named, and the
// secret appears nowhere in the message (object_store redacts a SAS-signed URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs azurite (npm install --no-save --prefix .ci/node azurite@3.35.0)"]
async fn a_wrong_key_or_sas_is_refused_without_quoting_it() {
    let a = Azurite::start();
    let wrong_key = "d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3JvbmdrZXk=";
    let wrong_sig = "d3JvbmdzaWduYXR1cmU";
    let wrong_sas = format!("sv=2021-08-06&sr=c&sp=racwdl&se=2099-01-01T00:00:00Z&sig={wrong_sig}");
    for (name, secret, shown) in [
        ("AZURE_STORAGE_ACCOUNT_KEY", wrong_key, wrong_key),
        ("AZURE_STORAGE_SAS_KEY", wrong_sas.as_str(), wrong_sig),
    ] {
        let mut vars = a.account_vars();
        vars.retain(|(k, _)| k != "AZURE_STORAGE_ACCOUNT_KEY");
        vars.push((name.into(), secret.into()));
        vars.push(("CPVAULT_STORE_MAX_RETRIES".into(), "0".into()));
        let s = store(vars, &format!("az://{}/p", a.container));
        conformance::bad_credentials_refused(&s, shown).await;
    }
}

#[test]
#[ignore = "needs azurite (npm install --no-save --prefix .ci/node azurite@3.35.0)"]
fn cli_round_trip_on_azurite() {
    let a = Azurite::start();
    let url = format!("az://{}/backups", a.container);
    cli_round_trip(&url, |cwd, args| a.cpvault(cwd, args));
}
