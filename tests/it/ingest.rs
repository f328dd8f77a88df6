//! Frames over real sockets into a real Redis: every framing, dupes, malformed frames.

use std::collections::HashMap;

use pushgate::ingest::charset::Charset;
use pushgate::ingest::fixed::{FieldSpec, encode_fixed};
use pushgate::ingest::frame::Framing;
use serde_json::Value;

use crate::support::*;

const COUNT: usize = 10_000;

/// `id` if the index of `field == value` holds it: the value's zset when two records
/// or more share it, else the `ix:` hash of values held by one record.
const INDEXED_ID: &str = r#"
local p, field, value, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('ZSCORE', p .. 'idx:' .. field .. ':' .. value, id) then return tonumber(id) end
local one = redis.call('HGET', p .. 'ix:' .. field .. ':' .. string.sub(redis.sha1hex(value), 1, 4), value)
if one == id then return tonumber(id) end
return nil
"#;

/// What the client sent in one frame, and the ack it must get.
enum Sent {
    Good(String),
    Repeat(String),
    Bad(&'static str),
}

/// Send COUNT good messages with repeats and malformed frames mixed in, then check
/// every ack, every record, and every index entry.
async fn ten_thousand_over(
    extra: &str,
    telegrams: Telegrams,
    encode: impl Fn(&Value) -> Vec<u8>,
    malformed: &[(&'static str, Vec<u8>)],
) {
    let redis = RedisServer::start();
    let ports = port_block("p", "transfer.rhai", extra);
    let app = TestApp::transferring(&redis, &ports).await;
    let addr = app.port_addr("p").await;

    let mut bytes = Vec::new();
    let mut sent = Vec::new();
    for n in 0..COUNT {
        let key = format!("K{n:08}");
        bytes.extend(telegrams.frame(&encode(&message(&key, n))));
        sent.push(Sent::Good(key.clone()));
        if n.is_multiple_of(97) {
            bytes.extend(telegrams.frame(&encode(&message(&key, n))));
            sent.push(Sent::Repeat(key));
        }
        if n.is_multiple_of(101) {
            let (why, body) = &malformed[n / 101 % malformed.len()];
            bytes.extend(telegrams.frame(body));
            sent.push(Sent::Bad(why));
        }
    }
    let acks = telegrams.exchange(addr, bytes, sent.len()).await;
    assert_eq!(acks.len(), sent.len(), "one ack per frame");

    let mut ids: HashMap<String, u64> = HashMap::new();
    for (ack, sent) in acks.iter().zip(&sent) {
        match sent {
            Sent::Good(key) => {
                assert_eq!(ack["ok"], true, "{ack}");
                assert_eq!(ack["key"], key.as_str());
                assert!(ack.get("dup").is_none(), "{ack}");
                let id: u64 = ack["id"].as_str().unwrap().parse().unwrap();
                assert!(ids.insert(key.clone(), id).is_none());
            }
            Sent::Repeat(key) => {
                assert_eq!(ack["ok"], true, "{ack}");
                assert_eq!(ack["dup"], true, "{ack}");
                let id: u64 = ack["id"].as_str().unwrap().parse().unwrap();
                assert_eq!(Some(&id), ids.get(key), "a repeat names the first record");
            }
            Sent::Bad(why) => {
                assert_eq!(ack["ok"], false, "{ack}");
                let error = ack["error"].as_str().unwrap();
                assert!(error.contains(why), "expected {why:?} in {error:?}");
            }
        }
    }

    let mut con = redis.connection();
    let seq: u64 = redis::cmd("GET").arg("pg:seq").query(&mut con).unwrap();
    assert_eq!(
        seq, COUNT as u64,
        "ids are dense: one per new record, none for repeats"
    );
    let mut pipe = redis::pipe();
    for n in 0..COUNT {
        let key = format!("K{n:08}");
        let id = ids[&key];
        let m = message(&key, n);
        pipe.cmd("GET").arg(format!("pg:rec:{id}"));
        pipe.cmd("HGET").arg("pg:keyIndex").arg(&key);
        for field in ["csno", "device_id", "cust_telno", "uuid_id"] {
            pipe.cmd("EVAL")
                .arg(INDEXED_ID)
                .arg(0)
                .arg("pg:")
                .arg(field)
                .arg(m[field].as_str().unwrap())
                .arg(id);
        }
        pipe.cmd("GETBIT").arg("pg:bit:status:queued").arg(id);
        pipe.cmd("GETBIT").arg("pg:bit:worker:p").arg(id);
        pipe.cmd("GETBIT")
            .arg(format!(
                "pg:bit:D_servicename:{}",
                m["D_servicename"].as_str().unwrap()
            ))
            .arg(id);
        pipe.cmd("ZSCORE").arg("pg:due:default:normal").arg(id);
    }
    let answers: Vec<redis::Value> = pipe.query(&mut con).unwrap();
    for (n, row) in answers.chunks(10).enumerate() {
        let key = format!("K{n:08}");
        let id = ids[&key];
        let rec: String = redis::from_redis_value(row[0].clone()).expect("record stored");
        let rec: Value = pushgate::store::record::decode(&rec).unwrap().to_json();
        assert_eq!(rec["id"], id);
        assert_eq!(rec["uniqueKey"], key.as_str());
        assert_eq!(rec["msg_title"], "이체 완료");
        assert_eq!(rec["status"], "queued");
        assert_eq!(rec["worker"], "p");
        assert_eq!(rec["fcm_send_yn"], "N");
        assert_eq!(rec["decision"]["action"], "send");
        let indexed: u64 = redis::from_redis_value(row[1].clone()).unwrap();
        assert_eq!(indexed, id, "keyIndex of {key}");
        for (i, what) in [
            (2, "csno"),
            (3, "device_id"),
            (4, "cust_telno"),
            (5, "uuid_id"),
        ] {
            if rec[what].as_str().unwrap_or("").is_empty() {
                continue; // not in this port's fixed-width layout
            }
            let found: Option<u64> = redis::from_redis_value(row[i].clone()).unwrap();
            assert_eq!(found, Some(id), "{what} index of {key}");
        }
        for (i, what) in [(6, "status"), (7, "worker"), (8, "D_servicename")] {
            let bit: u8 = redis::from_redis_value(row[i].clone()).unwrap();
            assert_eq!(bit, 1, "{what} bitmap of {key}");
        }
        let due: Option<f64> = redis::from_redis_value(row[9].clone()).unwrap();
        assert!(due.is_some(), "{key} is due");
    }
    app.shutdown().await;
}

fn json_body(m: &Value) -> Vec<u8> {
    m.to_string().into_bytes()
}

fn json_malformed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("not valid JSON", b"{\"uniqueKey\": ".to_vec()),
        ("must be an object", b"[1,2,3]".to_vec()),
        ("uniqueKey is missing", br#"{"csno":"1"}"#.to_vec()),
        ("not valid utf-8", b"{\"uniqueKey\":\"\xff\xfe\"}".to_vec()),
        (
            "reserved",
            br#"{"uniqueKey":"R1","status":"sent"}"#.to_vec(),
        ),
        (
            "sndn_rsev_hour",
            br#"{"uniqueKey":"R2","sndn_rsev_hour":"2025"}"#.to_vec(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ndjson_frames_are_stored_indexed_and_acked() {
    ten_thousand_over(
        "framing = \"ndjson\"",
        Telegrams::ndjson(),
        json_body,
        &json_malformed(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ascii_len_frames_are_stored_indexed_and_acked() {
    let telegrams = Telegrams {
        framing: Framing::AsciiLen { digits: 5 },
        charset: Charset::Utf8,
    };
    let extra = "framing = \"ascii-len\"\nlen_digits = 5\nmax_frame_bytes = 99999";
    ten_thousand_over(extra, telegrams, json_body, &json_malformed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_u32be_frames_are_stored_indexed_and_acked() {
    let telegrams = Telegrams {
        framing: Framing::U32Be,
        charset: Charset::Utf8,
    };
    let mut malformed = json_malformed();
    malformed.push(("not valid JSON", Vec::new()));
    ten_thousand_over("framing = \"u32be\"", telegrams, json_body, &malformed).await;
}

fn fixed_layout() -> Vec<FieldSpec> {
    let spec = |name: &str, len| FieldSpec {
        name: name.into(),
        len,
    };
    vec![
        spec("uniqueKey", 20),
        spec("sndn_rsev_hour", 14),
        spec("csno", 10),
        spec("cust_telno", 13),
        spec("D_servicename", 10),
        spec("push_grp_id", 10),
        spec("device_id", 40),
        spec("msg_title", 40),
        spec("msg_contents", 80),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_euc_kr_fixed_width_telegrams_are_stored_indexed_and_acked() {
    let layout = fixed_layout();
    let telegrams = Telegrams {
        framing: Framing::AsciiLen { digits: 4 },
        charset: Charset::EucKr,
    };
    let extra = format!(
        "framing = \"ascii-len\"\nencoding = \"euc-kr\"\npayload = \"fixed\"\nmax_frame_bytes = 9999\n{FIXED_LAYOUT}"
    );
    let encode = |m: &Value| {
        encode_fixed(&layout, m.as_object().unwrap(), Charset::EucKr).expect("fits the layout")
    };
    let mut short = encode(&message("SHORT", 1));
    short.truncate(100);
    let mut split_korean = encode(&message("SPLIT", 1));
    // msg_title starts at byte 117: a lone lead byte at its end cuts a character in two.
    split_korean[156] = 0xB0;
    let malformed = vec![
        ("the field layout needs 237", short),
        ("msg_title", split_korean),
    ];
    ten_thousand_over(&extra, telegrams, encode, &malformed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_length_header_gets_an_error_ack_after_the_good_frames_and_closes() {
    let redis = RedisServer::start();
    let ports = port_block("p", "transfer.rhai", "framing = \"ascii-len\"");
    let app = TestApp::transferring(&redis, &ports).await;
    let addr = app.port_addr("p").await;
    let telegrams = Telegrams {
        framing: Framing::AsciiLen { digits: 4 },
        charset: Charset::Utf8,
    };
    let mut bytes = telegrams.frame(&json_body(&message("A", 1)));
    bytes.extend(telegrams.frame(&json_body(&message("B", 2))));
    bytes.extend(b"12x4{\"uniqueKey\":\"C\"}");
    let acks = telegrams.exchange(addr, bytes, 10).await;
    assert_eq!(
        acks.len(),
        3,
        "two acks, one error, then the connection closes: {acks:?}"
    );
    assert_eq!(acks[0]["key"], "A");
    assert_eq!(acks[1]["key"], "B");
    assert_eq!(acks[2]["ok"], false);
    assert!(
        acks[2]["error"].as_str().unwrap().contains("length header"),
        "{}",
        acks[2]
    );
    let mut con = redis.connection();
    let stored: u64 = redis::cmd("HLEN")
        .arg("pg:keyIndex")
        .query(&mut con)
        .unwrap();
    assert_eq!(stored, 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_and_closes_the_connection() {
    let redis = RedisServer::start();
    let ports = port_block(
        "p",
        "transfer.rhai",
        "framing = \"u32be\"\nmax_frame_bytes = 1024",
    );
    let app = TestApp::transferring(&redis, &ports).await;
    let addr = app.port_addr("p").await;
    let telegrams = Telegrams {
        framing: Framing::U32Be,
        charset: Charset::Utf8,
    };
    let mut bytes = telegrams.frame(&json_body(&message("A", 1)));
    bytes.extend(5000u32.to_be_bytes());
    let acks = telegrams.exchange(addr, bytes, 10).await;
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_eq!(acks[0]["ok"], true);
    assert!(
        acks[1]["error"]
            .as_str()
            .unwrap()
            .contains("exceeds max_frame_bytes 1024")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_get_an_error_ack() {
    let redis = RedisServer::start();
    let ports = port_block("p", "transfer.rhai", "max_connections = 1");
    let app = TestApp::transferring(&redis, &ports).await;
    let addr = app.port_addr("p").await;
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let sup = app.app().supervisor.clone();
    eventually(
        std::time::Duration::from_secs(5),
        "first connection counted",
        || {
            let sup = sup.clone();
            async move { (sup.port("p").await?.connections == 1).then_some(()) }
        },
    )
    .await;
    let acks = Telegrams::ndjson().exchange(addr, Vec::new(), 1).await;
    assert_eq!(acks.len(), 1);
    assert!(
        acks[0]["error"]
            .as_str()
            .unwrap()
            .contains("max_connections = 1")
    );
    drop(first);
    app.shutdown().await;
}
