//! Redis going away mid-stream: frames get error acks, never a false ok, and ingest
//! resumes by itself when Redis returns.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream_loses_no_acked_frame() {
    let mut redis = RedisServer::start_durable();
    let app = TestApp::transferring(&redis, &port_block("p", "transfer.rhai", "")).await;
    let addr = app.port_addr("p").await;
    let telegrams = Telegrams::ndjson();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();

    // One frame at a time, so each ack says exactly what happened to that frame.
    let mut acked_ok = Vec::new();
    let mut n = 0;
    for _ in 0..200 {
        let (key, ack) = send_frame(&telegrams, &mut rd, &mut wr, n).await;
        assert_eq!(ack["ok"], true, "{ack}");
        acked_ok.push(key);
        n += 1;
    }
    redis.kill();
    for _ in 0..10 {
        let (_, ack) = send_frame(&telegrams, &mut rd, &mut wr, n).await;
        assert_eq!(
            ack["ok"], false,
            "with Redis down every frame gets an error ack: {ack}"
        );
        assert!(
            ack["error"].as_str().unwrap().contains("send again"),
            "{ack}"
        );
        n += 1;
    }
    let view = app.app().supervisor.port("p").await.unwrap();
    assert!(
        view.last_error
            .as_deref()
            .unwrap_or("")
            .contains("send again"),
        "the port shows why frames were refused: {view:?}"
    );
    redis.restart();
    // Ingest resumes on the same connection without anyone restarting the port.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (key, ack) = send_frame(&telegrams, &mut rd, &mut wr, n).await;
        n += 1;
        if ack["ok"] == true {
            acked_ok.push(key);
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not resume: {ack}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..200 {
        let (key, ack) = send_frame(&telegrams, &mut rd, &mut wr, n).await;
        assert_eq!(ack["ok"], true, "{ack}");
        acked_ok.push(key);
        n += 1;
    }
    let mut con = redis.connection();
    for key in &acked_ok {
        let id: Option<u64> = redis::cmd("HGET")
            .arg("pg:keyIndex")
            .arg(key)
            .query(&mut con)
            .unwrap();
        let id = id.unwrap_or_else(|| panic!("{key} was acked ok but is not in Redis"));
        assert!(record(&mut con, id).is_some(), "{key} record");
    }
    app.shutdown().await;
}

async fn send_frame(
    telegrams: &Telegrams,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    n: usize,
) -> (String, serde_json::Value) {
    let key = format!("K{n}");
    wr.write_all(&telegrams.frame_text(&message(&key, n).to_string()))
        .await
        .unwrap();
    let ack = telegrams
        .read_acks(rd, 1)
        .await
        .pop()
        .expect("an ack for every frame");
    (key, ack)
}
