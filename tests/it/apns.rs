//! APNs apps (issue 14): pushes to Apple directly, through the strict APNs emulator.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// iOS devices (`D_servicename` = `IOS`) go to the APNs app `ios`, the rest to FCM.
const BY_PLATFORM: &str = r#"
fn route(msg) {
    let push = send_token(msg.device_id, msg.msg_title, msg.msg_contents);
    push.data = #{ uniqueKey: msg.uniqueKey };
    if msg.D_servicename == "IOS" { push.app = "ios"; push.ttl = 600; }
    if msg.push_grp_id == "BIG" {
        let body = "";
        for i in 0..1500 { body += "가"; }
        push.body = body;
    }
    push
}
"#;

fn push(key: &str, token: &str, platform: &str) -> Value {
    json!({"uniqueKey": key, "device_id": token, "msg_title": "이체 완료",
           "msg_contents": "50,000원이 입금되었습니다", "D_servicename": platform})
}

/// A 64-hex-digit device token, as Apple gives them.
fn ios_token(n: usize) -> String {
    format!("{n:064x}")
}

/// pushgate with port `p` routed by [`BY_PLATFORM`]: FCM as `default`, APNs as `ios`.
async fn start(
    redis: &RedisServer,
    fcm: &pushgate::emulator::Emulator,
    apns: &pushgate::emulator::apns::ApnsEmulator,
    keys: &std::path::Path,
    apns_settings: &str,
) -> TestApp {
    let apps = format!(
        "{}{}",
        fcm_table(fcm, keys, ""),
        apns_app_table(apns, keys, "ios", apns_settings)
    );
    let ports = port_block("p", "by_platform.rhai", "");
    TestApp::start_with(redis, &ports, &[("by_platform.rhai", BY_PLATFORM)], &apps).await
}

#[tokio::test]
async fn one_port_sends_ios_tokens_to_apple_with_the_right_headers_and_android_to_fcm() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let fcm = emulator(&[]).await;
    let apns = apns_emulator(keys.path(), &[]).await;
    let app = start(&redis, &fcm, &apns, keys.path(), "").await;
    let addr = app.port_addr("p").await;
    let before = pushgate::clock::now_ms() / 1000;
    store_messages(
        addr,
        &[
            push("ios-1", &ios_token(1), "IOS"),
            push("and-1", "fcm-token-1", "ANDROID"),
        ],
    )
    .await;
    let ios = wait_status(&app, "ios-1", "sent", Duration::from_secs(15)).await;
    wait_status(&app, "and-1", "sent", Duration::from_secs(15)).await;
    assert_eq!(ios["fcm_send_yn"], "Y");
    assert!(ios["result"].as_str().unwrap().contains("apns-id"), "{ios}");
    assert_eq!(fcm.stats().by_key.keys().collect::<Vec<_>>(), ["and-1"]);
    assert_eq!(apns.stats().by_key.keys().collect::<Vec<_>>(), ["ios-1"]);
    let sent = apns.notifications();
    assert_eq!(sent.len(), 1);
    let n = &sent[0];
    assert_eq!(n.device_token, ios_token(1));
    assert_eq!(n.topic, apns.topic());
    assert_eq!(format!("{:?}", n.push_type).to_lowercase(), "alert");
    assert_eq!(n.priority, 10);
    let expiration = n.expiration.expect("apns-expiration from the ttl");
    assert!(
        (before + 590..=before + 620).contains(&expiration),
        "{expiration} is the push's deadline ({before} + 600)"
    );
    assert_eq!(n.payload["aps"]["alert"]["title"], "이체 완료");
    assert_eq!(
        n.payload["aps"]["alert"]["body"],
        "50,000원이 입금되었습니다"
    );
    assert_eq!(n.payload["uniqueKey"], "ios-1", "data as custom keys");

    // The console shows the APNs app like an FCM one.
    let admin = app.app().admin_addr;
    let (status, apps) = tokio::task::spawn_blocking(move || {
        http(admin, "GET", "/api/v1/apps", Some(READ_ONLY_KEY))
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{apps}");
    let ios_app = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "ios")
        .expect("the APNs app is listed")
        .clone();
    assert_eq!(ios_app["provider"], "apns", "{ios_app}");
    assert_eq!(ios_app["state"], "ok", "{ios_app}");
    assert_eq!(ios_app["project"], apns.topic(), "{ios_app}");
    assert!(ios_app["token_expires_at"].as_i64().is_some(), "{ios_app}");
    app.shutdown().await;
}

