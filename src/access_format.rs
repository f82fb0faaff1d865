//! The access log's line format: the `veer::access` event written straight into the line, as
//! JSON or as `key=value` text. The line has the shape tracing-subscriber's own formatters give
//! (`{"timestamp","level","fields":{…},"target"}`, or `TIME  INFO target: message k=v …`), but
//! it is written here because the general formatters cost a request more than the rest of the
//! proxy did: styles applied field by field, every value through `Debug`, a float formatted
//! shortest-first. Hand-written because the request path needs it (one line per request).

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How an access line is written: JSON or text.
#[derive(Debug, Clone, Copy)]
pub struct AccessFormat {
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for AccessFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        LINE.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            self.build(&mut buf, event)?;
            writer.write_str(&buf)
        })
    }
}

thread_local! {
    /// Each thread's line under construction: pushes into a local `String` are inlined copies,
    /// where each piece written to the subscriber's `Writer` is a call through `dyn Write`.
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
}

impl AccessFormat {
    fn build(&self, out: &mut String, event: &Event<'_>) -> fmt::Result {
        let mut now = Small::default();
        write!(
            now,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        )?;
        let meta = event.metadata();
        let level = meta.level().as_str();
        if self.json {
            for part in ["{\"timestamp\":\"", now.as_str(), "\",\"level\":\"", level] {
                out.push_str(part);
            }
            out.push_str("\",\"fields\":{");
        } else {
            let pad = if level.len() < 5 { " " } else { "" };
            for part in [now.as_str(), " ", pad, level, " ", meta.target(), ":"] {
                out.push_str(part);
            }
        }
        let mut line = Line {
            out,
            json: self.json,
            first: true,
        };
        event.record(&mut line);
        if self.json {
            for part in ["},\"target\":\"", meta.target(), "\"}\n"] {
                out.push_str(part);
            }
        } else {
            out.push('\n');
        }
        Ok(())
    }
}

/// Writes each field of the event as it is visited, piece by piece (`write_str`, never the
/// formatting machinery of `write!`, which costs far more per piece).
struct Line<'a> {
    out: &'a mut String,
    json: bool,
    first: bool,
}

impl Line<'_> {
    /// The separator and the field's name: `,"name":` or ` name=` (the message: ` `).
    fn key(&mut self, field: &Field) {
        let first = std::mem::replace(&mut self.first, false);
        match (self.json, field.name()) {
            (true, name) => {
                self.out.push_str(if first { "\"" } else { ",\"" });
                self.out.push_str(name);
                self.out.push_str("\":");
            }
            (false, "message") => self.out.push(' '),
            (false, name) => {
                self.out.push(' ');
                self.out.push_str(name);
                self.out.push('=');
            }
        }
    }

    fn string(&mut self, field: &Field, value: &str) {
        self.key(field);
        if !self.json && field.name() == "message" {
            self.out.push_str(value);
        } else {
            quoted(self.out, value);
        }
    }

    fn raw(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.out.push_str(value);
    }
}

impl Visit for Line<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, Digits::default().of(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.out.push('-');
        }
        self.out
            .push_str(Digits::default().of(value.unsigned_abs()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, if value { "true" } else { "false" });
    }

    /// Milliseconds and the like: three decimals, written as integers (a float formatted to its
    /// shortest exact form costs several times more). Not finite: `null`, or `NaN`/`inf` in text.
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() && value.abs() < 1e15 {
            let thousandths = (value.abs() * 1000.0).round() as u64;
            self.key(field);
            if value < 0.0 && thousandths > 0 {
                self.out.push('-');
            }
            self.out.push_str(Digits::default().of(thousandths / 1000));
            self.out.push('.');
            self.out
                .push_str(&Digits::default().of(1000 + thousandths % 1000)[1..]);
        } else if self.json {
            self.raw(field, "null");
        } else if value.is_nan() {
            self.raw(field, "NaN");
        } else {
            self.raw(field, if value > 0.0 { "inf" } else { "-inf" });
        }
    }

    /// Values logged with `%` or `?` and the message: their text, quoted.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Short values: formatted into a stack buffer, then quoted and escaped.
        let mut text = Small::default();
        match write!(text, "{value:?}") {
            Ok(()) => self.string(field, text.as_str()),
            Err(_) => {
                let owned = format!("{value:?}");
                self.string(field, &owned);
            }
        }
    }
}

