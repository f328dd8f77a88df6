//! What the console keeps in Redis: sessions and the sign-in throttle's counters.

use super::scripts::scripts;
use super::{Store, StoreError};

impl Store {
    /// Redis answers and accepts a write (for `/readyz`).
    pub async fn write_check(&self) -> Result<(), StoreError> {
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(self.key("ready"))
                    .arg(crate::clock::now_ms())
                    .arg("PX")
                    .arg(60_000),
            )
            .await?;
        Ok(())
    }

    /// Store a session under its token for `idle_ms`.
    pub async fn put_session(
        &self,
        token: &str,
        value: &str,
        idle_ms: u64,
    ) -> Result<(), StoreError> {
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(self.key(&format!("session:{token}")))
                    .arg(value)
                    .arg("PX")
                    .arg(idle_ms),
            )
            .await?;
        Ok(())
    }

    /// Read a session and push its idle expiry out again, in one command.
    pub async fn touch_session(
        &self,
        token: &str,
        idle_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        self.query(
            redis::cmd("GETEX")
                .arg(self.key(&format!("session:{token}")))
                .arg("PX")
                .arg(idle_ms),
        )
        .await
    }

    /// Whether a session is stored, without touching its idle expiry.
    pub async fn session_exists(&self, token: &str) -> Result<bool, StoreError> {
        self.query(redis::cmd("EXISTS").arg(self.key(&format!("session:{token}"))))
            .await
    }

    pub async fn delete_session(&self, token: &str) -> Result<(), StoreError> {
        let _: u64 = self
            .query(redis::cmd("DEL").arg(self.key(&format!("session:{token}"))))
            .await?;
        Ok(())
    }

    /// Admit a sign-in attempt from `addr` as `user` (a name of at most
    /// [`crate::config::MAX_USER_NAME`] bytes), counting it, or say how long to wait.
    pub async fn admit_login(
        &self,
        addr: &str,
        user: &str,
        limits: &LoginLimits,
    ) -> Result<LoginGate, StoreError> {
        let mut invocation = scripts().login_attempt.prepare_invoke();
        invocation
            .arg(self.key(&format!("login:addr:{addr}")))
            .arg(self.key(&format!("login:wait:{addr}")))
            .arg(self.key(&format!("login:pair:{addr}:{user}")))
            .arg(limits.per_user)
            .arg(limits.free_per_addr)
            .arg(limits.window_ms)
            .arg(limits.max_wait_ms);
        let (code, ms): (u8, i64) = self.invoke(&invocation).await?;
        let ms = u64::try_from(ms).unwrap_or(0);
        Ok(match code {
            0 => LoginGate::Admitted,
            1 => LoginGate::AddressWaits(ms),
            _ => LoginGate::UserLocked(ms),
        })
    }

    /// A sign-in succeeded: its attempt no longer counts against the address or the name.
    pub async fn login_succeeded(&self, addr: &str, user: &str) -> Result<(), StoreError> {
        let addr_key = self.key(&format!("login:addr:{addr}"));
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.key(&format!("login:pair:{addr}:{user}")))
            .ignore();
        pipe.cmd("DECR").arg(&addr_key).ignore();
        let _: () = self.query_pipe(&pipe).await?;
        Ok(())
    }

    /// Count a failure for a user name nobody has, from `addr`; the count lives
    /// `window_ms` from the first. Such names are audited as counts, never verbatim.
    pub async fn count_unknown_login(&self, addr: &str, window_ms: u64) -> Result<u64, StoreError> {
        let key = self.key(&format!("login:unknown:{addr}"));
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&key);
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms)
            .arg("NX")
            .ignore();
        let (count,): (u64,) = self.query_pipe(&pipe).await?;
        Ok(count)
    }
}

/// The sign-in throttle's limits (from `[console]`).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Attempts for one user name from one address per window.
    pub per_user: u64,
    /// Attempts from one address per window before each further one waits.
    pub free_per_addr: u64,
    pub window_ms: u64,
    pub max_wait_ms: u64,
}

/// Whether a sign-in attempt may go on to the password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    Admitted,
    /// The address made too many attempts: the next may come in this many ms.
    AddressWaits(u64),
    /// This address failed too often for this user name: locked for this many ms.
    UserLocked(u64),
}
