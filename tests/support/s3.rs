//! The real S3 servers the store tests run against, as one type: moto (no signature checks)
//! and s3s-fs (objects as files under a root directory, SigV4 enforced, so unlike moto it
//! rejects a wrongly signed request). Each runs on a free loopback port with one bucket and
//! its own credentials and is killed on drop; one set of AWS_* settings points a store or
//! the `cpvault` binary at either. Never a real AWS endpoint.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use cpvault_backends::{s3, Store};

use super::server::{status_line, ServerProcess};
use super::{cpvault_with, free_port, missing, on_path, pairs};

/// How to install moto's server.
pub const MOTO_INSTALL: &str = "pip install 'moto[server]'";
/// How to install s3s-fs (newer versions need a newer rustc).
pub const S3S_FS_INSTALL: &str = "cargo install s3s-fs@0.14.1 --locked --features binary";
const BUCKET: &str = "cpvault-test";
const S3S_FS_ACCESS_KEY: &str = "cpvault-test-access";
const S3S_FS_SECRET_KEY: &str = "cpvault-test-secret-key";

/// A real S3 server on loopback with one bucket, killed on drop.
pub struct S3Server {
    process: ServerProcess,
    pub endpoint: String,
    pub bucket: String,
    access_key: &'static str,
    secret_key: &'static str,
}

impl S3Server {
    /// Starts `moto_server` on a free port and creates the bucket with an unsigned PUT (moto
    /// does not check signatures), which is also how it tells that it is up.
    pub fn moto() -> S3Server {
        if !on_path("moto_server") {
            missing("`moto_server`", MOTO_INSTALL);
        }
        let port = free_port();
        let process = ServerProcess::spawn("moto_server", |_| {
            let mut c = Command::new("moto_server");
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        });
        let mut s = S3Server::on(process, port, "testing", "testing-secret");
        let (addr, bucket) = (s.addr(), format!("/{}", s.bucket));
        s.process
            .wait_ready(Duration::from_secs(60), Duration::from_millis(200), || {
                status_line(&addr, "PUT", &bucket, &[]).is_some_and(|l| l.contains(" 200"))
            });
        s
    }

    /// Starts `s3s-fs` on a free port over a fresh root whose bucket is a directory made
    /// before it starts.
    pub fn s3s_fs() -> S3Server {
        if !on_path("s3s-fs") {
            missing("`s3s-fs`", S3S_FS_INSTALL);
        }
        let port = free_port();
        let process = ServerProcess::spawn("s3s-fs", |dir: &Path| {
            let root = dir.join("root");
            std::fs::create_dir_all(root.join(BUCKET)).unwrap();
            let mut c = Command::new("s3s-fs");
            c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3S_FS_ACCESS_KEY])
                .args(["--secret-key", S3S_FS_SECRET_KEY])
                .arg(&root)
                .env("RUST_LOG", "s3s_fs=info,s3s=warn");
            c
        });
        let mut s = S3Server::on(process, port, S3S_FS_ACCESS_KEY, S3S_FS_SECRET_KEY);
        let addr = s.addr();
        // An unsigned request is refused, which is fine: any answer means it is up.
        s.process
            .wait_ready(Duration::from_secs(60), Duration::from_millis(100), || {
                status_line(&addr, "GET", "/", &[]).is_some_and(|l| l.starts_with("HTTP/1.1 "))
            });
        s
    }

    fn on(
        process: ServerProcess,
        port: u16,
        access_key: &'static str,
        secret_key: &'static str,
    ) -> S3Server {
        S3Server {
            process,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: BUCKET.into(),
            access_key,
            secret_key,
        }
    }

    fn addr(&self) -> String {
        self.endpoint.trim_start_matches("http://").to_string()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The AWS_* settings that point a store at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        pairs(&[
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", self.access_key),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ])
    }

    /// A store on `s3://BUCKET/PREFIX` with this server's settings.
    pub fn store(&self, prefix: &str) -> Store {
        self.store_with(prefix, &[])
    }

    /// A store on `s3://BUCKET/PREFIX` with this server's settings, `overrides` replacing
    /// (or adding to) them.
    pub fn store_with(&self, prefix: &str, overrides: &[(&str, &str)]) -> Store {
        let mut vars = self.env();
        vars.retain(|(k, _)| overrides.iter().all(|(o, _)| k != o));
        vars.extend(pairs(overrides));
        let (inner, display) = s3::open_with_vars(&self.url(prefix), vars).unwrap();
        Store::from_object_store(inner, display)
    }

    /// `cpvault` with only this server's AWS_* settings (none inherited from the caller).
    pub fn cpvault(&self, cwd: &Path, args: &[&str]) -> Output {
        cpvault_with(cwd, self.env(), args)
    }
}
