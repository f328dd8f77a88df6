//! The audit stream (`audit`): who did what in the console and the API, capped near
//! 100,000 entries. A flush keeps it.

use super::{Store, StoreError};

impl Store {
    /// Append to the audit stream (capped near 100,000 entries).
    pub async fn audit(&self, entry: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.key("audit"))
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*");
        for (k, v) in entry {
            cmd.arg(*k).arg(*v);
        }
        let _: String = self.query(&cmd).await?;
        Ok(())
    }

    /// Append several entries to the audit stream in one round trip.
    pub async fn audit_many(&self, entries: &[Vec<(String, String)>]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for entry in entries {
            let cmd = pipe
                .cmd("XADD")
                .arg(self.key("audit"))
                .arg("MAXLEN")
                .arg("~")
                .arg(100_000)
                .arg("*");
            for (k, v) in entry {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
        }
        let _: () = self.query_pipe(&pipe).await?;
        Ok(())
    }

    /// Audit entries newest first, from before `before` (a stream id) if given.
    pub async fn audit_entries(
        &self,
        before: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, Vec<(String, String)>)>, StoreError> {
        let end = before.map_or("+".to_owned(), |b| format!("({b}"));
        let reply: redis::Value = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(self.key("audit"))
                    .arg(end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        let entries: Vec<(String, Vec<(String, String)>)> =
            redis::from_redis_value(reply).map_err(|e| StoreError::Protocol(e.to_string()))?;
        Ok(entries)
    }
}
