//! Port modes and lifecycles: connect mode with reconnects, idle timeouts, a managed
//! Redis, and `pushgate check`.

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_mode_dials_the_upstream_and_redials_after_it_drops() {
    let redis = RedisServer::start();
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ports = format!(
        "[[port]]\nname = \"up\"\nmode = \"connect\"\naddr = \"{}\"\nscript = \"transfer.rhai\"\nreconnect_max = 1\n",
        upstream.local_addr().unwrap()
    );
    let app = TestApp::transferring(&redis, &ports).await;
    let telegrams = Telegrams::ndjson();
    for round in 0..3 {
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), upstream.accept())
            .await
            .expect("pushgate dials (again)")
            .unwrap();
        let key = format!("up-{round}");
        stream
            .write_all(&telegrams.frame_text(&message(&key, round).to_string()))
            .await
            .unwrap();
        let ack = telegrams
            .read_acks(&mut stream, 1)
            .await
            .pop()
            .expect("ack");
        assert_eq!(ack["ok"], true, "{ack}");
        assert_eq!(ack["key"], key.as_str());
        drop(stream); // the upstream hangs up; pushgate must dial again
    }
    let view = app.app().supervisor.port("up").await.unwrap();
    assert_eq!(view.state, pushgate::supervisor::PortState::Running);
    assert_eq!(view.stored, 3);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_idle_timeout() {
    let redis = RedisServer::start();
    let ports = "[[port]]\nname = \"p\"\naddr = \"127.0.0.1:0\"\nscript = \"transfer.rhai\"\nidle_timeout = 1\n";
    let app = TestApp::transferring(&redis, ports).await;
    let addr = app.port_addr("p").await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "idle connection closed without a word: {closed:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_redis_is_started_restarted_after_a_crash_and_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), &[("transfer.rhai", TRANSFER_SCRIPT)]);
    let config_path = dir.path().join("pushgate.toml");
    std::fs::write(
        &config_path,
        "[redis]\nmanaged = true\ndir = \"data\"\ntimeout_ms = 1000\nappendfsync = \"always\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[port]]\nname = \"p\"\naddr = \"127.0.0.1:0\"\nscript = \"transfer.rhai\"\n",
    )
    .unwrap();
    let config = pushgate::config::Config::load(&config_path).unwrap();
    let app = TestApp {
        dir,
        app: Some(
            pushgate::app::App::start(config, &config_path)
                .await
                .expect("starts with managed redis"),
        ),
        config_path,
    };
    let addr = app.port_addr("p").await;
    send_one_ok(addr, "m1", 1).await;
    assert!(
        app.dir.path().join("data/appendonlydir").exists(),
        "AOF is on in the data dir"
    );
    // With `always`, an ack means the record is on disk, so it must survive kill -9.
    // (With `everysec` Redis may hold back its AOF write for up to 2 s while an fsync
    // is slow, and a kill in that window loses what was acked: docs/backup.md.)
    let fsync: (String, String) = redis::Client::open(format!(
        "redis+unix://{}",
        app.dir.path().join("data/redis.sock").display()
    ))
    .and_then(|c| c.get_connection())
    .and_then(|mut c| {
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query(&mut c)
    })
    .unwrap();
    assert_eq!(fsync.1, "always");

    // Kill the managed redis behind pushgate's back: it comes back, with the record.
    let pid = std::fs::read_to_string(app.dir.path().join("data/redis.log"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.split("pid=")
                .nth(1)
                .and_then(|p| p.split(',').next())
                .map(str::to_owned)
        })
        .expect("pid in the redis log");
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let store = app.app().store.clone();
    let record = eventually(
        Duration::from_secs(20),
        "managed redis back with the record",
        || {
            let store = store.clone();
            async move { store.record(1).await.ok().flatten().map(|r| r.to_json()) }
        },
    )
    .await;
    assert_eq!(record["uniqueKey"], "m1");
    send_one_ok(addr, "m2", 2).await;

    let socket = app.dir.path().join("data/redis.sock");
    let keep = tempfile::tempdir().unwrap();
    let TestApp {
        dir, app: running, ..
    } = app;
    running.unwrap().shutdown().await;
    assert!(
        std::os::unix::net::UnixStream::connect(&socket).is_err(),
        "managed redis stops with pushgate"
    );
    drop((dir, keep));
}

