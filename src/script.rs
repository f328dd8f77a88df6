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

use std::cell::Cell;

use crate::push::fields::STANDARD_FIELDS;
use crate::push::{Decision, Push, Target};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;
use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, BitFieldPackage, LogicPackage, MoreStringPackage,
    Package,
};
use rhai::{
    AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Map, NativeCallContext, Position, Scope,
};

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

/// The layout of `sndn_rsev_hour` and of every time string the helpers take or give.
const TIME_FORMAT: &str = "%Y%m%d%H%M%S";

/// Keys a decision map may have; anything else is a typo (`titel`) and is rejected.
const DECISION_KEYS: [&str; 13] = [
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
];

/// The value `on_progress` returns to stop a script; recognised again in [`route_error`].
const DEADLINE_TOKEN: &str = "pushgate:deadline";

/// Reading the clock on every operation would cost more than many operations themselves;
/// every 64th keeps the overshoot to a few microseconds.
const DEADLINE_CHECK_EVERY: u64 = 64;

thread_local! {
    /// The deadline of the `route()` call running on this thread. Thread-local because the
    /// engine is shared by every port and `on_progress` gets no per-call context.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Arms this thread's deadline for one call and restores the previous one when dropped,
/// so an early return or a panic cannot leave a stale deadline behind.
struct DeadlineGuard(Option<Instant>);

impl DeadlineGuard {
    fn arm(deadline: Option<Instant>) -> Self {
        Self(DEADLINE.replace(deadline))
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.set(self.0);
    }
}

impl RouteEngine {
    pub fn new(limits: Limits, zone: Tz) -> Self {
        // A raw engine plus chosen packages, rather than Engine::new(): the standard set
        // includes `sleep` (blocks the thread past any deadline) and `timestamp` (reads the
        // clock), and neither belongs in a pure, bounded script.
        let mut engine = Engine::new_raw();
        ArithmeticPackage::new().register_into_engine(&mut engine);
        LogicPackage::new().register_into_engine(&mut engine);
        BitFieldPackage::new().register_into_engine(&mut engine);
        BasicMathPackage::new().register_into_engine(&mut engine);
        BasicStringPackage::new().register_into_engine(&mut engine);
        MoreStringPackage::new().register_into_engine(&mut engine);
        BasicArrayPackage::new().register_into_engine(&mut engine);
        BasicMapPackage::new().register_into_engine(&mut engine);
        BasicIteratorPackage::new().register_into_engine(&mut engine);
        BasicFnPackage::new().register_into_engine(&mut engine);

        // `eval` would run text built at run time, out of reach of compile-time checks.
        engine.disable_symbol("eval");
        // An unknown variable is a compile error, so typos show up when a script is saved.
        engine.set_strict_variables(true);

        engine.set_max_operations(limits.max_operations);
        engine.set_max_call_levels(limits.max_call_levels);
        engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
        engine.set_max_string_size(limits.max_string_size);
        engine.set_max_array_size(limits.max_array_size);
        engine.set_max_map_size(limits.max_map_size);

        engine.on_progress(|operations| {
            if operations % DEADLINE_CHECK_EVERY != 0 {
                return None;
            }
            let deadline = DEADLINE.get()?;
            (Instant::now() >= deadline).then(|| Dynamic::from(DEADLINE_TOKEN))
        });

        // Scripts have no stdout: what they print is a debug log line, tagged with the script.
        engine.on_print(|text| tracing::debug!(target: "pushgate::script", "{text}"));
        engine.on_debug(|text, source, position| {
            tracing::debug!(
                target: "pushgate::script",
                script = source.unwrap_or(""),
                at = %position,
                "{text}"
            );
        });

        register_decision_helpers(&mut engine, zone);
        register_time_helpers(&mut engine, zone);
        register_text_helpers(&mut engine);

        Self {
            engine,
            limits,
            zone,
        }
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

        Ok(match decision {
            Decision::Send { push } if !send_now => match reserved_time(msg, self.zone) {
                Some(at_ms) if at_ms > now_ms => Decision::Later { at_ms, push },
                _ => Decision::Send { push },
            },
            other => other,
        })
    }
}

/// Parse a reserved time `YYYYMMDDHHMMSS` in `zone` to unix ms. Empty/whitespace -> Ok(None)
/// (= now). Used by ingest validation too, so the error names the field.
pub fn parse_reserved_time(text: &str, zone: Tz) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    parse_local_time(text, zone)
        .map(Some)
        .map_err(|problem| format!("sndn_rsev_hour {problem}"))
}

