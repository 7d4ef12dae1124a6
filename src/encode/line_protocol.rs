//! InfluxDB line protocol: escaping and an allocation-free line builder.
//!
//! The escaping is the one HA's `influxdb` integration uses (influxdb-python's
//! `make_lines`), so the `homeassistant` schema mode is byte-for-byte
//! compatible:
//!
//! - measurement, tag keys, tag values and field keys: `\` → `\\`, then space,
//!   `,` and `=` get a backslash, and a newline becomes the two characters `\n`;
//! - a name ending in a backslash gets a trailing space, so the separator after
//!   it is not read as escaped by InfluxDB's scanner (HA does this for tag
//!   values only; for measurements and field keys HA's line is misparsed or
//!   rejected, so we extend the same fix there);
//! - string field values are double-quoted with `\` → `\\`, `"` → `\"` and a
//!   newline → `\n`;
//! - floats are spelled like Python's `repr(float)`; empty tag values, empty
//!   tag keys and empty field keys are left out.

use crate::encode::pyrepr::write_float_repr;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of the 8-byte word `x` equals `c` (the classic SWAR zero-byte test).
#[inline(always)]
fn word_has(x: u64, c: u8) -> bool {
    let v = x ^ (LO * u64::from(c));
    (v.wrapping_sub(LO) & !v & HI) != 0
}

