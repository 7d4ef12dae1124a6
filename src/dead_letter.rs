//! Input that cannot be used is set aside here with its reason, never silently dropped.
//!
//! One JSON object per line in `<data_dir>/dead-letter/dead-letter-YYYY-MM-DD.jsonl`
//! (then `dead-letter-YYYY-MM-DD.1.jsonl`, `.2`, … once a file holds an eighth of
//! `[dead_letter] max_bytes`): `{"time", "stage", "kind", "reason", "source",
//! "input"}`, where `input` is the UTF-8 input, or `input_hex` (two hex digits a byte,
//! no `input`) when it is not UTF-8. An input longer than `max_input_bytes` is cut to
//! that many bytes (at a character boundary) and the record adds `"truncated": true`
//! and `"input_len"` (the original length in bytes). The folder is kept under
//! `max_bytes` by removing its oldest files first (counted in
//! `ha_ingestor_dead_letter_rotated_{files,bytes}_total`), so whoever can publish bad
//! input cannot fill the disk. Each (stage, kind) is logged at WARN the first time and
//! at DEBUG afterwards, so a flood of bad input does not flood the log.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::config::DeadLetterConfig;
use crate::event::Timestamp;

use crate::monitor::metrics::{
    DEAD_LETTER_ROTATED_BYTES, DEAD_LETTER_ROTATED_FILES, DEAD_LETTERS as DEAD_LETTERS_METRIC,
};

/// A file is closed and the next one started once it holds `max_bytes / SEGMENTS`,
/// so rotation removes an eighth of the folder at a time, not all of it.
const SEGMENTS: u64 = 8;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_hex: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_len: Option<usize>,
}

/// One dead-letter file: its day and its part within the day (0 for the first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FileKey {
    day: String,
    part: u32,
}

impl FileKey {
    fn name(&self) -> String {
        if self.part == 0 {
            format!("dead-letter-{}.jsonl", self.day)
        } else {
            format!("dead-letter-{}.{}.jsonl", self.day, self.part)
        }
    }

    /// The key of a file this store wrote; `None` for any other file (never removed).
    fn parse(name: &str) -> Option<FileKey> {
        let stem = name.strip_prefix("dead-letter-")?.strip_suffix(".jsonl")?;
        let (day, part) = match stem.split_once('.') {
            Some((day, part)) => (day, part.parse().ok()?),
            None => (stem, 0),
        };
        let date_like = day.len() == 10
            && day.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        date_like.then(|| FileKey {
            day: day.to_string(),
            part,
        })
    }
}

#[derive(Default)]
struct Inner {
    /// The day the folder was last listed; a new day lists it again.
    listed_day: String,
    /// This store's files in the folder, oldest first, with their sizes; the last is written to.
    files: Vec<(FileKey, u64)>,
    /// The open file and its key.
    open: Option<(FileKey, File)>,
    logged: HashSet<(&'static str, &'static str)>,
}

/// The dead-letter store; cheap to share behind an `Arc`.
pub struct DeadLetters {
    dir: Option<PathBuf>,
    limits: DeadLetterConfig,
    // A std Mutex: records are rare and no `.await` is held while locked.
    inner: Mutex<Inner>,
}

