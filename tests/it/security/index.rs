//! Bitmap-index memory: a message's `D_servicename` / `push_grp_id` value gets a bitmap
//! (id/8 bytes) only once it has earned one or is listed, at most `bitmap_max_values`
//! per field, and retention deletes the bitmaps it empties. Every record stays findable
//! by whichever index holds its value.

use serde_json::json;

use pushgate::push::Status;
use pushgate::store::log::{LogQuery, Total};
use pushgate::store::{NewRecord, Store};

use crate::support::*;

/// pushgate with port `p` routed by [`SEND`] and `store` settings appended.
async fn start(redis: &RedisServer, store: &str) -> TestApp {
    TestApp::start_with(
        redis,
        &port_block("p", "send.rhai", ""),
        &[("send.rhai", SEND)],
        &format!("[store]\n{store}\n"),
    )
    .await
}

fn used_memory(con: &mut redis::Connection) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

fn exists(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(con).unwrap()
}

/// A record with `D_servicename = service` written straight through the store's group
/// commit, `age_days` old; every third one is queued, the others dropped.
fn record(n: usize, service: &str, age_days: i64) -> NewRecord {
    let now = pushgate::clock::now_ms();
    let mut fields = message(&format!("K{n}"), n).as_object().unwrap().clone();
    fields.insert("D_servicename".into(), json!(service));
    let queued = n.is_multiple_of(3);
    NewRecord {
        unique_key: format!("K{n}"),
        port: "p".into(),
        received_at_ms: now - age_days * 86_400_000,
        fields,
        status: if queued {
            Status::Queued
        } else {
            Status::Dropped
        },
        due_ms: queued.then_some(now),
        decision: None,
        error: None,
    }
}

