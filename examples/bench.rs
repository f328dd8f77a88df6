//! `make bench`: pushgate measured end to end on this machine.
//!
//! 1. Ingest: frames acked per second (TCP in → route script → group commit into
//!    Redis → ack), with one connection and with eight, no sender running.
//! 2. End to end: pushes per second from the first frame sent until the FCM emulator
//!    has accepted every one (TCP in → Redis → script → sender → emulator → outcome
//!    written), eight connections.
//! 3. `budget`: Redis's CPU per push, the store driven directly.
//! 4. `rss`: pushgate's memory and each process's CPU per push, as separate processes.
//! 5. `log`: the console's log page at 10k, 100k and 1M records, and the old design.
//! 6. `providers`: pushes per second to `sent` and each process's CPU per push with the
//!    app on FCM and on APNs, each through its emulator, back to back (issue 14).
//! 7. `lanes`: urgent ack-to-accepted latency while 1,000,000 bulk pushes drain at the
//!    app's rate cap, and the cap measured at the emulator.
//! 8. `gate`: ingest frames/s with the port's pushes info, ads (the ad gate reading
//!    consents per batch), and ads with receipts posted alongside (issue 15).
//!
//! Unless a part says otherwise, pushgate runs in-process with a managed redis-server
//! (AOF on, `appendfsync everysec`, unix socket in a temp dir) and the shipped
//! `transfer.rhai`; the load runs on its own runtime thread, each connection keeping
//! `WINDOW` frames in flight; the emulator runs in the same process. Everything shares
//! the machine's cores.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use pushgate::app::App;
use pushgate::config::{Config, Provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WINDOW: usize = 512;
const RUN: Duration = Duration::from_secs(8);
const END_TO_END_PUSHES: u64 = 100_000;

fn main() -> anyhow::Result<()> {
    // reqwest (the log pages, the emulator's `/stats`) needs a rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        println!("pushgate benchmark: ndjson port, transfer.rhai, Redis 7 AOF everysec (managed), {WINDOW} frames in flight per connection");
        let only = std::env::args().nth(1).unwrap_or_default();
        if only.is_empty() || only == "ingest" {
            ingest().await?;
        }
        if only.is_empty() || only == "gate" {
            gate().await?;
        }
        if only.is_empty() || only == "end-to-end" {
            end_to_end().await?;
        }
        if only.is_empty() || only == "budget" {
            redis_budget().await?;
        }
        if only.is_empty() || only == "rss" {
            rss().await?;
        }
        if only.is_empty() || only == "log" {
            log_queries().await?;
        }
        if only.is_empty() || only == "providers" {
            providers().await?;
        }
        if only.is_empty() || only == "lanes" {
            lanes().await?;
        }
        Ok(())
    })
}

/// Fill Redis with 10k, 100k and 1M realistic records (through the store's own group
/// commit, bypassing TCP), then time the console's log page at each size: the store
/// query alone and the whole HTTP page (query + render), as the median of 20 runs.
async fn log_queries() -> anyhow::Result<()> {
    use pushgate::push::Status;
    use pushgate::store::NewRecord;
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
        pushgate::clock::now_ms(),
        false,
    )
    .await?;
    let cookie = cookie.split(';').next().unwrap_or("").to_owned();
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.admin_addr);
    let used = |info: std::collections::HashMap<String, String>| {
        info.get("used_memory")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let baseline = used(store.info(&["memory"]).await?);
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
                        received_at_ms: pushgate::clock::now_ms(),
                        fields,
                        status: if n % 10 == 0 { Status::Failed } else { Status::Sent },
                        due_ms: None,
                        // What transfer.rhai decides, so memory per record is realistic.
                        decision: serde_json::from_value(serde_json::json!({"action": "send", "push": {
                            "target": {"token": format!("fcm-token-{:0>140}", n % 50_000)},
                            "title": "이체 완료", "body": format!("{n}원이 입금되었습니다. 잔액을 확인하세요."),
                            "data": {"uniqueKey": format!("L{n}"), "D_servicename": "TRF"},
                            "android": {"priority": "high"}}})).ok(),
                        error: None,
                    }
                })
                .collect();
            store.ingest(&batch).await?;
            stored += batch.len() as u64;
        }
        let load = started.elapsed();
        let per_record = (used(store.info(&["memory"]).await?) - baseline) / stored;
        println!(
            "log at {stored} records (loaded in {:.1} s, {per_record} bytes of Redis per record incl. indexes):",
            load.as_secs_f64()
        );
        let mark = mark_one_sent(&store, stored).await?;
        println!(
            "  {:<28} store {:>6.2} ms   (claim + outcome write, median of 20)",
            "mark one record sent", mark
        );
        let mut figures = serde_json::json!({"records": stored, "bytes_per_record": per_record, "mark_sent_ms": mark});
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
            figures[name] = serde_json::json!({
                "store_ms": store_times[10].as_secs_f64() * 1000.0,
                "page_ms": page_times[10].as_secs_f64() * 1000.0,
            });
        }
        write_json(&format!("log-{stored}"), &figures)?;
        if stored <= 100_000 {
            old_design(&store, stored, &figures).await?;
        }
    }
    app.shutdown().await;
    Ok(())
}

/// Claim one due record and write its outcome, the sender's per-record Redis work.
async fn mark_one_sent(store: &pushgate::store::Store, n: u64) -> anyhow::Result<f64> {
    use pushgate::push::Status;
    use pushgate::store::NewRecord;
    let mut times = Vec::new();
    for i in 0..20 {
        let now = pushgate::clock::now_ms();
        let record = NewRecord {
            unique_key: format!("MARK-{n}-{i}"),
            port: "bench".into(),
            received_at_ms: now,
            fields: serde_json::Map::new(),
            status: Status::Queued,
            due_ms: Some(now),
            decision: None,
            error: None,
        };
        store.ingest(&[record]).await?;
        let t = Instant::now();
        let claimed = store
            .claim("default", pushgate::clock::now_ms(), now + 30_000, 10, None)
            .await?
            .records;
        let outcomes = sent_outcomes(claimed, now);
        anyhow::ensure!(
            store.finish(&outcomes).await?.iter().all(|a| *a),
            "outcome refused"
        );
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[10].as_secs_f64() * 1000.0)
}

/// The layout pushgate replaces, in the same Redis: one list `pushTable` of JSON
/// strings, `keyIndex` uniqueKey → list index; a page loads the whole list, reverses,
/// filters and slices; an update reads the whole list and LSETs one element.
async fn old_design(
    store: &pushgate::store::Store,
    n: u64,
    new: &serde_json::Value,
) -> anyhow::Result<()> {
    let url = store_url(store);
    let client = redis::Client::open(url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let used = |con: &mut redis::aio::MultiplexedConnection| {
        let mut con = con.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut con)
                .await?;
            Ok::<u64, redis::RedisError>(
                info.lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            )
        }
    };
    let _: () = redis::cmd("DEL")
        .arg("old:pushTable")
        .arg("old:keyIndex")
        .query_async(&mut con)
        .await?;
    let before = used(&mut con).await?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let record = serde_json::json!({
                "uniqueKey": format!("L{i}"), "sndn_rsev_hour": "", "csno": format!("{:010}", i % 100_000),
                "device_id": format!("fcm-token-{:0>140}", i % 50_000), "cust_telno": format!("010{:08}", i % 10_000_000),
                "uuid_id": format!("u{i}"), "msg_title": "이체 완료", "msg_contents": format!("{i}원이 입금되었습니다. 잔액을 확인하세요."),
                "D_servicename": "TRF", "push_grp_id": "", "fcm_send_yn": "Y", "fcm_send_time": "20261125093000",
                "result": "{\"name\":\"projects/p/messages/1\"}",
            });
            pipe.cmd("RPUSH")
                .arg("old:pushTable")
                .arg(record.to_string())
                .ignore();
            pipe.cmd("HSET")
                .arg("old:keyIndex")
                .arg(format!("L{i}"))
                .arg(i)
                .ignore();
        }
        let _: () = pipe.query_async(&mut con).await?;
    }
    let per_record = (used(&mut con).await? - before) / n;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    let runs = if n > 10_000 { 5 } else { 20 };
    let (mut page, mut search, mut update) = (Vec::new(), Vec::new(), Vec::new());
    let csno = format!("{:010}", 4242);
    for _ in 0..runs {
        let t = Instant::now();
        let all = old_list(&mut con).await?;
        let rows: Vec<&String> = all.iter().rev().take(100).collect();
        anyhow::ensure!(rows.len() == 100.min(n as usize));
        page.push(t.elapsed());

        let t = Instant::now();
        let all = old_list(&mut con).await?;
        let hits: Vec<serde_json::Value> = all
            .iter()
            .rev()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            .filter(|r| r["csno"] == csno.as_str())
            .take(100)
            .collect();
        anyhow::ensure!(!hits.is_empty() || n < 4243);
        search.push(t.elapsed());

        let t = Instant::now();
        let index: u64 = redis::cmd("HGET")
            .arg("old:keyIndex")
            .arg(format!("L{}", n / 2))
            .query_async(&mut con)
            .await?;
        let all = old_list(&mut con).await?;
        let mut record: serde_json::Value = serde_json::from_str(&all[index as usize])?;
        record["fcm_send_yn"] = "Y".into();
        let _: () = redis::cmd("LSET")
            .arg("old:pushTable")
            .arg(index)
            .arg(record.to_string())
            .query_async(&mut con)
            .await?;
        update.push(t.elapsed());
    }
    let (page, search, update) = (median(page), median(search), median(update));
    let ratio =
        |old: f64, key: &str, field: &str| old / new[key][field].as_f64().unwrap_or(f64::NAN);
    println!("  old single-list design at {n} records ({per_record} bytes of Redis per record):");
    println!(
        "    newest page {page:>9.2} ms ({:.0}x pushgate)   csno search {search:>9.2} ms ({:.0}x)   mark one sent {update:>9.2} ms ({:.0}x)",
        ratio(page, "newest first, page 1", "store_ms"),
        ratio(search, "csno search (indexed)", "store_ms"),
        update / new["mark_sent_ms"].as_f64().unwrap_or(f64::NAN)
    );
    write_json(
        &format!("old-design-{n}"),
        &serde_json::json!({
            "records": n, "bytes_per_record": per_record,
            "newest_page_ms": page, "csno_search_ms": search, "mark_sent_ms": update,
        }),
    )?;
    let _: () = redis::cmd("DEL")
        .arg("old:pushTable")
        .arg("old:keyIndex")
        .query_async(&mut con)
        .await?;
    Ok(())
}

