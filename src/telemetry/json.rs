//! The JSON line every log event becomes: the telemetry contract that alert and workbook queries
//! read (docs/telemetry.md). One object per line:
//!
//! `{"timestamp": RFC 3339 UTC, "level": "INFO"|"WARN"|"ERROR"|..., "event": <stable name>,
//!   <the event's fields, in the order its call names them>, "message": <text, when there is one>}`
//!
//! - `event` is the event's `event` field; a line from another crate (the Azure SDK) gets
//!   `"event": "log"` and its `target`.
//! - Every field a call names is written, `null` when it had no value (an `Option` that was
//!   `None`), so that a query sees the same keys on every line of an event.
//! - Numbers and booleans stay JSON numbers and booleans; a `Flatten` field's object is written
//!   as fields of the line itself (how a reconcile run's counts become `users_created` and so on).
//! - An ERROR line never contains the text "warn" (in any case): the Functions host would log it
//!   at Warning. Its `w` is written `\u0077` (`W`: `\u0057`), which JSON reads back unchanged.
//! - A string longer than `MAX_STRING` characters is cut, so that no line nears the host's 8 KiB.

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Characters kept of one string value.
const MAX_STRING: usize = 2000;
/// The field that names the event.
const EVENT: &str = "event";
const MESSAGE: &str = "message";
/// The field whose value (a `Flatten`) is spliced into the line.
const FLATTEN: &str = "flatten";

/// Formats every event as one JSON line; see the module's documentation.
pub struct JsonLines;

/// A JSON object whose members become fields of the log line: `flatten = %Flatten(&map)`.
pub struct Flatten<'a>(pub &'a Map<String, Value>);

impl fmt::Display for Flatten<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Value::Object(self.0.clone()).to_string())
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(&line(event, OffsetDateTime::now_utc()))
    }
}

/// An ERROR line written without `tracing`, for what happens before logging is set up (startup
/// refused) or after it failed: the same shape and rules as every other line.
pub fn error_line(event: &str, fields: &[(&str, &str)]) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("{\"timestamp\":");
    string(&mut line, &timestamp(OffsetDateTime::now_utc()));
    line.push_str(",\"level\":\"ERROR\",\"event\":");
    string(&mut line, event);
    for (name, value) in fields {
        line.push(',');
        string(&mut line, name);
        line.push(':');
        string(&mut line, value);
    }
    line.push('}');
    without_warn(&line)
}

fn timestamp(now: OffsetDateTime) -> String {
    now.format(&Rfc3339).unwrap_or_default()
}

/// The whole line for `event`, ending in a newline.
fn line(event: &Event<'_>, now: OffsetDateTime) -> String {
    let metadata = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut line = String::with_capacity(256);
    line.push_str("{\"timestamp\":");
    string(&mut line, &timestamp(now));
    line.push_str(",\"level\":");
    string(&mut line, metadata.level().as_str());
    line.push_str(",\"event\":");
    match fields.take(EVENT) {
        Some(Recorded::Text(name)) => string(&mut line, &name),
        _ => {
            string(&mut line, "log");
            line.push_str(",\"target\":");
            string(&mut line, metadata.target());
        }
    }
    for field in metadata.fields() {
        let name = field.name();
        if [EVENT, MESSAGE, FLATTEN].contains(&name) {
            continue;
        }
        line.push(',');
        string(&mut line, name);
        line.push(':');
        match fields.take(name) {
            Some(value) => value.write(&mut line),
            None => line.push_str("null"),
        }
    }
    if let Some(Recorded::Text(object)) = fields.take(FLATTEN)
        && let Ok(Value::Object(members)) = serde_json::from_str::<Value>(&object)
    {
        for (name, value) in members {
            line.push(',');
            string(&mut line, &name);
            line.push(':');
            line.push_str(&value.to_string());
        }
    }
    if let Some(message) = fields.take(MESSAGE) {
        line.push_str(",\"message\":");
        message.write(&mut line);
    }
    line.push_str("}\n");
    if *metadata.level() == Level::ERROR {
        line = without_warn(&line);
    }
    line
}

/// One field's value as recorded.
enum Recorded {
    Text(String),
    /// Already JSON: a number, `true`, `false` or `null`.
    Json(String),
}

impl Recorded {
    fn write(&self, line: &mut String) {
        match self {
            Self::Text(text) => string(line, text),
            Self::Json(json) => line.push_str(json),
        }
    }
}

/// The values an event recorded, by field name (a handful: a list beats a map).
#[derive(Default)]
struct Fields(Vec<(&'static str, Recorded)>);

impl Fields {
    fn take(&mut self, name: &str) -> Option<Recorded> {
        let at = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.swap_remove(at).1)
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let json = match value.is_finite() {
            true => Value::from(value).to_string(),
            false => "null".to_owned(),
        };
        self.0.push((field.name(), Recorded::Json(json)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0
            .push((field.name(), Recorded::Json(value.to_string())));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0
            .push((field.name(), Recorded::Json(value.to_string())));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0
            .push((field.name(), Recorded::Json(value.to_string())));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .push((field.name(), Recorded::Text(value.to_owned())));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name(), Recorded::Text(format!("{value:?}"))));
    }
}

/// `text` as a JSON string, cut to `MAX_STRING` characters.
fn string(line: &mut String, text: &str) {
    let (text, cut) = match text.char_indices().nth(MAX_STRING) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    };
    line.push('"');
    for c in text.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(line, "\\u{:04x}", c as u32);
            }
            c => line.push(c),
        }
    }
    if cut {
        line.push_str("...");
    }
    line.push('"');
}

