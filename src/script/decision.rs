//! Reading the map `route()` returns into a [`Decision`]: every key, target, text, data and
//! option is checked here, so a typo fails as a script error instead of reaching FCM.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use rhai::{Dynamic, Map};

use super::time::parse_local_time;
use crate::push::queue::{MAX_APP_NAME, is_app_name};
use crate::push::{Decision, Kind, Lane, Push, Target};

/// Keys a decision map may have; anything else is a typo (`titel`) and is rejected.
const DECISION_KEYS: [&str; 18] = [
    "action",
    "token",
    "topic",
    "condition",
    "title",
    "body",
    "image",
    "data",
    "android",
    "apns",
    "at",
    "now",
    "reason",
    "ttl",
    "app",
    "lane",
    "kind",
    "fallback",
];

/// The longest `ttl` a push may have: FCM keeps a message at most four weeks.
const MAX_TTL_SECS: i64 = 28 * 24 * 3600;

/// Validate what `route()` returned. The flag is the decision's explicit `now: true`, which
/// overrides the message's reservation.
pub(super) fn read_decision(returned: Dynamic, zone: Tz) -> Result<(Decision, bool), String> {
    let returned = returned.flatten();
    let type_name = returned.type_name();
    let Some(map) = returned.try_cast::<Map>() else {
        return Err(format!(
            "route() must return a decision map, got {type_name}"
        ));
    };
    if let Some(key) = map.keys().find(|k| !DECISION_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{key}` in the decision (allowed: {})",
            DECISION_KEYS.join(", ")
        ));
    }

    let action = match map.get("action") {
        None => return Err("the decision has no `action` (send, later or drop)".to_string()),
        Some(value) => string_value(value, "action")?,
    };
    match action.as_str() {
        "drop" => {
            if let Some(key) = map
                .keys()
                .find(|k| !matches!(k.as_str(), "action" | "reason"))
            {
                return Err(format!("`{key}` is not used by a drop decision"));
            }
            let reason = match map.get("reason") {
                None => None,
                Some(value) => Some(string_value(value, "reason")?),
            };
            match reason {
                Some(reason) if !reason.trim().is_empty() => Ok((Decision::Drop { reason }, false)),
                _ => Err("a drop decision needs a `reason`".to_string()),
            }
        }
        "send" => {
            if map.contains_key("at") {
                return Err(
                    "`at` is only for action \"later\" (use later(decision, when))".to_string(),
                );
            }
            if map.contains_key("reason") {
                return Err("`reason` is only for action \"drop\"".to_string());
            }
            let now = match map.get("now").map(Dynamic::flatten_clone) {
                None => false,
                Some(value) if value.is_unit() => false,
                Some(value) => value
                    .as_bool()
                    .map_err(|found| format!("`now` must be true or false, got {found}"))?,
            };
            Ok((
                Decision::Send {
                    push: read_push(&map)?,
                },
                now,
            ))
        }
        "later" => {
            for key in ["now", "reason"] {
                if map.contains_key(key) {
                    return Err(format!("`{key}` is not used by a later decision"));
                }
            }
            let at_ms = match map.get("at").map(Dynamic::flatten_clone) {
                Some(value) if value.is_int() => value.as_int().unwrap_or_default(),
                Some(value) if value.is_string() => {
                    let text = value.into_string().unwrap_or_default();
                    parse_local_time(text.trim(), zone)
                        .map_err(|problem| format!("`at` {problem}"))?
                }
                Some(value) if !value.is_unit() => {
                    return Err(format!(
                        "`at` must be a time \"YYYYMMDDHHMMSS\" or unix ms, got {}",
                        value.type_name()
                    ));
                }
                _ => {
                    return Err(
                        "a later decision needs `at` (a time \"YYYYMMDDHHMMSS\" or unix ms)"
                            .to_string(),
                    );
                }
            };
            Ok((
                Decision::Later {
                    at_ms,
                    push: read_push(&map)?,
                },
                false,
            ))
        }
        other => Err(format!(
            "unknown action {other:?} (expected \"send\", \"later\" or \"drop\")"
        )),
    }
}

fn read_push(map: &Map) -> Result<Push, String> {
    let fallback = read_fallback(map)?;
    let push = Push {
        target: read_target(map, !fallback.is_empty())?,
        title: optional_text(map, "title")?,
        body: optional_text(map, "body")?,
        image: optional_text(map, "image")?,
        data: read_data(map)?,
        android: read_options(map, "android")?,
        apns: read_options(map, "apns")?,
        ttl_secs: read_ttl(map)?,
        app: read_app(map)?,
        lane: read_lane(map)?,
        kind: read_kind(map)?,
        held: None,
        fallback,
    };
    // A push to a device token may reach Apple through either provider: FCM forwards
    // the same `apns` object to Apple and limits messages to 4 KB too, so Apple's rules
    // (headers, collapse id, payload size) are checked here for both, when the script
    // decides rather than when the send fails.
    if push.target.token().is_some() {
        crate::apns::check(&push)?;
    }
    Ok(push)
}

/// `no_token_ok`: the push has a fallback ladder, so a blank `token` means "this customer
/// has no token: go straight to the ladder".
fn read_target(map: &Map, no_token_ok: bool) -> Result<Target, String> {
    let given: Vec<&str> = ["token", "topic", "condition"]
        .into_iter()
        .filter(|key| map.get(*key).is_some_and(|v| !v.is_unit()))
        .collect();
    let key = match given.as_slice() {
        [key] => *key,
        [] => {
            return Err(
                "a send decision needs a target: `token`, `topic` or `condition`".to_string(),
            );
        }
        several => {
            return Err(format!(
                "a decision has exactly one target, this one has {}",
                several.join(", ")
            ));
        }
    };
    let value = map
        .get(key)
        .map(|v| string_value(v, key))
        .transpose()?
        .unwrap_or_default();
    match key {
        "token" if no_token_ok && value.trim().is_empty() => Ok(Target::Token(String::new())),
        "token" => check_token(&value)
            .map_err(|e| format!("{e} (a push with no token needs a `fallback` ladder)"))
            .map(Target::Token),
        "topic" => check_topic(&value).map(Target::Topic),
        _ => check_condition(&value).map(Target::Condition),
    }
}

pub(super) fn check_token(token: &str) -> Result<String, String> {
    if token.trim().is_empty() {
        return Err("token is blank".to_string());
    }
    Ok(token.to_string())
}

/// FCM's rule for topic names: `^[a-zA-Z0-9-_.~%]+$`, given bare or as `/topics/name`.
pub(super) fn check_topic(topic: &str) -> Result<String, String> {
    let name = topic.strip_prefix("/topics/").unwrap_or(topic);
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '%'));
    if !valid {
        return Err(format!(
            "topic {topic:?} is not a valid FCM topic name (letters, digits and - _ . ~ % only)"
        ));
    }
    Ok(name.to_string())
}

pub(super) fn check_condition(condition: &str) -> Result<String, String> {
    if condition.trim().is_empty() {
        return Err("condition is blank".to_string());
    }
    Ok(condition.to_string())
}

/// `title`, `body`, `image`: a string, with "" (or no key) meaning "none".
fn optional_text(map: &Map, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None => Ok(None),
        Some(value) if value.is_unit() => Ok(None),
        Some(value) => string_value(value, key).map(|text| Some(text).filter(|t| !t.is_empty())),
    }
}

fn string_value(value: &Dynamic, key: &str) -> Result<String, String> {
    let value = value.flatten_clone();
    let type_name = value.type_name();
    value
        .into_string()
        .map_err(|_| format!("`{key}` must be a string, got {type_name}"))
}

/// FCM's `data` is string → string; numbers and bools are written out so scripts can pass
/// amounts and flags without converting them by hand.
fn read_data(map: &Map) -> Result<BTreeMap<String, String>, String> {
    let data = match map.get("data").map(Dynamic::flatten_clone) {
        None => return Ok(BTreeMap::new()),
        Some(value) if value.is_unit() => return Ok(BTreeMap::new()),
        Some(value) => {
            let type_name = value.type_name();
            value
                .try_cast::<Map>()
                .ok_or_else(|| format!("`data` must be a map, got {type_name}"))?
        }
    };
    let mut out = BTreeMap::new();
    for (key, value) in data {
        let key = key.to_string();
        check_data_key(&key)?;
        let value = value.flatten();
        let text = if value.is_string() {
            value.into_string().unwrap_or_default()
        } else if let Ok(n) = value.as_int() {
            n.to_string()
        } else if let Ok(x) = value.as_float() {
            x.to_string()
        } else if let Ok(b) = value.as_bool() {
            b.to_string()
        } else if let Ok(c) = value.as_char() {
            c.to_string()
        } else {
            return Err(format!(
                "data value {key:?} must be a string, number or bool, got {}",
                value.type_name()
            ));
        };
        out.insert(key, text);
    }
    Ok(out)
}

fn check_data_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("data key \"\" is empty".to_string());
    }
    if matches!(key, "from" | "message_type") {
        return Err(format!("data key {key:?} is reserved by FCM"));
    }
    if key.starts_with("google") || key.starts_with("gcm") {
        return Err(format!(
            "data key {key:?} is reserved by FCM (keys starting with \"google\" or \"gcm\")"
        ));
    }
    Ok(())
}

/// `android` / `apns`: FCM's own objects, passed through; only the shape and android's
/// priority (a common typo that FCM would reject) are checked here.
/// `app`: an app name (whether it is configured is the engine's check).
fn read_app(map: &Map) -> Result<Option<String>, String> {
    let Some(app) = optional_text(map, "app")? else {
        return Ok(None);
    };
    if !is_app_name(&app) {
        return Err(format!(
            "`app` must be 1 to {MAX_APP_NAME} of a-z, 0-9, _ and -, got {app:?}"
        ));
    }
    Ok(Some(app))
}

/// `fallback`: an array of rung names (whether each is configured is the engine's check),
/// each at most once.
fn read_fallback(map: &Map) -> Result<Vec<String>, String> {
    let Some(value) = map.get("fallback").map(Dynamic::flatten_clone) else {
        return Ok(Vec::new());
    };
    if value.is_unit() {
        return Ok(Vec::new());
    }
    let type_name = value.type_name();
    let Some(items) = value.try_cast::<rhai::Array>() else {
        return Err(format!(
            "`fallback` must be an array of rung names, got {type_name}"
        ));
    };
    let mut rungs: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let name = string_value(&item, "fallback")?;
        if !is_app_name(&name) {
            return Err(format!(
                "`fallback` names must be 1 to {MAX_APP_NAME} of a-z, 0-9, _ and -, got {name:?}"
            ));
        }
        if rungs.contains(&name) {
            return Err(format!("`fallback` names {name:?} twice"));
        }
        rungs.push(name);
    }
    Ok(rungs)
}

/// `lane`: "urgent", "normal" or "bulk".
fn read_lane(map: &Map) -> Result<Option<Lane>, String> {
    let Some(lane) = optional_text(map, "lane")? else {
        return Ok(None);
    };
    Lane::parse(&lane)
        .map(Some)
        .ok_or_else(|| format!("`lane` must be \"urgent\", \"normal\" or \"bulk\", got {lane:?}"))
}

/// `kind`: "ad" or "info".
fn read_kind(map: &Map) -> Result<Option<Kind>, String> {
    let Some(kind) = optional_text(map, "kind")? else {
        return Ok(None);
    };
    Kind::parse(&kind)
        .map(Some)
        .ok_or_else(|| format!("`kind` must be \"ad\" or \"info\", got {kind:?}"))
}

/// `ttl`: whole seconds, 1 to four weeks.
fn read_ttl(map: &Map) -> Result<Option<u64>, String> {
    match map.get("ttl").map(Dynamic::flatten_clone) {
        None => Ok(None),
        Some(value) if value.is_unit() => Ok(None),
        Some(value) => match value.as_int() {
            Ok(secs) if (1..=MAX_TTL_SECS).contains(&secs) => Ok(Some(secs as u64)),
            Ok(secs) => Err(format!(
                "`ttl` must be 1 to {MAX_TTL_SECS} seconds (four weeks), got {secs}"
            )),
            Err(kind) => Err(format!("`ttl` must be whole seconds, got {kind}")),
        },
    }
}

fn read_options(map: &Map, key: &str) -> Result<Option<serde_json::Value>, String> {
    let value = match map.get(key).map(Dynamic::flatten_clone) {
        None => return Ok(None),
        Some(value) if value.is_unit() => return Ok(None),
        Some(value) if value.is_map() => value,
        Some(value) => return Err(format!("`{key}` must be a map, got {}", value.type_name())),
    };
    let json: serde_json::Value = rhai::serde::from_dynamic(&value)
        .map_err(|err| format!("`{key}` cannot be sent to FCM: {err}"))?;
    let priority = json.get("priority").filter(|_| key == "android");
    if let Some(priority) = priority
        && !matches!(priority.as_str(), Some("normal" | "high"))
    {
        return Err(format!(
            "android.priority must be \"normal\" or \"high\", got {priority}"
        ));
    }
    Ok(Some(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::fixtures::*;
    use serde_json::json;

    /// The validation message for a returned decision (no position: the map has none).
    fn decision_error(decision: &str) -> String {
        let err = eval_error(decision);
        assert_eq!((err.line, err.column), (0, 0), "{err}");
        err.message
    }
    // --- validating the returned decision ----------------------------------------------------

    #[test]
    fn plain_map_literal_works_like_the_helpers() {
        let decision = run_body(
            "  #{ action: \"send\", topic: \"news\", title: \"t\", image: \"https://x/y.png\",\n     data: #{ amount: 50000, rate: 1.5, vip: true, code: \"A\" },\n     android: #{ priority: \"normal\", ttl: \"3600s\" }, apns: #{ headers: #{ \"apns-priority\": \"5\" } } }",
            &sample(),
            0,
        );
        let data: BTreeMap<String, String> = [
            ("amount", "50000"),
            ("rate", "1.5"),
            ("vip", "true"),
            ("code", "A"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            decision,
            Ok(Decision::Send {
                push: Push {
                    title: Some("t".to_string()),
                    image: Some("https://x/y.png".to_string()),
                    data,
                    android: Some(json!({"priority": "normal", "ttl": "3600s"})),
                    apns: Some(json!({"headers": {"apns-priority": "5"}})),
                    ..Push::new(Target::Topic("news".to_string()))
                }
            })
        );
    }

    #[test]
    fn route_must_return_a_map() {
        assert_eq!(
            decision_error("  let x = 1;"),
            "route() must return a decision map, got ()"
        );
        assert_eq!(
            decision_error("  \"send\""),
            "route() must return a decision map, got string"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert_eq!(
            decision_error("  let d = send_token(\"t\", \"\", \"\");\n  d.titel = \"x\";\n  d"),
            "unknown key `titel` in the decision (allowed: action, token, topic, condition, title, body, image, data, android, apns, at, now, reason, ttl, app, lane, kind, fallback)"
        );
    }

    #[test]
    fn a_ttl_is_whole_seconds_up_to_four_weeks() {
        let decided = run_body(
            "  let d = send_token(\"t\", \"\", \"\");\n  d.ttl = 600;\n  d",
            &sample(),
            afternoon(),
        )
        .unwrap();
        assert!(matches!(decided, Decision::Send { push } if push.ttl_secs == Some(600)));
        for (ttl, problem) in [
            (
                "0",
                "`ttl` must be 1 to 2419200 seconds (four weeks), got 0",
            ),
            (
                "2419201",
                "`ttl` must be 1 to 2419200 seconds (four weeks), got 2419201",
            ),
            ("\"600\"", "`ttl` must be whole seconds, got string"),
        ] {
            assert_eq!(
                decision_error(&format!(
                    "  let d = send_token(\"t\", \"\", \"\");\n  d.ttl = {ttl};\n  d"
                )),
                problem
            );
        }
    }

    #[test]
    fn apples_rules_are_checked_when_the_script_decides_a_token_push() {
        let body = "가".repeat(1500);
        let err = decision_error(&format!("  send_token(\"t\", \"제목\", \"{body}\")"));
        assert!(
            err.starts_with("the APNs payload would be 4,5")
                && err.ends_with("bytes; Apple takes at most 4,096"),
            "{err}"
        );
        assert_eq!(
            decision_error(&format!(
                "  let d = send_token(\"t\", \"\", \"\");\n  d.apns = #{{ headers: #{{ \"apns-collapse-id\": \"{}\" }} }};\n  d",
                "c".repeat(65)
            )),
            "apns.headers[\"apns-collapse-id\"] must be 1 to 64 bytes, got 65 bytes"
        );
        // A topic push never reaches Apple as one payload of pushgate's making.
        let topic = run_body(
            &format!("  send_topic(\"news\", \"제목\", \"{body}\")"),
            &sample(),
            afternoon(),
        );
        assert!(topic.is_ok(), "{topic:?}");
    }

    #[test]
    fn a_script_may_mark_a_push_as_an_ad_and_nothing_else() {
        let decided = run_body(
            "  let d = send_token(\"t\", \"\", \"\");\n  d.kind = \"ad\";\n  d",
            &sample(),
            afternoon(),
        )
        .unwrap();
        assert!(matches!(decided, Decision::Send { push } if push.is_ad()));
        assert_eq!(
            decision_error("  let d = send_token(\"t\", \"\", \"\");\n  d.kind = \"promo\";\n  d"),
            "`kind` must be \"ad\" or \"info\", got \"promo\""
        );
    }

    #[test]
    fn a_script_may_name_the_app_and_lane() {
        let decided = run_body(
            "  let d = send_token(\"t\", \"\", \"\");\n  d.app = \"card\";\n  d.lane = \"urgent\";\n  d",
            &sample(),
            afternoon(),
        )
        .unwrap();
        assert!(matches!(
            decided,
            Decision::Send { push } if push.app.as_deref() == Some("card") && push.lane == Some(Lane::Urgent)
        ));
        for (set, problem) in [
            (
                "d.lane = \"fast\"",
                "`lane` must be \"urgent\", \"normal\" or \"bulk\", got \"fast\"",
            ),
            (
                "d.app = \"Card App\"",
                "`app` must be 1 to 32 of a-z, 0-9, _ and -, got \"Card App\"",
            ),
            ("d.app = 7", "`app` must be a string, got i64"),
        ] {
            assert_eq!(
                decision_error(&format!(
                    "  let d = send_token(\"t\", \"\", \"\");\n  {set};\n  d"
                )),
                problem
            );
        }
    }

    #[test]
    fn action_must_be_known() {
        assert_eq!(
            decision_error("  #{ token: \"t\" }"),
            "the decision has no `action` (send, later or drop)"
        );
        assert_eq!(
            decision_error("  #{ action: \"sned\", token: \"t\" }"),
            "unknown action \"sned\" (expected \"send\", \"later\" or \"drop\")"
        );
        assert_eq!(
            decision_error("  #{ action: 1, token: \"t\" }"),
            "`action` must be a string, got i64"
        );
    }

    #[test]
    fn a_blank_token_is_allowed_only_with_a_fallback_ladder() {
        assert_eq!(
            decision_error("  send_token(\"\", \"t\", \"b\")"),
            "token is blank (a push with no token needs a `fallback` ladder)"
        );
        let decision = run_body(
            "  let d = send_token(\"\", \"t\", \"b\");\n  d.fallback = [\"alimtalk\", \"sms\"];\n  d",
            &sample(),
            0,
        )
        .unwrap();
        let Decision::Send { push } = decision else {
            panic!("{decision:?}")
        };
        assert!(push.has_no_token());
        assert_eq!(push.fallback, ["alimtalk", "sms"]);
        assert_eq!(
            decision_error(
                "  let d = send_token(\"t\", \"\", \"\");\n  d.fallback = \"sms\";\n  d"
            ),
            "`fallback` must be an array of rung names, got string"
        );
        assert_eq!(
            decision_error(
                "  let d = send_token(\"t\", \"\", \"\");\n  d.fallback = [\"sms\", \"sms\"];\n  d"
            ),
            "`fallback` names \"sms\" twice"
        );
    }

    #[test]
    fn exactly_one_target_is_required() {
        assert_eq!(
            decision_error("  #{ action: \"send\", title: \"t\" }"),
            "a send decision needs a target: `token`, `topic` or `condition`"
        );
        assert_eq!(
            decision_error("  let d = send_token(\"t\", \"\", \"\");\n  d.topic = \"news\";\n  d"),
            "a decision has exactly one target, this one has token, topic"
        );
    }

    #[test]
    fn targets_are_checked_in_map_literals() {
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"\" }"),
            "token is blank (a push with no token needs a `fallback` ladder)"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", topic: \"a/b\" }"),
            "topic \"a/b\" is not a valid FCM topic name (letters, digits and - _ . ~ % only)"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", condition: \" \" }"),
            "condition is blank"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: 42 }"),
            "`token` must be a string, got i64"
        );
    }

    #[test]
    fn text_fields_must_be_strings() {
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", title: 5 }"),
            "`title` must be a string, got i64"
        );
    }

    #[test]
    fn data_must_be_a_flat_map_of_scalars() {
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", data: \"x\" }"),
            "`data` must be a map, got string"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", data: #{ inner: #{ a: 1 } } }"),
            "data value \"inner\" must be a string, number or bool, got map"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", data: #{ list: [1] } }"),
            "data value \"list\" must be a string, number or bool, got array"
        );
    }

    #[test]
    fn reserved_data_keys_are_rejected() {
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", data: #{ from: \"x\" } }"),
            "data key \"from\" is reserved by FCM"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", data: #{ message_type: \"x\" } }"),
            "data key \"message_type\" is reserved by FCM"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", data: #{ \"google.c\": \"x\" } }"),
            "data key \"google.c\" is reserved by FCM (keys starting with \"google\" or \"gcm\")"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", data: #{ gcm_id: \"x\" } }"),
            "data key \"gcm_id\" is reserved by FCM (keys starting with \"google\" or \"gcm\")"
        );
    }

    #[test]
    fn android_and_apns_must_be_maps() {
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", android: \"high\" }"),
            "`android` must be a map, got string"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", apns: [1] }"),
            "`apns` must be a map, got array"
        );
        assert_eq!(
            decision_error(
                "  #{ action: \"send\", token: \"t\", android: #{ priority: \"urgent\" } }"
            ),
            "android.priority must be \"normal\" or \"high\", got \"urgent\""
        );
    }

    #[test]
    fn drop_decisions_need_a_reason_and_nothing_else() {
        assert_eq!(
            decision_error("  #{ action: \"drop\" }"),
            "a drop decision needs a `reason`"
        );
        assert_eq!(
            decision_error("  #{ action: \"drop\", reason: \"x\", token: \"t\" }"),
            "`token` is not used by a drop decision"
        );
    }

    #[test]
    fn keys_of_other_actions_are_rejected() {
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", at: 5 }"),
            "`at` is only for action \"later\" (use later(decision, when))"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", reason: \"x\" }"),
            "`reason` is only for action \"drop\""
        );
        assert_eq!(
            decision_error("  #{ action: \"later\", token: \"t\", at: 5, now: true }"),
            "`now` is not used by a later decision"
        );
        assert_eq!(
            decision_error("  #{ action: \"send\", token: \"t\", now: \"yes\" }"),
            "`now` must be true or false, got string"
        );
    }

    #[test]
    fn later_decisions_need_a_valid_at() {
        assert_eq!(
            decision_error("  #{ action: \"later\", token: \"t\" }"),
            "a later decision needs `at` (a time \"YYYYMMDDHHMMSS\" or unix ms)"
        );
        assert_eq!(
            decision_error("  #{ action: \"later\", token: \"t\", at: \"tomorrow\" }"),
            "`at` \"tomorrow\" is not YYYYMMDDHHMMSS"
        );
        assert_eq!(
            decision_error("  #{ action: \"later\", token: \"t\", at: 1.5 }"),
            "`at` must be a time \"YYYYMMDDHHMMSS\" or unix ms, got f64"
        );
        assert_eq!(
            run_body(
                "  #{ action: \"later\", token: \"t\", at: \"20240515090000\" }",
                &sample(),
                0
            ),
            Ok(Decision::Later {
                at_ms: kst("20240515090000"),
                push: token_push("t")
            })
        );
    }

    #[test]
    fn decision_serializes_with_an_action_tag() {
        let decision = Decision::Later {
            at_ms: 5,
            push: Push {
                data: [("k".to_string(), "v".to_string())].into(),
                ..token_push("t")
            },
        };
        let json = serde_json::to_value(&decision).unwrap();
        assert_eq!(
            json,
            json!({"action": "later", "at_ms": 5, "push": {"target": {"token": "t"}, "data": {"k": "v"}}})
        );
        assert_eq!(serde_json::from_value::<Decision>(json).unwrap(), decision);
        assert_eq!(
            serde_json::to_value(Decision::Drop { reason: "r".into() }).unwrap(),
            json!({"action": "drop", "reason": "r"})
        );
    }
}
