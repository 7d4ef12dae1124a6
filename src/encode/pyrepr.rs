//! Python's number and text conversions, as HA's `influxdb` integration applies them.
//!
//! The `homeassistant` schema mode must write what Python writes: `float(x)`
//! decides which states and attributes are numeric, `repr(float)` spells every
//! float field, and `str(value)` spells every `*_str` field (lists and dicts in
//! Python's repr with single quotes). Everything here writes into caller-owned
//! buffers so the encoder allocates nothing per event.
//!
//! Known limits: HA holds attribute values as Python objects, we only see their
//! JSON. A datetime or enum attribute arrives as a plain string, so we write
//! the string where HA would write `str(datetime)` or `<HVACMode.OFF: 'off'>`.
//! Printability follows Unicode 14 (Python 3.11); newer assignments count as
//! non-printable and are escaped in reprs.

use serde_json::Value;

use super::pytables::{DIGIT_ZEROS, NON_PRINTABLE};

/// The value of a Unicode decimal digit (category Nd), as Python's `float()` and `\d` see it.
pub(crate) fn decimal_digit(ch: char) -> Option<u8> {
    if ch.is_ascii_digit() {
        return Some(ch as u8 - b'0');
    }
    if (ch as u32) < 0x660 {
        return None;
    }
    let c = ch as u32;
    let idx = DIGIT_ZEROS.partition_point(|&z| z <= c);
    let zero = *DIGIT_ZEROS.get(idx.checked_sub(1)?)?;
    let d = c - zero;
    (d < 10).then_some(d as u8)
}

/// Python's `str.isspace()` for code points of 127 and above.
fn is_unicode_space(ch: char) -> bool {
    matches!(
        ch,
        '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// The whitespace `float()` strips around ASCII text (C `isspace`).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn trim_c_space(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if !is_c_space(*first) {
            break;
        }
        b = rest;
    }
    while let [rest @ .., last] = b {
        if !is_c_space(*last) {
            break;
        }
        b = rest;
    }
    b
}

/// Python `float(text)`: `None` where Python raises `ValueError`.
///
/// Accepts what CPython accepts: surrounding whitespace, a sign, `_` between
/// digits, exponents, `inf`/`infinity`/`nan` in any case, and non-ASCII
/// decimal digits and spaces (which CPython maps to ASCII first).
pub(crate) fn py_float(text: &str, scratch: &mut Vec<u8>) -> Option<f64> {
    let bytes: &[u8] = if text.is_ascii() {
        trim_c_space(text.as_bytes())
    } else {
        scratch.clear();
        for ch in text.chars() {
            if (ch as u32) < 127 {
                scratch.push(ch as u8);
            } else if is_unicode_space(ch) {
                scratch.push(b' ');
            } else {
                scratch.push(b'0' + decimal_digit(ch)?);
            }
        }
        let trimmed = trim_c_space(scratch);
        let start = trimmed.as_ptr() as usize - scratch.as_ptr() as usize;
        let end = start + trimmed.len();
        scratch.truncate(end);
        scratch.drain(..start);
        return parse_ascii_with_underscores(scratch);
    };
    // Most non-numeric text fails on its first character; skip the rest of the work then.
    if !matches!(
        bytes.first(),
        Some(b'0'..=b'9' | b'+' | b'-' | b'.' | b'i' | b'I' | b'n' | b'N')
    ) {
        return None;
    }
    if !bytes.contains(&b'_') {
        return parse_clean(bytes);
    }
    scratch.clear();
    scratch.extend_from_slice(bytes);
    parse_ascii_with_underscores(scratch)
}

/// Removes underscores in place where CPython allows them (between two digits), then parses.
fn parse_ascii_with_underscores(buf: &mut Vec<u8>) -> Option<f64> {
    if buf.contains(&b'_') {
        let mut prev = 0u8;
        let mut w = 0;
        for r in 0..buf.len() {
            let c = buf[r];
            if c == b'_' {
                if !prev.is_ascii_digit() {
                    return None;
                }
            } else {
                if prev == b'_' && !c.is_ascii_digit() {
                    return None;
                }
                buf[w] = c;
                w += 1;
            }
            prev = c;
        }
        if prev == b'_' {
            return None;
        }
        buf.truncate(w);
    }
    parse_clean(buf)
}

