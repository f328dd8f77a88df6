//! The sandboxed Rhai engine that decides, per port, what happens to each push.
//!
//! A port's script defines `fn route(msg)`; pushgate calls it once per stored message and turns
//! the object map it returns into a [`Decision`]: send now, send later, or drop. The operator's
//! reference for writing scripts is `docs/scripts.md`; keep the two in step.
//!
//! Invariants:
//! - Scripts are pure. Nothing here does I/O, reads the clock or sleeps: every helper that
//!   needs "now" reads the `now_ms` passed to [`RouteEngine::route`], so a decision can be
//!   replayed (the console's "try on a stored message") and tested with fixed times.
//! - Scripts are bounded: operations, call depth, expression depth, data sizes and a
//!   wall-clock deadline ([`Limits`]). A script that breaks a bound fails with a
//!   [`RouteError`]; it never takes down the port.
//! - The returned map is validated strictly (unknown keys, targets, FCM's data rules), so a
//!   typo in a script shows up as a `script_error` with a clear message instead of a push that
//!   FCM rejects or, worse, one that silently goes out wrong.
//!
//! Layout: `sandbox` builds the bounded engine and words its failures; `decision` reads the
//! map a script returns into a [`Decision`]; `time` parses and formats local times and
//! registers the clock functions scripts call; `functions` registers the rest of the script
//! API (`send_token`, `drop`, `later`, `mask`, …).

mod decision;
mod functions;
mod sandbox;
mod time;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Position, Scope};

use crate::push::Decision;
use crate::push::fields::STANDARD_FIELDS;
use decision::read_decision;
use sandbox::{DeadlineGuard, route_error};

pub use functions::{mask, mask_phone};
pub use time::{format_local, parse_reserved_time, try_format_local};

/// What one script run may consume. A zero disables that bound (as in Rhai).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations per `route()` call; the deterministic bound on CPU.
    pub max_operations: u64,
    /// Nested function calls; stops runaway recursion before the native stack does.
    pub max_call_levels: usize,
    /// Expression nesting, checked when compiling; keeps the parser's recursion bounded.
    pub max_expr_depth: usize,
    /// Bytes of string data in one value (the strings inside a map or array add up).
    pub max_string_size: usize,
    /// Items in one array (nested arrays add up).
    pub max_array_size: usize,
    /// Entries in one object map (nested maps add up).
    pub max_map_size: usize,
    /// Wall-clock bound per `route()` call, for what the operation count does not see
    /// (a slow machine, an expensive built-in).
    pub deadline: Duration,
}

impl Default for Limits {
    /// Generous for routing (a typical script takes a few hundred operations and well under a
    /// millisecond) and small enough that a bad script cannot stall a port: FCM's own message
    /// limit is 4 KiB, so 16 KiB of strings leaves room for the message and what is built from it.
    fn default() -> Self {
        Self {
            max_operations: 100_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 16 * 1024,
            max_array_size: 1024,
            max_map_size: 256,
            deadline: Duration::from_millis(50),
        }
    }
}

/// Shared by every port; Send + Sync (rhai `sync` feature); built once.
#[derive(Debug)]
pub struct RouteEngine {
    engine: Engine,
    limits: Limits,
    zone: Tz,
    /// The configured apps a decision's `app` may name; empty = any (no app is
    /// configured, so nothing is sent yet).
    apps: std::sync::RwLock<Arc<Vec<String>>>,
    /// The configured `[[fallback]]` rungs a decision's `fallback` may name.
    rungs: std::sync::RwLock<Arc<Vec<String>>>,
}

/// A script that compiled and defines `route(msg)`. Cheap to clone: ports share the AST.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    ast: Arc<AST>,
    /// Where the script came from, for messages and logs.
    pub path: String,
}

/// A script that cannot be used: it does not parse, or has no `route(msg)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct CompileError {
    pub path: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    pub message: String,
}

/// Why one `route()` call produced no decision. Stored with the record (`script_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{line}:{column}: {message}")]
pub struct RouteError {
    pub message: String,
    /// 1-based; 0 when the error has no position (e.g. the returned map is invalid).
    pub line: usize,
    /// 1-based; 0 when the error has no position.
    pub column: usize,
}

/// What a function registered for scripts returns: an `Err` fails the script at the calling line.
type HelperResult<T> = Result<T, Box<EvalAltResult>>;

