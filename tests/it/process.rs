//! The real binary under signals: SIGHUP applies a config diff, SIGTERM drains.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::support::*;

const SEND_ALL: &str =
    "fn route(msg) { send_token(msg.device_id, msg.msg_title, msg.msg_contents) }";
const DROP_ALL: &str = "fn route(msg) { drop(\"swapped script\") }";
const BROKEN: &str = "fn route(msg) {\n    let x = ;\n}";

fn write_config(
    dir: &std::path::Path,
    redis: &RedisServer,
    admin: SocketAddr,
    ports: &str,
) -> std::path::PathBuf {
    let path = dir.join("pushgate.toml");
    std::fs::write(&path, config_text(&redis.url(), &admin.to_string(), ports)).unwrap();
    path
}

fn status_of(con: &mut redis::Connection, ack: &Value) -> String {
    let id: u64 = ack["id"]
        .as_str()
        .expect("ok ack has an id")
        .parse()
        .unwrap();
    record(con, id).expect("record")["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn one_frame(stream: &mut tokio::net::TcpStream, key: &str) -> Value {
    let telegrams = Telegrams::ndjson();
    stream
        .write_all(&telegrams.frame_text(&message(key, 1).to_string()))
        .await
        .unwrap();
    telegrams
        .read_acks(stream, 1)
        .await
        .pop()
        .expect("ack on the open connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_added_removed_changed_and_keeps_a_broken_script_out() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    write_scripts(
        dir.path(),
        &[
            ("keep.rhai", SEND_ALL),
            ("swap.rhai", SEND_ALL),
            ("send.rhai", SEND_ALL),
        ],
    );
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let before = [
        port_block("keep", "keep.rhai", ""),
        port_block("swap", "swap.rhai", ""),
        port_block("change", "send.rhai", "max_connections = 8"),
        port_block("gone", "send.rhai", ""),
    ]
    .concat();
    let config = write_config(dir.path(), &redis, admin, &before);
    let process = tokio::task::block_in_place(|| Process::serve(&config, admin));
    let addrs: Vec<SocketAddr> = ["keep", "swap", "change", "gone"]
        .iter()
        .map(|p| tokio::task::block_in_place(|| process.port_addr(p)))
        .collect();
    let mut keep_conn = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
    let mut swap_conn = tokio::net::TcpStream::connect(addrs[1]).await.unwrap();
    let mut change_conn = tokio::net::TcpStream::connect(addrs[2]).await.unwrap();
    assert_eq!(one_frame(&mut keep_conn, "k0").await["ok"], true);
    assert_eq!(one_frame(&mut change_conn, "c0").await["ok"], true);

    write_scripts(
        dir.path(),
        &[("keep.rhai", BROKEN), ("swap.rhai", DROP_ALL)],
    );
    let after = [
        port_block("keep", "keep.rhai", ""),
        port_block("swap", "swap.rhai", ""),
        port_block("change", "send.rhai", "max_connections = 9"),
        port_block("new", "send.rhai", ""),
    ]
    .concat();
    write_config(dir.path(), &redis, admin, &after);
    process.signal("HUP");
    let new_addr = tokio::task::block_in_place(|| process.port_addr("new"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::task::block_in_place(|| process.port("gone")).is_some() {
        assert!(Instant::now() < deadline, "removed port still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut con = redis.connection();
    // Unchanged port with a broken script: still running on its old script, error visible.
    let keep = tokio::task::block_in_place(|| process.port("keep")).unwrap();
    assert_eq!(keep["state"], "running");
    let script_error = keep["script_error"].as_str().expect("script error shown");
    assert!(script_error.contains("keep.rhai:2:"), "{script_error}");
    let ack = one_frame(&mut keep_conn, "k1").await;
    assert_eq!(
        status_of(&mut con, &ack),
        "queued",
        "the old script still routes"
    );
    // Unchanged port with a new valid script: swapped in place, connection kept.
    let ack = one_frame(&mut swap_conn, "s1").await;
    assert_eq!(
        status_of(&mut con, &ack),
        "dropped",
        "the new script routes on the old connection"
    );
    // Changed port: restarted, so its old connection was closed.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut change_conn, &mut rest),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(_))),
        "changed port closed its connections"
    );
    let change_addr = tokio::task::block_in_place(|| process.port_addr("change"));
    send_one_ok(change_addr, "c1", 1).await;
    // Removed port: no longer listening. Added port: takes frames.
    assert!(
        tokio::net::TcpStream::connect(addrs[3]).await.is_err(),
        "removed port still accepts"
    );
    send_one_ok(new_addr, "n1", 1).await;

    // A config that does not load changes nothing.
    std::fs::write(dir.path().join("pushgate.toml"), "this is not toml =").unwrap();
    process.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = tokio::task::block_in_place(|| http_text(admin, "/metrics"));
        if text.contains("pushgate_reloads_total{result=\"failed\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken reload was never attempted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ack = one_frame(&mut keep_conn, "k2").await;
    assert_eq!(
        ack["ok"], true,
        "connections of unchanged ports survive a failed reload"
    );
    let ports: Vec<String> = tokio::task::block_in_place(|| process.ports())
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ports,
        ["change", "keep", "new", "swap"],
        "a failed reload changes no port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_frames_in_flight_acks_only_what_is_stored_and_exits_zero() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), &[("send.rhai", SEND_ALL)]);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(dir.path(), &redis, admin, &port_block("p", "send.rhai", ""));
    let mut process = tokio::task::block_in_place(|| Process::serve(&config, admin));
    let addr = tokio::task::block_in_place(|| process.port_addr("p"));

    let telegrams = Telegrams::ndjson();
    let total = 5000;
    let mut bytes = Vec::new();
    for n in 0..total {
        bytes.extend(telegrams.frame_text(&message(&format!("T{n}"), n).to_string()));
    }
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(&bytes).await.unwrap();
    process.signal("TERM");
    let acks = telegrams.read_acks(&mut rd, total).await;
    let status = tokio::task::block_in_place(|| process.wait(Duration::from_secs(30)));
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    assert!(!acks.is_empty(), "frames sent before SIGTERM are answered");

    let mut con = redis.connection();
    for (n, ack) in acks.iter().enumerate() {
        assert_eq!(ack["key"], format!("T{n}"), "acks come in frame order");
        if ack["ok"] == true {
            let id: Option<u64> = redis::cmd("HGET")
                .arg("pg:keyIndex")
                .arg(format!("T{n}"))
                .query(&mut con)
                .unwrap();
            assert_eq!(
                id.map(|i| i.to_string()).as_deref(),
                ack["id"].as_str(),
                "T{n} acked ok but missing"
            );
        }
    }
    eprintln!(
        "SIGTERM: {} of {total} frames acked before exit",
        acks.len()
    );
}

/// SIGHUP to the real binary adds an app (its sender starts and its token is fetched) and
/// removes it again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_an_app() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), &[("send.rhai", SEND_ALL)]);
    let bank = emulator(&["--project", "bank-prj"]).await;
    let card = emulator(&["--project", "card-prj"]).await;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ports = port_block("p", "send.rhai", "");
    let base = config_text(&redis.url(), &admin.to_string(), &ports);
    let only_bank = format!("{base}\n{}", fcm_table(&bank, dir.path(), ""));
    let with_card = format!("{only_bank}{}", app_table(&card, dir.path(), "card", ""));
    let path = dir.path().join("pushgate.toml");
    std::fs::write(&path, &only_bank).unwrap();
    let process = Process::serve(&path, admin);
    let apps_ready = |wanted: &'static [&'static str]| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, ready) =
                tokio::task::block_in_place(|| http(admin, "GET", "/readyz", None));
            let mut names: Vec<String> = ready["apps"]
                .as_object()
                .map(|a| a.keys().cloned().collect())
                .unwrap_or_default();
            names.sort();
            if status == 200 && names == wanted {
                return ready;
            }
            assert!(
                Instant::now() < deadline,
                "apps never became {wanted:?}: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    apps_ready(&["default"]).await;
    std::fs::write(&path, &with_card).unwrap();
    process.signal("HUP");
    let ready = apps_ready(&["card", "default"]).await;
    assert_eq!(ready["apps"]["card"]["token"], "ok", "{ready}");
    assert_eq!(
        card.stats().tokens_issued,
        1,
        "the new app fetched its own token"
    );
    std::fs::write(&path, &only_bank).unwrap();
    process.signal("HUP");
    apps_ready(&["default"]).await;
}
