//! Attacks on the console and API: unmasking a number, sign-in floods and lock-outs,
//! slowloris, streams that outlive their session, credentials in URLs, plain HTTP.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    Process, READ_ONLY_KEY, RedisServer, TEST_KEY, TestApp, Web, config_text, eventually,
    free_port, http, message, port_block, store_messages,
};

/// Rejects every message with its phone number in the error, and routes the rest to a
/// rewritten international form of the number: the two ways a number leaked to viewers.
const LEAKY: &str = r#"
fn route(msg) {
    if msg.msg_title == "bad" { throw "invalid telno " + msg.cust_telno; }
    let push = send_token(msg.device_id, msg.msg_title, msg.msg_contents);
    push.data = #{ to: "+82" + msg.cust_telno.sub_string(1), who: msg.csno };
    push
}
"#;

fn source(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn leaky_app(redis: &RedisServer) -> (TestApp, SocketAddr) {
    let app = TestApp::start(
        redis,
        &port_block("p", "leaky.rhai", ""),
        &[("leaky.rhai", LEAKY)],
    )
    .await;
    let addr = app.port_addr("p").await;
    (app, addr)
}

const TELNO: &str = "01055501234";
const CSNO: &str = "9876543210";
/// Every form of the two numbers that would unmask them.
const LEAKS: &[&str] = &["01055501234", "1055501234", "9876543210", "5550-1234"];

fn assert_masked(what: &str, text: &str) {
    for leak in LEAKS {
        assert!(!text.contains(leak), "{what} shows {leak}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_search_masked_fields_or_read_numbers_from_errors_and_decisions() {
    let redis = RedisServer::start();
    let (app, addr) = leaky_app(&redis).await;
    let mut bad = message("leak-bad", 1);
    bad["msg_title"] = json!("bad");
    bad["cust_telno"] = json!(TELNO);
    bad["csno"] = json!(CSNO);
    let mut good = message("leak-good", 2);
    good["cust_telno"] = json!(TELNO);
    good["csno"] = json!(CSNO);
    let ids = store_messages(addr, &[bad, good]).await;
    let admin = app.app().admin_addr;

    let mut viewer = Web::new(admin);
    viewer.sign_in("viewer").await;
    // The oracle: a match count for a guessed number.
    for (field, q) in [("cust_telno", TELNO), ("csno", CSNO)] {
        let page = viewer.get(&format!("/log?field={field}&q={q}")).await;
        assert!(
            page.body.contains("needs the operator role"),
            "viewer search by {field} refused: {}",
            page.body
        );
        assert!(
            !page.body.contains("/push/"),
            "no rows for a refused search"
        );
        let csv = viewer.get(&format!("/log.csv?field={field}&q={q}")).await;
        assert_ne!(csv.status, 200, "CSV search by {field} refused");
    }
    for id in &ids {
        let page = viewer.get(&format!("/push/{id}")).await;
        assert_eq!(page.status, 200);
        assert_masked(&format!("push {id} for a viewer"), &page.body);
        assert!(page.body.contains("010-****-1234"), "{}", page.body);
    }
    assert_masked("log for a viewer", &viewer.get("/log").await.body);
    assert_masked("CSV for a viewer", &viewer.get("/log.csv").await.body);

    // The JSON API under a read key sees what a viewer sees.
    let (status, body) = http(
        admin,
        "GET",
        &format!("/api/v1/pushes?cust_telno={TELNO}"),
        Some(READ_ONLY_KEY),
    );
    assert_eq!(status, 403, "read key search by a masked field: {body}");
    for id in &ids {
        let (status, body) = http(
            admin,
            "GET",
            &format!("/api/v1/pushes/{id}"),
            Some(READ_ONLY_KEY),
        );
        assert_eq!(status, 200);
        assert_masked("API push under a read key", &body.to_string());
    }
    let (_, body) = http(admin, "GET", "/api/v1/pushes", Some(READ_ONLY_KEY));
    assert_masked("API listing under a read key", &body.to_string());

    // Operators and personal keys see the numbers, and may search them.
    let (status, body) = http(
        admin,
        "GET",
        &format!("/api/v1/pushes?cust_telno={TELNO}"),
        Some(TEST_KEY),
    );
    assert_eq!((status, body["total"].as_u64()), (200, Some(2)), "{body}");
    let mut operator = Web::new(admin);
    operator.sign_in("operator").await;
    let page = operator.get(&format!("/push/{}", ids[0])).await;
    assert!(page.body.contains(&format!("invalid telno {TELNO}")));
    app.shutdown().await;
}

/// VmHWM (peak) and VmRSS of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_sign_ins_from_many_addresses_stays_within_its_memory() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("pushgate.toml");
    let text = config_text(&redis.url(), &admin.to_string(), "").replacen(
        "[admin]\n",
        // Generous timeouts: on a loaded machine 256 connections may wait long to be read,
        // and this test is about memory, not the header timeout.
        "[admin]\nmax_connections = 1024\nheader_timeout_ms = 120000\nbody_timeout_ms = 120000\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let process = Process::serve(&config, admin);
    let pid = process.child.id();
    // Warm up: one sign-in, so the baseline holds what any signed-in process holds.
    Web::new(admin).sign_in("viewer").await;
    let (_, idle) = memory_kib(pid);

    let attempts = (0..256u32).map(|i| {
        let from = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            1 + (i / 200) as u8,
            2 + (i % 200) as u8,
        ));
        async move {
            let mut web = Web::from(admin, from);
            let user = if i % 2 == 0 {
                "admin".to_owned()
            } else {
                format!("nobody{i}")
            };
            web.try_sign_in(&user, "wrong").await.status
        }
    });
    let statuses = futures_join_all(attempts).await;
    for status in &statuses {
        assert!(
            matches!(status, 401 | 503),
            "a bad sign-in is refused or told to wait, got {status}"
        );
    }
    let (peak, _) = memory_kib(pid);
    assert!(
        peak < 256 * 1024,
        "peak RSS {} MiB under 256 parallel sign-ins (idle {} MiB)",
        peak / 1024,
        idle / 1024
    );
    let settled = eventually(Duration::from_secs(10), "memory back near idle", || async {
        let (_, now) = memory_kib(pid);
        (now < idle + 40 * 1024).then_some(now)
    })
    .await;
    eprintln!(
        "sign-in flood: idle {} MiB, peak {} MiB, after {} MiB; {} refused, {} busy",
        idle / 1024,
        peak / 1024,
        settled / 1024,
        statuses.iter().filter(|s| **s == 401).count(),
        statuses.iter().filter(|s| **s == 503).count()
    );
}

/// Run every future at once on this runtime (no `futures` crate in the project).
async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("attempt task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_failures_from_another_address_do_not_lock_the_user_out() {
    let redis = RedisServer::start();
    let app = TestApp::start(&redis, "", &[]).await;
    let admin = app.app().admin_addr;
    let mut stranger = Web::from(admin, source(2));
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let page = stranger.try_sign_in("admin", "guess").await;
        statuses.push(page.status);
    }
    assert_eq!(&statuses[..5], [401; 5], "five guesses are checked");
    assert!(
        statuses[5..].iter().all(|s| *s == 429),
        "then the stranger waits: {statuses:?}"
    );
    let right = stranger.try_sign_in("admin", "pw-admin").await;
    assert_eq!(right.status, 429, "even the right password waits there");
    assert!(right.headers.contains_key("retry-after"));
    // The real admin, at their own address, signs in at once.
    Web::from(admin, source(1)).sign_in("admin").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_or_unknown_user_names_are_never_stored_verbatim() {
    let redis = RedisServer::start();
    let app = TestApp::start(&redis, "", &[]).await;
    let admin = app.app().admin_addr;
    let huge = "u".repeat(500 * 1024);
    let page = Web::new(admin).try_sign_in(&huge, "x").await;
    assert_eq!(page.status, 413, "a 500 KB sign-in form is refused unread");
    let long = "v".repeat(100);
    let page = Web::new(admin).try_sign_in(&long, "x").await;
    assert_eq!(page.status, 401);
    let mut stranger = Web::from(admin, source(3));
    for n in 0..10 {
        let name = format!("invented-{n}");
        let page = stranger.try_sign_in(&name, "x").await;
        assert_eq!(page.status, 401, "{}", page.body);
    }
    let mut con = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    for key in &keys {
        assert!(
            !key.contains("uuuu") && !key.contains("vvvv") && !key.contains("invented"),
            "a refused or unknown name made a key: {}",
            &key[..key.len().min(80)]
        );
    }
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("pg:audit")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    let audit = format!("{entries:?}");
    assert!(!audit.contains("uuuu") && !audit.contains("vvvv") && !audit.contains("invented"));
    assert_eq!(
        audit.matches("(unknown name)").count(),
        2,
        "unknown names are audited as counts at the 1st and 10th failure: {audit}"
    );
    assert!(audit.contains("10 with unknown user names"), "{audit}");
    app.shutdown().await;
}

/// A test app with `[admin]` and `[console]` settings added.
async fn tuned(redis: &RedisServer, admin: &str, console: &str) -> TestApp {
    let (admin, console) = (admin.to_owned(), console.to_owned());
    TestApp::configured(redis, "", &[], move |text| {
        text.replacen(
            "[admin]\n",
            &format!("[console]\n{console}\n\n[admin]\n{admin}\n"),
            1,
        )
    })
    .await
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error page before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_idle_keep_alives_are_closed_at_the_header_timeout() {
    let redis = RedisServer::start();
    let app = tuned(
        &redis,
        "header_timeout_ms = 1000\nmax_connections = 1000\nmax_connections_per_addr = 1000",
        "",
    )
    .await;
    let admin = app.app().admin_addr;
    let started = Instant::now();
    let mut streams: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(admin).expect("connect");
            s.write_all(b"GET /login HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // A keep-alive connection that finished one request and then went quiet.
    let mut idle = TcpStream::connect(admin).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let blocking = tokio::task::spawn_blocking(move || {
        let all = streams
            .iter_mut()
            .all(|s| closed_within(s, Duration::from_secs(10)));
        (all, closed_within(&mut idle, Duration::from_secs(10)))
    });
    let (all_closed, idle_closed) = blocking.await.unwrap();
    let took = started.elapsed();
    assert!(all_closed, "every half-sent request is closed");
    assert!(idle_closed, "the idle keep-alive connection is closed");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "closed at the 1 s header timeout, not before: {took:?}"
    );
    // The console still answers.
    let (status, _) = http(admin, "GET", "/healthz", None);
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_admin_connection() {
    let redis = RedisServer::start();
    let app = tuned(&redis, "max_connections_per_addr = 4", "").await;
    let admin = app.app().admin_addr;
    let _held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(admin).unwrap()).collect();
    // Give the listener time to count the four before the fifth arrives.
    eventually(Duration::from_secs(5), "the fifth refused", || async {
        let mut fifth = TcpStream::connect(admin).ok()?;
        closed_within(&mut fifth, Duration::from_millis(500)).then_some(())
    })
    .await;
    let mut other = Web::from(admin, source(9));
    assert_eq!(
        other.get("/login").await.status,
        200,
        "another address is served"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_with_their_session_and_are_capped_per_session() {
    let redis = RedisServer::start();
    let app = tuned(&redis, "", "streams_per_session = 2").await;
    let admin = app.app().admin_addr;
    let mut web = Web::new(admin);
    web.sign_in("viewer").await;
    let cookie = web.cookie().expect("signed in");
    let open = || {
        web.client()
            .get(format!("http://{admin}/events"))
            .header("cookie", cookie.clone())
            .send()
    };
    let mut first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.unwrap();
    assert_eq!(third.status(), 429, "a third stream for one session");
    drop(second);
    assert!(first.chunk().await.unwrap().is_some(), "the stream is live");
    let signed_out = web.post("/logout", &[]).await;
    assert_eq!(signed_out.status, 303);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = first.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended within 5 s of sign-out");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_only_sign_in_from_a_posted_form() {
    let redis = RedisServer::start();
    let app = TestApp::start(&redis, "", &[]).await;
    let admin = app.app().admin_addr;
    let mut web = Web::new(admin);
    let query = "/login?user=admin&password=pw-admin";
    let page = web.request("POST", query, &[], &[]).await;
    assert_eq!(page.status, 401, "credentials in the query string");
    assert!(!page.headers.contains_key("set-cookie"));
    let page = web.request("GET", query, &[], &[]).await;
    assert_eq!(page.status, 200);
    assert!(!page.headers.contains_key("set-cookie"));
    for method in ["PUT", "HEAD", "DELETE", "PATCH"] {
        let page = web
            .request(
                method,
                "/login",
                &[],
                &[("content-type", "application/x-www-form-urlencoded")],
            )
            .await;
        assert_eq!(page.status, 405, "{method} /login");
        assert!(!page.headers.contains_key("set-cookie"));
    }
    let page = web.try_sign_in("admin", "pw-admin").await;
    let cookie = page.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    // A page number past any end is an empty page, not a panic.
    web.get("/").await;
    let page = web.get("/log?page=18446744073709551615").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (status, _) = http(
        admin,
        "GET",
        "/api/v1/pushes?page=18446744073709551615&per_page=1000",
        Some(TEST_KEY),
    );
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_https_itself_with_a_secure_cookie() {
    let redis = RedisServer::start();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let settings = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let app = tuned(&redis, &settings, "").await;
    let port = app.app().admin_addr.port();
    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let mut web = Web::with(
        format!("https://localhost:{port}"),
        reqwest::Client::builder()
            .tls_certs_only([root])
            .resolve("localhost", app.app().admin_addr),
    );
    let page = web.try_sign_in("admin", "pw-admin").await;
    assert_eq!(page.status, 303, "{}", page.body);
    let cookie = page.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert_eq!(web.get("/").await.status, 200);
    // Plain HTTP to the TLS listener gets no page (the handshake fails; the server may
    // close before the request is even written).
    let mut plain = TcpStream::connect(app.app().admin_addr).unwrap();
    let _ = plain.write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP served a page"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_hides_redis_errors_and_probes_write_at_most_once_a_second() {
    let mut redis = RedisServer::start();
    let app = TestApp::start(&redis, "", &[]).await;
    let admin = app.app().admin_addr;
    let mut con = redis.connection();
    let sets = |con: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_set:calls="))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = sets(&mut con);
    for _ in 0..100 {
        let (status, _) = http(admin, "GET", "/readyz", None);
        assert_eq!(status, 200);
    }
    let written = sets(&mut con) - before;
    assert!(written <= 5, "100 probes wrote {written} times");
    redis.kill();
    let page = Web::new(admin).try_sign_in("admin", "pw-admin").await;
    assert_eq!(page.status, 503);
    assert!(page.body.contains("Sign-in is unavailable right now"));
    for detail in ["redis", "Redis", "refused", "No such file", "socket"] {
        assert!(!page.body.contains(detail), "sign-in page shows {detail}");
    }
    app.shutdown().await;
}
