//! The store driven directly against a real redis-server: one test per Lua script in
//! `src/store/lua/`, named after the script's job, each through the `Store` method that
//! runs it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use pushgate::clock::now_ms;
use pushgate::push::{Record, Status};
use pushgate::store::bitmaps::Admission;
use pushgate::store::cluster::{Acquired, holder_node};
use pushgate::store::console::{LoginGate, LoginLimits};
use pushgate::store::delivery::{Claimed, Outcome};
use pushgate::store::log::{LogQuery, Resend, Total, Window};
use pushgate::store::{Committer, NewRecord, Store, Stored};

use crate::support::*;

const DAY_MS: i64 = 86_400_000;

fn open(redis: &RedisServer) -> Store {
    Store::open(&redis.url(), "pg:", Duration::from_secs(2), 3600).expect("store opens")
}

/// Message `n` under `key`, arrived on port `p` at `at_ms`; a queued one is due then.
fn record(key: &str, n: usize, status: Status, at_ms: i64) -> NewRecord {
    NewRecord {
        unique_key: key.into(),
        port: "p".into(),
        received_at_ms: at_ms,
        fields: message(key, n).as_object().unwrap().clone(),
        status,
        due_ms: (status == Status::Queued).then_some(at_ms),
        decision: None,
        error: None,
    }
}

/// Queued for even `n` (odd ids), dropped for odd `n`.
fn every_other(n: usize) -> Status {
    if n.is_multiple_of(2) {
        Status::Queued
    } else {
        Status::Dropped
    }
}

/// [`record`] with message field `field` set to `value`.
fn with(mut record: NewRecord, field: &str, value: &str) -> NewRecord {
    record.fields.insert(field.into(), json!(value));
    record
}

/// The id of one new record.
async fn ingest_one(store: &Store, record: NewRecord) -> u64 {
    ingest(store, &[record]).await[0]
}

fn claimed_ids(claimed: &[Claimed]) -> Vec<u64> {
    claimed.iter().map(|c| c.id).collect()
}

fn ids(rows: &[Record]) -> Vec<u64> {
    rows.iter().map(|r| r.id).collect()
}

async fn page(store: &Store, q: LogQuery) -> (Vec<u64>, Total) {
    let found = store.log_page(&q).await.unwrap();
    (ids(&found.rows), found.total)
}

async fn totals(store: &Store, port: &str) -> HashMap<String, u64> {
    store.port_totals(port).await.unwrap().into_iter().collect()
}

fn exists(redis: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query(&mut redis.connection())
        .unwrap()
}

fn members(redis: &RedisServer, key: &str) -> Vec<String> {
    let mut values: Vec<String> = redis::cmd("SMEMBERS")
        .arg(key)
        .query(&mut redis.connection())
        .unwrap();
    values.sort();
    values
}

/// `ingest.lua`
#[tokio::test]
async fn ingest_dedupes_the_same_unique_key_into_one_record() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let first = store
        .ingest(&[
            record("K1", 1, Status::Queued, now),
            record("K1", 1, Status::Queued, now),
        ])
        .await
        .unwrap();
    let Stored::New { id } = first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(
        first[1],
        Stored::Duplicate { id },
        "a repeat in the same batch"
    );
    let again = store
        .ingest(&[record("K1", 1, Status::Queued, now)])
        .await
        .unwrap();
    assert_eq!(
        again,
        [Stored::Duplicate { id }],
        "a repeat in a later batch"
    );

    assert_eq!(store.record_count().await.unwrap(), 1);
    assert_eq!(
        store.last_id().await.unwrap(),
        id,
        "a duplicate takes no id"
    );
    assert_eq!(store.queue_depths().await.unwrap(), (1, 0), "queued once");
    let stored = store.record(id).await.unwrap().expect("stored").to_json();
    assert_eq!(
        (
            stored["id"].as_u64(),
            &stored["uniqueKey"],
            &stored["status"]
        ),
        (Some(id), &json!("K1"), &json!("queued"))
    );
    let counted = totals(&store, "p").await;
    assert_eq!(
        (counted["received"], counted["dup"], counted["queued"]),
        (3, 2, 1)
    );
}

/// `ingest.lua` (its fences) with `acquire_port.lua` and `renew_port.lua`
#[tokio::test]
async fn a_commit_with_a_stale_lease_token_is_fenced_and_writes_nothing() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let Acquired::Ours(old) = store
        .acquire_port("p", "node-a", "i1", 60_000)
        .await
        .unwrap()
    else {
        panic!("the lease is free")
    };
    let written = store
        .ingest_fenced(
            &[record("F1", 1, Status::Queued, now)],
            std::slice::from_ref(&old),
            &[1],
        )
        .await
        .unwrap();
    assert!(matches!(written[0], Stored::New { .. }), "{written:?}");

    // The port moves to another node: its lease gets a token the old holder never had.
    assert!(store.release_port("p", &old).await.unwrap());
    let Acquired::Ours(new) = store
        .acquire_port("p", "node-b", "i1", 60_000)
        .await
        .unwrap()
    else {
        panic!("released")
    };
    assert_ne!(new.token, old.token);
    let mixed = store
        .ingest_fenced(
            &[
                record("F2", 2, Status::Queued, now),
                record("F3", 3, Status::Queued, now),
                record("F4", 4, Status::Queued, now),
            ],
            &[old.clone(), new.clone()],
            &[1, 2, 0],
        )
        .await
        .unwrap();
    assert_eq!(mixed[0], Stored::Fenced, "the stale token is refused");
    assert!(
        matches!(mixed[1], Stored::New { .. }),
        "the new token holds"
    );
    assert!(matches!(mixed[2], Stored::New { .. }), "unfenced");
    assert_eq!(
        store.id_for_key("F2").await.unwrap(),
        None,
        "nothing written"
    );
    assert_eq!(
        totals(&store, "p").await["received"],
        3,
        "a refused one is not counted"
    );

    // The same through the group-commit writer.
    let (committer, writer) = Committer::spawn(
        store.clone(),
        100,
        Duration::from_secs(1),
        Arc::new(Notify::new()),
    );
    let stale = committer
        .commit(vec![record("F5", 5, Status::Queued, now)], Some(old))
        .await
        .unwrap();
    assert_eq!(stale, [Stored::Fenced]);
    let fresh = committer
        .commit(vec![record("F6", 6, Status::Queued, now)], Some(new))
        .await
        .unwrap();
    assert!(matches!(fresh[0], Stored::New { .. }), "{fresh:?}");
    drop(committer);
    writer.await.unwrap();
    assert_eq!(store.record_count().await.unwrap(), 4);
}

