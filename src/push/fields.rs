//! The one list of a record's field names: what a message carries, what pushgate adds,
//! what is indexed and how, what a viewer sees masked. Every part names fields from here.

/// The message fields every port's messages may carry (DESIGN.md, wire contract). Scripts see
/// each of them, as `""` when the message lacks it, so `msg.device_id.trim()` never fails.
pub const STANDARD_FIELDS: [&str; 10] = [
    "uniqueKey",
    "sndn_rsev_hour",
    "csno",
    "uuid_id",
    "device_id",
    "msg_title",
    "msg_contents",
    "D_servicename",
    "push_grp_id",
    "cust_telno",
];

/// Fields pushgate writes on every record; a message may not carry them itself.
pub const RESERVED_FIELDS: &[&str] = &[
    "id",
    "status",
    "attempts",
    "worker",
    "received_at",
    "fcm_send_yn",
    "fcm_send_time",
    "result",
    "decision",
    "due_at",
    "error",
    "history",
    "dry_run",
    "legal_hold",
    "requeued_at",
    "receipt",
    "fallback",
];

/// Fields indexed by a zset of ids per value (many distinct values).
pub const ZSET_FIELDS: &[&str] = &["csno", "device_id", "cust_telno", "uuid_id"];
/// Fields indexed by a bitmap per value (few distinct values).
pub const BITMAP_FIELDS: &[&str] = &[
    "status",
    "fcm_send_yn",
    "D_servicename",
    "push_grp_id",
    "worker",
    "app",
    "lane",
];
/// The bitmap fields whose values come from messages; the others' values are
/// pushgate's own (statuses, Y/N, configured port and API key names). A value of these
/// gets a bitmap only once admitted (`store::bitmaps::Admission`).
pub const MESSAGE_BITMAP_FIELDS: &[&str] = &["D_servicename", "push_grp_id"];
/// The bitmap fields whose values pushgate itself sets (bounded by code and config).
/// `app` and `lane` are the decision's (a record without a push has neither).
pub const OWN_BITMAP_FIELDS: &[&str] = &["status", "fcm_send_yn", "worker", "app", "lane"];

/// Fields searched by substring (not indexed).
pub const SUBSTRING_FIELDS: &[&str] = &["msg_title", "msg_contents"];

/// Fields a masked caller (a viewer, a `read` API key) sees only masked, and may not
/// search by.
pub const MASKED_FIELDS: &[&str] = &["cust_telno", "csno"];

/// The log's columns, in the order the old console showed them.
pub const LOG_COLUMNS: &[&str] = &[
    "sndn_rsev_hour",
    "csno",
    "uuid_id",
    "device_id",
    "msg_title",
    "msg_contents",
    "D_servicename",
    "push_grp_id",
    "cust_telno",
    "fcm_send_yn",
    "fcm_send_time",
    "result",
];
