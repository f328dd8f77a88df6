//! `make bench`: pushgate measured end to end on this machine.
//!
//! 1. Ingest: frames acked per second (TCP in → route script → group commit into
//!    Redis → ack), with one connection and with eight, no sender running.
//! 2. End to end: pushes per second from the first frame sent until the FCM emulator
//!    has accepted every one (TCP in → Redis → script → sender → emulator → outcome
//!    written), eight connections.
//!
//! pushgate runs in-process with a managed redis-server (AOF on, `appendfsync
//! everysec`, unix socket in a temp dir) and the shipped `transfer.rhai`; the load runs
//! on its own runtime thread, each connection keeping `WINDOW` frames in flight; the
//! emulator runs in the same process. Everything shares the machine's cores.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pushgate::app::App;
use pushgate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WINDOW: usize = 512;
const RUN: Duration = Duration::from_secs(8);
const END_TO_END_PUSHES: u64 = 100_000;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        println!("pushgate benchmark: ndjson port, transfer.rhai, Redis 7 AOF everysec (managed), {WINDOW} frames in flight per connection");
        let only = std::env::args().nth(1).unwrap_or_default();
        if only.is_empty() || only == "ingest" {
            ingest().await?;
        }
        if only.is_empty() || only == "end-to-end" {
            end_to_end().await?;
        }
        if only.is_empty() || only == "log" {
            log_queries().await?;
        }
        Ok(())
    })
}

/// Fill Redis with 10k, 100k and 1M realistic records (through the store's own group
/// commit, bypassing TCP), then time the console's log page at each size: the store
/// query alone and the whole HTTP page (query + render), as the median of 20 runs.
async fn log_queries() -> anyhow::Result<()> {
    use pushgate::store::{NewRecord, Status};
    let dir = tempfile::tempdir()?;
    let password = pushgate::admin::hash_password("bench").map_err(anyhow::Error::msg)?;
    let extra =
        format!("[[user]]\nname = \"bench\"\npassword = \"{password}\"\nrole = \"admin\"\n");
    let (app, _) = start(dir.path(), &extra).await?;
    let store = app.store.clone();
    let config = Config::load(&dir.path().join("bench.toml"))?;
    let (_, cookie) = pushgate::admin::auth::start_session(
        &store,
        &config,
        "bench",
        pushgate::config::Role::Admin,
        pushgate::ingest::now_ms(),
    )
    .await?;
    let cookie = cookie.split(';').next().unwrap_or("").to_owned();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.admin_addr);
    let used = |info: Vec<(String, String)>| {
        info.iter()
            .find(|(k, _)| k == "used_memory")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let baseline = used(store.info().await?);
    let mut stored = 0u64;
    for target in [10_000u64, 100_000, 1_000_000] {
        let started = Instant::now();
        while stored < target {
            let batch: Vec<NewRecord> = (stored..(stored + 1000).min(target))
                .map(|n| {
                    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&format!(
                        "{{\"uniqueKey\":\"L{n}\",\"sndn_rsev_hour\":\"\",\"csno\":\"{:010}\",\"device_id\":\"fcm-token-{:0>140}\",\"cust_telno\":\"010{:08}\",\"uuid_id\":\"u{n}\",\"msg_title\":\"{}\",\"msg_contents\":\"{n}원이 입금되었습니다. 잔액을 확인하세요.\",\"D_servicename\":\"TRF\",\"push_grp_id\":\"\"}}",
                        n % 100_000, n % 50_000, n % 10_000_000, if n % 1000 == 0 { "긴급 공지" } else { "이체 완료" }
                    )).unwrap_or_default();
                    NewRecord {
                        unique_key: format!("L{n}"),
                        port: "bench".into(),
                        received_at_ms: pushgate::ingest::now_ms(),
                        fields,
                        status: if n % 10 == 0 { Status::Failed } else { Status::Sent },
                        due_ms: None,
                        decision: None,
                        error: None,
                    }
                })
                .collect();
            store.ingest(&batch).await?;
            stored += batch.len() as u64;
        }
        let load = started.elapsed();
        let per_record = (used(store.info().await?) - baseline) / stored;
        println!(
            "log at {stored} records (loaded in {:.1} s, {per_record} bytes of Redis per record incl. indexes):",
            load.as_secs_f64()
        );
        let csno = format!("{:010}", 4242);
        let queries = [
            ("newest first, page 1", String::new()),
            ("newest first, page 50", "page=50".to_owned()),
            ("oldest first, page 1", "order=oldest".to_owned()),
            ("csno search (indexed)", format!("field=csno&q={csno}")),
            ("status=failed (bitmap)", "status=failed".to_owned()),
            (
                "title substring (bounded)",
                "field=msg_title&q=%EA%B8%B4%EA%B8%89".to_owned(),
            ),
        ];
        for (name, query) in queries {
            let mut q = pushgate::store::log::LogQuery {
                per_page: 100,
                page: 1,
                ..Default::default()
            };
            for (k, v) in form_urlencoded::parse(query.as_bytes()) {
                match &*k {
                    "page" => q.page = v.parse().unwrap_or(1),
                    "order" => q.oldest_first = v == "oldest",
                    "field" => q.field = Some(v.into_owned()),
                    "q" => q.value = v.into_owned(),
                    "status" => q.status = Some(v.into_owned()),
                    _ => {}
                }
            }
            let mut store_times = Vec::new();
            let mut page_times = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                let page = store.log_page(&q).await?;
                store_times.push(t.elapsed());
                anyhow::ensure!(!page.rows.is_empty(), "{name}: no rows");
                let t = Instant::now();
                let response = http
                    .get(format!("{base}/log?{query}"))
                    .header("cookie", &cookie)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "{name}: HTTP {}",
                    response.status()
                );
                let _ = response.bytes().await?;
                page_times.push(t.elapsed());
            }
            store_times.sort();
            page_times.sort();
            println!(
                "  {name:<28} store {:>6.2} ms   whole page {:>6.2} ms   (median of 20)",
                store_times[10].as_secs_f64() * 1000.0,
                page_times[10].as_secs_f64() * 1000.0
            );
        }
    }
    app.shutdown().await;
    Ok(())
}