/// The old design's whole list, as every one of its operations reads it.
async fn old_list(con: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Vec<String>> {
    Ok(redis::cmd("LRANGE")
        .arg("old:pushTable")
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await?)
}

fn store_url(store: &pushgate::store::Store) -> String {
    match store.target() {
        pushgate::store::RedisTarget::Direct(url) => url.clone(),
        pushgate::store::RedisTarget::Sentinel { url, .. } => url.clone(),
    }
}

/// `target/bench/{name}.json`, for comparing runs.
fn write_json(name: &str, value: &serde_json::Value) -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(value)?,
    )?;
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
             [[port]]\nname = \"bench\"\naddr = \"127.0.0.1:0\"\nscript = \"transfer.rhai\"\nmax_connections = 64\nmax_connections_per_addr = 64\n{extra}"
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
        let (acked, elapsed, latencies) =
            on_thread(move || load(addr, connections, Limit::Time(RUN), Provider::Fcm))?;
        let rate = acked as f64 / elapsed.as_secs_f64();
        println!(
            "ingest, {connections} connection(s): {acked} frames acked in {:.2} s = {rate:.0} frames/s",
            elapsed.as_secs_f64()
        );
        write_json(
            &format!("ingest-{connections}"),
            &serde_json::json!({
                "connections": connections, "frames": acked, "seconds": elapsed.as_secs_f64(), "frames_per_second": rate,
                "ack_latency": percentiles(latencies),
            }),
        )?;
    }
    app.shutdown().await;
    Ok(())
}

/// Frames per run of the `gate` part (one connection).
const GATE_FRAMES: u64 = 100_000;
/// Runs of each variant in the `gate` part, alternating A, B, C.
const GATE_ROUNDS: usize = 5;
/// Records stored before each `gate` run for receipts to name; two events each, so C's
/// receipts name a key and an event not yet recorded for the first 200,000.
const GATE_RECEIPT_KEYS: u64 = 100_000;
/// C's receipts: at most this many in one request, one request every [`RECEIPT_EVERY`].
const RECEIPT_BATCH: u64 = 1_000;
const RECEIPT_EVERY: Duration = Duration::from_millis(20);
/// Frames acked by every load client so far (C's receipts keep pace with it).
static ACKED_FRAMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The bearer key C's receipts are posted with (scope `receipt`).
const GATE_RECEIPT_KEY: &str = "pgk_bench-receipts";

/// What a `gate` run adds to today's ingest path.
#[derive(Clone, Copy, PartialEq)]
enum GateVariant {
    /// A: the port's pushes are info and there is no `[ads]` (no consent read).
    Info,
    /// B: the port's pushes are ads; every csno has ad and night consent.
    Ad,
    /// C: B, with receipts posted concurrently for stored keys.
    AdReceipts,
}

impl GateVariant {
    fn label(self) -> &'static str {
        match self {
            GateVariant::Info => "A info",
            GateVariant::Ad => "B ad",
            GateVariant::AdReceipts => "C ad + receipts",
        }
    }
}

