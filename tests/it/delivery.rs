//! The sender against the strict FCM emulator: error classes, token expiry, a 503/429
//! storm, reserved times, dry runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pushgate::store::Store;
use serde_json::{Value, json};

use crate::support::*;

fn push(key: &str, token: &str) -> Value {
    json!({"uniqueKey": key, "device_id": token, "msg_title": "입금", "msg_contents": "10,000원이 입금되었습니다"})
}

async fn record_by_key(store: &Store, key: &str) -> Value {
    let id = store.id_for_key(key).await.unwrap().expect("stored");
    store.record(id).await.unwrap().expect("record").to_json()
}

/// Wait until every key's record has left the queues in a final status.
async fn wait_final(store: &Store, keys: &[String], within: Duration) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + within;
    loop {
        let mut done = BTreeMap::new();
        for key in keys {
            let rec = record_by_key(store, key).await;
            if matches!(
                rec["status"].as_str(),
                Some("sent" | "failed" | "dropped" | "expired")
            ) {
                done.insert(key.clone(), rec);
            }
        }
        if done.len() == keys.len() {
            return done;
        }
        let pending: Vec<_> = keys
            .iter()
            .filter(|k| !done.contains_key(*k))
            .take(5)
            .collect();
        assert!(
            Instant::now() < deadline,
            "still pending after {within:?}: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn history(rec: &Value) -> Vec<Value> {
    rec["history"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fcm_error_class_ends_in_its_record_state() {
    let redis = RedisServer::start();
    let emu = emulator(&[
        "--fail-token",
        "badarg-=INVALID_ARGUMENT",
        "--fail-token",
        "mismatch-=SENDER_ID_MISMATCH",
        "--fail-token",
        "apns-=THIRD_PARTY_AUTH_ERROR",
        "--fail-token",
        "quota-=QUOTA_EXCEEDED",
        "--fail-token",
        "unavail-=UNAVAILABLE",
        "--fail-token",
        "internal-=INTERNAL",
        "--unregistered-prefix",
        "dead-",
    ])
    .await;
    let (app, addr) = start_delivering(
        &redis,
        &emu,
        "max_attempts = 3\nmax_age_secs = 3\nretry_base_ms = 50\nretry_max_ms = 200\nquota_retry_ms = 100",
        "",
    )
    .await;
    let store = &app.app().store;

    let cases = [
        ("ok", "tok-ok-1", "sent", 1, "ACCEPTED"),
        ("badarg", "badarg-1", "failed", 1, "INVALID_ARGUMENT"),
        ("mismatch", "mismatch-1", "failed", 1, "SENDER_ID_MISMATCH"),
        ("apns", "apns-1", "failed", 1, "THIRD_PARTY_AUTH_ERROR"),
        ("dead", "dead-1", "failed", 1, "UNREGISTERED"),
        // Quota answers are no attempts: only the deadline (max_age_secs) ends them.
        ("quota", "quota-1", "expired", 0, "QUOTA_EXCEEDED"),
        ("unavail", "unavail-1", "failed", 3, "UNAVAILABLE"),
        ("internal", "internal-1", "failed", 3, "INTERNAL"),
    ];
    let messages: Vec<Value> = cases.iter().map(|(k, t, ..)| push(k, t)).collect();
    store_messages(addr, &messages).await;
    let keys: Vec<String> = cases.iter().map(|c| c.0.to_owned()).collect();
    let done = wait_final(store, &keys, Duration::from_secs(30)).await;
    for (key, _, status, attempts, outcome) in cases {
        let rec = &done[key];
        assert_eq!(rec["status"], status, "{key}: {rec}");
        assert_eq!(rec["attempts"], attempts, "{key}: {rec}");
        let steps = history(rec);
        if attempts > 0 {
            assert_eq!(steps.len(), attempts as usize, "{key}");
        } else {
            assert!(
                steps.len() >= 2,
                "{key} was tried until its deadline: {steps:?}"
            );
        }
        // An expired push's last entry may be the claim that found it past its deadline.
        assert!(
            steps
                .iter()
                .all(|s| s["outcome"] == outcome
                    || (status == "expired" && s["outcome"] == "EXPIRED")),
            "{key}: {steps:?}"
        );
        assert_eq!(
            rec["fcm_send_yn"],
            if status == "sent" { "Y" } else { "N" },
            "{key}"
        );
        assert!(rec.get("due_at").is_none(), "{key} is out of the queue");
        let id = rec["id"].as_u64().unwrap();
        assert!(
            store.has_bit("status", status, id).await.unwrap(),
            "{key} status bitmap"
        );
        assert!(
            !store.has_bit("status", "queued", id).await.unwrap(),
            "{key} left the queued bitmap"
        );
    }
    assert!(
        done["ok"]["result"]
            .as_str()
            .unwrap()
            .contains("projects/pushgate-emulator/messages/")
    );
    assert!(
        store
            .has_bit("fcm_send_yn", "Y", done["ok"]["id"].as_u64().unwrap())
            .await
            .unwrap()
    );

    // A later push to the dead token fails fast, without asking FCM again.
    let asked_before = emu
        .stats()
        .rejected
        .get("UNREGISTERED")
        .copied()
        .unwrap_or(0);
    store_messages(addr, &[push("dead-again", "dead-1")]).await;
    let rec =
        &wait_final(store, &["dead-again".to_owned()], Duration::from_secs(10)).await["dead-again"];
    assert_eq!(rec["status"], "failed");
    assert!(
        rec["result"].as_str().unwrap().contains("unregistered"),
        "{rec}"
    );
    assert_eq!(
        emu.stats()
            .rejected
            .get("UNREGISTERED")
            .copied()
            .unwrap_or(0),
        asked_before
    );
    assert_eq!(store.queue_depths().await.unwrap(), (0, 0));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_retried_as_unavailable_then_failed() {
    let redis = RedisServer::start();
    let emu = emulator(&[]).await; // only its token endpoint is used
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sa_dir = tempfile::tempdir().unwrap();
    let fcm = fcm_table(&emu, sa_dir.path(), "max_attempts = 2\nretry_base_ms = 50\nrequest_timeout_ms = 500\nconnect_timeout_ms = 200\nlease_secs = 2")
        .replace(&format!("http://{}", emu.addr()), &format!("http://{closed}"));
    let app = TestApp::start_with(
        &redis,
        &port_block("p", "device.rhai", ""),
        &[("device.rhai", SEND)],
        &fcm,
    )
    .await;
    store_messages(app.port_addr("p").await, &[push("nowhere", "tok-1")]).await;
    let rec = &wait_final(
        &app.app().store,
        &["nowhere".to_owned()],
        Duration::from_secs(20),
    )
    .await["nowhere"];
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["attempts"], 2);
    assert!(
        history(rec)
            .iter()
            .all(|s| s["outcome"] == "TRANSPORT" && s["http"] == 0),
        "{rec}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_expiring_during_a_run_fail_no_send() {
    let redis = RedisServer::start();
    let emu = emulator(&["--token-ttl", "2"]).await;
    let (app, addr) = start_delivering(&redis, &emu, "max_attempts = 1", "").await;
    let mut keys = Vec::new();
    let started = Instant::now();
    // Batches spread over more than three token lifetimes.
    for batch in 0..14 {
        let messages: Vec<Value> = (0..20)
            .map(|i| {
                let key = format!("ttl-{batch}-{i}");
                keys.push(key.clone());
                push(&key, &format!("tok-{i}"))
            })
            .collect();
        store_messages(addr, &messages).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(started.elapsed() > Duration::from_secs(6));
    let done = wait_final(&app.app().store, &keys, Duration::from_secs(30)).await;
    let failed: Vec<_> = done
        .iter()
        .filter(|(_, r)| r["status"] != "sent")
        .map(|(k, _)| k)
        .collect();
    assert!(
        failed.is_empty(),
        "with max_attempts = 1, a send failed over an expired token: {failed:?}"
    );
    let stats = emu.stats();
    assert!(stats.tokens_issued >= 3, "tokens were refreshed: {stats:?}");
    assert_eq!(stats.accepted, keys.len() as u64);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_and_429_storm_ends_with_every_push_sent_exactly_once() {
    let redis = RedisServer::start();
    let emu = emulator(&["--fail-503", "0.15", "--fail-429", "0.15"]).await;
    let (app, addr) = start_delivering(
        &redis,
        &emu,
        // No attempt cap: transient failures retry until each push's deadline.
        "retry_base_ms = 100\nretry_max_ms = 400\nquota_retry_ms = 100",
        "",
    )
    .await;
    let total = 5000;
    let keys: Vec<String> = (0..total).map(|n| format!("storm-{n}")).collect();
    let messages: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(n, k)| push(k, &format!("tok-{}", n % 300)))
        .collect();
    store_messages(addr, &messages).await;
    let done = wait_final(&app.app().store, &keys, Duration::from_secs(240)).await;

    let stats = emu.stats();
    assert!(
        done.values().all(|r| r["status"] == "sent"),
        "every record ends sent"
    );
    assert_eq!(stats.accepted, total as u64);
    assert_eq!(stats.by_key.len(), total);
    assert!(
        stats.by_key.values().all(|n| *n == 1),
        "each uniqueKey accepted exactly once"
    );
    let refused: u64 = stats.rejected.values().sum();
    assert!(refused > 500, "the storm happened: {stats:?}");
    // The console's counters add up: every outcome counted once, under its status.
    let totals: std::collections::HashMap<String, u64> = app
        .app()
        .store
        .port_totals("p")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(totals.get("sent"), Some(&(total as u64)), "{totals:?}");
    assert_eq!(totals.get("received"), Some(&(total as u64)), "{totals:?}");

    // Retries are spaced as configured: UNAVAILABLE waits at least half of
    // 100 ms · 2^(attempt-1) (capped at 400 ms), QUOTA_EXCEEDED at least half of 100 ms · 2^(attempt-1).
    let mut retried = 0;
    for rec in done.values() {
        let steps = history(rec);
        for pair in steps.windows(2) {
            retried += 1;
            // A quota answer is no attempt: its entry shows the attempts counted so far
            // (0 before the first counted one), and its backoff at least that many's.
            let attempt = pair[0]["attempt"].as_u64().unwrap().max(1) as u32;
            let full = (100u64 << (attempt - 1).min(10)).min(400);
            let gap = pair[1]["at"].as_i64().unwrap() - pair[0]["at"].as_i64().unwrap();
            assert!(
                gap as u64 >= full / 2,
                "{}: retry {attempt} after {gap} ms, configured at least {} ms",
                rec["uniqueKey"],
                full / 2
            );
        }
    }
    assert!(retried > 500, "{retried} retries checked");
    assert_eq!(app.app().store.queue_depths().await.unwrap(), (0, 0));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reserved_three_seconds_ahead_goes_out_within_a_second_after() {
    let redis = RedisServer::start();
    let emu = emulator(&[]).await;
    let (app, addr) = start_delivering(&redis, &emu, "", "").await;
    // sndn_rsev_hour has whole seconds: the next whole second at least 3 s from now.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Seoul);
    let reserved =
        now + chrono::Duration::milliseconds(4000 - i64::from(now.timestamp_subsec_millis()));
    let reserved_ms = reserved.timestamp() * 1000;
    let mut m = push("reserved", "tok-1");
    m["sndn_rsev_hour"] = reserved.format("%Y%m%d%H%M%S").to_string().into();
    store_messages(addr, &[m]).await;
    assert_eq!(
        record_by_key(&app.app().store, "reserved").await["status"],
        "scheduled"
    );

    let rec = &wait_final(
        &app.app().store,
        &["reserved".to_owned()],
        Duration::from_secs(15),
    )
    .await["reserved"];
    let sent_at = history(rec)[0]["at"].as_i64().unwrap();
    assert!(
        sent_at >= reserved_ms,
        "sent {} ms early",
        reserved_ms - sent_at
    );
    assert!(
        sent_at <= reserved_ms + 1000,
        "sent {} ms late",
        sent_at - reserved_ms
    );
    assert_eq!(rec["status"], "sent");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_port_sends_validate_only() {
    let redis = RedisServer::start();
    let emu = emulator(&[]).await;
    let (app, addr) = start_delivering(&redis, &emu, "", "dry_run = true").await;
    store_messages(addr, &[push("dry", "tok-1")]).await;
    let rec = &wait_final(
        &app.app().store,
        &["dry".to_owned()],
        Duration::from_secs(10),
    )
    .await["dry"];
    assert_eq!(rec["status"], "sent");
    assert_eq!(rec["dry_run"], true);
    assert_eq!(rec["fcm_send_yn"], "N", "validated, delivered to nobody");
    let stats = emu.stats();
    assert_eq!((stats.validated, stats.accepted), (1, 0));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_send_then_restart_finishes_every_push_and_counts_the_resent() {
    let redis = RedisServer::start();
    let emu = emulator(&["--latency-ms", "150"]).await;
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), &[("device.rhai", SEND)]);
    let max_in_flight = 128;
    let fcm = fcm_table(
        &emu,
        dir.path(),
        &format!("max_in_flight = {max_in_flight}\nlease_secs = 2\nrequest_timeout_ms = 1500"),
    );
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("pushgate.toml");
    let ports = port_block("p", "device.rhai", "");
    std::fs::write(
        &config,
        format!(
            "{}\n{fcm}",
            config_text(&redis.url(), &admin.to_string(), &ports)
        ),
    )
    .unwrap();

    let mut first = tokio::task::block_in_place(|| Process::serve(&config, admin));
    let addr = tokio::task::block_in_place(|| first.port_addr("p"));
    let total = 3000;
    let keys: Vec<String> = (0..total).map(|n| format!("crash-{n}")).collect();
    // Spread over devices: one device takes at most 240 a minute.
    let messages: Vec<Value> = (keys.iter().enumerate())
        .map(|(n, k)| push(k, &format!("tok-{}", n % 100)))
        .collect();
    store_messages(addr, &messages).await;
    eventually(Duration::from_secs(30), "sends under way", || async {
        (emu.stats().accepted >= 500).then_some(())
    })
    .await;
    let _ = first.child.kill();
    let _ = first.child.wait();
    let accepted_at_kill = emu.stats().accepted;
    assert!(
        accepted_at_kill < total as u64,
        "killed while sending ({accepted_at_kill} accepted)"
    );

    let _second = tokio::task::block_in_place(|| Process::serve(&config, admin));
    let store = Store::open(&redis.url(), "pg:", Duration::from_secs(2), 3600).unwrap();
    let done = wait_final(&store, &keys, Duration::from_secs(120)).await;
    assert!(
        done.values().all(|r| r["status"] == "sent"),
        "every record ends sent"
    );
    assert_eq!(
        store.queue_depths().await.unwrap(),
        (0, 0),
        "nothing left pending"
    );

    let stats = emu.stats();
    let twice: Vec<_> = stats.by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(stats.by_key.len(), total, "every push reached FCM");
    assert!(stats.by_key.values().all(|n| *n <= 2));
    // Only sends in flight at the kill (accepted by FCM, outcome not yet written) may repeat.
    assert!(
        twice.len() <= max_in_flight,
        "{} sent twice, more than the {max_in_flight} in flight",
        twice.len()
    );
    eprintln!(
        "crash test: killed with {accepted_at_kill} of {total} accepted; after restart all {total} sent; {} sent twice (in flight at the kill)",
        twice.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_longer_than_the_lease_mid_send_sends_nothing_twice() {
    // The claims must survive the kill for this to hold: `always` keeps them on disk.
    let mut redis = RedisServer::start_durable();
    let emu = emulator(&["--latency-ms", "1500"]).await;
    let (app, addr) = start_delivering(
        &redis,
        &emu,
        "max_in_flight = 256\nlease_secs = 2\nrequest_timeout_ms = 1800\nretry_base_ms = 100",
        "",
    )
    .await;
    let total = 40;
    let keys: Vec<String> = (0..total).map(|n| format!("outage-{n}")).collect();
    let messages: Vec<Value> = keys.iter().map(|k| push(k, "tok-1")).collect();
    store_messages(addr, &messages).await;
    let store = app.app().store.clone();
    eventually(Duration::from_secs(10), "all claimed and in flight", || {
        let store = store.clone();
        async move { (store.queue_depths().await.ok()? == (0, total as u64)).then_some(()) }
    })
    .await;
    // FCM answers while Redis cannot take the outcomes, and the 2 s leases run out
    // meanwhile; the sender has free slots, so only its stall keeps it from
    // re-claiming (and re-sending) its own records when Redis returns.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let done = wait_final(&app.app().store, &keys, Duration::from_secs(60)).await;
    assert!(
        done.values().all(|r| r["status"] == "sent"),
        "every record ends sent"
    );
    let stats = emu.stats();
    let twice: Vec<_> = stats.by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "sent twice after an outage without a crash: {twice:?}"
    );
    assert_eq!(stats.by_key.len(), total);
    app.shutdown().await;
}

/// Sends to `device_id` with the message's `ttl` field (seconds) as the push's ttl.
const SEND_WITH_TTL: &str = r#"
fn route(msg) {
    let push = send_token(msg.device_id, msg.msg_title, msg.msg_contents);
    push.data = #{ uniqueKey: msg.uniqueKey };
    if "ttl" in msg { push.ttl = parse_int(msg.ttl); }
    push
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_ttl_passes_during_an_outage_ends_expired_and_one_without_keeps_trying() {
    let redis = RedisServer::start();
    // Every send to an "unavail-" token answers 503: an FCM outage for those devices.
    let emu = emulator(&["--fail-token", "unavail-=UNAVAILABLE"]).await;
    let sa_dir = tempfile::tempdir().unwrap();
    let fcm = fcm_table(
        &emu,
        sa_dir.path(),
        "retry_base_ms = 100\nretry_max_ms = 300\nmax_age_secs = 3600",
    );
    let app = TestApp::start_with(
        &redis,
        &port_block("p", "ttl.rhai", ""),
        &[("ttl.rhai", SEND_WITH_TTL)],
        &fcm,
    )
    .await;
    let addr = app.port_addr("p").await;
    let mut short = push("short-ttl", "unavail-1");
    short["ttl"] = json!("2");
    let long = push("no-ttl", "unavail-2");
    let mut fine = push("ttl-ok", "tok-ok-9");
    fine["ttl"] = json!("600");
    store_messages(addr, &[short, long, fine]).await;
    let store = &app.app().store;
    let done = wait_final(
        store,
        &["short-ttl".to_owned(), "ttl-ok".to_owned()],
        Duration::from_secs(20),
    )
    .await;
    let expired = &done["short-ttl"];
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_eq!(expired["fcm_send_yn"], "N");
    let steps = history(expired);
    // The last entry may be the claim that found it past its deadline (`EXPIRED`).
    let tries: Vec<&Value> = steps.iter().filter(|s| s["outcome"] != "EXPIRED").collect();
    assert!(
        tries.len() >= 2 && tries.iter().all(|s| s["outcome"] == "UNAVAILABLE"),
        "retried until its 2 s deadline: {steps:?}"
    );
    assert!(
        tries.len() + 1 >= steps.len(),
        "one EXPIRED entry at most: {steps:?}"
    );
    let received = expired["received_at"].as_i64().unwrap();
    let last = tries.last().unwrap()["at"].as_i64().unwrap();
    // A try scheduled before the deadline may be claimed and answered a little after it.
    assert!(
        last - received <= 4_000,
        "no try long after the deadline: {last} - {received}"
    );
    assert_eq!(done["ttl-ok"]["status"], "sent");
    // Without a ttl the deadline is max_age_secs, an hour away: still retrying.
    let waiting = record_by_key(store, "no-ttl").await;
    assert_eq!(waiting["status"], "retrying", "{waiting}");
    assert!(waiting["attempts"].as_u64().unwrap() >= 2);
    app.shutdown().await;
}

/// A stored record, as the ingest of two hours ago would have written it.
fn two_hours_old(key: &str, status: pushgate::push::Status) -> pushgate::store::NewRecord {
    let now = pushgate::clock::now_ms();
    pushgate::store::NewRecord {
        unique_key: key.to_owned(),
        port: "p".into(),
        received_at_ms: now - 2 * 3_600_000,
        fields: push(key, "tok-old").as_object().cloned().unwrap(),
        status,
        due_ms: Some(now),
        decision: serde_json::from_value(json!({"action": "send",
            "push": {"target": {"token": "tok-old"}, "data": {"uniqueKey": key}}}))
        .ok(),
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_found_past_its_deadline_expires_unsent_and_a_resend_sends_it_anyway() {
    use pushgate::push::Status;
    let redis = RedisServer::start();
    let emu = emulator(&[]).await;
    let (app, _) = start_delivering(&redis, &emu, "max_age_secs = 3600", "").await;
    let store = &app.app().store;
    // Queued two hours ago (the sender was down): past max_age_secs when claimed.
    store
        .ingest(&[two_hours_old("stale", Status::Queued)])
        .await
        .unwrap();
    let stale = &wait_final(store, &["stale".to_owned()], Duration::from_secs(10)).await["stale"];
    assert_eq!(stale["status"], "expired", "{stale}");
    assert_eq!(stale["attempts"], 0, "not an attempt: nothing was sent");
    assert_eq!(history(stale)[0]["outcome"], "EXPIRED");
    assert_eq!(emu.stats().accepted, 0, "FCM never saw it");
    // An operator's resend counts the deadline from the resend: it goes out.
    let id = stale["id"].as_u64().unwrap();
    assert_eq!(
        store.resend(id, pushgate::clock::now_ms()).await.unwrap(),
        pushgate::store::log::Resend::Queued
    );
    let resent = eventually(Duration::from_secs(10), "the resend sent", || async {
        let rec = record_by_key(store, "stale").await;
        (rec["status"] == "sent").then_some(rec)
    })
    .await;
    assert_eq!(resent["fcm_send_yn"], "Y");
    assert_eq!(emu.stats().accepted, 1);
    app.shutdown().await;
}
