//! The sandbox node's test kubelet: a thread that polls the manifests directory and makes
//! each static-pod manifest a local process (in its own process group), stops it when the
//! manifest leaves or changes, and restarts it with back-off when it exits by itself. It
//! logs next to the node's root, never under it, and leaves no process behind: dropping it,
//! even while unwinding, kills every process it started.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::manifest::parse_command;
use super::POLL;

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a stopped process gets between SIGTERM and SIGKILL (the kubelet's grace period).
const GRACE: Duration = Duration::from_secs(5);

/// Starts the kubelet thread on `manifests` (commands run in `work`, logs go to `logs`); it
/// publishes the running manifests' names in `running` and stops when `stop` is set.
pub(super) fn spawn(
    manifests: PathBuf,
    work: PathBuf,
    logs: PathBuf,
    running: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let mut kubelet = Kubelet {
        env: Env {
            manifests,
            work,
            logs,
        },
        pods: BTreeMap::new(),
        running,
    };
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            kubelet.tick();
            std::thread::sleep(POLL);
        }
    })
}

/// The kubelet thread's state. Dropping it (normally or while unwinding) kills every process.
struct Kubelet {
    env: Env,
    pods: BTreeMap<String, Pod>,
    running: Arc<Mutex<Vec<String>>>,
}

/// Where the kubelet looks and writes; separate from `pods` so both can be borrowed at once.
struct Env {
    manifests: PathBuf,
    work: PathBuf,
    logs: PathBuf,
}

struct Pod {
    manifest: Vec<u8>,
    command: Result<Vec<String>, String>,
    process: Option<Process>,
    next_start: Instant,
    backoff: Duration,
}

struct Process {
    child: Child,
    started: Instant,
    /// Length of the output log when it started, so an exit reports only its own output.
    log_offset: u64,
}

impl Kubelet {
    fn tick(&mut self) {
        let present = read_manifests(&self.env.manifests);
        // A removed or changed manifest stops its process, as the real kubelet does.
        let stale: Vec<String> = (self.pods.iter())
            .filter(|(name, pod)| present.get(*name) != Some(&pod.manifest))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let mut pod = self.pods.remove(&name).unwrap();
            let why = match present.contains_key(&name) {
                true => "manifest changed",
                false => "manifest removed",
            };
            self.env.note(&format!("{name}: {why}"));
            self.env.stop(&name, &mut pod, GRACE);
        }
        for (name, manifest) in present {
            if self.pods.contains_key(&name) {
                continue;
            }
            let command = parse_command(&String::from_utf8_lossy(&manifest));
            match &command {
                Ok(c) => self
                    .env
                    .note(&format!("{name}: new manifest, command {c:?}")),
                Err(e) => self.env.note(&format!("{name}: not started: {e}")),
            }
            let pod = Pod {
                manifest,
                command,
                process: None,
                next_start: Instant::now(),
                backoff: BACKOFF_START,
            };
            self.pods.insert(name, pod);
        }
        for (name, pod) in &mut self.pods {
            self.env.reap(name, pod);
            if pod.process.is_none() && Instant::now() >= pod.next_start {
                self.env.start(name, pod);
            }
        }
        *self.running.lock().unwrap() = (self.pods.iter())
            .filter(|(_, pod)| pod.process.is_some())
            .map(|(name, _)| name.clone())
            .collect();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for (name, pod) in &mut self.pods {
            self.env.stop(name, pod, Duration::ZERO);
        }
        if let Ok(mut running) = self.running.lock() {
            running.clear();
        }
    }
}

impl Env {
    /// Appends a timestamped line to the kubelet log.
    fn note(&self, msg: &str) {
        let time = chrono::Utc::now().format("%H:%M:%S%.3f");
        let line = format!("{time} {}\n", msg.trim_end());
        let path = self.logs.join("kubelet.log");
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn output_log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts the pod's command in its own process group, so stopping it reaches any
    /// processes it forked. A command that cannot be started counts as a crash.
    fn start(&self, name: &str, pod: &mut Pod) {
        let Ok(cmd) = &pod.command else { return };
        let path = self.output_log(name);
        let spawned = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|out| {
                let log_offset = out.metadata()?.len();
                let child = Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .current_dir(&self.work)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    .process_group(0)
                    .spawn()?;
                Ok(Process {
                    child,
                    started: Instant::now(),
                    log_offset,
                })
            });
        match spawned {
            Ok(p) => {
                self.note(&format!(
                    "{name}: started pid {}: {}",
                    p.child.id(),
                    cmd.join(" ")
                ));
                pod.process = Some(p);
            }
            Err(e) => self.back_off(name, pod, &format!("could not start: {e}"), ""),
        }
    }

    /// Notices a process that exited by itself and schedules its restart.
    fn reap(&self, name: &str, pod: &mut Pod) {
        let Some(p) = &mut pod.process else { return };
        let Ok(Some(status)) = p.child.try_wait() else {
            return;
        };
        let (pid, ran) = (p.child.id(), p.started.elapsed());
        // Whatever it forked and left behind goes too.
        signal_group(pid, "KILL");
        // Like CrashLoopBackOff: a process that ran a while starts over with a short delay.
        if ran >= Duration::from_secs(10) {
            pod.backoff = BACKOFF_START;
        }
        let out = tail(&self.output_log(name), p.log_offset, 10);
        pod.process = None;
        let why = format!("pid {pid} exited after {ran:.1?}: {status}");
        self.back_off(name, pod, &why, &out);
    }

    /// Logs why the pod is down and when it restarts, followed by `detail` lines.
    fn back_off(&self, name: &str, pod: &mut Pod, why: &str, detail: &str) {
        let ms = pod.backoff.as_millis();
        self.note(&format!("{name}: {why}; restarting in {ms} ms\n{detail}"));
        pod.next_start = Instant::now() + pod.backoff;
        pod.backoff = (pod.backoff * 2).min(BACKOFF_MAX);
    }

    /// SIGTERM to the process group, up to `grace` to exit, then SIGKILL; always reaped.
    fn stop(&self, name: &str, pod: &mut Pod, grace: Duration) {
        let Some(mut p) = pod.process.take() else {
            return;
        };
        let (pid, t0) = (p.child.id(), Instant::now());
        signal_group(pid, "TERM");
        let status = loop {
            match p.child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if t0.elapsed() < grace => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    signal_group(pid, "KILL");
                    let _ = p.child.kill();
                    break format!("{:?} after SIGKILL", p.child.wait().map(|s| s.to_string()));
                }
            }
        };
        signal_group(pid, "KILL");
        let ms = t0.elapsed().as_millis();
        self.note(&format!("{name}: stopped pid {pid} in {ms} ms: {status}"));
    }
}

/// Sends SIGsig to process group `pgid` with the `kill` command (no unsafe code here). A
/// group that is already gone is fine, so kill's complaint about it is dropped.
pub(crate) fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The manifests in `dir` and their bytes; none if `dir` is missing. Like the real kubelet,
/// every regular file counts except hidden ones, whatever its name: an `etcd.yaml.bak` left
/// in the directory would run a second etcd on a real node, so it runs here too (and a file
/// that is no manifest is logged as not started).
fn read_manifests(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let manifest = !name.starts_with('.') && e.file_type().ok()?.is_file();
            manifest.then_some(())?;
            Some((name, fs::read(e.path()).ok()?))
        })
        .collect()
}

/// The last `n` lines of `path` after byte `offset`, each indented and ending in a newline.
pub(super) fn tail(path: &Path, offset: u64, n: usize) -> String {
    let mut buf = vec![];
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f
            .seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_to_end(&mut buf));
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}
