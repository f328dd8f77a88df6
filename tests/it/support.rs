//! Real parts for integration tests: a redis-server per test, pushgate in-process or
//! as a child process, a telegram client, and a tiny HTTP client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pushgate::app::App;
use pushgate::config::Config;
use pushgate::ingest::charset::Charset;
use pushgate::ingest::frame::Framing;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TRANSFER_SCRIPT: &str = include_str!("../../scripts/transfer.rhai");
pub const NOTICE_SCRIPT: &str = include_str!("../../scripts/notice.rhai");
/// Sends every message to its `device_id`, with `uniqueKey` in `data` (exactly-once checks).
pub const SEND: &str = r#"
fn route(msg) {
    let push = send_token(msg.device_id, msg.msg_title, msg.msg_contents);
    push.data = #{ uniqueKey: msg.uniqueKey };
    push
}
"#;

/// Poll `check` until it returns Some, or panic with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A private redis-server on a unix socket in its own temp dir, AOF on.
pub struct RedisServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    appendfsync: &'static str,
}

impl RedisServer {
    /// `appendfsync everysec`, as Redis is usually run.
    pub fn start() -> RedisServer {
        RedisServer::start_with("everysec")
    }

    /// `appendfsync always`: every acked write is on disk, for tests that kill -9
    /// Redis and expect acked records back (with `everysec` Redis may hold back its
    /// AOF write for up to 2 s while an fsync is slow).
    pub fn start_durable() -> RedisServer {
        RedisServer::start_with("always")
    }

