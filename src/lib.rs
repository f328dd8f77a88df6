//! pushgate: a push-notification appliance in one binary.
//!
//! Layout (one module per part of `DESIGN.md`; see `ARCHITECTURE.md` for invariants):
//! - [`ads`]: the ad gate: consent, the night window and the labels an ad must carry.
//! - [`clock`]: the wall clock, read in one place.
//! - [`push`]: the domain: field names, statuses, decisions and pushes every part shares.
//! - [`config`]: the TOML file, its validation, the diff between two configs on reload.
//! - [`ingest`]: TCP listeners/connectors, framing, character sets, message checks, acks.
//! - [`script`]: the sandboxed Rhai engine, compiled route scripts, turning a script's answer into a decision.
//! - [`store`]: every Redis command and Lua script, the key layout, group commit, managed Redis.
//! - [`fcm`]: service-account tokens, the typed send body, the HTTP v1 client, error classes.
//! - [`apns`]: Apple's provider API directly: ES256 provider tokens, the request and payload, Apple's answers.
//! - [`sender`]: the in-flight pool, retry/schedule policy, durable queue claims.
//! - [`emulator`]: the strict FCM stand-in (`pushgate fcm-emulator`) for tests and the demo,
//!   and in [`emulator::apns`] the strict APNs one (`pushgate apns-emulator`).
//! - [`fallback`]: the fallback ladder (Alimtalk, SMS): body templates, the per-rung sender.
//! - [`metrics`]: every counter and histogram, and the `/metrics` text.
//! - [`supervisor`]: port lifecycle (start, stop, restart with backoff, states) and reload.
//! - [`admin`]: the hyper admin listener: the console (one file per page) and the JSON API.
//! - [`signals`]: SIGHUP = reload, SIGTERM/SIGINT = graceful drain.
//! - [`wire`]: the words of a port's wire contract (framing, charset, fixed-width fields).
//! - [`app`]: wires the parts together for `serve` and tests.

// The console's page futures nest deeper than the default limit of 128 allows.
#![recursion_limit = "256"]

pub mod admin;
pub mod ads;
pub mod apns;
pub mod app;
pub mod clock;
pub mod config;
pub mod emulator;
pub mod fallback;
pub mod fcm;
pub mod ingest;
pub mod metrics;
pub mod push;
pub mod script;
pub mod sender;
pub mod signals;
pub mod store;
pub mod supervisor;
pub mod wire;