/// `claim.lua`
#[tokio::test]
async fn claim_moves_due_ids_to_inflight_and_an_expired_lease_returns_them_to_due() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let all = ingest(
        &store,
        &[
            record("C1", 1, Status::Queued, now),
            record("C2", 2, Status::Queued, now),
            record("C3", 3, Status::Queued, now),
        ],
    )
    .await;

    let first = store
        .claim("default", now, now + 1_000, 2, None)
        .await
        .unwrap()
        .records;
    let first_ids = claimed_ids(&first);
    assert_eq!(first_ids, all[..2]);
    assert!(first.iter().all(|c| c.lease == now + 1_000));
    assert_eq!(
        first[0].record.unique_key(),
        "C1",
        "claimed with its record"
    );
    assert_eq!(store.queue_depths().await.unwrap(), (1, 2));

    // Before the leases end, a claim takes only what is still due.
    let second = store
        .claim("default", now + 500, now + 1_500, 10, None)
        .await
        .unwrap()
        .records;
    assert_eq!(claimed_ids(&second), all[2..]);
    assert_eq!(store.queue_depths().await.unwrap(), (0, 3));

    // Once the first leases end, the next claim returns them to `due` first.
    let none = store
        .claim("default", now + 1_200, now + 2_200, 0, None)
        .await
        .unwrap()
        .records;
    assert!(none.is_empty());
    assert_eq!(
        store.queue_depths().await.unwrap(),
        (2, 1),
        "two leases ran out"
    );
    let again = store
        .claim("default", now + 1_200, now + 2_200, 10, None)
        .await
        .unwrap()
        .records;
    assert_eq!(claimed_ids(&again), first_ids);

    // A due id whose record retention removed is dropped from the queue.
    let _: () = redis::cmd("ZADD")
        .arg("pg:due")
        .arg(now)
        .arg(999)
        .query(&mut redis.connection())
        .unwrap();
    assert!(
        store
            .claim("default", now, now + 1_000, 10, None)
            .await
            .unwrap()
            .records
            .is_empty()
    );
    assert_eq!(store.queue_depths().await.unwrap(), (0, 3));
}

/// The outcome of a send of `claim`: sent, delivered.
fn sent(claim: &Claimed, at_ms: i64) -> Outcome {
    let mut record = claim.record.clone();
    record.status = Status::Sent;
    record.attempts = 1;
    record.fcm_send_yn = "Y".into();
    Outcome {
        id: claim.id,
        lease: claim.lease,
        base: claim.text.clone(),
        record,
        old_status: Status::Queued,
        new_status: Status::Sent,
        retry_at_ms: None,
        delivered: true,
        port: "p".into(),
        at_ms,
        fallback: None,
        watch_receipt: false,
    }
}

/// `outcome.lua`
#[tokio::test]
async fn an_outcome_under_a_lease_that_is_no_longer_the_records_score_is_refused() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let id = ingest_one(&store, record("O1", 1, Status::Queued, now)).await;
    let first = store
        .claim("default", now, now + 1_000, 1, None)
        .await
        .unwrap()
        .records;
    // The lease runs out and another sender claims the record again.
    let second = store
        .claim("default", now + 2_000, now + 3_000, 1, None)
        .await
        .unwrap()
        .records;
    assert_eq!((first[0].id, second[0].id), (id, id));

    let late = store.finish(&[sent(&first[0], now)]).await.unwrap();
    assert_eq!(late, [false], "the first sender's lease is gone");
    assert_eq!(
        store.record(id).await.unwrap().unwrap().to_json()["status"],
        "queued"
    );
    assert_eq!(
        store.queue_depths().await.unwrap(),
        (0, 1),
        "still in flight"
    );

    let applied = store.finish(&[sent(&second[0], now)]).await.unwrap();
    assert_eq!(applied, [true]);
    let stored = store.record(id).await.unwrap().unwrap().to_json();
    assert_eq!(
        (&stored["status"], &stored["attempts"]),
        (&json!("sent"), &json!(1))
    );
    assert_eq!(store.queue_depths().await.unwrap(), (0, 0));
    assert!(store.has_bit("status", "sent", id).await.unwrap());
    assert!(!store.has_bit("status", "queued", id).await.unwrap());
    assert!(store.has_bit("fcm_send_yn", "Y", id).await.unwrap());
    assert!(!store.has_bit("fcm_send_yn", "N", id).await.unwrap());
    assert_eq!(totals(&store, "p").await["sent"], 1);

    let twice = store.finish(&[sent(&second[0], now)]).await.unwrap();
    assert_eq!(twice, [false], "no longer in flight: written once");
}