/// Issue 15: does the ad gate (consents read per ingest batch) or receipts posted during
/// ingest slow ingest? Frames/s of one connection sending [`GATE_FRAMES`] frames, each
/// variant on a fresh pushgate with the same Redis contents (consents for every csno,
/// [`GATE_RECEIPT_KEYS`] stored records); A without `[ads]` and its port's kind info, B
/// and C with `[ads]` and kind ad, C with receipts posted alongside; [`GATE_ROUNDS`]
/// rounds of A, B, C back to back.
async fn gate() -> anyhow::Result<()> {
    let variants = [GateVariant::Info, GateVariant::Ad, GateVariant::AdReceipts];
    // `bench gate B` runs only B (for a profiler); the ratios then are not printed.
    let only: Option<GateVariant> = match std::env::args().nth(2).as_deref() {
        Some("A") => Some(GateVariant::Info),
        Some("B") => Some(GateVariant::Ad),
        Some("C") => Some(GateVariant::AdReceipts),
        _ => None,
    };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut cpus: Vec<Vec<GateCpu>> = vec![Vec::new(); variants.len()];
    let mut receipts_posted = 0u64;
    for round in 0..GATE_ROUNDS {
        for (v, &variant) in variants.iter().enumerate() {
            if only.is_some_and(|o| o != variant) {
                continue;
            }
            let (rate, posted, cpu) = gate_run(variant).await?;
            receipts_posted += posted;
            println!(
                "gate, round {}, {:<16} {rate:>8.0} frames/s, CPU per frame: pushgate {:.1} µs, Redis {:.1} µs (+ AOF rewrite {:.1} µs), load {:.1} + {:.1} µs{}",
                round + 1,
                variant.label(),
                cpu.pushgate_us,
                cpu.redis_us,
                cpu.rewrite_us,
                cpu.load_us,
                cpu.poster_us,
                if posted > 0 {
                    format!(" ({posted} receipts posted during ingest)")
                } else {
                    String::new()
                }
            );
            rates[v].push(rate);
            cpus[v].push(cpu);
        }
    }
    if only.is_some() {
        return Ok(());
    }
    let median = |r: &[f64]| {
        let mut s = r.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let a = median(&rates[0]);
    let mut figures = serde_json::json!({"frames_per_run": GATE_FRAMES, "rounds": GATE_ROUNDS});
    for (v, variant) in variants.iter().enumerate() {
        let m = median(&rates[v]);
        let lo = rates[v].iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates[v].iter().copied().fold(0.0, f64::max);
        let pushgate: Vec<f64> = cpus[v].iter().map(|c| c.pushgate_us).collect();
        let redis: Vec<f64> = cpus[v].iter().map(|c| c.redis_us).collect();
        let (pm, rm) = (median(&pushgate), median(&redis));
        let (pa, ra) = (
            median(&cpus[0].iter().map(|c| c.pushgate_us).collect::<Vec<_>>()),
            median(&cpus[0].iter().map(|c| c.redis_us).collect::<Vec<_>>()),
        );
        println!(
            "gate, {:<16} median {m:>8.0} frames/s (range {lo:.0}–{hi:.0}), {:.3} of A; CPU per frame: pushgate {pm:.1} µs, Redis {rm:.1} µs, together {:.3} of A's",
            variant.label(),
            m / a,
            (pm + rm) / (pa + ra)
        );
        figures[variant.label()] = serde_json::json!({
            "runs": rates[v], "median": m, "min": lo, "max": hi, "ratio_to_a": m / a,
            "pushgate_cpu_us": pushgate, "redis_cpu_us": redis,
            "redis_rewrite_cpu_us": cpus[v].iter().map(|c| c.rewrite_us).collect::<Vec<_>>(),
            "cpu_ratio_to_a": (pm + rm) / (pa + ra),
        });
    }
    figures["receipts_posted"] = receipts_posted.into();
    write_json("gate", &figures)
}

/// CPU time per frame acked in a `gate` run: pushgate's (this process less the load
/// generator's and the receipt poster's threads) and its Redis's: the server's own (the
/// core that caps ingest) and its AOF rewrites' (forked children, on another core).
#[derive(Clone, Copy)]
struct GateCpu {
    pushgate_us: f64,
    redis_us: f64,
    rewrite_us: f64,
    /// The benchmark's own: the frames' load generator, and C's receipt poster.
    load_us: f64,
    poster_us: f64,
}

/// Redis's CPU seconds from `INFO cpu`: its own (user + sys) and its reaped children's
/// (AOF rewrites).
async fn redis_cpu(store: &pushgate::store::Store) -> anyhow::Result<(f64, f64)> {
    let info = store.info(&["cpu"]).await?;
    let sum = |keys: [&str; 2]| -> f64 {
        keys.iter()
            .filter_map(|k| info.get(*k)?.parse::<f64>().ok())
            .sum()
    };
    Ok((
        sum(["used_cpu_sys", "used_cpu_user"]),
        sum(["used_cpu_sys_children", "used_cpu_user_children"]),
    ))
}

/// One `gate` run on a fresh pushgate: frames/s, how many receipts were posted, and CPU
/// per frame.
async fn gate_run(variant: GateVariant) -> anyhow::Result<(f64, u64, GateCpu)> {
    use pushgate::push::{Consent, Grant, Status};
    let dir = tempfile::tempdir()?;
    // A is today's path: no `[ads]`, so no consent is read (pushgate reads them for every
    // batch once `[ads]` is set, whatever the port's kind).
    let (kind, ads) = if variant == GateVariant::Info {
        ("info", "")
    } else {
        (
            "ad",
            "[ads]\nsender = \"푸시은행\"\nopt_out = \"무료수신거부 080-000-0000\"\n\n",
        )
    };
    let extra = format!(
        "kind = \"{kind}\"\n\n{ads}\
         [[api_key]]\nname = \"bank-server\"\nsha256 = \"{}\"\nscopes = [\"receipt\"]\n",
        pushgate::admin::hash_api_key(GATE_RECEIPT_KEY)
    );
    let (app, addr) = start(dir.path(), &extra).await?;
    let store = app.store.clone();
    // Every csno the load sends (`n % 100_000`, ten digits) agreed to ads, also at night.
    let now = pushgate::clock::now_ms();
    let grant = || {
        Some(Grant {
            given: true,
            at_ms: now,
            channel: "app".into(),
        })
    };
    for chunk in (0..100_000u64).collect::<Vec<_>>().chunks(1000) {
        let changes: Vec<(String, Consent)> = chunk
            .iter()
            .map(|n| {
                (
                    format!("{n:010}"),
                    Consent {
                        ad: grant(),
                        night: grant(),
                    },
                )
            })
            .collect();
        store.set_consents(&changes).await?;
    }
    // Records sent earlier, for receipts to name.
    for chunk in (0..GATE_RECEIPT_KEYS).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<pushgate::store::NewRecord> = chunk
            .iter()
            .map(|i| pushgate::store::NewRecord {
                unique_key: format!("R{i}"),
                port: "bench".into(),
                received_at_ms: now,
                fields: serde_json::json!({"uniqueKey": format!("R{i}"), "csno": format!("{:010}", i % 100_000),
                    "device_id": device_token(Provider::Fcm, i % 5000), "msg_title": "이체 완료", "msg_contents": format!("{i}원이 입금되었습니다")})
                    .as_object().cloned().unwrap_or_default(),
                status: Status::Sent,
                due_ms: None,
                decision: None,
                error: None,
            })
            .collect();
        store.ingest(&batch).await?;
    }
    let mut stats_con = redis::Client::open(store_url(&store))?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut stats_con)
        .await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (cpu0, redis0) = (own_cpu_seconds("self"), redis_cpu(&store).await?);
    let poster = if variant == GateVariant::AdReceipts {
        let (admin, stop) = (app.admin_addr, stop.clone());
        Some(std::thread::spawn(move || {
            post_receipts(admin, stop).map(|n| (n, own_cpu_seconds("thread-self")))
        }))
    } else {
        None
    };
    let loaded = on_thread(move || {
        load(addr, 1, Limit::Frames(GATE_FRAMES), Provider::Fcm)
            .map(|l| (l, own_cpu_seconds("thread-self")))
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (posted, poster_cpu) = match poster {
        Some(p) => p
            .join()
            .map_err(|_| anyhow::anyhow!("receipt thread panicked"))??,
        None => (0, 0.0),
    };
    let ((acked, elapsed, _), load_cpu) = loaded?;
    let (cpu1, redis1) = (own_cpu_seconds("self"), redis_cpu(&store).await?);
    if std::env::var_os("GATE_COMMANDS").is_some() {
        for (name, calls, usec) in command_stats(&mut stats_con, GATE_FRAMES)
            .await?
            .iter()
            .take(10)
        {
            println!("  {name:<12} {calls:>8.3} calls, {usec:>6.1} µs per frame");
        }
    }
    let per_frame = |s: f64| s / GATE_FRAMES as f64 * 1e6;
    let cpu = GateCpu {
        pushgate_us: per_frame(cpu1 - cpu0 - load_cpu - poster_cpu),
        redis_us: per_frame(redis1.0 - redis0.0),
        rewrite_us: per_frame(redis1.1 - redis0.1),
        load_us: per_frame(load_cpu),
        poster_us: per_frame(poster_cpu),
    };
    anyhow::ensure!(
        acked == GATE_FRAMES,
        "{acked} of {GATE_FRAMES} frames acked"
    );
    // The frames went the path the variant names: queued, and an ad labelled as one.
    let last = format!("b{}-0-{}", std::process::id(), GATE_FRAMES - 1);
    let id = store
        .id_for_key(&last)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{last} not stored"))?;
    let record = store
        .record(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("record {id} missing"))?;
    anyhow::ensure!(
        record.status == Status::Queued,
        "{last}: {:?}, not queued ({:?})",
        record.status,
        record.error
    );
    let labelled = serde_json::to_string(&record.decision)?.contains(pushgate::ads::AD_LABEL);
    anyhow::ensure!(
        labelled == (variant != GateVariant::Info),
        "{last}: ad label {labelled} on a {kind} port"
    );
    app.shutdown().await;
    Ok((acked as f64 / elapsed.as_secs_f64(), posted, cpu))
}

/// C's receipts, on a thread of their own: one `delivered` receipt per frame acked so
/// far ([`ACKED_FRAMES`]), posted in batches of what is owed (up to [`RECEIPT_BATCH`])
/// every [`RECEIPT_EVERY`] until `stop`, each naming a stored key not yet receipted (see
/// [`GATE_RECEIPT_KEYS`]); every item must be answered ok. Returns how many were posted.
fn post_receipts(
    admin: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<u64> {
    use std::sync::atomic::Ordering::Relaxed;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Each receipt's JSON made before the run, as the frames' generator formats its frames
    // cheaply: what this thread spends during the run is not pushgate's and must stay
    // small (the bank's server that relays receipts runs on another machine).
    let at = pushgate::clock::now_ms();
    let items: Vec<String> = (0..2 * GATE_RECEIPT_KEYS)
        .map(|n| {
            // Past GATE_RECEIPT_KEYS the receipts open what was delivered.
            let event = if n < GATE_RECEIPT_KEYS {
                "delivered"
            } else {
                "opened"
            };
            format!(
                "{{\"uniqueKey\":\"R{}\",\"event\":\"{event}\",\"at\":{at}}}",
                n % GATE_RECEIPT_KEYS
            )
        })
        .collect();
    runtime.block_on(async move {
        let http = reqwest::Client::new();
        let url = format!("http://{admin}/api/v1/receipts");
        let acked_before = ACKED_FRAMES.load(Relaxed);
        let mut posted = 0u64;
        let mut tick = tokio::time::interval(RECEIPT_EVERY);
        let mut body = String::new();
        while !stop.load(Relaxed) {
            tick.tick().await;
            let owed = (ACKED_FRAMES.load(Relaxed) - acked_before).saturating_sub(posted);
            let n = owed.min(RECEIPT_BATCH);
            if n == 0 {
                continue;
            }
            body.clear();
            body.push('[');
            for k in posted..posted + n {
                if k > posted {
                    body.push(',');
                }
                body.push_str(&items[(k % (2 * GATE_RECEIPT_KEYS)) as usize]);
            }
            body.push(']');
            let response = http
                .post(&url)
                .bearer_auth(GATE_RECEIPT_KEY)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "receipts: HTTP {}",
                response.status()
            );
            let text = response.text().await?;
            anyhow::ensure!(
                !text.contains("\"ok\":false") && !text.contains("\"repeated\":true"),
                "a receipt was refused or repeated: {}",
                &text[..text.len().min(300)]
            );
            posted += n;
        }
        Ok(posted)
    })
}

/// Where the time goes: Redis's share. Ingest (the group-commit Lua script) and delivery
/// (claim + outcome write) driven straight through the store, 50,000 records each, and
/// a delivered receipt for each (`receipts.lua`, 200 to a request),
/// with Redis's own CPU time per record from `INFO cpu`.
async fn redis_budget() -> anyhow::Result<()> {
    use pushgate::push::Status;
    use pushgate::store::NewRecord;
    let dir = tempfile::tempdir()?;
    let (app, _) = start(dir.path(), "").await?;
    let store = app.store.clone();
    let cpu = |info: std::collections::HashMap<String, String>| -> f64 {
        ["used_cpu_sys", "used_cpu_user"]
            .iter()
            .filter_map(|k| info.get(*k)?.parse::<f64>().ok())
            .sum()
    };
    let n = 50_000u64;
    let now = pushgate::clock::now_ms();
    let cpu0 = cpu(store.info(&["cpu"]).await?);
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(512) {
        let batch: Vec<NewRecord> = chunk
            .iter()
            .map(|i| NewRecord {
                unique_key: format!("B{i}"),
                port: "bench".into(),
                received_at_ms: now,
                fields: serde_json::json!({"uniqueKey": format!("B{i}"), "csno": format!("{:010}", i % 100_000),
                    "device_id": format!("fcm-token-{:0>140}", i % 50_000), "cust_telno": format!("010{:08}", i),
                    "uuid_id": format!("u{i}"), "msg_title": "이체 완료", "msg_contents": format!("{i}원이 입금되었습니다"),
                    "D_servicename": "TRF"}).as_object().cloned().unwrap_or_default(),
                status: Status::Queued,
                due_ms: Some(now),
                decision: serde_json::from_value(serde_json::json!({"action": "send", "push": {"target": {"token": format!("fcm-token-{:0>140}", i % 50_000)}, "title": "이체 완료"}})).ok(),
                error: None,
            })
            .collect();
        store.ingest(&batch).await?;
    }
    let ingest_wall = started.elapsed().as_secs_f64() / n as f64 * 1e6;
    // One delivered receipt per record, 200 to a request as the receipts API would
    // take them (issue 15's receipts against ingest's cost).
    let receipt_cpu0 = cpu(store.info(&["cpu"]).await?);
    let sources = ["bench".to_owned()];
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let receipts: Vec<pushgate::store::receipts::ReceiptIn> = chunk
            .iter()
            .map(|i| pushgate::store::receipts::ReceiptIn {
                unique_key: format!("B{i}"),
                event: pushgate::push::ReceiptEvent::Delivered,
                at_ms: now,
            })
            .collect();
        let recorded = store.record_receipts(&receipts, &sources, now).await?;
        anyhow::ensure!(
            recorded
                .iter()
                .all(|r| *r == pushgate::store::receipts::Recorded::New),
            "a receipt was not recorded as new"
        );
    }
    let receipt_cpu = (cpu(store.info(&["cpu"]).await?) - receipt_cpu0) / n as f64 * 1e6;
    let cpu1 = cpu(store.info(&["cpu"]).await?);
    let started = Instant::now();
    let mut done = 0u64;
    while done < n {
        let claimed = store
            .claim(
                "default",
                pushgate::clock::now_ms(),
                pushgate::clock::now_ms() + 30_000,
                256,
                None,
            )
            .await?
            .records;
        anyhow::ensure!(!claimed.is_empty(), "nothing left to claim after {done}");
        let outcomes = sent_outcomes(claimed, now);
        done += outcomes.len() as u64;
        store.finish(&outcomes).await?;
    }
    let deliver_wall = started.elapsed().as_secs_f64() / n as f64 * 1e6;
    let cpu2 = cpu(store.info(&["cpu"]).await?);
    let (ingest_cpu, deliver_cpu) = (
        (cpu1 - cpu0) / n as f64 * 1e6,
        (cpu2 - cpu1) / n as f64 * 1e6,
    );
    println!(
        "Redis budget per push: ingest {ingest_cpu:.1} µs of Redis CPU ({ingest_wall:.1} µs wall), claim + outcome {deliver_cpu:.1} µs ({deliver_wall:.1} µs wall); one Redis core caps the whole path near {:.0} pushes/s; a delivered receipt {receipt_cpu:.1} µs",
        1e6 / (ingest_cpu + deliver_cpu)
    );
    app.shutdown().await;
    write_json(
        "redis-budget",
        &serde_json::json!({
            "records": n, "ingest_redis_cpu_us": ingest_cpu, "ingest_wall_us": ingest_wall,
            "deliver_redis_cpu_us": deliver_cpu, "deliver_wall_us": deliver_wall,
            "receipt_redis_cpu_us": receipt_cpu,
            "ceiling_pushes_per_second": 1e6 / (ingest_cpu + deliver_cpu),
        }),
    )
}

