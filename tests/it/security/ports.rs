//! Ingest ports under attack: strangers, idle connections that hoard slots, and an
//! upstream that goes away. Real sockets from several loopback source addresses
//! (all of 127.0.0.0/8 is local on Linux), a real redis-server, pushgate in-process.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::support::*;

/// Connect to `addr` from the loopback address `from`, so the port sees that peer.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind the source address");
    socket.connect(addr).await.expect("connect to port")
}

/// Everything the other end sends until it closes the connection (a reset counts as
/// closed). Panics if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("connection still open after {within:?}; it sent {got:?}"),
        }
    }
}

/// Send one message on `stream` and read its ack.
async fn send(stream: &mut TcpStream, key: &str, n: usize) -> Value {
    let telegrams = Telegrams::ndjson();
    stream
        .write_all(&telegrams.frame_text(&message(key, n).to_string()))
        .await
        .expect("send a frame");
    telegrams.read_acks(stream, 1).await.pop().expect("an ack")
}

fn port_view(app: &TestApp, name: &str) -> Value {
    let (status, ports) = http(
        app.app().admin_addr,
        "GET",
        "/api/v1/ports",
        Some(READ_ONLY_KEY),
    );
    assert_eq!(status, 200, "{ports}");
    ports
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("port {name} in {ports}"))
}

