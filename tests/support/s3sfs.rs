//! s3s-fs, a second real S3 server (objects as files under a root directory, SigV4 enforced,
//! so unlike moto it rejects a wrongly signed request), on a free loopback port with one
//! bucket, killed on drop. Its bucket is a directory under the root, made before it starts.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use super::{cpvault_cmd, free_port, missing, on_path};

pub const INSTALL: &str = "cargo install s3s-fs@0.14.1 --locked --features binary";
const ACCESS_KEY: &str = "cpvault-test-access";
const SECRET_KEY: &str = "cpvault-test-secret-key";

/// A real s3s-fs server on loopback with one bucket, killed on drop.
pub struct S3sFs {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
    dir: tempfile::TempDir,
}

impl S3sFs {
    /// Starts `s3s-fs` on a free port over a fresh root with a bucket in it.
    pub fn start() -> S3sFs {
        if !on_path("s3s-fs") {
            missing("`s3s-fs`", INSTALL);
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let bucket = "cpvault-test";
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("s3s-fs.log")).unwrap();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .env("RUST_LOG", "s3s_fs=info,s3s=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start s3s-fs");
        let mut s = S3sFs {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.into(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s.answers() {
            if let Ok(Some(exit)) = s.child.try_wait() {
                panic!("s3s-fs exited ({exit}): {}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }

    /// Whether the server answers HTTP at all (an unsigned request is refused, which is fine).
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut out).is_ok()
            && out.starts_with("HTTP/1.1 ")
    }

    /// The AWS_* settings that point a store at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `cpvault` with only this server's AWS_* settings (none inherited from the caller).
    pub fn cpvault(&self, cwd: &Path, args: &[&str]) -> Output {
        cpvault_cmd(cwd)
            .envs(self.env())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