impl DeadLetters {
    /// A store writing under `dir` (created on first use) with the default `[dead_letter]` limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DeadLetters::with_config(dir, &DeadLetterConfig::default())
    }

    /// A store writing under `dir` (created on first use) within the limits of `[dead_letter]`.
    pub fn with_config(dir: impl Into<PathBuf>, limits: &DeadLetterConfig) -> Self {
        DeadLetters {
            dir: Some(dir.into()),
            limits: *limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A store that counts and logs but keeps no file (benchmarks).
    pub fn in_memory() -> Self {
        DeadLetters {
            dir: None,
            limits: DeadLetterConfig::default(),
            inner: Mutex::new(Inner::default()),
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
        let (input, input_hex, truncated) = stored_input(item.input, self.limits.max_input_bytes);
        let record = Record {
            time: now,
            stage: item.stage,
            kind: item.kind,
            reason: item.reason,
            source: item.source,
            input,
            input_hex,
            truncated,
            input_len: truncated.then_some(item.input.len()),
        };
        let mut line = match serde_json::to_vec(&record) {
            Ok(v) => v,
            Err(error) => {
                tracing::error!(message = "Cannot serialise a dead letter.", %error);
                return;
            }
        };
        line.push(b'\n');
        inner.write(dir, &day, &line, self.limits.max_bytes);
    }
}

/// The part of `input` kept: UTF-8 text, or hex when not UTF-8, cut to `max` bytes; and whether it was cut.
fn stored_input(input: &[u8], max: usize) -> (Option<&str>, Option<String>, bool) {
    let truncated = input.len() > max;
    let kept = &input[..input.len().min(max)];
    match std::str::from_utf8(kept) {
        Ok(text) => (Some(text), None, truncated),
        // Only the cut split a character: the text up to it is what is kept.
        Err(e) if truncated && e.error_len().is_none() => {
            // `valid_up_to` is a character boundary, so this slice is UTF-8.
            let text = std::str::from_utf8(&kept[..e.valid_up_to()]).unwrap_or_default();
            (Some(text), None, truncated)
        }
        Err(_) => {
            let mut hex = String::with_capacity(kept.len() * 2);
            for b in kept {
                use std::fmt::Write as _;
                let _ = write!(hex, "{b:02x}");
            }
            (None, Some(hex), truncated)
        }
    }
}

impl Inner {
    /// Appends `line` to today's file, starting a new file or removing the oldest ones to stay under `max_bytes`.
    fn write(&mut self, dir: &Path, day: &str, line: &[u8], max_bytes: u64) {
        let len = line.len() as u64;
        if len > max_bytes {
            tracing::debug!(
                message = "A dead letter is larger than [dead_letter] max_bytes; it is counted but not kept.",
                bytes = len,
                max_bytes
            );
            return;
        }
        if self.listed_day != day {
            if let Err(error) = crate::private_fs::create_dir_all(dir) {
                tracing::error!(message = "Cannot create the dead-letter folder.", dir = %dir.display(), %error);
                return;
            }
            match list(dir) {
                Ok(files) => {
                    self.files = files;
                    self.listed_day = day.to_string();
                    self.open = None;
                }
                Err(error) => {
                    tracing::error!(message = "Cannot list the dead-letter folder.", dir = %dir.display(), %error);
                    return;
                }
            }
        }
        // Today's newest file, unless it is full: then the next part.
        let segment = (max_bytes / SEGMENTS).max(1);
        let next = match self.files.last() {
            Some((key, size)) if key.day == day => {
                (*size > 0 && size + len > segment).then(|| FileKey {
                    day: day.to_string(),
                    part: key.part + 1,
                })
            }
            _ => Some(FileKey {
                day: day.to_string(),
                part: 0,
            }),
        };
        if let Some(key) = next {
            self.files.push((key, 0));
        }
        self.rotate(dir, len, max_bytes);
        let Some((key, _)) = self.files.last() else {
            return;
        };
        if self.open.as_ref().is_none_or(|(open, _)| open != key) {
            let path = dir.join(key.name());
            match crate::private_fs::file_options()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(file) => self.open = Some((key.clone(), file)),
                Err(error) => {
                    tracing::error!(message = "Cannot open the dead-letter file.", path = %path.display(), %error);
                    self.open = None;
                    return;
                }
            }
        }
        if let Some((_, file)) = self.open.as_mut() {
            match file.write_all(line) {
                Ok(()) => {
                    if let Some((_, size)) = self.files.last_mut() {
                        *size += len;
                    }
                }
                Err(error) => tracing::error!(message = "Cannot write a dead letter.", %error),
            }
        }
    }

    /// Removes the oldest files (never the one being written) until `incoming` more bytes fit under `max_bytes`.
    fn rotate(&mut self, dir: &Path, incoming: u64, max_bytes: u64) {
        let mut total: u64 = self.files.iter().map(|(_, size)| size).sum();
        while total + incoming > max_bytes && self.files.len() > 1 {
            let (key, size) = self.files.remove(0);
            total -= size;
            let path = dir.join(key.name());
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    metrics::counter!(DEAD_LETTER_ROTATED_FILES).increment(1);
                    metrics::counter!(DEAD_LETTER_ROTATED_BYTES).increment(size);
                    tracing::info!(
                        message = "Removed the oldest dead-letter file to stay under [dead_letter] max_bytes.",
                        path = %path.display(),
                        bytes = size,
                        max_bytes
                    );
                }
                // Removed by someone else: nothing to count.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::error!(message = "Cannot remove an old dead-letter file.", path = %path.display(), %error);
                }
            }
        }
    }
}

