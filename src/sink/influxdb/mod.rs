//! The InfluxDB writer: batches line protocol, sends it over HTTP (v1 or v2 write API)
//! and decides, per reply, whether a batch is delivered, retried, held, split or
//! partly set aside as dead letters.
//!
//! Reply classification ([`reply::classify`]):
//!
//! | reply | action |
//! |---|---|
//! | 2xx | delivered |
//! | 413 | split the batch in halves (a single line is set aside) |
//! | 401, 403, 404, other 4xx | held: the batch is kept, the sink is marked not ready, retried at `retry_max` |
//! | any code whose message says `partial write` | the rest was written: lines named by `unable to parse '…'` are set aside; other rejected lines (type conflicts, retention) are found by resending halves, which is idempotent because every line carries its timestamp |
//! | 400/422 without `partial write` | nothing written: named lines are set aside and the rest resent; otherwise the batch is bisected down to the bad lines |
//! | 408, 429, 5xx, transport errors, timeouts | retried without limit, exponential backoff with full jitter, `Retry-After` honoured up to 600 s |
//!
//! While a batch is being retried the sink stops reading its input channel, so
//! back-pressure reaches the stages before it.
//!
//! VictoriaMetrics (`flavor = "victoriametrics"`) answers with its own messages:
//! 400 `unsupported path requested` (a wrong URL: held, like InfluxDB's 404), 400
//! `too long line` (a line above its `-influx.maxLineSize`: bisected and set aside),
//! 401 for refused credentials; it skips unparsable lines itself and answers 204
//! (docs/stores.md). It has no field types, so the guard below is off for it.
//!
//! Type conflicts are resolved before sending by the guard in [`field_types`]
//! (`type_conflict`: convert when lossless, else a `<field>_str` string field, or
//! set the point aside). When the server still reports one (history written by
//! someone else since start-up), the guard learns the stored type from the
//! message and the refused lines are checked again and resent. A conflict the
//! guard cannot learn from is handled like any rejected line: InfluxDB names the
//! measurement and field but not the line, so the rejected lines are found by
//! resending halves of the batch until single lines remain. Resending is
//! harmless for lines with a timestamp (the encoder always writes one); a line
//! without one (possible in a replayed file) would be stored again at a new time.
//!
//! Retry delays (`retry_min` growing to `retry_max`) come from the program's one
//! [`crate::backoff::Backoff`].
//!
//! The parts, one file each:
//!
//! | file | holds |
//! |---|---|
//! | `writer.rs` | [`InfluxWriter`]: built from the configuration; the sink task that batches and flushes |
//! | `lanes.rs` | concurrent lanes split by series key, the lowest acknowledgement of all lanes, routing by measurement |
//! | `delivery.rs` | `Delivery`: retry, hold, split, bisect and set aside, per the table above |
//! | `reply.rs` | the classifier and what is read from a reply's message |
//! | `client.rs` | HTTP: authentication, TLS, gzip, URLs, bounded bodies, the write request, `check` |
//! | `field_types.rs` | the type-conflict guard |
//! | `victoria.rs` | VictoriaMetrics (`flavor = "victoriametrics"`): a home's last stored point |
//! | `last_point.rs` | the store's last point of one home (InfluxQL), where a sharded fleet's new owner of a home resumes |

mod client;
mod delivery;
mod field_types;
mod lanes;
pub mod last_point;
mod reply;
pub mod victoria;
mod writer;

use std::time::Duration;

pub(crate) use client::Auth;
pub(crate) use delivery::Delivery;
pub use writer::InfluxWriter;

/// Largest uncompressed body, well below InfluxDB's default 25 MB `max-body-size`.
pub const MAX_BATCH_BYTES: usize = 5 << 20;
/// Time allowed, once shutdown starts, to drain the input and deliver what is held.
pub const SHUTDOWN_FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Why a write (or a check) did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The connection failed (refused, reset, TLS, DNS).
    #[error("cannot reach InfluxDB at {url}: {source}")]
    Transport {
        /// The URL without its query string.
        url: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// No reply within the configured timeout.
    #[error("InfluxDB did not answer within {0:?}")]
    Timeout(Duration),
    /// InfluxDB answered with a non-success status.
    #[error("InfluxDB answered {code}: {body}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// The reply body (at most 64 KiB read; a longer one ends with `…(truncated)`).
        body: String,
    },
    /// The configuration cannot be used (URL, TLS files, credentials).
    #[error("invalid InfluxDB configuration: {0}")]
    Config(String),
    /// The server answered, but not as InfluxDB does (for `check`).
    #[error("unexpected reply from InfluxDB: {0}")]
    Protocol(String),
    /// The server is fine but the database or bucket does not exist (for `check`).
    #[error("{0}")]
    Missing(String),
    /// Compressing the body failed.
    #[error("cannot gzip the request body: {0}")]
    Compress(#[source] std::io::Error),
}

impl WriteError {
    /// Credentials were refused (401 or 403): retrying will not help until the config changes.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            WriteError::Status {
                code: 401 | 403,
                ..
            }
        )
    }

    /// A short, bounded label for the `error_type` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteError::Transport { .. } => "transport",
            WriteError::Timeout(_) => "timeout",
            WriteError::Status { code, .. } => reply::status_kind(*code),
            WriteError::Config(_) => "config",
            WriteError::Protocol(_) => "protocol",
            WriteError::Missing(_) => "not_found",
            WriteError::Compress(_) => "compress",
        }
    }
}

/// Fuzzing entry point (feature `fuzzing`, used by `fuzz/`): runs an InfluxDB reply
/// through every reader of `reply.rs` and the type guard's conflict and
/// `SHOW FIELD KEYS` readers, as the writer does, with `lines` as the batch sent.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_reply(code: u16, body: &str, lines: &[&str]) {
    let _ = reply::status_kind(code);
    let message = reply::server_message(body);
    let _ = reply::classify(code, &message);
    for line in lines {
        let _ = reply::unparsable_reason(&message, line);
    }
    let _ = reply::reject_kind(&message);
    let mut types = field_types::FieldTypes::new(crate::config::TypeConflict::default());
    types.learn_from_conflict(&message);
    if let Ok(reply) = serde_json::from_str::<serde_json::Value>(body) {
        types.learn_show_field_keys(&reply);
    }
}