/// The line with the `w` of every "warn" (any case) written as a JSON escape. A `w` is never part
/// of an escape sequence (those are `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX`),
/// and outside strings a JSON line holds no letters but `true`, `false` and `null`, so every match
/// is a literal character inside a string, and the escape keeps the JSON the same value.
fn without_warn(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 8);
    let mut start = 0;
    let mut at = 0;
    while at + 4 <= bytes.len() {
        if bytes[at..at + 4].eq_ignore_ascii_case(b"warn") {
            out.push_str(&line[start..at]);
            out.push_str(if bytes[at] == b'w' {
                "\\u0077"
            } else {
                "\\u0057"
            });
            start = at + 1;
            at += 4;
        } else {
            at += 1;
        }
    }
    out.push_str(&line[start..]);
    out
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Every line written, whole.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `log` writes, each line as its text and as parsed JSON.
    fn logged(log: impl FnOnce()) -> Vec<(String, Value)> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .with_max_level(Level::DEBUG)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| (line.to_owned(), serde_json::from_str(line).unwrap()))
            .collect()
    }

    /// The line's keys in the order written (serde_json's map would sort them).
    fn keys_in_order(line: &str) -> Vec<String> {
        let object: Value = serde_json::from_str(line).unwrap();
        let mut keys: Vec<(usize, String)> = object
            .as_object()
            .unwrap()
            .keys()
            .map(|key| (line.find(&format!("\"{key}\":")).unwrap(), key.clone()))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, key)| key).collect()
    }

    #[test]
    fn an_event_is_one_line_with_its_name_and_typed_fields_in_order() {
        let missing: Option<&str> = None;
        let lines = logged(|| {
            tracing::info!(
                event = "delivery",
                event_id = "msg_1",
                user_id = missing,
                status = 200u16,
                latency_ms = 1.5,
                ok = true,
                reason = %"not_newer",
            );
        });
        let (text, line) = &lines[0];
        assert_eq!(lines.len(), 1);
        assert!(!text.contains('\n'));
        assert_eq!(
            keys_in_order(text),
            [
                "timestamp",
                "level",
                "event",
                "event_id",
                "user_id",
                "status",
                "latency_ms",
                "ok",
                "reason"
            ]
        );
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["event"], "delivery");
        assert_eq!(line["user_id"], Value::Null);
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["ok"], true);
        assert_eq!(line["reason"], "not_newer");
        OffsetDateTime::parse(line["timestamp"].as_str().unwrap(), &Rfc3339).unwrap();
    }

    #[test]
    fn a_flattened_object_becomes_fields_of_the_line_and_messages_come_last() {
        let counts = serde_json::json!({"users_created": 3, "users_deleted": 0});
        let Value::Object(counts) = counts else {
            unreachable!()
        };
        let lines = logged(|| {
            tracing::warn!(event = "reconcile", run_id = "reconcile:x", flatten = %Flatten(&counts), "found drift");
        });
        let line = &lines[0].1;
        assert_eq!(line["users_created"], 3);
        assert_eq!(line["users_deleted"], 0);
        assert!(line.get("flatten").is_none());
        assert_eq!(keys_in_order(&lines[0].0).last().unwrap(), "message");
        assert_eq!(line["message"], "found drift");
    }

    #[test]
    fn lines_from_other_crates_are_named_log_with_their_target() {
        let lines =
            logged(|| tracing::warn!(target: "azure_core::http", status = 429, "throttled"));
        assert_eq!(lines[0].1["event"], "log");
        assert_eq!(lines[0].1["target"], "azure_core::http");
    }

    #[test]
    fn error_lines_never_say_warn_yet_read_back_the_same() {
        let lines = logged(|| {
            tracing::error!(
                event = "internal_error",
                detail = "Warning: a WARNED warn\"ing",
                "rewarn"
            )
        });
        let (text, line) = &lines[0];
        assert!(!text.to_ascii_lowercase().contains("warn"), "{text}");
        assert_eq!(line["detail"], "Warning: a WARNED warn\"ing");
        assert_eq!(line["message"], "rewarn");
        let warning = logged(|| tracing::warn!(event = "x", "warn stays readable"));
        assert!(warning[0].0.contains("warn stays"));
    }

    #[test]
    fn lines_written_without_tracing_follow_the_same_rules() {
        let text = error_line(
            "config_refused",
            &[("variable", "X"), ("problem", "a warning")],
        );
        assert!(!text.contains('\n') && !text.to_ascii_lowercase().contains("warn"));
        let line: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (&line["level"], &line["event"], &line["problem"]),
            (
                &json_str("ERROR"),
                &json_str("config_refused"),
                &json_str("a warning")
            )
        );
        assert_eq!(
            keys_in_order(&text),
            ["timestamp", "level", "event", "variable", "problem"]
        );
    }

    fn json_str(text: &str) -> Value {
        Value::from(text)
    }

    #[test]
    fn control_characters_and_long_values_keep_the_line_one_short_line() {
        let long = "é".repeat(MAX_STRING + 10);
        let lines =
            logged(|| tracing::info!(event = "x", detail = %format!("a\nb\u{1}c"), long = %long));
        let (text, line) = &lines[0];
        assert_eq!(line["detail"], "a\nb\u{1}c");
        assert_eq!(
            line["long"].as_str().unwrap().chars().count(),
            MAX_STRING + 3
        );
        assert!(text.len() < 8 * 1024);
    }
}
