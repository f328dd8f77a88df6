//! The domain: a push and the record kept of it. Every part (ingest, script, store,
//! sender, fcm, admin) works on these types and field names.
//!
//! - [`fields`]: the one list of field names and how each is indexed or masked.
//! - [`status`]: where a record stands.
//! - [`decision`]: what a route script decided, and the push it sends.
//! - [`record`]: the record kept of one push, and its attempts.
//! - [`consent`]: a customer's ad consents, as the ad gate reads them.
//! - [`queue`]: the app and lane a push waits in.
//! - [`receipt`]: what the app reported of a push after it was sent.

pub mod consent;
pub mod decision;
pub mod fields;
pub mod queue;
pub mod receipt;
pub mod record;
pub mod status;

pub use consent::{Consent, Grant};
pub use decision::{Decision, Kind, Push, Target};
pub use queue::{DEFAULT_APP, Lane, Queue};
pub use receipt::{Receipt, ReceiptEvent};
pub use record::{Attempt, Record, RungAttempt, RungOutcome};
pub use status::Status;
