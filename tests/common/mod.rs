//! Test harness: the real `banyan` binary in a temporary folder with its own config and
//! routes, on ephemeral loopback ports, stopped when the test ends.

#![allow(dead_code)]

pub mod etcd;
pub mod fleet;
pub mod greeter;
pub mod grpc;
pub mod load;
pub mod pki;
pub mod recorder;
pub mod upstream;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_banyan");

/// How long anything in a test may take to become true before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A loopback port that is free now (bound, then released) and not handed out before in
/// this test process: the kernel may give a just-released port again, and two of
/// banyan's listeners on one port (its listeners set SO_REUSEPORT) would share it.
pub fn free_port() -> u16 {
    bind_loopback().local_addr().expect("its address").port()
}

/// A listener on a loopback port that no other listener of this test process has had,
/// nor [`free_port`] handed out. Every test server binds through here: a server on
/// `127.0.0.1:0` could otherwise be given a port reserved for a proxy not yet started,
/// which then answers another test's requests.
pub fn bind_loopback() -> TcpListener {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Kept bound until a new port is found, so the kernel cannot offer them again.
    let mut held = Vec::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        if given.insert(port) {
            return listener;
        }
        held.push(listener);
    }
}

/// Polls `cond` until it holds or the deadline passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One blocking HTTP/1.1 request (`Connection: close`); `authorization` is the header's
/// whole value. `None` when the server cannot be reached or answers nothing.
pub fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let length = body.len().to_string();
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Content-Length", &length),
    ];
    if let Some(a) = authorization {
        headers.insert(0, ("Authorization", a));
    }
    exchange(addr, method, path, &headers, body)
}

/// A request without a body, with extra header lines.
pub fn try_http_request_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    exchange(addr, method, path, headers, "")
}

/// Writes one request with `Connection: close` and reads the whole answer.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n{body}"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// As [`try_http_request`], for a server that must answer.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    try_http_request(addr, method, path, authorization, body)
        .unwrap_or_else(|| panic!("no answer from {addr} to {method} {path}"))
}

/// GET for readiness checks: `None` while nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    try_http_request(addr, "GET", path, None, "")
}

/// Reads one response with a Content-Length body (none: empty) from a connection the
/// server keeps open: (head, body). `None` when it closes or fails first.
pub fn read_response(s: &mut impl Read) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if body.len() >= len {
            return Some((head.to_string(), body.to_string()));
        }
    }
}

/// Sends raw bytes and returns what came back before the server closed or went quiet.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The transport a test's requests go through: banyan's own HTTP/1.1 path, or Pingora's
/// (`server.fast_path = false`: the plain listener hands every request to Pingora).
/// Routing, fallback, timeout, breaker and shadow tests run each case through both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Banyan,
    Pingora,
}

impl Transport {
    pub const BOTH: [Transport; 2] = [Transport::Banyan, Transport::Pingora];

    /// As the access log's `transport` field names it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Banyan => "fast",
            Transport::Pingora => "pingora",
        }
    }
}

