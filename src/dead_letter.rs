//! Input that cannot be used is set aside here with its reason, never silently dropped.
//!
//! One JSON object per line in `<data_dir>/dead-letter/dead-letter-YYYY-MM-DD.jsonl`:
//! `{"time", "stage", "reason", "source", "input"}` (plus `input_hex` when the
//! input was not UTF-8). Each (stage, kind) is logged at WARN the first time and
//! at DEBUG afterwards, so a flood of bad input does not flood the log.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::event::Timestamp;

use crate::monitor::metrics::DEAD_LETTERS as DEAD_LETTERS_METRIC;

/// One rejected item, borrowed from the caller for the time of the write.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// `source`, `pipeline`, `encoder` or `sink`.
    pub stage: &'static str,
    /// A short, bounded kind for metrics and log grouping (`malformed_json`).
    pub kind: &'static str,
    /// The full human-readable reason.
    pub reason: &'a str,
    /// The source or sink name.
    pub source: &'a str,
    /// The raw input or rejected line.
    pub input: &'a [u8],
}

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    stage: &'a str,
    kind: &'a str,
    reason: &'a str,
    source: &'a str,
    input: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_hex: Option<String>,
}

struct Inner {
    day: String,
    file: Option<File>,
    logged: HashSet<(&'static str, &'static str)>,
}

/// The dead-letter store; cheap to share behind an `Arc`.
pub struct DeadLetters {
    dir: Option<PathBuf>,
    // A std Mutex: records are rare and no `.await` is held while locked.
    inner: Mutex<Inner>,
}

impl DeadLetters {
    /// A store writing under `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DeadLetters {
            dir: Some(dir.into()),
            inner: Mutex::new(Inner {
                day: String::new(),
                file: None,
                logged: HashSet::new(),
            }),
        }
    }

    /// A store that counts and logs but keeps no file (benchmarks).
    pub fn in_memory() -> Self {
        DeadLetters {
            dir: None,
            inner: Mutex::new(Inner {
                day: String::new(),
                file: None,
                logged: HashSet::new(),
            }),
        }
    }

    /// The folder the files go to, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Counts, logs (once per kind at WARN) and writes one record; I/O errors are logged, never raised.
    pub fn record(&self, item: DeadLetter<'_>) {
        metrics::counter!(DEAD_LETTERS_METRIC, "stage" => item.stage, "kind" => item.kind)
            .increment(1);
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if inner.logged.insert((item.stage, item.kind)) {
            tracing::warn!(
                message = "Input set aside as a dead letter; further ones of this kind are logged at debug level.",
                stage = item.stage,
                kind = item.kind,
                source = item.source,
                reason = item.reason,
                dir = ?self.dir,
            );
        } else {
            tracing::debug!(
                message = "Input set aside as a dead letter.",
                stage = item.stage,
                kind = item.kind,
                reason = item.reason
            );
        }
        let Some(dir) = &self.dir else { return };
        let now = Timestamp::now().to_rfc3339();
        let day = now[..10].to_string();
        if inner.file.is_none() || inner.day != day {
            if let Err(error) = std::fs::create_dir_all(dir) {
                tracing::error!(message = "Cannot create the dead-letter folder.", dir = %dir.display(), %error);
                return;
            }
            let path = dir.join(format!("dead-letter-{day}.jsonl"));
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    inner.file = Some(f);
                    inner.day = day;
                }
                Err(error) => {
                    tracing::error!(message = "Cannot open the dead-letter file.", path = %path.display(), %error);
                    return;
                }
            }
        }
        let (input, input_hex) = match std::str::from_utf8(item.input) {
            Ok(s) => (std::borrow::Cow::Borrowed(s), None),
            Err(_) => (
                String::from_utf8_lossy(item.input),
                Some(item.input.iter().map(|b| format!("{b:02x}")).collect()),
            ),
        };
        let record = Record {
            time: now,
            stage: item.stage,
            kind: item.kind,
            reason: item.reason,
            source: item.source,
            input,
            input_hex,
        };
        let mut line = match serde_json::to_vec(&record) {
            Ok(v) => v,
            Err(error) => {
                tracing::error!(message = "Cannot serialise a dead letter.", %error);
                return;
            }
        };
        line.push(b'\n');
        if let Some(file) = inner.file.as_mut()
            && let Err(error) = file.write_all(&line)
        {
            tracing::error!(message = "Cannot write a dead letter.", %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_with_reason_and_raw_input() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::new(dir.path().join("dl"));
        dl.record(DeadLetter {
            stage: "source",
            kind: "malformed_json",
            reason: "expected value at line 1 column 1",
            source: "homeassistant",
            input: b"{not json",
        });
        dl.record(DeadLetter {
            stage: "source",
            kind: "invalid_utf8",
            reason: "invalid UTF-8",
            source: "homeassistant",
            input: &[0x7b, 0xff, 0x7d],
        });
        let files: Vec<_> = std::fs::read_dir(dir.path().join("dl")).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["input"], "{not json");
        assert_eq!(lines[0]["kind"], "malformed_json");
        assert_eq!(lines[1]["input_hex"], "7bff7d");
    }
}
