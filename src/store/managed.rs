//! `[redis] managed = true`: pushgate starts its own `redis-server` (AOF on) and
//! restarts it if it dies, so one machine needs nothing else.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::config::AppendFsync;

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
}

/// A supervised local Redis. Drop does not stop it; call [`ManagedRedis::shutdown`].
pub struct ManagedRedis {
    url: String,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ManagedRedis {
    /// Start `redis-server` in `dir` and wait until it answers.
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
        let socket = dir.join("redis.sock");
        let url = match port {
            Some(port) => format!("redis://127.0.0.1:{port}"),
            None => format!("redis+unix://{}", socket.display()),
        };
        let spec = Spec {
            bin: bin.to_owned(),
            dir: dir.clone(),
            socket,
            port,
            appendfsync,
        };
        let child = spec.spawn()?;
        // Loading a large AOF takes a while; do not give up on a Redis that is loading.
        wait_ready(&url, READY_LIMIT)
            .await
            .map_err(|_| ManagedError::NotReady(READY_LIMIT, spec.log()))?;
        tracing::info!(dir = %dir.display(), %url, "managed redis is up");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(spec, child, url.clone(), cancel.clone()));
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

struct Spec {
    bin: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    port: Option<u16>,
    appendfsync: AppendFsync,
}

impl Spec {
    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn spawn(&self) -> Result<Child, ManagedError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.unwrap_or(0).to_string())
            .args(["--bind", "127.0.0.1", "--unixsocket"])
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&self.dir)
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
            .stderr(Stdio::null())
            .kill_on_drop(true);
        cmd.spawn().map_err(|cause| ManagedError::Spawn {
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

/// Restart Redis with backoff whenever it exits; on cancel, SHUTDOWN it.
async fn supervise(spec: Spec, mut child: Child, url: String, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::error!(?status, log = %spec.log().display(), "managed redis exited; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                match spec.spawn() {
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
                if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return;
            }
        }
    }
}
