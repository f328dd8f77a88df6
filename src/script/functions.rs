//! The functions registered for scripts, apart from the clock ones in `time`: building
//! decisions (`send_token`, `send_topic`, `send_condition`, `drop`, `later`) and text checks and
//! masks (`is_blank`, `is_digits`, `is_phone`, `mask_phone`, `mask`).

use chrono_tz::Tz;
use rhai::{Dynamic, Engine, Map};

use super::HelperResult;
use super::decision::{check_condition, check_token, check_topic};
use super::time::parse_local_time;

fn send_decision(target_key: &str, target: String, title: &str, body: &str) -> Map {
    let mut map = Map::new();
    map.insert("action".into(), "send".into());
    map.insert(target_key.into(), target.into());
    map.insert("title".into(), title.into());
    map.insert("body".into(), body.into());
    map
}

pub(super) fn register_decision_helpers(engine: &mut Engine, zone: Tz) {
    // Targets are checked here as well as in read_decision, so a bad token or topic is
    // reported at the line that built it.
    engine.register_fn(
        "send_token",
        |token: &str, title: &str, body: &str| -> HelperResult<Map> {
            // A blank token is "this customer has no token": the decision is refused
            // unless the script then sets a `fallback` ladder (read_decision's check).
            if token.trim().is_empty() {
                return Ok(send_decision("token", String::new(), title, body));
            }
            let token = check_token(token).map_err(|e| format!("send_token: {e}"))?;
            Ok(send_decision("token", token, title, body))
        },
    );
    engine.register_fn(
        "send_topic",
        |topic: &str, title: &str, body: &str| -> HelperResult<Map> {
            let topic = check_topic(topic).map_err(|e| format!("send_topic: {e}"))?;
            Ok(send_decision("topic", topic, title, body))
        },
    );
    engine.register_fn(
        "send_condition",
        |condition: &str, title: &str, body: &str| -> HelperResult<Map> {
            let condition =
                check_condition(condition).map_err(|e| format!("send_condition: {e}"))?;
            Ok(send_decision("condition", condition, title, body))
        },
    );
    engine.register_fn("drop", |reason: &str| -> HelperResult<Map> {
        if reason.trim().is_empty() {
            return Err("drop: the reason is blank".into());
        }
        let mut map = Map::new();
        map.insert("action".into(), "drop".into());
        map.insert("reason".into(), reason.into());
        Ok(map)
    });
    engine.register_fn("later", |decision: Map, at_ms: i64| later(decision, at_ms));
    engine.register_fn(
        "later",
        move |decision: Map, when: &str| -> HelperResult<Map> {
            let at_ms = parse_local_time(when.trim(), zone).map_err(|e| format!("later: {e}"))?;
            later(decision, at_ms)
        },
    );
}

fn later(mut decision: Map, at_ms: i64) -> HelperResult<Map> {
    let action = decision
        .get("action")
        .and_then(|a| a.clone().into_string().ok())
        .unwrap_or_default();
    if action != "send" && action != "later" {
        return Err(format!("later: takes a send decision, got action {action:?}").into());
    }
    decision.insert("action".into(), "later".into());
    decision.insert("at".into(), at_ms.into());
    // An explicit later is the script's own time; a leftover `now` would contradict it.
    decision.remove("now");
    Ok(decision)
}

pub(super) fn register_text_helpers(engine: &mut Engine) {
    // Takes any value so `is_blank(msg.get("x"))` works for a field that is not there.
    engine.register_fn("is_blank", |value: Dynamic| {
        let value = value.flatten();
        value.is_unit()
            || value
                .into_immutable_string()
                .is_ok_and(|s| s.trim().is_empty())
    });
    engine.register_fn("is_digits", |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    });
    engine.register_fn("is_phone", |s: &str| phone_digits(s).is_some());
    engine.register_fn("mask_phone", mask_phone);
    engine.register_fn(
        "mask",
        |s: &str, keep_start: i64, keep_end: i64| -> HelperResult<String> {
            let (Ok(start), Ok(end)) = (usize::try_from(keep_start), usize::try_from(keep_end))
            else {
                return Err(format!(
                    "mask: keep_start and keep_end must be 0 or more, got {keep_start} and {keep_end}"
                )
                .into());
            };
            Ok(mask(s, start, end))
        },
    );
}

