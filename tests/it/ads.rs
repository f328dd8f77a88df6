//! Advertising pushes: the consent registry (`consent_set.lua` through the store, and
//! `/api/v1/consents`), and the ad gate applied by a running pushgate.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::TimeZone;
use serde_json::{Value, json};

use pushgate::clock::{Clock, now_ms};
use pushgate::push::{Consent, Grant};
use pushgate::store::Store;

use crate::support::*;

const DAY_MS: i64 = 86_400_000;
const CONSENT_KEY: &str = "pgk_consent-key";

/// Sends every message to its device, echoing its key as data.
const SEND_AD: &str = r#"
fn route(msg) {
    let push = send_token(msg.device_id, msg.msg_title, msg.msg_contents);
    push.data = #{ uniqueKey: msg.uniqueKey };
    push
}
"#;

/// `[ads]` and a key that may record consents.
fn ads_config() -> String {
    format!(
        "[ads]\nsender = \"푸시은행\"\nopt_out = \"무료수신거부 080-000-0000\"\n\n\
         [[api_key]]\nname = \"consents\"\nsha256 = \"{}\"\nscopes = [\"consent\"]\n",
        pushgate::admin::hash_api_key(CONSENT_KEY)
    )
}

/// A pushgate with the port `ads` (kind = "ad") sending through `emulator`, on `clock`.
async fn ad_app(
    redis: &RedisServer,
    emulator: &pushgate::emulator::Emulator,
    keys: &std::path::Path,
    clock: Clock,
) -> TestApp {
    let extra = format!("{}\n{}", fcm_table(emulator, keys, ""), ads_config());
    TestApp::clocked(
        &redis.url(),
        &port_block("ads", "send_ad.rhai", "kind = \"ad\""),
        &[("send_ad.rhai", SEND_AD)],
        |text| format!("{text}\n{extra}\n"),
        clock,
    )
    .await
}

/// An HTTP call to the admin API with `key` and a JSON body; returns (status, JSON).
async fn call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client
        .request(method, format!("http://{admin}{path}"))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap());
    }
    let response = request.send().await.expect("admin answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn ad(key: &str, csno: &str) -> Value {
    json!({"uniqueKey": key, "csno": csno, "device_id": format!("tok-{key}"),
           "msg_title": "특판 예금", "msg_contents": "연 5%"})
}

/// Unix ms of a local Seoul time.
fn seoul(day: chrono::NaiveDate, h: u32, m: u32) -> i64 {
    chrono_tz::Asia::Seoul
        .from_local_datetime(&day.and_hms_opt(h, m, 0).unwrap())
        .single()
        .unwrap()
        .timestamp_millis()
}

fn open(redis: &RedisServer) -> Store {
    Store::open(&redis.url(), "pg:", Duration::from_secs(2), 3600).expect("store opens")
}

fn grant(given: bool, at_ms: i64, channel: &str) -> Option<Grant> {
    Some(Grant {
        given,
        at_ms,
        channel: channel.into(),
    })
}