impl RouteEngine {
    pub fn new(limits: Limits, zone: Tz) -> Self {
        let mut engine = sandbox::bounded_engine(&limits);

        functions::register_decision_helpers(&mut engine, zone);
        time::register_time_helpers(&mut engine, zone);
        functions::register_text_helpers(&mut engine);

        Self {
            engine,
            limits,
            zone,
            apps: std::sync::RwLock::new(Arc::new(Vec::new())),
            rungs: std::sync::RwLock::new(Arc::new(Vec::new())),
        }
    }

    /// The apps a decision's `app` may name (set at start and by every reload).
    pub fn set_apps(&self, apps: impl IntoIterator<Item = String>) {
        if let Ok(mut slot) = self.apps.write() {
            *slot = Arc::new(apps.into_iter().collect());
        }
    }

    /// The `[[fallback]]` rungs a decision's `fallback` may name (set at start and by
    /// every reload).
    pub fn set_rungs(&self, rungs: impl IntoIterator<Item = String>) {
        if let Ok(mut slot) = self.rungs.write() {
            *slot = Arc::new(rungs.into_iter().collect());
        }
    }

    /// Every rung a decision's `fallback` names must be configured: a typo fails as a
    /// script error, not as a customer who never gets the SMS.
    fn check_rungs(&self, decision: &Decision) -> Result<(), RouteError> {
        let push = match decision {
            Decision::Send { push } | Decision::Later { push, .. } => push,
            Decision::Drop { .. } => return Ok(()),
        };
        let rungs = self.rungs.read().map(|r| r.clone()).unwrap_or_default();
        let Some(unknown) = push.fallback.iter().find(|name| !rungs.contains(name)) else {
            return Ok(());
        };
        let known = if rungs.is_empty() {
            "none is configured".to_owned()
        } else {
            rungs.join(", ")
        };
        Err(RouteError {
            message: format!(
                "`fallback` names {unknown:?}, which is not a configured [[fallback]] (rungs: {known})"
            ),
            line: 0,
            column: 0,
        })
    }

