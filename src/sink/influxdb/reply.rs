//! Reading InfluxDB's replies: the one classifier behind the module table
//! ([`classify`] → [`Verdict`]), the server's message inside an error body, and
//! what a `partial write` message says (how many lines were dropped, which lines
//! were unparsable and why, what kind of rejection it was).

/// The `error_type` metric label of an HTTP status.
pub(super) fn status_kind(code: u16) -> &'static str {
    match code {
        400 => "bad_request",
        401 | 403 => "unauthorized",
        404 => "not_found",
        408 => "timeout",
        413 => "too_large",
        422 => "unprocessable",
        429 => "throttled",
        500..=599 => "server_error",
        _ => "http_other",
    }
}

/// What to do with a batch after a non-2xx reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Delivered,
    /// Some or all lines refused; `partial`: the others were written; `dropped`: how many the server dropped (not counting unparsable lines).
    Rejected {
        partial: bool,
        dropped: Option<usize>,
    },
    Split,
    Retry,
    Hold,
}

/// The one reply classifier (see the module table).
pub(super) fn classify(code: u16, message: &str) -> Verdict {
    match code {
        200..=299 => Verdict::Delivered,
        413 => Verdict::Split,
        401 | 403 | 404 => Verdict::Hold,
        // VictoriaMetrics answers a URL path it does not serve with 400: the URL is wrong, not the lines.
        _ if message.contains("unsupported path requested") => Verdict::Hold,
        _ if message.contains("partial write") => Verdict::Rejected {
            partial: true,
            dropped: parse_dropped(message),
        },
        // v2 answers 400 for an unknown organisation: a configuration problem, not a bad line.
        400 | 422 if message.contains("not found") => Verdict::Hold,
        400 | 422 => Verdict::Rejected {
            partial: false,
            dropped: None,
        },
        408 | 429 => Verdict::Retry,
        501 => Verdict::Hold,
        500..=599 => Verdict::Retry,
        _ => Verdict::Hold,
    }
}

/// `dropped=N` from a partial-write message.
fn parse_dropped(message: &str) -> Option<usize> {
    let at = message.rfind("dropped=")?;
    let digits: String = message[at + 8..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The message inside a v1 (`{"error"}`) or v2 (`{"message"}`) error body, else the body.
pub(super) fn server_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().to_string())
}

/// The server's reason when `message` names `line` as unparsable (`unable to parse '<line>': <reason>`).
pub(super) fn unparsable_reason<'m>(message: &'m str, line: &str) -> Option<&'m str> {
    let line = line.trim_start();
    let mut from = 0;
    while let Some(pos) = message[from..].find("unable to parse '") {
        let start = from + pos;
        let after = start + "unable to parse '".len();
        let rest = &message[after..];
        if rest.starts_with(line) && rest[line.len()..].starts_with("':") {
            let end = message[after + line.len()..]
                .find('\n')
                .map(|i| after + line.len() + i)
                .unwrap_or(message.len());
            return Some(&message[start..end]);
        }
        from = after;
    }
    None
}

/// The `kind` of a refused line's dead letter, read from the server's message.
pub(super) fn reject_kind(message: &str) -> &'static str {
    if message.contains("field type conflict") {
        "type_conflict"
    } else if message.contains("beyond retention") {
        "out_of_retention"
    } else if message.contains("max-series") || message.contains("max series") {
        "series_limit"
    } else if message.contains("max-values-per-tag") {
        "tag_values_limit"
    } else if message.contains("too long line") {
        // VictoriaMetrics: a line above its -influx.maxLineSize.
        "line_too_large"
    } else {
        "rejected_line"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_follows_the_table() {
        let rejected = |partial, dropped| Verdict::Rejected { partial, dropped };
        let table: &[(u16, &str, Verdict)] = &[
            (204, "", Verdict::Delivered),
            (200, "", Verdict::Delivered),
            (413, "too large", Verdict::Split),
            (401, "authorization failed", Verdict::Hold),
            (403, "forbidden", Verdict::Hold),
            (404, "database not found: \"x\"", Verdict::Hold),
            (
                400,
                "unable to parse 'x': missing fields",
                rejected(false, None),
            ),
            (
                400,
                "partial write: field type conflict: input field \"value\" on measurement \"m\" is type string, already exists as type float dropped=1",
                rejected(true, Some(1)),
            ),
            (
                400,
                "partial write: unable to parse 'bad': missing fields dropped=0",
                rejected(true, Some(0)),
            ),
            (
                422,
                "failure writing points to database: partial write: points beyond retention policy dropped=3",
                rejected(true, Some(3)),
            ),
            (422, "unprocessable", rejected(false, None)),
            (400, "organization name \"o\" not found", Verdict::Hold),
            (
                500,
                "partial write: max-series-per-database limit exceeded: (1) dropped=2",
                rejected(true, Some(2)),
            ),
            (500, "internal error", Verdict::Retry),
            (502, "", Verdict::Retry),
            (503, "", Verdict::Retry),
            (504, "", Verdict::Retry),
            (501, "", Verdict::Hold),
            (408, "", Verdict::Retry),
            (429, "", Verdict::Retry),
            (405, "", Verdict::Hold),
            // VictoriaMetrics 1.79's own replies (tests/it/sink/victoria.rs records them from a real server).
            (
                400,
                "remoteAddr: \"127.0.0.1:43616\"; requestURI: /wrte?db=ha; unsupported path requested: \"/wrte\"",
                Verdict::Hold,
            ),
            (
                400,
                "remoteAddr: \"127.0.0.1:35378\"; requestURI: /write?db=ha&precision=ns; cannot read influx line protocol data: too long line: more than 262144 bytes",
                rejected(false, None),
            ),
            (401, "", Verdict::Hold),
        ];
        for (code, message, expected) in table {
            assert_eq!(classify(*code, message), *expected, "{code} {message}");
        }
    }

    #[test]
    fn unparsable_lines_are_found_by_name() {
        let msg = "partial write: unable to parse 'm,t=1 value=': missing field value\nunable to parse 'bad line': invalid field format dropped=0";
        assert_eq!(
            unparsable_reason(msg, "m,t=1 value="),
            Some("unable to parse 'm,t=1 value=': missing field value")
        );
        assert_eq!(
            unparsable_reason(msg, "bad line"),
            Some("unable to parse 'bad line': invalid field format dropped=0")
        );
        assert_eq!(unparsable_reason(msg, "bad"), None);
        assert_eq!(unparsable_reason(msg, "m,t=1 value=1 1"), None);
    }

    #[test]
    fn server_message_reads_v1_and_v2_bodies() {
        assert_eq!(
            server_message(r#"{"error":"database not found: \"x\""}"#),
            "database not found: \"x\""
        );
        assert_eq!(
            server_message(r#"{"code":"invalid","message":"unable to parse 'a': b"}"#),
            "unable to parse 'a': b"
        );
        assert_eq!(server_message(" plain text \n"), "plain text");
    }

    #[test]
    fn dropped_count_is_parsed() {
        assert_eq!(parse_dropped("partial write: x dropped=12"), Some(12));
        assert_eq!(parse_dropped("partial write"), None);
    }
}
