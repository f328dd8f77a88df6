//! The fallback ladder: when a push cannot reach the customer (failed, expired, a dead
//! token, no token), its route's `fallback` rungs (`[[fallback]]`: KakaoTalk Alimtalk,
//! then SMS, through the firm's messaging gateway) are tried in order until one is sent.
//!
//! Invariant: a rung is sent at most once per push except after a crash (then at most
//! `max_in_flight` of its messages again, each with the same idempotency key). That comes
//! from the store: each rung has its own durable queue (`fq:{rung}`) with the same lease
//! and fencing discipline as the pushes' due queues, and the first rung is queued in the
//! same atomic step that writes the push's final outcome.
//!
//! - `template.rs`: the JSON body template over the record's fields.
//! - `sender.rs`: one rung's delivery loop (claim, send, write the outcome and queue the
//!   next rung).

pub mod sender;
pub mod template;

pub use sender::{RungSender, RungSenders};