    /// A decision's `app` must be configured: a typo fails as a script error, not as
    /// pushes waiting for an app that never comes.
    fn check_app(&self, decision: &Decision) -> Result<(), RouteError> {
        let push = match decision {
            Decision::Send { push } | Decision::Later { push, .. } => push,
            Decision::Drop { .. } => return Ok(()),
        };
        let Some(app) = &push.app else {
            return Ok(());
        };
        let apps = self.apps.read().map(|a| a.clone()).unwrap_or_default();
        if apps.is_empty() || apps.contains(app) {
            return Ok(());
        }
        Err(RouteError {
            message: format!(
                "`app` = {app:?} is not a configured app (apps: {})",
                apps.join(", ")
            ),
            line: 0,
            column: 0,
        })
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Compile once. Fails if the source does not parse, or defines no `route` function
    /// taking one parameter. `path` names the script in errors and logs.
    pub fn compile(&self, path: &str, source: &str) -> Result<CompiledRoute, CompileError> {
        let mut ast = self.engine.compile(source).map_err(|err| {
            let (line, column) = line_column(err.position());
            CompileError {
                path: path.to_string(),
                line,
                column,
                message: err.err_type().to_string(),
            }
        })?;

        let missing_route = |message: String| CompileError {
            path: path.to_string(),
            line: 1,
            column: 1,
            message,
        };
        let route_arities: Vec<usize> = ast
            .iter_functions()
            .filter(|f| f.name == "route")
            .map(|f| f.params.len())
            .collect();
        if route_arities.is_empty() {
            return Err(missing_route(
                "the script defines no `fn route(msg)`".to_string(),
            ));
        }
        if !route_arities.contains(&1) {
            return Err(missing_route(format!(
                "`route` must take exactly one parameter (msg), it takes {}",
                route_arities[0]
            )));
        }

        ast.set_source(path);
        Ok(CompiledRoute {
            ast: Arc::new(ast),
            path: path.to_string(),
        })
    }

    /// Run `route(msg)`; pure function of (msg, now_ms): helpers like `now()` read `now_ms`,
    /// not the clock. Runs on the calling thread (callers on the async runtime use
    /// `spawn_blocking`). Enforces [`Limits`], including the wall-clock deadline: a
    /// thread-local deadline checked from `Engine::on_progress`.
    ///
    /// A `send` decision on a message whose `sndn_rsev_hour` is later than `now_ms` becomes
    /// `Later` at that time, unless the decision says `now: true`.
    pub fn route(
        &self,
        script: &CompiledRoute,
        msg: &serde_json::Map<String, serde_json::Value>,
        now_ms: i64,
    ) -> Result<Decision, RouteError> {
        let arg = message_to_dynamic(msg)?;

        // Top-level statements are not run: functions cannot see them anyway, and running
        // them per message would only cost time. `now_ms` travels as the call's tag so every
        // helper reads the same instant.
        let options = CallFnOptions::new().eval_ast(false).with_tag(now_ms);
        let deadline =
            (!self.limits.deadline.is_zero()).then(|| Instant::now() + self.limits.deadline);
        let returned = {
            let _deadline = DeadlineGuard::arm(deadline);
            self.engine.call_fn_with_options::<Dynamic>(
                options,
                &mut Scope::new(),
                &script.ast,
                "route",
                (arg,),
            )
        }
        .and_then(|returned| {
            // Rhai does not size-check a map grown by index assignment (`m[k] = v`), so the
            // result is checked as a whole before anything reads it.
            self.engine.ensure_data_size_within_limits(&returned)?;
            Ok(returned)
        })
        .map_err(|err| route_error(*err, &self.limits))?;

        let (decision, send_now) =
            read_decision(returned, self.zone).map_err(|message| RouteError {
                message,
                line: 0,
                column: 0,
            })?;

        self.check_app(&decision)?;
        self.check_rungs(&decision)?;
        Ok(match decision {
            Decision::Send { push } if !send_now => match reserved_time(msg, self.zone) {
                Some(at_ms) if at_ms > now_ms => Decision::Later { at_ms, push },
                _ => Decision::Send { push },
            },
            other => other,
        })
    }
}

/// The message's reservation, if it has a valid one. Ingest rejects invalid ones before
/// routing, so an invalid value here can only mean "now".
fn reserved_time(msg: &serde_json::Map<String, serde_json::Value>, zone: Tz) -> Option<i64> {
    let text = msg.get("sndn_rsev_hour")?.as_str()?;
    parse_reserved_time(text, zone).ok().flatten()
}

/// The message as the script sees it: every field, plus the standard ones as "" when missing.
fn message_to_dynamic(
    msg: &serde_json::Map<String, serde_json::Value>,
) -> Result<Dynamic, RouteError> {
    let mut map = Map::new();
    for (key, value) in msg {
        let value = rhai::serde::to_dynamic(value).map_err(|err| RouteError {
            message: format!("field {key:?} cannot be given to the script: {err}"),
            line: 0,
            column: 0,
        })?;
        map.insert(key.as_str().into(), value);
    }
    for field in STANDARD_FIELDS {
        let value = map.entry(field.into()).or_insert_with(|| "".into());
        // A JSON null in a standard field means "not given", like a missing field.
        if value.is_unit() {
            *value = "".into();
        }
    }
    Ok(map.into())
}

fn line_column(position: Position) -> (usize, usize) {
    (
        position.line().unwrap_or(0),
        position.position().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{Push, Target};
    use crate::script::fixtures::*;
    use serde_json::json;

    fn compile_error(source: &str) -> CompileError {
        engine().compile("ports/x.rhai", source).unwrap_err()
    }

    // --- compiling -------------------------------------------------------------------------

    #[test]
    fn a_fallback_rung_that_is_not_configured_is_a_script_error_listing_the_rungs() {
        let err = run_body(
            "  let d = send_token(\"t\", \"\", \"\");\n  d.fallback = [\"alimtalk\", \"kakao\"];\n  d",
            &sample(),
            0,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "`fallback` names \"kakao\", which is not a configured [[fallback]] (rungs: alimtalk, sms)"
        );
    }

    #[test]
    fn engine_is_shareable_between_port_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RouteEngine>();
        assert_send_sync::<CompiledRoute>();
    }

    #[test]
    fn syntax_error_reports_path_line_and_column() {
        let err = compile_error("fn route(msg) {\n    let x = ;\n}");
        assert_eq!(err.to_string(), "ports/x.rhai:2:13: Unexpected ';'");
        assert_eq!((err.line, err.column), (2, 13));
    }

    #[test]
    fn undefined_variable_is_a_compile_error() {
        let err = compile_error("fn route(msg) {\n  devce_id\n}");
        assert_eq!(
            err.to_string(),
            "ports/x.rhai:2:3: Undefined variable: devce_id"
        );
    }

    #[test]
    fn script_without_route_is_rejected_at_1_1() {
        let err = compile_error("fn other(msg) { 1 }");
        assert_eq!(
            err.to_string(),
            "ports/x.rhai:1:1: the script defines no `fn route(msg)`"
        );
    }

    #[test]
    fn route_with_two_parameters_is_rejected() {
        let err = compile_error("fn route(msg, extra) { 1 }");
        assert_eq!(
            err.message,
            "`route` must take exactly one parameter (msg), it takes 2"
        );
        assert_eq!((err.line, err.column), (1, 1));
    }

    #[test]
    fn import_is_rejected_at_compile_time() {
        let err = compile_error("import \"secrets\" as s;\nfn route(msg) { 1 }");
        assert_eq!(
            err.to_string(),
            "ports/x.rhai:1:1: 'import' is a reserved keyword"
        );
    }

    #[test]
    fn eval_is_rejected_at_compile_time() {
        let err = compile_error("fn route(msg) {\n    eval(\"1\")\n}");
        assert_eq!(
            err.to_string(),
            "ports/x.rhai:2:5: reserved keyword 'eval' is disabled"
        );
    }

    #[test]
    fn expression_depth_limit_is_checked_at_compile_time() {
        let nested = format!("{}1{}", "(".repeat(80), ")".repeat(80));
        let err = compile_error(&format!("fn route(msg) {{\n  {nested}\n}}"));
        assert_eq!(err.message, "Expression exceeds maximum complexity");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn compiled_route_keeps_its_path() {
        let script = engine().compile("scripts/transfer.rhai", TRANSFER).unwrap();
        assert_eq!(script.path, "scripts/transfer.rhai");
    }

    // --- what the script receives ------------------------------------------------------------

    #[test]
    fn standard_fields_are_present_even_when_missing_or_null() {
        let message = msg(json!({"uniqueKey": "k1", "csno": null}));
        let body = "drop(`[${msg.device_id}][${msg.csno}][${msg.push_grp_id}][${msg.uniqueKey}]`)";
        assert_eq!(
            run_body(body, &message, afternoon()),
            Ok(Decision::Drop {
                reason: "[][][][k1]".to_string()
            })
        );
    }

    #[test]
    fn extra_fields_reach_the_script_with_their_types() {
        let message = msg(json!({"uniqueKey": "k1", "amount": 50000, "vip": true}));
        let body = "drop(`${msg.amount + 1} ${type_of(msg.vip)} ${\"other\" in msg}`)";
        assert_eq!(
            run_body(body, &message, afternoon()),
            Ok(Decision::Drop {
                reason: "50001 bool false".to_string()
            })
        );
    }

    // --- default scheduling from sndn_rsev_hour ----------------------------------------------

    fn reserved(at: &str) -> Msg {
        let mut message = sample();
        message.insert("sndn_rsev_hour".into(), json!(at));
        message
    }

    const SEND: &str = "  send_token(\"t\", \"\", \"\")";

    #[test]
    fn future_reservation_turns_send_into_later() {
        assert_eq!(
            run_body(SEND, &reserved("20240514180000"), afternoon()),
            Ok(Decision::Later {
                at_ms: kst("20240514180000"),
                push: token_push("t")
            })
        );
    }

    #[test]
    fn past_empty_or_invalid_reservation_sends_now() {
        let now = Decision::Send {
            push: token_push("t"),
        };
        for at in ["20240514090000", "", "   ", "2024133"] {
            assert_eq!(
                run_body(SEND, &reserved(at), afternoon()),
                Ok(now.clone()),
                "{at:?}"
            );
        }
    }

    #[test]
    fn explicit_now_overrides_the_reservation() {
        let body = "  let d = send_token(\"t\", \"\", \"\");\n  d.now = true;\n  d";
        assert_eq!(
            run_body(body, &reserved("20240514180000"), afternoon()),
            Ok(Decision::Send {
                push: token_push("t")
            })
        );
    }

    #[test]
    fn explicit_later_overrides_the_reservation() {
        let body = "  later(send_token(\"t\", \"\", \"\"), \"20240514170000\")";
        assert_eq!(
            run_body(body, &reserved("20240514180000"), afternoon()),
            Ok(Decision::Later {
                at_ms: kst("20240514170000"),
                push: token_push("t")
            })
        );
    }

    // --- docs/scripts.md ----------------------------------------------------------------------

    const REFERENCE: &str = include_str!("../../docs/scripts.md");

    /// The complete scripts in the reference (code blocks with a `route` and no `...`).
    fn reference_scripts() -> Vec<&'static str> {
        REFERENCE
            .split("```rust\n")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .filter(|code| code.contains("fn route(msg) {") && !code.contains("..."))
            .collect()
    }

    #[test]
    fn every_complete_script_in_the_reference_compiles() {
        let scripts = reference_scripts();
        assert!(scripts.len() >= 4, "found {}", scripts.len());
        for source in scripts {
            if let Err(err) = engine().compile("docs/scripts.md", source) {
                panic!("{err}\n{source}");
            }
        }
    }

    #[test]
    fn reference_examples_behave_as_described() {
        let scripts = reference_scripts();
        let find = |needle: &str| *scripts.iter().find(|s| s.contains(needle)).unwrap();

        let mut message = sample();
        message.insert("D_servicename".into(), json!("XYZ"));
        let err = run(find("switch"), &message, afternoon()).unwrap_err();
        let described = format!("`{err}`");
        assert!(REFERENCE.contains(&described), "{described}");

        // Saturday 14:30 → Monday 09:00.
        message.insert("D_servicename".into(), json!("STMT"));
        let decision = run(find("days_to_monday"), &message, kst("20240518143000")).unwrap();
        assert!(
            matches!(decision, Decision::Later { at_ms, .. } if at_ms == kst("20240520090000")),
            "{decision:?}"
        );
        let Decision::Send { push } = run(find("days_to_monday"), &message, afternoon()).unwrap()
        else {
            panic!("a weekday statement is sent now");
        };
        assert_eq!(
            push.data.get("phone").map(String::as_str),
            Some("010-****-5678")
        );
        assert_eq!(push.title, None);
    }

    // --- the shipped example scripts ---------------------------------------------------------

    fn transfer(message: &Msg, now_ms: i64) -> Result<Decision, RouteError> {
        let engine = engine();
        let script = engine.compile("scripts/transfer.rhai", TRANSFER).unwrap();
        engine.route(&script, message, now_ms)
    }

    fn notice(source: &str, message: &Msg, now_ms: i64) -> Result<Decision, RouteError> {
        let engine = engine();
        let script = engine.compile("scripts/notice.rhai", source).unwrap();
        engine.route(&script, message, now_ms)
    }

    fn transfer_push() -> Push {
        Push {
            title: Some("이체 알림".to_string()),
            body: Some("홍길동님 계좌에서 50,000원이 출금되었습니다.".to_string()),
            data: [
                ("D_servicename".to_string(), "TRF".to_string()),
                ("uniqueKey".to_string(), "TR20240514000001".to_string()),
            ]
            .into(),
            android: Some(json!({"priority": "high"})),
            ..token_push("fcm-token-abc")
        }
    }

    #[test]
    fn transfer_script_sends_to_the_device_with_high_priority() {
        assert_eq!(
            transfer(&sample(), afternoon()),
            Ok(Decision::Send {
                push: transfer_push()
            })
        );
    }

    #[test]
    fn transfer_script_drops_without_a_device_token() {
        let expected = Ok(Decision::Drop {
            reason: "no device token".to_string(),
        });
        let mut message = sample();
        message.insert("device_id".into(), json!("   "));
        assert_eq!(transfer(&message, afternoon()), expected);
        message.remove("device_id");
        assert_eq!(transfer(&message, afternoon()), expected);
    }

    #[test]
    fn transfer_script_honours_the_reservation() {
        assert_eq!(
            transfer(&reserved("20240514180000"), afternoon()),
            Ok(Decision::Later {
                at_ms: kst("20240514180000"),
                push: transfer_push()
            })
        );
    }

    fn notice_msg(service: &str, group: &str) -> Msg {
        msg(json!({
            "uniqueKey": "NT0001",
            "sndn_rsev_hour": "",
            "device_id": "fcm-token-abc",
            "msg_title": "(광고) 5월 이벤트",
            "msg_contents": "지금 가입하면 수수료 0원",
            "D_servicename": service,
            "push_grp_id": group
        }))
    }

    fn notice_push(target: Target, service: &str) -> Push {
        Push {
            target,
            title: Some("(광고) 5월 이벤트".to_string()),
            body: Some("지금 가입하면 수수료 0원".to_string()),
            data: [
                ("D_servicename".to_string(), service.to_string()),
                ("uniqueKey".to_string(), "NT0001".to_string()),
            ]
            .into(),
            ..token_push("x")
        }
    }

    #[test]
    fn notice_script_sends_to_the_group_topic_when_given() {
        assert_eq!(
            notice(NOTICE, &notice_msg("NTC", "all-customers"), afternoon()),
            Ok(Decision::Send {
                push: notice_push(Target::Topic("all-customers".to_string()), "NTC")
            })
        );
    }

    #[test]
    fn notice_script_sends_to_the_token_without_a_group() {
        assert_eq!(
            notice(NOTICE, &notice_msg("NTC", ""), afternoon()),
            Ok(Decision::Send {
                push: notice_push(Target::Token("fcm-token-abc".to_string()), "NTC")
            })
        );
    }

    #[test]
    fn notice_script_drops_without_token_or_group() {
        let mut message = notice_msg("NTC", "");
        message.insert("device_id".into(), json!(""));
        assert_eq!(
            notice(NOTICE, &message, afternoon()),
            Ok(Decision::Drop {
                reason: "no device token or group".to_string()
            })
        );
    }

    #[test]
    fn notice_script_holds_night_marketing_until_eight() {
        let push = notice_push(Target::Token("fcm-token-abc".to_string()), "MKT");
        // 22:30 → tomorrow 08:00; 03:00 → today 08:00.
        assert_eq!(
            notice(NOTICE, &notice_msg("MKT", ""), kst("20240514223000")),
            Ok(Decision::Later {
                at_ms: kst("20240515080000"),
                push: push.clone()
            })
        );
        assert_eq!(
            notice(NOTICE, &notice_msg("MKT", ""), kst("20240515030000")),
            Ok(Decision::Later {
                at_ms: kst("20240515080000"),
                push: push.clone()
            })
        );
        // The boundaries: 21:00 is night, 08:00 is day.
        assert_eq!(
            notice(NOTICE, &notice_msg("MKT", ""), kst("20240514210000")),
            Ok(Decision::Later {
                at_ms: kst("20240515080000"),
                push: push.clone()
            })
        );
        assert_eq!(
            notice(NOTICE, &notice_msg("MKT", ""), kst("20240515080000")),
            Ok(Decision::Send { push })
        );
    }

    #[test]
    fn notice_script_judges_marketing_by_its_reserved_time() {
        let push = notice_push(Target::Token("fcm-token-abc".to_string()), "MKT");
        // Arrives at night, reserved for 10:00: the reservation stands.
        let mut message = notice_msg("MKT", "");
        message.insert("sndn_rsev_hour".into(), json!("20240515100000"));
        assert_eq!(
            notice(NOTICE, &message, kst("20240514223000")),
            Ok(Decision::Later {
                at_ms: kst("20240515100000"),
                push: push.clone()
            })
        );
        // Arrives in the afternoon, reserved for 23:00: held until the next 08:00.
        message.insert("sndn_rsev_hour".into(), json!("20240514230000"));
        assert_eq!(
            notice(NOTICE, &message, afternoon()),
            Ok(Decision::Later {
                at_ms: kst("20240515080000"),
                push
            })
        );
    }

    #[test]
    fn notice_script_sends_non_marketing_at_night() {
        assert_eq!(
            notice(NOTICE, &notice_msg("NTC", ""), kst("20240514233000")),
            Ok(Decision::Send {
                push: notice_push(Target::Token("fcm-token-abc".to_string()), "NTC")
            })
        );
    }

    #[test]
    fn notice_script_can_drop_night_marketing_instead() {
        let dropping = NOTICE.replace("    \"later\"\n", "    \"drop\"\n");
        assert_ne!(dropping, NOTICE, "the switch in notice.rhai moved");
        assert_eq!(
            notice(
                &dropping,
                &notice_msg("MKT", "all-customers"),
                kst("20240514223000")
            ),
            Ok(Decision::Drop {
                reason: "marketing at night (21:00-08:00 KST)".to_string()
            })
        );
    }

    #[test]
    fn notice_script_reports_a_bad_group_name_at_its_line() {
        let err = notice(NOTICE, &notice_msg("NTC", "전체 고객"), afternoon()).unwrap_err();
        let line = NOTICE
            .lines()
            .position(|l| l.contains("send_topic("))
            .unwrap()
            + 1;
        assert_eq!(err.line, line);
        assert!(
            err.message.starts_with("send_topic: topic \"전체 고객\""),
            "{err}"
        );
    }
}