/// Write the config and script to a fresh temp dir and start pushgate.
async fn start(dir: &Path, extra: &str) -> anyhow::Result<(App, SocketAddr)> {
    std::fs::write(
        dir.join("transfer.rhai"),
        include_str!("../scripts/transfer.rhai"),
    )?;
    let config_path = dir.join("bench.toml");
    std::fs::write(
        &config_path,
        format!(
            "[redis]\nmanaged = true\ndir = \"redis\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[port]]\nname = \"bench\"\naddr = \"127.0.0.1:0\"\nscript = \"transfer.rhai\"\nmax_connections = 64\n{extra}"
        ),
    )?;
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
    Ok((app, addr))
}

async fn ingest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (app, addr) = start(dir.path(), "").await?;
    for connections in [1, 8] {
        let (acked, elapsed) = on_thread(move || load(addr, connections, Limit::Time(RUN)))?;
        println!(
            "ingest, {connections} connection(s): {acked} frames acked in {:.2} s = {:.0} frames/s",
            elapsed.as_secs_f64(),
            acked as f64 / elapsed.as_secs_f64()
        );
    }
    app.shutdown().await;
    Ok(())
}

async fn end_to_end() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emulator = pushgate::emulator::Emulator::start(emulator_args()).await?;
    let account = dir.path().join("sa.json");
    std::fs::write(&account, emulator.service_account_json())?;
    let fcm = format!(
        "[fcm]\nservice_account = \"{}\"\nendpoint = \"http://{}\"\n",
        account.display(),
        emulator.addr()
    );
    let (app, addr) = start(dir.path(), &fcm).await?;
    let started = Instant::now();
    let per_connection = END_TO_END_PUSHES / 8;
    let load = std::thread::spawn(move || load(addr, 8, Limit::Frames(per_connection)));
    while emulator.stats().accepted < END_TO_END_PUSHES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "end-to-end run took over 5 minutes"
        );
    }
    let elapsed = started.elapsed();
    let (acked, ingest_elapsed) = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    println!(
        "end to end, 8 connections: {acked} frames acked in {:.2} s; all {END_TO_END_PUSHES} accepted by the FCM emulator after {:.2} s = {:.0} pushes/s",
        ingest_elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        END_TO_END_PUSHES as f64 / elapsed.as_secs_f64()
    );
    app.shutdown().await;
    emulator.shutdown().await;
    Ok(())
}

fn emulator_args() -> pushgate::emulator::EmulatorArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: pushgate::emulator::EmulatorArgs,
    }
    <Cli as clap::Parser>::parse_from(["fcm-emulator", "--listen", "127.0.0.1:0"]).args
}

fn on_thread(
    work: impl FnOnce() -> anyhow::Result<(u64, Duration)> + Send + 'static,
) -> anyhow::Result<(u64, Duration)> {
    std::thread::spawn(work)
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))?
}

/// How long each connection keeps sending.
#[derive(Clone, Copy)]
enum Limit {
    Time(Duration),
    Frames(u64),
}

/// Drive `connections` clients on a separate single-threaded runtime.
fn load(addr: SocketAddr, connections: usize, limit: Limit) -> anyhow::Result<(u64, Duration)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..connections {
            tasks.push(tokio::spawn(client(addr, c, started, limit)));
        }
        let mut acked = 0;
        for task in tasks {
            acked += task.await??;
        }
        Ok((acked, started.elapsed()))
    })
}

/// One FEP connection: keep WINDOW frames outstanding until the limit, count ok acks.
async fn client(
    addr: SocketAddr,
    id: usize,
    started: Instant,
    limit: Limit,
) -> anyhow::Result<u64> {
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
        let sending = match limit {
            Limit::Time(run) => started.elapsed() < run,
            Limit::Frames(n) => sent < n,
        };
        if sending && sent - acked < WINDOW as u64 {
            out.clear();
            let cap = match limit {
                Limit::Frames(n) => n,
                Limit::Time(_) => u64::MAX,
            };
            while sent - acked < WINDOW as u64 && sent < cap {
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
