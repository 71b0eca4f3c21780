//! Azurite's blob service (the Azure Storage emulator, from npm) on a free loopback port,
//! in memory, with one container, killed on drop. It uses Azurite's published development
//! account, whose key is no secret, and never sends telemetry or any traffic off loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::encoding::{base64, percent_encode, unbase64};
use super::server::{status_line, ServerProcess};
use super::{cpvault_with, find_on_path, free_port, missing, pairs};

/// Azurite's well-known development account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where [`INSTALL`], run in the repository root, puts the blob service.
const LOCAL_BIN: &str = ".ci/node/node_modules/.bin/azurite-blob";
pub const INSTALL: &str = "npm install --no-save --prefix .ci/node azurite@3.35.0";

/// A real Azurite blob service on loopback with one container, killed on drop.
pub struct Azurite {
    process: ServerProcess,
    /// The service root, `http://127.0.0.1:PORT` (blobs are below `/devstoreaccount1/`).
    pub endpoint: String,
    pub container: String,
}

/// The repository's local install, else `azurite-blob` on PATH; panics with the install
/// command when neither is there.
fn binary() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(LOCAL_BIN);
    if local.is_file() {
        return local;
    }
    find_on_path("azurite-blob").unwrap_or_else(|| {
        missing(
            "Azurite's `azurite-blob`",
            &format!("in the repository root: {INSTALL}"),
        )
    })
}

impl Azurite {
    /// Starts `azurite-blob` on a free port and creates a container.
    pub fn start() -> Azurite {
        let bin = binary();
        let port = free_port();
        let process = ServerProcess::spawn("azurite-blob", |dir| {
            let mut c = Command::new(&bin);
            c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--loose"])
                .arg("--disableTelemetry")
                .current_dir(dir);
            c
        });
        let mut a = Azurite {
            process,
            endpoint: format!("http://127.0.0.1:{port}"),
            container: "cpvault-test".into(),
        };
        let (endpoint, container) = (a.endpoint.clone(), a.container.clone());
        a.process
            .wait_ready(Duration::from_secs(60), Duration::from_millis(200), || {
                match create_container(&endpoint, &container) {
                    Some(status) if status.contains(" 201") => true,
                    Some(status) => panic!("Azurite refused to create the container: {status}"),
                    None => false,
                }
            });
        a
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Settings for the emulator mode: only the flag and where the service listens (the
    /// development account and key are the store's defaults).
    pub fn vars(&self) -> Vec<(String, String)> {
        pairs(&[
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", &self.endpoint),
        ])
    }

    /// Settings as for a real storage account: name, key and an explicit endpoint.
    pub fn account_vars(&self) -> Vec<(String, String)> {
        pairs(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY),
            (
                "AZURE_STORAGE_ENDPOINT",
                &format!("{}/{ACCOUNT}", self.endpoint),
            ),
            ("AZURE_ALLOW_HTTP", "true"),
        ])
    }

    /// Settings with a container SAS token (read, add, create, write, delete, list on this
    /// container only, valid for an hour) instead of the key: the least a backup needs.
    pub fn sas_vars(&self) -> Vec<(String, String)> {
        let now = chrono::Utc::now();
        let fmt = "%Y-%m-%dT%H:%M:%SZ";
        let start = (now - chrono::Duration::minutes(5)).format(fmt).to_string();
        let expiry = (now + chrono::Duration::hours(1)).format(fmt).to_string();
        let (version, perms, protocol) = ("2021-08-06", "racwdl", "https,http");
        let resource = format!("/blob/{ACCOUNT}/{}", self.container);
        // Service SAS, version 2020-12-06 and later: identifier, IP, snapshot time,
        // encryption scope and the five response-header overrides are empty.
        let to_sign = format!(
            "{perms}\n{start}\n{expiry}\n{resource}\n\n\n{protocol}\n{version}\nc\n\n\n\n\n\n\n"
        );
        let sig = base64(&hmac_sha256(&unbase64(KEY), to_sign.as_bytes()));
        let sas = format!(
            "sv={version}&sr=c&sp={perms}&st={start}&se={expiry}&spr={protocol}&sig={}",
            percent_encode(&sig)
        );
        pairs(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
            ("AZURE_STORAGE_SAS_KEY", &sas),
            (
                "AZURE_STORAGE_ENDPOINT",
                &format!("{}/{ACCOUNT}", self.endpoint),
            ),
            ("AZURE_ALLOW_HTTP", "true"),
        ])
    }

    /// `cpvault` with only this server's settings (no AZURE_* inherited from the caller).
    pub fn cpvault(&self, cwd: &Path, args: &[&str]) -> Output {
        cpvault_with(cwd, self.vars(), args)
    }
}

/// One Shared Key signed `Create Container`; the status line, or `None` while the service
/// does not answer yet.
fn create_container(endpoint: &str, container: &str) -> Option<String> {
    let addr = endpoint.trim_start_matches("http://");
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let c = container;
    // Path-style addressing: the account is the first path segment, and signs twice.
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{c}\nrestype:container"
    );
    let sig = base64(&hmac_sha256(&unbase64(KEY), to_sign.as_bytes()));
    let auth = format!("SharedKey {ACCOUNT}:{sig}");
    status_line(
        addr,
        "PUT",
        &format!("/{ACCOUNT}/{c}?restype=container"),
        &[
            ("x-ms-date", &date),
            ("x-ms-version", version),
            ("Authorization", &auth),
        ],
    )
}

// Shared Key signing needs HMAC-SHA256; the test crate has sha2 but no HMAC, and a few lines
// here beat a dev-dependency.

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[test]
fn hmac_and_base64_match_known_answers() {
    // RFC 4231 test case 2.
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        hex::encode(&mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(unbase64("Zm9vYg=="), b"foob");
    assert_eq!(unbase64(&base64(&unbase64(KEY))), unbase64(KEY));
}
