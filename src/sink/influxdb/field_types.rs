//! The type-conflict guard: what type every field of every measurement has in
//! InfluxDB, and how a line whose field value has another type is resolved
//! before it is sent, so that a batch is never refused for a type conflict.
//!
//! The map is learned from `SHOW FIELD KEYS` (v1) when the writer starts, from
//! every line the writer sends (a field seen first sets its type) and from the
//! server's `field type conflict` replies (which name the measurement, the field
//! and the stored type; v2 learns only from what it writes and from these).
//!
//! A line is parsed as InfluxDB's scanner does; one it cannot parse is passed on
//! untouched and left to the server's reply.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::ops::Range;

use crate::config::TypeConflict;
use crate::monitor::metrics::SINK_TYPE_CONFLICTS;

/// Distinct measurement label values of the conflict counter; later ones are counted as `_other`.
const MAX_MEASUREMENT_LABELS: usize = 200;

/// An InfluxDB field type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FieldType {
    Float,
    Integer,
    Unsigned,
    String,
    Boolean,
}

impl FieldType {
    /// The name `SHOW FIELD KEYS` and the server's messages use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Unsigned => "unsigned",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        }
    }

    fn from_name(name: &str) -> Option<FieldType> {
        Some(match name {
            "float" => FieldType::Float,
            "integer" => FieldType::Integer,
            "unsigned" => FieldType::Unsigned,
            "string" => FieldType::String,
            "boolean" => FieldType::Boolean,
            _ => return None,
        })
    }

    /// The type of a line-protocol field value as written (`"s"`, `t`, `3i`, `3u`, `3.5`).
    fn of_value(value: &str) -> FieldType {
        match value.as_bytes() {
            [b'"', ..] => FieldType::String,
            b"t" | b"T" | b"true" | b"True" | b"TRUE" | b"f" | b"F" | b"false" | b"False"
            | b"FALSE" => FieldType::Boolean,
            [.., b'i'] => FieldType::Integer,
            [.., b'u'] => FieldType::Unsigned,
            _ => FieldType::Float,
        }
    }
}

/// What the guard did to one batch.
#[derive(Debug, Default)]
pub(crate) struct Guarded {
    /// The batch to send, when any line changed or was set aside (else send the original).
    pub body: Option<String>,
    /// Lines set aside, with the reason.
    pub set_aside: Vec<(String, String)>,
    /// Values converted to the stored type.
    pub converted: u64,
    /// Values written to `<field>_str` instead.
    pub renamed: u64,
    /// Each changed line → the line as it came in, so a line refused after all is checked again from its original.
    pub changed: HashMap<String, String>,
}

/// Field types per measurement, and the policy for a value of another type.
#[derive(Debug)]
pub(crate) struct FieldTypes {
    policy: TypeConflict,
    types: HashMap<String, HashMap<String, FieldType>>,
    labelled: HashSet<String>,
    /// Shapes (measurement, then each field's key and value type, as written) of lines
    /// found fine as they were: a line of a known shape needs no other check. Emptied
    /// whenever a stored type changes.
    shapes: HashSet<Box<[u8]>, foldhash::fast::RandomState>,
    /// The shape of the line in hand.
    shape: Vec<u8>,
    /// The field vector the parser reuses.
    spare: Vec<Field>,
    /// `SHOW FIELD KEYS` has been read (or is not available for this API).
    pub learned: bool,
    /// When it was last tried.
    pub last_try: Option<tokio::time::Instant>,
}

/// One field of a parsed line: byte ranges of its (escaped) key and its value.
#[derive(Debug)]
struct Field {
    key: Range<usize>,
    value: Range<usize>,
}

/// A line split as InfluxDB's scanner splits it.
struct Parsed {
    measurement: Range<usize>,
    fields: Vec<Field>,
    /// The byte range of the whole field set.
    field_set: Range<usize>,
}

