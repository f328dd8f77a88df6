//! Route decisions end in the right status and `due` entry; scripts that loop or
//! throw end as `script_error` without stopping the port.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const RULES: &str = r#"
fn route(msg) {
    switch msg.D_servicename {
        "DROP" => drop("test rule"),
        "LATER" => later(send_token(msg.device_id, "t", "b"), now_ms() + 600000),
        "LOOP" => { loop { } },
        "THROW" => throw "refused by rule",
        "TOPIC" => send_topic("news", msg.msg_title, msg.msg_contents),
        _ => send_token(msg.device_id, msg.msg_title, msg.msg_contents),
    }
}
"#;

fn msg(key: &str, service: &str) -> Value {
    json!({"uniqueKey": key, "device_id": "tok-1", "msg_title": "제목", "msg_contents": "본문", "D_servicename": service})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_decision_ends_in_its_status_and_due_entry() {
    let redis = RedisServer::start();
    let app = TestApp::start(
        &redis,
        &port_block("p", "rules.rhai", ""),
        &[("rules.rhai", RULES)],
    )
    .await;
    let addr = app.port_addr("p").await;
    let store = &app.app().store;
    let before = pushgate::clock::now_ms();

    let reserved =
        chrono::Utc::now().with_timezone(&chrono_tz::Asia::Seoul) + chrono::Duration::hours(2);
    let mut later_by_field = msg("reserved", "TRF");
    later_by_field["sndn_rsev_hour"] = reserved.format("%Y%m%d%H%M%S").to_string().into();

    let cases = [
        (msg("send", "TRF"), "queued"),
        (msg("topic", "TOPIC"), "queued"),
        (msg("drop", "DROP"), "dropped"),
        (msg("later", "LATER"), "scheduled"),
        (later_by_field, "scheduled"),
        (msg("throw", "THROW"), "script_error"),
    ];
    for (m, status) in cases {
        let key = m["uniqueKey"].as_str().unwrap().to_owned();
        let ack = send_messages(addr, &[m]).await.remove(0);
        assert_eq!(
            ack["ok"], true,
            "a routed frame is stored whatever the route said: {ack}"
        );
        let id: u64 = ack["id"].as_str().unwrap().parse().unwrap();
        let rec = store.record(id).await.unwrap().expect("stored").to_json();
        assert_eq!(rec["status"], status, "{key}: {rec}");
        assert!(
            store.has_bit("status", status, id).await.unwrap(),
            "{key} status bitmap"
        );
        let due = store.due_at(id).await.unwrap();
        match key.as_str() {
            "send" | "topic" => {
                let due = due.expect("due now");
                assert!(
                    due >= before && due <= pushgate::clock::now_ms(),
                    "{key} due now"
                );
            }
            "later" => assert!(due.expect("due later") >= before + 600_000),
            "reserved" => assert_eq!(
                due,
                Some(reserved.timestamp() * 1000),
                "due at sndn_rsev_hour to the second"
            ),
            _ => assert_eq!(due, None, "{key} must not be due"),
        }
        match key.as_str() {
            "topic" => assert_eq!(rec["decision"]["push"]["target"]["topic"], "news"),
            "send" => assert_eq!(rec["decision"]["push"]["target"]["token"], "tok-1"),
            "drop" => assert_eq!(rec["decision"]["reason"], "test rule"),
            "throw" => {
                let error = rec["error"].as_str().unwrap();
                assert!(error.contains("refused by rule"), "{error}");
                assert!(
                    error.contains("rules.rhai:7:"),
                    "error names the script line: {error}"
                );
            }
            _ => {}
        }
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_ends_as_script_error_within_the_deadline_and_the_port_goes_on() {
    let redis = RedisServer::start();
    let app = TestApp::start(
        &redis,
        &port_block("p", "rules.rhai", ""),
        &[("rules.rhai", RULES)],
    )
    .await;
    let addr = app.port_addr("p").await;
    let store = &app.app().store;

    let started = Instant::now();
    let ack = send_messages(addr, &[msg("loop", "LOOP")]).await.remove(0);
    let took = started.elapsed();
    assert_eq!(ack["ok"], true, "{ack}");
    // The deadline is 100 ms in the test config; allow a wide margin for a busy machine.
    assert!(
        took < Duration::from_secs(5),
        "an endless loop took {took:?}"
    );
    let id: u64 = ack["id"].as_str().unwrap().parse().unwrap();
    let rec = store.record(id).await.unwrap().unwrap().to_json();
    assert_eq!(rec["status"], "script_error");
    assert!(
        rec["error"].as_str().unwrap().contains("deadline")
            || rec["error"].as_str().unwrap().contains("operations"),
        "{rec}"
    );

    // The port still takes frames on a new connection and the old pattern of work.
    let ack = send_messages(addr, &[msg("after-loop", "TRF")])
        .await
        .remove(0);
    assert_eq!(ack["ok"], true);
    let id: u64 = ack["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        store.record(id).await.unwrap().unwrap().to_json()["status"],
        "queued"
    );
    app.shutdown().await;
}
