//! Delivery receipts: `POST /api/v1/receipts` marks records delivered or opened (first
//! time wins), counts them per port, and the log finds "sent, no receipt".

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use pushgate::clock::now_ms;
use pushgate::push::{ReceiptEvent, Status};
use pushgate::store::log::{LogQuery, ReceiptFilter, Total};
use pushgate::store::receipts::{ReceiptIn, Recorded};
use pushgate::store::{NewRecord, Store};

use crate::support::*;

const RECEIPT_KEY: &str = "pgk_receipt-key";

/// Message `n` under `key`, stored on port `p` in `status`.
fn record(key: &str, n: usize, status: Status) -> NewRecord {
    NewRecord {
        unique_key: key.into(),
        port: "p".into(),
        received_at_ms: now_ms(),
        fields: message(key, n).as_object().unwrap().clone(),
        status,
        due_ms: None,
        decision: None,
        error: None,
    }
}

fn receipt(key: &str, event: ReceiptEvent, at_ms: i64) -> ReceiptIn {
    ReceiptIn {
        unique_key: key.into(),
        event,
        at_ms,
    }
}

#[tokio::test]
async fn a_batch_marks_records_first_time_wins_and_counts_per_port() {
    let redis = RedisServer::start();
    let store = Store::open(&redis.url(), "pg:", Duration::from_secs(2), 3600).unwrap();
    let on = |port: &str, mut r: NewRecord| {
        r.port = port.into();
        r
    };
    let ids = ingest(
        &store,
        &[
            record("k1", 1, Status::Sent),
            record("k2", 2, Status::Sent),
            record("k3", 3, Status::Queued),
            on("q", record("k4", 4, Status::Sent)),
            // From a port no longer configured: found by reading its record.
            on("gone", record("k5", 5, Status::Sent)),
        ],
    )
    .await;
    let t = now_ms();
    let sources = ["q".to_owned(), "p".to_owned(), "api-bank".to_owned()];
    let answers = store
        .record_receipts(
            &[
                receipt("k1", ReceiptEvent::Delivered, t),
                receipt("k2", ReceiptEvent::Opened, t + 1),
                receipt("k1", ReceiptEvent::Delivered, t + 9),
                receipt("nope", ReceiptEvent::Delivered, t),
                receipt("k4", ReceiptEvent::Delivered, t),
                receipt("k5", ReceiptEvent::Opened, t),
                // Not sent yet: recorded anyway (the app may report before the outcome).
                receipt("k3", ReceiptEvent::Delivered, t + 2),
            ],
            &sources,
            t,
        )
        .await
        .unwrap();
    assert_eq!(
        answers,
        [
            Recorded::New,
            Recorded::New,
            Recorded::Repeated,
            Recorded::UnknownKey,
            Recorded::New,
            Recorded::New,
            Recorded::New
        ]
    );
    // k2 was opened first; its later delivered receipt keeps its time but is not a
    // second delivered count.
    let later = store
        .record_receipts(
            &[receipt("k2", ReceiptEvent::Delivered, t + 5)],
            &sources,
            t,
        )
        .await
        .unwrap();
    assert_eq!(later, [Recorded::New]);

    let k1 = store.record(ids[0]).await.unwrap().unwrap();
    let r1 = k1.receipt.expect("k1 has a receipt");
    assert_eq!(
        (r1.delivered_at, r1.opened_at),
        (Some(t), None),
        "first wins"
    );
    let r2 = store.receipt_of(ids[1]).await.unwrap().unwrap();
    assert_eq!((r2.delivered_at, r2.opened_at), (Some(t + 5), Some(t + 1)));
    assert_eq!(
        store.records(&ids).await.unwrap()[2]
            .receipt
            .map(|r| r.delivered_at),
        Some(Some(t + 2))
    );
    let batch = store.receipts_of(&[ids[0], 9999]).await.unwrap();
    assert!(batch[0].is_some() && batch[1].is_none(), "{batch:?}");

    let counts = store
        .port_counts(&["p".into(), "q".into(), "gone".into()])
        .await
        .unwrap();
    assert_eq!(
        (counts[0].delivered, counts[0].opened),
        (3, 1),
        "{counts:?}"
    );
    assert_eq!(counts[0].sent, 2);
    assert_eq!(counts[0].receipt_rate(), Some(100.0), "capped at 100");
    // Each receipt counted on its own push's port, whichever way the port was found.
    assert_eq!(
        (counts[1].delivered, counts[1].opened),
        (1, 0),
        "{counts:?}"
    );
    assert_eq!(
        (counts[2].delivered, counts[2].opened),
        (1, 1),
        "{counts:?}"
    );
}

