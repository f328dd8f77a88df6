//! Whole-record writes made from a record as it was read: a send's outcome, a fallback
//! rung's outcome. Each Lua script writes one only over the exact text it was made from
//! (answering [`CHANGED`] otherwise), so a change another writer made meanwhile (a legal
//! hold, the other sender's attempt) is never lost; this is the one loop that re-reads
//! such records, applies each write's own part to them, and writes again.

use super::{Store, StoreError};
use crate::push::Record;

/// A script's answer per write: written.
pub(super) const APPLIED: i64 = 1;
/// Not written: the record changed since the write's base (its lease still held).
pub(super) const CHANGED: i64 = 2;
/// Rounds of re-reading and writing again before the record is reported still changing.
const MAX_REBASES: usize = 5;

/// A write of a whole record, made from the text it replaces.
pub(super) trait RecordWrite: Clone {
    /// The record's id.
    fn id(&self) -> u64;
    /// This write's own part applied to `current`, the record as stored now (its text
    /// `text` the new base). `None`: a record this node cannot read (a newer version
    /// wrote it); the write then replaces it whole, as it would have without the check.
    fn rebase(&mut self, current: Option<Record>, text: String);
    /// One round trip writing `writes`: per write [`APPLIED`], [`CHANGED`] or anything
    /// else for not written (its lease lost).
    async fn write(store: &Store, writes: &[&Self]) -> Result<Vec<i64>, StoreError>;
}

impl Store {
    /// Write `writes`; those whose record changed are re-read (one `MGET` a round),
    /// rebased and written again, up to [`MAX_REBASES`] rounds. Returns the last answer
    /// per write: [`CHANGED`] only for a record that kept changing; a record gone
    /// meanwhile (retention, a flush) is answered 0, not written.
    pub(super) async fn write_rebasing<W: RecordWrite>(
        &self,
        writes: &[W],
    ) -> Result<Vec<i64>, StoreError> {
        let mut answers = W::write(self, &writes.iter().collect::<Vec<_>>()).await?;
        let mut rebased: Vec<Option<W>> = vec![None; writes.len()];
        for _ in 0..MAX_REBASES {
            let changed: Vec<usize> = (0..writes.len())
                .filter(|&i| answers[i] == CHANGED)
                .collect();
            if changed.is_empty() {
                break;
            }
            let mut get = redis::cmd("MGET");
            for &i in &changed {
                get.arg(self.key(&format!("rec:{}", writes[i].id())));
            }
            let texts: Vec<Option<String>> = self.query(&get).await?;
            let mut again = Vec::with_capacity(changed.len());
            for (i, text) in changed.into_iter().zip(texts) {
                let Some(text) = text else {
                    answers[i] = 0;
                    continue;
                };
                let mut write = rebased[i].take().unwrap_or_else(|| writes[i].clone());
                let current = super::record::decode(&text)
                    .inspect_err(|e| {
                        tracing::warn!(
                            id = write.id(),
                            error = %e,
                            "a record changed into a form this node cannot read; writing over it"
                        )
                    })
                    .ok();
                write.rebase(current, text);
                again.push((i, write));
            }
            let got = W::write(self, &again.iter().map(|(_, w)| w).collect::<Vec<_>>()).await?;
            for ((i, write), answer) in again.into_iter().zip(got) {
                answers[i] = answer;
                rebased[i] = Some(write);
            }
        }
        Ok(answers)
    }
}