    fn start_with(appendfsync: &'static str) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let mut server = RedisServer {
            child: None,
            dir,
            socket,
            appendfsync,
        };
        server.launch();
        server
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
            ])
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.sync_ping() {
                return;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server did not start; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn sync_ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// SIGKILL the server (what survives is what its AOF has written).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Start it again on the same dir and socket.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.path().join("redis.log"))
        {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- redis log tail ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}

pub const TEST_KEY: &str = "pgk_test-key";
pub const READ_ONLY_KEY: &str = "pgk_read-only";

/// A config text with the given ports (TOML `[[port]]` blocks), admin on `admin`.
pub fn config_text(redis_url: &str, admin: &str, ports: &str) -> String {
    format!(
        r#"
[redis]
url = "{redis_url}"
prefix = "pg:"
timeout_ms = 1000

[admin]
listen = "{admin}"

[script]
deadline_ms = 100

[[api_key]]
name = "test"
sha256 = "{}"
scopes = ["read", "control", "personal"]

[[api_key]]
name = "viewer"
sha256 = "{}"
scopes = ["read"]

{users}

{ports}
"#,
        pushgate::admin::hash_api_key(TEST_KEY),
        pushgate::admin::hash_api_key(READ_ONLY_KEY),
        users = user_tables(),
    )
}

/// Console users `admin`, `operator`, `viewer`, each with password `pw-<name>`.
fn user_tables() -> &'static str {
    static USERS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    USERS.get_or_init(|| {
        ["admin", "operator", "viewer"]
            .iter()
            .map(|role| {
                let hash = pushgate::admin::hash_password(&format!("pw-{role}")).unwrap();
                format!("[[user]]\nname = \"{role}\"\npassword = \"{hash}\"\nrole = \"{role}\"\n")
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// A console visitor: keeps its session cookie, never follows redirects.
pub struct Web {
    pub base: String,
    client: reqwest::Client,
    cookie: Option<String>,
    /// The CSRF token of the signed-in session (read from the last page).
    pub csrf: String,
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Web {
    pub fn new(admin: SocketAddr) -> Web {
        Web::with(format!("http://{admin}"), reqwest::Client::builder())
    }

    /// A visitor whose connections come from `source` (any 127.x address on loopback).
    pub fn from(admin: SocketAddr, source: std::net::IpAddr) -> Web {
        Web::with(
            format!("http://{admin}"),
            reqwest::Client::builder().local_address(source),
        )
    }

    /// A visitor with its own client settings (TLS roots, source address), at `base`.
    pub fn with(base: String, builder: reqwest::ClientBuilder) -> Web {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Web {
            base,
            client: builder
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// The `Cookie` header value of the session, if signed in.
    pub fn cookie(&self) -> Option<String> {
        self.cookie.clone()
    }

    /// The client, for requests this helper does not make (streams).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let method: reqwest::Method = method.parse().unwrap();
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            req = req.header("cookie", cookie.clone());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if method == reqwest::Method::POST {
            req = req.form(form);
        }
        let response = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("console answers {method} {path}: {e:?}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if let Some(set) = headers.get("set-cookie").and_then(|v| v.to_str().ok()) {
            let pair = set.split(';').next().unwrap_or("").to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        let body = response.text().await.unwrap_or_default();
        if let Some(token) = body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            self.csrf = token.to_owned();
        }
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.request("GET", path, &[], &[("accept", "text/html")])
            .await
    }

    /// POST a form with the session's CSRF token.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend_from_slice(form);
        self.request("POST", path, &fields, &[]).await
    }

    /// POST the sign-in form; whatever the answer.
    pub async fn try_sign_in(&mut self, user: &str, password: &str) -> Page {
        self.request(
            "POST",
            "/login",
            &[("user", user), ("password", password)],
            &[],
        )
        .await
    }

    pub async fn sign_in(&mut self, user: &str) -> Page {
        let password = format!("pw-{user}");
        let page = self.try_sign_in(user, &password).await;
        assert_eq!(page.status, 303, "{user} signs in: {}", page.body);
        self.get("/").await
    }

    pub fn session_token(&self) -> String {
        self.cookie
            .as_deref()
            .and_then(|c| c.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default()
    }
}

/// A `[[port]]` block listening on a free port.
pub fn port_block(name: &str, script: &str, extra: &str) -> String {
    format!(
        "[[port]]\nname = \"{name}\"\naddr = \"127.0.0.1:0\"\nscript = \"{script}\"\nidle_timeout = 0\n{extra}\n"
    )
}

pub const FIXED_LAYOUT: &str = r#"fields = [
  { name = "uniqueKey", len = 20 },
  { name = "sndn_rsev_hour", len = 14 },
  { name = "csno", len = 10 },
  { name = "cust_telno", len = 13 },
  { name = "D_servicename", len = 10 },
  { name = "push_grp_id", len = 10 },
  { name = "device_id", len = 40 },
  { name = "msg_title", len = 40 },
  { name = "msg_contents", len = 80 },
]"#;

/// A temp dir with the example scripts and a config file, run in-process.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub app: Option<App>,
    pub config_path: PathBuf,
}

impl TestApp {
    pub async fn start(redis: &RedisServer, ports: &str, scripts: &[(&str, &str)]) -> TestApp {
        TestApp::start_with(redis, ports, scripts, "").await
    }

    /// `ports` routed by `transfer.rhai` ([`TRANSFER_SCRIPT`]).
    pub async fn transferring(redis: &RedisServer, ports: &str) -> TestApp {
        TestApp::start(redis, ports, &[("transfer.rhai", TRANSFER_SCRIPT)]).await
    }

    /// One port `name` routed by `send.rhai` ([`SEND`]).
    pub async fn sending(redis: &RedisServer, name: &str) -> TestApp {
        let ports = port_block(name, "send.rhai", "");
        TestApp::start(redis, &ports, &[("send.rhai", SEND)]).await
    }

    /// `extra` is appended to the config (e.g. an `[fcm]` table).
    pub async fn start_with(
        redis: &RedisServer,
        ports: &str,
        scripts: &[(&str, &str)],
        extra: &str,
    ) -> TestApp {
        TestApp::configured(redis, ports, scripts, |text| format!("{text}\n{extra}\n")).await
    }

    /// The test config, changed by `edit` (which sees the file's directory in `{dir}`
    /// and may add settings to tables already there, e.g. `[admin]`).
    pub async fn configured(
        redis: &RedisServer,
        ports: &str,
        scripts: &[(&str, &str)],
        edit: impl FnOnce(String) -> String,
    ) -> TestApp {
        TestApp::configured_at(&redis.url(), ports, scripts, edit).await
    }

    /// As [`TestApp::configured`], on the Redis at `redis_url` (a replica set, say).
    pub async fn configured_at(
        redis_url: &str,
        ports: &str,
        scripts: &[(&str, &str)],
        edit: impl FnOnce(String) -> String,
    ) -> TestApp {
        TestApp::clocked(
            redis_url,
            ports,
            scripts,
            edit,
            pushgate::clock::Clock::system(),
        )
        .await
    }

    /// As [`TestApp::configured_at`], with the ad gate and the senders reading `clock`
    /// (a shifted clock the test moves).
    pub async fn clocked(
        redis_url: &str,
        ports: &str,
        scripts: &[(&str, &str)],
        edit: impl FnOnce(String) -> String,
        clock: pushgate::clock::Clock,
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        write_scripts(dir.path(), scripts);
        let config_path = dir.path().join("pushgate.toml");
        let text = edit(config_text(redis_url, "127.0.0.1:0", ports))
            .replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config_path, text).unwrap();
        let mut config = Config::load(&config_path).expect("test config is valid");
        config.clock = clock;
        let app = App::start(config, &config_path).await.expect("app starts");
        TestApp {
            dir,
            app: Some(app),
            config_path,
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("app running")
    }

    /// Wait until the port runs, and return where it listens.
    pub async fn port_addr(&self, name: &str) -> SocketAddr {
        let sup = self.app().supervisor.clone();
        eventually(
            Duration::from_secs(10),
            &format!("port {name} running"),
            || {
                let sup = sup.clone();
                async move {
                    let view = sup.port(name).await?;
                    (view.state == pushgate::supervisor::PortState::Running)
                        .then_some(())
                        .and(view.bound?.parse().ok())
                }
            },
        )
        .await
    }

    pub async fn shutdown(mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

pub fn write_scripts(dir: &Path, scripts: &[(&str, &str)]) {
    for (name, source) in scripts {
        std::fs::write(dir.join(name), source).unwrap();
    }
}

/// A telegram client speaking a port's framing and encoding.
pub struct Telegrams {
    pub framing: Framing,
    pub charset: Charset,
}

impl Telegrams {
    pub fn ndjson() -> Telegrams {
        Telegrams {
            framing: Framing::Ndjson,
            charset: Charset::Utf8,
        }
    }

    pub fn frame(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.framing.encode(body, &mut out).expect("frame fits");
        out
    }

    pub fn frame_text(&self, text: &str) -> Vec<u8> {
        self.frame(&self.charset.encode(text))
    }

    /// Write `bytes` while reading acks concurrently (so neither side's buffers fill),
    /// until `expected` acks arrived or the peer closed. Returns them decoded as JSON.
    pub async fn exchange(&self, addr: SocketAddr, bytes: Vec<u8>, expected: usize) -> Vec<Value> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to port");
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(7919) {
                if wr.write_all(chunk).await.is_err() {
                    break;
                }
            }
            wr
        });
        let acks = self.read_acks(&mut rd, expected).await;
        drop(writer.await);
        acks
    }

    pub async fn read_acks(
        &self,
        rd: &mut (impl AsyncReadExt + Unpin),
        expected: usize,
    ) -> Vec<Value> {
        let mut buf = Vec::new();
        let mut acks = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acks.len() < expected {
            while let Some(frame) = self.framing.decode(&buf, 1 << 20).expect("ack framing") {
                let body = self
                    .charset
                    .decode(&buf[frame.body.clone()])
                    .expect("ack charset");
                acks.push(serde_json::from_str(&body).expect("ack is JSON"));
                buf.drain(..frame.consumed);
            }
            if acks.len() >= expected {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout(left, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("timed out with {} of {expected} acks", acks.len()),
            }
        }
        acks
    }
}

/// Send `messages` to an ndjson port in one write; their acks, in order.
pub async fn send_messages(addr: SocketAddr, messages: &[Value]) -> Vec<Value> {
    let telegrams = Telegrams::ndjson();
    let bytes: Vec<u8> = messages
        .iter()
        .flat_map(|m| telegrams.frame_text(&m.to_string()))
        .collect();
    telegrams.exchange(addr, bytes, messages.len()).await
}

/// Send `messages`, assert each was stored, and return the records' ids in order.
pub async fn store_messages(addr: SocketAddr, messages: &[Value]) -> Vec<u64> {
    send_messages(addr, messages)
        .await
        .iter()
        .map(|ack| {
            assert_eq!(ack["ok"], true, "{ack}");
            ack["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("an id")
        })
        .collect()
}

/// Send one ndjson message to a port, assert it was acked ok, and return the ack.
pub async fn send_one_ok(addr: SocketAddr, key: &str, n: usize) -> Value {
    let ack = send_messages(addr, &[message(key, n)]).await.remove(0);
    assert_eq!(ack["ok"], true, "{ack}");
    ack
}

/// A message as the FEP sends it.
pub fn message(key: &str, n: usize) -> Value {
    serde_json::json!({
        "uniqueKey": key,
        "sndn_rsev_hour": "",
        "csno": format!("{:010}", n % 5000),
        "uuid_id": format!("uuid-{n}"),
        "device_id": format!("tok-{:0>30}", n % 700),
        "msg_title": "이체 완료",
        "msg_contents": format!("{n}원이 입금되었습니다"),
        "D_servicename": if n.is_multiple_of(2) { "TRF" } else { "DEP" },
        "push_grp_id": "",
        "cust_telno": format!("010{:08}", n % 9000),
    })
}

/// A GET without a key; returns (status, body text).
pub fn http_text(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = StdStream::connect(addr).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A minimal blocking HTTP/1.1 request; returns (status, JSON body).
pub fn http(addr: SocketAddr, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut stream = StdStream::connect(addr).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A loopback port that was free a moment ago (for a child process's admin listener).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// pushgate as a child process, killed on drop.
pub struct Process {
    pub child: Child,
    pub admin: SocketAddr,
}

impl Process {
    pub fn serve(config: &Path, admin: SocketAddr) -> Process {
        Process::serve_with_env(config, admin, &[])
    }

    /// As [`Process::serve`], with `env` added to the child's environment.
    pub fn serve_with_env(config: &Path, admin: SocketAddr, env: &[(&str, &str)]) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pushgate");
        let process = Process { child, admin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while StdStream::connect(admin).is_err() {
            assert!(Instant::now() < deadline, "pushgate admin never came up");
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn ports(&self) -> Vec<Value> {
        let (status, body) = http(self.admin, "GET", "/api/v1/ports", Some(TEST_KEY));
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }

    pub fn port(&self, name: &str) -> Option<Value> {
        self.ports().into_iter().find(|p| p["name"] == name)
    }

    /// Wait until `name` is running and return its bound address.
    pub fn port_addr(&self, name: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(p) = self.port(name)
                && p["state"] == "running"
                && let Some(addr) = p["bound"].as_str().and_then(|a| a.parse().ok())
            {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "port {name} never ran: {:?}",
                self.port(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for exit, with a deadline.
    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pushgate did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pushgate check --config CONFIG`: (success, stdout, stderr).
pub fn check_config(config: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A strict FCM emulator in this process, with `flags` as on its command line.
pub async fn emulator(flags: &[&str]) -> pushgate::emulator::Emulator {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: pushgate::emulator::EmulatorArgs,
    }
    let mut argv = vec!["fcm-emulator", "--listen", "127.0.0.1:0"];
    argv.extend_from_slice(flags);
    let cli = <Cli as clap::Parser>::parse_from(argv);
    pushgate::emulator::Emulator::start(cli.args)
        .await
        .expect("emulator starts")
}

/// Write the emulator's service account into `dir` and return an `[fcm]` table for it.
pub fn fcm_table(emulator: &pushgate::emulator::Emulator, dir: &Path, settings: &str) -> String {
    let path = dir.join(format!("sa-{}.json", emulator.addr().port()));
    std::fs::write(&path, emulator.service_account_json()).unwrap();
    format!(
        "[fcm]\nservice_account = \"{}\"\nendpoint = \"http://{}\"\n{settings}\n",
        path.display(),
        emulator.addr()
    )
}

/// A strict APNs emulator in this process, writing its `.p8` into `dir`, with `flags` as
/// on its command line.
pub async fn apns_emulator(dir: &Path, flags: &[&str]) -> pushgate::emulator::apns::ApnsEmulator {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: pushgate::emulator::apns::ApnsEmulatorArgs,
    }
    let key = dir.join("AuthKey.p8").display().to_string();
    let mut argv = vec![
        "apns-emulator",
        "--listen",
        "127.0.0.1:0",
        "--write-key",
        &key,
    ];
    argv.extend_from_slice(flags);
    let cli = <Cli as clap::Parser>::parse_from(argv);
    pushgate::emulator::apns::ApnsEmulator::start(cli.args)
        .await
        .expect("APNs emulator starts")
}

/// An `[[app]]` table (provider `apns`) named `name` for `emulator`, whose key is in `dir`.
pub fn apns_app_table(
    emulator: &pushgate::emulator::apns::ApnsEmulator,
    dir: &Path,
    name: &str,
    settings: &str,
) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nprovider = \"apns\"\nendpoint = \"{}\"\nkey_file = \"{}\"\nkey_id = \"{}\"\nteam_id = \"{}\"\ntopic = \"{}\"\n{settings}\n",
        emulator.base_url(),
        dir.join("AuthKey.p8").display(),
        emulator.key_id(),
        emulator.team_id(),
        emulator.topic()
    )
}

/// Write the emulator's service account into `dir` and return an `[[app]]` table named
/// `name` for it. Put it after every other table: keys after it would be the app's.
pub fn app_table(
    emulator: &pushgate::emulator::Emulator,
    dir: &Path,
    name: &str,
    settings: &str,
) -> String {
    fcm_table(emulator, dir, settings).replacen(
        "[fcm]\n",
        &format!("[[app]]\nname = \"{name}\"\n"),
        1,
    )
}

/// pushgate with one port `p` routed by [`SEND`] and `[fcm]` (plus `settings`) pointing
/// at `emulator`; returns the app and where `p` listens.
pub async fn start_delivering(
    redis: &RedisServer,
    emulator: &pushgate::emulator::Emulator,
    settings: &str,
    port_extra: &str,
) -> (TestApp, SocketAddr) {
    // The service account is read once, at start.
    let account = tempfile::tempdir().unwrap();
    let fcm = fcm_table(emulator, account.path(), settings);
    let ports = port_block("p", "device.rhai", port_extra);
    let app = TestApp::start_with(redis, &ports, &[("device.rhai", SEND)], &fcm).await;
    let addr = app.port_addr("p").await;
    (app, addr)
}

/// pushgate with two apps, `default` ([fcm]) on `main` and `card` ([[app]], plus
/// `card_settings`) on `card`; port `p` sends through `default` in the normal lane, `u`
/// through `default` in the urgent lane, `c` through `card` in the bulk lane. Returns
/// the app and where p, u and c listen.
pub async fn two_apps(
    redis: &RedisServer,
    main: &pushgate::emulator::Emulator,
    card: &pushgate::emulator::Emulator,
    card_settings: &str,
) -> (TestApp, [SocketAddr; 3]) {
    let keys = tempfile::tempdir().unwrap();
    let apps = format!(
        "{}\n{}",
        fcm_table(main, keys.path(), ""),
        app_table(card, keys.path(), "card", card_settings)
    );
    let ports = [
        port_block("p", "send.rhai", ""),
        port_block("u", "send.rhai", "lane = \"urgent\""),
        port_block("c", "send.rhai", "app = \"card\"\nlane = \"bulk\""),
    ]
    .concat();
    let app = TestApp::start_with(redis, &ports, &[("send.rhai", SEND)], &apps).await;
    let addrs = [
        app.port_addr("p").await,
        app.port_addr("u").await,
        app.port_addr("c").await,
    ];
    (app, addrs)
}

/// Every record id's JSON, read straight from Redis.
pub fn record(con: &mut redis::Connection, id: u64) -> Option<Value> {
    let text: Option<String> = redis::cmd("GET")
        .arg(format!("pg:rec:{id}"))
        .query(con)
        .unwrap();
    text.map(|t| pushgate::store::record::decode(&t).unwrap().to_json())
}

/// The record stored under `key` (as the API shows it), found through the log.
pub async fn record_by_key(app: &TestApp, key: &str) -> Option<Value> {
    let page = app
        .app()
        .store
        .log_page(&pushgate::store::log::LogQuery {
            field: Some("uniqueKey".into()),
            value: key.into(),
            per_page: 1,
            ..Default::default()
        })
        .await
        .ok()?;
    page.rows.first().map(|r| r.to_json())
}

/// The record stored under `key` once its status is `status` (panics after `within`).
pub async fn wait_status(app: &TestApp, key: &str, status: &str, within: Duration) -> Value {
    eventually(within, &format!("{key} is {status}"), || async {
        record_by_key(app, key)
            .await
            .filter(|r| r["status"] == status)
    })
    .await
}

/// The ids of new records, in order (panics on a duplicate or a fenced one).
pub async fn ingest(
    store: &pushgate::store::Store,
    records: &[pushgate::store::NewRecord],
) -> Vec<u64> {
    store
        .ingest(records)
        .await
        .unwrap()
        .into_iter()
        .map(|stored| match stored {
            pushgate::store::Stored::New { id } => id,
            other => panic!("expected a new record, got {other:?}"),
        })
        .collect()
}
