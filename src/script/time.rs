//! Local time: the `YYYYMMDDHHMMSS` layout of `sndn_rsev_hour`, formatting for displays, and
//! the clock functions scripts call (`now`, `hour`, `next_at`, `due_ms`, …), all of which read
//! the instant passed to `route()`, never the system clock.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;
use rhai::{Engine, Map, NativeCallContext};

use super::HelperResult;

/// The layout of `sndn_rsev_hour` and of every time string the helpers take or give.
const TIME_FORMAT: &str = "%Y%m%d%H%M%S";

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
pub(super) fn parse_local_time(text: &str, zone: Tz) -> Result<i64, String> {
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

/// The instant this `route()` call runs at, as passed to [`super::RouteEngine::route`].
fn ctx_now(ctx: &NativeCallContext) -> HelperResult<i64> {
    ctx.tag()
        .and_then(|tag| tag.as_int().ok())
        .ok_or_else(|| "the current time is only known inside route()".into())
}

pub(super) fn register_time_helpers(engine: &mut Engine, zone: Tz) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::Decision;
    use crate::script::fixtures::*;
    use chrono_tz::Asia::Seoul;
    use serde_json::json;

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
}