pub struct Banyan {
    pub child: Option<Child>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// What goes into a test's config file.
pub struct Setup<'a> {
    /// (name, peers) of each upstream.
    pub upstreams: Vec<(&'a str, Vec<SocketAddr>)>,
    pub default_upstream: &'a str,
    /// Route files: (file name, TOML).
    pub routes: Vec<(&'a str, String)>,
    /// Extra lines for [server].
    pub server_extra: &'a str,
    /// Extra lines per upstream, by name.
    pub upstream_extra: Vec<(&'a str, &'a str)>,
    /// Extra lines for [admin].
    pub admin_extra: &'a str,
    /// Environment variables for the process.
    pub env: Vec<(&'a str, &'a str)>,
    /// Extra top-level tables at the end, e.g. `[shadow]`.
    pub tail: &'a str,
    /// Send the process's stderr (its log) to `banyan.log` in its folder.
    pub capture_log: bool,
    /// Which transport serves the plain listener's requests.
    pub transport: Transport,
}

impl<'a> Setup<'a> {
    pub fn new(upstreams: Vec<(&'a str, Vec<SocketAddr>)>, default_upstream: &'a str) -> Self {
        Setup {
            upstreams,
            default_upstream,
            routes: Vec::new(),
            server_extra: "debug_headers = true",
            upstream_extra: Vec::new(),
            admin_extra: "",
            env: Vec::new(),
            tail: "",
            capture_log: false,
            transport: Transport::Banyan,
        }
    }

    /// Requests go through `t`.
    pub fn via(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }

    pub fn route_file(mut self, name: &'a str, toml: impl Into<String>) -> Self {
        self.routes.push((name, toml.into()));
        self
    }

    pub fn config_text(&self, proxy: SocketAddr, admin: SocketAddr) -> String {
        let mut c = format!(
            "[server]\nlisten = [\"{proxy}\"]\nthreads = 2\nroutes_dir = \"routes\"\nstate_dir = \"state\"\ndefault_upstream = \"{}\"\n{}\n\n[admin]\nlisten = \"{admin}\"\n{}\n\n",
            self.default_upstream, self.server_extra, self.admin_extra
        );
        if self.transport == Transport::Pingora {
            // Into [server], which the format above leaves open until [admin].
            c = c.replacen("\n\n[admin]", "\nfast_path = false\n\n[admin]", 1);
        }
        for (name, peers) in &self.upstreams {
            let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
            c.push_str(&format!(
                "[upstreams.{name}]\npeers = [{}]\n",
                peers.join(", ")
            ));
            for (n, extra) in &self.upstream_extra {
                if n == name {
                    c.push_str(extra);
                    c.push('\n');
                }
            }
            c.push('\n');
        }
        c.push_str(self.tail);
        c
    }

    /// Writes config and routes into a new temporary folder.
    pub fn write(&self, proxy: SocketAddr, admin: SocketAddr) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
        std::fs::create_dir_all(dir.path().join("routes")).expect("routes dir");
        std::fs::write(
            dir.path().join("config/banyan.toml"),
            self.config_text(proxy, admin),
        )
        .expect("config");
        for (name, text) in &self.routes {
            std::fs::write(dir.path().join("routes").join(name), text).expect("route file");
        }
        dir
    }

    pub fn start(&self) -> Banyan {
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let dir = self.write(proxy, admin);
        if self.capture_log {
            let log = std::fs::File::create(dir.path().join("banyan.log")).expect("log file");
            return Banyan::spawn_full(dir, proxy, admin, &["run"], &self.env, log.into());
        }
        Banyan::spawn_with_env(dir, proxy, admin, &["run"], &self.env)
    }
}

impl Banyan {
    pub fn spawn(
        dir: tempfile::TempDir,
        proxy: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
    ) -> Banyan {
        Self::spawn_with_env(dir, proxy, admin, args, &[])
    }

    pub fn spawn_with_env(
        dir: tempfile::TempDir,
        proxy: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Banyan {
        let log = process_log(dir.path());
        Self::spawn_full(dir, proxy, admin, args, env, log)
    }

    pub fn spawn_full(
        dir: tempfile::TempDir,
        proxy: SocketAddr,
        admin: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Banyan {
        let child = Command::new(BIN)
            .args(args)
            .env_remove("BANYAN_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start banyan");
        let mut b = Banyan {
            child: Some(child),
            proxy,
            admin,
            dir,
        };
        b.wait_ready();
        b
    }

    fn wait_ready(&mut self) {
        let (proxy, admin) = (self.proxy, self.admin);
        let child = self.child.as_mut().expect("running");
        wait_until("banyan to serve", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("banyan exited early: {status}");
            }
            http_get(admin, "/healthz").is_some_and(|(s, _)| s == 200)
                && TcpStream::connect_timeout(&proxy, Duration::from_millis(200)).is_ok()
        });
    }

    /// What the process logged so far (with `Setup::capture_log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("banyan.log")).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).expect("admin answers")
    }

    /// Waits until /metrics has a line starting with `series` whose value is `value`.
    /// Requests are counted when they finish, which may be just after the client has the
    /// response, so a test waits for the count instead of reading it once.
    pub fn wait_metric(&self, series: &str, value: f64) {
        let start = Instant::now();
        loop {
            // A busy machine may drop one poll; only the deadline fails the test.
            let text = http_get(self.admin, "/metrics").map_or_else(String::new, |(_, t)| t);
            let found = text
                .lines()
                .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
                .and_then(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()));
            if found == Some(value) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{series}: wanted {value}, last saw {found:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The current value of one series in /metrics.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = http_get(self.admin, "/metrics").map_or_else(String::new, |(_, t)| t);
        text.lines()
            .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
            .and_then(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
    }

    /// Waits until a series in /metrics is at least `value`.
    pub fn wait_metric_at_least(&self, series: &str, value: f64) {
        wait_until(&format!("{series} ≥ {value}"), || {
            self.metric(series).is_some_and(|v| v >= value)
        });
    }

    /// Stops the process (SIGINT) and starts `banyan run` again in the same folder.
    pub fn restart(&mut self) {
        self.signal("INT");
        self.wait_exit(DEADLINE).expect("banyan stopped");
        self.start_again();
    }

    /// Starts `banyan run` in this folder after the process has stopped.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        let child = Command::new(BIN)
            .arg("run")
            .env_remove("BANYAN_ADMIN_TOKEN")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(process_log(self.dir.path()))
            .spawn()
            .expect("start banyan");
        self.child = Some(child);
        self.wait_ready();
    }

    /// The admin API's status document.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.admin_get("/api/v1/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status json")
    }

    /// A route's entry in the status document.
    pub fn route_status(&self, name: &str) -> serde_json::Value {
        let s = self.status();
        s["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Runs `banyan ARGS` in this instance's folder (so it finds its config).
    pub fn cli(&self, args: &[&str]) -> Output {
        banyan_cmd(self.dir.path(), args)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Peak resident memory of the proxy process, from /proc (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmHWM")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, up to `limit`; returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some((status, start.elapsed()));
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Banyan {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A passing run prints only test results; a failing test shows what the process
        // logged (libtest prints the test's captured output).
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join(PROCESS_LOG));
            eprintln!("---- banyan's log ----\n{}", log.unwrap_or_default());
        }
    }
}

/// Where a started process's stderr (its log) goes, in its folder, unless the test
/// captures it itself (`Setup::capture_log`).
const PROCESS_LOG: &str = "banyan.stderr.log";

fn process_log(dir: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(PROCESS_LOG))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The route the control-plane tests move: `/api/orders` from monolith to orders, sticky
/// by `x-user-id`.
pub fn orders_route(percent: f64) -> String {
    format!(
        "[[route]]\nname = \"orders\"\nmatch.path_prefix = \"/api/orders\"\nlegacy = \"monolith\"\ntarget = \"orders\"\npercent = {percent}\nsticky = \"header:x-user-id\"\n"
    )
}

/// Two real upstreams, `monolith` and `orders`, and a setup with [`orders_route`].
pub fn orders_world(percent: f64) -> (upstream::Upstream, upstream::Upstream, Setup<'static>) {
    let monolith = upstream::Upstream::start("monolith");
    let orders = upstream::Upstream::start("orders");
    let setup = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![orders.addr]),
        ],
        "monolith",
    )
    .route_file("orders.toml", orders_route(percent));
    (monolith, orders, setup)
}

