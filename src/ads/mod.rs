//! The ad gate: what Korean law (정보통신망법 §50) asks of an advertising push, applied by
//! pushgate itself rather than left to route scripts. A push whose `kind` is `ad`
//!
//! - is dropped without the customer's ad consent (never given, withdrawn, or given
//!   more than [`CONSENT_YEARS`] years ago and not re-confirmed);
//! - is held to the end of the night window when it would go out inside it without the
//!   customer's night consent, and checked again when it comes due;
//! - starts with [`AD_LABEL`] and ends with the sender's name and the opt-out line.
//!
//! Non-ad pushes pass untouched. The gate is pure: it is given the consent and the time,
//! so routing (`ingest::pipeline`), the sender and the script editor's Try apply it alike.
//!
//! - `gate.rs`: [`AdGate`], the rules (pure).
//! - `live.rs`: [`LiveGate`], the gate as running pushgate holds it: the current `[ads]`
//!   (swapped on reload), the consent registry it reads, and the clock.

mod gate;
mod live;

pub use gate::{
    AD_LABEL, AdGate, CONSENT_YEARS, DUE_NOTICE_DAYS, Verdict, due_cutoff, lapsed, lapses_at,
};
pub use live::{Consents, LiveGate, gated};