/// `outcome.lua`: a change made to a record while it was in flight (a legal hold placed,
/// a fallback rung's attempt written by its own sender) survives the send's outcome,
/// which is applied over it; the send's part wins where it owns the field.
#[tokio::test]
async fn an_outcome_keeps_what_changed_on_the_record_while_it_was_in_flight() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let id = ingest_one(&store, record("H1", 1, Status::Queued, now)).await;
    let other = ingest_one(&store, record("H2", 2, Status::Queued, now)).await;
    let claimed = store
        .claim("default", now, now + 30_000, 2, None)
        .await
        .unwrap()
        .records;
    assert_eq!(claimed.len(), 2);
    // While both are in flight: a legal hold on one, and a rung attempt written on it
    // compare-and-set, as the fallback sender's `fallback_outcome.lua` writes it.
    store.set_hold(id, true).await.unwrap();
    let (text, mut changed) = store.record_text(id).await.unwrap().unwrap();
    changed.remember_rung(pushgate::push::RungAttempt {
        rung: "sms".into(),
        at: now,
        attempt: 1,
        http: 200,
        outcome: pushgate::push::RungOutcome::Sent,
        answer: String::new(),
    });
    let mut con = redis.connection();
    let swapped: i64 = redis::cmd("EVAL")
        .arg("if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end redis.call('SET', KEYS[1], ARGV[2]) return 1")
        .arg(1)
        .arg(format!("pg:rec:{id}"))
        .arg(&text)
        .arg(pushgate::store::record::encode(&changed))
        .query(&mut con)
        .unwrap();
    assert_eq!(swapped, 1);

    let outcomes: Vec<Outcome> = claimed.iter().map(|c| sent(c, now)).collect();
    assert_eq!(store.finish(&outcomes).await.unwrap(), [true, true]);
    let held = store.record(id).await.unwrap().unwrap();
    assert_eq!(held.status, Status::Sent, "the send's outcome is written");
    assert_eq!(held.attempts, 1);
    assert_eq!(held.fcm_send_yn, "Y");
    assert!(held.legal_hold, "the hold placed in flight is kept");
    assert_eq!(held.fallback.len(), 1, "the rung's attempt is kept");
    assert!(store.has_bit("status", "sent", id).await.unwrap());
    assert_eq!(
        store.record(other).await.unwrap().unwrap().status,
        Status::Sent,
        "an unchanged record in the same batch is written at once"
    );
    assert_eq!(totals(&store, "p").await["sent"], 2, "each counted once");
    assert_eq!(store.queue_depths().await.unwrap(), (0, 0));
}

/// `outcome.lua`: a retry goes back to `due`.
#[tokio::test]
async fn an_outcome_with_a_retry_time_queues_the_record_again() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    // An urgent push of another app: its retry goes back to its own queue and lane.
    let urgent = in_lane("R1", "card", pushgate::push::Lane::Urgent, now);
    ingest(&store, &[urgent]).await;
    let claim = store
        .claim("card", now, now + 1_000, 1, None)
        .await
        .unwrap()
        .records
        .remove(0);
    let mut retry = sent(&claim, now);
    retry.record.status = Status::Retrying;
    retry.record.fcm_send_yn = "N".into();
    retry.new_status = Status::Retrying;
    retry.delivered = false;
    retry.retry_at_ms = Some(now + 5_000);
    assert_eq!(store.finish(&[retry]).await.unwrap(), [true]);
    assert_eq!(store.due_at(claim.id).await.unwrap(), Some(now + 5_000));
    let mut con = redis.connection();
    let score: Option<i64> = redis::cmd("ZSCORE")
        .arg("pg:due:card:urgent")
        .arg(claim.id)
        .query(&mut con)
        .unwrap();
    assert_eq!(score, Some(now + 5_000), "the retry keeps its app and lane");
    assert!(store.has_bit("status", "retrying", claim.id).await.unwrap());
    assert!(store.has_bit("fcm_send_yn", "N", claim.id).await.unwrap());
    assert!(store.has_bit("lane", "urgent", claim.id).await.unwrap());
    assert!(store.has_bit("app", "card", claim.id).await.unwrap());
}

/// `prune.lua` with `swap.lua` (legal hold)
#[tokio::test]
async fn retention_removes_records_past_the_cut_and_keeps_legal_holds() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let old: Vec<NewRecord> = (0..5)
        .map(|n| record(&format!("OLD{n}"), n, every_other(n), now - 40 * DAY_MS))
        .collect();
    let young = [record("NEW0", 10, Status::Queued, now - DAY_MS)];
    let old_ids = ingest(&store, &old).await;
    let young_ids = ingest(&store, &young).await;
    let held = old_ids[2];
    store.set_hold(held, true).await.unwrap().expect("exists");

    let pruned = store.prune(now - 30 * DAY_MS, 2).await.unwrap();
    assert_eq!((pruned.removed, pruned.held), (4, 1));
    for (n, id) in old_ids.iter().enumerate().filter(|(_, id)| **id != held) {
        let key = format!("OLD{n}");
        assert_eq!(store.id_for_key(&key).await.unwrap(), None, "{key}");
        assert!(store.record(*id).await.unwrap().is_none(), "{key}");
        let uuid = format!("uuid-{n}");
        assert_eq!(
            store.single_id("uuid_id", &uuid).await.unwrap(),
            None,
            "{key}"
        );
        assert!(
            !store.has_bit("status", "dropped", *id).await.unwrap(),
            "{key}"
        );
    }
    assert_eq!(
        store.id_for_key("OLD2").await.unwrap(),
        Some(held),
        "held: kept"
    );
    assert_eq!(
        store.single_id("uuid_id", "uuid-2").await.unwrap(),
        Some(held)
    );
    assert!(
        store.record(young_ids[0]).await.unwrap().is_some(),
        "young: kept"
    );
    assert_eq!(
        store.queue_depths().await.unwrap(),
        (2, 0),
        "the held and the young record stay queued"
    );

    let again = store.prune(now - 30 * DAY_MS, 2).await.unwrap();
    assert_eq!(
        again.removed, 0,
        "ids below retention:next are not looked at again"
    );
    let window = store.id_window(None, None).await.unwrap();
    assert_eq!(
        window.floor,
        old_ids[4] + 1,
        "the plain listing starts after them"
    );
}

