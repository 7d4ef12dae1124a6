//! Keeping secrets out of sight: URLs without credentials, `Debug` output without
//! passwords and tokens, and the `*_file` settings that keep them out of the config
//! file. A leaf: it imports nothing else of the crate.

use std::path::{Path, PathBuf};

/// A URL fit for logs and errors: no `user:password@`, no query string (v1 may carry `p=`).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Both setters only fail for URLs that cannot have credentials at all.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// How a secret appears in `Debug` output: whether it is set, never its value.
pub(super) fn secret(value: &Option<String>) -> &'static str {
    if value.is_some() {
        "<redacted>"
    } else {
        "<unset>"
    }
}

/// Reads a `*_file` secret: a relative `file` is taken from `base` (the config's
/// folder) and trailing whitespace is trimmed; the error carries the path tried.
pub(super) fn read_secret_file(
    base: &Path,
    file: &Path,
) -> Result<String, (PathBuf, std::io::Error)> {
    let path = if file.is_absolute() {
        file.to_path_buf()
    } else {
        base.join(file)
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            if let Some(warning) = loose_mode(&path) {
                tracing::warn!(message = warning, path = %path.display());
            }
            Ok(s.trim_end().to_string())
        }
        Err(source) => Err((path, source)),
    }
}

/// Whether a config key holds a secret whose value must never be shown: `token`,
/// `password`, `secret`, `api_key` and the keys ending in `_token`, `_password`,
/// `_secret`, `_api_key` (not `*_file`, which names a path).
pub(super) fn is_secret_key(key: &str) -> bool {
    let key = key
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase();
    const NAMES: [&str; 6] = ["token", "password", "passwd", "secret", "api_key", "apikey"];
    NAMES.contains(&key.as_str())
        || ["_token", "_password", "_secret", "_api_key"]
            .iter()
            .any(|suffix| key.ends_with(suffix))
}

/// What stands in for a secret value in messages.
pub(super) const REDACTED: &str = "<redacted>";

/// `message` without any of `values`: their quoted forms always, the bare text when it is
/// long enough not to be a common word piece (serde quotes what it shows: `` `1234` ``, `"abc"`).
pub(super) fn scrub<'a>(message: &str, values: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = message.to_string();
    for value in values {
        if value.is_empty() {
            continue;
        }
        for quoted in [
            format!("`{value}`"),
            format!("{value:?}"),
            format!("\"{value}\""),
            format!("'{value}'"),
        ] {
            out = out.replace(&quoted, REDACTED);
        }
        if value.chars().count() >= 4 {
            out = out.replace(value, REDACTED);
        }
    }
    out
}

/// One `key = value` assignment on a line of TOML source whose key is a secret.
struct SecretOnLine<'a> {
    /// Byte offset just after the `=`.
    value_start: usize,
    /// The value as written (quotes included), up to the end of the value.
    written: &'a str,
}

/// The first assignment to a secret key on `line` (also inside an inline table), if any.
fn secret_on_line(line: &str) -> Option<SecretOnLine<'_>> {
    let mut from = 0;
    while let Some(rel) = line.get(from..).and_then(|rest| rest.find('=')) {
        let eq = from + rel;
        let before = line.get(..eq).unwrap_or("").trim_end();
        let key_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_-.\"'".contains(c)))
            .map_or(0, |i| i + 1);
        let key = before.get(key_start..).unwrap_or("");
        let last = key.rsplit('.').next().unwrap_or(key);
        if is_secret_key(last) {
            let after = line.get(eq + 1..).unwrap_or("");
            let value = after.trim_start();
            let end = match value.chars().next() {
                Some(q @ ('"' | '\'')) => value
                    .get(1..)
                    .and_then(|v| v.find(q))
                    .map_or(value.len(), |i| i + 2),
                _ => value
                    .find(|c: char| c.is_whitespace() || ",}#".contains(c))
                    .unwrap_or(value.len()),
            };
            return Some(SecretOnLine {
                value_start: eq + 1,
                written: value.get(..end).unwrap_or(value),
            });
        }
        from = eq + 1;
    }
    None
}

/// The secret values written in a TOML text, as written and without their quotes.
fn secret_values(text: &str) -> Vec<&str> {
    let mut values = Vec::new();
    for line in text.lines() {
        if let Some(found) = secret_on_line(line) {
            let written = found.written;
            values.push(written);
            let unquoted = written
                .trim_start_matches(['"', '\''])
                .trim_end_matches(['"', '\'']);
            values.push(unquoted);
        }
    }
    values
}

/// A TOML error on `text` as the user needs it — line, column, the line itself and the
/// parser's message — with the value of every secret key replaced by `<redacted>`: on
/// the line shown and in the message (a type error quotes the value it refused).
pub(super) fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let secrets = secret_values(text);
    let message = scrub(error.message().trim(), secrets.iter().copied());
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let line_start = text
        .get(..start)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line_no = text
        .get(..line_start)
        .map_or(0, |t| t.matches('\n').count())
        + 1;
    let column = text.get(line_start..start).map_or(0, |t| t.chars().count()) + 1;
    let line = text
        .get(line_start..)
        .and_then(|t| t.split('\n').next())
        .unwrap_or("")
        .trim_end_matches('\r');
    // Any line may be inside a multi-line string: with a multi-line secret in the
    // file, only the redacted assignment itself is shown.
    let multi_line_secret = secrets
        .iter()
        .any(|v| v.starts_with("\"\"\"") || v.starts_with("'''"));
    let shown = if let Some(found) = secret_on_line(line) {
        Some(format!(
            "{} {REDACTED}",
            line.get(..found.value_start).unwrap_or("")
        ))
    } else if multi_line_secret {
        None
    } else {
        Some(line.to_string())
    };
    match shown {
        Some(shown) => format!("line {line_no}, column {column}\n  | {shown}\n{message}"),
        None => format!("line {line_no}, column {column}\n{message}"),
    }
}

/// The warning for a secret file that group or others may read (its mode says so), or `None`.
#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    loose_mode_warning(mode)
}

/// Without Unix modes there is nothing to check.
#[cfg(not(unix))]
fn loose_mode(_path: &Path) -> Option<&'static str> {
    None
}

/// The warning when `mode` lets group or others read the file; never names its content.
pub(super) fn loose_mode_warning(mode: u32) -> Option<&'static str> {
    (mode & 0o044 != 0).then_some(
        "A secret file is readable by group or others; make it private: chmod 600 <file>.",
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_secret_file_readable_by_group_or_others_is_warned_about() {
        assert!(loose_mode_warning(0o100644).is_some());
        assert!(loose_mode_warning(0o100640).is_some());
        assert!(loose_mode_warning(0o100604).is_some());
        assert_eq!(loose_mode_warning(0o100600), None);
        assert_eq!(loose_mode_warning(0o100400), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = loose_mode(&file).expect("a 0644 secret file is warned about");
        assert!(!warning.contains("s3cret"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loose_mode(&file), None);
        assert_eq!(
            read_secret_file(dir.path(), Path::new("token")).unwrap(),
            "s3cret"
        );
    }
}
