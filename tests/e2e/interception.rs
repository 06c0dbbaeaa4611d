//! Transparent interception for real: two network namespaces joined by a
//! veth pair, a "pod" (an app, wasp running as uid 1337, and an unmodified
//! client) and a "remote" host (a server and a client). `wasp iptables
//! install` (the real command) redirects the pod's TCP to wasp; the
//! servers report what they received, so each check is on what arrived.
//!
//! Needs root, `ip` (iproute2), `setpriv` and iptables; without them the
//! test says why and is skipped. Run it alone with
//! `cargo test -p wasp --test e2e interception -- --nocapture`.

use crate::support::proxy::{Running, TestProxy};
use crate::support::upstream::Upstream;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Proxy uid the rules exempt (the image's uid).
const UID: &str = "1337";

/// Entry point of the helper processes this test starts inside the
/// namespaces (the test binary run again, with `WASP_NETNS_ROLE`):
/// `server` serves the echo upstream on `WASP_NETNS_ADDR` and prints
/// `READY`; `get` fetches `WASP_NETNS_URL` and prints `REPLY {json}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper the interception test runs inside network namespaces"]
async fn netns_helper() {
    let Ok(role) = std::env::var("WASP_NETNS_ROLE") else { return };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    match role.as_str() {
        "server" => {
            let listener = tokio::net::TcpListener::bind(var("WASP_NETNS_ADDR")).await.expect("bind");
            let _server = Upstream::serve(&var("WASP_NETNS_NAME"), listener);
            println!("READY");
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        "get" => {
            let client = crate::support::client::h1();
            let mut req = crate::support::client::request(
                http::Method::GET,
                &var("WASP_NETNS_URL"),
                crate::support::client::empty(),
            );
            if let Ok(host) = std::env::var("WASP_NETNS_HOST") {
                req.headers_mut().insert(http::header::HOST, host.parse().expect("host header"));
            }
            let reply =
                match tokio::time::timeout(Duration::from_secs(10), crate::support::client::send(&client, req)).await {
                    Ok(Ok(r)) => serde_json::json!({
                        "status": r.status.as_u16(),
                        "body": String::from_utf8_lossy(&r.body),
                    }),
                    Ok(Err(e)) => serde_json::json!({ "error": e }),
                    Err(_) => serde_json::json!({ "error": "timed out" }),
                };
            println!("REPLY {reply}");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn iptables_redirects_the_pods_traffic_through_wasp_and_removing_it_restores_direct_traffic() {
    let Some(net) = Netns::create() else { return };
    let (pod, remote) = (net.pod.as_str(), net.remote.as_str());
    net.helper_server(pod, "app", "0.0.0.0:8080");
    net.helper_server(remote, "remote", &format!("{REMOTE_IP}:80"));
    let proxy = TestProxy::new(CONFIG)
        .through(&["ip", "netns", "exec", pod, "setpriv", "--reuid", UID, "--regid", UID, "--clear-groups"])
        .start();
    let outbound_url = format!("http://{REMOTE_IP}/out");
    let inbound_url = format!("http://{POD_IP}:8080/in");

    // Before the rules: straight through, wasp sees nothing.
    assert_direct(&net.get(pod, &outbound_url), "remote");
    assert_direct(&net.get(remote, &inbound_url), "app");
    assert!(proxy.access_log().is_empty());

    let install = ["install", "--proxy-uid", UID, "--exclude-inbound-ports", "9901"];
    net.wasp_iptables(&install);
    let once = net.nat_rules();
    net.wasp_iptables(&install);
    assert_eq!(net.nat_rules(), once, "installing twice gives the same rules");
    assert!(once.iter().any(|r| r.contains("--uid-owner 1337")), "{once:?}");

    // An unmodified client in the pod calls a remote address: wasp's egress
    // listener took it (its request id arrived), and forwarded it to where
    // it was headed, from uid 1337, which the rules let out (no loop).
    let got = net.get(pod, &outbound_url);
    let echo = proxied(&got, "remote");
    assert_eq!(echo["path"], "/out");
    let line = wait_line(&proxy, "outbound");
    assert_eq!(line["destination"], format!("{REMOTE_IP}:80"));
    assert_eq!(line["upstream"], format!("{REMOTE_IP}:80"));
    assert_eq!(line["request_id"], echo["headers"]["x-request-id"]);

    // The destination is where the client connected, never what its Host
    // header claims: a forged Host naming the app still reaches the remote.
    let forged = net.get_with_host(pod, &format!("http://{REMOTE_IP}/forged"), &format!("{POD_IP}:8080"));
    let echo = proxied(&forged, "remote");
    assert_eq!(echo["path"], "/forged");
    assert_eq!(echo["headers"]["host"], format!("{POD_IP}:8080"));

    // Inbound: the remote client calls the app; wasp's ingress listener took it.
    let echo = proxied(&net.get(remote, &inbound_url), "app");
    assert_eq!(echo["headers"]["x-forwarded-for"], REMOTE_IP);
    assert_eq!(wait_line(&proxy, "inbound")["destination"], format!("{POD_IP}:8080"));

    // The admin port is excluded, so probes reach it directly.
    let ready = net.get(remote, &format!("http://{POD_IP}:9901/readyz"));
    assert_eq!(ready["status"], 200, "{ready}");

    // A client connecting to wasp's own port is not forwarded to wasp again.
    let to_self = net.get(pod, "http://127.0.0.1:15001/self");
    assert_eq!(to_self["status"], 508, "{to_self}");

    // Removing the rules restores direct traffic.
    let lines = proxy.access_log().len();
    net.wasp_iptables(&["remove"]);
    assert!(net.nat_rules().is_empty(), "{:?}", net.nat_rules());
    assert_direct(&net.get(pod, &outbound_url), "remote");
    assert_direct(&net.get(remote, &inbound_url), "app");
    assert_eq!(proxy.access_log().len(), lines, "wasp saw traffic after the rules were removed");

    // A TCP egress listener forwards the bytes, untouched, to where they were headed.
    net.wasp_iptables(&["install", "--proxy-uid", UID, "--outbound-port", "15002"]);
    assert_direct(&net.get(pod, &outbound_url), "remote");
    let line = wait_line(&proxy, "outbound-tcp");
    assert_eq!(
        (&line["destination"], &line["upstream"]),
        (&Value::from(format!("{REMOTE_IP}:80")), &line["destination"])
    );
    assert!(line["bytes_in"].as_u64() > Some(0), "{line}");
    net.wasp_iptables(&["remove"]);

    // Rules that exempt another uid redirect wasp's own upstream connection
    // back to it: that loop is refused at once, not followed. (A destination
    // wasp has no pooled connection to, so that it dials.)
    net.helper_server(remote, "remote-81", &format!("{REMOTE_IP}:81"));
    net.wasp_iptables(&["install", "--proxy-uid", "4242"]);
    let looped = net.get(pod, &format!("http://{REMOTE_IP}:81/loop"));
    assert_eq!(looped["status"], 502, "{looped}");
    proxy.wait_stderr("refused a connection from wasp itself");
    net.wasp_iptables(&["remove"]);
}

const POD_IP: &str = "10.211.0.1";
const REMOTE_IP: &str = "10.211.0.2";

/// The pod's wasp: everything redirected goes where it was headed.
const CONFIG: &str = r#"
admin: { address: "0.0.0.0:9901" }
access_log: stdout
filter_cache: "off"
listeners:
  - name: inbound
    address: "0.0.0.0:15006"
    original_destination: true
    routes:
      - name: app
        match: { destination: "*:8080" }
        cluster: original_destination
  - name: outbound
    address: "127.0.0.1:15001"
    original_destination: true
    routes:
      - name: passthrough
        match: { prefix: / }
        cluster: original_destination
  - name: outbound-tcp
    address: "127.0.0.1:15002"
    protocol: tcp
    original_destination: true
"#;

fn assert_direct(reply: &Value, upstream: &str) {
    let echo = echo(reply, upstream);
    assert!(echo["headers"].get("x-request-id").is_none(), "went through wasp: {echo}");
}

fn proxied(reply: &Value, upstream: &str) -> Value {
    let echo = echo(reply, upstream);
    assert!(echo["headers"].get("x-request-id").is_some(), "did not go through wasp: {echo}");
    echo
}

fn echo(reply: &Value, upstream: &str) -> Value {
    assert_eq!(reply["status"], 200, "{reply}");
    let echo: Value = serde_json::from_str(reply["body"].as_str().expect("body")).expect("echo JSON");
    assert_eq!(echo["upstream"], upstream, "{echo}");
    echo
}

/// The latest access-log line of `listener`.
fn wait_line(proxy: &Running, listener: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = proxy.access_log().into_iter().rev().find(|l| l["listener"] == listener) {
            return line;
        }
        assert!(Instant::now() < deadline, "no access-log line from {listener}: {:?}", proxy.access_log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The two namespaces and the processes started in them; all removed on drop.
struct Netns {
    pod: String,
    remote: String,
    helpers: std::sync::Mutex<Vec<Child>>,
}

impl Netns {
    /// The namespaces, or `None` (with the reason printed) where they cannot be made.
    fn create() -> Option<Self> {
        let skip = |why: &str| {
            eprintln!("SKIPPED interception test: {why}. It needs root, iproute2, setpriv and iptables.");
            None
        };
        if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t"))) {
            return skip("not running as root");
        }
        for tool in ["ip", "setpriv"] {
            if !succeeds(Command::new(tool).arg("-V")) {
                return skip(&format!("`{tool}` is not installed"));
            }
        }
        if !succeeds(Command::new("iptables").arg("-V")) {
            // Fresh CI machines (Debian, as root) may lack it; it is one package.
            let install = || Command::new("apt-get").args(["install", "-y", "-qq", "iptables"]).output();
            if !install().is_ok_and(|o| o.status.success()) {
                let _ = Command::new("apt-get").args(["update", "-qq"]).output();
                let _ = install();
            }
            if !succeeds(Command::new("iptables").arg("-V")) {
                return skip("iptables is not installed and could not be installed with apt-get");
            }
        }
        let id = std::process::id();
        let net =
            Netns { pod: format!("wasp-pod-{id}"), remote: format!("wasp-remote-{id}"), helpers: Default::default() };
        let (pod, remote) = (net.pod.as_str(), net.remote.as_str());
        for ns in [pod, remote] {
            if !succeeds(Command::new("ip").args(["netns", "add", ns])) {
                return skip("cannot create network namespaces (`ip netns add` failed)");
            }
        }
        let veth = format!("wp{id}");
        let peer = format!("wr{id}");
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "link", "add", &veth, "netns", pod, "type", "veth", "peer", "name", &peer, "netns", remote],
            vec!["ip", "-n", pod, "addr", "add", "10.211.0.1/24", "dev", &veth],
            vec!["ip", "-n", remote, "addr", "add", "10.211.0.2/24", "dev", &peer],
            vec!["ip", "-n", pod, "link", "set", &veth, "up"],
            vec!["ip", "-n", remote, "link", "set", &peer, "up"],
            vec!["ip", "-n", pod, "link", "set", "lo", "up"],
            vec!["ip", "-n", remote, "link", "set", "lo", "up"],
        ];
        for step in steps {
            let out = Command::new(step[0]).args(&step[1..]).output().expect("run ip");
            if !out.status.success() {
                return skip(&format!("`{}` failed: {}", step.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        if !succeeds(Command::new("ip").args(["netns", "exec", pod, "iptables", "-t", "nat", "-S"])) {
            return skip("iptables cannot use the nat table in a namespace (no kernel support?)");
        }
        Some(net)
    }

    /// Starts the echo upstream `name` on `addr` inside `ns`.
    fn helper_server(&self, ns: &str, name: &str, addr: &str) {
        let mut child = self
            .helper(ns)
            .env("WASP_NETNS_ROLE", "server")
            .env("WASP_NETNS_NAME", name)
            .env("WASP_NETNS_ADDR", addr)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let stdout = child.stdout.take().expect("stdout");
        self.helpers.lock().expect("lock").push(child);
        let ready = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.contains("READY"));
        assert!(ready, "helper server {name} in {ns} did not start");
    }

    /// GETs `url` from inside `ns`: `{status, body}` or `{error}`.
    fn get(&self, ns: &str, url: &str) -> Value {
        self.fetch(self.helper(ns).env("WASP_NETNS_URL", url), ns, url)
    }

    /// GETs `url` from inside `ns` with `host` as its Host header.
    fn get_with_host(&self, ns: &str, url: &str, host: &str) -> Value {
        self.fetch(self.helper(ns).env("WASP_NETNS_URL", url).env("WASP_NETNS_HOST", host), ns, url)
    }

    fn fetch(&self, cmd: &mut Command, ns: &str, url: &str) -> Value {
        let out = cmd.env("WASP_NETNS_ROLE", "get").output().expect("run helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find_map(|l| l.split_once("REPLY ").map(|(_, r)| r)).unwrap_or_else(|| {
            panic!("helper GET {url} in {ns} printed no reply:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        serde_json::from_str(line).expect("reply JSON")
    }

    fn helper(&self, ns: &str) -> Command {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(exe);
        cmd.args(["--exact", "interception::netns_helper", "--ignored", "--nocapture", "--test-threads", "1"]);
        cmd
    }

    /// Runs the real `wasp iptables …` in the pod.
    fn wasp_iptables(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.pod, env!("CARGO_BIN_EXE_wasp"), "iptables"])
            .args(args)
            .output()
            .expect("run wasp iptables");
        assert!(out.status.success(), "wasp iptables {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The pod's nat rules that mention wasp's chains.
    fn nat_rules(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.pod, "iptables", "-t", "nat", "-S"])
            .output()
            .expect("iptables -S");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("WASP")).map(String::from).collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for mut child in self.helpers.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.pod, &self.remote] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}