/// `emptied_bitmaps.lua`
#[tokio::test]
async fn retention_deletes_the_bitmaps_it_left_empty_and_unregisters_earned_ones() {
    let redis = RedisServer::start();
    // A message value earns its bitmap at its second record.
    let store = open(&redis).with_admission(Admission {
        min_records: 2,
        max_values: 4,
        listed: HashMap::new(),
    });
    let now = now_ms();
    let old: Vec<NewRecord> = (0..3)
        .map(|n| {
            let mut r = record(&format!("OLD{n}"), n, Status::Dropped, now - 40 * DAY_MS);
            r.port = "gone".into();
            with(r, "D_servicename", "OLDSVC")
        })
        .collect();
    ingest(&store, &old).await;
    let young = with(
        record("NEW0", 9, Status::Queued, now),
        "D_servicename",
        "NEWSVC",
    );
    ingest(&store, &[young]).await;
    assert!(
        store.has_bitmap("D_servicename", "OLDSVC").await.unwrap(),
        "earned"
    );
    assert_eq!(members(&redis, "pg:bitvals:D_servicename"), ["OLDSVC"]);

    let pruned = store.prune(now - 30 * DAY_MS, 100).await.unwrap();
    assert_eq!(pruned.removed, 3);
    assert_eq!(
        pruned.emptied_bitmaps, 3,
        "status:dropped, worker:gone, D_servicename:OLDSVC"
    );
    for gone in [
        "pg:bit:status:dropped",
        "pg:bit:worker:gone",
        "pg:bit:D_servicename:OLDSVC",
    ] {
        assert!(!exists(&redis, gone), "{gone} deleted");
    }
    for kept in [
        "pg:bit:status:queued",
        "pg:bit:worker:p",
        "pg:bit:fcm_send_yn:N",
    ] {
        assert!(exists(&redis, kept), "{kept} still holds the young record");
    }
    assert!(
        members(&redis, "pg:bitvals:D_servicename").is_empty(),
        "unregistered"
    );
    assert!(!exists(&redis, "pg:retention:touched"), "all looked at");
}

/// `bitmap_registry.lua`. Only `flush` runs it, and a flush deletes the registry it
/// would repair, so the script file itself is run here on a registry naming a value
/// whose bitmap is gone (what a record earning a bitmap during a flush leaves).
#[tokio::test]
async fn the_bitmap_registry_forgets_values_whose_bitmap_is_gone() {
    let redis = RedisServer::start();
    let store = open(&redis).with_admission(Admission {
        min_records: 2,
        max_values: 4,
        listed: HashMap::new(),
    });
    let now = now_ms();
    let earning: Vec<NewRecord> = (0..2)
        .map(|n| {
            with(
                record(&format!("E{n}"), n, Status::Dropped, now),
                "D_servicename",
                "KEPT",
            )
        })
        .collect();
    ingest(&store, &earning).await;
    let mut con = redis.connection();
    let _: u64 = redis::cmd("SADD")
        .arg("pg:bitvals:D_servicename")
        .arg("GONE")
        .query(&mut con)
        .unwrap();
    let removed: u64 = redis::Script::new(include_str!("../../src/store/lua/bitmap_registry.lua"))
        .arg("pg:")
        .arg("D_servicename")
        .arg("push_grp_id")
        .invoke(&mut con)
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(members(&redis, "pg:bitvals:D_servicename"), ["KEPT"]);

    // And a flush leaves the registry naming no bitmap that is gone.
    store.flush().await.unwrap();
    assert!(members(&redis, "pg:bitvals:D_servicename").is_empty());
}

/// `window.lua`
#[tokio::test]
async fn the_id_window_finds_the_first_and_last_id_received_in_a_time_range() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let t0 = now_ms() - 60_000;
    let records: Vec<NewRecord> = (0..4)
        .map(|n| record(&format!("W{n}"), n, Status::Dropped, t0 + n as i64 * 1_000))
        .collect();
    assert_eq!(ingest(&store, &records).await, [1, 2, 3, 4]);
    let window = |lo, hi| Window { lo, hi, floor: 1 };
    let range = |from: Option<i64>, to: Option<i64>| store.id_window(from, to);

    assert_eq!(range(None, None).await.unwrap(), window(1, 4));
    assert_eq!(
        range(Some(t0 + 1_000), Some(t0 + 2_000)).await.unwrap(),
        window(2, 3)
    );
    assert_eq!(range(Some(t0 + 1_500), None).await.unwrap(), window(3, 4));
    assert_eq!(range(None, Some(t0 + 999)).await.unwrap(), window(1, 1));
    assert_eq!(
        range(None, Some(t0 - 1)).await.unwrap(),
        window(1, 0),
        "none: lo > hi"
    );
    assert_eq!(
        range(Some(t0 + 5_000), None).await.unwrap(),
        window(5, 4),
        "none: lo > hi"
    );
}