/// pushgate, its managed Redis and the FCM emulator each as a process of its own (the
/// release binary; `make bench` builds it), this process only generating load:
/// 100,000 pushes to `sent`, then pushgate's peak RSS and each process's CPU time per
/// push, which shows where the time goes and what 2 cores can do at most.
async fn rss() -> anyhow::Result<()> {
    let Some(bin) = release_binary("pushgate RSS and CPU") else {
        return Ok(());
    };
    let mut run = Separate::start(
        &bin,
        tempfile::tempdir()?,
        Provider::Fcm,
        "",
        &[("bench", "")],
    )
    .await?;
    let pid = run.pushgate_pid();
    let idle = proc_status_kib(&pid, "VmRSS:");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut run.redis)
        .await?;
    let delivered = deliver(&mut run, Provider::Fcm).await?;
    let commands = command_stats(&mut run.redis, END_TO_END_PUSHES).await?;
    let peak = proc_status_kib(&pid, "VmHWM:");
    drop(run);
    let per_push = delivered.cpu_us;
    let total = delivered.total_cpu_us();
    println!(
        "pushgate process RSS: {} MiB idle, peak {} MiB while delivering {END_TO_END_PUSHES} pushes at full rate",
        idle / 1024,
        peak / 1024
    );
    println!(
        "where the CPU goes, per push ({:.0} pushes/s to `sent` over {:.1} s): pushgate {:.1} µs, redis-server {:.1} µs, FCM emulator {:.1} µs, load generator {:.1} µs; total {total:.1} µs = at most {:.0} pushes/s on 2 cores",
        delivered.per_second(),
        delivered.wall,
        per_push[0],
        per_push[1],
        per_push[2],
        per_push[3],
        2e6 / total
    );
    let top: Vec<String> = commands
        .iter()
        .take(8)
        .map(|c| format!("{} {:.2}×/{:.1} µs", c.0, c.1, c.2))
        .collect();
    println!(
        "redis commands per push (calls/µs, scripts' inner commands counted too): {}",
        top.join(", ")
    );
    write_json(
        "rss",
        &serde_json::json!({
            "redis_commands_per_push": commands.iter().map(|c| serde_json::json!({"command": c.0, "calls": c.1, "usec": c.2})).collect::<Vec<_>>(),
            "idle_kib": idle, "peak_kib": peak, "pushes": END_TO_END_PUSHES,
            "pushes_per_second": delivered.per_second(),
            "cpu_us_per_push": delivered.cpu_json(),
            "ceiling_pushes_per_second_on_2_cores": 2e6 / total,
        }),
    )
}

/// How many times the `providers` part runs FCM then APNs.
const PROVIDER_ROUNDS: usize = 2;

