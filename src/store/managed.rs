//! `[redis] managed = true`: pushgate starts its own `redis-server` (AOF on) and
//! restarts it if it dies, so one machine needs nothing else.
//!
//! One Redis per data dir, and none outliving pushgate:
//! - [`lock`]: pushgate holds `DIR/pushgate.lock` while it runs, so a second pushgate on
//!   the same dir is refused instead of starting a second Redis on the same AOF.
//! - [`orphan`]: a `redis-server` left running on DIR by an earlier run (found by the
//!   pid file Redis writes, `DIR/redis.pid`) is shut down cleanly before ours starts; a
//!   Redis on DIR that pushgate did not start is refused.
//! - [`fork`]: every `redis-server` is forked from one long-lived thread with a
//!   parent-death signal, so it gets SIGTERM (and flushes its AOF) when pushgate dies,
//!   kill -9 included.

mod fork;
mod lock;
mod orphan;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::AppendFsync;
use fork::RedisChild;
use lock::DirLock;

/// How long a starting Redis may take to answer PING (AOF loading included).
const READY_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error("creating redis dir {dir}: {cause}")]
    Dir { dir: PathBuf, cause: std::io::Error },
    #[error("starting {bin}: {cause}")]
    Spawn { bin: PathBuf, cause: std::io::Error },
    #[error("managed redis did not answer PING within {0:?} (see {1})")]
    NotReady(Duration, PathBuf),
    #[error(
        "redis dir {dir} is in use by another pushgate ({holder} holds {lock}); \
         stop that one first, or give this one another [redis] dir"
    )]
    Locked {
        dir: PathBuf,
        lock: PathBuf,
        /// "pid N", as the holder wrote it into the lock file.
        holder: String,
    },
    #[error("locking redis dir with {lock}: {cause}")]
    Lock {
        lock: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "a redis-server that pushgate did not start answers on {socket}; stop it first \
         (two servers on one data dir would write the same AOF)"
    )]
    Foreign { socket: PathBuf },
    #[error(
        "redis-server pid {pid}, left running on {dir} by an earlier run, did not exit even after SIGKILL"
    )]
    OrphanStayed { pid: i32, dir: PathBuf },
}

/// A supervised local Redis. Drop does not stop it; call [`ManagedRedis::shutdown`].
pub struct ManagedRedis {
    url: String,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ManagedRedis {
    /// Lock `dir`, stop a Redis an earlier run left on it, start `redis-server` there and
    /// wait until it answers.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        port: Option<u16>,
        appendfsync: AppendFsync,
    ) -> Result<ManagedRedis, ManagedError> {
        std::fs::create_dir_all(dir).map_err(|cause| ManagedError::Dir {
            dir: dir.to_owned(),
            cause,
        })?;
        let dir = std::fs::canonicalize(dir).map_err(|cause| ManagedError::Dir {
            dir: dir.to_owned(),
            cause,
        })?;
        // First the lock: everything below assumes no other pushgate works on this dir.
        let lock = DirLock::take(&dir)?;
        let socket = dir.join("redis.sock");
        let pidfile = dir.join("redis.pid");
        if let Some(pid) = orphan::left_on(&pidfile, &dir) {
            orphan::stop(pid, &dir, &socket).await?;
        }
        if orphan::answers(&socket).await {
            return Err(ManagedError::Foreign { socket });
        }
        let url = match port {
            Some(port) => format!("redis://127.0.0.1:{port}"),
            None => socket_url(&socket),
        };
        let spec = Spec {
            bin: bin.to_owned(),
            dir: dir.clone(),
            socket,
            pidfile,
            port,
            appendfsync,
        };
        let child = spec.spawn().await?;
        // Loading a large AOF takes a while; do not give up on a Redis that is loading.
        wait_ready(&url, READY_LIMIT)
            .await
            .map_err(|_| ManagedError::NotReady(READY_LIMIT, spec.log()))?;
        tracing::info!(dir = %dir.display(), %url, "managed redis is up");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(spec, child, url.clone(), cancel.clone(), lock));
        Ok(ManagedRedis { url, cancel, task })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Ask Redis to shut down cleanly (AOF flushed), then stop supervising it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn socket_url(socket: &Path) -> String {
    format!("redis+unix://{}", socket.display())
}

struct Spec {
    bin: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    /// Where Redis writes its pid, so the next pushgate finds it if this one crashes
    /// and the parent-death signal did not stop it.
    pidfile: PathBuf,
    port: Option<u16>,
    appendfsync: AppendFsync,
}

impl Spec {
    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    async fn spawn(&self) -> Result<RedisChild, ManagedError> {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.unwrap_or(0).to_string())
            .args(["--bind", "127.0.0.1", "--unixsocket"])
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(&self.pidfile)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync.as_str(),
                "--save",
                "",
            ])
            .arg("--logfile")
            .arg(self.log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        fork::spawn(cmd).await.map_err(|cause| ManagedError::Spawn {
            bin: self.bin.clone(),
            cause,
        })
    }
}

async fn wait_ready(url: &str, within: Duration) -> Result<(), redis::RedisError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let attempt = async {
            let client = redis::Client::open(url)?;
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut con).await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Restart Redis with backoff whenever it exits; on cancel, SHUTDOWN it. Holds the dir
/// lock until Redis is down, so the next pushgate never starts beside it.
async fn supervise(
    spec: Spec,
    mut child: RedisChild,
    url: String,
    cancel: CancellationToken,
    _lock: DirLock,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            status = child.0.wait() => {
                tracing::error!(?status, log = %spec.log().display(), "managed redis exited; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                match spec.spawn().await {
                    Ok(new) => {
                        child = new;
                        if wait_ready(&url, READY_LIMIT).await.is_ok() {
                            backoff = Duration::from_millis(200);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "restarting managed redis"),
                }
            }
            _ = cancel.cancelled() => {
                let stop = async {
                    let client = redis::Client::open(url.as_str())?;
                    let mut con = client.get_multiplexed_async_connection().await?;
                    // SHUTDOWN closes the connection instead of answering.
                    let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut con).await;
                    Ok::<_, redis::RedisError>(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), stop).await;
                if tokio::time::timeout(Duration::from_secs(5), child.0.wait()).await.is_err() {
                    let _ = child.0.kill().await;
                }
                return;
            }
        }
    }
}
