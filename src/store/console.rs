//! What the console keeps in Redis: sessions and failed sign-in counters.

use super::{Store, StoreError};

impl Store {
    /// Redis answers and accepts a write (for `/readyz`).
    pub async fn write_check(&self) -> Result<(), StoreError> {
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(self.key("ready"))
                    .arg(crate::ingest::now_ms())
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

    pub async fn delete_session(&self, token: &str) -> Result<(), StoreError> {
        let _: u64 = self
            .query(redis::cmd("DEL").arg(self.key(&format!("session:{token}"))))
            .await?;
        Ok(())
    }

    /// Count a failed sign-in for `user`; the count lives `window_secs` from the first.
    /// Returns the count and how long (ms) until it resets.
    pub async fn count_failed_login(
        &self,
        user: &str,
        window_secs: u64,
    ) -> Result<(u64, i64), StoreError> {
        let key = self.key(&format!("loginfail:{user}"));
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&key);
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(window_secs)
            .arg("NX")
            .ignore();
        pipe.cmd("PTTL").arg(&key);
        let (count, ttl): (u64, i64) = self.query_pipe(&pipe).await?;
        Ok((count, ttl))
    }

    pub async fn clear_failed_logins(&self, user: &str) -> Result<(), StoreError> {
        let _: u64 = self
            .query(redis::cmd("DEL").arg(self.key(&format!("loginfail:{user}"))))
            .await?;
        Ok(())
    }
}
