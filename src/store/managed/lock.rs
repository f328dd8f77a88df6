//! `DIR/pushgate.lock`: one pushgate per managed Redis data dir.
//!
//! An exclusive `flock` on the file, held for as long as pushgate runs that Redis. The
//! kernel drops it when the process dies (kill -9 included), so a crash never leaves a
//! stale lock. The file holds the holder's pid, for the refusal message only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::ManagedError;

/// The held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock on `dir`, or say who holds it.
    pub(super) fn take(dir: &Path) -> Result<DirLock, ManagedError> {
        let path = dir.join("pushgate.lock");
        let failed = |cause| ManagedError::Lock {
            lock: path.clone(),
            cause,
        };
        // No truncate on open: the file may hold the current holder's pid.
        // std opens with O_CLOEXEC, so redis-server does not inherit (and hold) the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) if !text.trim().is_empty() => format!("pid {}", text.trim()),
                    // The holder took the lock but has not written its pid yet.
                    _ => "a process whose pid is not written yet".into(),
                };
                return Err(ManagedError::Locked {
                    dir: dir.to_owned(),
                    lock: path,
                    holder,
                });
            }
            Err(TryLockError::Error(cause)) => return Err(failed(cause)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(failed)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_dir_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::take(dir.path()).expect("first lock");
        let refused = DirLock::take(dir.path()).expect_err("second lock refused");
        let text = refused.to_string();
        assert!(text.contains("pushgate.lock"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        // Another test's thread may fork meanwhile: its child shares the open file (and
        // so the lock) until it execs and close-on-exec drops it, a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(e) = DirLock::take(dir.path()) {
            assert!(
                std::time::Instant::now() < deadline,
                "still locked after the holder was dropped: {e}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
