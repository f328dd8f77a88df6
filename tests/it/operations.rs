//! Operations: the HTTP ingest API, /metrics and /readyz, retention, the demo.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const INGEST_KEY: &str = "pgk_ingest-key";

/// pushgate with port `p` and the ingest key `crm` (its own script, `device_id` required).
async fn start_with_ingest_key(redis: &RedisServer) -> TestApp {
    let key = format!(
        "[[api_key]]\nname = \"crm\"\nsha256 = \"{}\"\nscopes = [\"ingest\"]\nscript = \"send.rhai\"\nrequired = [\"device_id\"]\n",
        pushgate::admin::hash_api_key(INGEST_KEY)
    );
    TestApp::start_with(
        redis,
        &port_block("p", "send.rhai", ""),
        &[("send.rhai", SEND)],
        &key,
    )
    .await
}

async fn post(app: &TestApp, key: Option<&str>, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/api/v1/pushes", app.app().admin_addr))
        .header("content-type", content_type)
        .body(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or(Value::Null),
    )
}

async fn get(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", app.app().admin_addr))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or(Value::Null),
    )
}

fn body(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_stores_routes_and_dedupes_like_a_port() {
    let redis = RedisServer::start();
    let app = start_with_ingest_key(&redis).await;
    let json_type = "application/json";

    // One message.
    let (status, answer) = post(&app, Some(INGEST_KEY), json_type, body(&message("H1", 1))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true);
    let id: u64 = answer["id"].as_str().unwrap().parse().unwrap();
    let record = app.app().store.record(id).await.unwrap().unwrap().to_json();
    assert_eq!(record["status"], "queued", "routed by the key's script");
    assert_eq!(record["worker"], "api-crm");
    let (status, again) = post(&app, Some(INGEST_KEY), json_type, body(&message("H1", 1))).await;
    assert_eq!(
        (status, &again["dup"], &again["id"]),
        (200, &json!(true), &answer["id"]),
        "a repeat is a duplicate"
    );

    // A batch with partial failures: each message gets its own answer, in order.
    let mut missing_token = message("H3", 3);
    missing_token["device_id"] = json!("");
    let batch = json!([message("H2", 2), missing_token, {"csno": "no key"}, "not an object", message("H1", 1)]);
    let (status, answer) = post(&app, Some(INGEST_KEY), json_type, body(&batch)).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["ok"], true);
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .contains("required field \"device_id\"")
    );
    assert_eq!(results[1]["key"], "H3");
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("uniqueKey is missing")
    );
    assert!(
        results[3]["error"]
            .as_str()
            .unwrap()
            .contains("must be a JSON object")
    );
    assert_eq!(results[4]["dup"], true);
    assert_eq!(
        (answer["stored"].as_u64(), answer["refused"].as_u64()),
        (Some(2), Some(3))
    );

    // Look pushes up.
    let (status, found) = get(&app, &format!("/api/v1/pushes/{id}"), TEST_KEY).await;
    assert_eq!((status, &found["uniqueKey"]), (200, &json!("H1")));
    let csno = message("H2", 2)["csno"].as_str().unwrap().to_owned();
    let (status, found) = get(&app, &format!("/api/v1/pushes?csno={csno}"), TEST_KEY).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["total"], 1);
    assert_eq!(found["pushes"][0]["uniqueKey"], "H2");
    let (status, _) = get(&app, "/api/v1/pushes?nonsense=1", TEST_KEY).await;
    assert_eq!(status, 400);
    let (status, _) = get(&app, "/api/v1/pushes/999999", TEST_KEY).await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_refuses_bad_requests_with_precise_statuses() {
    let redis = RedisServer::start();
    let app = start_with_ingest_key(&redis).await;
    let json_type = "application/json";
    let one = body(&message("B1", 1));
    assert_eq!(
        post(&app, None, json_type, one.clone()).await.0,
        401,
        "no key"
    );
    assert_eq!(
        post(&app, Some("pgk_unknown"), json_type, one.clone())
            .await
            .0,
        401,
        "unknown key"
    );
    assert_eq!(
        post(&app, Some(TEST_KEY), json_type, one.clone()).await.0,
        403,
        "key without the ingest scope"
    );
    assert_eq!(
        post(&app, Some(INGEST_KEY), "text/plain", one.clone())
            .await
            .0,
        415,
        "wrong content type"
    );
    let (status, answer) = post(
        &app,
        Some(INGEST_KEY),
        json_type,
        b"{\"uniqueKey\": ".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("not valid JSON"));
    assert_eq!(
        post(&app, Some(INGEST_KEY), json_type, b"42".to_vec())
            .await
            .0,
        400,
        "not an object or array"
    );
    assert_eq!(
        post(&app, Some(INGEST_KEY), json_type, b"[]".to_vec())
            .await
            .0,
        400,
        "empty batch"
    );
    let too_many: Vec<Value> = (0..1001).map(|n| message(&format!("M{n}"), n)).collect();
    assert_eq!(
        post(&app, Some(INGEST_KEY), json_type, body(&json!(too_many)))
            .await
            .0,
        413,
        "over 1,000 messages"
    );
    let huge = format!(
        "{{\"uniqueKey\":\"big\",\"x\":\"{}\"}}",
        "a".repeat(5 * 1024 * 1024)
    );
    assert_eq!(
        post(&app, Some(INGEST_KEY), json_type, huge.into_bytes())
            .await
            .0,
        413,
        "over the body cap"
    );
    let mut reserved = message("B2", 2);
    reserved["status"] = json!("sent");
    let (status, answer) = post(&app, Some(INGEST_KEY), json_type, body(&reserved)).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        app.app().store.record_count().await.unwrap(),
        0,
        "nothing refused was stored"
    );
    app.shutdown().await;
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic_and_readyz_follows_redis() {
    let mut redis = RedisServer::start();
    let app = TestApp::sending(&redis, "mport").await;
    let addr = app.port_addr("mport").await;
    let base = format!("http://{}", app.app().admin_addr);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let scrape = || async {
        let response = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200, "metrics are open by default");
        response.text().await.unwrap()
    };
    let before = scrape().await;
    let telegrams = Telegrams::ndjson();
    let mut bytes = Vec::new();
    for n in 0..20 {
        bytes.extend(telegrams.frame_text(&message(&format!("MX{n}"), n).to_string()));
    }
    bytes.extend(telegrams.frame_text("{\"broken\":"));
    telegrams.exchange(addr, bytes, 21).await;
    let after = scrape().await;

    // Every sample line parses as `name{labels} value`.
    for line in after
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "unparsable sample: {line}");
        assert!(line.starts_with("pushgate_"), "{line}");
    }
    assert!(after.ends_with("# EOF\n"));
    let stored = "pushgate_frames_total{port=\"mport\",result=\"stored\"}";
    assert_eq!(metric(&after, stored) - metric(&before, stored), 20.0);
    let rejected = "pushgate_frames_rejected_total{port=\"mport\",reason=\"json\"}";
    assert_eq!(metric(&after, rejected) - metric(&before, rejected), 1.0);
    let decided = "pushgate_route_decisions_total{port=\"mport\",status=\"queued\"}";
    assert_eq!(metric(&after, decided) - metric(&before, decided), 20.0);
    assert!(metric(&after, "pushgate_queue_due") >= 20.0);
    assert_eq!(
        metric(
            &after,
            "pushgate_port_state{port=\"mport\",state=\"running\"}"
        ),
        1.0
    );
    assert!(after.contains("pushgate_commit_batch_records_bucket"));

    let ready = || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);
    redis.kill();
    eventually(
        Duration::from_secs(15),
        "readyz unready without Redis",
        || async { (ready().await == 503).then_some(()) },
    )
    .await;
    redis.restart();
    eventually(Duration::from_secs(20), "readyz ready again", || async {
        (ready().await == 200).then_some(())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_exactly_the_old_records_and_their_index_entries_keeping_held_ones() {
    use pushgate::push::Status;
    use pushgate::store::NewRecord;
    let redis = RedisServer::start();
    let app = TestApp::sending(&redis, "p").await;
    let store = app.app().store.clone();
    let now = pushgate::clock::now_ms();
    let day = 86_400_000;
    let record = |n: usize, age_days: i64| NewRecord {
        unique_key: format!("R{n}"),
        port: "p".into(),
        received_at_ms: now - age_days * day,
        fields: message(&format!("R{n}"), n).as_object().unwrap().clone(),
        status: if n.is_multiple_of(3) {
            Status::Queued
        } else {
            Status::Dropped
        },
        due_ms: n.is_multiple_of(3).then_some(now),
        decision: None,
        error: None,
    };
    // 1,200 records 40 days old, then 300 from yesterday (ids grow with time).
    let old: Vec<NewRecord> = (0..1200).map(|n| record(n, 40)).collect();
    let young: Vec<NewRecord> = (1200..1500).map(|n| record(n, 1)).collect();
    store.ingest(&old).await.unwrap();
    store.ingest(&young).await.unwrap();
    let held = store.id_for_key("R7").await.unwrap().unwrap();
    let rec = store
        .set_hold(held, true)
        .await
        .unwrap()
        .expect("record exists");
    assert!(rec.legal_hold);

    let pruned = store.prune(now - 30 * day, 100).await.unwrap();
    assert_eq!((pruned.removed, pruned.held), (1199, 1));
    let again = store.prune(now - 30 * day, 100).await.unwrap();
    assert_eq!(again.removed, 0, "a second pass finds nothing");

    let mut con = redis.connection();
    let left: u64 = redis::cmd("HLEN")
        .arg("pg:keyIndex")
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 301);
    for n in [0usize, 500, 1199] {
        assert!(
            store.id_for_key(&format!("R{n}")).await.unwrap().is_none(),
            "R{n} gone"
        );
    }
    assert!(
        store.record(held).await.unwrap().is_some(),
        "held record kept"
    );
    assert!(
        store.id_for_key("R1300").await.unwrap().is_some(),
        "young record kept"
    );

    // Walk every index: no entry may point at a record that is gone.
    let alive = |id: u64| {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("pg:rec:{id}"))
            .query(&mut redis.connection())
            .unwrap();
        exists
    };
    let keys: Vec<String> = redis::cmd("KEYS").arg("pg:idx:*").query(&mut con).unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let ids: Vec<u64> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .unwrap();
        for id in ids {
            assert!(alive(id), "{key} points at removed record {id}");
        }
    }
    let singles: Vec<String> = redis::cmd("KEYS").arg("pg:ix:*").query(&mut con).unwrap();
    assert!(
        !singles.is_empty(),
        "values held by one record are indexed too"
    );
    for key in singles {
        let entries: Vec<(String, u64)> = redis::cmd("HGETALL").arg(&key).query(&mut con).unwrap();
        for (value, id) in entries {
            assert!(alive(id), "{key} {value} points at removed record {id}");
        }
    }
    let bitmaps: Vec<String> = redis::cmd("KEYS").arg("pg:bit:*").query(&mut con).unwrap();
    for key in bitmaps {
        let bytes: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        for (i, byte) in bytes.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    let id = (i * 8 + bit) as u64;
                    assert!(alive(id), "{key} has bit {id} for a removed record");
                }
            }
        }
    }
    let due: Vec<u64> = redis::cmd("ZRANGE")
        .arg("pg:due:default:normal")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert!(
        due.iter().all(|id| alive(*id)),
        "due queue holds no removed record"
    );
    let index: Vec<(String, u64)> = redis::cmd("HGETALL")
        .arg("pg:keyIndex")
        .query(&mut con)
        .unwrap();
    assert!(
        index.iter().all(|(_, id)| alive(*id)),
        "keyIndex holds no removed record"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_and_serves_the_console_with_live_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["demo", "--ephemeral-ports", "--dir"])
        .arg(dir.path())
        .args(["--admin", &admin])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let password = eventually(
        Duration::from_secs(90),
        "the demo prints its console password",
        || {
            let found = rx.try_iter().find_map(|line| {
                line.split("one-time password ")
                    .nth(1)
                    .map(|p| p.trim_end_matches(')').to_owned())
            });
            async move { found }
        },
    )
    .await;
    let mut web = Web::new(admin.parse().unwrap());
    let page = web
        .request(
            "POST",
            "/login",
            &[("user", "admin"), ("password", &password)],
            &[],
        )
        .await;
    assert_eq!(page.status, 303, "the printed password signs in");
    // The demo's own traffic fills the log.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let body = web.get("/log").await.body;
        if body.matches("<td><a href=\"/push/").count() >= 3 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no demo pushes in the log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        rows.contains("원이") || rows.contains("공지사항"),
        "realistic Korean pushes"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exits 0 on SIGTERM");
}