/// Splits `line` into measurement, tags, fields and timestamp; `None` when it does not scan.
#[cfg(test)]
fn parse(line: &str) -> Option<Parsed> {
    parse_with(line, Vec::new())
}

/// [`parse`] into `fields` (cleared first): the guard reuses one vector for every line.
fn parse_with(line: &str, mut fields: Vec<Field>) -> Option<Parsed> {
    fields.clear();
    let b = line.as_bytes();
    let n = b.len();
    let unescaped = |i: usize| i == 0 || b[i - 1] != b'\\';
    let mut i = 0;
    let mut measurement_end = None;
    while i < n {
        let c = b[i];
        if (c == b',' || c == b' ') && unescaped(i) {
            measurement_end.get_or_insert(i);
            if c == b' ' {
                break;
            }
        }
        i += 1;
    }
    let measurement_end = measurement_end?;
    if i >= n || measurement_end == 0 {
        return None;
    }
    let start = i + 1;
    let mut j = start;
    loop {
        let key_start = j;
        while j < n && !(b[j] == b'=' && unescaped(j)) {
            if (b[j] == b' ' || b[j] == b',') && unescaped(j) {
                return None;
            }
            j += 1;
        }
        if j >= n || j == key_start {
            return None;
        }
        let key = key_start..j;
        j += 1;
        let value_start = j;
        if j < n && b[j] == b'"' {
            j += 1;
            loop {
                match b.get(j) {
                    None => return None,
                    Some(b'\\') => j += 2,
                    Some(b'"') => {
                        j += 1;
                        break;
                    }
                    Some(_) => j += 1,
                }
            }
            if j > n {
                return None;
            }
        } else {
            while j < n && b[j] != b',' && b[j] != b' ' {
                j += 1;
            }
        }
        if j == value_start {
            return None;
        }
        fields.push(Field {
            key,
            value: value_start..j,
        });
        if j >= n || b[j] == b' ' {
            break;
        }
        j += 1;
    }
    Some(Parsed {
        measurement: 0..measurement_end,
        fields,
        field_set: start..j,
    })
}

/// Most line shapes the guard remembers (emptied when full: a new start, not a failure).
const MAX_SHAPES: usize = 100_000;

/// Writes the shape of a parsed line into `out`: the measurement and every field's key as
/// written, each with its value's type (0xFF and 0xFE never occur in UTF-8, so shapes of
/// different lines cannot run together).
fn shape_of(line: &str, parsed: &Parsed, out: &mut Vec<u8>) {
    let b = line.as_bytes();
    out.clear();
    out.extend_from_slice(&b[parsed.measurement.clone()]);
    for field in &parsed.fields {
        out.push(0xFF);
        out.extend_from_slice(&b[field.key.clone()]);
        out.push(0xFE);
        out.push(FieldType::of_value(&line[field.value.clone()]) as u8);
    }
}

/// The measurement of a line as InfluxDB stores it; `None` when the line does not scan.
pub(crate) fn measurement_of(line: &str) -> Option<Cow<'_, str>> {
    let b = line.as_bytes();
    let end =
        (0..b.len()).find(|&i| (b[i] == b',' || b[i] == b' ') && (i == 0 || b[i - 1] != b'\\'))?;
    (end > 0).then(|| unescape(&line[..end]))
}

