//! A managed Redis is never orphaned or doubled: it dies with pushgate (kill -9 included),
//! one pushgate runs per data dir, a Redis left by a crash is shut down cleanly before a
//! new one starts, and a Redis that pushgate did not start is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A config with a managed Redis in `dir/data`, one port `p` and admin on `admin`.
fn managed_config(dir: &Path, admin: SocketAddr) -> PathBuf {
    write_scripts(dir, &[("send.rhai", SEND)]);
    let text = config_text(
        "redis://127.0.0.1:1",
        &admin.to_string(),
        &port_block("p", "send.rhai", ""),
    )
    .replacen("[redis]\n", "[redis]\nmanaged = true\ndir = \"data\"\n", 1);
    let path = dir.join("pushgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn free_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Pids of the running redis-servers working in `dir`. Redis changes into its `--dir`
/// and writes its title over its command line, so the working dir is what names the dir.
fn redis_servers_on(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().expect("data dir exists");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let proc = entry.path();
        let in_dir = std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd == dir);
        let is_redis = std::fs::read(proc.join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("redis-server"));
        let zombie = std::fs::read_to_string(proc.join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        });
        if in_dir && is_redis && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// A redis-server started by the test itself (not by pushgate), killed on drop.
struct HandStarted {
    child: Child,
    socket: PathBuf,
}

impl HandStarted {
    /// redis-server on `data` with its socket there; `pidfile` as the managed one has it.
    fn start(data: &Path, pidfile: bool, log: &str) -> HandStarted {
        std::fs::create_dir_all(data).unwrap();
        let socket = data.join("redis.sock");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", "0", "--bind", "127.0.0.1", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(data)
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .args(["--save", ""])
            .arg("--logfile")
            .arg(data.join(log))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if pidfile {
            cmd.arg("--pidfile").arg(data.join("redis.pid"));
        }
        let child = cmd.spawn().expect("redis-server is installed");
        let server = HandStarted { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.connection().is_none() {
            assert!(
                Instant::now() < deadline,
                "hand-started redis never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn connection(&self) -> Option<redis::Connection> {
        let mut con = redis::Client::open(format!("redis+unix://{}", self.socket.display()))
            .and_then(|c| c.get_connection())
            .ok()?;
        redis::cmd("PING").query::<String>(&mut con).ok()?;
        Some(con)
    }
}

impl Drop for HandStarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `pushgate serve` expecting it to refuse to start: its exit status and stderr.
/// Panics (and kills it) if it is still running after 30 s.
fn serve_refused(config: &Path) -> (ExitStatus, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pushgate");
    let mut process = Process {
        child,
        admin: free_admin(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = process.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pushgate started instead of refusing"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = process.child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
    }
    (status, stderr)
}

fn data_connection(data: &Path) -> redis::Connection {
    redis::Client::open(format!(
        "redis+unix://{}",
        data.join("redis.sock").display()
    ))
    .and_then(|c| c.get_connection())
    .expect("connect to the managed redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_pushgate_stops_its_redis_and_the_restart_runs_exactly_one_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = free_admin();
    let config = managed_config(dir.path(), admin);
    let mut first = tokio::task::block_in_place(|| Process::serve(&config, admin));
    let addr = tokio::task::block_in_place(|| first.port_addr("p"));
    let ack = send_one_ok(addr, "acked-before-kill", 1).await;
    let before = redis_servers_on(&data);
    assert_eq!(before.len(), 1, "one managed redis-server: {before:?}");

    first.child.kill().expect("SIGKILL pushgate");
    first.child.wait().expect("reap pushgate");
    eventually(
        Duration::from_secs(15),
        "the managed redis-server to exit after its pushgate was killed",
        || async { redis_servers_on(&data).is_empty().then_some(()) },
    )
    .await;

    let admin = free_admin();
    let config = managed_config(dir.path(), admin);
    let second = tokio::task::block_in_place(|| Process::serve(&config, admin));
    tokio::task::block_in_place(|| second.port_addr("p"));
    let after = redis_servers_on(&data);
    assert_eq!(
        after.len(),
        1,
        "exactly one redis-server after the restart: {after:?}"
    );
    assert_ne!(after, before, "a new redis-server, not the old one");
    let id: u64 = ack["id"].as_str().unwrap().parse().unwrap();
    let stored = record(&mut data_connection(&data), id).expect("acked record kept");
    assert_eq!(stored["uniqueKey"], "acked-before-kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_left_running_by_a_crash_is_shut_down_cleanly_and_replaced_by_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // What a crash that left the child alive looks like: a redis-server on the dir, with
    // the managed one's socket and pid file, whose parent is not pushgate.
    let mut orphan = HandStarted::start(&data, true, "orphan.log");
    let orphan_pid = orphan.child.id();
    let mut con = orphan.connection().expect("orphan answers");
    redis::cmd("SET")
        .arg("pg:written-to-the-orphan")
        .arg("kept")
        .query::<()>(&mut con)
        .unwrap();
    drop(con);

    let admin = free_admin();
    let config = managed_config(dir.path(), admin);
    let process = tokio::task::block_in_place(|| Process::serve(&config, admin));
    tokio::task::block_in_place(|| process.port_addr("p"));

    let status = orphan
        .child
        .try_wait()
        .expect("wait")
        .expect("the orphan has exited by the time pushgate serves");
    assert!(status.success(), "the orphan exited cleanly: {status:?}");
    let log = std::fs::read_to_string(data.join("orphan.log")).unwrap();
    assert!(
        log.contains("User requested shutdown"),
        "the orphan was stopped by SHUTDOWN (AOF flushed); its log:\n{log}"
    );
    let running = redis_servers_on(&data);
    assert_eq!(running.len(), 1, "exactly one redis-server: {running:?}");
    assert_ne!(running[0], orphan_pid, "ours, not the orphan");
    let kept: Option<String> = redis::cmd("GET")
        .arg("pg:written-to-the-orphan")
        .query(&mut data_connection(&data))
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("kept"),
        "what the orphan held is still there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pushgate_did_not_start_on_the_dir_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Started by hand on the dir, without pushgate's pid file: not pushgate's to stop.
    let foreign = HandStarted::start(&data, false, "foreign.log");
    let config = managed_config(dir.path(), free_admin());

    let (status, stderr) = tokio::task::block_in_place(|| serve_refused(&config));
    assert!(!status.success(), "refused with a non-zero exit");
    assert!(
        stderr.contains("did not start") && stderr.contains(&foreign.socket.display().to_string()),
        "the refusal names the socket: {stderr}"
    );
    assert!(
        foreign.connection().is_some(),
        "the foreign redis still answers"
    );
    assert_eq!(
        redis_servers_on(&data),
        [foreign.child.id()],
        "no second redis-server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pushgate_on_the_same_dir_is_refused_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = free_admin();
    let config = managed_config(dir.path(), admin);
    let first = tokio::task::block_in_place(|| Process::serve(&config, admin));
    let addr = tokio::task::block_in_place(|| first.port_addr("p"));
    let running = redis_servers_on(&data);

    let second = dir.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    let second_config = managed_config(&second, free_admin());
    // The same data dir, reached from the second config's own directory.
    let text = std::fs::read_to_string(&second_config)
        .unwrap()
        .replace("dir = \"data\"", &format!("dir = \"{}\"", data.display()));
    std::fs::write(&second_config, text).unwrap();

    let (status, stderr) = tokio::task::block_in_place(|| serve_refused(&second_config));
    assert!(!status.success(), "refused with a non-zero exit");
    assert!(
        stderr.contains("pushgate.lock") && stderr.contains(&format!("pid {}", first.child.id())),
        "the refusal names the lock and its holder: {stderr}"
    );
    send_one_ok(addr, "after-the-refusal", 2).await;
    assert_eq!(
        redis_servers_on(&data),
        running,
        "the first pushgate's redis-server, alone"
    );
}