/// Format unix ms in `zone` with a chrono strftime format. Returns "" when `ms` is out of
/// chrono's range or `fmt` is not a valid format, so a display never panics; use
/// [`try_format_local`] to learn which.
pub fn format_local(ms: i64, zone: Tz, fmt: &str) -> String {
    try_format_local(ms, zone, fmt).unwrap_or_default()
}

/// [`format_local`] that says what was wrong.
pub fn try_format_local(ms: i64, zone: Tz, fmt: &str) -> Result<String, String> {
    let local = local_time(ms, zone)?;
    let mut text = String::new();
    // chrono reports a bad specifier (`%Q`) as a fmt::Error from Display; to_string() would panic.
    write!(text, "{}", local.format(fmt))
        .map_err(|_| format!("{fmt:?} is not a valid time format"))?;
    Ok(text)
}

/// Validate a time string from a script or a message; the error says what is wrong with it.
fn parse_local_time(text: &str, zone: Tz) -> Result<i64, String> {
    // chrono alone would accept signs and short fields; the contract is exactly 14 digits.
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not YYYYMMDDHHMMSS"));
    }
    let naive = NaiveDateTime::parse_from_str(text, TIME_FORMAT)
        .map_err(|_| format!("{text:?} is not a valid date and time"))?;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| format!("{text:?} does not exist in {zone} (a daylight-saving gap)"))
}

fn local_time(ms: i64, zone: Tz) -> Result<DateTime<Tz>, String> {
    DateTime::from_timestamp_millis(ms)
        .map(|utc| utc.with_timezone(&zone))
        .ok_or_else(|| format!("time {ms} ms is out of range"))
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

/// Turn a Rhai failure into what operators read: the innermost cause, where it happened,
/// and the limits in pushgate's words rather than Rhai's.
fn route_error(mut err: EvalAltResult, limits: &Limits) -> RouteError {
    // An error inside a script-defined function arrives wrapped once per call level; the
    // innermost error points at the failing line, the wrappers only at the calls.
    let mut call_position = Position::NONE;
    let mut innermost = loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(_, _, inner, position) => {
                if !position.is_none() {
                    call_position = position;
                }
                err = *inner;
            }
            other => break other,
        }
    };
    let position = match innermost.take_position() {
        p if p.is_none() => call_position,
        p => p,
    };

    let message = match &innermost {
        EvalAltResult::ErrorRuntime(value, _) if value.is_unit() => {
            "the script threw an error without a message".to_string()
        }
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("script exceeded {} operations", limits.max_operations)
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == DEADLINE_TOKEN => {
            format!(
                "script exceeded its {} ms deadline",
                limits.deadline.as_millis()
            )
        }
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "script exceeded {} nested function calls",
            limits.max_call_levels
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) if what.starts_with("Length of string") => {
            format!(
                "script exceeded the string size limit ({} bytes in one value)",
                limits.max_string_size
            )
        }
        EvalAltResult::ErrorDataTooLarge(what, _) if what.starts_with("Size of array") => format!(
            "script exceeded the array size limit ({} items)",
            limits.max_array_size
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) if what.starts_with("Size of object map") => {
            format!(
                "script exceeded the map size limit ({} entries)",
                limits.max_map_size
            )
        }
        other => other.to_string(),
    };
    let (line, column) = line_column(position);
    RouteError {
        message,
        line,
        column,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the decision map
// ---------------------------------------------------------------------------------------------

/// Validate what `route()` returned. The flag is the decision's explicit `now: true`, which
/// overrides the message's reservation.
fn read_decision(returned: Dynamic, zone: Tz) -> Result<(Decision, bool), String> {
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
    Ok(Push {
        target: read_target(map)?,
        title: optional_text(map, "title")?,
        body: optional_text(map, "body")?,
        image: optional_text(map, "image")?,
        data: read_data(map)?,
        android: read_options(map, "android")?,
        apns: read_options(map, "apns")?,
    })
}

fn read_target(map: &Map) -> Result<Target, String> {
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
        "token" => check_token(&value).map(Target::Token),
        "topic" => check_topic(&value).map(Target::Topic),
        _ => check_condition(&value).map(Target::Condition),
    }
}