/// A measurement or field key as InfluxDB stores it: the backslash goes before `,`, space, `=` and `"`.
fn unescape(name: &str) -> Cow<'_, str> {
    if !name.contains('\\') {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, ',' | ' ' | '=' | '"')
        {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// `value` (of type `from`) as a value of type `to`, when nothing is lost.
fn convert(value: &str, from: FieldType, to: FieldType) -> Option<String> {
    const EXACT: u64 = 1 << 53;
    let int = |v: &str| v.strip_suffix('i')?.parse::<i64>().ok();
    let uint = |v: &str| v.strip_suffix('u')?.parse::<u64>().ok();
    let float = |v: &str| v.parse::<f64>().ok().filter(|f| f.is_finite());
    use FieldType::*;
    match (from, to) {
        (Integer, Float) => int(value)
            .filter(|n| n.unsigned_abs() <= EXACT)
            .map(|n| format!("{n}.0")),
        (Unsigned, Float) => uint(value)
            .filter(|n| *n <= EXACT)
            .map(|n| format!("{n}.0")),
        (Float, Integer) => float(value)
            .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT as f64)
            .map(|f| format!("{}i", f as i64)),
        (Float, Unsigned) => float(value)
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= EXACT as f64)
            .map(|f| format!("{}u", f as u64)),
        (Integer, Unsigned) => int(value)
            .and_then(|n| u64::try_from(n).ok())
            .map(|n| format!("{n}u")),
        (Unsigned, Integer) => uint(value)
            .and_then(|n| i64::try_from(n).ok())
            .map(|n| format!("{n}i")),
        (Float | Integer | Unsigned | Boolean, String) => as_string(value, from),
        _ => None,
    }
}

/// A non-string value written as a string field value (`3i` → `"3"`, `t` → `"true"`).
fn as_string(value: &str, from: FieldType) -> Option<String> {
    let text = match from {
        FieldType::String => return Some(value.to_string()),
        FieldType::Integer | FieldType::Unsigned => &value[..value.len() - 1],
        FieldType::Float => value,
        FieldType::Boolean => {
            if value.starts_with(['t', 'T']) {
                "true"
            } else {
                "false"
            }
        }
    };
    Some(format!("\"{text}\""))
}

/// What the guard decided for one field.
enum Fix {
    /// Replace the value.
    Value(String),
    /// Replace the key by `<key>_str` and the value by this string value.
    StrField(String),
}

impl FieldTypes {
    /// An empty map with the policy for conflicts.
    pub(crate) fn new(policy: TypeConflict) -> FieldTypes {
        FieldTypes {
            policy,
            types: HashMap::new(),
            labelled: HashSet::new(),
            shapes: HashSet::default(),
            shape: Vec::new(),
            spare: Vec::new(),
            learned: false,
            last_try: None,
        }
    }

    /// Sets the stored type of a field; true when that changed what the map knew.
    pub(crate) fn learn(&mut self, measurement: &str, field: &str, ty: FieldType) -> bool {
        let fields = match self.types.get_mut(measurement) {
            Some(f) => f,
            None => self.types.entry(measurement.to_string()).or_default(),
        };
        match fields.get_mut(field) {
            Some(t) if *t == ty => false,
            Some(t) => {
                *t = ty;
                // A shape found fine may not be any more.
                self.shapes.clear();
                true
            }
            None => {
                fields.insert(field.to_string(), ty);
                true
            }
        }
    }

    /// The stored type of a field, if known.
    pub(crate) fn get(&self, measurement: &str, field: &str) -> Option<FieldType> {
        self.types.get(measurement)?.get(field).copied()
    }

