//! The push log as the console reads it: pages newest or oldest first, searches on
//! indexed fields, bounded substring search, time ranges, resend, flush, and the
//! audit stream. Every page costs O(log N + page), a bitmap filter at most N/8 bytes.

use crate::push::Record;

use super::scripts::scripts;
use super::{Store, StoreError};
use crate::push::Status;
use crate::push::fields::{BITMAP_FIELDS, SUBSTRING_FIELDS, ZSET_FIELDS};

/// Records scanned at most by one substring search.
pub const SUBSTRING_BUDGET: u64 = 20_000;
/// Ids of one zset index walked at most when a status filter is added to it.
const ZSET_FILTER_BUDGET: u64 = 50_000;

/// The ids received in a time range, and where retention stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub lo: u64,
    pub hi: u64,
    /// The lowest id retention has not looked at (1 when it never ran).
    pub floor: u64,
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Column searched; `None` = all records.
    pub field: Option<String>,
    pub value: String,
    /// Only records in this status.
    pub status: Option<String>,
    /// Only pushes sent through this app.
    pub app: Option<String>,
    /// Only pushes in this lane.
    pub lane: Option<String>,
    /// Only pushes with (or without) a delivery receipt.
    pub receipt: Option<ReceiptFilter>,
    /// Only pushes whose fallback rung stands so, as `{rung}:{outcome}` (`sms:sent`):
    /// the bitmap `bit:fallback:{rung}:{outcome}`. Checked by [`parse_fallback_filter`].
    pub fallback: Option<String>,
    /// Received between these (unix ms, inclusive).
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub oldest_first: bool,
    /// 1-based.
    pub page: u64,
    pub per_page: u64,
}

/// The log filter on delivery receipts. "Sent, no receipt" is `status = sent` with
/// [`ReceiptFilter::None`]: the `sent` bitmap AND NOT `bit:receipt:delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptFilter {
    /// Neither a `delivered` nor an `opened` receipt came.
    None,
    /// The app reported it reached the device (a `delivered` or an `opened` receipt).
    Delivered,
    /// The app reported it opened.
    Opened,
}

impl ReceiptFilter {
    /// `none`, `delivered`, `opened` (the API's and the console's word).
    pub fn parse(text: &str) -> Option<ReceiptFilter> {
        match text {
            "none" => Some(ReceiptFilter::None),
            "delivered" => Some(ReceiptFilter::Delivered),
            "opened" => Some(ReceiptFilter::Opened),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptFilter::None => "none",
            ReceiptFilter::Delivered => "delivered",
            ReceiptFilter::Opened => "opened",
        }
    }
}

/// The bitmaps an id must be set in, and those it must not be set in.
#[derive(Debug, Default)]
struct BitFilters {
    set: Vec<String>,
    unset: Vec<String>,
}

impl BitFilters {
    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }
}

/// A fallback filter `{rung}:{outcome}` (`alimtalk:failed`), if well formed.
pub fn parse_fallback_filter(value: &str) -> Option<(&str, crate::push::RungOutcome)> {
    let (rung, outcome) = value.split_once(':')?;
    crate::push::queue::is_app_name(rung).then_some(())?;
    Some((rung, crate::push::RungOutcome::parse(outcome)?))
}

impl LogQuery {
    /// The bitmap filters asked for besides the searched field, as (field, value):
    /// status, app, lane, fallback, and a receipt that came.
    fn filters(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let receipt = match self.receipt {
            Some(ReceiptFilter::Delivered) => Some("delivered"),
            Some(ReceiptFilter::Opened) => Some("opened"),
            Some(ReceiptFilter::None) | None => None,
        };
        [
            ("status", self.status.as_deref()),
            ("app", self.app.as_deref()),
            ("lane", self.lane.as_deref()),
            ("receipt", receipt),
            ("fallback", self.fallback.as_deref()),
        ]
        .into_iter()
        .filter_map(|(field, value)| Some((field, value?)))
    }

    /// The bitmaps (field, value) a record must not be in: a receipt that never came.
    fn negated(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        (self.receipt == Some(ReceiptFilter::None))
            .then_some(("receipt", "delivered"))
            .into_iter()
    }