/// `bitscan.lua`
#[tokio::test]
async fn a_bitmap_page_walks_the_set_bits_newest_or_oldest_first() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    // Ids 1..=10: odd ids queued, even ones dropped; ids 1..=5 from port p, the rest q.
    let records: Vec<NewRecord> = (0..10)
        .map(|n| {
            let mut r = record(&format!("B{n}"), n, every_other(n), now);
            if n >= 5 {
                r.port = "q".into();
            }
            r
        })
        .collect();
    ingest(&store, &records).await;
    let queued = |page, oldest_first| LogQuery {
        status: Some("queued".into()),
        page,
        per_page: 2,
        oldest_first,
        ..LogQuery::default()
    };
    assert_eq!(
        page(&store, queued(1, false)).await,
        (vec![9, 7], Total::Exact(5))
    );
    assert_eq!(
        page(&store, queued(3, false)).await,
        (vec![1], Total::Exact(5))
    );
    assert_eq!(
        page(&store, queued(2, true)).await,
        (vec![5, 7], Total::Exact(5))
    );
    assert_eq!(
        page(&store, queued(4, true)).await,
        (vec![], Total::Exact(5))
    );

    // Two bitmaps (worker and status) are ANDed in a scratch key that is then deleted.
    let both = LogQuery {
        field: Some("worker".into()),
        value: "p".into(),
        ..queued(1, false)
    };
    assert_eq!(page(&store, both).await, (vec![5, 3], Total::Exact(3)));
    let scratch: Vec<String> = redis::cmd("KEYS")
        .arg("pg:tmp:*")
        .query(&mut redis.connection())
        .unwrap();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// `zfilter.lua`
#[tokio::test]
async fn a_zset_index_filtered_by_status_pages_through_the_matching_ids() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    // Ids 1..=6 share csno C1 (odd ids queued), id 7 has C2.
    let mut records: Vec<NewRecord> = (0..6)
        .map(|n| {
            with(
                record(&format!("Z{n}"), n, every_other(n), now),
                "csno",
                "C1",
            )
        })
        .collect();
    records.push(with(record("Z6", 6, Status::Queued, now), "csno", "C2"));
    ingest(&store, &records).await;
    let c1 = |status: Option<&str>, page| LogQuery {
        field: Some("csno".into()),
        value: "C1".into(),
        status: status.map(str::to_owned),
        page,
        per_page: 2,
        ..LogQuery::default()
    };
    assert_eq!(
        page(&store, c1(Some("queued"), 1)).await,
        (vec![5, 3], Total::Exact(3))
    );
    assert_eq!(
        page(&store, c1(Some("queued"), 2)).await,
        (vec![1], Total::Exact(3))
    );
    assert_eq!(
        page(&store, c1(Some("sent"), 1)).await,
        (vec![], Total::Exact(0))
    );
    assert_eq!(
        page(&store, c1(None, 1)).await,
        (vec![6, 5], Total::Exact(6))
    );
}

/// `single.lua` (and the `ix:` bucket rule in `bucket.lua`)
#[tokio::test]
async fn a_value_held_by_one_record_is_found_in_its_ix_bucket_until_a_second_shares_it() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let first = ingest_one(
        &store,
        with(record("S0", 0, Status::Dropped, now), "csno", "S1"),
    )
    .await;
    assert_eq!(store.single_id("csno", "S1").await.unwrap(), Some(first));
    assert!(!exists(&redis, "pg:idx:csno:S1"), "no zset for one record");
    let mut con = redis.connection();
    let buckets: Vec<String> = redis::cmd("KEYS")
        .arg("pg:ix:csno:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(buckets.len(), 1);
    let bucket = buckets[0].strip_prefix("pg:ix:csno:").unwrap();
    assert!(
        bucket.len() == 4 && bucket.chars().all(|c| c.is_ascii_hexdigit()),
        "bucket {bucket}: the first 4 hex digits of the value's SHA-1"
    );

    let second = ingest_one(
        &store,
        with(record("S1", 1, Status::Dropped, now), "csno", "S1"),
    )
    .await;
    assert_eq!(
        store.single_id("csno", "S1").await.unwrap(),
        None,
        "shared now"
    );
    let shared: Vec<u64> = redis::cmd("ZRANGE")
        .arg("pg:idx:csno:S1")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(shared, [first, second], "both moved to the value's zset");
    let found = LogQuery {
        field: Some("csno".into()),
        value: "S1".into(),
        per_page: 10,
        ..LogQuery::default()
    };
    assert_eq!(
        page(&store, found).await,
        (vec![second, first], Total::Exact(2))
    );
}

/// `requeue.lua`
#[tokio::test]
async fn requeue_replaces_only_an_unchanged_idle_record_and_queues_it() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let id = ingest_one(&store, record("Q0", 0, Status::Dropped, now)).await;
    let (text, mut changed) = store.record_text(id).await.unwrap().unwrap();
    let before = changed.clone();
    changed.status = Status::Queued;

    let stale = store
        .requeue(id, "{\"id\":0}", &before, &changed, Some(now))
        .await
        .unwrap();
    assert!(!stale, "a record changed since it was read is not replaced");
    let applied = store
        .requeue(id, &text, &before, &changed, Some(now))
        .await
        .unwrap();
    assert!(applied);
    assert_eq!(
        store.record(id).await.unwrap().unwrap().to_json()["status"],
        "queued"
    );
    assert_eq!(store.due_at(id).await.unwrap(), Some(now));
    assert!(store.has_bit("status", "queued", id).await.unwrap());
    assert!(!store.has_bit("status", "dropped", id).await.unwrap());

    let (current, _) = store.record_text(id).await.unwrap().unwrap();
    let busy = store
        .requeue(id, &current, &before, &changed, Some(now))
        .await
        .unwrap();
    assert!(!busy, "a queued record is not replaced");
    assert_eq!(store.resend(id, now).await.unwrap(), Resend::NotResendable);
    assert_eq!(store.resend(999, now).await.unwrap(), Resend::Missing);
}