/// Parses trimmed ASCII without underscores by Python's float grammar.
fn parse_clean(b: &[u8]) -> Option<f64> {
    let (negative, body) = match b {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, b),
    };
    let special = if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        Some(f64::INFINITY)
    } else if body.eq_ignore_ascii_case(b"nan") {
        Some(f64::NAN)
    } else {
        None
    };
    if let Some(v) = special {
        return Some(if negative { -v } else { v });
    }
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while body.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if body.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return None;
    }
    if matches!(body.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(body.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != body.len() {
        return None;
    }
    let text = std::str::from_utf8(b).ok()?;
    text.parse::<f64>().ok()
}

/// Python `float(value)` for a JSON value: bools and numbers convert, strings parse, the rest is a `TypeError`.
pub(crate) fn value_as_float(value: &Value, scratch: &mut Vec<u8>) -> Option<f64> {
    match value {
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => py_float(s, scratch),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// HA's `RE_DIGIT_TAIL` twin: the float of `text` with all but digits and `.` removed, when
/// `^[^\.]*\d+\.?\d+[^\.]*$` matches (two adjacent digits, or one `.` between digits, and at most one `.`).
pub(crate) fn digit_tail(text: &str, scratch: &mut Vec<u8>) -> Option<f64> {
    if text.is_ascii() {
        return digit_tail_ascii(text.as_bytes(), scratch);
    }
    let mut dots = 0u32;
    let mut adjacent = false;
    let mut dot_between = false;
    let mut prev_digit = false;
    let mut dot_after_digit = false;
    let mut just_saw_dot = false;
    for ch in text.chars() {
        if ch == '.' {
            dots += 1;
            if dots > 1 {
                return None;
            }
            dot_after_digit = prev_digit;
            just_saw_dot = true;
            prev_digit = false;
            continue;
        }
        let is_digit = decimal_digit(ch).is_some();
        if is_digit {
            if prev_digit {
                adjacent = true;
            }
            if just_saw_dot && dot_after_digit {
                dot_between = true;
            }
        }
        just_saw_dot = false;
        prev_digit = is_digit;
    }
    let matched = if dots == 0 { adjacent } else { dot_between };
    if !matched {
        return None;
    }
    scratch.clear();
    for ch in text.chars() {
        if ch == '.' {
            scratch.push(b'.');
        } else if let Some(d) = decimal_digit(ch) {
            scratch.push(b'0' + d);
        }
    }
    parse_clean(scratch)
}

/// [`digit_tail`] in one pass over bytes; text with non-ASCII goes to the Unicode-aware loop.
fn digit_tail_ascii(b: &[u8], scratch: &mut Vec<u8>) -> Option<f64> {
    let mut dots = 0u32;
    let mut dot_between = false;
    let mut adjacent = false;
    let mut prev_digit = false;
    for (i, &c) in b.iter().enumerate() {
        let digit = c.is_ascii_digit();
        if digit {
            adjacent |= prev_digit;
        } else if c == b'.' {
            dots += 1;
            if dots > 1 {
                return None;
            }
            dot_between = prev_digit && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        }
        prev_digit = digit;
    }
    if !(if dots == 0 { adjacent } else { dot_between }) {
        return None;
    }
    scratch.clear();
    scratch.extend(b.iter().filter(|c| c.is_ascii_digit() || **c == b'.'));
    parse_clean(scratch)
}

/// Writes `v` when it is a decimal with at most four fractional digits (`21.5`, `0.912`).
///
/// The smallest `k` for which `round(v·10^k) / 10^k == v` gives the shortest spelling:
/// both the division and parsing the text are correctly rounded from the same exact
/// fraction, and below 1e9 two `k`-digit decimals can never meet in one float.
fn write_short_decimal(out: &mut String, v: f64) -> bool {
    const POW: [f64; 5] = [1.0, 10.0, 100.0, 1000.0, 10000.0];
    const IPOW: [u64; 5] = [1, 10, 100, 1000, 10000];
    let a = v.abs();
    if !(1e-4..1e9).contains(&a) {
        return false;
    }
    for k in 1..POW.len() {
        let m = (a * POW[k]).round();
        if m / POW[k] == a {
            let m = m as u64;
            let (int, frac) = (m / IPOW[k], m % IPOW[k]);
            if v < 0.0 {
                out.push('-');
            }
            let mut ib = itoa::Buffer::new();
            out.push_str(ib.format(int));
            out.push('.');
            let frac_text = ib.format(frac);
            for _ in frac_text.len()..k {
                out.push('0');
            }
            out.push_str(frac_text);
            return true;
        }
    }
    false
}

/// Python `repr(float)`: shortest round-trip digits, `1e+16`, `1.5e-05`, `20.0`, `nan`, `inf`.
pub(crate) fn write_float_repr(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("nan");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "inf" } else { "-inf" });
        return;
    }
    if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    if v.fract() == 0.0 && v.abs() < 1e16 {
        // Whole numbers below 1e16 are exact in i64 and Python writes them as `<int>.0`.
        let mut ib = itoa::Buffer::new();
        out.push_str(ib.format(v as i64));
        out.push_str(".0");
        return;
    }
    if write_short_decimal(out, v) {
        return;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v).as_bytes();
    // Re-read ryu's output as digits plus a decimal-point position.
    let mut digits = [0u8; 40];
    let mut n = 0usize;
    let mut point: Option<i32> = None;
    let mut exponent = 0i32;
    let mut negative = false;
    let mut i = 0;
    while let Some(&c) = text.get(i) {
        match c {
            b'-' => negative = true,
            b'.' => point = Some(n as i32),
            b'0'..=b'9' => {
                if let Some(slot) = digits.get_mut(n) {
                    *slot = c;
                    n += 1;
                }
            }
            b'e' | b'E' => {
                let exp_text = std::str::from_utf8(&text[i + 1..]).unwrap_or("0");
                exponent = exp_text.parse().unwrap_or(0);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let mut decpt = point.unwrap_or(n as i32) + exponent;
    let mut start = 0usize;
    while start < n && digits[start] == b'0' {
        start += 1;
        decpt -= 1;
    }
    while n > start && digits[n - 1] == b'0' {
        n -= 1;
    }
    let d = &digits[start..n];
    if negative {
        out.push('-');
    }
    let push = |out: &mut String, bytes: &[u8]| {
        for &b in bytes {
            out.push(b as char);
        }
    };
    if decpt <= -4 || decpt > 16 {
        push(out, &d[..1.min(d.len())]);
        if d.len() > 1 {
            out.push('.');
            push(out, &d[1..]);
        }
        let e = decpt - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        let e = e.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        let mut ib = itoa::Buffer::new();
        out.push_str(ib.format(e));
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in 0..(-decpt) {
            out.push('0');
        }
        push(out, d);
    } else {
        let decpt = decpt as usize;
        if decpt >= d.len() {
            push(out, d);
            for _ in d.len()..decpt {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            push(out, &d[..decpt]);
            out.push('.');
            push(out, &d[decpt..]);
        }
    }
}

/// Python `str(value)` of a JSON value: strings as they are, `None`, `True`, containers as reprs.
pub(crate) fn write_py_str(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => out.push_str(s),
        other => write_py_repr(out, other),
    }
}

/// Python `repr(value)` of a JSON value: `'text'`, `[1, 2.5]`, `{'a': None}`.
fn write_py_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            let mut ib = itoa::Buffer::new();
            if let Some(u) = n.as_u64() {
                out.push_str(ib.format(u));
            } else if let Some(i) = n.as_i64() {
                out.push_str(ib.format(i));
            } else {
                write_float_repr(out, n.as_f64().unwrap_or(f64::NAN));
            }
        }
        Value::String(s) => write_str_repr(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str_repr(out, k);
                out.push_str(": ");
                write_py_repr(out, v);
            }
            out.push('}');
        }
    }
}

