//! What the script tests share: the shipped scripts, a sample message, fixed Seoul times and
//! one-line ways to run a script body and read what it decided.

use chrono_tz::Asia::Seoul;
use serde_json::json;

use super::{Limits, RouteEngine, RouteError, parse_reserved_time};
use crate::push::{Decision, Push, Target};

pub(super) const TRANSFER: &str = include_str!("../../scripts/transfer.rhai");
pub(super) const NOTICE: &str = include_str!("../../scripts/notice.rhai");

pub(super) type Msg = serde_json::Map<String, serde_json::Value>;

/// An engine whose configured fallback rungs are `alimtalk` and `sms`.
pub(super) fn engine() -> RouteEngine {
    let engine = RouteEngine::new(Limits::default(), Seoul);
    engine.set_rungs(["alimtalk".to_owned(), "sms".to_owned()]);
    engine
}

/// Unix ms of a Korean local time, for fixed `now_ms` values.
pub(super) fn kst(text: &str) -> i64 {
    parse_reserved_time(text, Seoul).unwrap().unwrap()
}

/// Tuesday 2024-05-14 14:30:15 KST.
pub(super) fn afternoon() -> i64 {
    kst("20240514143015")
}

pub(super) fn msg(value: serde_json::Value) -> Msg {
    value.as_object().unwrap().clone()
}

pub(super) fn sample() -> Msg {
    msg(json!({
        "uniqueKey": "TR20240514000001",
        "sndn_rsev_hour": "",
        "csno": "1002003004",
        "device_id": "fcm-token-abc",
        "msg_title": "이체 알림",
        "msg_contents": "홍길동님 계좌에서 50,000원이 출금되었습니다.",
        "D_servicename": "TRF",
        "cust_telno": "010-1234-5678"
    }))
}

/// Run `body` as the body of `route(msg)`.
pub(super) fn run_body(body: &str, message: &Msg, now_ms: i64) -> Result<Decision, RouteError> {
    run(&format!("fn route(msg) {{\n{body}\n}}"), message, now_ms)
}

pub(super) fn run(source: &str, message: &Msg, now_ms: i64) -> Result<Decision, RouteError> {
    let engine = engine();
    let script = engine.compile("test.rhai", source).unwrap();
    engine.route(&script, message, now_ms)
}

/// Evaluate one expression inside route() and return what the script got, as a drop reason.
pub(super) fn eval_text(expr: &str, now_ms: i64) -> String {
    match run_body(&format!("drop(`${{{expr}}}`)"), &sample(), now_ms) {
        Ok(Decision::Drop { reason }) => reason,
        other => panic!("{expr}: {other:?}"),
    }
}

pub(super) fn eval_error(body: &str) -> RouteError {
    run_body(body, &sample(), afternoon()).unwrap_err()
}

pub(super) fn token_push(token: &str) -> Push {
    Push::new(Target::Token(token.to_string()))
}