/// This store's files in `dir`, oldest first, with their sizes.
fn list(dir: &Path) -> std::io::Result<Vec<(FileKey, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(key) = entry.file_name().to_str().and_then(FileKey::parse) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            files.push((key, meta.len()));
        }
    }
    files.sort();
    Ok(files)
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

    fn letter(input: &[u8]) -> DeadLetter<'_> {
        DeadLetter {
            stage: "source",
            kind: "bad",
            reason: "r",
            source: "s",
            input,
        }
    }

    fn records(dir: &Path) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (key, _) in list(dir).unwrap() {
            let text = std::fs::read_to_string(dir.join(key.name())).unwrap();
            out.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
            );
        }
        out
    }

    #[test]
    fn long_input_is_truncated_and_non_utf8_is_stored_once_as_hex() {
        let dir = tempfile::tempdir().unwrap();
        let limits = DeadLetterConfig {
            max_input_bytes: 8,
            max_bytes: 1 << 20,
        };
        let dl = DeadLetters::with_config(dir.path(), &limits);
        dl.record(letter(b"0123456789abcdef"));
        dl.record(letter(&[0xff; 100]));
        dl.record(letter(b"short"));
        let r = records(dir.path());
        assert_eq!(r[0]["input"], "01234567");
        assert_eq!(
            (r[0]["truncated"].clone(), r[0]["input_len"].clone()),
            (true.into(), 16.into())
        );
        assert_eq!(r[1]["input_hex"], "ffffffffffffffff");
        assert!(
            r[1].get("input").is_none(),
            "non-UTF-8 input is stored once: {}",
            r[1]
        );
        assert!(r[2].get("truncated").is_none() && r[2].get("input_len").is_none());
    }

    #[test]
    fn the_folder_is_capped_by_removing_its_oldest_files() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("dead-letter-2000-01-01.jsonl"),
            vec![b'x'; 3000],
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"kept").unwrap();
        let limits = DeadLetterConfig {
            max_input_bytes: 1000,
            max_bytes: 8000,
        };
        metrics::with_local_recorder(&recorder, || {
            let dl = DeadLetters::with_config(dir.path(), &limits);
            for _ in 0..100 {
                dl.record(letter(&[b'a'; 900]));
            }
        });
        let total: u64 = list(dir.path()).unwrap().iter().map(|(_, s)| s).sum();
        assert!(total <= 8000, "folder holds {total} bytes");
        assert!(
            !dir.path().join("dead-letter-2000-01-01.jsonl").exists(),
            "the oldest file goes first"
        );
        assert!(
            dir.path().join("notes.txt").exists(),
            "other files are never removed"
        );
        assert!(
            list(dir.path()).unwrap().len() > 1,
            "rotation keeps the newer files"
        );
        let text = handle.render();
        assert!(text.contains(DEAD_LETTER_ROTATED_BYTES), "{text}");
        assert!(text.contains(DEAD_LETTER_ROTATED_FILES), "{text}");
    }
}