fn check_token(token: &str) -> Result<String, String> {
    if token.trim().is_empty() {
        return Err("token is blank".to_string());
    }
    Ok(token.to_string())
}

/// FCM's rule for topic names: `^[a-zA-Z0-9-_.~%]+$`, given bare or as `/topics/name`.
fn check_topic(topic: &str) -> Result<String, String> {
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

fn check_condition(condition: &str) -> Result<String, String> {
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

// ---------------------------------------------------------------------------------------------
// Helpers registered for scripts
// ---------------------------------------------------------------------------------------------

type HelperResult<T> = Result<T, Box<EvalAltResult>>;

fn send_decision(target_key: &str, target: String, title: &str, body: &str) -> Map {
    let mut map = Map::new();
    map.insert("action".into(), "send".into());
    map.insert(target_key.into(), target.into());
    map.insert("title".into(), title.into());
    map.insert("body".into(), body.into());
    map
}

fn register_decision_helpers(engine: &mut Engine, zone: Tz) {
    // Targets are checked here as well as in read_decision, so a bad token or topic is
    // reported at the line that built it.
    engine.register_fn(
        "send_token",
        |token: &str, title: &str, body: &str| -> HelperResult<Map> {
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

/// The instant this `route()` call runs at, as passed to [`RouteEngine::route`].
fn ctx_now(ctx: &NativeCallContext) -> HelperResult<i64> {
    ctx.tag()
        .and_then(|tag| tag.as_int().ok())
        .ok_or_else(|| "the current time is only known inside route()".into())
}

fn register_time_helpers(engine: &mut Engine, zone: Tz) {
    let at = move |ms: i64| -> HelperResult<DateTime<Tz>> { Ok(local_time(ms, zone)?) };
    let now = move |ctx: &NativeCallContext| -> HelperResult<DateTime<Tz>> { at(ctx_now(ctx)?) };

    engine.register_fn("now_ms", |ctx: NativeCallContext| ctx_now(&ctx));
    engine.register_fn(
        "now",
        move |ctx: NativeCallContext| -> HelperResult<String> {
            Ok(now(&ctx)?.format(TIME_FORMAT).to_string())
        },
    );
    engine.register_fn(
        "today",
        move |ctx: NativeCallContext| -> HelperResult<String> {
            Ok(now(&ctx)?.format("%Y%m%d").to_string())
        },
    );
    engine.register_fn("hour", move |ctx: NativeCallContext| -> HelperResult<i64> {
        Ok(i64::from(now(&ctx)?.hour()))
    });
    engine.register_fn("hour", move |ms: i64| -> HelperResult<i64> {
        Ok(i64::from(at(ms)?.hour()))
    });
    engine.register_fn(
        "minute",
        move |ctx: NativeCallContext| -> HelperResult<i64> { Ok(i64::from(now(&ctx)?.minute())) },
    );
    engine.register_fn("minute", move |ms: i64| -> HelperResult<i64> {
        Ok(i64::from(at(ms)?.minute()))
    });
    engine.register_fn(
        "weekday",
        move |ctx: NativeCallContext| -> HelperResult<i64> {
            Ok(i64::from(now(&ctx)?.weekday().number_from_monday()))
        },
    );
    engine.register_fn("weekday", move |ms: i64| -> HelperResult<i64> {
        Ok(i64::from(at(ms)?.weekday().number_from_monday()))
    });
    engine.register_fn(
        "format_time",
        move |ms: i64, fmt: &str| -> HelperResult<String> {
            try_format_local(ms, zone, fmt).map_err(|e| format!("format_time: {e}").into())
        },
    );
    engine.register_fn("parse_time", move |text: &str| -> HelperResult<i64> {
        parse_local_time(text.trim(), zone).map_err(|e| format!("parse_time: {e}").into())
    });
    engine.register_fn(
        "at_today",
        move |ctx: NativeCallContext, hh: i64, mm: i64| -> HelperResult<i64> {
            let date = now(&ctx)?.date_naive();
            local_ms_on(date, hh, mm, zone).map_err(|e| format!("at_today: {e}").into())
        },
    );
    engine.register_fn(
        "next_at",
        move |ctx: NativeCallContext, hh: i64, mm: i64| -> HelperResult<i64> {
            next_at(ctx_now(&ctx)?, hh, mm, zone).map_err(|e| format!("next_at: {e}").into())
        },
    );
    engine.register_fn(
        "next_at",
        move |hh: i64, mm: i64, from_ms: i64| -> HelperResult<i64> {
            next_at(from_ms, hh, mm, zone).map_err(|e| format!("next_at: {e}").into())
        },
    );
    engine.register_fn(
        "minutes_from_now",
        |ctx: NativeCallContext, minutes: i64| -> HelperResult<i64> {
            minutes
                .checked_mul(60_000)
                .and_then(|delta| ctx_now(&ctx).ok()?.checked_add(delta))
                .ok_or_else(|| {
                    format!("minutes_from_now: {minutes} minutes is out of range").into()
                })
        },
    );
    // When the push goes out if the script just sends it: the reservation, or now.
    engine.register_fn(
        "due_ms",
        move |ctx: NativeCallContext, msg: Map| -> HelperResult<i64> {
            let now_ms = ctx_now(&ctx)?;
            let reserved = msg
                .get("sndn_rsev_hour")
                .and_then(|v| v.clone().into_string().ok())
                .and_then(|text| parse_reserved_time(&text, zone).ok().flatten());
            Ok(reserved.filter(|&at| at > now_ms).unwrap_or(now_ms))
        },
    );
}

/// Unix ms of `hh:mm` local time on `date`.
fn local_ms_on(date: NaiveDate, hh: i64, mm: i64, zone: Tz) -> Result<i64, String> {
    let (Ok(h), Ok(m)) = (u32::try_from(hh), u32::try_from(mm)) else {
        return Err(format!("{hh}:{mm} is not a time of day"));
    };
    let naive = date
        .and_hms_opt(h, m, 0)
        .ok_or_else(|| format!("{hh}:{mm} is not a time of day"))?;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| format!("{hh:02}:{mm:02} does not exist on {date} in {zone}"))
}

/// The first `hh:mm` local time strictly after `from_ms`: today's if still ahead, else tomorrow's.
fn next_at(from_ms: i64, hh: i64, mm: i64, zone: Tz) -> Result<i64, String> {
    let date = local_time(from_ms, zone)?.date_naive();
    let today = local_ms_on(date, hh, mm, zone)?;
    if today > from_ms {
        return Ok(today);
    }
    let tomorrow = date
        .succ_opt()
        .ok_or_else(|| format!("time {from_ms} ms is out of range"))?;
    local_ms_on(tomorrow, hh, mm, zone)
}

fn register_text_helpers(engine: &mut Engine) {
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
    use super::*;
    use chrono_tz::Asia::Seoul;
    use serde_json::json;

    const TRANSFER: &str = include_str!("../scripts/transfer.rhai");
    const NOTICE: &str = include_str!("../scripts/notice.rhai");

    type Msg = serde_json::Map<String, serde_json::Value>;

    fn engine() -> RouteEngine {
        RouteEngine::new(Limits::default(), Seoul)
    }

    /// Unix ms of a Korean local time, for fixed `now_ms` values.
    fn kst(text: &str) -> i64 {
        parse_reserved_time(text, Seoul).unwrap().unwrap()
    }

    /// Tuesday 2024-05-14 14:30:15 KST.
    fn afternoon() -> i64 {
        kst("20240514143015")
    }

    fn msg(value: serde_json::Value) -> Msg {
        value.as_object().unwrap().clone()
    }

    fn sample() -> Msg {
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
    fn run_body(body: &str, message: &Msg, now_ms: i64) -> Result<Decision, RouteError> {
        run(&format!("fn route(msg) {{\n{body}\n}}"), message, now_ms)
    }

    fn run(source: &str, message: &Msg, now_ms: i64) -> Result<Decision, RouteError> {
        let engine = engine();
        let script = engine.compile("test.rhai", source).unwrap();
        engine.route(&script, message, now_ms)
    }

    /// Evaluate one expression inside route() and return what the script got, as a drop reason.
    fn eval_text(expr: &str, now_ms: i64) -> String {
        match run_body(&format!("drop(`${{{expr}}}`)"), &sample(), now_ms) {
            Ok(Decision::Drop { reason }) => reason,
            other => panic!("{expr}: {other:?}"),
        }
    }

    fn eval_error(body: &str) -> RouteError {
        run_body(body, &sample(), afternoon()).unwrap_err()
    }

    /// The validation message for a returned decision (no position: the map has none).
    fn decision_error(decision: &str) -> String {
        let err = eval_error(decision);
        assert_eq!((err.line, err.column), (0, 0), "{err}");
        err.message
    }

    fn token_push(token: &str) -> Push {
        Push {
            target: Target::Token(token.to_string()),
            title: None,
            body: None,
            image: None,
            data: BTreeMap::new(),
            android: None,
            apns: None,
        }
    }

    fn compile_error(source: &str) -> CompileError {
        engine().compile("ports/x.rhai", source).unwrap_err()
    }

    // --- compiling -------------------------------------------------------------------------

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
    fn clock_and_sleep_builtins_are_not_available() {
        assert_eq!(
            eval_error("  sleep(1)").message,
            "Function not found: sleep (i64)"
        );
        assert_eq!(
            eval_error("  timestamp()").message,
            "Function not found: timestamp ()"
        );
    }

    #[test]
    fn compiled_route_keeps_its_path() {
        let script = engine().compile("scripts/transfer.rhai", TRANSFER).unwrap();
        assert_eq!(script.path, "scripts/transfer.rhai");
    }

    // --- errors while running ----------------------------------------------------------------

    #[test]
    fn throw_reports_message_and_position_of_the_throw() {
        let err = eval_error("    let x = 1;\n    throw \"no route for \" + x;");
        assert_eq!(err.to_string(), "3:5: no route for 1");
    }

    #[test]
    fn throw_inside_a_script_function_points_at_the_throw() {
        let source = "fn check(m) {\n    throw \"bad\";\n}\nfn route(msg) {\n    check(msg)\n}";
        let err = run(source, &sample(), afternoon()).unwrap_err();
        assert_eq!(err.to_string(), "2:5: bad");
    }

    #[test]
    fn throw_without_message_still_says_something() {
        assert_eq!(
            eval_error("  throw;").to_string(),
            "2:3: the script threw an error without a message"
        );
    }

    #[test]
    fn endless_loop_stops_at_the_deadline() {
        let limits = Limits {
            max_operations: u64::MAX,
            deadline: Duration::from_millis(20),
            ..Limits::default()
        };
        // On its own thread, so a deadline that never fires fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let engine = RouteEngine::new(limits, Seoul);
            let script = engine
                .compile("t.rhai", "fn route(msg) {\n  loop { }\n}")
                .unwrap();
            let started = Instant::now();
            let result = engine.route(&script, &sample(), afternoon());
            let _ = tx.send((result, started.elapsed()));
        });
        let (result, elapsed) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the endless loop was not stopped");
        let err = result.unwrap_err();
        assert_eq!(err.message, "script exceeded its 20 ms deadline");
        // Rhai reports limits against the whole call, so they carry no position.
        assert_eq!((err.line, err.column), (0, 0));
        assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }

    #[test]
    fn deadline_does_not_leak_into_the_next_call() {
        let limits = Limits {
            deadline: Duration::from_millis(20),
            ..Limits::default()
        };
        let engine = RouteEngine::new(limits, Seoul);
        let script = engine.compile("t.rhai", TRANSFER).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(engine.route(&script, &sample(), afternoon()).is_ok());
        assert_eq!(DEADLINE.get(), None);
    }

    #[test]
    fn endless_loop_stops_at_the_operation_limit() {
        let limits = Limits {
            max_operations: 1_000,
            deadline: Duration::from_secs(60),
            ..Limits::default()
        };
        let engine = RouteEngine::new(limits, Seoul);
        let script = engine
            .compile(
                "t.rhai",
                "fn route(msg) {\n  let n = 0;\n  loop { n += 1; }\n}",
            )
            .unwrap();
        let err = engine.route(&script, &sample(), afternoon()).unwrap_err();
        assert_eq!(err.to_string(), "0:0: script exceeded 1000 operations");
    }

    #[test]
    fn runaway_recursion_stops_at_the_call_level_limit() {
        let source = "fn deeper(n) { deeper(n + 1) }\nfn route(msg) {\n  deeper(0)\n}";
        let err = run(source, &sample(), afternoon()).unwrap_err();
        assert_eq!(err.message, "script exceeded 32 nested function calls");
    }

    #[test]
    fn growing_string_stops_at_the_string_limit() {
        let err = eval_error("  let s = \"x\";\n  loop { s += s; }");
        assert_eq!(
            err.message,
            "script exceeded the string size limit (16384 bytes in one value)"
        );
    }

    #[test]
    fn growing_map_stops_at_the_map_limit() {
        let err = eval_error("  let m = #{};\n  let i = 0;\n  loop { m.set(`k${i}`, i); i += 1; }");
        assert_eq!(
            err.to_string(),
            "0:0: script exceeded the map size limit (256 entries)"
        );
    }

    #[test]
    fn returned_decision_is_size_checked_too() {
        // Index assignment escapes Rhai's own check; the returned map must not.
        let body = "  let d = send_token(\"t\", \"\", \"\");\n  d.data = #{};\n  for i in 0..300 { d.data[`k${i}`] = i; }\n  d";
        assert_eq!(
            eval_error(body).message,
            "script exceeded the map size limit (256 entries)"
        );
    }

    #[test]
    fn top_level_code_is_not_run() {
        let source = "throw \"top level\";\nfn route(msg) {\n  drop(\"x\")\n}";
        assert_eq!(
            run(source, &sample(), 0),
            Ok(Decision::Drop {
                reason: "x".to_string()
            })
        );
    }

    #[test]
    fn growing_array_stops_at_the_array_limit() {
        let err = eval_error("  let a = [];\n  loop { a.push(1); }");
        assert_eq!(
            err.message,
            "script exceeded the array size limit (1024 items)"
        );
    }

    #[test]
    fn runtime_errors_keep_rhai_wording_and_position() {
        let err = eval_error("  let x = [1, 2];\n  x[5]");
        assert_eq!(
            err.to_string(),
            "3:5: Array index 5 out of bounds: only 2 elements in array"
        );
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
            eval_error("  send_token(\" \", \"t\", \"b\")").to_string(),
            "2:3: send_token: token is blank"
        );
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
    fn now_helpers_read_the_given_instant_in_the_engine_zone() {
        let now = afternoon();
        assert_eq!(eval_text("now()", now), "20240514143015");
        assert_eq!(eval_text("now_ms()", now), now.to_string());
        assert_eq!(eval_text("today()", now), "20240514");
        assert_eq!(eval_text("hour()", now), "14");
        assert_eq!(eval_text("minute()", now), "30");
        assert_eq!(eval_text("weekday()", now), "2");
        // 23:10 UTC on Sunday is already Monday 08:10 in Seoul.
        let sunday_utc = kst("20240513081000");
        assert_eq!(eval_text("weekday()", sunday_utc), "1");
        assert_eq!(eval_text("hour()", sunday_utc), "8");
    }

    #[test]
    fn time_of_day_helpers_take_an_explicit_time_too() {
        let at = kst("20240519235900");
        let expr = format!("hour({at}) + \":\" + minute({at}) + \" \" + weekday({at})");
        assert_eq!(eval_text(&expr, 0), "23:59 7");
    }

    #[test]
    fn format_time_uses_strftime_in_the_zone() {
        let expr = format!("format_time({}, \"%Y-%m-%d %H:%M %Z\")", afternoon());
        assert_eq!(eval_text(&expr, 0), "2024-05-14 14:30 KST");
        assert_eq!(
            eval_error("  format_time(0, \"%Q\")").message,
            "format_time: \"%Q\" is not a valid time format"
        );
    }

    #[test]
    fn parse_time_reads_local_time_and_throws_on_bad_input() {
        assert_eq!(
            eval_text("parse_time(\"20240514143015\")", 0),
            afternoon().to_string()
        );
        assert_eq!(
            eval_error("  parse_time(\"2024133\")").to_string(),
            "2:3: parse_time: \"2024133\" is not YYYYMMDDHHMMSS"
        );
        assert_eq!(
            eval_error("  parse_time(\"20241332000000\")").message,
            "parse_time: \"20241332000000\" is not a valid date and time"
        );
    }

    #[test]
    fn at_today_is_todays_local_time() {
        let now = afternoon();
        assert_eq!(
            eval_text("at_today(8, 0)", now),
            kst("20240514080000").to_string()
        );
        assert_eq!(
            eval_text("at_today(23, 59)", now),
            kst("20240514235900").to_string()
        );
        assert_eq!(
            eval_error("  at_today(24, 0)").message,
            "at_today: 24:0 is not a time of day"
        );
    }

    #[test]
    fn next_at_is_today_if_still_ahead_else_tomorrow() {
        let now = afternoon();
        assert_eq!(
            eval_text("next_at(18, 0)", now),
            kst("20240514180000").to_string()
        );
        assert_eq!(
            eval_text("next_at(8, 0)", now),
            kst("20240515080000").to_string()
        );
        assert_eq!(
            eval_text("next_at(14, 30)", now),
            kst("20240515143000").to_string()
        );
        let from = kst("20240514030000");
        assert_eq!(
            eval_text(&format!("next_at(8, 0, {from})"), now),
            kst("20240514080000").to_string()
        );
    }

    #[test]
    fn minutes_from_now_adds_to_the_given_instant() {
        let now = afternoon();
        assert_eq!(
            eval_text("minutes_from_now(90)", now),
            kst("20240514160015").to_string()
        );
        assert_eq!(
            eval_error("  minutes_from_now(9223372036854775807)").message,
            "minutes_from_now: 9223372036854775807 minutes is out of range"
        );
    }

    #[test]
    fn due_ms_is_the_reservation_if_ahead_else_now() {
        let now = afternoon();
        let mut message = sample();
        assert_eq!(
            eval_text_with("due_ms(msg)", &message, now),
            now.to_string()
        );
        message.insert("sndn_rsev_hour".into(), json!("20240514200000"));
        assert_eq!(
            eval_text_with("due_ms(msg)", &message, now),
            kst("20240514200000").to_string()
        );
        message.insert("sndn_rsev_hour".into(), json!("20240514100000"));
        assert_eq!(
            eval_text_with("due_ms(msg)", &message, now),
            now.to_string()
        );
    }

    fn eval_text_with(expr: &str, message: &Msg, now_ms: i64) -> String {
        match run_body(&format!("drop(`${{{expr}}}`)"), message, now_ms) {
            Ok(Decision::Drop { reason }) => reason,
            other => panic!("{expr}: {other:?}"),
        }
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

    #[test]
    fn rhai_string_builtins_are_available() {
        // trim() works in place in Rhai (it returns nothing), hence the variable.
        let source = "fn route(msg) {\n  let s = \"  x \"; s.trim();\n  drop(`${[\"MKT\".to_lower(), \"abc\".len(), \"abc\".contains(\"b\"), \"abc\".starts_with(\"a\"), \"abc\".ends_with(\"c\"), s, msg.csno.sub_string(0, 4)]}`)\n}";
        assert_eq!(
            run(source, &sample(), 0),
            Ok(Decision::Drop {
                reason: "[\"mkt\", 3, true, true, true, \"x\", \"1002\"]".to_string()
            })
        );
    }

    #[test]
    fn print_and_debug_do_not_disturb_the_decision() {
        assert_eq!(
            run_body(
                "  print(42);\n  debug(msg.csno);\n  drop(\"x\")",
                &sample(),
                0
            ),
            Ok(Decision::Drop {
                reason: "x".to_string()
            })
        );
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
                    target: Target::Topic("news".to_string()),
                    title: Some("t".to_string()),
                    body: None,
                    image: Some("https://x/y.png".to_string()),
                    data,
                    android: Some(json!({"priority": "normal", "ttl": "3600s"})),
                    apns: Some(json!({"headers": {"apns-priority": "5"}})),
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
            "unknown key `titel` in the decision (allowed: action, token, topic, condition, title, body, image, data, android, apns, at, now, reason)"
        );
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
            "token is blank"
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

    // --- public time functions ---------------------------------------------------------------

    #[test]
    fn parse_reserved_time_names_the_problem() {
        assert_eq!(parse_reserved_time("  ", Seoul), Ok(None));
        assert_eq!(
            parse_reserved_time("20240514143015", Seoul),
            Ok(Some(1_715_664_615_000))
        );
        assert_eq!(
            parse_reserved_time("2024133", Seoul),
            Err("sndn_rsev_hour \"2024133\" is not YYYYMMDDHHMMSS".to_string())
        );
        assert_eq!(
            parse_reserved_time("+2024051414301", Seoul),
            Err("sndn_rsev_hour \"+2024051414301\" is not YYYYMMDDHHMMSS".to_string())
        );
        assert_eq!(
            parse_reserved_time("20240230000000", Seoul),
            Err("sndn_rsev_hour \"20240230000000\" is not a valid date and time".to_string())
        );
    }

    #[test]
    fn format_local_never_panics() {
        assert_eq!(
            format_local(1_715_664_615_000, Seoul, "%Y-%m-%d %H:%M:%S"),
            "2024-05-14 14:30:15"
        );
        assert_eq!(format_local(0, Seoul, "%Q"), "");
        assert_eq!(format_local(i64::MAX, Seoul, "%Y"), "");
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

    // --- docs/scripts.md ----------------------------------------------------------------------

    const REFERENCE: &str = include_str!("../docs/scripts.md");

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