    /// Reads a `SHOW FIELD KEYS` reply; returns how many fields it named.
    ///
    /// A field with different types in different shards is listed once per type;
    /// the last one listed wins.
    pub(crate) fn learn_show_field_keys(&mut self, reply: &serde_json::Value) -> usize {
        let mut n = 0;
        let results = reply.get("results").and_then(|r| r.as_array());
        for result in results.into_iter().flatten() {
            let series = result.get("series").and_then(|s| s.as_array());
            for s in series.into_iter().flatten() {
                let Some(name) = s.get("name").and_then(|n| n.as_str()) else {
                    continue;
                };
                let values = s.get("values").and_then(|v| v.as_array());
                for row in values.into_iter().flatten() {
                    let key = row.get(0).and_then(|k| k.as_str());
                    let ty = row
                        .get(1)
                        .and_then(|t| t.as_str())
                        .and_then(FieldType::from_name);
                    if let (Some(key), Some(ty)) = (key, ty) {
                        self.learn(name, key, ty);
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Learns from a `field type conflict: input field "f" on measurement "m" is type t, already exists as type u` message; true when the map changed.
    pub(crate) fn learn_from_conflict(&mut self, message: &str) -> bool {
        match parse_conflict(message) {
            Some((measurement, field, stored)) => self.learn(&measurement, &field, stored),
            None => false,
        }
    }

    /// Checks every line of `body` against the map, resolves conflicts by the policy and learns new fields.
    pub(crate) fn guard(&mut self, body: &str, sink: &'static str) -> Guarded {
        let mut out = Guarded::default();
        // Bytes of `body` already copied to `out.body` (once a line changed).
        let mut copied = 0;
        let mut offset = 0;
        for raw in body.split_inclusive('\n') {
            let start = offset;
            offset += raw.len();
            let line = raw.trim_end_matches(['\n', '\r']);
            let Some(parsed) = parse_with(line, std::mem::take(&mut self.spare)) else {
                continue;
            };
            shape_of(line, &parsed, &mut self.shape);
            let checked = if self.shapes.contains(self.shape.as_slice()) {
                Ok(None)
            } else {
                let checked = self.check_line(line, &parsed, sink);
                if matches!(checked, Ok(None)) {
                    if self.shapes.len() >= MAX_SHAPES {
                        self.shapes.clear();
                    }
                    self.shapes.insert(self.shape.as_slice().into());
                }
                checked
            };
            self.spare = parsed.fields;
            match checked {
                Ok(None) => {}
                Ok(Some(fixed)) => {
                    let text = out
                        .body
                        .get_or_insert_with(|| String::with_capacity(body.len()));
                    text.push_str(&body[copied..start]);
                    text.push_str(&fixed);
                    text.push('\n');
                    copied = offset;
                    out.converted += fixed.converted;
                    out.renamed += fixed.renamed;
                    out.changed.insert(fixed.text, line.to_string());
                }
                Err(reason) => {
                    let text = out
                        .body
                        .get_or_insert_with(|| String::with_capacity(body.len()));
                    text.push_str(&body[copied..start]);
                    copied = offset;
                    out.set_aside.push((line.to_string(), reason));
                }
            }
        }
        if let Some(text) = out.body.as_mut() {
            text.push_str(&body[copied..]);
        }
        out
    }

    /// `Ok(None)`: the line is fine as it is; `Ok(Some)`: send this instead; `Err(reason)`: set it aside.
    fn check_line(
        &mut self,
        line: &str,
        parsed: &Parsed,
        sink: &'static str,
    ) -> Result<Option<FixedLine>, String> {
        let measurement = unescape(&line[parsed.measurement.clone()]);
        let mut fixes: Vec<(usize, Fix)> = Vec::new();
        for (i, field) in parsed.fields.iter().enumerate() {
            let key = unescape(&line[field.key.clone()]);
            let value = &line[field.value.clone()];
            let ty = FieldType::of_value(value);
            let stored = match self.get(&measurement, &key) {
                None => {
                    self.learn(&measurement, &key, ty);
                    continue;
                }
                Some(stored) if stored == ty => continue,
                Some(stored) => stored,
            };
            let conflict = || {
                format!(
                    "field type conflict: field {key:?} on measurement {measurement:?} is {}, already {}",
                    ty.name(),
                    stored.name()
                )
            };
            let converted = match self.policy {
                TypeConflict::DeadLetter => {
                    self.count(&measurement, sink, "dead_lettered");
                    return Err(conflict());
                }
                TypeConflict::Convert => convert(value, ty, stored),
                TypeConflict::StrField => None,
            };
            if let Some(v) = converted {
                fixes.push((i, Fix::Value(v)));
                continue;
            }
            let twin = format!("{key}_str");
            match self.get(&measurement, &twin) {
                None => {
                    self.learn(&measurement, &twin, FieldType::String);
                }
                Some(FieldType::String) => {}
                Some(other) => {
                    self.count(&measurement, sink, "dead_lettered");
                    return Err(format!(
                        "{}; and field {twin:?} is {}",
                        conflict(),
                        other.name()
                    ));
                }
            }
            let Some(text) = as_string(value, ty) else {
                return Err(conflict());
            };
            fixes.push((i, Fix::StrField(text)));
        }
        if fixes.is_empty() {
            return Ok(None);
        }
        let mut fixed = FixedLine::default();
        fixed.text.push_str(&line[..parsed.field_set.start]);
        for (i, field) in parsed.fields.iter().enumerate() {
            if i > 0 {
                fixed.text.push(',');
            }
            let key = &line[field.key.clone()];
            match fixes.iter().find(|(at, _)| *at == i).map(|(_, f)| f) {
                None => fixed.text.push_str(&line[field.key.start..field.value.end]),
                Some(Fix::Value(v)) => {
                    let _ = write!(fixed.text, "{key}={v}");
                    fixed.converted += 1;
                    self.count(&measurement, sink, "converted");
                }
                Some(Fix::StrField(v)) => {
                    let _ = write!(fixed.text, "{key}_str={v}");
                    fixed.renamed += 1;
                    self.count(&measurement, sink, "str_field");
                }
            }
        }
        fixed.text.push_str(&line[parsed.field_set.end..]);
        Ok(Some(fixed))
    }

    fn count(&mut self, measurement: &str, sink: &'static str, action: &'static str) {
        let label = if self.labelled.contains(measurement) {
            measurement.to_string()
        } else if self.labelled.len() < MAX_MEASUREMENT_LABELS {
            self.labelled.insert(measurement.to_string());
            measurement.to_string()
        } else {
            "_other".to_string()
        };
        metrics::counter!(SINK_TYPE_CONFLICTS, "sink" => sink, "measurement" => label, "action" => action)
            .increment(1);
    }
}

/// A line with some fields converted or renamed.
#[derive(Default)]
struct FixedLine {
    text: String,
    converted: u64,
    renamed: u64,
}

impl std::ops::Deref for FixedLine {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

/// `(measurement, field, stored type)` from a server's type-conflict message.
fn parse_conflict(message: &str) -> Option<(String, String, FieldType)> {
    let at = message.find("input field \"")? + "input field \"".len();
    let rest = &message[at..];
    let field_end = rest.find("\" on measurement \"")?;
    let field = &rest[..field_end];
    let rest = &rest[field_end + "\" on measurement \"".len()..];
    let m_end = rest.find("\" is type ")?;
    let measurement = &rest[..m_end];
    let rest = &rest[m_end..];
    let at = rest.find("already exists as type ")? + "already exists as type ".len();
    let word: String = rest[at..]
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    let stored = FieldType::from_name(&word)?;
    let unquote = |s: &str| s.replace("\\\"", "\"").replace("\\\\", "\\");
    Some((unquote(measurement), unquote(field), stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(types: &mut FieldTypes, body: &str) -> Guarded {
        types.guard(body, "test")
    }

    #[test]
    fn lines_are_split_as_influxdb_scans_them() {
        let line = r#"m\ x\,y,a=b\ c,d=e value=1.5,s="a \"q\" \\",n\=k=3i 1700000000"#;
        let p = parse(line).unwrap();
        assert_eq!(&line[p.measurement.clone()], r"m\ x\,y");
        let fields: Vec<(&str, &str)> = p
            .fields
            .iter()
            .map(|f| (&line[f.key.clone()], &line[f.value.clone()]))
            .collect();
        assert_eq!(
            fields,
            [("value", "1.5"), ("s", r#""a \"q\" \\""#), (r"n\=k", "3i")]
        );
        assert_eq!(&line[p.field_set.end..], " 1700000000");
        assert_eq!(unescape(r"m\ x\,y"), "m x,y");
        // No timestamp; a string with a space and a comma.
        let p = parse(r#"m f="a, b""#).unwrap();
        assert_eq!(p.fields.len(), 1);
        assert_eq!(p.field_set.end, r#"m f="a, b""#.len());
        for bad in [
            "",
            "m",
            "m ",
            "m f=",
            "m =1",
            "m f=\"open",
            ",t=1 f=1",
            "m f=1,",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn value_types_are_read_from_their_spelling() {
        for (v, t) in [
            ("1.5", FieldType::Float),
            ("-3", FieldType::Float),
            ("1e+16", FieldType::Float),
            ("3i", FieldType::Integer),
            ("3u", FieldType::Unsigned),
            ("\"x\"", FieldType::String),
            ("t", FieldType::Boolean),
            ("FALSE", FieldType::Boolean),
        ] {
            assert_eq!(FieldType::of_value(v), t, "{v}");
        }
    }

    #[test]
    fn conversions_happen_only_when_lossless() {
        use FieldType::*;
        let table: &[(&str, FieldType, FieldType, Option<&str>)] = &[
            ("3i", Integer, Float, Some("3.0")),
            (
                "-9007199254740992i",
                Integer,
                Float,
                Some("-9007199254740992.0"),
            ),
            ("9007199254740993i", Integer, Float, None),
            ("7u", Unsigned, Float, Some("7.0")),
            ("20.0", Float, Integer, Some("20i")),
            ("1e+3", Float, Integer, Some("1000i")),
            ("20.5", Float, Integer, None),
            ("1e+300", Float, Integer, None),
            ("4", Float, Unsigned, Some("4u")),
            ("-4", Float, Unsigned, None),
            ("5i", Integer, Unsigned, Some("5u")),
            ("-5i", Integer, Unsigned, None),
            ("18446744073709551615u", Unsigned, Integer, None),
            ("6u", Unsigned, Integer, Some("6i")),
            ("21.5", Float, String, Some("\"21.5\"")),
            ("3i", Integer, String, Some("\"3\"")),
            ("T", Boolean, String, Some("\"true\"")),
            ("\"21.5\"", String, Float, None),
            ("t", Boolean, Float, None),
            ("1", Float, Boolean, None),
        ];
        for (value, from, to, expected) in table {
            assert_eq!(
                convert(value, *from, *to).as_deref(),
                *expected,
                "{value} {from:?} → {to:?}"
            );
        }
    }

    #[test]
    fn convert_policy_converts_or_writes_a_str_twin() {
        let mut types = FieldTypes::new(TypeConflict::Convert);
        types.learn("c", "value", FieldType::Float);
        types.learn("c", "n", FieldType::Integer);
        let body = "c,e=x value=1.5 1\nc,e=x value=3i,n=2.0 2\nc,e=y value=\"oops\",n=4i 3\n";
        let g = guard(&mut types, body);
        assert_eq!(
            g.body.as_deref(),
            Some("c,e=x value=1.5 1\nc,e=x value=3.0,n=2i 2\nc,e=y value_str=\"oops\",n=4i 3\n")
        );
        assert!(g.set_aside.is_empty());
        assert_eq!((g.converted, g.renamed), (2, 1));
        assert_eq!(
            g.changed["c,e=x value=3.0,n=2i 2"],
            "c,e=x value=3i,n=2.0 2"
        );
        assert_eq!(types.get("c", "value_str"), Some(FieldType::String));
        // Nothing to change: the original body is used.
        let g = guard(&mut types, "c value=2.5 4\nd flag=t 5\n");
        assert!(g.body.is_none() && g.set_aside.is_empty());
        assert_eq!(types.get("d", "flag"), Some(FieldType::Boolean));
    }

    #[test]
    fn a_remembered_line_shape_is_checked_again_once_a_stored_type_changes() {
        let mut types = FieldTypes::new(TypeConflict::Convert);
        let body = "c,e=x value=3i,on=t 1\nc,e=y value=4i,on=f 2\n";
        for _ in 0..2 {
            let g = guard(&mut types, body);
            assert!(g.body.is_none() && g.set_aside.is_empty(), "{g:?}");
        }
        assert_eq!(
            types.shapes.len(),
            1,
            "one shape for both lines (tags are not part of it)"
        );
        // Another value type or another field set is another shape, checked in full.
        let g = guard(&mut types, "c value=5.5 3\n");
        assert_eq!(g.body.as_deref(), Some("c value_str=\"5.5\" 3\n"));
        // The server says the field is a float after all: the remembered shape goes.
        let msg = "partial write: field type conflict: input field \"value\" on measurement \"c\" is type integer, already exists as type float dropped=1";
        assert!(types.learn_from_conflict(msg));
        let g = guard(&mut types, body);
        assert_eq!(
            g.body.as_deref(),
            Some("c,e=x value=3.0,on=t 1\nc,e=y value=4.0,on=f 2\n")
        );
        assert_eq!(g.converted, 2);
    }

    #[test]
    fn a_new_field_takes_the_type_of_its_first_value_within_a_batch() {
        let mut types = FieldTypes::new(TypeConflict::StrField);
        let g = guard(&mut types, "m a=1i 1\nm a=2.5 2\nm a=3i 3\n");
        assert_eq!(
            g.body.as_deref(),
            Some("m a=1i 1\nm a_str=\"2.5\" 2\nm a=3i 3\n")
        );
        assert_eq!(g.renamed, 1);
    }

    #[test]
    fn dead_letter_policy_sets_aside_only_conflicting_lines() {
        let mut types = FieldTypes::new(TypeConflict::DeadLetter);
        types.learn("c", "value", FieldType::Float);
        let g = guard(&mut types, "c value=1 1\nc value=\"x\" 2\r\nc value=3 3\n");
        assert_eq!(g.body.as_deref(), Some("c value=1 1\nc value=3 3\n"));
        assert_eq!(g.set_aside.len(), 1);
        assert_eq!(g.set_aside[0].0, "c value=\"x\" 2");
        assert!(
            g.set_aside[0].1.contains("is string, already float"),
            "{:?}",
            g.set_aside
        );
    }

    #[test]
    fn a_twin_with_another_type_sets_the_line_aside() {
        let mut types = FieldTypes::new(TypeConflict::Convert);
        types.learn("c", "value", FieldType::Float);
        types.learn("c", "value_str", FieldType::Integer);
        let g = guard(&mut types, "c value=\"x\" 1\nbad line\n");
        assert_eq!(g.body.as_deref(), Some("bad line\n"));
        assert_eq!(g.set_aside.len(), 1);
    }

    #[test]
    fn server_messages_and_show_field_keys_teach_the_map() {
        let mut types = FieldTypes::new(TypeConflict::Convert);
        let msg = "partial write: field type conflict: input field \"value\" on measurement \"°C\" is type string, already exists as type float dropped=1";
        assert!(types.learn_from_conflict(msg));
        assert!(!types.learn_from_conflict(msg));
        assert_eq!(types.get("°C", "value"), Some(FieldType::Float));
        assert!(!types.learn_from_conflict("partial write: unable to parse 'x'"));
        let reply = serde_json::json!({"results":[{"statement_id":0,"series":[
            {"name":"a","columns":["fieldKey","fieldType"],"values":[["v","integer"],["s","string"]]},
            {"name":"b","columns":["fieldKey","fieldType"],"values":[["on","boolean"],["x","weird"]]}
        ]}]});
        assert_eq!(types.learn_show_field_keys(&reply), 3);
        assert_eq!(types.get("a", "v"), Some(FieldType::Integer));
        assert_eq!(types.get("b", "on"), Some(FieldType::Boolean));
        assert_eq!(types.get("b", "x"), None);
    }
}