    /// Whether `record` passes the filters: what their bitmaps say of it, read from the
    /// record itself (for scans that read records anyway).
    fn admits(&self, record: &Record) -> bool {
        let queue = record.push().map(|p| p.queue());
        let receipt = record.receipt.unwrap_or_default();
        let has = |field: &str, value: &str| match field {
            "status" => record.status.as_str() == value,
            "app" => queue.as_ref().is_some_and(|q| q.app == value),
            "lane" => queue.as_ref().is_some_and(|q| q.lane.as_str() == value),
            "fallback" => parse_fallback_filter(value).is_some_and(|(rung, outcome)| {
                (record.fallback.iter().rev())
                    .find(|a| a.rung == rung)
                    .is_some_and(|a| a.outcome == outcome)
            }),
            _ if value == "opened" => receipt.opened_at.is_some(),
            _ => receipt.reached_device(),
        };
        self.filters().all(|(f, v)| has(f, v)) && !self.negated().any(|(f, v)| has(f, v))
    }
}

/// How many records match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Exact(u64),
    /// A bounded scan stopped before the end: `found` so far among `scanned` records.
    AtLeast {
        found: u64,
        scanned: u64,
    },
}

impl Total {
    pub fn count(self) -> u64 {
        match self {
            Total::Exact(n) | Total::AtLeast { found: n, .. } => n,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogPage {
    pub rows: Vec<Record>,
    pub total: Total,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    Zset,
    Bitmap,
    UniqueKey,
    Substring,
}

fn index_of(field: &str) -> Option<Index> {
    if ZSET_FIELDS.contains(&field) {
        Some(Index::Zset)
    } else if BITMAP_FIELDS.contains(&field) {
        Some(Index::Bitmap)
    } else if field == "uniqueKey" {
        Some(Index::UniqueKey)
    } else if SUBSTRING_FIELDS.contains(&field) {
        Some(Index::Substring)
    } else {
        None
    }
}

/// The fields the log can be searched by, in the order the console lists them.
pub fn searchable_fields() -> Vec<&'static str> {
    let mut fields = vec!["uniqueKey"];
    fields.extend_from_slice(ZSET_FIELDS);
    fields.extend(BITMAP_FIELDS.iter().filter(|f| **f != "status"));
    fields.extend_from_slice(SUBSTRING_FIELDS);
    fields
}

impl Store {
    /// One page of the log.
    pub async fn log_page(&self, q: &LogQuery) -> Result<LogPage, StoreError> {
        let per_page = q.per_page.clamp(1, 1000);
        let offset = q.page.max(1).saturating_sub(1).saturating_mul(per_page);
        let Window { lo, hi, floor } = self.id_window(q.from_ms, q.to_ms).await?;
        if lo > hi {
            return Ok(LogPage {
                rows: Vec::new(),
                total: Total::Exact(0),
            });
        }
        let value = q.value.trim();
        let field = q.field.as_deref().filter(|_| !value.is_empty());
        let filters = BitFilters {
            set: q
                .filters()
                .map(|(f, v)| self.key(&format!("bit:{f}:{v}")))
                .collect(),
            unset: q
                .negated()
                .map(|(f, v)| self.key(&format!("bit:{f}:{v}")))
                .collect(),
        };
        let (ids, total) = match field.map(|f| (f, index_of(f))) {
            None if filters.is_empty() => {
                // The plain listing starts where retention stopped; records kept by
                // legal hold below that are found by searching.
                let lo = lo.max(floor);
                if lo > hi {
                    return Ok(LogPage {
                        rows: Vec::new(),
                        total: Total::Exact(0),
                    });
                }
                let total = hi - lo + 1;
                (
                    window_page(lo, hi, q.oldest_first, offset, per_page),
                    Total::Exact(total),
                )
            }
            None => {
                // Only a NOT filter: every listed id is its base, as in the plain listing.
                let lo = if filters.set.is_empty() {
                    lo.max(floor)
                } else {
                    lo
                };
                self.bit_page(&filters.set, &filters.unset, lo, hi, q, offset, per_page)
                    .await?
            }
            Some((f, Some(Index::Bitmap))) => {
                let mut keys = vec![self.key(&format!("bit:{f}:{value}"))];
                keys.extend(filters.set.iter().cloned());
                let not_admitted = super::bitmaps::is_message_bitmap_field(f)
                    && !self.has_bitmap(f, value).await?;
                let found = if not_admitted {
                    let zkey = self.key(&format!("idx:{f}:{value}"));
                    let found = self
                        .zset_page(&zkey, &filters, lo, hi, q, offset, per_page)
                        .await?;
                    // Earned its bitmap meanwhile: the ids moved there.
                    let moved = found.0.is_empty() && self.has_bitmap(f, value).await?;
                    (!moved).then_some(found)
                } else {
                    None
                };
                match found {
                    Some(found) => found,
                    None => {
                        self.bit_page(&keys, &filters.unset, lo, hi, q, offset, per_page)
                            .await?
                    }
                }
            }
            Some((f, Some(Index::Zset))) => {
                let zkey = self.key(&format!("idx:{f}:{value}"));
                self.zset_page(&zkey, &filters, lo, hi, q, offset, per_page)
                    .await?
            }
            Some((_, Some(Index::UniqueKey))) => {
                let id = self.id_for_key(value).await?;
                let mut ids: Vec<u64> = id.into_iter().filter(|i| (lo..=hi).contains(i)).collect();
                if let Some(&id) = ids.first()
                    && !self.bits_at(&filters, id).await?
                {
                    ids.clear();
                }
                let total = Total::Exact(ids.len() as u64);
                (if offset == 0 { ids } else { Vec::new() }, total)
            }
            Some((f, Some(Index::Substring))) => {
                return self
                    .substring_page(f, value, lo, hi, q, offset, per_page)
                    .await;
            }
            Some((f, None)) => {
                return Err(StoreError::Protocol(format!(
                    "{f} is not a searchable field"
                )));
            }
        };
        Ok(LogPage {
            rows: self.records(&ids).await?,
            total,
        })
    }

    pub(super) async fn bit_at(&self, key: &str, id: u64) -> Result<bool, StoreError> {
        let bit: u8 = self.query(redis::cmd("GETBIT").arg(key).arg(id)).await?;
        Ok(bit == 1)
    }

    /// Whether `id` is set in every bitmap of `filters.set` and in none of `filters.unset`.
    async fn bits_at(&self, filters: &BitFilters, id: u64) -> Result<bool, StoreError> {
        for key in &filters.set {
            if !self.bit_at(key, id).await? {
                return Ok(false);
            }
        }
        for key in &filters.unset {
            if self.bit_at(key, id).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The first and last id received within the range (binary search over ids,
    /// which grow with arrival time): O(log N) reads in one round trip.
    pub async fn id_window(
        &self,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Window, StoreError> {
        let mut invocation = scripts().window.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(from_ms.map(|ms| ms.to_string()).unwrap_or_default())
            .arg(to_ms.map(|ms| ms.to_string()).unwrap_or_default());
        let (lo, hi, floor): (u64, u64, u64) = self.invoke(&invocation).await?;
        Ok(Window { lo, hi, floor })
    }

    /// A page of the ids set in every bitmap of `keys` and in none of `unset` (with no
    /// `keys`, every id in the window not set in `unset`).
    #[allow(clippy::too_many_arguments)]
    async fn bit_page(
        &self,
        keys: &[String],
        unset: &[String],
        lo: u64,
        hi: u64,
        q: &LogQuery,
        offset: u64,
        count: u64,
    ) -> Result<(Vec<u64>, Total), StoreError> {
        let mut invocation = scripts().bitscan.prepare_invoke();
        invocation
            .arg(self.key(&format!("tmp:{}", rand::random::<u64>())))
            .arg(lo)
            .arg(hi)
            .arg(u8::from(!q.oldest_first))
            .arg(offset)
            .arg(count)
            .arg(unset.len())
            .arg(keys)
            .arg(unset);
        let out: Vec<u64> = self.invoke(&invocation).await?;
        let total = out.first().copied().unwrap_or(0);
        Ok((out.into_iter().skip(1).collect(), Total::Exact(total)))
    }

    /// A page of the zset index `zkey`'s ids that pass the bitmap `filters`.
    #[allow(clippy::too_many_arguments)]
    async fn zset_page(
        &self,
        zkey: &str,
        filters: &BitFilters,
        lo: u64,
        hi: u64,
        q: &LogQuery,
        offset: u64,
        count: u64,
    ) -> Result<(Vec<u64>, Total), StoreError> {
        let (min, max) = (lo.to_string(), hi.to_string());
        let shared: bool = self.query(redis::cmd("EXISTS").arg(zkey)).await?;
        if !shared {
            // Held by at most one record: its id is in the `ix:` hash.
            let (field, value) = zkey
                .strip_prefix(&self.key("idx:"))
                .and_then(|rest| rest.split_once(':'))
                .unwrap_or_default();
            let mut ids: Vec<u64> = self
                .single_id(field, value)
                .await?
                .into_iter()
                .filter(|id| (lo..=hi).contains(id))
                .collect();
            if let Some(&id) = ids.first()
                && !self.bits_at(filters, id).await?
            {
                ids.clear();
            }
            let total = Total::Exact(ids.len() as u64);
            return Ok((if offset == 0 { ids } else { Vec::new() }, total));
        }
        if filters.is_empty() {
            let total: u64 = self
                .query(redis::cmd("ZCOUNT").arg(zkey).arg(&min).arg(&max))
                .await?;
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(zkey);
            if q.oldest_first {
                cmd.arg(&min).arg(&max).arg("BYSCORE");
            } else {
                cmd.arg(&max).arg(&min).arg("BYSCORE").arg("REV");
            }
            cmd.arg("LIMIT").arg(offset).arg(count);
            return Ok((self.query(&cmd).await?, Total::Exact(total)));
        }
        let mut invocation = scripts().zfilter.prepare_invoke();
        invocation
            .arg(zkey)
            .arg(lo)
            .arg(hi)
            .arg(u8::from(!q.oldest_first))
            .arg(offset)
            .arg(count)
            .arg(ZSET_FILTER_BUDGET)
            .arg(filters.unset.len())
            .arg(&filters.set)
            .arg(&filters.unset);
        let out: Vec<u64> = self.invoke(&invocation).await?;
        let (found, scanned, exhausted) = (out[0], out[1], out[2] == 1);
        let total = if exhausted {
            Total::Exact(found)
        } else {
            Total::AtLeast { found, scanned }
        };
        Ok((out.into_iter().skip(3).collect(), total))
    }

    /// Scan records newest (or oldest) first in chunks, at most SUBSTRING_BUDGET of them.
    #[allow(clippy::too_many_arguments)]
    async fn substring_page(
        &self,
        field: &str,
        needle: &str,
        lo: u64,
        hi: u64,
        q: &LogQuery,
        offset: u64,
        count: u64,
    ) -> Result<LogPage, StoreError> {
        let needle = needle.to_lowercase();
        let mut rows = Vec::new();
        let (mut found, mut scanned) = (0u64, 0u64);
        let span = hi - lo + 1;
        while scanned < span.min(SUBSTRING_BUDGET) {
            let chunk = 500.min(span - scanned);
            let ids: Vec<u64> = if q.oldest_first {
                (lo + scanned..lo + scanned + chunk).collect()
            } else {
                (0..chunk).map(|i| hi - scanned - i).collect()
            };
            scanned += chunk;
            for record in self.records(&ids).await? {
                let hit = record.text(field).to_lowercase().contains(&needle);
                if hit && q.admits(&record) {
                    if found >= offset && (rows.len() as u64) < count {
                        rows.push(record);
                    }
                    found += 1;
                }
            }
        }
        let total = if scanned >= span {
            Total::Exact(found)
        } else {
            Total::AtLeast { found, scanned }
        };
        Ok(LogPage { rows, total })
    }

    /// Replace record `id` with `after` if it is still the text `expected` and neither
    /// queued nor in flight (compare and set), moving its status, app and lane bits from
    /// `before`'s to `after`'s and, with `due`, queueing it in `after`'s queue. False =
    /// changed meanwhile.
    pub async fn requeue(
        &self,
        id: u64,
        expected: &str,
        before: &Record,
        after: &Record,
        due: Option<i64>,
    ) -> Result<bool, StoreError> {
        let (cleared, set) = (own_bits(before), own_bits(after));
        let mut invocation = scripts().requeue.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(id)
            .arg(expected)
            .arg(super::record::encode(after))
            .arg(before.queue().due_key())
            .arg(after.queue().due_key())
            .arg(due.map(|d| d.to_string()).unwrap_or_default())
            .arg(cleared.len())
            .arg(cleared)
            .arg(set);
        let applied: i64 = self.invoke(&invocation).await?;
        Ok(applied == 1)
    }

    /// Queue a sent, failed or expired record with a send decision to be sent again, unless it
    /// is queued or in flight. Retries when the sender changes it meanwhile.
    pub async fn resend(&self, id: u64, now_ms: i64) -> Result<Resend, StoreError> {
        for _ in 0..5 {
            let Some((text, mut record)) = self.record_text(id).await? else {
                return Ok(Resend::Missing);
            };
            let old = record.status;
            if record.push().is_none()
                || !matches!(old, Status::Sent | Status::Failed | Status::Expired)
            {
                return Ok(Resend::NotResendable);
            }
            let before = record.clone();
            record.status = Status::Queued;
            record.due_at = Some(now_ms);
            // Its deadline counts from now: an operator's resend of an old push is sent.
            record.requeued_at = Some(now_ms);
            if self
                .requeue(id, &text, &before, &record, Some(now_ms))
                .await?
            {
                return Ok(Resend::Queued);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(Resend::Busy)
    }

    /// Delete every key under the prefix, in batches (never FLUSHDB), except the audit
    /// log, console sessions, the consent registry and the id counter (ids are never reused, so a record
    /// written meanwhile cannot collide with a key being deleted). Returns keys deleted.
    pub async fn flush(&self) -> Result<u64, StoreError> {
        let pattern = format!("{}*", self.prefix.replace('*', "\\*").replace('?', "\\?"));
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            // Kept: the audit trail, sessions, the id counter, and what the nodes share
            // (operators' switches, port leases and their epochs, heartbeats), and the
            // customers' ad consents (a legal record, not part of the push log).
            let keep = [
                self.key("consent"),
                self.key("audit"),
                self.key("session:"),
                self.key("seq"),
                self.key("portctl"),
                self.key("lease:"),
                self.key("node"),
            ];
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|k| !keep.iter().any(|kept| k.starts_with(kept.as_str())))
                .collect();
            if !keys.is_empty() {
                let n: u64 = self.query(redis::cmd("UNLINK").arg(&keys)).await?;
                deleted += n;
            }
            if next == 0 {
                self.reconcile_bitmap_registry().await?;
                // Ids are never reused: the plain listing starts after the flushed ones.
                let last = self.last_id().await?;
                let _: () = self
                    .query(
                        redis::cmd("SET")
                            .arg(self.key("retention:next"))
                            .arg(last + 1),
                    )
                    .await?;
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// What a resend did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    Queued,
    /// Not sent, failed or expired, or routed to no push: nothing to send again.
    NotResendable,
    /// Queued or in flight (or changing) right now.
    Busy,
    Missing,
}

/// Ids of one page of the plain window `lo..=hi`.
fn window_page(lo: u64, hi: u64, oldest_first: bool, offset: u64, count: u64) -> Vec<u64> {
    if oldest_first {
        let start = lo.saturating_add(offset);
        (start..=hi).take(count as usize).collect()
    } else {
        let Some(start) = hi.checked_sub(offset) else {
            return Vec::new();
        };
        (lo..=start).rev().take(count as usize).collect()
    }
}

/// The bitmaps of pushgate's own fields that can change when a record is queued again:
/// its status, and its push's app and lane.
fn own_bits(record: &Record) -> Vec<String> {
    let mut bits = vec![format!("bit:status:{}", record.status.as_str())];
    if let Some(push) = record.push() {
        let queue = push.queue();
        bits.push(format!("bit:app:{}", queue.app));
        bits.push(format!("bit:lane:{}", queue.lane));
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_pages_walk_ids_in_both_orders() {
        assert_eq!(window_page(1, 10, false, 0, 3), [10, 9, 8]);
        assert_eq!(window_page(1, 10, false, 9, 3), [1]);
        assert_eq!(window_page(1, 10, false, 10, 3), Vec::<u64>::new());
        assert_eq!(window_page(1, 10, true, 0, 3), [1, 2, 3]);
        assert_eq!(window_page(5, 10, true, 4, 3), [9, 10]);
    }

    #[test]
    fn searchable_fields_cover_every_index_once() {
        let fields = searchable_fields();
        for f in [
            "uniqueKey",
            "csno",
            "device_id",
            "cust_telno",
            "uuid_id",
            "D_servicename",
            "msg_title",
        ] {
            assert!(fields.contains(&f), "{f}");
        }
        assert!(!fields.contains(&"status"), "status is its own filter");
    }
}
