//! Apps, lanes and pacing (issue 13): several provider projects, urgent pushes that never
//! wait behind bulk ones, and one send rate shared by every node.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Routes by `D_servicename`: `CARD` to the app `card`, anything else to the port's app.
const BY_SERVICE: &str = r#"
fn route(msg) {
    let push = send_token(msg.device_id, msg.msg_title, msg.msg_contents);
    push.data = #{ uniqueKey: msg.uniqueKey };
    if msg.D_servicename == "CARD" { push.app = "card"; }
    push
}
"#;

fn push(key: &str, token: &str, service: &str) -> Value {
    json!({"uniqueKey": key, "device_id": token, "msg_title": "t", "msg_contents": "b",
           "D_servicename": service})
}

#[tokio::test]
async fn two_apps_send_each_push_to_its_own_project_by_port_and_by_script() {
    let redis = RedisServer::start();
    let bank = emulator(&["--project", "bank-prj"]).await;
    let card = emulator(&["--project", "card-prj"]).await;
    let keys = tempfile::tempdir().unwrap();
    let apps = format!(
        "{}{}",
        fcm_table(&bank, keys.path(), ""),
        app_table(&card, keys.path(), "card", "")
    );
    let ports = format!(
        "{}{}",
        port_block("mixed", "by_service.rhai", ""),
        port_block("cards", "by_service.rhai", "app = \"card\"")
    );
    let app = TestApp::start_with(&redis, &ports, &[("by_service.rhai", BY_SERVICE)], &apps).await;
    let mixed = app.port_addr("mixed").await;
    let cards = app.port_addr("cards").await;
    store_messages(
        mixed,
        &[
            push("m-bank", "tok-1", "BANK"),
            push("m-card", "tok-2", "CARD"),
        ],
    )
    .await;
    store_messages(cards, &[push("c-port", "tok-3", "ANY")]).await;
    for key in ["m-bank", "m-card", "c-port"] {
        wait_status(&app, key, "sent", Duration::from_secs(20)).await;
    }
    let (bank_keys, card_keys) = (bank.stats().by_key, card.stats().by_key);
    assert_eq!(bank_keys.keys().collect::<Vec<_>>(), ["m-bank"]);
    assert_eq!(card_keys.keys().collect::<Vec<_>>(), ["c-port", "m-card"]);
    let rec = record_by_key(&app, "m-card").await.unwrap();
    assert_eq!(rec["decision"]["push"]["app"], "card", "{rec}");
    let by_app = app
        .app()
        .store
        .log_page(&pushgate::store::log::LogQuery {
            field: Some("app".into()),
            value: "card".into(),
            per_page: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_app.rows.len(), 2, "the log filters by app");
    // Each app has its own token and health.
    let senders = app.app().apps().senders();
    assert_eq!(senders.len(), 2);
    assert!(senders.iter().all(|s| s.has_token() && s.health().healthy));
    app.shutdown().await;
}

#[tokio::test]
async fn a_reload_adds_and_removes_an_app_without_a_restart() {
    let redis = RedisServer::start();
    let bank = emulator(&["--project", "bank-prj"]).await;
    let card = emulator(&["--project", "card-prj"]).await;
    let keys = tempfile::tempdir().unwrap();
    let only_bank = fcm_table(&bank, keys.path(), "");
    let with_card = format!("{only_bank}{}", app_table(&card, keys.path(), "card", ""));
    let ports = port_block("p", "by_service.rhai", "");
    let app = TestApp::start_with(
        &redis,
        &ports,
        &[("by_service.rhai", BY_SERVICE)],
        &only_bank,
    )
    .await;
    let addr = app.port_addr("p").await;
    store_messages(addr, &[push("before", "tok-1", "CARD")]).await;
    let rec = wait_status(&app, "before", "script_error", Duration::from_secs(10)).await;
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .contains("\"card\" is not a configured app"),
        "{rec}"
    );

    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, text.replace(&only_bank, &with_card)).unwrap();
    app.app().reload().await.expect("reload");
    assert!(app.app().apps().sender("card").is_some(), "added");
    store_messages(addr, &[push("added", "tok-2", "CARD")]).await;
    wait_status(&app, "added", "sent", Duration::from_secs(20)).await;
    assert_eq!(card.stats().by_key.get("added"), Some(&1));

    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, text.replace(&with_card, &only_bank)).unwrap();
    app.app().reload().await.expect("reload");
    assert!(app.app().apps().sender("card").is_none(), "removed");
    store_messages(
        addr,
        &[
            push("after", "tok-3", "CARD"),
            push("bank", "tok-4", "BANK"),
        ],
    )
    .await;
    wait_status(&app, "after", "script_error", Duration::from_secs(10)).await;
    wait_status(&app, "bank", "sent", Duration::from_secs(20)).await;
    assert_eq!(
        card.stats().accepted,
        1,
        "nothing more went to the removed app"
    );
    app.shutdown().await;
}