/// APNs beside FCM (issue 14): the same 100,000 pushes over 8 connections, `WINDOW` frames
/// in flight each, through the release pushgate to `sent`, once with the app `default`
/// on FCM (the FCM emulator) and once on APNs (the APNs emulator, h2c, Apple's token
/// rules), alternating, `PROVIDER_ROUNDS` times. Each run is a fresh pushgate, Redis and
/// emulator, each a process of its own. Only the device tokens differ (150-character FCM
/// tokens, 64-hex-digit APNs ones); the script is `transfer.rhai` for both.
async fn providers() -> anyhow::Result<()> {
    let Some(bin) = release_binary("providers") else {
        return Ok(());
    };
    let http = reqwest::Client::new();
    let mut runs = Vec::new();
    for round in 1..=PROVIDER_ROUNDS {
        for provider in [Provider::Fcm, Provider::Apns] {
            let mut run =
                Separate::start(&bin, tempfile::tempdir()?, provider, "", &[("bench", "")]).await?;
            let delivered = deliver(&mut run, provider).await?;
            let body = http
                .get(format!("{}/stats", run.emulator_url))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let stats: serde_json::Value = serde_json::from_slice(&body)?;
            drop(run);
            let accepted = stats["accepted"].as_u64().unwrap_or(0);
            anyhow::ensure!(
                accepted == END_TO_END_PUSHES,
                "{} emulator accepted {accepted} of {END_TO_END_PUSHES} (rejected: {})",
                provider.as_str(),
                stats["rejected"]
            );
            // Provider credentials minted in the run: FCM's OAuth tokens, APNs's JWTs.
            let credentials = match provider {
                Provider::Fcm => &stats["tokens_issued"],
                Provider::Apns => &stats["tokens_seen"],
            };
            let cpu = delivered.cpu_us;
            println!(
                "providers, round {round}, {}: {END_TO_END_PUSHES} pushes `sent` in {:.2} s = {:.0} pushes/s; CPU per push: pushgate {:.1} µs, redis-server {:.1} µs, emulator {:.1} µs, load generator {:.1} µs; total {:.1} µs; provider tokens used {credentials}",
                provider.as_str(),
                delivered.wall,
                delivered.per_second(),
                cpu[0],
                cpu[1],
                cpu[2],
                cpu[3],
                delivered.total_cpu_us(),
            );
            runs.push(serde_json::json!({
                "round": round, "provider": provider.as_str(), "pushes": END_TO_END_PUSHES,
                "seconds_to_sent": delivered.wall, "pushes_per_second": delivered.per_second(),
                "cpu_us_per_push": delivered.cpu_json(), "emulator_accepted": accepted,
                "provider_tokens": credentials,
            }));
        }
    }
    write_json("providers", &serde_json::json!({ "runs": runs }))
}

/// One run of `END_TO_END_PUSHES` pushes to `sent` through [`Separate`] processes.
struct Delivered {
    /// Seconds from the first frame written until the last push was `sent`.
    wall: f64,
    /// CPU per push, µs: pushgate, redis-server, the emulator, this process (the load).
    cpu_us: [f64; 4],
}

impl Delivered {
    fn per_second(&self) -> f64 {
        END_TO_END_PUSHES as f64 / self.wall
    }

    fn total_cpu_us(&self) -> f64 {
        self.cpu_us.iter().sum()
    }

    fn cpu_json(&self) -> serde_json::Value {
        let c = self.cpu_us;
        serde_json::json!({
            "pushgate": c[0], "redis": c[1], "emulator": c[2], "load_generator": c[3],
            "total": self.total_cpu_us(),
        })
    }
}

/// Send `END_TO_END_PUSHES` pushes (device tokens of `provider`'s form) over 8 connections
/// to `run`'s first port and wait until Redis counts all of them `sent`, reading each
/// process's CPU time before and after.
async fn deliver(run: &mut Separate, provider: Provider) -> anyhow::Result<Delivered> {
    let port_addr = run.ports[0];
    let pids = [
        run.pushgate_pid(),
        run.redis_pid.clone(),
        run.emulator_pid(),
        "self".to_owned(),
    ];
    let before = pids.clone().map(|p| cpu_seconds(&p));
    let started = Instant::now();
    let per_connection = END_TO_END_PUSHES / 8;
    let load =
        std::thread::spawn(move || load(port_addr, 8, Limit::Frames(per_connection), provider));
    loop {
        let sent: u64 = redis::cmd("BITCOUNT")
            .arg("pushgate:bit:status:sent")
            .query_async(&mut run.redis)
            .await?;
        if sent >= END_TO_END_PUSHES {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the run took over 5 minutes ({sent} sent)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let after = pids.map(|p| cpu_seconds(&p));
    let (acked, _, _) = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    anyhow::ensure!(
        acked == END_TO_END_PUSHES,
        "only {acked} of {END_TO_END_PUSHES} acked"
    );
    let n = END_TO_END_PUSHES as f64;
    Ok(Delivered {
        wall,
        cpu_us: std::array::from_fn(|i| (after[i] - before[i]) * 1e6 / n),
    })
}

/// Bulk pushes queued in the `lanes` part.
const LANES_BULK: u64 = 1_000_000;
/// `[fcm] rate` in the `lanes` part: what this 2-core machine sends with CPU to spare
/// (about half its cores while draining; `docs/BENCHMARKS.md`).
const LANES_RATE: u32 = 5_000;
/// One urgent push this often...
const URGENT_EVERY: Duration = Duration::from_millis(80);
/// ...for this long: 450 samples.
const URGENT_WINDOW: Duration = Duration::from_secs(36);

/// Lanes and the rate cap: the app `default` with `rate = LANES_RATE`, a port `campaign`
/// (lane bulk) and a port `alerts` (lane urgent), pushgate and the emulator as processes of
/// their own. 1,000,000 bulk pushes are queued as fast as ingest takes them; then, while
/// that backlog drains at the cap, one urgent push every 80 ms for 36 s on one persistent
/// connection, each timed from its ack to its acceptance by the emulator (`GET
/// /stats/accepted`). Shows the urgent latency, the sends per second at the emulator
/// (whole window and busiest second) against the rate, and the bulk left when the
/// window ends: the urgent pushes were measured during the drain. It does not wait for
/// the rest of the million (at the rate that takes minutes more).
async fn lanes() -> anyhow::Result<()> {
    let Some(bin) = release_binary("lanes") else {
        return Ok(());
    };
    // Redis's AOF of the million peaks near 1.2 GB on disk (it is rewritten as it grows).
    let fcm = format!("rate = {LANES_RATE}");
    let ports = [
        ("campaign", "lane = \"bulk\""),
        ("alerts", "lane = \"urgent\""),
    ];
    let run = Separate::start(&bin, tempfile::tempdir()?, Provider::Fcm, &fcm, &ports).await?;
    let (campaign, alerts) = (run.ports[0], run.ports[1]);
    let mut con = run.redis.clone();
    let bulk_depth = |mut con: redis::aio::MultiplexedConnection| async move {
        redis::cmd("ZCARD")
            .arg("pushgate:due:default:bulk")
            .query_async::<u64>(&mut con)
            .await
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Accepted::default()));
    let poller = tokio::spawn(poll_accepted(
        run.emulator_url.clone(),
        accepted.clone(),
        stop.clone(),
    ));

    // The backlog, as fast as ingest takes it (8 connections, WINDOW frames in flight each).
    let ingest_from = unix_ms();
    let load =
        std::thread::spawn(move || load(campaign, 8, Limit::Frames(LANES_BULK / 8), Provider::Fcm));
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (queued, ingest_elapsed, _) = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let ingest_to = unix_ms();
    anyhow::ensure!(queued == LANES_BULK, "only {queued} bulk pushes acked");
    let depth_queued = bulk_depth(con.clone()).await?;
    println!(
        "lanes, rate = {LANES_RATE}/s: {queued} bulk pushes queued in {:.1} s ({:.0} frames/s) while sending; {depth_queued} still due",
        ingest_elapsed.as_secs_f64(),
        queued as f64 / ingest_elapsed.as_secs_f64()
    );

    // Urgent pushes while the backlog drains.
    let pids = [
        run.pushgate_pid(),
        run.redis_pid.clone(),
        run.emulator_pid(),
        "self".to_owned(),
    ];
    let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(p)).collect();
    let window_from = unix_ms();
    let urgent = urgent_pushes(alerts, URGENT_EVERY, URGENT_WINDOW).await?;
    let window_to = unix_ms();
    let cpu_used: Vec<f64> = (pids.iter().zip(&cpu_before))
        .map(|(p, before)| (cpu_seconds(p) - before) / ((window_to - window_from) / 1000.0))
        .collect();
    let depth_after = bulk_depth(con.clone()).await?;
    let started = Instant::now();
    loop {
        let missing = {
            let seen = accepted.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            urgent
                .iter()
                .filter(|u| !seen.urgent.contains_key(&u.key))
                .count()
        };
        if missing == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30) && !poller.is_finished(),
            "{missing} urgent pushes not seen accepted 30 s after the window (or the poller stopped)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    poller.await??;
    let seen = std::mem::take(&mut *accepted.lock().map_err(|_| anyhow::anyhow!("lock"))?);
    let remaining = bulk_depth(con.clone()).await?;
    let sent: u64 = redis::cmd("BITCOUNT")
        .arg("pushgate:bit:status:sent")
        .query_async(&mut con)
        .await?;
    drop(run);

    // Ack → accepted, and write → accepted, per urgent push. The emulator's clock reads
    // whole ms; an acceptance in the same ms as the ack counts as 0.
    let after = |from: f64, key: &str| {
        let at = seen.urgent.get(key).copied().unwrap_or_default() as f64;
        Duration::from_secs_f64((at - from).max(0.0) / 1000.0)
    };
    let from_ack = percentiles(urgent.iter().map(|u| after(u.acked_ms, &u.key)).collect());
    let from_write = percentiles(urgent.iter().map(|u| after(u.written_ms, &u.key)).collect());
    let ack = percentiles(
        urgent
            .iter()
            .map(|u| Duration::from_secs_f64((u.acked_ms - u.written_ms).max(0.0) / 1000.0))
            .collect(),
    );
    let ms = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "lanes: {} urgent pushes, one every {} ms for {} s on one connection, while bulk drained from {depth_queued} to {depth_after} due: ack → accepted by the emulator p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (write → accepted p50 {:.1}, p99 {:.1}, max {:.1} ms; write → ack p99 {:.1} ms)",
        urgent.len(),
        URGENT_EVERY.as_millis(),
        URGENT_WINDOW.as_secs(),
        ms(&from_ack, "p50_ms"),
        ms(&from_ack, "p99_ms"),
        ms(&from_ack, "max_ms"),
        ms(&from_write, "p50_ms"),
        ms(&from_write, "p99_ms"),
        ms(&from_write, "max_ms"),
        ms(&ack, "p99_ms"),
    );

    // The cap, at the emulator: every acceptance, over the urgent window, while ingest
    // was queueing the backlog, and over any one second.
    let mut times = seen.times.clone();
    times.sort_unstable();
    let between = |from: f64, to: f64| {
        let lo = times.partition_point(|t| (*t as f64) < from);
        let hi = times.partition_point(|t| (*t as f64) < to);
        &times[lo..hi]
    };
    let per_second = |from: f64, to: f64| between(from, to).len() as f64 / ((to - from) / 1000.0);
    let window_rate = per_second(window_from, window_to);
    let window_busiest = busiest_second(between(window_from, window_to));
    let ingest_rate = per_second(ingest_from, ingest_to);
    let run_busiest = busiest_second(&times);
    let burst = (LANES_RATE / 10).max(2);
    println!(
        "lanes, the cap at the emulator (rate {LANES_RATE}/s, burst {burst}): {window_rate:.0} sends/s over the urgent window, busiest second {window_busiest}; {ingest_rate:.0} sends/s while the backlog was being queued; busiest second of the whole run {run_busiest} (the cap allows rate + burst = {}); {} sends seen in all, {} missed by the poller",
        LANES_RATE + burst,
        times.len(),
        seen.missed
    );
    println!(
        "lanes, CPU during the urgent window (share of one core): pushgate {:.0} %, redis-server {:.0} %, FCM emulator {:.0} %, this benchmark {:.0} %; {:.0} % of the 2 cores in all",
        cpu_used[0] * 100.0,
        cpu_used[1] * 100.0,
        cpu_used[2] * 100.0,
        cpu_used[3] * 100.0,
        cpu_used.iter().sum::<f64>() * 50.0
    );
    println!(
        "lanes: bulk still due when the processes stopped: {remaining} of {LANES_BULK} (another {:.0} s at the rate; not waited for); {sent} records `sent`",
        remaining as f64 / LANES_RATE as f64
    );
    write_json(
        "lanes",
        &serde_json::json!({
            "rate": LANES_RATE, "burst": burst, "bulk_pushes": LANES_BULK,
            "ingest_seconds": ingest_elapsed.as_secs_f64(),
            "bulk_due_after_ingest": depth_queued, "bulk_due_after_window": depth_after,
            "bulk_due_at_stop": remaining, "records_sent_at_stop": sent,
            "urgent_every_ms": URGENT_EVERY.as_millis() as u64, "urgent_window_s": URGENT_WINDOW.as_secs(),
            "urgent_ack_to_accepted": from_ack, "urgent_write_to_accepted": from_write,
            "urgent_write_to_ack": ack,
            "sends_per_second_urgent_window": window_rate, "busiest_second_urgent_window": window_busiest,
            "sends_per_second_while_queueing": ingest_rate, "busiest_second_whole_run": run_busiest,
            "sends_seen": times.len(), "sends_missed_by_poller": seen.missed,
            "cpu_share_of_one_core_urgent_window": {
                "pushgate": cpu_used[0], "redis": cpu_used[1], "emulator": cpu_used[2], "benchmark": cpu_used[3],
            },
        }),
    )
}