/// `swap.lua`
#[tokio::test]
async fn a_legal_hold_is_set_and_cleared_by_swapping_the_unchanged_record() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let id = ingest_one(&store, record("H0", 0, Status::Dropped, now_ms())).await;
    let held = store.set_hold(id, true).await.unwrap().expect("exists");
    assert!(held.legal_hold);
    assert_eq!(
        store.record(id).await.unwrap().unwrap().to_json()["legal_hold"],
        true
    );
    let released = store.set_hold(id, false).await.unwrap().expect("exists");
    assert!(!released.legal_hold);
    assert!(
        store
            .record(id)
            .await
            .unwrap()
            .unwrap()
            .to_json()
            .get("legal_hold")
            .is_none()
    );
    assert!(
        store.set_hold(999, true).await.unwrap().is_none(),
        "no such record"
    );
}

/// `acquire_port.lua` and `renew_port.lua`
#[tokio::test]
async fn a_port_lease_is_held_by_one_node_renewed_by_its_token_and_taken_after_release() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let acquire = |node: &'static str, instance: &'static str| {
        let store = store.clone();
        async move {
            store
                .acquire_port("p", node, instance, 60_000)
                .await
                .unwrap()
        }
    };
    let Acquired::Ours(a) = acquire("node-a", "i1").await else {
        panic!("free")
    };
    assert_eq!(
        (a.key.as_str(), a.token.as_str()),
        ("lease:p", "node-a/i1/1")
    );
    let Acquired::Held(holder) = acquire("node-b", "i1").await else {
        panic!("held by node-a")
    };
    assert_eq!(
        (holder.as_str(), holder_node(&holder)),
        ("node-a/i1/1", "node-a")
    );
    assert!(
        matches!(acquire("node-a", "i1").await, Acquired::Held(_)),
        "the same instance does not take its own lease twice"
    );

    // node-a restarted (a new instance): it takes its lease over at once, with a new token.
    let Acquired::Ours(a2) = acquire("node-a", "i2").await else {
        panic!("node-a's own lease")
    };
    assert_eq!(a2.token, "node-a/i2/2");
    assert!(
        !store.renew_port("p", &a, 60_000).await.unwrap(),
        "old token"
    );
    assert!(store.renew_port("p", &a2, 5_000).await.unwrap());
    let ttl: i64 = redis::cmd("PTTL")
        .arg("pg:lease:p")
        .query(&mut redis.connection())
        .unwrap();
    assert!((1..=5_000).contains(&ttl), "renewed to 5 s: {ttl}");

    assert!(store.release_port("p", &a2).await.unwrap());
    assert!(
        !store.release_port("p", &a2).await.unwrap(),
        "released already"
    );
    let Acquired::Ours(b) = acquire("node-b", "i1").await else {
        panic!("released")
    };
    assert_eq!(b.token, "node-b/i1/3");
}

/// `login_attempt.lua`
#[tokio::test]
async fn the_sign_in_throttle_locks_a_name_per_address_and_slows_a_busy_address() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let limits = LoginLimits {
        per_user: 2,
        free_per_addr: 3,
        window_ms: 60_000,
        max_wait_ms: 4_000,
    };
    let admit = |addr: &'static str, user: &'static str| {
        let store = store.clone();
        async move { store.admit_login(addr, user, &limits).await.unwrap() }
    };
    assert_eq!(admit("10.0.0.1", "alice").await, LoginGate::Admitted);
    assert_eq!(admit("10.0.0.1", "alice").await, LoginGate::Admitted);
    let LoginGate::UserLocked(ms) = admit("10.0.0.1", "alice").await else {
        panic!("two attempts for alice from this address")
    };
    assert!((1..=60_000).contains(&ms), "{ms}");
    assert_eq!(
        admit("10.0.0.1", "bob").await,
        LoginGate::Admitted,
        "third: free"
    );
    assert_eq!(
        admit("10.0.0.1", "carol").await,
        LoginGate::Admitted,
        "fourth: then waits"
    );
    let LoginGate::AddressWaits(ms) = admit("10.0.0.1", "dave").await else {
        panic!("the address must wait")
    };
    assert!(
        (1..=1_000).contains(&ms),
        "1 s after the first attempt past the free ones: {ms}"
    );
    assert_eq!(
        admit("10.0.0.2", "alice").await,
        LoginGate::Admitted,
        "per address"
    );

    store.login_succeeded("10.0.0.2", "alice").await.unwrap();
    let count: i64 = redis::cmd("GET")
        .arg("pg:login:addr:10.0.0.2")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(count, 0, "a success takes its own attempt back");
}

/// A queued record whose push waits in `lane` of app `app`.
fn in_lane(key: &str, app: &str, lane: pushgate::push::Lane, at_ms: i64) -> NewRecord {
    let push: pushgate::push::Push = serde_json::from_value(json!({
        "target": {"token": format!("tok-{key}")},
        "app": app,
        "lane": lane,
    }))
    .unwrap();
    NewRecord {
        decision: Some(pushgate::push::Decision::Send { push }),
        due_ms: Some(at_ms),
        ..record(key, 0, Status::Queued, at_ms)
    }
}