/// The digits of a Korean mobile number (01x, 10–11 digits), written plain or as
/// `01x-xxx(x)-xxxx`; None for anything else.
fn phone_digits(s: &str) -> Option<String> {
    let s = s.trim();
    let digits: String = if s.contains('-') {
        let parts: Vec<&str> = s.split('-').collect();
        match parts.as_slice() {
            [a, b, c] if a.len() == 3 && (b.len() == 3 || b.len() == 4) && c.len() == 4 => {
                parts.concat()
            }
            _ => return None,
        }
    } else {
        s.to_string()
    };
    let valid = (10..=11).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.starts_with("01")
        && matches!(
            digits.as_bytes()[2],
            b'0' | b'1' | b'6' | b'7' | b'8' | b'9'
        );
    valid.then_some(digits)
}

/// `010-****-5678`. Anything that is not a mobile number keeps only its last four characters,
/// so a malformed number is never shown whole.
pub fn mask_phone(s: &str) -> String {
    match phone_digits(s) {
        Some(digits) => {
            let (head, rest) = digits.split_at(3);
            let (middle, tail) = rest.split_at(rest.len() - 4);
            format!("{head}-{}-{tail}", "*".repeat(middle.len()))
        }
        None => mask(s, 0, 4),
    }
}

/// Replace every character but the first `keep_start` and last `keep_end` with `*`.
/// Characters, not bytes, so Korean names mask as they read: `홍*동`.
pub fn mask(s: &str, keep_start: usize, keep_end: usize) -> String {
    let count = s.chars().count();
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_start || i + keep_end >= count {
                c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::push::{Decision, Push, Target};
    use crate::script::fixtures::*;

    // --- helpers -----------------------------------------------------------------------------

    #[test]
    fn send_token_builds_a_send_decision() {
        let decision = run_body(
            "  send_token(msg.device_id, msg.msg_title, msg.msg_contents)",
            &sample(),
            afternoon(),
        );
        assert_eq!(
            decision,
            Ok(Decision::Send {
                push: Push {
                    title: Some("이체 알림".to_string()),
                    body: Some("홍길동님 계좌에서 50,000원이 출금되었습니다.".to_string()),
                    ..token_push("fcm-token-abc")
                }
            })
        );
    }

    #[test]
    fn send_topic_strips_the_topics_prefix() {
        let decision = run_body(
            "  send_topic(\"/topics/notice-all\", \"t\", \"\")",
            &sample(),
            0,
        );
        assert_eq!(
            decision,
            Ok(Decision::Send {
                push: Push {
                    target: Target::Topic("notice-all".to_string()),
                    title: Some("t".to_string()),
                    ..token_push("x")
                }
            })
        );
    }

    #[test]
    fn send_condition_targets_a_condition() {
        let decision = run_body(
            "  send_condition(\"'a' in topics && 'b' in topics\", \"\", \"b\")",
            &sample(),
            0,
        );
        assert_eq!(
            decision,
            Ok(Decision::Send {
                push: Push {
                    target: Target::Condition("'a' in topics && 'b' in topics".to_string()),
                    body: Some("b".to_string()),
                    ..token_push("x")
                }
            })
        );
    }

    #[test]
    fn send_helpers_reject_bad_targets_where_they_are_called() {
        assert_eq!(
            eval_error("  send_topic(\"공지 전체\", \"t\", \"b\")").to_string(),
            "2:3: send_topic: topic \"공지 전체\" is not a valid FCM topic name (letters, digits and - _ . ~ % only)"
        );
        assert_eq!(
            eval_error("  send_condition(\"\", \"t\", \"b\")").to_string(),
            "2:3: send_condition: condition is blank"
        );
    }

    #[test]
    fn drop_helper_needs_a_reason() {
        assert_eq!(
            run_body("  drop(\"test\")", &sample(), 0),
            Ok(Decision::Drop {
                reason: "test".to_string()
            })
        );
        assert_eq!(
            eval_error("  drop(\"\")").to_string(),
            "2:3: drop: the reason is blank"
        );
    }

    #[test]
    fn later_takes_unix_ms_or_a_local_time_string() {
        let now = afternoon();
        let expected = Decision::Later {
            at_ms: kst("20240515090000"),
            push: token_push("t"),
        };
        let by_ms = format!(
            "  later(send_token(\"t\", \"\", \"\"), {})",
            kst("20240515090000")
        );
        assert_eq!(run_body(&by_ms, &sample(), now), Ok(expected.clone()));
        let by_text = "  later(send_token(\"t\", \"\", \"\"), \"20240515090000\")";
        assert_eq!(run_body(by_text, &sample(), now), Ok(expected));
    }

    #[test]
    fn later_rejects_bad_times_and_drop_decisions() {
        assert_eq!(
            eval_error("  later(send_token(\"t\", \"\", \"\"), \"2024-05-15\")").to_string(),
            "2:3: later: \"2024-05-15\" is not YYYYMMDDHHMMSS"
        );
        assert_eq!(
            eval_error("  later(drop(\"x\"), 0)").message,
            "later: takes a send decision, got action \"drop\""
        );
    }

    #[test]
    fn later_wins_over_an_explicit_now() {
        let body = "  let d = send_token(\"t\", \"\", \"\");\n  d.now = true;\n  later(d, 5)";
        assert_eq!(
            run_body(body, &sample(), 0),
            Ok(Decision::Later {
                at_ms: 5,
                push: token_push("t")
            })
        );
    }

    #[test]
    fn mask_phone_masks_the_middle_group() {
        assert_eq!(eval_text("mask_phone(\"01012345678\")", 0), "010-****-5678");
        assert_eq!(
            eval_text("mask_phone(\"010-1234-5678\")", 0),
            "010-****-5678"
        );
        assert_eq!(eval_text("mask_phone(\"0111234567\")", 0), "011-***-4567");
        // Not a mobile number: only the last four characters stay readable.
        assert_eq!(eval_text("mask_phone(\"02-123-4567\")", 0), "*******4567");
    }

    #[test]
    fn mask_counts_characters_not_bytes() {
        assert_eq!(eval_text("mask(\"홍길동\", 1, 1)", 0), "홍*동");
        assert_eq!(eval_text("mask(\"1002003004\", 2, 2)", 0), "10******04");
        assert_eq!(eval_text("mask(\"ab\", 2, 2)", 0), "ab");
        assert_eq!(eval_text("mask(\"secret\", 0, 0)", 0), "******");
        assert_eq!(
            eval_error("  mask(\"x\", -1, 0)").message,
            "mask: keep_start and keep_end must be 0 or more, got -1 and 0"
        );
    }

    #[test]
    fn string_tests() {
        assert_eq!(
            eval_text(
                "[is_blank(\"\"), is_blank(\"  \"), is_blank(()), is_blank(\"a\"), is_blank(msg.get(\"nope\"))]",
                0
            ),
            "[true, true, true, false, true]"
        );
        assert_eq!(
            eval_text(
                "[is_digits(\"0123\"), is_digits(\"\"), is_digits(\"12a\")]",
                0
            ),
            "[true, false, false]"
        );
        assert_eq!(
            eval_text(
                "[is_phone(\"01012345678\"), is_phone(\"010-1234-5678\"), is_phone(\"016-123-4567\"), is_phone(\"0161234567\")]",
                0
            ),
            "[true, true, true, true]"
        );
        assert_eq!(
            eval_text(
                "[is_phone(\"0212345678\"), is_phone(\"010123456\"), is_phone(\"010-12345-678\"), is_phone(\"01212345678\")]",
                0
            ),
            "[false, false, false, false]"
        );
    }
}