/// Now, unix ms with the fraction: comparable with the emulator's acceptance times.
fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Most of `times` (sorted unix ms) in any one second.
fn busiest_second(times: &[i64]) -> usize {
    let mut end = 0;
    let mut most = 0;
    for (i, t) in times.iter().enumerate() {
        while end < times.len() && times[end] < t + 1000 {
            end += 1;
        }
        most = most.max(end - i);
    }
    most
}

/// What the emulator accepted, as `GET /stats/accepted` lists it.
#[derive(Default)]
struct Accepted {
    /// When each send was accepted (unix ms), in the order accepted.
    times: Vec<i64>,
    /// When each urgent push (uniqueKey `u-…`) was accepted.
    urgent: std::collections::HashMap<String, i64>,
    /// Sends the emulator no longer kept when polled: then the cap figures undercount.
    missed: u64,
}

/// Poll the emulator's accepted sends every 200 ms into `into`, from its first send on;
/// after `stop`, once more, then return.
async fn poll_accepted(
    emulator: String,
    into: std::sync::Arc<std::sync::Mutex<Accepted>>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut next = 0u64;
    loop {
        let last = stop.is_cancelled();
        let body = http
            .get(format!("{emulator}/stats/accepted?since={next}"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        let first = page["first"].as_u64().unwrap_or(next);
        {
            let mut seen = into.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            seen.missed += first.saturating_sub(next);
            for send in page["accepted"].as_array().into_iter().flatten() {
                let (key, at) = (
                    send[0].as_str().unwrap_or(""),
                    send[1].as_i64().unwrap_or(0),
                );
                seen.times.push(at);
                if key.starts_with("u-") {
                    seen.urgent.insert(key.to_owned(), at);
                }
            }
        }
        next = page["next"].as_u64().unwrap_or(next);
        if last {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// One urgent push as the benchmark sent it.
struct UrgentPush {
    key: String,
    /// When its frame was written (unix ms).
    written_ms: f64,
    /// When its ok ack arrived (unix ms).
    acked_ms: f64,
}

/// One persistent connection to the urgent port: a push every `every` for `run`, each
/// waiting for its ack before the next.
async fn urgent_pushes(
    addr: SocketAddr,
    every: Duration,
    run: Duration,
) -> anyhow::Result<Vec<UrgentPush>> {
    use tokio::io::AsyncBufReadExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut acks = tokio::io::BufReader::new(rd);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut pushes = Vec::new();
    let mut line = String::new();
    while started.elapsed() < run {
        tick.tick().await;
        let n = pushes.len();
        let key = format!("u-{}-{n}", std::process::id());
        let frame = format!(
            "{{\"uniqueKey\":\"{key}\",\"csno\":\"{:010}\",\"device_id\":\"fcm-token-urgent-{n:0>133}\",\"msg_title\":\"새 기기 로그인\",\"msg_contents\":\"새 기기에서 로그인했습니다. 본인이 아니면 연락하세요.\",\"D_servicename\":\"LOGIN\"}}\n",
            n % 100_000
        );
        let written_ms = unix_ms();
        wr.write_all(frame.as_bytes()).await?;
        line.clear();
        anyhow::ensure!(
            acks.read_line(&mut line).await? > 0,
            "the urgent port closed the connection after {n} pushes"
        );
        let acked_ms = unix_ms();
        anyhow::ensure!(line.contains("\"ok\":true"), "urgent push refused: {line}");
        pushes.push(UrgentPush {
            key,
            written_ms,
            acked_ms,
        });
    }
    Ok(pushes)
}

/// `target/release/pushgate`, or `None` (and a line saying `part` was skipped) when it is
/// not built: `make bench` builds it.
fn release_binary(part: &str) -> Option<std::path::PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pushgate");
    if !bin.exists() {
        println!(
            "{part}: skipped ({} not built; `make bench` builds it)",
            bin.display()
        );
        return None;
    }
    Some(bin)
}

/// pushgate (the release binary, `serve`) and an emulator (`fcm-emulator --device-rate 0`,
/// or `apns-emulator` with Apple's token rules), each a process of its own, with pushgate's
/// managed Redis (AOF on) as its child, the app `default` on that emulator and
/// `transfer.rhai` on every port. Dropping it stops both (SIGTERM, then waits).
struct Separate {
    /// The emulator, then pushgate.
    processes: Processes,
    /// The emulator's `http://ADDR`, for its `/stats`.
    emulator_url: String,
    /// Each port's address, in the order the ports were given.
    ports: Vec<SocketAddr>,
    /// pushgate's managed Redis, over its unix socket.
    redis: redis::aio::MultiplexedConnection,
    redis_pid: String,
    /// The config, the service account or `.p8`, and Redis's data; removed after both
    /// processes stop.
    _dir: tempfile::TempDir,
}

impl Separate {
    /// Start both in `dir`, the app `default` on `provider`'s emulator plus `app_extra` (TOML
    /// lines), and one `[[port]]` per `(name, extra TOML lines)`; wait until the emulator
    /// and every port take connections.
    async fn start(
        bin: &Path,
        dir: tempfile::TempDir,
        provider: Provider,
        app_extra: &str,
        ports: &[(&str, &str)],
    ) -> anyhow::Result<Separate> {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let (admin_addr, emulator_addr) = (free()?, free()?);
        let quiet = std::process::Stdio::null;
        let mut processes = Processes(Vec::new());
        let mut emulator = std::process::Command::new(bin);
        // The app `default`, and the file the emulator writes for it.
        let (app, credentials) = match provider {
            Provider::Fcm => {
                // The loads cycle through a few thousand tokens, far above a device's 240 a
                // minute: measure throughput and pace, not FCM's per-device quota.
                emulator
                    .args(["fcm-emulator", "--listen", &emulator_addr.to_string()])
                    .args(["--device-rate", "0", "--write-service-account", "sa.json"]);
                (
                    format!(
                        "[fcm]\nservice_account = \"sa.json\"\nendpoint = \"http://{emulator_addr}\"\n"
                    ),
                    "sa.json",
                )
            }
            Provider::Apns => {
                // Apple's token window (20 to 60 minutes) is the emulator's default; it has
                // no per-device limit.
                let (key_id, team_id, topic) = ("BENCHKEY01", "BENCHTEAM1", "kr.example.bench");
                emulator
                    .args(["apns-emulator", "--listen", &emulator_addr.to_string()])
                    .args(["--write-key", "AuthKey.p8", "--key-id", key_id])
                    .args(["--team-id", team_id, "--topic", topic]);
                (
                    format!(
                        "[[app]]\nname = \"default\"\nprovider = \"apns\"\nendpoint = \"http://{emulator_addr}\"\n\
                         key_file = \"AuthKey.p8\"\nkey_id = \"{key_id}\"\nteam_id = \"{team_id}\"\ntopic = \"{topic}\"\n"
                    ),
                    "AuthKey.p8",
                )
            }
        };
        let emulator = emulator
            .current_dir(dir.path())
            .stdout(quiet())
            .stderr(quiet())
            .spawn()?;
        processes.0.push(emulator);
        std::fs::write(
            dir.path().join("transfer.rhai"),
            include_str!("../scripts/transfer.rhai"),
        )?;
        let mut config = format!(
            "[redis]\nmanaged = true\ndir = \"redis\"\n[admin]\nlisten = \"{admin_addr}\"\n{app}{app_extra}\n"
        );
        let mut addrs = Vec::new();
        for (name, extra) in ports {
            let addr = free()?;
            config.push_str(&format!(
                "[[port]]\nname = \"{name}\"\naddr = \"{addr}\"\nscript = \"transfer.rhai\"\n{extra}\n"
            ));
            addrs.push(addr);
        }
        let config_path = dir.path().join("pushgate.toml");
        std::fs::write(&config_path, config)?;
        let started = Instant::now();
        while !dir.path().join(credentials).exists()
            || tokio::net::TcpStream::connect(emulator_addr).await.is_err()
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the {} emulator did not start",
                provider.as_str()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pushgate = std::process::Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(quiet())
            .stderr(quiet())
            .spawn()?;
        processes.0.push(pushgate);
        for addr in &addrs {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(60),
                    "pushgate did not open {addr}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let client = redis::Client::open(format!(
            "redis+unix://{}",
            dir.path().join("redis/redis.sock").display()
        ))?;
        // redis-rs gives up on an answer after 500 ms by default; a Redis busy with an AOF
        // rewrite under full load can take longer, which is no reason to end the run.
        let patient = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_connection_timeout(Some(Duration::from_secs(10)));
        let mut redis = client
            .get_multiplexed_async_connection_with_config(&patient)
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await?;
        let redis_pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .map(|p| p.trim().to_owned())
            .ok_or_else(|| anyhow::anyhow!("no process_id in INFO"))?;
        Ok(Separate {
            processes,
            emulator_url: format!("http://{emulator_addr}"),
            ports: addrs,
            redis,
            redis_pid,
            _dir: dir,
        })
    }

    fn pushgate_pid(&self) -> String {
        self.processes.0[1].id().to_string()
    }

    fn emulator_pid(&self) -> String {
        self.processes.0[0].id().to_string()
    }
}

/// Child processes stopped when dropped, the last started first: SIGTERM (pushgate then
/// stops its Redis), then waited for.
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// `INFO commandstats` per push: (command, calls, µs), most time first. Commands that
/// Lua scripts call are counted under their own names as well as in the script's.
async fn command_stats(
    con: &mut redis::aio::MultiplexedConnection,
    pushes: u64,
) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await?;
    let n = pushes as f64;
    let mut stats: Vec<(String, f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| -> Option<f64> {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            Some((name.to_owned(), field("calls")? / n, field("usec")? / n))
        })
        .collect();
    stats.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(stats)
}

/// CPU seconds (user + system, plus reaped children such as Redis's AOF rewrites) a
/// process has used, from `/proc/{pid}/stat` (`self` for this one).
fn cpu_seconds(pid: &str) -> f64 {
    proc_cpu_seconds(pid, 4)
}

/// CPU seconds (user + system) this process's own threads have used, leaving out its
/// reaped children (an earlier run's managed Redis); `thread-self` for the calling thread.
fn own_cpu_seconds(which: &str) -> f64 {
    proc_cpu_seconds(which, 2)
}

/// The first `fields` CPU times of `/proc/{pid}/stat` (utime, stime, cutime, cstime).
fn proc_cpu_seconds(pid: &str, fields: usize) -> f64 {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(fields)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>() as f64 / ticks_per_second)
        })
        .unwrap_or(0.0)
}