#[tokio::test]
async fn consent_set_keeps_what_a_change_does_not_name_and_indexes_only_given_ad_consent() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = pushgate::clock::now_ms();
    let old = now - 800 * DAY_MS;
    let changes = store
        .set_consents(&[
            (
                "C1".into(),
                Consent {
                    ad: grant(true, old, "branch"),
                    night: grant(true, old, "branch"),
                },
            ),
            (
                "C2".into(),
                Consent {
                    ad: grant(true, now, "app"),
                    night: None,
                },
            ),
        ])
        .await
        .unwrap();
    assert_eq!(changes[0].before, Consent::default());
    // Withdraw C1's night consent only: its ad consent stays.
    let changes = store
        .set_consents(&[(
            "C1".into(),
            Consent {
                ad: None,
                night: grant(false, now, "web"),
            },
        )])
        .await
        .unwrap();
    assert_eq!(changes[0].before.night, grant(true, old, "branch"));
    assert_eq!(changes[0].after.ad, grant(true, old, "branch"));
    assert_eq!(changes[0].after.night, grant(false, now, "web"));
    let found = store.consents(&["C1", "C2", "C3"]).await.unwrap();
    assert_eq!(found[0], Some(changes[0].after.clone()));
    assert_eq!(
        found[1].as_ref().and_then(|c| c.ad.clone()),
        grant(true, now, "app")
    );
    assert_eq!(found[2], None);
    // Only C1's consent is old enough to be due; withdrawing it takes it off the list.
    let due = store
        .consents_given_by(now - 700 * DAY_MS, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["C1"]
    );
    store
        .set_consents(&[(
            "C1".into(),
            Consent {
                ad: grant(false, now, "app"),
                night: None,
            },
        )])
        .await
        .unwrap();
    assert!(store.consents_given_by(now, 0, 10).await.unwrap().len() == 1);
    assert!(
        store
            .consents_given_by(now - 700 * DAY_MS, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A flush of the push log keeps the registry.
    store.flush().await.unwrap();
    assert_eq!(
        store.consents(&["C1"]).await.unwrap()[0]
            .as_ref()
            .and_then(|c| c.ad.clone()),
        grant(false, now, "app")
    );
}

#[tokio::test]
async fn an_ad_without_consent_is_dropped_and_with_both_consents_goes_at_once_labelled() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let app = ad_app(&redis, &fcm, keys.path(), Clock::system()).await;
    let admin = app.app().admin_addr;
    let (status, body) = call(
        admin,
        "PUT",
        "/api/v1/consents/C-BOTH",
        CONSENT_KEY,
        Some(json!({"ad": {"given": true, "channel": "app"}, "night": {"given": true, "channel": "app"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Given then withdrawn: a withdrawal is no consent.
    for given in [true, false] {
        let (status, body) = call(
            admin,
            "PUT",
            "/api/v1/consents/C-GONE",
            CONSENT_KEY,
            Some(json!({"ad": {"given": given, "channel": "web"}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let addr = app.port_addr("ads").await;
    store_messages(
        addr,
        &[
            ad("a-none", "C-NONE"),
            ad("a-gone", "C-GONE"),
            ad("a-both", "C-BOTH"),
        ],
    )
    .await;
    for key in ["a-none", "a-gone"] {
        let rec = wait_status(&app, key, "dropped", Duration::from_secs(10)).await;
        assert_eq!(
            rec["decision"]["reason"], "no ad consent for this customer",
            "{rec}"
        );
    }
    let rec = wait_status(&app, "a-both", "sent", Duration::from_secs(20)).await;
    let push = &rec["decision"]["push"];
    assert_eq!(push["title"], "(광고) 특판 예금", "{rec}");
    assert_eq!(
        push["body"], "연 5%\n푸시은행 무료수신거부 080-000-0000",
        "{rec}"
    );
    assert_eq!(push["kind"], "ad", "{rec}");
    let sent = fcm.stats().by_key;
    assert_eq!(
        sent.keys().collect::<Vec<_>>(),
        ["a-both"],
        "only the consented ad reached FCM"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn at_22_without_night_consent_an_ad_is_held_to_08_and_sent_then() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    // The next 22:00 in Seoul, a little ahead of the real clock.
    let real = now_ms();
    let today = chrono_tz::Asia::Seoul
        .timestamp_millis_opt(real)
        .single()
        .unwrap()
        .date_naive();
    let at_22 = [today, today.succ_opt().unwrap()]
        .into_iter()
        .map(|d| seoul(d, 22, 0))
        .find(|t| *t > real)
        .unwrap();
    let next_8 = at_22 + 10 * 3_600_000;
    let clock = Clock::shifted(at_22 - real);
    let app = ad_app(&redis, &fcm, keys.path(), clock.clone()).await;
    let admin = app.app().admin_addr;
    let (status, body) = call(
        admin,
        "PUT",
        "/api/v1/consents/C-DAY",
        CONSENT_KEY,
        Some(json!({"ad": {"given": true, "channel": "branch", "at_ms": at_22 - 30 * DAY_MS}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let addr = app.port_addr("ads").await;
    store_messages(addr, &[ad("night-1", "C-DAY")]).await;
    let rec = wait_status(&app, "night-1", "scheduled", Duration::from_secs(10)).await;
    assert_eq!(rec["due_at"], next_8, "held to 08:00: {rec}");
    assert!(
        rec["decision"]["push"]["held"]
            .as_str()
            .is_some_and(|h| h.starts_with("held:")),
        "{rec}"
    );
    assert!(fcm.stats().by_key.is_empty(), "nothing sent at night");
    // 08:00 the next morning: the gate passes it and the sender sends it.
    clock.set_shift(next_8 + 1_000 - now_ms());
    wait_status(&app, "night-1", "sent", Duration::from_secs(20)).await;
    assert_eq!(fcm.stats().by_key.get("night-1"), Some(&1));
    app.shutdown().await;
}

#[tokio::test]
async fn consent_over_two_years_old_is_treated_as_absent_and_listed_as_due() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let app = ad_app(&redis, &fcm, keys.path(), Clock::system()).await;
    let admin = app.app().admin_addr;
    let old = now_ms() - 800 * DAY_MS;
    let (status, body) = call(
        admin,
        "PUT",
        "/api/v1/consents/C-OLD",
        CONSENT_KEY,
        Some(
            json!({"ad": {"given": true, "channel": "branch", "at_ms": old},
                    "night": {"given": true, "channel": "branch", "at_ms": old}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ad_lapsed"], true, "{body}");
    let addr = app.port_addr("ads").await;
    store_messages(addr, &[ad("old-1", "C-OLD")]).await;
    let rec = wait_status(&app, "old-1", "dropped", Duration::from_secs(10)).await;
    let date = pushgate::script::format_local(old, chrono_tz::Asia::Seoul, "%Y-%m-%d");
    assert_eq!(
        rec["decision"]["reason"],
        format!("ad consent from {date} is over two years old"),
        "{rec}"
    );
    let cutoff = pushgate::ads::due_cutoff(now_ms(), chrono_tz::Asia::Seoul);
    let due = app
        .app()
        .store
        .consents_given_by(cutoff, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["C-OLD"]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_consent_api_bounds_its_batches_and_fields_and_needs_the_consent_scope() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let app = ad_app(&redis, &fcm, keys.path(), Clock::system()).await;
    let admin = app.app().admin_addr;
    let entry = |csno: String| json!({"csno": csno, "ad": {"given": true, "channel": "app"}});
    let too_many: Vec<Value> = (0..1001).map(|n| entry(format!("C{n}"))).collect();
    let (status, body) = call(
        admin,
        "POST",
        "/api/v1/consents",
        CONSENT_KEY,
        Some(json!(too_many)),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at most 1000"),
        "{body}"
    );
    // One bad entry (a 33-byte csno, a long channel) and nothing is recorded.
    let mixed = json!([
        entry("C-OK".into()),
        entry("9".repeat(33)),
        {"csno": "C-CH", "ad": {"given": true, "channel": "a".repeat(17)}},
    ]);
    let (status, body) = call(admin, "POST", "/api/v1/consents", CONSENT_KEY, Some(mixed)).await;
    assert_eq!(status, 400, "{body}");
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{body}");
    assert_eq!(problems[0]["index"], 1);
    assert!(
        problems[1]["error"]
            .as_str()
            .unwrap()
            .contains("ad.channel"),
        "{body}"
    );
    let (status, _) = call(admin, "GET", "/api/v1/consents/C-OK", CONSENT_KEY, None).await;
    assert_eq!(status, 404, "nothing of a rejected batch is recorded");
    // A full batch of 1,000 is one request.
    let full: Vec<Value> = (0..1000).map(|n| entry(format!("C{n}"))).collect();
    let (status, body) = call(
        admin,
        "POST",
        "/api/v1/consents",
        CONSENT_KEY,
        Some(json!(full)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recorded"], 1000);
    let (status, body) = call(admin, "GET", "/api/v1/consents/C999", CONSENT_KEY, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ad"]["channel"], "app");
    let (status, _) = call(admin, "GET", "/api/v1/consents/C999", "pgk_unknown", None).await;
    assert_eq!(status, 401, "an unknown key");
    // Other scopes may not read or write consents.
    for key in [READ_ONLY_KEY, TEST_KEY] {
        let (status, body) = call(admin, "GET", "/api/v1/consents/C999", key, None).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = call(
            admin,
            "PUT",
            "/api/v1/consents/C999",
            key,
            Some(json!({"ad": {"given": false, "channel": "app"}})),
        )
        .await;
        assert_eq!(status, 403, "{body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn every_consent_change_is_audited_with_the_customer_masked() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let app = ad_app(&redis, &fcm, keys.path(), Clock::system()).await;
    let admin = app.app().admin_addr;
    for body in [
        json!({"ad": {"given": true, "channel": "app"}}),
        json!({"night": {"given": false, "channel": "web"}}),
    ] {
        let (status, reply) = call(
            admin,
            "PUT",
            "/api/v1/consents/1234567890",
            CONSENT_KEY,
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
    }
    // Look-ups are audited too: by the API (any character of the path may come escaped)
    // and by the console.
    let (status, reply) = call(
        admin,
        "GET",
        "/api/v1/consents/12345%367890",
        CONSENT_KEY,
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["csno"], "1234567890", "{reply}");
    let (status, _) = call(admin, "GET", "/api/v1/consents/%FF%FE", CONSENT_KEY, None).await;
    assert_eq!(status, 400, "not UTF-8 once decoded");
    let mut operator = Web::new(admin);
    operator.sign_in("operator").await;
    assert_eq!(operator.get("/consents?csno=1234567890").await.status, 200);
    let entries = app.app().store.audit_entries(None, 10).await.unwrap();
    let lookups: Vec<&Vec<(String, String)>> = entries
        .iter()
        .map(|(_, fields)| fields)
        .filter(|f| {
            f.iter()
                .any(|(k, v)| k == "action" && v == "consent-lookup")
        })
        .collect();
    assert_eq!(lookups.len(), 2, "{entries:?}");
    let who = |entry: &Vec<(String, String)>| {
        entry
            .iter()
            .find(|(k, _)| k == "who")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(who(lookups[0]).as_deref(), Some("operator"), "newest first");
    assert_eq!(who(lookups[1]).as_deref(), Some("api:consents"));
    assert!(
        lookups.iter().all(|e| e
            .iter()
            .any(|(k, v)| k == "target" && v == "customer 12******90")),
        "{lookups:?}"
    );
    let consent: Vec<&Vec<(String, String)>> = entries
        .iter()
        .map(|(_, fields)| fields)
        .filter(|f| f.iter().any(|(k, v)| k == "action" && v == "consent"))
        .collect();
    assert_eq!(consent.len(), 2, "{entries:?}");
    let field = |entry: &Vec<(String, String)>, name: &str| {
        entry
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // Newest first: the night withdrawal kept the ad consent.
    assert_eq!(field(consent[0], "who"), "api:consents");
    assert_eq!(field(consent[0], "target"), "customer 12******90");
    let change = field(consent[0], "change");
    assert!(
        change.contains("(unchanged)") && change.contains("night: none → withdrawn"),
        "{change}"
    );
    assert!(
        field(consent[1], "change").starts_with("ad: none → given"),
        "{consent:?}"
    );
    assert!(
        !entries
            .iter()
            .any(|(_, f)| f.iter().any(|(_, v)| v.contains("1234567890"))),
        "the customer number is never written unmasked"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_consents_page_lists_due_customers_and_only_operators_look_one_up() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let app = ad_app(&redis, &fcm, keys.path(), Clock::system()).await;
    let admin = app.app().admin_addr;
    let now = now_ms();
    for (csno, at_ms) in [
        ("1111111111", now - 800 * DAY_MS),
        // Lapses in 10 days: due for re-confirmation already.
        ("2222222222", now - 720 * DAY_MS),
        ("3333333333", now - 10 * DAY_MS),
    ] {
        let (status, body) = call(
            admin,
            "PUT",
            &format!("/api/v1/consents/{csno}"),
            CONSENT_KEY,
            Some(json!({"ad": {"given": true, "channel": "branch", "at_ms": at_ms}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut operator = Web::new(admin);
    operator.sign_in("operator").await;
    let page = operator.get("/consents").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let due = &page.body[page.body.find("id=\"due\"").unwrap()..];
    let first = due.find("1111111111").expect("the lapsed consent is due");
    let second = due
        .find("2222222222")
        .expect("the nearly lapsed consent is due");
    assert!(first < second, "oldest first");
    assert!(!due.contains("3333333333"), "a recent consent is not due");
    assert!(due.contains("lapsed "), "{due}");
    let page = operator.get("/consents?csno=3333333333").await;
    let found = &page.body[page.body.find("id=\"consent\"").expect("found")..];
    assert!(
        found.contains("given") && found.contains("via branch"),
        "{found}"
    );
    // A viewer sees the list masked and may not look anyone up.
    let mut viewer = Web::new(admin);
    viewer.sign_in("viewer").await;
    let page = viewer.get("/consents?csno=3333333333").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("1111111111") && page.body.contains("11******11"));
    assert!(
        !page.body.contains("id=\"consent\""),
        "no look-up for viewers"
    );
    assert!(
        page.body.contains("only operators and admins"),
        "{}",
        page.body
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_held_ad_whose_consent_is_withdrawn_overnight_is_dropped_when_it_comes_due() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let real = now_ms();
    let today = chrono_tz::Asia::Seoul
        .timestamp_millis_opt(real)
        .single()
        .unwrap()
        .date_naive();
    let at_22 = [today, today.succ_opt().unwrap()]
        .into_iter()
        .map(|d| seoul(d, 22, 0))
        .find(|t| *t > real)
        .unwrap();
    let next_8 = at_22 + 10 * 3_600_000;
    let clock = Clock::shifted(at_22 - real);
    let app = ad_app(&redis, &fcm, keys.path(), clock.clone()).await;
    let admin = app.app().admin_addr;
    let consent = |given: bool| Some(json!({"ad": {"given": given, "channel": "app"}}));
    let (status, body) = call(
        admin,
        "PUT",
        "/api/v1/consents/C-NIGHT",
        CONSENT_KEY,
        consent(true),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let addr = app.port_addr("ads").await;
    store_messages(addr, &[ad("night-2", "C-NIGHT")]).await;
    wait_status(&app, "night-2", "scheduled", Duration::from_secs(10)).await;
    // The customer withdraws at 23:00; at 08:00 the sender finds no consent.
    clock.set_shift(at_22 + 3_600_000 - now_ms());
    let (status, body) = call(
        admin,
        "PUT",
        "/api/v1/consents/C-NIGHT",
        CONSENT_KEY,
        consent(false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    clock.set_shift(next_8 + 1_000 - now_ms());
    let rec = wait_status(&app, "night-2", "dropped", Duration::from_secs(20)).await;
    let last = &rec["history"][0];
    assert_eq!(last["outcome"], "AD_GATE", "{rec}");
    assert!(
        rec["result"]
            .as_str()
            .unwrap()
            .contains("no ad consent for this customer"),
        "{rec}"
    );
    assert!(fcm.stats().by_key.is_empty(), "never sent");
    app.shutdown().await;
}

#[tokio::test]
async fn the_script_editors_try_shows_the_gates_effect_on_the_sample() {
    let redis = RedisServer::start();
    let fcm = emulator(&[]).await;
    let keys = tempfile::tempdir().unwrap();
    let app = ad_app(&redis, &fcm, keys.path(), Clock::system()).await;
    let admin = app.app().admin_addr;
    let both = json!({"ad": {"given": true, "channel": "app"}, "night": {"given": true, "channel": "app"}});
    let (status, body) = call(
        admin,
        "PUT",
        "/api/v1/consents/C-TRY",
        CONSENT_KEY,
        Some(both),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut web = Web::new(admin);
    web.sign_in("operator").await;
    let try_on = |csno: &str| {
        json!({"uniqueKey": "t", "csno": csno, "device_id": "tok", "msg_title": "특판", "msg_contents": "연 5%"})
            .to_string()
    };
    let sample = try_on("C-TRY");
    let page = web
        .post(
            "/scripts/ads",
            &[("action", "try"), ("source", SEND_AD), ("sample", &sample)],
        )
        .await;
    assert!(page.body.contains("(광고) 특판"), "labelled: {}", page.body);
    let sample = try_on("C-NOBODY");
    let page = web
        .post(
            "/scripts/ads",
            &[("action", "try"), ("source", SEND_AD), ("sample", &sample)],
        )
        .await;
    assert!(
        page.body.contains("no ad consent for this customer"),
        "dropped: {}",
        page.body
    );
    app.shutdown().await;
}

/// A batch without ads reads no consents, even with `[ads]` set: routing comes first, and
/// only the customers of the batch's ads are looked up.
#[tokio::test]
async fn a_batch_without_ads_reads_no_consents() {
    let redis = RedisServer::start();
    // No app: nothing else reads with HMGET (the sender's dead-token look-up).
    let script = "fn route(msg) {\n    let push = send_token(msg.device_id, msg.msg_title, msg.msg_contents);\n    if msg.D_servicename == \"AD\" { push.kind = \"ad\"; }\n    push\n}\n";
    let app = TestApp::start_with(
        &redis,
        &port_block("info", "maybe_ad.rhai", ""),
        &[("maybe_ad.rhai", script)],
        &ads_config(),
    )
    .await;
    let addr = app.port_addr("info").await;
    let hmgets = || {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut redis.connection())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_hmget:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = hmgets();
    let info: Vec<Value> = (0..20)
        .map(|n| ad(&format!("i-{n}"), "1234567890"))
        .collect();
    store_messages(addr, &info).await;
    assert_eq!(hmgets(), before, "no consent read for informational pushes");
    // An ad the script marks on the same port does read them.
    let mut one_ad = ad("a-1", "1234567890");
    one_ad["D_servicename"] = json!("AD");
    store_messages(addr, &[one_ad]).await;
    assert_eq!(hmgets(), before + 1, "one round trip for the batch's ad");
    app.shutdown().await;
}