/// `claim.lua`: urgent first, then normal and bulk four to one, one app at a time.
#[tokio::test]
async fn a_claim_takes_urgent_first_then_normal_and_bulk_four_to_one() {
    use pushgate::push::Lane;
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let mut records = Vec::new();
    for n in 0..20 {
        records.push(in_lane(&format!("b{n}"), "default", Lane::Bulk, now - 1000));
        records.push(in_lane(
            &format!("n{n}"),
            "default",
            Lane::Normal,
            now - 500,
        ));
    }
    records.push(in_lane("u0", "default", Lane::Urgent, now));
    records.push(in_lane("other", "card", Lane::Urgent, now));
    ingest(&store, &records).await;
    let lanes = |claimed: &[Claimed]| -> Vec<String> {
        claimed
            .iter()
            .map(|c| c.record.push().unwrap().queue().lane.to_string())
            .collect()
    };
    let first = store
        .claim("default", now, now + 30_000, 6, None)
        .await
        .unwrap();
    assert_eq!(
        lanes(&first.records),
        ["urgent", "normal", "normal", "normal", "normal", "bulk"],
        "urgent first although it arrived last; then four normal to one bulk"
    );
    assert!(
        first
            .records
            .iter()
            .all(|c| c.record.unique_key() != "other")
    );
    // One slot at a time keeps the ratio: the turn is kept in Redis.
    let mut singles = Vec::new();
    for _ in 0..10 {
        let c = store
            .claim("default", now, now + 30_000, 1, None)
            .await
            .unwrap();
        singles.extend(lanes(&c.records));
    }
    assert_eq!(
        singles.iter().filter(|l| *l == "bulk").count(),
        2,
        "{singles:?}"
    );
    // Normal runs out: bulk takes every slot; the other app's queue is untouched.
    let rest = store
        .claim("default", now, now + 30_000, 100, None)
        .await
        .unwrap();
    assert_eq!(rest.records.len(), 40 + 1 - 6 - 10);
    let card = store
        .claim("card", now, now + 30_000, 100, None)
        .await
        .unwrap();
    assert_eq!(card.records.len(), 1);
}

/// `claim.lua`'s bucket: no more than its capacity at once, a reserve only urgent pushes
/// use, and a wait that says when to come back.
#[tokio::test]
async fn a_claim_draws_on_the_apps_bucket_and_leaves_urgent_its_reserve() {
    use pushgate::config::Bucket;
    use pushgate::push::Lane;
    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let records: Vec<NewRecord> = (0..50)
        .map(|n| in_lane(&format!("b{n}"), "default", Lane::Bulk, now))
        .collect();
    ingest(&store, &records).await;
    // One send a second: a bucket that refills too slowly to matter during the test.
    let bucket = Some(Bucket {
        rate: 1,
        burst: 10,
        urgent_reserve: 3,
    });
    let first = store
        .claim("default", now, now + 30_000, 100, bucket)
        .await
        .unwrap();
    assert_eq!(first.records.len(), 7, "the burst less the urgent reserve");
    assert!(
        first.paced.is_some_and(|w| w <= Duration::from_secs(4)),
        "{:?}",
        first.paced
    );
    let again = store
        .claim("default", now, now + 30_000, 100, bucket)
        .await
        .unwrap();
    assert!(
        again.records.is_empty(),
        "the bucket is down to the reserve"
    );
    ingest(&store, &[in_lane("u", "default", Lane::Urgent, now)]).await;
    let urgent = store
        .claim("default", now, now + 30_000, 100, bucket)
        .await
        .unwrap();
    assert_eq!(urgent.records.len(), 1, "urgent uses the reserve");
    assert_eq!(urgent.records[0].record.unique_key(), "u");
}

/// `legacy_queue.lua`: what the first stage queued is sent by the default app's normal lane.
#[tokio::test]
async fn the_first_stages_due_queue_moves_into_the_default_apps_normal_lane() {
    let redis = RedisServer::start();
    let store = open(&redis);
    let mut con = redis.connection();
    let now = now_ms();
    let id = ingest_one(&store, record("L0", 0, Status::Queued, now)).await;
    let _: () = redis::cmd("ZREM")
        .arg("pg:due:default:normal")
        .arg(id)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("pg:due")
        .arg(now)
        .arg(id)
        .query(&mut con)
        .unwrap();
    assert_eq!(store.adopt_legacy_queue().await.unwrap(), 1);
    assert_eq!(store.adopt_legacy_queue().await.unwrap(), 0, "once");
    let claimed = store
        .claim("default", now, now + 30_000, 10, None)
        .await
        .unwrap();
    assert_eq!(claimed_ids(&claimed.records), [id]);
}

/// A token one app's provider called dead is dead for that app only.
#[tokio::test]
async fn dead_tokens_are_kept_per_app() {
    let redis = RedisServer::start();
    let store = open(&redis);
    store.remember_dead_token("ios", "t1", 1_000).await.unwrap();
    store
        .remember_dead_token("default", "t2", 2_000)
        .await
        .unwrap();
    assert_eq!(
        store.dead_tokens("ios", &["t1", "t2"]).await.unwrap(),
        [Some(1_000), None]
    );
    assert_eq!(
        store.dead_tokens("default", &["t1", "t2"]).await.unwrap(),
        [None, Some(2_000)]
    );
    let mut con = redis.connection();
    let legacy: Option<i64> = redis::cmd("HGET")
        .arg("pg:deadTokens")
        .arg("t2")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        legacy,
        Some(2_000),
        "the default app keeps the first stage's hash"
    );
}

