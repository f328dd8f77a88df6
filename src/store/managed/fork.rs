//! Every managed `redis-server` is forked with a parent-death signal from one thread
//! that lives as long as the process, so Redis stops when pushgate dies, kill -9 included.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not when the
//! process does. Tokio's blocking-pool threads exit after being idle for a while, and a
//! worker thread turns into one of them after `block_in_place`; a Redis forked on such a
//! thread would get SIGTERM while pushgate still runs. So neither the first start nor the
//! supervisor's restarts fork on an async task's thread: both hand the command to the
//! `redis-forker` thread, which never returns because its sender stays in [`FORKER`].

use std::io;
use std::os::unix::process::CommandExt;
use std::sync::{Mutex, PoisonError, mpsc};

use tokio::process::Child;
use tokio::sync::oneshot;

/// A command for the forker thread, and where to send the child back.
struct Fork {
    command: std::process::Command,
    /// Tokio registers the child with this runtime's SIGCHLD handling and reaper.
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<RedisChild>>,
}

/// The running `redis-server`. Dropped while it still runs (pushgate gave up on it
/// without a SHUTDOWN), it gets SIGTERM rather than tokio's SIGKILL, so Redis still
/// flushes its AOF.
pub(super) struct RedisChild(pub(super) Child);

impl Drop for RedisChild {
    fn drop(&mut self) {
        // `id()` is None once the exit was collected, so a reused pid is never signalled.
        if let Some(pid) = self.0.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: kill(2) on a child of ours that has not been reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// The forker thread's inbox, created with the thread on first use and never dropped,
/// so the thread (and with it every Redis's parent-death link) lasts for the process.
static FORKER: Mutex<Option<mpsc::Sender<Fork>>> = Mutex::new(None);

/// Spawn `command` from the forker thread, set to get SIGTERM when pushgate dies.
pub(super) async fn spawn(mut command: std::process::Command) -> io::Result<RedisChild> {
    die_with_this_process(&mut command);
    let (reply, answer) = oneshot::channel();
    let fork = Fork {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    let gone = || io::Error::other("the redis-forker thread is gone");
    forker()?.send(fork).map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

fn forker() -> io::Result<mpsc::Sender<Fork>> {
    let mut inbox = FORKER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = inbox.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, requests) = mpsc::channel::<Fork>();
    std::thread::Builder::new()
        .name("redis-forker".into())
        .spawn(move || {
            for fork in requests {
                let _runtime = fork.runtime.enter();
                let child = tokio::process::Command::from(fork.command)
                    .spawn()
                    .map(RedisChild);
                // If the start was abandoned meanwhile, the child comes back here and is
                // dropped, which stops it cleanly.
                let _ = fork.reply.send(child);
            }
        })?;
    *inbox = Some(sender.clone());
    Ok(sender)
}

/// Make the child get SIGTERM (Redis then flushes its AOF and exits) when the thread
/// that forks it, and so this process, is gone.
fn die_with_this_process(command: &mut std::process::Command) {
    // Taken before the fork: in the child, getppid() names whoever is its parent by then.
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl and getppid are plain system calls,
    // and the errors are built from raw errno values, without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // pushgate may have died between the fork and the prctl: no signal would come
            // then, and this Redis would run on as an orphan. Do not exec it.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
