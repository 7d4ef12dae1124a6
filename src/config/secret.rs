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
        Ok(s) => Ok(s.trim_end().to_string()),
        Err(source) => Err((path, source)),
    }
}