fn is_printable(ch: char) -> bool {
    let c = ch as u32;
    if c < 0x80 {
        return (0x20..0x7f).contains(&c);
    }
    let idx = NON_PRINTABLE.partition_point(|&(lo, _)| lo <= c);
    match idx.checked_sub(1).and_then(|i| NON_PRINTABLE.get(i)) {
        Some(&(lo, hi)) => !(lo <= c && c <= hi),
        None => true,
    }
}

/// Python `repr(str)`: single quotes unless the text has `'` and no `"`, with Python's escapes.
fn write_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c => {
                let code = c as u32;
                let (prefix, width) = if code < 0x100 {
                    ("\\x", 2)
                } else if code < 0x10000 {
                    ("\\u", 4)
                } else {
                    ("\\U", 8)
                };
                out.push_str(prefix);
                for shift in (0..width).rev() {
                    let nibble = (code >> (shift * 4)) & 0xf;
                    out.push(char::from_digit(nibble, 16).unwrap_or('0'));
                }
            }
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_of(s: &str) -> Option<f64> {
        py_float(s, &mut Vec::new())
    }

    fn repr(v: f64) -> String {
        let mut s = String::new();
        write_float_repr(&mut s, v);
        s
    }

    fn py_str(v: &Value) -> String {
        let mut s = String::new();
        write_py_str(&mut s, v);
        s
    }

    #[test]
    fn float_accepts_what_python_accepts() {
        let cases: &[(&str, Option<f64>)] = &[
            ("21.5", Some(21.5)),
            (" 3 ", Some(3.0)),
            ("\t-3\n", Some(-3.0)),
            ("1_000", Some(1000.0)),
            ("1_0.5_5e1_0", Some(10.55e10)),
            ("1e3", Some(1000.0)),
            ("+1.5", Some(1.5)),
            ("-.5", Some(-0.5)),
            ("5.", Some(5.0)),
            ("1E-2", Some(0.01)),
            ("1e999", Some(f64::INFINITY)),
            ("Infinity", Some(f64::INFINITY)),
            ("-iNF", Some(f64::NEG_INFINITY)),
            ("\u{0663}", Some(3.0)),
            ("\u{ff11}\u{ff12}", Some(12.0)),
            ("\u{a0}7\u{3000}", Some(7.0)),
            ("1__000", None),
            ("_1", None),
            ("1_", None),
            ("1_.5", None),
            ("1._5", None),
            ("1e_5", None),
            (".", None),
            ("", None),
            ("  ", None),
            ("e5", None),
            ("1e", None),
            ("1e+", None),
            ("0x10", None),
            ("1 2", None),
            ("infinit", None),
            ("nan1", None),
            ("12.5 °C", None),
            ("on", None),
            ("1\u{1c}", None),
            ("--1", None),
        ];
        for (text, want) in cases {
            let got = float_of(text);
            match (got, want) {
                (Some(g), Some(w)) => assert_eq!(g, *w, "float({text:?})"),
                (None, None) => {}
                _ => panic!("float({text:?}) gave {got:?}, Python gives {want:?}"),
            }
        }
        assert!(float_of("nan").is_some_and(f64::is_nan));
        assert!(float_of(" -NaN ").is_some_and(f64::is_nan));
    }

    #[test]
    fn repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (20.0, "20.0"),
            (21.5, "21.5"),
            (-208.1, "-208.1"),
            (0.1, "0.1"),
            (0.30000000000000004, "0.30000000000000004"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e-5, "1e-05"),
            (1e308, "1e+308"),
            (9.223372036854776e18, "9.223372036854776e+18"),
            (2542080.0, "2542080.0"),
            (1e100, "1e+100"),
            (-1.5e-300, "-1.5e-300"),
            (5e-324, "5e-324"),
            (123456789.125, "123456789.125"),
            // Exactly ...701.25, a tie between two shortest spellings: Python rounds half to even.
            (1_538_329_791_820_701.2, "1538329791820701.2"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (v, want) in cases {
            assert_eq!(repr(*v), *want, "repr({v:e})");
        }
    }

    /// Significant digits and decimal-point position of a float's text (any layout).
    fn digits_and_point(text: &str) -> (String, i32) {
        let text = text.trim_start_matches('-');
        let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
        let exp: i32 = exp.parse().unwrap();
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all = format!("{int}{frac}");
        let lead = all.len() - all.trim_start_matches('0').len();
        let digits = all
            .trim_start_matches('0')
            .trim_end_matches('0')
            .to_string();
        (digits, int.len() as i32 - lead as i32 + exp)
    }

    /// Python's layout for given digits and point position.
    fn python_layout(negative: bool, digits: &str, decpt: i32) -> String {
        let sign = if negative { "-" } else { "" };
        if decpt <= -4 || decpt > 16 {
            let (first, rest) = digits.split_at(1);
            let dot = if rest.is_empty() {
                String::new()
            } else {
                format!(".{rest}")
            };
            let e = decpt - 1;
            format!(
                "{sign}{first}{dot}e{}{:02}",
                if e < 0 { '-' } else { '+' },
                e.abs()
            )
        } else if decpt <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
        } else if decpt as usize >= digits.len() {
            format!(
                "{sign}{digits}{}.0",
                "0".repeat(decpt as usize - digits.len())
            )
        } else {
            let (a, b) = digits.split_at(decpt as usize);
            format!("{sign}{a}.{b}")
        }
    }

    proptest::proptest! {
        #[test]
        fn short_decimals_match_the_general_path(m in -99_999_999_999i64..99_999_999_999, k in 0u32..6) {
            let x = m as f64 / 10f64.powi(k as i32);
            if x != 0.0 {
                let ours = repr(x);
                let (digits, point) = digits_and_point(&ours);
                let (std_digits, std_point) = digits_and_point(&format!("{x:e}"));
                proptest::prop_assert_eq!(ours.parse::<f64>().ok(), Some(x));
                proptest::prop_assert_eq!((digits.len(), point), (std_digits.len(), std_point));
                proptest::prop_assert_eq!(&ours, &python_layout(x < 0.0, &digits, point));
            }
        }

        /// Shortest digits (as many as Rust's own `{:e}`; ties may round differently, Python
        /// and ryu both round half to even), the same magnitude, and Python's layout.
        #[test]
        fn repr_round_trips_and_follows_the_layout_rule(
            v in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL,
            whole in -1e17f64..1e17,
        ) {
            for x in [v, whole.trunc()] {
                if x == 0.0 {
                    continue;
                }
                let ours = repr(x);
                proptest::prop_assert_eq!(ours.parse::<f64>().ok(), Some(x));
                let (digits, point) = digits_and_point(&ours);
                let (std_digits, std_point) = digits_and_point(&format!("{x:e}"));
                proptest::prop_assert_eq!(digits.len(), std_digits.len());
                proptest::prop_assert_eq!(point, std_point);
                proptest::prop_assert_eq!(&ours, &python_layout(x < 0.0, &digits, point));
            }
        }
    }

    #[test]
    fn str_of_json_matches_python() {
        let cases: &[(&str, &str)] = &[
            ("[254, 208, 0]", "[254, 208, 0]"),
            ("[0.5, 0.5]", "[0.5, 0.5]"),
            (r#"{"a": 1}"#, "{'a': 1}"),
            (r#"["xy", "color_temp"]"#, "['xy', 'color_temp']"),
            ("null", "None"),
            ("true", "True"),
            ("[]", "[]"),
            ("{}", "{}"),
            ("[1.0, -2, 1e20]", "[1.0, -2, 1e+20]"),
            (r#""plain \"text\"""#, "plain \"text\""),
            (r#"["it's"]"#, r#"["it's"]"#),
            (r#"["it's \"q\""]"#, r#"['it\'s "q"']"#),
            (
                r#"["a\\b\n\t\r\u0001\u007f\u00a0\u00e9"]"#,
                r"['a\\b\n\t\r\x01\x7f\xa0é']",
            ),
            (r#"["\u200b\ud83d\ude80"]"#, "['\\u200b🚀']"),
            (
                r#"{"a": [1, 2.5, {"b": null, "c": [true, false]}]}"#,
                "{'a': [1, 2.5, {'b': None, 'c': [True, False]}]}",
            ),
        ];
        for (json, want) in cases {
            let v: Value = serde_json::from_str(json).unwrap();
            assert_eq!(py_str(&v), *want, "str({json})");
        }
    }

    #[test]
    fn digit_tail_follows_the_regex() {
        let mut s = Vec::new();
        let cases: &[(&str, Option<f64>)] = &[
            ("12 km", Some(12.0)),
            ("5 km", None),
            ("12.5 kWh", Some(12.5)),
            ("-5.5 °C", Some(5.5)),
            ("10%", Some(10.0)),
            ("[254, 208, 0]", Some(2542080.0)),
            ("[0.5, 0.5]", None),
            ("{'a': 1.5}", Some(1.5)),
            ("2026-01-01 10:00:00+00:00", Some(202601011000000000.0)),
            ("192.168.1.10", None),
            ("v1.2.3", None),
            ("mdi:thermometer", None),
            ("None", None),
            ("1 2", None),
            ("5. 5", None),
            ("a1.2b", Some(1.2)),
            (".12", None),
            ("12.", None),
            ("x\u{0661}\u{0662}", Some(12.0)),
        ];
        for (text, want) in cases {
            assert_eq!(digit_tail(text, &mut s), *want, "digit tail of {text:?}");
        }
    }
}