/// Every id matching `field == value` (and `status`), newest first, read page by page.
async fn search_all(
    store: &Store,
    field: &str,
    value: &str,
    status: Option<&str>,
    per_page: u64,
) -> Vec<u64> {
    let mut ids = Vec::new();
    for page in 1.. {
        let q = LogQuery {
            field: Some(field.into()),
            value: value.into(),
            status: status.map(str::to_owned),
            page,
            per_page,
            ..LogQuery::default()
        };
        let found = store.log_page(&q).await.unwrap();
        assert!(
            matches!(found.total, Total::Exact(_)),
            "{field}={value}: {:?}",
            found.total
        );
        if found.rows.is_empty() {
            return ids;
        }
        ids.extend(found.rows.iter().map(|r| r.id));
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_fresh_bitmap_field_values_at_id_8_000_000_cost_kilobytes_not_megabytes() {
    let redis = RedisServer::start();
    let app = start(&redis, "").await;
    let addr = app.port_addr("p").await;
    let mut con = redis.connection();
    let _: () = redis::cmd("SET")
        .arg("pg:seq")
        .arg(8_000_000)
        .query(&mut con)
        .unwrap();
    // pushgate's own bitmaps (status, fcm_send_yn, port) are id/8 bytes at any id;
    // what a stranger controls is the values in the message.
    send_one_ok(addr, "warm-up", 1).await;
    let fresh: Vec<_> = (0..20)
        .map(|n| {
            let mut m = message(&format!("fresh-{n}"), n);
            m["D_servicename"] = json!(format!("SVC-{n:02}"));
            m["push_grp_id"] = json!(format!("GRP-{n:02}"));
            m
        })
        .collect();
    let before = used_memory(&mut con);
    let acks = send_messages(addr, &fresh).await;
    let grown = used_memory(&mut con) - before;
    assert!(acks.iter().all(|a| a["ok"] == true), "{acks:?}");
    eprintln!(
        "20 records with 40 fresh bitmap-field values at id 8,000,000: Redis grew {grown} bytes"
    );
    assert!(
        grown < 8 << 20,
        "Redis grew by {grown} bytes (45 MiB before: a bitmap of 1 MB per value)"
    );

    let store = app.app().store.clone();
    for n in 0..20 {
        let id = store
            .id_for_key(&format!("fresh-{n}"))
            .await
            .unwrap()
            .expect("stored");
        for (field, value) in [
            ("D_servicename", format!("SVC-{n:02}")),
            ("push_grp_id", format!("GRP-{n:02}")),
        ] {
            assert!(
                !exists(&mut con, &format!("pg:bit:{field}:{value}")),
                "{field}={value} has no bitmap of its own"
            );
            assert_eq!(search_all(&store, field, &value, None, 10).await, [id]);
            assert_eq!(
                search_all(&store, field, &value, Some("queued"), 10).await,
                [id],
                "{field}={value} with a status filter"
            );
            assert!(
                search_all(&store, field, &value, Some("sent"), 10)
                    .await
                    .is_empty()
            );
            assert_eq!(store.count_bits(field, &value).await.unwrap(), 1);
            assert!(store.has_bit(field, &value, id).await.unwrap());
        }
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_with_many_records_earns_a_bitmap_and_every_record_is_still_found() {
    let redis = RedisServer::start();
    let app = start(&redis, "bitmap_min_records = 20").await;
    let store = app.app().store.clone();
    let mut con = redis.connection();
    // BULK on every other record, among values that never reach 20 records.
    let batch = |range: std::ops::Range<usize>| -> Vec<NewRecord> {
        range
            .map(|n| {
                let service = if n % 2 == 0 {
                    "BULK".to_owned()
                } else {
                    format!("ONE-{n}")
                };
                record(n, &service, 0)
            })
            .collect()
    };
    store.ingest(&batch(0..30)).await.unwrap();
    assert!(
        exists(&mut con, "pg:idx:D_servicename:BULK"),
        "15 records: still in its zset"
    );
    assert!(!exists(&mut con, "pg:bit:D_servicename:BULK"));
    store.ingest(&batch(30..140)).await.unwrap();
    assert!(
        exists(&mut con, "pg:bit:D_servicename:BULK"),
        "70 records: a bitmap"
    );
    assert!(
        !exists(&mut con, "pg:idx:D_servicename:BULK"),
        "the zset is gone once its ids moved to the bitmap"
    );
    let registered: Vec<String> = redis::cmd("SMEMBERS")
        .arg("pg:bitvals:D_servicename")
        .query(&mut con)
        .unwrap();
    assert_eq!(registered, ["BULK"]);

    let mut bulk: Vec<u64> = Vec::new();
    let mut queued: Vec<u64> = Vec::new();
    for n in (0..140).step_by(2) {
        let id = store.id_for_key(&format!("K{n}")).await.unwrap().unwrap();
        bulk.push(id);
        if n % 3 == 0 {
            queued.push(id);
        }
    }
    bulk.reverse();
    queued.reverse();
    assert_eq!(
        search_all(&store, "D_servicename", "BULK", None, 7).await,
        bulk,
        "every record, newest first, in pages of 7"
    );
    assert_eq!(
        search_all(&store, "D_servicename", "BULK", Some("queued"), 7).await,
        queued,
        "with the status filter"
    );
    assert_eq!(store.count_bits("D_servicename", "BULK").await.unwrap(), 70);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_value_and_a_first_stage_bitmap_take_the_bitmap_from_the_first_record_and_keep_it()
{
    let redis = RedisServer::start();
    let app = start(&redis, "bitmap_values = { D_servicename = [\"TRF\"] }").await;
    let store = app.app().store.clone();
    let mut con = redis.connection();
    // A bitmap the first stage made for a value (its records since removed).
    let _: () = redis::cmd("SETBIT")
        .arg("pg:bit:D_servicename:OLD")
        .arg(0)
        .arg(0)
        .query(&mut con)
        .unwrap();
    store
        .ingest(&[
            record(0, "TRF", 0),
            record(1, "OLD", 0),
            record(2, "DEP", 0),
        ])
        .await
        .unwrap();
    assert!(exists(&mut con, "pg:bit:D_servicename:TRF"), "listed");
    assert!(!exists(&mut con, "pg:bit:D_servicename:DEP"), "not listed");
    let registered: u64 = redis::cmd("SCARD")
        .arg("pg:bitvals:D_servicename")
        .query(&mut con)
        .unwrap();
    assert_eq!(registered, 0, "listed values are not counted in the cap");
    // Mixed versions: this one put MIX in a zset, then a first-stage node gave it a
    // bitmap. The next record merges the zset into the bitmap, which readers take.
    store
        .ingest(&[record(3, "MIX", 0), record(4, "MIX", 0)])
        .await
        .unwrap();
    assert!(exists(&mut con, "pg:idx:D_servicename:MIX"));
    let _: () = redis::cmd("SETBIT")
        .arg("pg:bit:D_servicename:MIX")
        .arg(0)
        .arg(0)
        .query(&mut con)
        .unwrap();
    store.ingest(&[record(5, "MIX", 0)]).await.unwrap();
    assert!(!exists(&mut con, "pg:idx:D_servicename:MIX"));
    let mut mixed = Vec::new();
    for n in [5, 4, 3] {
        mixed.push(store.id_for_key(&format!("K{n}")).await.unwrap().unwrap());
    }
    assert_eq!(
        search_all(&store, "D_servicename", "MIX", None, 2).await,
        mixed
    );
    assert!(
        !exists(&mut con, "pg:idx:D_servicename:OLD")
            && store
                .single_id("D_servicename", "OLD")
                .await
                .unwrap()
                .is_none(),
        "a value with a bitmap keeps using it"
    );
    for (n, value) in [(0, "TRF"), (1, "OLD"), (2, "DEP")] {
        let id = store.id_for_key(&format!("K{n}")).await.unwrap().unwrap();
        assert_eq!(
            search_all(&store, "D_servicename", value, None, 10).await,
            [id],
            "{value}"
        );
        assert!(store.has_bit("D_servicename", value, id).await.unwrap());
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_bitmap_max_values_a_value_stays_in_its_zset_and_is_found() {
    let redis = RedisServer::start();
    let app = start(&redis, "bitmap_min_records = 5\nbitmap_max_values = 2").await;
    let store = app.app().store.clone();
    let mut con = redis.connection();
    let services = ["A", "B", "C"];
    let records: Vec<NewRecord> = (0..60).map(|n| record(n, services[n / 20], 0)).collect();
    store.ingest(&records).await.unwrap();
    assert!(exists(&mut con, "pg:bit:D_servicename:A"));
    assert!(exists(&mut con, "pg:bit:D_servicename:B"));
    assert!(
        !exists(&mut con, "pg:bit:D_servicename:C"),
        "a third value is beyond the cap of 2"
    );
    assert!(exists(&mut con, "pg:idx:D_servicename:C"));
    let ids_of = |range: std::ops::Range<usize>, only_queued: bool| {
        let store = store.clone();
        async move {
            let mut ids = Vec::new();
            for n in range.rev() {
                if !only_queued || n % 3 == 0 {
                    ids.push(store.id_for_key(&format!("K{n}")).await.unwrap().unwrap());
                }
            }
            ids
        }
    };
    assert_eq!(
        search_all(&store, "D_servicename", "C", None, 6).await,
        ids_of(40..60, false).await
    );
    assert_eq!(
        search_all(&store, "D_servicename", "C", Some("queued"), 6).await,
        ids_of(40..60, true).await
    );

    // A flush forgets the earned bitmaps with their records: a new value can earn one.
    store.flush().await.unwrap();
    let registered: u64 = redis::cmd("SCARD")
        .arg("pg:bitvals:D_servicename")
        .query(&mut con)
        .unwrap();
    assert_eq!(registered, 0);
    let records: Vec<NewRecord> = (100..110).map(|n| record(n, "D", 0)).collect();
    store.ingest(&records).await.unwrap();
    assert!(exists(&mut con, "pg:bit:D_servicename:D"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_bitmaps_it_empties_and_creates_none() {
    let redis = RedisServer::start();
    let app = start(
        &redis,
        "bitmap_min_records = 5\nbitmap_values = { D_servicename = [\"LISTED\"] }",
    )
    .await;
    let store = app.app().store.clone();
    let mut con = redis.connection();
    // Old: EARNED (a bitmap of its own), LISTED and SHORT (in the zset); young: STAY.
    let mut old: Vec<NewRecord> = (0..20).map(|n| record(n, "EARNED", 40)).collect();
    // The only script_error record: its status bitmap empties too.
    old[1].status = Status::ScriptError;
    old.extend((20..23).map(|n| record(n, "LISTED", 40)));
    old.extend((23..26).map(|n| record(n, "SHORT", 40)));
    let mut held = record(26, "SHORT", 40);
    held.fields.insert("push_grp_id".into(), json!("HELD-GRP"));
    old.push(held);
    store.ingest(&old).await.unwrap();
    let young: Vec<NewRecord> = (30..40).map(|n| record(n, "STAY", 1)).collect();
    store.ingest(&young).await.unwrap();
    for value in ["EARNED", "LISTED", "STAY"] {
        assert!(exists(&mut con, &format!("pg:bit:D_servicename:{value}")));
    }
    assert!(exists(&mut con, "pg:idx:D_servicename:SHORT"));
    let held_id = store.id_for_key("K26").await.unwrap().unwrap();
    store.set_hold(held_id, true).await.unwrap();

    let now = pushgate::clock::now_ms();
    let pruned = store.prune(now - 30 * 86_400_000, 7).await.unwrap();
    assert_eq!((pruned.removed, pruned.held), (26, 1));

    for value in ["EARNED", "LISTED"] {
        assert!(
            !exists(&mut con, &format!("pg:bit:D_servicename:{value}")),
            "{value}'s records are all gone, so is its bitmap"
        );
    }
    let registered: Vec<String> = redis::cmd("SMEMBERS")
        .arg("pg:bitvals:D_servicename")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        registered,
        ["STAY"],
        "EARNED left the registry with its bitmap"
    );
    assert!(exists(&mut con, "pg:bit:D_servicename:STAY"));
    assert_eq!(
        search_all(&store, "D_servicename", "SHORT", None, 10).await,
        [held_id],
        "the zset keeps only the held record"
    );
    assert!(!exists(&mut con, "pg:bit:D_servicename:SHORT"));
    assert!(
        !exists(&mut con, "pg:bit:status:script_error"),
        "an emptied status bitmap is deleted too"
    );
    assert!(exists(&mut con, "pg:bit:status:dropped"), "young ones left");
    assert!(!exists(&mut con, "pg:retention:touched"));
    let again = store.prune(now - 30 * 86_400_000, 7).await.unwrap();
    assert_eq!((again.removed, again.emptied_bitmaps), (0, 0));
    assert!(
        search_all(&store, "D_servicename", "EARNED", None, 10)
            .await
            .is_empty()
    );
    assert_eq!(
        search_all(&store, "push_grp_id", "HELD-GRP", None, 10).await,
        [held_id]
    );
    app.shutdown().await;
}
