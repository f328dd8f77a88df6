//! Every Lua script the store runs, registered here and nowhere else, each built once.
//!
//! The scripts live in `lua/`, one file each, opening with what the script does and its
//! ARGV layout (`-- ARGV[1] prefix`, …). Four shared pieces are written once and put in
//! front of the scripts that need them: `bucket.lua` (the `ix:` bucket rule),
//! `queue.lua` (a record's due queue), `pace.lua` (the token bucket the claim scripts
//! draw on) and `counters.lua` (the per-batch port counters and the `events`
//! announcement).
//!
//! A [`redis::Script`] hashes its source once; Redis is asked by SHA-1 (`EVALSHA`) and
//! sent the source only when it does not have it yet.

use std::sync::LazyLock;

use redis::Script;

/// A script's source: the named files of `lua/`, concatenated in order.
macro_rules! lua {
    ($($file:literal),+) => {
        concat!($(include_str!(concat!("lua/", $file, ".lua"))),+)
    };
}

/// Each script by its job. The file named on each field holds its ARGV layout.
pub(super) struct Scripts {
    /// `ingest.lua`: a batch of new records (dedupe, ids, indexes, due, counters, fences).
    pub ingest: Script,
    /// `single.lua`: the one record holding a value (its `ix:` entry).
    pub single: Script,
    /// `claim.lua`: one app's due records to `inflight` under a lease, urgent first, paced
    /// by its token bucket; expired leases back to their queues.
    pub claim: Script,
    /// `outcome.lua`: send outcomes, each only while its lease still holds the record.
    pub outcome: Script,
    /// `window.lua`: the ids received in a time range, and the retention floor.
    pub window: Script,
    /// `bitscan.lua`: a page of the ids set in a bitmap (or an AND of bitmaps).
    pub bitscan: Script,
    /// `zfilter.lua`: a page of a zset index's ids filtered by bitmaps (status, app, lane).
    pub zfilter: Script,
    /// `requeue.lua`: replace an idle, unchanged record, moving its status bit and queueing it.
    pub requeue: Script,
    /// `prune.lua`: one retention step, removing old records and their index entries.
    pub prune: Script,
    /// `swap.lua`: replace a record only if it is unchanged.
    pub swap: Script,
    /// `emptied_bitmaps.lua`: delete the bitmaps retention left without a bit.
    pub emptied_bitmaps: Script,
    /// `bitmap_registry.lua`: forget earned-bitmap values whose bitmap is gone.
    pub bitmap_registry: Script,
    /// `acquire_port.lua`: take a connect-mode port's lease, with a fresh token.
    pub acquire_port: Script,
    /// `renew_port.lua`: renew or release a port's lease while the token holds it.
    pub renew_port: Script,
    /// `login_attempt.lua`: admit a console sign-in attempt, or say how long to wait.
    pub login_attempt: Script,
    /// `legacy_queue.lua`: the first stage's `due` into the default app's normal queue.
    pub legacy_queue: Script,
    /// `receipts.lua`: a batch of delivery receipts (first time per event, bits, counts).
    pub receipts: Script,
    /// `consent_set.lua`: customers' ad consents and the index by consent date.
    pub consent_set: Script,
    /// `fallback_claim.lua`: one fallback rung's due records to its `fqinflight` under a
    /// lease, paced by its token bucket; expired leases back to its queue.
    pub fallback_claim: Script,
    /// `fallback_outcome.lua`: rung outcomes, fenced by the lease; the next rung queued.
    pub fallback_outcome: Script,
    /// `fallback_watch.lua`: pushes sent without a receipt in time onto their first rung.
    pub fallback_watch: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    ingest: Script::new(lua!("bucket", "counters", "ingest")),
    single: Script::new(lua!("bucket", "single")),
    claim: Script::new(lua!("queue", "pace", "claim")),
    outcome: Script::new(lua!("counters", "outcome")),
    window: Script::new(lua!("window")),
    bitscan: Script::new(lua!("bitscan")),
    zfilter: Script::new(lua!("zfilter")),
    requeue: Script::new(lua!("requeue")),
    prune: Script::new(lua!("bucket", "queue", "prune")),
    swap: Script::new(lua!("swap")),
    emptied_bitmaps: Script::new(lua!("emptied_bitmaps")),
    bitmap_registry: Script::new(lua!("bitmap_registry")),
    acquire_port: Script::new(lua!("acquire_port")),
    renew_port: Script::new(lua!("renew_port")),
    login_attempt: Script::new(lua!("login_attempt")),
    legacy_queue: Script::new(lua!("legacy_queue")),
    receipts: Script::new(lua!("counters", "receipts")),
    consent_set: Script::new(lua!("consent_set")),
    fallback_claim: Script::new(lua!("pace", "fallback_claim")),
    fallback_outcome: Script::new(lua!("fallback_outcome")),
    fallback_watch: Script::new(lua!("fallback_watch")),
});

/// The store's scripts (built on first use).
pub(super) fn scripts() -> &'static Scripts {
    &SCRIPTS
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Every file in `lua/` with its text.
    fn lua_files() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/lua");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("src/store/lua")
            .map(|entry| entry.expect("lua dir entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "lua"))
            .map(|path| {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                (stem, std::fs::read_to_string(&path).expect("lua file"))
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_lua_file_is_registered_here() {
        let registry = include_str!("scripts.rs");
        let files = lua_files();
        assert!(files.len() >= 17, "{files:?}");
        for (name, _) in files {
            assert!(
                registry.contains(&format!("\"{name}\"")),
                "lua/{name}.lua is not registered in scripts.rs"
            );
        }
    }

    #[test]
    fn every_lua_file_opens_with_what_it_does_and_names_each_argv_it_reads() {
        for (name, text) in lua_files() {
            assert!(
                text.starts_with("-- "),
                "lua/{name}.lua opens with a comment saying what it does"
            );
            let header: String = text
                .lines()
                .take_while(|l| l.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            let code = text.lines().filter(|l| !l.trim_start().starts_with("--"));
            let mut read = BTreeSet::new();
            for line in code {
                let mut rest = line;
                while let Some(at) = rest.find("ARGV[") {
                    rest = &rest[at + 5..];
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if !digits.is_empty() && rest[digits.len()..].starts_with(']') {
                        read.insert(digits);
                    }
                }
            }
            for n in read {
                assert!(
                    header.contains(&format!("-- ARGV[{n}] ")),
                    "lua/{name}.lua reads ARGV[{n}] without naming it in its header"
                );
            }
        }
    }
}