/// Index of the first byte of `bytes` that is in `specials`, or `bytes.len()`; eight bytes at a time.
#[inline(always)]
fn first_special<const N: usize>(bytes: &[u8], specials: [u8; N]) -> usize {
    let mut i = 0;
    let mut word = [0u8; 8];
    while i + 8 <= bytes.len() {
        word.copy_from_slice(&bytes[i..i + 8]);
        let x = u64::from_le_bytes(word);
        if specials.iter().any(|&c| word_has(x, c)) {
            break;
        }
        i += 8;
    }
    while i < bytes.len() {
        if specials.contains(&bytes[i]) {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

/// Appends `name` escaped for a measurement, tag key, tag value or field key.
pub fn push_escaped_name(out: &mut String, name: &str) {
    let bytes = name.as_bytes();
    let mut i = 0;
    loop {
        let j = i + first_special(&bytes[i..], [b'\\', b' ', b',', b'=', b'\n']);
        out.push_str(&name[i..j]);
        let Some(&b) = bytes.get(j) else { break };
        out.push_str(match b {
            b'\\' => "\\\\",
            b' ' => "\\ ",
            b',' => "\\,",
            b'=' => "\\=",
            _ => "\\n",
        });
        i = j + 1;
    }
    if bytes.last() == Some(&b'\\') {
        out.push(' ');
    }
}

/// Appends `value` as a quoted string field value.
pub fn push_quoted_string(out: &mut String, value: &str) {
    out.push('"');
    let bytes = value.as_bytes();
    let mut i = 0;
    loop {
        let j = i + first_special(&bytes[i..], [b'\\', b'"', b'\n']);
        out.push_str(&value[i..j]);
        let Some(&b) = bytes.get(j) else { break };
        out.push_str(match b {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        i = j + 1;
    }
    out.push('"');
}

/// Appends a float field value as Python's `repr(float)` does (`20.0`, `1e+16`).
pub fn push_float(out: &mut String, value: f64) {
    write_float_repr(out, value);
}

/// Starts a line: writes the measurement, then takes tags in the caller's order.
///
/// Tags must come sorted by key (InfluxDB's canonical order, and what HA writes).
pub struct LineBuilder<'a> {
    out: &'a mut String,
    start: usize,
}

impl<'a> LineBuilder<'a> {
    /// Begins a line in `out` with the measurement `measurement`.
    pub fn new(out: &'a mut String, measurement: &str) -> Self {
        let start = out.len();
        push_escaped_name(out, measurement);
        LineBuilder { out, start }
    }

    /// Adds a tag; an empty key or value is left out, as InfluxDB refuses it.
    pub fn tag(&mut self, key: &str, value: &str) -> &mut Self {
        if !key.is_empty() && !value.is_empty() {
            self.out.push(',');
            push_escaped_name(self.out, key);
            self.out.push('=');
            push_escaped_name(self.out, value);
        }
        self
    }

    /// Ends the tag set; fields follow.
    pub fn fields(self) -> FieldsBuilder<'a> {
        FieldsBuilder {
            out: self.out,
            start: self.start,
            count: 0,
        }
    }
}

/// The field part of a line; a line without fields is withdrawn by [`FieldsBuilder::finish`].
pub struct FieldsBuilder<'a> {
    out: &'a mut String,
    start: usize,
    count: usize,
}

impl FieldsBuilder<'_> {
    fn key(&mut self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        self.out.push(if self.count == 0 { ' ' } else { ',' });
        self.count += 1;
        push_escaped_name(self.out, key);
        self.out.push('=');
        true
    }

    /// Adds a float field; non-finite values are left out (InfluxDB refuses them).
    pub fn float(&mut self, key: &str, value: f64) -> &mut Self {
        if value.is_finite() && self.key(key) {
            push_float(self.out, value);
        }
        self
    }

    /// Adds a string field.
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        if self.key(key) {
            push_quoted_string(self.out, value);
        }
        self
    }

    /// Adds a boolean field (`true`/`false`).
    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        if self.key(key) {
            self.out.push_str(if value { "true" } else { "false" });
        }
        self
    }

    /// How many fields were written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Writes the nanosecond timestamp and the newline; returns false (and writes nothing) when the line has no field.
    pub fn finish(self, timestamp_ns: i64) -> bool {
        if self.count == 0 {
            self.out.truncate(self.start);
            return false;
        }
        self.out.push(' ');
        let mut buf = itoa::Buffer::new();
        self.out.push_str(buf.format(timestamp_ns));
        self.out.push('\n');
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> String {
        let mut out = String::new();
        push_escaped_name(&mut out, s);
        out
    }

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_quoted_string(&mut out, s);
        out
    }

    #[test]
    fn names_escape_each_hard_character() {
        assert_eq!(name("plain"), "plain");
        assert_eq!(name("a b"), "a\\ b");
        assert_eq!(name("a,b"), "a\\,b");
        assert_eq!(name("a=b"), "a\\=b");
        assert_eq!(name("a\\b"), "a\\\\b");
        assert_eq!(name("a\nb"), "a\\nb");
        assert_eq!(name("q\"uote"), "q\"uote");
        assert_eq!(name("°C ☃"), "°C\\ ☃");
        assert_eq!(name("end\\"), "end\\\\ ");
        assert_eq!(name(""), "");
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_newlines() {
        assert_eq!(quoted("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quoted("a\\b"), "\"a\\\\b\"");
        assert_eq!(quoted("line\nnext"), "\"line\\nnext\"");
        assert_eq!(quoted("a, b=c"), "\"a, b=c\"");
        assert_eq!(quoted(""), "\"\"");
    }

    #[test]
    fn builder_writes_a_line_and_drops_empty_parts() {
        let mut out = String::from("x\n");
        let mut b = LineBuilder::new(&mut out, "m 1");
        b.tag("a", "1").tag("empty", "").tag("", "v");
        let mut f = b.fields();
        f.float("v", 1.0)
            .float("nan", f64::NAN)
            .string("s", "t")
            .boolean("b", true)
            .float("", 2.0);
        assert!(f.finish(42));
        assert_eq!(out, "x\nm\\ 1,a=1 v=1.0,s=\"t\",b=true 42\n");
    }

    #[test]
    fn builder_withdraws_a_line_without_fields() {
        let mut out = String::from("keep\n");
        let mut b = LineBuilder::new(&mut out, "m");
        b.tag("a", "1");
        let mut f = b.fields();
        f.float("v", f64::INFINITY);
        assert!(!f.finish(1));
        assert_eq!(out, "keep\n");
    }
}