/// A command's stdout and stderr, asserting it succeeded.
pub fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Runs `banyan ARGS` in `dir` to completion.
pub fn banyan_cmd(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run banyan")
}

/// The repository's example `config/` and `routes/`, copied into a new folder with every
/// example port (8080 proxy, 9090 admin, 8081 monolith, 8082 orders) moved to a free one;
/// for `banyan demo`. Returns the folder and the (proxy, admin, monolith, orders) addresses.
pub fn demo_folder() -> (tempfile::TempDir, [SocketAddr; 4]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("routes")).expect("mkdir");
    let addrs: [SocketAddr; 4] = std::array::from_fn(|_| ([127, 0, 0, 1], free_port()).into());
    let mut config =
        std::fs::read_to_string(root.join("config/banyan.toml")).expect("example config");
    for (example, addr) in [8080, 9090, 8081, 8082].iter().zip(&addrs) {
        config = config.replace(&format!("127.0.0.1:{example}"), &addr.to_string());
    }
    std::fs::write(dir.path().join("config/banyan.toml"), config).expect("write");
    for entry in std::fs::read_dir(root.join("routes")).expect("routes") {
        let path = entry.expect("entry").path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.path().join("routes").join(name)).expect("copy");
        }
    }
    (dir, addrs)
}

/// A test case run once per transport, as two tests named `<case>::banyan` and
/// `<case>::pingora`: `both_transports! { fn name(t) { ... } }`, or `async fn` for a
/// tokio test.
#[macro_export]
macro_rules! both_transports {
    (fn $name:ident($t:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn case($t: $crate::common::Transport) $body
            #[test]
            fn banyan() {
                case($crate::common::Transport::Banyan)
            }
            #[test]
            fn pingora() {
                case($crate::common::Transport::Pingora)
            }
        }
    };
    (async fn $name:ident($t:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn case($t: $crate::common::Transport) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn banyan() {
                case($crate::common::Transport::Banyan).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pingora() {
                case($crate::common::Transport::Pingora).await
            }
        }
    };
}