/// The value of `pushgate_ingest_refused_total` for `port` and `reason` (0 if absent).
fn refused_metric(app: &TestApp, port: &str, reason: &str) -> u64 {
    let (_, text) = http_text(app.app().admin_addr, "/metrics");
    let series = format!("pushgate_ingest_refused_total{{port=\"{port}\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn is_stored(redis: &RedisServer, key: &str) -> bool {
    let id: Option<u64> = redis::cmd("HGET")
        .arg("pg:keyIndex")
        .arg(key)
        .query(&mut redis.connection())
        .expect("read keyIndex");
    id.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_allow_is_closed_unanswered_and_an_allowed_peer_is_served() {
    let redis = RedisServer::start();
    let ports = port_block("allow-only", "transfer.rhai", "allow = [\"127.0.0.2\"]");
    let app = TestApp::transferring(&redis, &ports).await;
    let addr = app.port_addr("allow-only").await;

    let mut stranger = connect_from([127, 0, 0, 1], addr).await;
    let telegrams = Telegrams::ndjson();
    // The write may land in the kernel before the close, or fail: either way no answer.
    let _ = stranger
        .write_all(&telegrams.frame_text(&message("stranger-1", 1).to_string()))
        .await;
    let answer = read_until_closed(&mut stranger, Duration::from_secs(5)).await;
    assert!(
        answer.is_empty(),
        "a refused peer gets no ack: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        !is_stored(&redis, "stranger-1"),
        "nothing from a stranger is stored"
    );

    let mut allowed = connect_from([127, 0, 0, 2], addr).await;
    let ack = send(&mut allowed, "allowed-1", 2).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(is_stored(&redis, "allowed-1"));

    let view = port_view(&app, "allow-only");
    assert_eq!(view["refused"], 1, "{view}");
    assert_eq!(view["connections"], 1, "{view}");
    assert_eq!(refused_metric(&app, "allow-only", "not_allowed"), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_host_leave_slots_for_other_peers() {
    let redis = RedisServer::start();
    let ports = port_block(
        "capped",
        "transfer.rhai",
        "max_connections = 4\nmax_connections_per_addr = 2\nfirst_frame_timeout_ms = 60000",
    );
    let app = TestApp::transferring(&redis, &ports).await;
    let addr = app.port_addr("capped").await;

    // One host opens connections and sends nothing; it keeps only its share.
    let mut hoarded = Vec::new();
    for _ in 0..2 {
        hoarded.push(connect_from([127, 0, 0, 1], addr).await);
    }
    let sup = app.app().supervisor.clone();
    eventually(Duration::from_secs(5), "2 idle connections held", || {
        let sup = sup.clone();
        async move { (sup.port("capped").await?.connections == 2).then_some(()) }
    })
    .await;
    for _ in 0..4 {
        let mut extra = connect_from([127, 0, 0, 1], addr).await;
        let answer = read_until_closed(&mut extra, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("max_connections_per_addr = 2 from 127.0.0.1"),
            "an allowed peer over its cap is told why: {text}"
        );
    }

    // Another host still gets in and is served.
    let mut real = connect_from([127, 0, 0, 3], addr).await;
    let ack = send(&mut real, "real-1", 1).await;
    assert_eq!(ack["ok"], true, "{ack}");

    // A third host takes the last slot; then the port is full for everyone.
    let _last = connect_from([127, 0, 0, 4], addr).await;
    eventually(Duration::from_secs(5), "4 connections held", || {
        let sup = sup.clone();
        async move { (sup.port("capped").await?.connections == 4).then_some(()) }
    })
    .await;
    let mut late = connect_from([127, 0, 0, 5], addr).await;
    let answer = read_until_closed(&mut late, Duration::from_secs(5)).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("max_connections = 4"),
        "{answer:?}"
    );

    assert_eq!(refused_metric(&app, "capped", "per_addr"), 4);
    assert_eq!(refused_metric(&app, "capped", "full"), 1);
    assert_eq!(port_view(&app, "capped")["refused"], 5);
    drop(hoarded);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_first_frame_is_closed_after_first_frame_timeout() {
    const LIMIT: Duration = Duration::from_millis(300);
    let redis = RedisServer::start();
    let ports = port_block("first", "transfer.rhai", "first_frame_timeout_ms = 300");
    let app = TestApp::transferring(&redis, &ports).await;
    let addr = app.port_addr("first").await;

    // Silent: closed without an answer, not before the limit.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let answer = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    let lived = opened.elapsed();
    assert!(answer.is_empty(), "{answer:?}");
    assert!(lived >= LIMIT, "closed after {lived:?}, before the limit");

    // Trickling bytes of a frame that never completes does not extend the limit.
    let opened = Instant::now();
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let trickling = async {
        for byte in b"{\"uniqueKey\": \"slow" {
            if trickle.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    trickling.await;
    let answer = read_until_closed(&mut trickle, Duration::from_secs(5)).await;
    let lived = opened.elapsed();
    assert!(answer.is_empty(), "{answer:?}");
    assert!(
        lived >= LIMIT && lived < Duration::from_secs(3),
        "a trickling connection lived {lived:?}"
    );

    // A peer that sends its first frame in time keeps its connection past the limit:
    // from then on only idle_timeout (0 here: never) applies.
    let mut prompt = TcpStream::connect(addr).await.unwrap();
    let ack = send(&mut prompt, "prompt-1", 1).await;
    assert_eq!(ack["ok"], true, "{ack}");
    tokio::time::sleep(LIMIT * 2).await;
    let ack = send(&mut prompt, "prompt-2", 2).await;
    assert_eq!(ack["ok"], true, "still open after the limit: {ack}");

    assert_eq!(refused_metric(&app, "first", "first_frame_timeout"), 2);
    assert_eq!(port_view(&app, "first")["refused"], 2);
    app.shutdown().await;
}

/// Accept pushgate's next connection on an FEP listener.
async fn next_dial(fep: &TcpListener, what: &str) -> TcpStream {
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), fep.accept())
        .await
        .unwrap_or_else(|_| panic!("pushgate never dialled {what}"))
        .expect("accept");
    stream
}

fn lease_holder(redis: &RedisServer, port: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("pg:lease:{port}"))
        .query(&mut redis.connection())
        .expect("read the lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_mode_fails_over_between_upstreams_under_one_lease() {
    let redis = RedisServer::start();
    // Upstreams in the order pushgate dials them: one refusing (nothing listens), one
    // that drops every connection at first, and one that serves.
    let refusing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let fep_a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fep_b = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a, b) = (fep_a.local_addr().unwrap(), fep_b.local_addr().unwrap());
    let ports = format!(
        "[[port]]\nname = \"fep-ab\"\nmode = \"connect\"\naddrs = [\"{refusing}\", \"{a}\", \"{b}\"]\nscript = \"transfer.rhai\"\nidle_timeout = 0\nreconnect_max = 1\n"
    );
    let app = TestApp::transferring(&redis, &ports).await;

    // The first refuses; A takes the connection and drops it; pushgate goes on to B.
    drop(next_dial(&fep_a, "A").await);
    let mut to_b = next_dial(&fep_b, "B").await;
    let ack = send(&mut to_b, "via-b", 1).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let view = port_view(&app, "fep-ab");
    assert_eq!(view["connected"], b.to_string(), "{view}");
    assert_eq!(view["state"], "running", "{view}");
    assert_eq!(
        view["addr"],
        format!("{refusing}, {a}, {b}"),
        "the upstreams in dialling order: {view}"
    );
    let lease = lease_holder(&redis, "fep-ab").expect("the port's lease is held");

    let mut web = Web::new(app.app().admin_addr);
    let page = web.sign_in("viewer").await;
    assert!(
        page.body.contains(&format!("connected to {b}")),
        "the dashboard's port card shows the upstream: {}",
        page.body
    );

    // B goes away (connection and listener): pushgate wraps around past the refusing
    // one to A, which now serves.
    drop(to_b);
    drop(fep_b);
    let mut to_a = next_dial(&fep_a, "A again").await;
    let ack = send(&mut to_a, "via-a", 2).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let view = port_view(&app, "fep-ab");
    assert_eq!(view["connected"], a.to_string(), "{view}");
    assert!(
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("connecting to {refusing}"))),
        "the refusing upstream was dialled and skipped: {view}"
    );
    assert_eq!(
        lease_holder(&redis, "fep-ab").as_deref(),
        Some(lease.as_str()),
        "failover between upstreams keeps the port's lease (same holder, same epoch)"
    );
    let page = web.get("/").await;
    assert!(
        page.body.contains(&format!("connected to {a}")),
        "{}",
        page.body
    );

    assert!(is_stored(&redis, "via-b") && is_stored(&redis, "via-a"));
    app.shutdown().await;
}
