//! The fallback ladder (Alimtalk → SMS) end to end: a push that cannot reach the customer
//! climbs its route's `fallback` rungs through the strict messaging-gateway emulator, each
//! rung once (the gateway's per-idempotency-key counts), also across a kill -9.

use std::net::SocketAddr;
use std::time::Duration;

use pushgate::emulator::gateway::{GatewayEmulator, GatewayEmulatorArgs};
use pushgate::push::{ReceiptEvent, Status};
use pushgate::store::receipts::{ReceiptIn, Recorded};
use pushgate::store::{NewRecord, Store};
use redis::Commands as _;
use serde_json::{Value, json};

use crate::support::*;

/// Every push goes to its `device_id` (none = no token) with the ladder alimtalk → sms.
const LADDER: &str = r#"
fn route(msg) {
    let push = send_token(msg.device_id, msg.msg_title, msg.msg_contents);
    push.fallback = ["alimtalk", "sms"];
    push
}
"#;

/// The two rungs at `gateway`, with `settings` added to each.
fn rungs(gateway: &str, settings: &str) -> String {
    r#"
[[fallback]]
name = "alimtalk"
url = "GW/alimtalk"
body = { to = "{{cust_telno|digits}}", sender_key = "sk-bank", template_code = "TRF01", text = "{{msg_title}} {{msg_contents}}", ref = "{{uniqueKey}}" }
retry_base_ms = 100
retry_max_ms = 400
SETTINGS

[[fallback]]
name = "sms"
url = "GW/sms"
body = { to = "{{cust_telno|digits}}", from = "15881234", text = "[은행] {{msg_contents}}" }
retry_base_ms = 100
retry_max_ms = 400
SETTINGS
"#
    .replace("GW", gateway)
    .replace("SETTINGS", settings)
}

async fn gateway(flags: &[&str]) -> GatewayEmulator {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayEmulatorArgs,
    }
    let mut argv = vec!["gateway-emulator", "--listen", "127.0.0.1:0"];
    argv.extend_from_slice(flags);
    let cli = <Cli as clap::Parser>::parse_from(argv);
    GatewayEmulator::start(cli.args)
        .await
        .expect("gateway emulator starts")
}

/// A message to `token` ("" = the customer has no token) with a phone number.
fn to(key: &str, token: &str) -> Value {
    json!({"uniqueKey": key, "device_id": token, "msg_title": "이체 완료",
           "msg_contents": "50,000원이 출금되었습니다", "cust_telno": "010-1234-5678"})
}

/// pushgate in-process with the FCM emulator `fcm`, the rungs at `gw` and one port `p`
/// routed by [`LADDER`]; returns the app, the port and the FCM credentials' dir (kept).
async fn start(
    redis: &RedisServer,
    fcm: &pushgate::emulator::Emulator,
    gw: &GatewayEmulator,
) -> (TestApp, SocketAddr, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}\n{}",
        fcm_table(fcm, keys.path(), "retry_base_ms = 100"),
        rungs(&gw.base_url(), "")
    );
    let app = TestApp::start_with(
        redis,
        &port_block("p", "ladder.rhai", ""),
        &[("ladder.rhai", LADDER)],
        &extra,
    )
    .await;
    let addr = app.port_addr("p").await;
    (app, addr, keys)
}

/// The record of `key` once its rung `rung` has ended `outcome`.
async fn wait_rung(app: &TestApp, key: &str, rung: &str, outcome: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("{key}: {rung} {outcome}"),
        || async {
            record_by_key(app, key).await.filter(|r| {
                r["fallback"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x["rung"] == rung && x["outcome"] == outcome)
                })
            })
        },
    )
    .await
}