#[test]
fn check_accepts_the_example_config_and_its_scripts() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pushgate.example.toml");
    let (ok, stdout, stderr) = check_config(&example);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("2 ports, 0 apps, every script compiles"),
        "{stdout}"
    );
}

#[test]
fn check_reports_each_error_as_file_line_column_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    write_scripts(
        dir.path(),
        &[
            ("bad.rhai", "fn route(msg) {\n  let x = ;\n}\n"),
            ("ok.rhai", TRANSFER_SCRIPT),
        ],
    );
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}",
            port_block("a", "bad.rhai", ""),
            port_block("b", "ok.rhai", "")
        ),
    )
    .unwrap();
    let (ok, _, stderr) = check_config(&config);
    assert!(!ok);
    let script = dir.path().join("bad.rhai");
    assert!(
        stderr.contains(&format!("{}:2:", script.display())),
        "{stderr}"
    );

    std::fs::write(&config, "[[port]]\nname = \"a\"\naddr = \"127.0.0.1:0\"\nscript = \"ok.rhai\"\nframing = \"morse\"\n").unwrap();
    let (ok, _, stderr) = check_config(&config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:5:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("morse"), "{stderr}");

    std::fs::write(
        &config,
        "[[port]]\nname = \"a\"\naddr = \"nowhere\"\nscript = \"ok.rhai\"\nmax_connections = 0\n",
    )
    .unwrap();
    let (ok, _, stderr) = check_config(&config);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 2, "one line per problem: {stderr}");

    std::fs::write(
        &config,
        format!(
            "{}[fcm]\nservice_account = \"missing.json\"\nendpoint = \"http://127.0.0.1:1\"\n",
            port_block("b", "ok.rhai", "")
        ),
    )
    .unwrap();
    let (ok, _, stderr) = check_config(&config);
    assert!(!ok, "a missing service account fails check");
    assert!(stderr.contains("missing.json"), "{stderr}");
}

#[test]
fn check_reads_an_apns_apps_key_and_never_prints_it() {
    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), &[("ok.rhai", TRANSFER_SCRIPT)]);
    let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string();
    std::fs::write(dir.path().join("AuthKey_ABC123DEFG.p8"), &key).unwrap();
    // The same key with one line of it damaged: the rest is still secret.
    let damaged = key.replacen("\n", "\n!!", 1);
    std::fs::write(dir.path().join("damaged.p8"), &damaged).unwrap();
    let config = dir.path().join("c.toml");
    let with_key = |file: &str| {
        let app = format!(
            "[[app]]\nname = \"ios\"\nprovider = \"apns\"\nkey_file = \"{file}\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"DEF456GHIJ\"\ntopic = \"kr.example.bank\"\nendpoint = \"http://127.0.0.1:1\"\n"
        );
        std::fs::write(
            &config,
            format!("{}{app}", port_block("b", "ok.rhai", "app = \"ios\"")),
        )
        .unwrap();
        check_config(&config)
    };

    let (ok, stdout, stderr) = with_key("AuthKey_ABC123DEFG.p8");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 ports, 1 apps"), "{stdout}");

    let (ok, _, stderr) = with_key("damaged.p8");
    assert!(!ok, "a damaged key fails check");
    assert!(stderr.contains("app \"ios\""), "{stderr}");
    assert!(stderr.contains("damaged.p8"), "{stderr}");
    assert!(stderr.contains("not an EC P-256 private key"), "{stderr}");
    for line in damaged.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !stderr.contains(line.trim_start_matches('!')),
            "the key shows: {stderr}"
        );
    }

    let (ok, _, stderr) = with_key("missing.p8");
    assert!(!ok, "a missing key fails check");
    assert!(stderr.contains("missing.p8"), "{stderr}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), &[("t.rhai", TRANSFER_SCRIPT)]);
    let config = dir.path().join("c.toml");
    // An unreachable Redis makes `serve` log an error at once; `check` then stops nothing.
    std::fs::write(&config, "[redis]\nurl = \"redis://127.0.0.1:1\"\ntimeout_ms = 200\n[admin]\nlisten = \"127.0.0.1:0\"\n[[port]]\nname = \"p\"\naddr = \"127.0.0.1:0\"\nscript = \"t.rhai\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .next()
        .unwrap()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("redis is not reachable"),
        "{line}"
    );
    assert!(!first.contains("127.0.0.1:1\\u"), "no colour codes");
}

