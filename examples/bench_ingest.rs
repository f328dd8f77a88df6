//! `make bench`: how many frames per second pushgate acks end to end (TCP in →
//! route script → group commit into Redis → ack), with one connection and with eight.
//!
//! It runs pushgate in-process with a managed redis-server (AOF on, `appendfsync
//! everysec`, unix socket in a temp dir) with the shipped `transfer.rhai`; the load runs on its own
//! runtime thread, each connection keeping `WINDOW` frames in flight.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pushgate::app::App;
use pushgate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WINDOW: usize = 512;
const RUN: Duration = Duration::from_secs(8);

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("transfer.rhai"),
        include_str!("../scripts/transfer.rhai"),
    )?;
    let config_path = dir.path().join("bench.toml");
    // A managed Redis: AOF on, everysec, unix socket in the temp dir.
    std::fs::write(
        &config_path,
        "[redis]\nmanaged = true\ndir = \"redis\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[port]]\nname = \"bench\"\naddr = \"127.0.0.1:0\"\nscript = \"transfer.rhai\"\nmax_connections = 64\n",
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let app = App::start(Config::load(&config_path)?, &config_path).await?;
        let addr = loop {
            if let Some(addr) = app
                .supervisor
                .port("bench")
                .await
                .and_then(|p| p.bound)
                .and_then(|b| b.parse::<SocketAddr>().ok())
            {
                break addr;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!("pushgate ingest benchmark: ndjson, transfer.rhai, Redis 7 AOF everysec, {WINDOW} frames in flight per connection, {RUN:?} per run");
        for connections in [1, 8] {
            let (acked, elapsed) = std::thread::spawn(move || load(addr, connections))
                .join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
            println!(
                "{connections} connection(s): {acked} frames acked in {:.2} s = {:.0} frames/s",
                elapsed.as_secs_f64(),
                acked as f64 / elapsed.as_secs_f64()
            );
        }
        app.shutdown().await;
        anyhow::Ok(())
    })
}

/// Drive `connections` clients for `RUN` on a separate single-threaded runtime.
fn load(addr: SocketAddr, connections: usize) -> anyhow::Result<(u64, Duration)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..connections {
            tasks.push(tokio::spawn(client(addr, c, started + RUN)));
        }
        let mut acked = 0;
        for task in tasks {
            acked += task.await??;
        }
        Ok((acked, started.elapsed()))
    })
}

/// One FEP connection: keep WINDOW frames outstanding until the deadline, count ok acks.
async fn client(addr: SocketAddr, id: usize, until: Instant) -> anyhow::Result<u64> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let run = std::process::id();
    let frame = |n: u64| {
        format!(
            "{{\"uniqueKey\":\"b{run}-{id}-{n}\",\"csno\":\"{:010}\",\"device_id\":\"fcm-token-{:0>140}\",\"cust_telno\":\"010{:08}\",\"uuid_id\":\"u{n}\",\"msg_title\":\"이체 완료\",\"msg_contents\":\"{n}원이 입금되었습니다. 잔액을 확인하세요.\",\"D_servicename\":\"TRF\",\"push_grp_id\":\"\",\"sndn_rsev_hour\":\"\"}}\n",
            n % 100_000,
            n % 5000,
            n % 10_000_000
        )
    };
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = String::new();
    loop {
        let sending = Instant::now() < until;
        if sending && sent - acked < WINDOW as u64 {
            out.clear();
            while sent - acked < WINDOW as u64 {
                out.push_str(&frame(sent));
                sent += 1;
            }
            wr.write_all(out.as_bytes()).await?;
        }
        if !sending && acked == sent {
            return Ok(acked);
        }
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            anyhow::bail!("port closed the connection after {acked} acks");
        }
        let acks = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        if buf[..n].windows(11).any(|w| w == b"\"ok\":false,") {
            anyhow::bail!("error ack: {}", String::from_utf8_lossy(&buf[..n]));
        }
        acked += acks;
    }
}
