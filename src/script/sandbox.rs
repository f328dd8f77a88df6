//! The bounded engine: which built-ins a script gets, the limits, the wall-clock deadline,
//! and how a broken bound or a throw is worded for operators.

use std::cell::Cell;
use std::time::Instant;

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, BitFieldPackage, LogicPackage, MoreStringPackage,
    Package,
};
use rhai::{Dynamic, Engine, EvalAltResult, Position};

use super::{Limits, RouteError, line_column};

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
pub(super) struct DeadlineGuard(Option<Instant>);

impl DeadlineGuard {
    pub(super) fn arm(deadline: Option<Instant>) -> Self {
        Self(DEADLINE.replace(deadline))
    }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        DEADLINE.set(self.0);
    }
}

/// A raw engine with the chosen packages and `limits` applied; the script API is registered
/// on top of it by [`super::RouteEngine::new`].
pub(super) fn bounded_engine(limits: &Limits) -> Engine {
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

    engine
}

/// Turn a Rhai failure into what operators read: the innermost cause, where it happened,
/// and the limits in pushgate's words rather than Rhai's.
pub(super) fn route_error(mut err: EvalAltResult, limits: &Limits) -> RouteError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::Decision;
    use crate::script::RouteEngine;
    use crate::script::fixtures::*;
    use chrono_tz::Asia::Seoul;
    use std::time::Duration;

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
}