fn rungs_of(record: &Value) -> Vec<(String, String)> {
    record["fallback"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["rung"].as_str().unwrap_or_default().to_owned(),
                        x["outcome"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// No push waits on or is in flight on either rung: whatever the gateway has seen is all
/// it will see (a rung's outcome and its next rung are written in one step, after the
/// gateway answered).
fn assert_ladders_idle(redis: &RedisServer) {
    let mut con = redis.connection();
    for key in [
        "fq:alimtalk",
        "fqinflight:alimtalk",
        "fq:sms",
        "fqinflight:sms",
    ] {
        let n: u64 = con.zcard(format!("pg:{key}")).unwrap();
        assert_eq!(n, 0, "{key} holds {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_token_falls_to_alimtalk_once_and_the_ladder_stops_there() {
    let redis = RedisServer::start();
    let fcm = emulator(&["--unregistered-prefix", "dead-"]).await;
    let gw = gateway(&[]).await;
    let (app, addr, _keys) = start(&redis, &fcm, &gw).await;

    // FCM calls the token dead; a second push to it is not sent (dead locally).
    send_messages(addr, &[to("dead-1", "dead-token")]).await;
    wait_status(&app, "dead-1", "failed", Duration::from_secs(10)).await;
    send_messages(addr, &[to("dead-2", "dead-token")]).await;
    for key in ["dead-1", "dead-2"] {
        let record = wait_rung(&app, key, "alimtalk", "sent").await;
        assert_eq!(record["status"], "failed", "the push's own outcome is kept");
        assert_eq!(
            rungs_of(&record),
            [("alimtalk".to_owned(), "sent".to_owned())]
        );
        assert_eq!(record["fallback"][0]["http"], 200);
    }
    let second = record_by_key(&app, "dead-2").await.unwrap();
    assert_eq!(second["history"][0]["outcome"], "UNREGISTERED");
    assert_eq!(second["history"][0]["http"], 0, "not sent to FCM again");

    // Nothing left on any rung: a wrongly queued SMS would be waiting or in flight.
    assert_ladders_idle(&redis);
    let stats = gw.stats();
    assert_eq!(stats.keys["dead-1:alimtalk"].sends, 1);
    assert_eq!(stats.keys["dead-2:alimtalk"].sends, 1);
    assert_eq!(stats.sends, 2, "no SMS after a sent Alimtalk: {stats:?}");
    assert_eq!(stats.duplicates, 0);

    // The rung's outcome is a bitmap the log can filter by.
    let mut con = redis.connection();
    let id: u64 = second["id"].as_u64().unwrap();
    let bit: u8 = con
        .getbit("pg:bit:fallback:alimtalk:sent", id as usize)
        .unwrap();
    assert_eq!(bit, 1);
    // The console's log offers every rung's outcomes and filters by them.
    let mut web = Web::new(app.app().admin_addr);
    web.sign_in("viewer").await;
    let page = web.get("/log?fallback=alimtalk%3Asent").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<option value=\"sms:failed\"")
            && page
                .body
                .contains("<option value=\"alimtalk:sent\" selected"),
        "the fallback select: {}",
        page.body
    );
    let first = record_by_key(&app, "dead-1").await.unwrap()["id"]
        .as_u64()
        .unwrap();
    let row = |id: u64| format!("href=\"/push/{id}\"");
    assert!(page.body.contains(&row(first)) && page.body.contains(&row(id)));
    let none = web.get("/log?fallback=sms%3Asent").await;
    assert!(!none.body.contains(&row(first)), "no push reached SMS");

    // Retention removes the rung's bits with the record (prune.lua).
    let store = app.app().store.clone();
    app.shutdown().await;
    let pruned = store
        .prune(pushgate::clock::now_ms() + 1000, 100)
        .await
        .unwrap();
    assert_eq!(pruned.removed, 2);
    let bit: u8 = con
        .getbit("pg:bit:fallback:alimtalk:sent", id as usize)
        .unwrap();
    assert_eq!(bit, 0, "the rung's bit leaves with the record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_goes_to_alimtalk_and_an_alimtalk_refusal_falls_to_sms_each_rung_once() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let gw = gateway(&["--fail-channel", "alimtalk"]).await;
    let (app, addr, _keys) = start(&redis, &fcm, &gw).await;

    send_messages(addr, &[to("nt-1", "")]).await;
    let record = wait_rung(&app, "nt-1", "sms", "sent").await;
    assert_eq!(record["status"], "dropped");
    assert_eq!(record["history"][0]["outcome"], "NO_TOKEN");
    assert_eq!(
        rungs_of(&record),
        [
            ("alimtalk".to_owned(), "failed".to_owned()),
            ("sms".to_owned(), "sent".to_owned())
        ]
    );
    assert_eq!(record["fallback"][0]["http"], 400);
    assert!(
        record["fallback"][0]["answer"]
            .as_str()
            .unwrap()
            .contains("CHANNEL_REFUSED"),
        "{record}"
    );
    assert_ladders_idle(&redis);
    let stats = gw.stats();
    let alimtalk = &stats.keys["nt-1:alimtalk"];
    assert_eq!((alimtalk.requests, alimtalk.sends), (1, 0), "{stats:?}");
    let sms = &stats.keys["nt-1:sms"];
    assert_eq!((sms.requests, sms.sends), (1, 1), "{stats:?}");
    assert_eq!(
        fcm.stats().accepted,
        0,
        "nothing went to FCM without a token"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_receipt_within_the_timeout_starts_the_ladder_and_a_receipt_in_time_prevents_it() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let gw = gateway(&[]).await;
    let (app, addr, _keys) = start(&redis, &fcm, &gw).await;
    // The timeout as `[receipts] timeout_secs` sets it.
    app.app()
        .set_receipt_timeout(Some(Duration::from_secs(2)))
        .await;

    send_messages(addr, &[to("rc-late", "tok-a"), to("rc-got", "tok-b")]).await;
    let got = wait_status(&app, "rc-got", "sent", Duration::from_secs(10)).await;
    assert!(got["id"].as_u64().is_some());
    // Its receipt, as `POST /api/v1/receipts` records it.
    let recorded = app
        .app()
        .store
        .record_receipts(
            &[ReceiptIn {
                unique_key: "rc-got".into(),
                event: ReceiptEvent::Delivered,
                at_ms: pushgate::clock::now_ms(),
            }],
            &["p".to_owned()],
            pushgate::clock::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(recorded, [Recorded::New]);

    let late = wait_rung(&app, "rc-late", "alimtalk", "sent").await;
    assert_eq!(late["status"], "sent");
    let sent_at = late["history"][0]["at"].as_i64().unwrap();
    let rung_at = late["fallback"][0]["at"].as_i64().unwrap();
    assert!(
        rung_at - sent_at >= 2000,
        "not before the timeout: {}",
        rung_at - sent_at
    );
    // rc-got was sent at the same time: its timeout has passed too, and it was let go.
    eventually(
        Duration::from_secs(10),
        "the watch list emptied",
        || async {
            let mut con = redis.connection();
            let left: u64 = con.zcard("pg:fallback:watch").unwrap();
            (left == 0).then_some(())
        },
    )
    .await;
    assert_ladders_idle(&redis);
    let stats = gw.stats();
    assert!(!stats.keys.contains_key("rc-got:alimtalk"), "{stats:?}");
    assert_eq!(stats.sends, 1);
    let got = record_by_key(&app, "rc-got").await.unwrap();
    assert!(got.get("fallback").is_none(), "{got}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_fallback_then_restart_sends_each_rung_once_and_repeats_at_most_max_in_flight()
{
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let gw = gateway(&["--latency-ms", "200"]).await;
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), &[("ladder.rhai", LADDER)]);
    let max_in_flight = 8;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("pushgate.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n{}\n{}",
            config_text(
                &redis.url(),
                &admin.to_string(),
                &port_block("p", "ladder.rhai", "")
            ),
            fcm_table(&fcm, dir.path(), ""),
            rungs(
                &gw.base_url(),
                &format!(
                    "max_in_flight = {max_in_flight}\nlease_secs = 2\nrequest_timeout_ms = 1000"
                )
            )
        ),
    )
    .unwrap();

    let mut first = tokio::task::block_in_place(|| Process::serve(&config, admin));
    let addr = tokio::task::block_in_place(|| first.port_addr("p"));
    let total = 120;
    let keys: Vec<String> = (0..total).map(|n| format!("fk-{n}")).collect();
    let messages: Vec<Value> = keys.iter().map(|k| to(k, "")).collect();
    store_messages(addr, &messages).await;
    eventually(
        Duration::from_secs(30),
        "Alimtalk sends under way",
        || async { (gw.stats().sends >= 20).then_some(()) },
    )
    .await;
    let _ = first.child.kill();
    let _ = first.child.wait();
    let at_kill = gw.stats().sends;
    assert!(
        at_kill < total as u64,
        "killed mid-fallback ({at_kill} sent)"
    );

    let _second = tokio::task::block_in_place(|| Process::serve(&config, admin));
    let store = Store::open(&redis.url(), "pg:", Duration::from_secs(2), 3600).unwrap();
    eventually(Duration::from_secs(120), "every Alimtalk sent", || async {
        for key in &keys {
            let id = store.id_for_key(key).await.ok()??;
            let record = store.record(id).await.ok()??;
            let sent = record
                .fallback
                .iter()
                .any(|a| a.rung == "alimtalk" && a.outcome == pushgate::push::RungOutcome::Sent);
            if !sent {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert_eq!(store.rung_depth("alimtalk").await.unwrap(), (0, 0));
    assert_eq!(store.rung_depth("sms").await.unwrap(), (0, 0));

    let stats = gw.stats();
    assert_eq!(
        stats.keys.len(),
        total,
        "every push reached the gateway once"
    );
    assert!(
        stats
            .keys
            .values()
            .all(|k| k.sends == 1 && k.channel == "alimtalk"),
        "each rung sent exactly once (the gateway's idempotency): {stats:?}"
    );
    let repeated = stats.keys.values().filter(|k| k.requests > 1).count();
    assert!(
        repeated <= max_in_flight && stats.requests <= (total + max_in_flight) as u64,
        "{repeated} keys asked twice, {} requests, more than the {max_in_flight} in flight",
        stats.requests
    );
    eprintln!(
        "fallback crash test: killed with {at_kill} of {total} sent; {repeated} asked again after the restart (duplicates {})",
        stats.duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gateway_is_retried_to_the_rungs_deadline_then_the_next_rung_is_tried() {
    let redis = RedisServer::start();
    let fcm = emulator(&["--unregistered-prefix", "dead-"]).await;
    let gw = gateway(&["--fail-500", "1"]).await;
    let keys = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}\n{}",
        fcm_table(&fcm, keys.path(), ""),
        rungs(&gw.base_url(), "max_age_secs = 1")
    );
    let app = TestApp::start_with(
        &redis,
        &port_block("p", "ladder.rhai", ""),
        &[("ladder.rhai", LADDER)],
        &extra,
    )
    .await;
    let addr = app.port_addr("p").await;
    send_messages(addr, &[to("ex-1", "dead-x")]).await;
    let record = wait_rung(&app, "ex-1", "sms", "expired").await;
    let ladder = rungs_of(&record);
    let expired_at = |rung: &str| {
        ladder
            .iter()
            .position(|(r, o)| r == rung && o == "expired")
            .unwrap_or_else(|| panic!("{rung} expired: {ladder:?}"))
    };
    let (alimtalk_end, sms_end) = (expired_at("alimtalk"), expired_at("sms"));
    assert!(alimtalk_end < sms_end, "{ladder:?}");
    assert!(
        ladder[..alimtalk_end]
            .iter()
            .all(|(r, o)| r == "alimtalk" && o == "retrying")
            && alimtalk_end >= 2,
        "Alimtalk retried before it expired: {ladder:?}"
    );
    assert_eq!(record["fallback"][0]["http"], 500);
    let stats = gw.stats();
    assert_eq!(stats.sends, 0);
    // Every attempt that asked the gateway is on the record (the last may have found
    // the deadline already passed, and asked nothing).
    let asked = record["fallback"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rung"] == "alimtalk" && a["http"] == 500)
        .count();
    assert_eq!(
        stats.keys["ex-1:alimtalk"].requests as usize, asked,
        "one request per attempt: {stats:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rung_not_configured_is_a_script_error_until_a_reload_adds_it() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let gw = gateway(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(
        &redis,
        &port_block("p", "ladder.rhai", ""),
        &[("ladder.rhai", LADDER)],
        &fcm_table(&fcm, keys.path(), ""),
    )
    .await;
    let addr = app.port_addr("p").await;
    send_messages(addr, &[to("rl-1", "")]).await;
    let record = wait_status(&app, "rl-1", "script_error", Duration::from_secs(10)).await;
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("not a configured [[fallback]] (rungs: none is configured)"),
        "{record}"
    );

    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(
        &app.config_path,
        format!("{text}\n{}", rungs(&gw.base_url(), "")),
    )
    .unwrap();
    app.app().reload().await.expect("reload");
    assert_eq!(app.app().fallback_rungs().await, ["alimtalk", "sms"]);
    send_messages(addr, &[to("rl-2", "")]).await;
    let record = wait_rung(&app, "rl-2", "alimtalk", "sent").await;
    assert_eq!(record["status"], "dropped");
    assert_eq!(gw.stats().keys["rl-2:alimtalk"].sends, 1);
    app.shutdown().await;
}

/// The receipt-timeout scan in steps of `max`: each step says how many left the watch list
/// (so the sender goes on at once after a full step), only pushes without a receipt climb
/// their ladder, and entries not yet timed out stay.
#[tokio::test]
async fn the_receipt_timeout_scan_goes_in_bounded_steps_and_skips_pushes_with_a_receipt() {
    let redis = RedisServer::start();
    let store = Store::open(&redis.url(), "pg:", Duration::from_secs(5), 3600).unwrap();
    let now = pushgate::clock::now_ms();
    let records: Vec<NewRecord> = (0..2500)
        .map(|n| NewRecord {
            unique_key: format!("w{n}"),
            port: "fb".into(),
            received_at_ms: now,
            fields: json!({"uniqueKey": format!("w{n}"), "device_id": "tok"})
                .as_object()
                .unwrap()
                .clone(),
            status: Status::Sent,
            due_ms: None,
            decision: serde_json::from_value(json!({"action": "send", "push": {
                "target": {"token": "tok"}, "fallback": ["alimtalk", "sms"]}}))
            .ok(),
            error: None,
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in records.chunks(500) {
        ids.extend(ingest(&store, chunk).await);
    }
    let mut con = redis.connection();
    // Sent long ago (timed out), except the last 100, sent just now.
    for (n, id) in ids.iter().enumerate() {
        let at = if n >= 2400 { now } else { now - 60_000 };
        let _: () = con.zadd("pg:fallback:watch", *id, at).unwrap();
    }
    // Every tenth timed-out push got its receipt (through the store, as the API does).
    let receipts: Vec<ReceiptIn> = (0..2400)
        .step_by(10)
        .map(|n| ReceiptIn {
            unique_key: format!("w{n}"),
            event: if n % 20 == 0 {
                ReceiptEvent::Delivered
            } else {
                ReceiptEvent::Opened
            },
            at_ms: now,
        })
        .collect();
    store
        .record_receipts(&receipts, &["fb".to_owned()], now)
        .await
        .unwrap();

    let until = now - 30_000;
    let mut steps = Vec::new();
    loop {
        let (looked, queued) = store
            .scan_receipt_timeouts(until, now, 1000, true)
            .await
            .unwrap();
        steps.push((looked, queued));
        if looked < 1000 {
            break;
        }
    }
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        [1000, 1000, 400]
    );
    assert_eq!(steps.iter().map(|s| s.1).sum::<u64>(), 2400 - 240);
    let queued: u64 = con.zcard("pg:fq:alimtalk").unwrap();
    assert_eq!(queued, 2160);
    let receipted: Vec<u64> = (0..2400).step_by(10).map(|n| ids[n]).collect();
    for id in receipted {
        let score: Option<f64> = con.zscore("pg:fq:alimtalk", id).unwrap();
        assert!(score.is_none(), "{id} had a receipt and was queued");
    }
    let left: u64 = con.zcard("pg:fallback:watch").unwrap();
    assert_eq!(left, 100, "the pushes sent just now are still watched");
    assert_eq!(
        store
            .scan_receipt_timeouts(until, now, 1000, true)
            .await
            .unwrap(),
        (0, 0)
    );
}