/// pushgate with `[fcm]` pointing at an in-process emulator.
async fn start_with_emulator(
    dir: &Path,
) -> anyhow::Result<(App, SocketAddr, pushgate::emulator::Emulator)> {
    let emulator = pushgate::emulator::Emulator::start(emulator_args()).await?;
    let account = dir.join("sa.json");
    std::fs::write(&account, emulator.service_account_json())?;
    let fcm = format!(
        "[fcm]\nservice_account = \"{}\"\nendpoint = \"http://{}\"\n",
        account.display(),
        emulator.addr()
    );
    let (app, addr) = start(dir, &fcm).await?;
    Ok((app, addr, emulator))
}

fn percentiles(mut latencies: Vec<Duration>) -> serde_json::Value {
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    serde_json::json!({"count": latencies.len(), "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

async fn end_to_end() -> anyhow::Result<()> {
    // Ack latency at a fixed offered rate, with the sender delivering meanwhile.
    let dir = tempfile::tempdir()?;
    let (app, addr, emulator) = start_with_emulator(dir.path()).await?;
    let paced = std::thread::spawn(move || paced_load(addr, 8, 5000, Duration::from_secs(10)))
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let fixed = percentiles(paced);
    println!(
        "ack latency at 5,000 frames/s offered (8 connections, 10 s, sender running): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        fixed["p50_ms"].as_f64().unwrap_or(0.0),
        fixed["p99_ms"].as_f64().unwrap_or(0.0),
        fixed["max_ms"].as_f64().unwrap_or(0.0)
    );
    app.shutdown().await;
    emulator.shutdown().await;

    // Saturation: how fast pushes reach `sent`.
    let dir = tempfile::tempdir()?;
    let (app, addr, emulator) = start_with_emulator(dir.path()).await?;
    let store = app.store.clone();
    let started = Instant::now();
    let per_connection = END_TO_END_PUSHES / 8;
    let load =
        std::thread::spawn(move || load(addr, 8, Limit::Frames(per_connection), Provider::Fcm));
    while store.count_bits("status", "sent").await? < END_TO_END_PUSHES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "end-to-end run took over 5 minutes"
        );
    }
    let elapsed = started.elapsed();
    let (acked, ingest_elapsed, saturated) = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let saturated = percentiles(saturated);
    let rate = END_TO_END_PUSHES as f64 / elapsed.as_secs_f64();
    println!(
        "end to end, 8 connections: {acked} frames acked in {:.2} s; all {END_TO_END_PUSHES} `sent` (accepted by the FCM emulator, outcome written) after {:.2} s = {rate:.0} pushes/s; ack latency at saturation p50 {:.1} ms, p99 {:.1} ms",
        ingest_elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        saturated["p50_ms"].as_f64().unwrap_or(0.0),
        saturated["p99_ms"].as_f64().unwrap_or(0.0),
    );
    let accepted = emulator.stats().accepted;
    app.shutdown().await;
    emulator.shutdown().await;
    let peak_rss_kib = peak_rss_kib();
    println!(
        "peak RSS of the whole benchmark process (pushgate + load generator + emulator): {} MiB",
        peak_rss_kib / 1024
    );
    write_json(
        "end-to-end",
        &serde_json::json!({
            "pushes": END_TO_END_PUSHES, "seconds_to_sent": elapsed.as_secs_f64(), "pushes_per_second": rate,
            "emulator_accepted": accepted, "ack_latency_at_5000_per_s": fixed, "ack_latency_at_saturation": saturated,
            "peak_rss_kib_whole_process": peak_rss_kib,
        }),
    )
}

/// VmHWM of this process, KiB.
fn peak_rss_kib() -> u64 {
    proc_status_kib("self", "VmHWM:")
}

/// A `kB` line of `/proc/{pid}/status`, e.g. `VmRSS:`.
fn proc_status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// The outcome the sender would write for claimed records FCM accepted.
fn sent_outcomes(
    claimed: Vec<pushgate::store::delivery::Claimed>,
    now: i64,
) -> Vec<pushgate::store::delivery::Outcome> {
    claimed
        .into_iter()
        .map(|c| {
            let mut record = c.record;
            record.status = pushgate::push::Status::Sent;
            record.fcm_send_yn = "Y".into();
            pushgate::store::delivery::Outcome {
                id: c.id,
                lease: c.lease,
                base: c.text,
                record,
                old_status: pushgate::push::Status::Queued,
                new_status: pushgate::push::Status::Sent,
                retry_at_ms: None,
                delivered: true,
                port: "bench".into(),
                at_ms: now,
                fallback: None,
                watch_receipt: false,
            }
        })
        .collect()
}

/// `connections` clients together offering `rate` frames/s for `run`; each frame's
/// ack latency (acks come back in order per connection).
fn paced_load(
    addr: SocketAddr,
    connections: usize,
    rate: u64,
    run: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for c in 0..connections {
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (mut rd, mut wr) = stream.into_split();
                let per_tick = rate as f64 / connections as f64 / 1000.0; // frames per ms
                let sent_at = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
                let reader = {
                    let sent_at = sent_at.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut buf = vec![0u8; 65536];
                        loop {
                            let n = rd.read(&mut buf).await?;
                            if n == 0 {
                                return anyhow::Ok(latencies);
                            }
                            let now = Instant::now();
                            for _ in buf[..n].iter().filter(|b| **b == b'\n') {
                                if let Some(at) = sent_at.lock().map_err(|_| anyhow::anyhow!("lock"))?.pop_front() {
                                    latencies.push(now - at);
                                }
                            }
                        }
                    })
                };
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                let mut owed = 0.0;
                let mut n = 0u64;
                let pid = std::process::id();
                while started.elapsed() < run {
                    tick.tick().await;
                    owed += per_tick;
                    let mut out = String::new();
                    while owed >= 1.0 {
                        owed -= 1.0;
                        out.push_str(&format!(
                            "{{\"uniqueKey\":\"p{pid}-{c}-{n}\",\"device_id\":\"fcm-token-{n:0>140}\",\"csno\":\"{:010}\",\"msg_title\":\"이체 완료\",\"msg_contents\":\"{n}원이 입금되었습니다\",\"D_servicename\":\"TRF\"}}\n",
                            n % 100_000
                        ));
                        n += 1;
                    }
                    if !out.is_empty() {
                        let now = Instant::now();
                        {
                            let mut q = sent_at.lock().map_err(|_| anyhow::anyhow!("lock"))?;
                            for _ in 0..out.matches('\n').count() {
                                q.push_back(now);
                            }
                        }
                        wr.write_all(out.as_bytes()).await?;
                    }
                }
                // Let the last acks arrive, then close.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !sent_at.lock().map_err(|_| anyhow::anyhow!("lock"))?.is_empty() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                drop(wr);
                reader.await?
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        Ok(all)
    })
}