#[tokio::test]
async fn one_provider_token_serves_many_sends_and_is_replaced_only_inside_its_window() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let fcm = emulator(&[]).await;
    // Apple's 20 to 60 minutes, made 1 to 4 seconds; pushgate replaces it every 2.
    let apns = apns_emulator(
        keys.path(),
        &["--token-min-age", "1", "--token-max-age", "4"],
    )
    .await;
    let app = start(&redis, &fcm, &apns, keys.path(), "token_refresh_secs = 2").await;
    let addr = app.port_addr("p").await;
    let mut keys_sent = Vec::new();
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(7_000) {
        let batch: Vec<Value> = (0..20)
            .map(|i| push(&format!("t-{n}-{i}"), &ios_token(n * 20 + i), "IOS"))
            .collect();
        keys_sent.extend(
            batch
                .iter()
                .map(|m| m["uniqueKey"].as_str().unwrap().to_owned()),
        );
        store_messages(addr, &batch).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for key in &keys_sent {
        wait_status(&app, key, "sent", Duration::from_secs(20)).await;
    }
    let stats = apns.stats();
    assert_eq!(stats.accepted as usize, keys_sent.len());
    assert!(
        stats.rejected.is_empty(),
        "no token refused: {:?}",
        stats.rejected
    );
    assert!(
        (2..=5).contains(&stats.token_updates),
        "replaced about every 2 s over 7 s, not per send: {stats:?}"
    );
    assert!(
        stats
            .refresh_intervals_ms
            .iter()
            .all(|ms| (1_000..=4_000).contains(ms)),
        "every replacement inside the window: {:?}",
        stats.refresh_intervals_ms
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_expired_provider_token_is_replaced_once_and_the_push_resent() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let fcm = emulator(&[]).await;
    // Apple calls a token expired after 2 s here; pushgate would keep it an hour.
    let apns = apns_emulator(
        keys.path(),
        &["--token-min-age", "0", "--token-max-age", "2"],
    )
    .await;
    let app = start(&redis, &fcm, &apns, keys.path(), "").await;
    let addr = app.port_addr("p").await;
    store_messages(addr, &[push("first", &ios_token(1), "IOS")]).await;
    wait_status(&app, "first", "sent", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    store_messages(addr, &[push("late", &ios_token(2), "IOS")]).await;
    let late = wait_status(&app, "late", "sent", Duration::from_secs(10)).await;
    let stats = apns.stats();
    assert_eq!(
        stats.rejected.get("ExpiredProviderToken"),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.token_updates, 1, "one new token: {stats:?}");
    assert_eq!(stats.accepted, 2);
    assert_eq!(
        late["attempts"], 1,
        "resent within the same attempt: {late}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_unregistered_token_is_dead_as_of_apples_timestamp_and_not_sent_again() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let fcm = emulator(&[]).await;
    let apns = apns_emulator(keys.path(), &["--unregistered-prefix", "dead"]).await;
    let app = start(&redis, &fcm, &apns, keys.path(), "").await;
    let addr = app.port_addr("p").await;
    let gone = format!("dead{}", &ios_token(7)[4..]);
    store_messages(addr, &[push("gone-1", &gone, "IOS")]).await;
    let first = wait_status(&app, "gone-1", "failed", Duration::from_secs(10)).await;
    assert_eq!(first["history"][0]["http"], 410, "{first}");
    store_messages(addr, &[push("gone-2", &gone, "IOS")]).await;
    let second = wait_status(&app, "gone-2", "failed", Duration::from_secs(10)).await;
    assert_eq!(second["history"][0]["http"], 0, "not asked again: {second}");
    assert!(
        second["result"].as_str().unwrap().contains("unregistered"),
        "{second}"
    );
    let stats = apns.stats();
    assert_eq!(stats.rejected.get("Unregistered"), Some(&1), "{stats:?}");
    assert_eq!(stats.accepted, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_503_storm_is_retried_to_the_deadline_and_each_push_delivered_once() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let fcm = emulator(&[]).await;
    let apns = apns_emulator(keys.path(), &["--fail-503", "0.3"]).await;
    let app = start(
        &redis,
        &fcm,
        &apns,
        keys.path(),
        "retry_base_ms = 100\nretry_max_ms = 400",
    )
    .await;
    let addr = app.port_addr("p").await;
    let total = 1_500;
    let messages: Vec<Value> = (0..total)
        .map(|n| push(&format!("s-{n}"), &ios_token(n), "IOS"))
        .collect();
    for chunk in messages.chunks(500) {
        store_messages(addr, chunk).await;
    }
    eventually(Duration::from_secs(120), "every push accepted", || async {
        (apns.stats().accepted >= total as u64).then_some(())
    })
    .await;
    let stats = apns.stats();
    assert_eq!(stats.by_key.len(), total);
    assert!(
        stats.by_key.values().all(|n| *n == 1),
        "each accepted exactly once"
    );
    assert!(
        stats
            .rejected
            .get("ServiceUnavailable")
            .copied()
            .unwrap_or(0)
            > 200,
        "the storm happened: {stats:?}"
    );
    eventually(Duration::from_secs(20), "every outcome written", || async {
        let (waiting, inflight) = app.app().store.queue_depths().await.ok()?;
        (waiting == 0 && inflight == 0).then_some(())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_payload_over_four_kilobytes_is_refused_when_the_script_decides() {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let fcm = emulator(&[]).await;
    let apns = apns_emulator(keys.path(), &[]).await;
    let app = start(&redis, &fcm, &apns, keys.path(), "").await;
    let addr = app.port_addr("p").await;
    let mut big = push("big", &ios_token(3), "IOS");
    big["push_grp_id"] = json!("BIG");
    store_messages(addr, &[big]).await;
    let rec = wait_status(&app, "big", "script_error", Duration::from_secs(10)).await;
    let error = rec["error"].as_str().unwrap();
    assert!(
        error.contains("4,096") && error.contains("4,5"),
        "the size (1,500 three-byte characters: about 4,5xx bytes) is in the error: {error}"
    );
    assert_eq!(
        apns.stats().accepted + apns.stats().rejected.len() as u64,
        0
    );
    app.shutdown().await;
}