/// Each urgent push is accepted by the provider before more than 300 bulk pushes that
/// were still waiting when it was acked.
#[tokio::test]
async fn urgent_pushes_overtake_a_bulk_backlog_of_twenty_thousand() {
    let redis = RedisServer::start();
    let emu = emulator(&["--device-rate", "0"]).await;
    let keys = tempfile::tempdir().unwrap();
    let fcm = fcm_table(&emu, keys.path(), "max_in_flight = 64\nrate = 3000");
    let ports = format!(
        "{}{}",
        port_block("campaign", "send.rhai", "lane = \"bulk\""),
        port_block("alerts", "send.rhai", "lane = \"urgent\"")
    );
    let app = TestApp::start_with(&redis, &ports, &[("send.rhai", SEND)], &fcm).await;
    let campaign = app.port_addr("campaign").await;
    let alerts = app.port_addr("alerts").await;
    let bulk: Vec<Value> = (0..20_000)
        .map(|n| push(&format!("bulk-{n}"), &format!("tok-{}", n % 500), ""))
        .collect();
    for chunk in bulk.chunks(2_000) {
        store_messages(campaign, chunk).await;
    }
    let mut acked = Vec::new();
    for n in 0..20 {
        let key = format!("urgent-{n}");
        store_messages(alerts, &[push(&key, "tok-urgent", "")]).await;
        acked.push((key, pushgate::clock::now_ms()));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for (key, _) in &acked {
        wait_status(&app, key, "sent", Duration::from_secs(30)).await;
    }
    let order = emu.accepted_in_order();
    let position: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    let bulk_left = 20_000 - order.iter().filter(|(k, _)| k.starts_with("bulk-")).count();
    assert!(
        bulk_left > 1_000,
        "the urgent pushes came while bulk was draining ({bulk_left} left)"
    );
    for (key, acked_at) in &acked {
        let at = position[key.as_str()];
        // Bulk accepted after the urgent push was acked and before it.
        let overtaken = order[..at]
            .iter()
            .filter(|(k, t)| k.starts_with("bulk-") && t > acked_at)
            .count();
        assert!(
            overtaken <= 300,
            "{key} waited behind {overtaken} bulk pushes"
        );
    }
    app.shutdown().await;
}

/// Two nodes on one Redis send one app's pushes; together they stay within its rate.
#[tokio::test]
async fn the_rate_holds_across_two_nodes_within_two_percent() {
    let redis = RedisServer::start();
    let emu = emulator(&["--device-rate", "0"]).await;
    let keys = tempfile::tempdir().unwrap();
    // Low enough that a debug build under a parallel test run can still reach it.
    let rate = 300;
    let fcm = fcm_table(&emu, keys.path(), &format!("rate = {rate}"));
    let ports = port_block("p", "send.rhai", "");
    let one = TestApp::start_with(&redis, &ports, &[("send.rhai", SEND)], &fcm).await;
    let two = TestApp::start_with(&redis, &ports, &[("send.rhai", SEND)], &fcm).await;
    let total = 2_400;
    let messages: Vec<Value> = (0..total)
        .map(|n| push(&format!("r-{n}"), &format!("tok-{}", n % 300), ""))
        .collect();
    let (a, b) = (one.port_addr("p").await, two.port_addr("p").await);
    for (i, chunk) in messages.chunks(400).enumerate() {
        store_messages(if i % 2 == 0 { a } else { b }, chunk).await;
    }
    eventually(Duration::from_secs(60), "every push accepted", || async {
        (emu.stats().accepted >= total as u64).then_some(())
    })
    .await;
    let times: Vec<i64> = emu.accepted_in_order().iter().map(|(_, t)| *t).collect();
    // The first burst is the bucket's capacity; past it, the pace is the rate.
    let burst = (rate / 10) as usize;
    let span = (times[times.len() - 1] - times[burst]) as f64 / 1000.0;
    let measured = (times.len() - burst - 1) as f64 / span;
    assert!(
        measured <= rate as f64 * 1.02,
        "{measured:.1} sends/s over {span:.2} s against a rate of {rate}"
    );
    assert!(
        measured >= rate as f64 * 0.85,
        "the cap was reached, not merely respected: {measured:.1}/s"
    );
    // Over any one second, at most the rate plus the burst (claims are paced; a send's
    // latency may move its acceptance a little, so one burst more is allowed for that).
    let worst = times
        .iter()
        .enumerate()
        .map(|(i, t)| times[i..].iter().take_while(|u| **u < t + 1000).count())
        .max()
        .unwrap();
    assert!(
        worst <= rate as usize + 2 * burst,
        "{worst} sends in one second"
    );
    // No node met an error.
    let errors: Vec<usize> = [&one, &two]
        .iter()
        .map(|n| {
            n.app()
                .apps()
                .sender("default")
                .map_or(0, |s| s.health().errors.len())
        })
        .collect();
    assert_eq!(errors, [0, 0], "no errors on either node");
    assert_eq!(emu.stats().by_key.len(), total);
    one.shutdown().await;
    two.shutdown().await;
}

/// A 429 that names the device holds back that device's pushes only: the app keeps
/// sending to every other device at once.
#[tokio::test]
async fn a_device_quota_answer_delays_only_that_device() {
    let redis = RedisServer::start();
    let emu = emulator(&["--device-rate", "3"]).await;
    let (app, addr) = start_delivering(&redis, &emu, "retry_base_ms = 100", "").await;
    let hot: Vec<Value> = (0..6)
        .map(|n| push(&format!("hot-{n}"), "tok-hot", ""))
        .collect();
    store_messages(addr, &hot).await;
    let others: Vec<Value> = (0..30)
        .map(|n| push(&format!("cold-{n}"), &format!("tok-{n}"), ""))
        .collect();
    store_messages(addr, &others).await;
    for n in 0..30 {
        wait_status(&app, &format!("cold-{n}"), "sent", Duration::from_secs(10)).await;
    }
    let mut held = 0;
    for n in 0..6 {
        let rec = record_by_key(&app, &format!("hot-{n}")).await.unwrap();
        if rec["status"] == "retrying" {
            held += 1;
            let due = rec["due_at"].as_i64().unwrap();
            assert!(
                due >= pushgate::clock::now_ms() + 5_000,
                "held back by the device's Retry-After, not the app's backoff: {rec}"
            );
            let last = rec["history"].as_array().unwrap().last().unwrap().clone();
            assert!(
                ["QUOTA_EXCEEDED", "DEVICE_QUOTA"].contains(&last["outcome"].as_str().unwrap()),
                "{last}"
            );
            assert_eq!(rec["attempts"], 0, "a quota answer is no attempt: {rec}");
        } else {
            assert_eq!(rec["status"], "sent", "{rec}");
        }
    }
    assert_eq!(held, 3, "three over the device's quota of three a minute");
    let health = app.app().apps().sender("default").unwrap().health();
    assert!(
        health.slowed_until.is_none(),
        "the app itself was not slowed: {health:?}"
    );
    assert!(emu.stats().quota.get("device").copied().unwrap_or(0) >= 1);
    app.shutdown().await;
}

/// THIRD_PARTY_AUTH_ERROR and SENDER_ID_MISMATCH say the app is misconfigured: it is
/// marked unhealthy in `/readyz`'s detail (the node stays ready for its other apps) until
/// a send is accepted again.
#[tokio::test]
async fn a_misconfigured_app_is_unhealthy_in_readyz_until_a_send_is_accepted() {
    let redis = RedisServer::start();
    let emu = emulator(&["--fail-token", "apns-=THIRD_PARTY_AUTH_ERROR"]).await;
    let (app, addr) = start_delivering(&redis, &emu, "", "").await;
    let admin = app.app().admin_addr;
    store_messages(addr, &[push("ios", "apns-1", "")]).await;
    let rec = wait_status(&app, "ios", "failed", Duration::from_secs(10)).await;
    assert_eq!(
        rec["history"][0]["outcome"], "THIRD_PARTY_AUTH_ERROR",
        "{rec}"
    );
    let (status, ready) = tokio::task::spawn_blocking(move || http(admin, "GET", "/readyz", None))
        .await
        .unwrap();
    assert_eq!(status, 200, "other apps and ingest still work: {ready}");
    let default = &ready["apps"]["default"];
    assert_eq!(default["healthy"], false, "{ready}");
    assert_eq!(
        default["unhealthy"]["class"], "THIRD_PARTY_AUTH_ERROR",
        "{ready}"
    );

    store_messages(addr, &[push("android", "tok-1", "")]).await;
    wait_status(&app, "android", "sent", Duration::from_secs(10)).await;
    let (_, ready) = tokio::task::spawn_blocking(move || http(admin, "GET", "/readyz", None))
        .await
        .unwrap();
    assert_eq!(ready["apps"]["default"]["healthy"], true, "{ready}");
    app.shutdown().await;
}

/// A 429 naming the project slows the whole app (its new sends pause), and says so;
/// another app goes on sending.
#[tokio::test]
async fn a_project_quota_answer_slows_its_app_and_not_the_others() {
    let redis = RedisServer::start();
    let bank = emulator(&[
        "--fail-token",
        "limit-=QUOTA_EXCEEDED",
        "--retry-after",
        "30",
    ])
    .await;
    let card = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let apps = format!(
        "{}{}",
        fcm_table(&bank, keys.path(), ""),
        app_table(&card, keys.path(), "card", "")
    );
    let ports = port_block("p", "by_service.rhai", "");
    let app = TestApp::start_with(&redis, &ports, &[("by_service.rhai", BY_SERVICE)], &apps).await;
    let addr = app.port_addr("p").await;
    store_messages(addr, &[push("quota", "limit-1", "BANK")]).await;
    let rec = wait_status(&app, "quota", "retrying", Duration::from_secs(10)).await;
    assert_eq!(rec["attempts"], 0, "a quota answer is no attempt: {rec}");
    let bank_health = app.app().apps().sender("default").unwrap().health();
    let slowed = bank_health.slowed_until.expect("the app is slowed");
    assert!(
        slowed >= pushgate::clock::now_ms() + 20_000,
        "by Retry-After: {bank_health:?}"
    );
    // The slowed app sends nothing new meanwhile; the other app is not slowed.
    store_messages(
        addr,
        &[
            push("bank-2", "tok-1", "BANK"),
            push("card-1", "tok-2", "CARD"),
        ],
    )
    .await;
    wait_status(&app, "card-1", "sent", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = record_by_key(&app, "bank-2").await.unwrap();
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(bank.stats().accepted, 0);
    app.shutdown().await;
}

/// Removing an app by reload lets its in-flight sends finish and write their outcomes;
/// what it had not claimed waits in its queue (and is sent when the app comes back).
#[tokio::test]
async fn removing_an_app_finishes_its_in_flight_sends_and_keeps_its_queue() {
    let redis = RedisServer::start();
    let bank = emulator(&[]).await;
    let card = emulator(&["--latency-ms", "1500"]).await;
    let keys = tempfile::tempdir().unwrap();
    let only_bank = fcm_table(&bank, keys.path(), "");
    let with_card = format!(
        "{only_bank}{}",
        app_table(&card, keys.path(), "card", "max_in_flight = 4")
    );
    let ports = port_block("p", "send.rhai", "");
    let cards = port_block("cards", "send.rhai", "app = \"card\"");
    let app = TestApp::start_with(
        &redis,
        &format!("{ports}{cards}"),
        &[("send.rhai", SEND)],
        &with_card,
    )
    .await;
    let addr = app.port_addr("cards").await;
    let messages: Vec<Value> = (0..12)
        .map(|n| push(&format!("c-{n}"), &format!("tok-{n}"), ""))
        .collect();
    store_messages(addr, &messages).await;
    // Four are in flight (1.5 s each) when the app is removed.
    eventually(Duration::from_secs(5), "sends in flight", || async {
        let (_, inflight) = app.app().store.queue_depths().await.ok()?;
        (inflight == 4).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let text = text.replace(&with_card, &only_bank).replace(&cards, "");
    std::fs::write(&app.config_path, text).unwrap();
    app.app().reload().await.expect("reload");
    assert!(app.app().apps().sender("card").is_none());
    assert_eq!(card.stats().accepted, 4, "the in-flight sends finished");
    let (waiting, inflight) = app.app().store.queue_depths().await.unwrap();
    assert_eq!(
        (waiting, inflight),
        (8, 0),
        "outcomes written; the rest wait"
    );
    let mut sent = 0;
    for n in 0..12 {
        let rec = record_by_key(&app, &format!("c-{n}")).await.unwrap();
        match rec["status"].as_str().unwrap() {
            "sent" => sent += 1,
            other => assert_eq!(other, "queued", "{rec}"),
        }
    }
    assert_eq!(sent, 4);
    app.shutdown().await;
}