/// `fallback_claim.lua`'s bucket: a rung's `rate` is one bucket in Redis, so two nodes
/// claiming together take no more than one would, and a claim held back says how long
/// until the next token.
#[tokio::test]
async fn a_rungs_rate_is_one_bucket_for_every_node_and_says_when_to_claim_again() {
    use redis::Commands as _;

    let redis = RedisServer::start();
    // Two stores: two nodes' connections to one Redis.
    let (a, b) = (open(&redis), open(&redis));
    let now = now_ms();
    let mut con = redis.connection();
    for n in 0..40 {
        let id = ingest_one(&a, record(&format!("P{n}"), n, Status::Failed, now)).await;
        let _: () = con.zadd("pg:fq:sms", id, now).unwrap();
        let _: () = con.zadd("pg:fq:lms", id, now).unwrap();
    }
    // rate 1 a second, a burst of 1: whichever node claims first takes the one token,
    // and the other is told to wait for the next (no refill within a second).
    assert_eq!(pushgate::store::fallback::rung_burst(1), 1);
    let first = a
        .claim_rung("sms", now, now + 30_000, 10, Some(1))
        .await
        .unwrap();
    let second = b
        .claim_rung("sms", now, now + 30_000, 10, Some(1))
        .await
        .unwrap();
    assert_eq!((first.records.len(), second.records.len()), (1, 0));
    let wait = second
        .paced
        .expect("the empty bucket says when to come back");
    assert!(
        wait > Duration::from_millis(500),
        "about a second: {wait:?}"
    );

    // rate 20 a second (a burst of 2), both nodes claiming for about a second: together
    // never more than burst + rate × time.
    assert_eq!(pushgate::store::fallback::rung_burst(20), 2);
    let started = std::time::Instant::now();
    let mut taken = 0;
    while started.elapsed() < Duration::from_millis(1_000) {
        for store in [&a, &b] {
            let got = store
                .claim_rung("lms", now, now + 30_000, 10, Some(20))
                .await
                .unwrap();
            taken += got.records.len();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bound = 2.0 + 20.0 * elapsed;
    assert!(
        (taken as f64) <= bound,
        "{taken} claimed in {elapsed:.2} s: over burst + rate × time = {bound:.1}"
    );
    assert!(
        taken >= 8,
        "{taken} claimed in {elapsed:.2} s: the rate is (about) reached"
    );
    // No bucket without a rate: everything due at once.
    let rest = a
        .claim_rung("lms", now, now + 30_000, 100, None)
        .await
        .unwrap();
    assert_eq!(rest.records.len(), 40 - taken);
    assert_eq!(rest.paced, None);
}

/// `fallback_claim.lua` and `fallback_outcome.lua`
#[tokio::test]
async fn a_rung_outcome_is_fenced_by_its_lease_and_applied_over_a_record_changed_meanwhile() {
    use pushgate::push::{RungAttempt, RungOutcome};
    use pushgate::store::fallback::{RungResult, RungWrite};
    use redis::Commands as _;

    let redis = RedisServer::start();
    let store = open(&redis);
    let now = now_ms();
    let id = ingest_one(&store, record("F1", 1, Status::Dropped, now)).await;
    let mut con = redis.connection();
    let _: () = con.zadd("pg:fq:alimtalk", id, now).unwrap();
    let claimed = store
        .claim_rung("alimtalk", now, now + 30_000, 10, None)
        .await
        .unwrap();
    assert_eq!(claimed.records.len(), 1);
    assert_eq!(claimed.paced, None);
    let claim = claimed.records.into_iter().next().unwrap();
    assert_eq!(store.rung_depth("alimtalk").await.unwrap(), (0, 1));

    // Meanwhile the record changes (a receipt, an operator's resend).
    let key = format!("pg:rec:{id}");
    let text: String = con.get(&key).unwrap();
    let mut changed: serde_json::Value = serde_json::from_str(&text).unwrap();
    changed["receipt"] = json!({"delivered_at": now});
    let _: () = con.set(&key, changed.to_string()).unwrap();

    let added = RungAttempt {
        rung: "alimtalk".into(),
        at: now,
        attempt: 1,
        http: 200,
        outcome: RungOutcome::Sent,
        answer: String::new(),
    };
    let mut result = RungResult {
        id,
        lease: claim.lease,
        rung: "alimtalk".into(),
        base: claim.text.clone(),
        record: claim.record.clone(),
        added: Some(added.clone()),
        outcome: RungOutcome::Sent,
        retry_at_ms: None,
        next_rung: Some("sms".into()),
    };
    result.record.remember_rung(added.clone());
    let stale_lease = RungResult {
        lease: claim.lease - 1,
        ..result.clone()
    };
    assert_eq!(
        store.finish_rungs(&[stale_lease], now).await.unwrap(),
        [RungWrite::LeaseLost]
    );
    // Written over the record as it is now: the change made meanwhile is kept and the
    // attempt added to it, the next rung queued.
    assert_eq!(
        store.finish_rungs(&[result], now).await.unwrap(),
        [RungWrite::Applied]
    );
    let stored: serde_json::Value =
        serde_json::from_str(&con.get::<_, String>(&key).unwrap()).unwrap();
    assert_eq!(stored["receipt"], json!({"delivered_at": now}));
    assert_eq!(stored["fallback"][0]["outcome"], "sent");
    assert_eq!(store.rung_depth("alimtalk").await.unwrap(), (0, 0));
    assert_eq!(store.rung_depth("sms").await.unwrap(), (1, 0));
    let bit: u8 = con
        .getbit("pg:bit:fallback:alimtalk:sent", id as usize)
        .unwrap();
    assert_eq!(bit, 1);
}
