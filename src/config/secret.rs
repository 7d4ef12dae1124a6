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