fn emulator_args() -> pushgate::emulator::EmulatorArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: pushgate::emulator::EmulatorArgs,
    }
    // The load reuses a few thousand tokens far above a device's 240 a minute: measure
    // throughput, not FCM's per-device quota.
    <Cli as clap::Parser>::parse_from([
        "fcm-emulator",
        "--listen",
        "127.0.0.1:0",
        "--device-rate",
        "0",
    ])
    .args
}

fn on_thread<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(work)
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))?
}

/// Device `n`'s token as `provider` issues them: FCM's are 150 characters here (the length
/// of real ones), Apple's 64 hex digits.
fn device_token(provider: Provider, n: u64) -> String {
    match provider {
        Provider::Fcm => format!("fcm-token-{n:0>140}"),
        Provider::Apns => format!("{n:064x}"),
    }
}

/// How long each connection keeps sending.
#[derive(Clone, Copy)]
enum Limit {
    Time(Duration),
    Frames(u64),
}

/// Drive `connections` clients on a separate single-threaded runtime, their frames carrying
/// device tokens of `provider`'s form.
fn load(
    addr: SocketAddr,
    connections: usize,
    limit: Limit,
    provider: Provider,
) -> anyhow::Result<(u64, Duration, Vec<Duration>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..connections {
            tasks.push(tokio::spawn(client(addr, c, started, limit, provider)));
        }
        let mut acked = 0;
        let mut latencies = Vec::new();
        for task in tasks {
            let (n, l) = task.await??;
            acked += n;
            latencies.extend(l);
        }
        Ok((acked, started.elapsed(), latencies))
    })
}

/// One FEP connection: keep WINDOW frames outstanding until the limit; count ok acks
/// and time each from its write to its ack.
async fn client(
    addr: SocketAddr,
    id: usize,
    started: Instant,
    limit: Limit,
    provider: Provider,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let run = std::process::id();
    let frame = |n: u64| {
        format!(
            "{{\"uniqueKey\":\"b{run}-{id}-{n}\",\"csno\":\"{:010}\",\"device_id\":\"{}\",\"cust_telno\":\"010{:08}\",\"uuid_id\":\"u{n}\",\"msg_title\":\"이체 완료\",\"msg_contents\":\"{n}원이 입금되었습니다. 잔액을 확인하세요.\",\"D_servicename\":\"TRF\",\"push_grp_id\":\"\",\"sndn_rsev_hour\":\"\"}}\n",
            n % 100_000,
            device_token(provider, n % 5000),
            n % 10_000_000
        )
    };
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = String::new();
    let mut written_at = std::collections::VecDeque::new();
    let mut latencies = Vec::new();
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
            let now = Instant::now();
            while sent - acked < WINDOW as u64 && sent < cap {
                out.push_str(&frame(sent));
                written_at.push_back(now);
                sent += 1;
            }
            wr.write_all(out.as_bytes()).await?;
        }
        if !sending && acked == sent {
            return Ok((acked, latencies));
        }
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            anyhow::bail!("port closed the connection after {acked} acks");
        }
        let acks = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        ACKED_FRAMES.fetch_add(acks, std::sync::atomic::Ordering::Relaxed);
        if buf[..n].windows(11).any(|w| w == b"\"ok\":false,") {
            anyhow::bail!("error ack: {}", String::from_utf8_lossy(&buf[..n]));
        }
        let now = Instant::now();
        for _ in 0..acks {
            if let Some(at) = written_at.pop_front() {
                latencies.push(now - at);
            }
        }
        acked += acks;
    }
}