#[tokio::test]
async fn the_log_finds_exactly_the_sent_pushes_without_a_receipt_page_by_page() {
    let redis = RedisServer::start();
    let store = Store::open(&redis.url(), "pg:", Duration::from_secs(2), 3600).unwrap();
    // 60 records: every third failed, the rest sent; receipts only on low ids, so the
    // receipt bitmap is shorter than the window (its missing bytes read as "no receipt").
    let records: Vec<NewRecord> = (0..60)
        .map(|n| {
            let status = if n % 3 == 0 {
                Status::Failed
            } else {
                Status::Sent
            };
            record(&format!("r{n}"), n, status)
        })
        .collect();
    let ids = ingest(&store, &records).await;
    let with_receipt = [1usize, 2, 4, 5, 7, 3];
    let t = now_ms();
    let events: Vec<ReceiptIn> = with_receipt
        .iter()
        .map(|n| {
            let event = if n % 2 == 0 {
                ReceiptEvent::Opened
            } else {
                ReceiptEvent::Delivered
            };
            receipt(&format!("r{n}"), event, t)
        })
        .collect();
    store
        .record_receipts(&events, &["p".to_owned()], t)
        .await
        .unwrap();
    let expected: BTreeSet<u64> = (0..60)
        .filter(|n| n % 3 != 0 && !with_receipt.contains(n))
        .map(|n| ids[n])
        .collect();
    assert_eq!(expected.len(), 35);

    for oldest_first in [false, true] {
        let mut seen = Vec::new();
        for page in 1..=20 {
            let q = LogQuery {
                status: Some("sent".into()),
                receipt: Some(ReceiptFilter::None),
                oldest_first,
                page,
                per_page: 4,
                ..Default::default()
            };
            let got = store.log_page(&q).await.unwrap();
            assert_eq!(got.total, Total::Exact(35));
            if got.rows.is_empty() {
                break;
            }
            assert!(got.rows.len() <= 4);
            seen.extend(got.rows.iter().map(|r| r.id));
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        if !oldest_first {
            sorted.reverse();
        }
        assert_eq!(seen, sorted, "pages in order, oldest_first={oldest_first}");
        assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), expected);
        assert_eq!(seen.len(), 35, "no id twice");
    }

    // The same filter on a zset search (device_id of n % 700 is unique here: one id).
    let q = |receipt, value: &str| LogQuery {
        field: Some("uuid_id".into()),
        value: value.into(),
        status: Some("sent".into()),
        receipt: Some(receipt),
        page: 1,
        per_page: 10,
        ..Default::default()
    };
    let hit = store
        .log_page(&q(ReceiptFilter::None, "uuid-10"))
        .await
        .unwrap();
    assert_eq!(hit.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[10]]);
    let miss = store
        .log_page(&q(ReceiptFilter::None, "uuid-4"))
        .await
        .unwrap();
    assert!(miss.rows.is_empty(), "r4 has a receipt");
    let opened = store
        .log_page(&q(ReceiptFilter::Opened, "uuid-4"))
        .await
        .unwrap();
    assert_eq!(opened.rows.len(), 1);

    // The positive filters and the NOT filter alone.
    let only = |receipt| LogQuery {
        receipt: Some(receipt),
        page: 1,
        per_page: 100,
        ..Default::default()
    };
    let delivered = store
        .log_page(&only(ReceiptFilter::Delivered))
        .await
        .unwrap();
    assert_eq!(
        delivered.total,
        Total::Exact(6),
        "an opened push was delivered too"
    );
    let opened = store.log_page(&only(ReceiptFilter::Opened)).await.unwrap();
    assert_eq!(opened.total, Total::Exact(2));
    let none = store.log_page(&only(ReceiptFilter::None)).await.unwrap();
    assert_eq!(none.total, Total::Exact(54));
    assert!(none.rows.iter().all(|r| r.receipt.is_none()));
}

