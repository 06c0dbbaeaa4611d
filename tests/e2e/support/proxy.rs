//! Runs the real `wasp` binary with a config written to a temp dir, learns
//! its bound ports from its JSON logs, and captures its access log (stdout).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Builder for a wasp process.
pub struct TestProxy {
    yaml: Option<String>,
    prefix: Vec<String>,
}

/// A running wasp process; killed on drop.
pub struct Running {
    child: Child,
    /// Temp dir holding the config (and anything written next to it).
    pub dir: tempfile::TempDir,
    addrs: HashMap<String, SocketAddr>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl TestProxy {
    /// A proxy that will run `yaml` as its config.
    pub fn new(yaml: impl Into<String>) -> Self {
        TestProxy { yaml: Some(yaml.into()), prefix: Vec::new() }
    }

    /// Plain `wasp`: the embedded demo on its fixed ports.
    pub fn demo() -> Self {
        TestProxy { yaml: None, prefix: Vec::new() }
    }

    /// Runs wasp through a command such as `ip netns exec NS setpriv …`
    /// (which must exec it, so that wasp keeps the PID it is killed by).
    pub fn through(mut self, prefix: &[&str]) -> Self {
        self.prefix = prefix.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Starts wasp and waits until it reports "wasp started".
    pub fn start(self) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = wasp_through(&self.prefix);
        if !self.prefix.is_empty() {
            // The prefix may drop privileges: the config must stay readable.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        if let Some(yaml) = &self.yaml {
            let config = dir.path().join("wasp.yaml");
            std::fs::write(&config, yaml).expect("write config");
            cmd.args(["run", "--config"]).arg(&config);
        }
        let mut child = cmd
            .env("WASP_LOG_FORMAT", "json")
            .env("WASP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasp");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let mut running = Running { child, dir, addrs: HashMap::new(), stdout, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if running.stderr_lines().iter().any(|l| l.contains("\"wasp started\"")) {
                break;
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("wasp exited during start ({status}):\n{}", running.stderr_text());
            }
            assert!(Instant::now() < deadline, "wasp did not start:\n{}", running.stderr_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        running.addrs = listening(&running.stderr_lines());
        running
    }
}

/// The latest address each listener reported ("listening" log lines).
fn listening(lines: &[String]) -> HashMap<String, SocketAddr> {
    let mut addrs = HashMap::new();
    for line in lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["message"] == "listening" {
            let name = v["listener"].as_str().expect("listener").to_string();
            let addr = v["address"].as_str().expect("address").parse().expect("socket addr");
            addrs.insert(name, addr);
        }
    }
    addrs
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lock").push(line);
        }
    });
    lines
}

impl Running {
    /// The bound address of listener `name` ("admin" for the admin listener).
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self.addrs.get(name).unwrap_or_else(|| panic!("no listener {name:?}: {:?}", self.addrs))
    }

    /// The config file it runs (write it to reload).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("wasp.yaml")
    }

    /// Waits until a reload starts listener `name` on an address other than
    /// the one it had (if any) and returns it (from then on also known to
    /// [`Running::addr`]).
    pub fn wait_listening(&mut self, name: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let latest = listening(&self.stderr_lines()).remove(name);
            if let Some(addr) = latest.filter(|a| self.addrs.get(name) != Some(a)) {
                self.addrs.insert(name.into(), addr);
                return addr;
            }
            assert!(Instant::now() < deadline, "listener {name} never started:\n{}", self.stderr_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `http://<listener address><path>`
    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(listener))
    }

    /// `http://<admin address><path>`
    pub fn admin_url(&self, path: &str) -> String {
        self.url("admin", path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (TERM, INT, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "wasp did not exit within {within:?}:\n{}", self.stderr_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Access-log lines (stdout) parsed as JSON.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        let lines = self.stdout.lock().expect("lock").clone();
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect()
    }

    /// Waits until `n` access-log lines are present and returns them.
    pub fn wait_access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.access_log();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "expected {n} access-log lines, got {lines:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// Waits until a stderr line contains `needle` and returns it.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.stderr_lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(Instant::now() < deadline, "no stderr line contains {needle:?}:\n{}", self.stderr_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("VmRSS of a running wasp")
    }
}

/// Resident set size in KiB of process `pid`, from /proc (`None` once it is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `wasp` binary, keeping compiled filters in the test target folder
/// (shared by the tests) rather than the user's cache.
pub fn wasp() -> Command {
    wasp_through(&[])
}

/// [`wasp`], run through `prefix` (a command that execs the rest, e.g. `ip netns exec NS`).
fn wasp_through(prefix: &[String]) -> Command {
    let bin = env!("CARGO_BIN_EXE_wasp");
    let mut cmd = match prefix.split_first() {
        None => Command::new(bin),
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(bin);
            cmd
        }
    };
    cmd.env("XDG_CACHE_HOME", concat!(env!("CARGO_TARGET_TMPDIR"), "/cache"));
    cmd
}

/// Runs `wasp check` and `wasp run` on `yaml`; both must refuse it with exit
/// code 1. Returns their stderr.
pub fn refused(yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wasp.yaml");
    std::fs::write(&path, yaml).expect("write config");
    ["check", "run"]
        .iter()
        .map(|cmd| {
            let out = wasp().args([cmd, "--config"]).arg(&path).output().expect("run");
            assert_eq!(out.status.code(), Some(1), "wasp {cmd} must refuse");
            String::from_utf8_lossy(&out.stderr).to_string()
        })
        .collect()
}
