//! A `redis-server` that an earlier run left on the data dir, and one pushgate did not
//! start at all.
//!
//! An earlier pushgate may have died with its Redis still running: a pushgate from before
//! the parent-death signal, a Redis still flushing after its SIGTERM, or one started by
//! hand with pushgate's arguments. Redis writes its pid to `DIR/redis.pid`; a live
//! `redis-server` under that pid whose working dir is DIR (Redis changes into `--dir`)
//! is that Redis, and is shut down cleanly before ours starts: two servers on one AOF
//! dir corrupt it. A pid file naming a dead process, or any other program, is stale.
//! Anything else answering on `DIR/redis.sock` is refused, not stopped: pushgate did
//! not start it and does not know whose it is.

use std::path::Path;
use std::time::Duration;

use super::ManagedError;

/// How long the orphan gets to exit after SHUTDOWN (it flushes its AOF), and again
/// after SIGTERM, before the next step.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// After SIGKILL only the kernel is left to act.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The pid of the `redis-server` that `pidfile` names, if it still runs on `dir`.
pub(super) fn left_on(pidfile: &Path, dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pidfile).ok()?;
    let pid = match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => pid,
        _ => {
            tracing::warn!(pidfile = %pidfile.display(), "ignoring a redis pid file without a pid");
            return None;
        }
    };
    if is_redis_on(pid, dir) {
        Some(pid)
    } else {
        tracing::info!(pid, pidfile = %pidfile.display(), "ignoring a stale redis pid file (no redis-server on this dir runs under that pid)");
        None
    }
}

/// Shut the orphan down cleanly (SHUTDOWN flushes its AOF), falling back to SIGTERM and,
/// as a last resort, SIGKILL; each step waits a bounded time for it to exit.
pub(super) async fn stop(pid: i32, dir: &Path, socket: &Path) -> Result<(), ManagedError> {
    tracing::warn!(
        pid,
        dir = %dir.display(),
        "a redis-server left by an earlier run still runs on this dir; shutting it down before starting ours"
    );
    let shutdown = async {
        let client = redis::Client::open(super::socket_url(socket))?;
        let mut con = client.get_multiplexed_async_connection().await?;
        // SHUTDOWN closes the connection instead of answering.
        let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut con).await;
        Ok::<_, redis::RedisError>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), shutdown).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(pid, error = %e, "sending SHUTDOWN to the earlier redis-server")
        }
        Err(_) => tracing::warn!(
            pid,
            "sending SHUTDOWN to the earlier redis-server timed out"
        ),
    }
    if exited(pid, dir, EXIT_WAIT).await {
        tracing::info!(
            pid,
            "earlier redis-server shut down cleanly (SHUTDOWN, AOF flushed)"
        );
        return Ok(());
    }
    tracing::warn!(
        pid,
        "earlier redis-server did not exit within {EXIT_WAIT:?} of SHUTDOWN; sending SIGTERM"
    );
    signal(pid, dir, libc::SIGTERM);
    if exited(pid, dir, EXIT_WAIT).await {
        tracing::info!(pid, "earlier redis-server stopped by SIGTERM");
        return Ok(());
    }
    tracing::error!(
        pid,
        "earlier redis-server did not exit within {EXIT_WAIT:?} of SIGTERM; sending SIGKILL (its AOF may miss its last second of writes)"
    );
    signal(pid, dir, libc::SIGKILL);
    if exited(pid, dir, KILL_WAIT).await {
        tracing::warn!(pid, "earlier redis-server killed");
        return Ok(());
    }
    Err(ManagedError::OrphanStayed {
        pid,
        dir: dir.to_owned(),
    })
}

/// Whether anything accepts connections on the unix socket (a stale socket file refuses).
pub(super) async fn answers(socket: &Path) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::UnixStream::connect(socket)
        )
        .await,
        Ok(Ok(_))
    )
}

/// Send `signal` to `pid`, checking first that it is still that Redis (pids are reused).
fn signal(pid: i32, dir: &Path, signal: libc::c_int) {
    if is_redis_on(pid, dir) {
        // SAFETY: kill(2) has no memory effects; the pid was just checked to be the orphan.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

async fn exited(pid: i32, dir: &Path, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while is_redis_on(pid, dir) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Whether `pid` is a running (not zombie) `redis-server` working in `dir`.
fn is_redis_on(pid: i32, dir: &Path) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    let running = std::fs::read_to_string(proc.join("stat"))
        .ok()
        .is_some_and(|stat| running_state(&stat));
    // Redis sets its title ("redis-server unixsocket:…" or "/usr/bin/redis-server
    // 127.0.0.1:6390") over its command line; on Debian its exe is redis-check-rdb.
    let is_redis = std::fs::read(proc.join("cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0 || *b == b' ')
            .next()
            .and_then(|argv0| argv0.rsplit(|b| *b == b'/').next())
            .is_some_and(|name| name.starts_with(b"redis-server"))
    });
    let in_dir = std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd == dir);
    running && is_redis && in_dir
}

/// `/proc/PID/stat` says the process runs (not a zombie waiting to be reaped, not dead).
/// The state follows the command name, which is in parentheses and may hold anything.
fn running_state(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| !matches!(state, "Z" | "X" | "x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_and_dead_processes_are_not_running() {
        assert!(running_state("42 (redis-server) S 1 42 42 0"));
        assert!(running_state("42 (odd ) name) R 1 42 42 0"));
        assert!(!running_state("42 (redis-server) Z 1 42 42 0"));
        assert!(!running_state("42 (redis-server) X 1 42 42 0"));
        assert!(!running_state("garbage"));
    }

    #[test]
    fn a_pid_file_naming_no_redis_on_the_dir_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("redis.pid");
        assert_eq!(left_on(&pidfile, dir.path()), None, "no pid file");
        std::fs::write(&pidfile, "not a pid\n").unwrap();
        assert_eq!(left_on(&pidfile, dir.path()), None, "no pid in it");
        // A live process that is not redis-server: this test.
        std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(left_on(&pidfile, dir.path()), None, "not a redis-server");
        // A process that has exited.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        std::fs::write(&pidfile, format!("{pid}\n")).unwrap();
        assert_eq!(left_on(&pidfile, dir.path()), None, "a dead process");
    }
}