/// `pushgate send`, as an operator testing a port would run it.
fn send_by_hand(args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg("send")
        .args(args)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_frames_json_and_fixed_width_telegrams_and_prints_the_acks() {
    let redis = RedisServer::start();
    let ports = format!(
        "{}{}",
        port_block("j", "t.rhai", ""),
        port_block(
            "f",
            "t.rhai",
            &format!(
                "framing = \"ascii-len\"\nencoding = \"euc-kr\"\npayload = \"fixed\"\n{FIXED_LAYOUT}"
            )
        )
    );
    let app = TestApp::start(&redis, &ports, &[("t.rhai", TRANSFER_SCRIPT)]).await;
    let json_addr = app.port_addr("j").await.to_string();
    let fixed_addr = app.port_addr("f").await.to_string();
    let lines = format!("{}\n{}\n", message("S1", 1), message("S2", 2));
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || send_by_hand(&["--addr", &json_addr], &lines))
            .await
            .unwrap();
    assert!(ok, "{stderr}");
    let acks: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(acks.len(), 2, "{stdout}");
    assert!(acks.iter().all(|a| a["ok"] == true));

    let config = app.config_path.display().to_string();
    let line = format!("{}\n", message("S3", 3));
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        send_by_hand(
            &["--config", &config, "--port", "f", "--addr", &fixed_addr],
            &line,
        )
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("\"key\":\"S3\"") && stdout.contains("\"ok\":true"),
        "{stdout}"
    );
    let id = app
        .app()
        .store
        .id_for_key("S3")
        .await
        .unwrap()
        .expect("stored");
    let record = app.app().store.record(id).await.unwrap().unwrap().to_json();
    assert_eq!(
        record["msg_title"], "이체 완료",
        "EUC-KR fixed-width telegram decoded"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_stop_outlasts_a_reload_and_a_restart() {
    let redis = RedisServer::start();
    let ports = port_block("p", "transfer.rhai", "");
    let app = TestApp::transferring(&redis, &ports).await;
    app.port_addr("p").await;
    let sup = app.app().supervisor.clone();
    sup.stop("p").await.unwrap();

    // A reload that changes the port (so it is restarted) keeps it stopped: the
    // operator's switch wins over `autostart`.
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(
        &app.config_path,
        text.replace("idle_timeout = 0", "idle_timeout = 30"),
    )
    .unwrap();
    let changes = app.app().reload().await.unwrap();
    assert_eq!(changes.changed.len(), 1, "{changes:?}");
    assert_eq!(
        sup.port("p").await.unwrap().state,
        pushgate::supervisor::PortState::Stopped
    );

    // So does a restart of the process.
    let config_path = app.config_path.clone();
    let TestApp {
        dir, app: running, ..
    } = app;
    running.unwrap().shutdown().await;
    let config = pushgate::config::Config::load(&config_path).unwrap();
    let again = pushgate::app::App::start(config, &config_path)
        .await
        .unwrap();
    assert_eq!(
        again.supervisor.port("p").await.unwrap().state,
        pushgate::supervisor::PortState::Stopped
    );
    // Started again, it runs, and a reload leaves it running.
    again.supervisor.start("p").await.unwrap();
    again.reload().await.unwrap();
    assert_ne!(
        again.supervisor.port("p").await.unwrap().state,
        pushgate::supervisor::PortState::Stopped
    );
    again.shutdown().await;
    drop(dir);
}
