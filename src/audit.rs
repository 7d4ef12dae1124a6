//! The audit log: one JSON line in `<data_dir>/audit.log` for every action that changes
//! stored data or the running configuration, saying when, who, what and how it ended.
//!
//! The file is private (mode 0600, created through [`crate::private_fs`]) and opened
//! with `O_APPEND`; each entry is one `write(2)` of the whole line, so lines from
//! several processes never interleave. Commands open the log *before* they act and
//! refuse to start when it cannot be opened: nothing changes unaudited. A leaf beside
//! `private_fs`: it imports nothing else of the crate but that.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// The file name of the audit log inside `data_dir`.
pub const FILE_NAME: &str = "audit.log";

/// Why an audit entry could not be written (the action it audits must not go on).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log (or its folder) could not be created or opened.
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line could not be written whole.
    #[error("cannot write to the audit log {path}: {source}")]
    Write {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Who acts: the process's real user id and its name from the password database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Who {
    /// The real user id (`getuid`).
    pub uid: u32,
    /// The user name, or `None` when the uid has no entry (containers often run as a bare uid).
    pub user: Option<String>,
}

impl Who {
    /// The user running this process.
    pub fn current() -> Who {
        #[cfg(unix)]
        {
            // SAFETY: getuid(2) cannot fail and touches no memory.
            let uid = unsafe { libc::getuid() };
            Who {
                uid,
                user: user_name(uid),
            }
        }
        #[cfg(not(unix))]
        {
            Who { uid: 0, user: None }
        }
    }
}

/// The name of `uid` in the password database (NSS, so LDAP users work too).
#[cfg(unix)]
fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); getpwuid_r fills it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is the buffer's size;
        // the strings it sets point into `buf`, which outlives their use below.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success `pw_name` is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// How an audited action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was asked.
    Ok,
    /// It failed; the reason (never a secret: callers pass errors that redact them).
    Error(String),
}

impl<T, E: std::fmt::Display> From<&Result<T, E>> for Outcome {
    fn from(result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Error(e.to_string()),
        }
    }
}

/// One line of the log, as written.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    uid: u32,
    user: Option<&'a str>,
    action: &'a str,
    target: &'a str,
    what: &'a serde_json::Value,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// An open audit log; [`AuditLog::record`] appends one line.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    who: Who,
    // A std Mutex: held only for one write(2), never across an `.await`.
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating 0600, and `data_dir` 0700 if missing) `<data_dir>/audit.log` for appending.
    pub fn open(data_dir: &Path) -> Result<AuditLog, AuditError> {
        let path = data_dir.join(FILE_NAME);
        let open = || -> std::io::Result<File> {
            crate::private_fs::create_dir_all(data_dir)?;
            crate::private_fs::file_options()
                .create(true)
                .append(true)
                .open(&path)
        };
        let file = open().map_err(|source| AuditError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(AuditLog {
            path,
            who: Who::current(),
            file: Mutex::new(file),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry: `action` (e.g. `"schema migrate"`) on `target` (a database, a
    /// file …), `what` it did (statement, chunk, counts), and how it ended.
    pub fn record(
        &self,
        action: &str,
        target: &str,
        what: serde_json::Value,
        outcome: &Outcome,
    ) -> Result<(), AuditError> {
        let (result, error) = match outcome {
            Outcome::Ok => ("ok", None),
            Outcome::Error(reason) => ("error", Some(reason.as_str())),
        };
        let line = Line {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            uid: self.who.uid,
            user: self.who.user.as_deref(),
            action,
            target,
            what: &what,
            result,
            error,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| AuditError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        let write_error = |source| AuditError::Write {
            path: self.path.clone(),
            source,
        };
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write(2) of the whole line with O_APPEND: the line lands whole at the end.
        let written = file.write(&bytes).map_err(write_error)?;
        if written != bytes.len() {
            return Err(write_error(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("wrote {written} of {} bytes", bytes.len()),
            )));
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn each_record_is_one_json_line_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        log.record(
            "replay",
            "http://db:8086 ha",
            serde_json::json!({"file": "a.lp"}),
            &Outcome::Ok,
        )
        .unwrap();
        log.record(
            "replay",
            "http://db:8086 ha",
            serde_json::json!({"file": "b.lp"}),
            &Outcome::Error("refused".into()),
        )
        .unwrap();
        let text = std::fs::read_to_string(data.join(FILE_NAME)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["result"], "ok");
        assert!(lines[0].get("error").is_none());
        assert_eq!(lines[1]["result"], "error");
        assert_eq!(lines[1]["error"], "refused");
        assert_eq!(lines[1]["what"]["file"], "b.lp");
        // SAFETY: getuid cannot fail.
        assert_eq!(lines[0]["uid"], unsafe { libc::getuid() });
        let time = lines[0]["time"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'),
            "{time}"
        );
        let mode = std::fs::metadata(data.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_current_user_has_the_name_the_password_database_gives() {
        let who = Who::current();
        // The name of uid 0 is "root" on every Unix we run on.
        assert_eq!(user_name(0).as_deref(), Some("root"));
        if let Some(name) = &who.user {
            assert!(!name.is_empty());
        }
    }

    #[test]
    fn an_unopenable_log_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = AuditLog::open(&blocker.join("data")).unwrap_err();
        assert!(err.to_string().contains("audit.log"), "{err}");
    }
}