/// An unsigned integer's decimal digits, written without the formatting machinery.
#[derive(Default)]
struct Digits {
    buf: [u8; 20],
}

impl Digits {
    fn of(&mut self, mut n: u64) -> &str {
        let mut at = self.buf.len();
        loop {
            at -= 1;
            self.buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        std::str::from_utf8(&self.buf[at..]).unwrap_or("0")
    }
}

/// `value` in double quotes, with JSON's escapes (which text lines use as well, so that a path
/// or host can never break a line).
fn quoted(out: &mut String, value: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, b) in value.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&value[plain..i]);
        if escape.is_empty() {
            // Control characters: `\u00XX`.
            let hex = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(hex[usize::from(b >> 4)]));
            out.push(char::from(hex[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&value[plain..]);
    out.push('"');
}

/// A fixed buffer for a short formatted value; longer ones fail and are formatted into a
/// `String` instead.
struct Small {
    buf: [u8; 128],
    len: usize,
}

impl Default for Small {
    fn default() -> Self {
        Self {
            buf: [0; 128],
            len: 0,
        }
    }
}

impl Small {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the bytes are UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for Small {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The lines a subscriber with this format writes while `log` runs.
    fn lines(json: bool, log: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&out);
        let subscriber = tracing_subscriber::fmt()
            .event_format(AccessFormat { json })
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn request(path: &str) {
        let client: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        tracing::info!(
            target: "veer::access",
            client = %client,
            method = %http::Method::GET,
            host = "shop.example.com",
            path,
            status = 200u16,
            bytes_in = 0u64,
            bytes_out = 5120u64,
            duration_ms = 1.8404,
            route = "web",
            chosen = "sticky",
            mirrored = false,
            "request"
        );
    }

    #[test]
    fn a_json_line_has_every_field_typed_and_escaped() {
        let out = lines(true, || request("/a \"b\"\\\n\u{1}é"));
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).expect(&out);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "veer::access");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        let f = &line["fields"];
        assert_eq!(f["message"], "request");
        assert_eq!(f["client"], "10.1.2.3");
        assert_eq!(f["method"], "GET");
        assert_eq!(f["host"], "shop.example.com");
        assert_eq!(f["path"], "/a \"b\"\\\n\u{1}é");
        assert_eq!(f["status"], 200);
        assert_eq!(f["bytes_out"], 5120);
        assert_eq!(f["duration_ms"].as_f64(), Some(1.84));
        assert_eq!(f["route"], "web");
        assert_eq!(f["mirrored"], false);
    }

    #[test]
    fn a_text_line_is_one_line_of_key_value_pairs() {
        let out = lines(false, || request("/cart?id=7\nx"));
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        let line = out.trim_end();
        assert!(
            line.contains(" INFO veer::access: request client=\"10.1.2.3\" method=\"GET\""),
            "{line}"
        );
        assert!(
            line.contains(" path=\"/cart?id=7\\nx\" status=200 "),
            "{line}"
        );
        assert!(line.contains(" duration_ms=1.840 "), "{line}");
        assert!(line.ends_with(" mirrored=false"), "{line}");
    }

    #[test]
    fn a_value_longer_than_the_stack_buffer_is_written_whole() {
        let long = "x".repeat(300);
        let out = lines(true, || {
            tracing::info!(target: "veer::access", client = %long, "request");
        });
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).expect(&out);
        assert_eq!(line["fields"]["client"], long.as_str());
    }

    #[test]
    fn odd_floats_stay_valid_json() {
        let out = lines(true, || {
            tracing::info!(target: "veer::access", a = -0.0004, b = -2.5, c = f64::NAN, "request");
        });
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).expect(&out);
        assert_eq!(line["fields"]["a"].as_f64(), Some(0.0));
        assert_eq!(line["fields"]["b"].as_f64(), Some(-2.5));
        assert!(line["fields"]["c"].is_null());
    }
}
