//! The text log format's fields, escaped so that no value can forge a field or a line.
//!
//! tracing-subscriber's default text format writes a `%` (Display) value as it is: a client's
//! `x-request-id` of `abc status=200 x` became extra fields of the access-log line, and a value
//! holding a line break would start a line of its own. [`TextFields`] writes each field as
//! `name=value` with the value bare when it is non-empty printable ASCII without space, `"`,
//! `=` or `\` (a method, a plain path, an address, a number), and otherwise in double quotes
//! with `"`, `\` and control characters escaped (`\"`, `\\`, `\n`, `\r`, `\t`, `\u{1b}`): the
//! logfmt convention, which splits unambiguously on unquoted spaces. The message stays
//! unquoted, control characters escaped. JSON lines need none of this: the JSON formatter
//! escapes its strings itself.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// The field formatter of the text log format (see the module doc); `main` installs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            first: true,
            result: Ok(()),
            scratch: String::new(),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
    /// A `Debug`/`Display` value is rendered here first: whether it needs quotes is known
    /// only once all of it is. One buffer per event, reused by its fields.
    scratch: String,
}

impl Visitor<'_> {
    /// Writes the separator and `name=`; `false` when the field is not written.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        // `log` crate metadata that tracing-log adds; the event's own target already says it.
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self.result.and_then(|()| write!(self.writer, "{name}="));
        }
        self.result.is_ok()
    }

    fn text(&mut self, field: &Field, value: &str) {
        if self.start(field) {
            self.result = if field.name() == "message" {
                write_message(&mut self.writer, value)
            } else {
                write_value(&mut self.writer, value)
            };
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        // `%value` fields arrive here too, their `Debug` being the value's `Display`.
        if write!(scratch, "{value:?}").is_ok() {
            self.text(field, &scratch);
        }
        self.scratch = scratch;
    }

    // Numbers and booleans cannot hold anything to escape: written straight away.
    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }
}

/// Whether `value` can be written without quotes: it cannot end the field, start another or
/// break the line.
fn is_bare(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'))
}

/// A field value: bare, or quoted with escapes (module doc).
fn write_value(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    if is_bare(value) {
        return out.write_str(value);
    }
    out.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            c => write_char(out, c)?,
        }
    }
    out.write_char('"')
}

/// The message: unquoted (it is the proxy's own text), control characters escaped.
fn write_message(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    value.chars().try_for_each(|c| write_char(out, c))
}

/// `c`, or its escape when it is a control character (a line break, a terminal escape).
fn write_char(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if c.is_control() => write!(out, "\\u{{{:x}}}", u32::from(c)),
        c => out.write_char(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &str) -> String {
        let mut out = String::new();
        write_value(&mut out, v).expect("write");
        out
    }

    #[test]
    fn plain_values_stay_bare_and_the_rest_is_quoted_and_escaped() {
        assert_eq!(value("/app/t"), "/app/t");
        assert_eq!(value("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(value(""), "\"\"");
        assert_eq!(value("abc status=200 x"), "\"abc status=200 x\"");
        assert_eq!(value("/q?x=1"), "\"/q?x=1\"");
        assert_eq!(value("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(value("a\nb\r\tc\u{1b}[31m"), "\"a\\nb\\r\\tc\\u{1b}[31m\"");
        assert_eq!(value("café"), "\"café\"");
        let mut message = String::new();
        write_message(&mut message, "request\nforged=1").expect("write");
        assert_eq!(message, "request\\nforged=1");
    }
}