#[tokio::test]
async fn retention_removes_a_records_receipt_and_its_bits() {
    let redis = RedisServer::start();
    let store = Store::open(&redis.url(), "pg:", Duration::from_secs(2), 3600).unwrap();
    let mut old = record("old", 1, Status::Sent);
    old.received_at_ms = now_ms() - 10 * 86_400_000;
    let ids = ingest(&store, &[old, record("new", 2, Status::Sent)]).await;
    let t = now_ms();
    store
        .record_receipts(
            &[
                receipt("old", ReceiptEvent::Opened, t),
                receipt("new", ReceiptEvent::Opened, t),
            ],
            &[],
            t,
        )
        .await
        .unwrap();
    store.prune(now_ms() - 86_400_000, 100).await.unwrap();
    assert_eq!(store.receipt_of(ids[0]).await.unwrap(), None);
    assert!(store.receipt_of(ids[1]).await.unwrap().is_some());
    let opened = LogQuery {
        receipt: Some(ReceiptFilter::Opened),
        page: 1,
        per_page: 10,
        ..Default::default()
    };
    assert_eq!(
        store.log_page(&opened).await.unwrap().total,
        Total::Exact(1)
    );
}

async fn post(app: &TestApp, key: &str, body: Vec<u8>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/receipts", app.app().admin_addr))
        .header("content-type", "application/json")
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", app.app().admin_addr))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipts_api_takes_a_batch_under_its_own_scope_within_bounds() {
    let redis = RedisServer::start();
    let app = TestApp::configured(
        &redis,
        &port_block("p", "transfer.rhai", ""),
        &[("transfer.rhai", TRANSFER_SCRIPT)],
        |text| {
            format!(
                "{text}\n[receipts]\ntimeout_secs = 60\n\n[[api_key]]\nname = \"bank-server\"\nsha256 = \"{}\"\nscopes = [\"receipt\"]\n",
                pushgate::admin::hash_api_key(RECEIPT_KEY)
            )
        },
    )
    .await;
    let store = app.app().store.clone();
    let ids = ingest(
        &store,
        &[
            record("a1", 1, Status::Sent),
            record("a2", 2, Status::Sent),
            record("a3", 3, Status::Sent),
        ],
    )
    .await;
    let t = now_ms();
    let batch = json!([
        {"uniqueKey": "a1", "event": "delivered", "at": t},
        {"uniqueKey": "missing", "event": "delivered", "at": t},
        {"uniqueKey": "a1", "event": "read", "at": t},
        {"uniqueKey": "a1", "event": "opened", "at": t + 86_400_000},
        {"uniqueKey": "a1", "event": "delivered", "at": t + 5},
    ]);
    let body = serde_json::to_vec(&batch).unwrap();

    for key in [TEST_KEY, READ_ONLY_KEY] {
        let (status, answer) = post(&app, key, body.clone()).await;
        assert_eq!(status, 403, "{key}: {answer}");
    }
    let (status, answer) = post(&app, RECEIPT_KEY, body).await;
    assert_eq!(status, 200, "{answer}");
    let oks: Vec<(bool, bool)> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["ok"] == true, r["repeated"] == true))
        .collect();
    assert_eq!(
        oks,
        [
            (true, false),
            (false, false),
            (false, false),
            (false, false),
            (true, true)
        ],
        "{answer}"
    );
    assert_eq!(answer["results"][1]["error"], "no push with this uniqueKey");
    assert!(
        answer["results"][2]["error"]
            .as_str()
            .unwrap()
            .contains("event")
    );
    assert!(
        answer["results"][3]["error"]
            .as_str()
            .unwrap()
            .contains("next 5 minutes")
    );
    assert_eq!(
        (answer["recorded"].clone(), answer["refused"].clone()),
        (json!(1), json!(3))
    );

    // Bounds: 1,001 items, a huge body, not an array; only POST.
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"uniqueKey": "a2", "event": "opened", "at": t}))
        .collect();
    let (status, _) = post(&app, RECEIPT_KEY, serde_json::to_vec(&many).unwrap()).await;
    assert_eq!(status, 413);
    let huge = format!("[{{\"uniqueKey\": \"{}\"}}]", "x".repeat(600 * 1024));
    let (status, _) = post(&app, RECEIPT_KEY, huge.into_bytes()).await;
    assert_eq!(status, 413);
    let (status, _) = post(&app, RECEIPT_KEY, b"{\"uniqueKey\": \"a2\"}".to_vec()).await;
    assert_eq!(status, 400);
    let (status, answer) = post(&app, RECEIPT_KEY, b"[{\"uniqueKey\": ".to_vec()).await;
    assert_eq!(status, 400);
    assert!(answer.to_string().contains("not valid JSON"), "{answer}");
    let (status, _) = post(&app, RECEIPT_KEY, b"[]".to_vec()).await;
    assert_eq!(status, 400, "an empty batch");
    // Items that are not receipts are each refused on their own, in order.
    let mixed = json!([5, {"uniqueKey": "a3", "event": "opened", "at": t}, {"uniqueKey": "a3", "event": "gone", "at": t}]);
    let (status, answer) = post(&app, RECEIPT_KEY, serde_json::to_vec(&mixed).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["recorded"], &answer["refused"]),
        (&json!(1), &json!(2)),
        "{answer}"
    );
    let oks: Vec<&Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["ok"])
        .collect();
    assert_eq!(
        oks,
        [&json!(false), &json!(true), &json!(false)],
        "{answer}"
    );
    assert!(
        answer["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("JSON object")
    );
    let (status, _) = get(&app, "/api/v1/receipts", RECEIPT_KEY).await;
    assert_eq!(status, 405);

    // The API record shows the receipt, also to a masked reader; the log filter finds
    // the sent push without one.
    let (status, pushed) = get(&app, &format!("/api/v1/pushes/{}", ids[0]), READ_ONLY_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(pushed["receipt"], json!({"delivered_at": t}));
    let (status, found) = get(&app, "/api/v1/pushes?status=sent&receipt=none", TEST_KEY).await;
    assert_eq!(status, 200, "{found}");
    let found: Vec<u64> = found["pushes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(found, [ids[1]]);
    let (status, _) = get(&app, "/api/v1/pushes?receipt=maybe", TEST_KEY).await;
    assert_eq!(status, 400);

    // The dashboard shows the port's receipt rate; the push page the receipt.
    let mut web = Web::new(app.app().admin_addr);
    let dashboard = web.sign_in("viewer").await;
    assert!(dashboard.body.contains("66.7%"), "2 receipts per 3 sent");
    let page = web.get(&format!("/push/{}", ids[0])).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"receipt-delivered\""));
    assert!(
        !page
            .body
            .contains("<dd id=\"receipt-delivered\">not reported")
    );
    let page = web.get(&format!("/push/{}", ids[1])).await;
    assert!(
        page.body
            .contains("<dd id=\"receipt-delivered\">not reported")
    );
    app.shutdown().await;
}
