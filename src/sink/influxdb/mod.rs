//! The InfluxDB writer: batches line protocol, sends it over HTTP (v1 or v2 write API)
//! and decides, per reply, whether a batch is delivered, retried, held, split or
//! partly set aside as dead letters.
//!
//! Reply classification ([`classify`]):
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

mod field_types;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use field_types::FieldTypes;
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::Rng;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{InfluxApi, InfluxConfig, TlsConfig};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::monitor::Stats;
use crate::monitor::metrics::{
    SINK_BATCH_DURATION, SINK_BATCH_POINTS, SINK_ERRORS, SINK_RETRIES, SINK_SENT_BYTES,
    SINK_SENT_POINTS,
};
use crate::sink::{Chunk, SinkContext};

/// Largest uncompressed body, well below InfluxDB's default 25 MB `max-body-size`.
pub const MAX_BATCH_BYTES: usize = 5 << 20;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Time allowed, once shutdown starts, to drain the input and deliver what is held.
pub const SHUTDOWN_FLUSH_DEADLINE: Duration = Duration::from_secs(10);
/// Most write requests in flight per target.
const MAX_LANES: usize = 64;
/// Chunks queued per lane.
const LANE_CHANNEL: usize = 4;
/// Largest error body kept from a reply.
const MAX_ERROR_BODY: usize = 1 << 20;

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
        /// The reply body (truncated to 1 MiB).
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
            WriteError::Status { code, .. } => status_kind(*code),
            WriteError::Config(_) => "config",
            WriteError::Protocol(_) => "protocol",
            WriteError::Missing(_) => "not_found",
            WriteError::Compress(_) => "compress",
        }
    }
}

fn status_kind(code: u16) -> &'static str {
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

/// How requests to one InfluxDB authenticate; shared by the writer and the InfluxQL tools.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Basic { user: String, password: String },
    Token(String),
}

impl Auth {
    /// v1: basic auth when both user and password are set; v2: the token when it is not empty.
    pub(crate) fn from_config(cfg: &InfluxConfig) -> Auth {
        match cfg.api {
            InfluxApi::V1 => match (&cfg.username, &cfg.password) {
                (Some(user), Some(password)) => Auth::Basic {
                    user: user.clone(),
                    password: password.clone(),
                },
                _ => Auth::None,
            },
            InfluxApi::V2 => match &cfg.token {
                Some(t) if !t.is_empty() => Auth::Token(t.clone()),
                _ => Auth::None,
            },
        }
    }

    /// Adds the credentials to a request.
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Token(t) => req.header(reqwest::header::AUTHORIZATION, format!("Token {t}")),
        }
    }
}

/// Sends line protocol to one InfluxDB; cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct InfluxWriter {
    client: reqwest::Client,
    base: String,
    write_url: String,
    auth: Auth,
    api: InfluxApi,
    database: Option<String>,
    org: Option<String>,
    bucket: Option<String>,
    gzip: bool,
    timeout: Duration,
    batch_size: usize,
    flush_interval: Duration,
    retry_min: Duration,
    retry_max: Duration,
    /// The type-conflict guard's map, shared by clones (a std mutex: never held across an await).
    types: Arc<Mutex<FieldTypes>>,
    /// The target's name in metrics, logs, health and dead letters (`influxdb`).
    name: &'static str,
    /// The measurements this target receives (`measurements`); `None`: all.
    routes: Option<Arc<globset::GlobSet>>,
    /// Lanes, each with one request in flight (`max_concurrent_requests`).
    lanes: usize,
    /// Which of this target's failures make the process not ready.
    readiness: crate::config::TargetReadiness,
}

impl std::fmt::Debug for InfluxWriter {
    // By hand, so credentials never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxWriter")
            .field("write_url", &self.write_url)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

/// A failed attempt with what the retry policy needs to know.
struct Failure {
    error: WriteError,
    retry_after: Option<Duration>,
}

impl InfluxWriter {
    /// Builds the HTTP client (rustls on ring, cfg.tls.ca_file, insecure only when configured) and the write URL.
    pub fn new(cfg: &InfluxConfig) -> Result<InfluxWriter, WriteError> {
        let parsed = url::Url::parse(&cfg.url)
            .map_err(|e| WriteError::Config(format!("influxdb.url {:?}: {e}", cfg.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WriteError::Config(
                "influxdb.url: scheme must be http or https".into(),
            ));
        }
        let base = cfg.url.trim_end_matches('/').to_string();
        let (path, query): (&str, Vec<(&str, &str)>) = match cfg.api {
            InfluxApi::V1 => {
                let db = cfg
                    .database
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| WriteError::Config("influxdb.database is required".into()))?;
                let mut q = vec![("db", db)];
                if let Some(rp) = cfg.retention_policy.as_deref().filter(|r| !r.is_empty()) {
                    q.push(("rp", rp));
                }
                q.push(("precision", "ns"));
                ("/write", q)
            }
            InfluxApi::V2 => {
                let org = cfg.org.as_deref().unwrap_or_default();
                let bucket = cfg.bucket.as_deref().unwrap_or_default();
                if org.is_empty() || bucket.is_empty() {
                    return Err(WriteError::Config(
                        "influxdb.org and influxdb.bucket are required with api = \"v2\"".into(),
                    ));
                }
                (
                    "/api/v2/write",
                    vec![("org", org), ("bucket", bucket), ("precision", "ns")],
                )
            }
        };
        let mut write_url = url::Url::parse(&format!("{base}{path}"))
            .map_err(|e| WriteError::Config(format!("influxdb.url: {e}")))?;
        write_url.query_pairs_mut().extend_pairs(query);
        let auth = Auth::from_config(cfg);
        if cfg.api == InfluxApi::V2 && matches!(auth, Auth::None) {
            return Err(WriteError::Config(
                "influxdb.token is required with api = \"v2\"".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(&cfg.tls)?)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| WriteError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(InfluxWriter {
            client,
            base,
            write_url: write_url.to_string(),
            auth,
            api: cfg.api,
            database: cfg.database.clone(),
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
            gzip: cfg.gzip.for_url(&cfg.url),
            timeout: cfg.timeout,
            batch_size: cfg.batch_size.max(1),
            flush_interval: cfg.flush_interval,
            retry_min: cfg.retry_min,
            retry_max: cfg.retry_max.max(cfg.retry_min),
            types: Arc::new(Mutex::new(FieldTypes::new(cfg.type_conflict))),
            name: target_name(cfg.target_name()),
            routes: routes(&cfg.measurements)?,
            lanes: cfg.max_concurrent_requests.clamp(1, MAX_LANES),
            readiness: cfg.readiness,
        })
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.auth.apply(req)
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> WriteError {
        if e.is_timeout() {
            WriteError::Timeout(self.timeout)
        } else {
            // reqwest's own message would repeat the URL, credentials included.
            let url = crate::config::redact_url(url);
            WriteError::Transport {
                url,
                source: e.without_url(),
            }
        }
    }

    /// For `ha-ingestor check`: reachable (`/ping`), credentials accepted and database/bucket present; returns the server version.
    pub async fn check(&self) -> Result<String, WriteError> {
        let ping = format!("{}/ping", self.base);
        let reply = self
            .client
            .get(&ping)
            .send()
            .await
            .map_err(|e| self.transport(&ping, e))?;
        let code = reply.status().as_u16();
        if !(200..300).contains(&code) {
            return Err(WriteError::Status {
                code,
                body: read_body(reply).await,
            });
        }
        let version = reply
            .headers()
            .get("X-Influxdb-Version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_string();
        match self.api {
            InfluxApi::V1 => {
                // An empty write checks exactly what writing needs: credentials, the
                // write privilege and the database (1.x answers 204, 401/403 or 404).
                let db = self.database.as_deref().unwrap_or_default();
                let reply = self
                    .authorize(self.client.post(&self.write_url))
                    .body(Vec::new())
                    .send()
                    .await
                    .map_err(|e| self.transport(&self.write_url, e))?;
                let code = reply.status().as_u16();
                match code {
                    200..=299 => {}
                    404 => {
                        return Err(WriteError::Missing(format!(
                            "database {db:?} not found (create it with: CREATE DATABASE \"{db}\")"
                        )));
                    }
                    _ => {
                        return Err(WriteError::Status {
                            code,
                            body: read_body(reply).await,
                        });
                    }
                }
            }
            InfluxApi::V2 => {
                let org = self.org.as_deref().unwrap_or_default();
                let bucket = self.bucket.as_deref().unwrap_or_default();
                let url = with_query(
                    &format!("{}/api/v2/buckets", self.base),
                    &[("org", org), ("name", bucket)],
                )?;
                let reply = self
                    .authorize(self.client.get(&url))
                    .send()
                    .await
                    .map_err(|e| self.transport(&url, e))?;
                let json = json_reply(reply).await?;
                let present = json
                    .get("buckets")
                    .and_then(|b| b.as_array())
                    .is_some_and(|b| !b.is_empty());
                if !present {
                    return Err(WriteError::Missing(format!(
                        "bucket {bucket:?} not found in organisation {org:?}"
                    )));
                }
            }
        }
        Ok(version)
    }

    fn types(&self) -> std::sync::MutexGuard<'_, FieldTypes> {
        self.types.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every measurement's field types (`SHOW FIELD KEYS`, v1) into the type-conflict guard; returns how many fields.
    ///
    /// v2 has no InfluxQL endpoint of its own; there the guard learns from what it
    /// writes and from the server's type-conflict replies.
    pub async fn learn_field_types(&self) -> Result<usize, WriteError> {
        self.types().last_try = Some(Instant::now());
        if self.api != InfluxApi::V1 {
            self.types().learned = true;
            return Ok(0);
        }
        let db = self.database.as_deref().unwrap_or_default();
        let url = with_query(
            &format!("{}/query", self.base),
            &[("db", db), ("q", "SHOW FIELD KEYS")],
        )?;
        let reply = self
            .authorize(self.client.get(&url))
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let json = json_reply(reply).await?;
        if let Some(error) = json
            .pointer("/results/0/error")
            .and_then(|e| e.as_str())
            .or_else(|| json.get("error").and_then(|e| e.as_str()))
        {
            return Err(WriteError::Protocol(format!("SHOW FIELD KEYS: {error}")));
        }
        let mut types = self.types();
        let n = types.learn_show_field_keys(&json);
        types.learned = true;
        Ok(n)
    }

    /// Learns the field types once, when not done yet; after a failure, again at most every `retry_max`.
    async fn ensure_field_types(&self) {
        let due = {
            let types = self.types();
            !types.learned && types.last_try.is_none_or(|t| t.elapsed() >= self.retry_max)
        };
        if !due {
            return;
        }
        match self.learn_field_types().await {
            Ok(fields) => tracing::info!(
                message = "Learned the field types stored in InfluxDB.",
                fields
            ),
            Err(error) => tracing::warn!(
                message = "Cannot read the field types stored in InfluxDB; type conflicts are learned from the replies until this works.",
                %error,
            ),
        }
    }

    /// One write attempt of whole lines (gzip when configured); classifies the reply.
    pub async fn write(&self, body: &str) -> Result<(), WriteError> {
        self.attempt(body).await.map_err(|f| f.error)
    }

    async fn attempt(&self, body: &str) -> Result<(), Failure> {
        let payload = if self.gzip {
            gzip(body).map_err(|e| Failure {
                error: WriteError::Compress(e),
                retry_after: None,
            })?
        } else {
            body.as_bytes().to_vec()
        };
        let mut req = self
            .client
            .post(&self.write_url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(reqwest::header::ACCEPT, "application/json");
        if self.gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let reply = self
            .authorize(req)
            .body(payload)
            .send()
            .await
            .map_err(|e| Failure {
                error: self.transport(&self.write_url, e),
                retry_after: None,
            })?;
        let code = reply.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(());
        }
        let retry_after = reply
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        Err(Failure {
            error: WriteError::Status {
                code,
                body: read_body(reply).await,
            },
            retry_after,
        })
    }

    /// The sink task: batches chunks by line count (cfg.batch_size) and time (cfg.flush_interval), writes with retries, flushes what it holds when ctx.shutdown is cancelled (drain the channel first), then returns.
    ///
    /// After cancellation it keeps receiving until every sender is gone or
    /// [`SHUTDOWN_FLUSH_DEADLINE`] passes; whatever cannot be delivered by then is
    /// logged and counted in `stats.dropped`.
    ///
    /// With `max_concurrent_requests` above 1 the lines are split into that many
    /// lanes by a hash of their series key (measurement and tags), each lane
    /// batching and writing on its own, so up to that many requests are in flight
    /// while every series' points still arrive in order. A buffer record is
    /// reported delivered once every lane has delivered its part of it.
    pub async fn run(self, rx: Receiver<Chunk>, ctx: SinkContext) {
        ctx.stats.register_sink(
            self.name,
            Some(crate::config::redact_url(&self.base)),
            self.readiness,
        );
        if self.lanes <= 1 {
            return self.run_lane(rx, ctx).await;
        }
        self.run_lanes(rx, ctx).await;
    }

    async fn run_lanes(self, mut rx: Receiver<Chunk>, ctx: SinkContext) {
        let n = self.lanes;
        let mut txs = Vec::with_capacity(n);
        let mut lanes = Vec::with_capacity(n);
        let mut reports = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, lane_rx) = tokio::sync::mpsc::channel::<Chunk>(LANE_CHANNEL);
            let (acks, delivered) = crate::sink::Acks::channel();
            let lane_ctx = SinkContext {
                acks: ctx.acks.as_ref().map(|_| acks),
                ..ctx.clone()
            };
            txs.push(tx);
            reports.push(delivered);
            lanes.push(tokio::spawn(self.clone().run_lane(lane_rx, lane_ctx)));
        }
        // Every lane's report → the lowest, to the buffer.
        let forwarder = ctx
            .acks
            .clone()
            .map(|acks| tokio::spawn(lowest_of(reports, acks)));
        let mut deadline = None;
        loop {
            let chunk = match deadline {
                None => tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => {
                        deadline = Some(Instant::now() + SHUTDOWN_FLUSH_DEADLINE);
                        continue;
                    }
                    chunk = rx.recv() => chunk,
                },
                Some(at) => tokio::time::timeout_at(at, rx.recv()).await.ok().flatten(),
            };
            let Some(chunk) = chunk else { break };
            for (tx, part) in txs.iter().zip(split_by_series(&chunk, n)) {
                // A lane ends only after its input closed, which happens below.
                let _ = tx.send(part).await;
            }
        }
        drop(txs);
        for lane in lanes {
            if let Err(error) = lane.await {
                tracing::error!(message = "An InfluxDB write lane failed.", %error);
            }
        }
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
        super::account_unwritten(&mut rx, &ctx.stats, self.name);
    }

    /// One lane: batches, writes with retries, flushes at shutdown (the whole sink when there is one lane).
    async fn run_lane(self, mut rx: Receiver<Chunk>, ctx: SinkContext) {
        let mut delivery = Delivery {
            writer: &self,
            dead_letters: &ctx.dead_letters,
            stats: Some(&ctx.stats),
            acks: ctx.acks.as_ref(),
            shutdown: Some(&ctx.shutdown),
            deadline: None,
            hold_is_fatal: false,
            holding: false,
            hold_logged: false,
            again: Vec::new(),
            withheld: false,
            originals: Default::default(),
        };
        let mut batch = Batch::default();
        // Normal operation, until shutdown (also when noticed during a retry) or every sender is gone.
        while delivery.deadline.is_none() {
            let due = batch.since.map(|t| t + self.flush_interval);
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled(), if delivery.deadline.is_none() => {
                    delivery.deadline = Some(Instant::now() + SHUTDOWN_FLUSH_DEADLINE);
                    break;
                }
                chunk = rx.recv() => match chunk {
                    Some(chunk) => self.add(&mut batch, &chunk, &mut delivery).await,
                    None => break,
                },
                _ = sleep_until_opt(due) => delivery.flush(&mut batch).await,
            }
        }
        // Shutdown (or every sender gone): drain, then flush within the deadline.
        let deadline = *delivery
            .deadline
            .get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH_DEADLINE);
        while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            self.add(&mut batch, &chunk, &mut delivery).await;
        }
        delivery.flush(&mut batch).await;
        super::account_unwritten(&mut rx, &ctx.stats, self.name);
    }

    /// Appends a chunk, cutting batches at `batch_size` lines or [`MAX_BATCH_BYTES`].
    async fn add(&self, batch: &mut Batch, chunk: &Chunk, delivery: &mut Delivery<'_>) {
        let routed_chunk;
        let chunk = match &self.routes {
            Some(routes) => {
                let (lines, points) = routed(&chunk.lines, routes);
                routed_chunk = Chunk {
                    lines,
                    points,
                    seq: chunk.seq,
                    marks: Default::default(),
                };
                &routed_chunk
            }
            None => chunk,
        };
        if chunk.lines.is_empty() {
            batch.seq = chunk.seq.or(batch.seq);
            if batch.points == 0 {
                // Nothing of it (or before it) waits here: delivered as far as this target goes.
                delivery.ack(batch);
            }
            return;
        }
        if batch.points + chunk.points <= self.batch_size
            && batch.lines.len() + chunk.lines.len() <= MAX_BATCH_BYTES
        {
            batch.push(&chunk.lines, chunk.points);
        } else {
            for line in chunk.lines.split_inclusive('\n') {
                if batch.points >= self.batch_size
                    || (batch.points > 0 && batch.lines.len() + line.len() > MAX_BATCH_BYTES)
                {
                    delivery.flush(batch).await;
                }
                batch.push(line, 1);
            }
        }
        // The chunk's last line is in this batch: delivering it delivers the whole record.
        batch.seq = chunk.seq.or(batch.seq);
        if batch.points >= self.batch_size || batch.lines.len() >= MAX_BATCH_BYTES {
            delivery.flush(batch).await;
        }
    }
}

/// Splits a chunk's lines into `n` parts by a hash of each line's series key; every part keeps the chunk's seq (empty parts too, so each lane reports it).
fn split_by_series(chunk: &Chunk, n: usize) -> Vec<Chunk> {
    // Series spread about evenly over the lanes: room for a fair share and a quarter more,
    // instead of growing each part from empty (a copy at every doubling).
    let share = chunk.lines.len() / n.max(1);
    let mut parts: Vec<Chunk> = (0..n)
        .map(|_| Chunk {
            lines: String::with_capacity(share + share / 4),
            points: 0,
            seq: chunk.seq,
            marks: Default::default(),
        })
        .collect();
    for line in chunk.lines.split_inclusive('\n') {
        let part = &mut parts[(series_hash(line) % n as u64) as usize];
        part.lines.push_str(line);
        part.points += 1;
    }
    parts
}

/// FNV-1a of a line's series key (measurement and tags: everything before the first unescaped space).
fn series_hash(line: &str) -> u64 {
    let b = line.as_bytes();
    let end = (0..b.len())
        .find(|&i| b[i] == b' ' && (i == 0 || b[i - 1] != b'\\'))
        .unwrap_or(b.len());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in &b[..end] {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Forwards the lowest of the lanes' delivery reports to `acks` until every lane is gone.
async fn lowest_of(mut reports: Vec<tokio::sync::watch::Receiver<u64>>, acks: crate::sink::Acks) {
    let mut open = vec![true; reports.len()];
    while open.iter().any(|o| *o) {
        let waits = reports
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| open[*i])
            .map(|(i, rx)| Box::pin(async move { (i, rx.changed().await.is_ok()) }));
        let ((i, still_open), _, rest) = futures_util::future::select_all(waits).await;
        drop(rest);
        open[i] = still_open;
        if let Some(low) = reports.iter_mut().map(|rx| *rx.borrow_and_update()).min() {
            acks.delivered(low);
        }
    }
}

/// A `'static` name for metric labels: interned, so each distinct target name is allocated once per process.
fn target_name(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

fn routes(globs: &[String]) -> Result<Option<Arc<globset::GlobSet>>, WriteError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut set = globset::GlobSetBuilder::new();
    for g in globs {
        set.add(
            globset::Glob::new(g)
                .map_err(|e| WriteError::Config(format!("influxdb.measurements {g:?}: {e}")))?,
        );
    }
    let set = set
        .build()
        .map_err(|e| WriteError::Config(format!("influxdb.measurements: {e}")))?;
    Ok(Some(Arc::new(set)))
}

/// The lines of `lines` whose measurement `routes` matches (a line that does not scan goes along, for the server to judge).
fn routed(lines: &str, routes: &globset::GlobSet) -> (String, usize) {
    let mut out = String::new();
    let mut n = 0;
    for line in lines.split_inclusive('\n') {
        let keep = match field_types::measurement_of(line) {
            Some(m) => routes.is_match(&*m),
            None => true,
        };
        if keep {
            out.push_str(line);
            n += 1;
        }
    }
    (out, n)
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> Result<String, WriteError> {
    let mut url =
        url::Url::parse(base).map_err(|e| WriteError::Config(format!("influxdb.url: {e}")))?;
    url.query_pairs_mut().extend_pairs(pairs);
    Ok(url.to_string())
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[derive(Default)]
struct Batch {
    lines: String,
    points: usize,
    since: Option<Instant>,
    /// The last buffer record whose lines all are in this batch (or in earlier ones).
    seq: Option<u64>,
}

impl Batch {
    fn push(&mut self, lines: &str, points: usize) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        self.lines.push_str(lines);
        if !lines.ends_with('\n') {
            self.lines.push('\n');
        }
        self.points += points;
    }
}

/// What became of the lines handed to [`Delivery::deliver`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Lines InfluxDB accepted.
    pub written: u64,
    /// Lines set aside as dead letters.
    pub dead_lettered: u64,
    /// Lines given up on (shutdown deadline passed).
    pub undelivered: u64,
}

/// One delivery engine shared by the sink task and replay.
pub(crate) struct Delivery<'a> {
    pub writer: &'a InfluxWriter,
    pub dead_letters: &'a DeadLetters,
    pub stats: Option<&'a Stats>,
    /// Told about buffer records once their batch is delivered.
    pub acks: Option<&'a crate::sink::Acks>,
    pub shutdown: Option<&'a CancellationToken>,
    /// Once set, waits end at this instant and what is left is given up.
    pub deadline: Option<Instant>,
    /// Replay: stop on 401/403/404 instead of waiting for an operator.
    pub hold_is_fatal: bool,
    /// In a streak of failed attempts (for the recovery message).
    holding: bool,
    /// The hold error of this streak was logged.
    hold_logged: bool,
    /// Lines refused for a type the guard has just learned, to be checked and sent again.
    again: Vec<String>,
    /// Some records were left undelivered in the buffer: acknowledge nothing more this run.
    withheld: bool,
    /// Lines the guard changed → as they came in; dead letters keep the original.
    originals: std::collections::HashMap<String, String>,
}

impl<'a> Delivery<'a> {
    /// An engine for replay: no stats, no shutdown, errors that need an operator end it.
    pub(crate) fn for_replay(writer: &'a InfluxWriter, dead_letters: &'a DeadLetters) -> Self {
        Delivery {
            writer,
            dead_letters,
            stats: None,
            acks: None,
            shutdown: None,
            deadline: None,
            hold_is_fatal: true,
            holding: false,
            hold_logged: false,
            again: Vec::new(),
            withheld: false,
            originals: Default::default(),
        }
    }

    /// Reports an empty batch's record as delivered (its lines all went out before, or none were for this target).
    fn ack(&mut self, batch: &mut Batch) {
        let seq = batch.seq.take();
        if self.withheld {
            return;
        }
        if let (Some(acks), Some(seq)) = (self.acks, seq) {
            acks.delivered(seq);
        }
    }

    async fn flush(&mut self, batch: &mut Batch) {
        if batch.points == 0 {
            batch.lines.clear();
            batch.since = None;
            self.ack(batch);
            return;
        }
        match self.deliver(&batch.lines).await {
            Ok(outcome) if outcome.undelivered > 0 && self.acks.is_some() => {
                // Not acknowledged: the records stay in the durable buffer for the next start.
                // Acknowledgements cover every record up to a sequence number, so no later
                // delivery of this run may acknowledge past these records either.
                self.withheld = true;
                tracing::warn!(
                    message = "InfluxDB did not accept these points before the shutdown deadline; they stay in the buffer and are delivered at the next start.",
                    points = outcome.undelivered,
                );
            }
            Ok(outcome) => {
                if let (Some(acks), Some(seq), false) = (self.acks, batch.seq, self.withheld) {
                    acks.delivered(seq);
                }
                if outcome.undelivered > 0 {
                    tracing::error!(
                        message = "InfluxDB did not accept these points before the shutdown deadline; they were not written.",
                        points = outcome.undelivered,
                    );
                    if let Some(stats) = self.stats {
                        Stats::add(&stats.dropped, outcome.undelivered);
                    }
                }
            }
            // Not reachable in the sink task (hold is never fatal there), kept total.
            Err(error) => {
                tracing::error!(message = "Batch not written.", %error, points = batch.points);
                if let Some(stats) = self.stats {
                    Stats::add(&stats.dropped, batch.points as u64);
                }
            }
        }
        batch.lines.clear();
        batch.points = 0;
        batch.since = None;
        batch.seq = None;
    }

    /// Delivers whole lines, retrying, splitting and setting aside as the replies require.
    ///
    /// The type-conflict guard checks the lines first; when a reply names a type
    /// the guard did not know, the refused lines are checked again and resent.
    pub(crate) async fn deliver(&mut self, body: &str) -> Result<Outcome, WriteError> {
        self.writer.ensure_field_types().await;
        let mut total = Outcome::default();
        let mut current = std::borrow::Cow::Borrowed(body);
        loop {
            let mut guarded = self.writer.types().guard(&current, self.writer.name);
            self.originals = std::mem::take(&mut guarded.changed);
            for (line, reason) in &guarded.set_aside {
                self.dead_letter(line, "type_conflict", reason);
                total.dead_lettered += 1;
            }
            let send = guarded.body.as_deref().unwrap_or(&current);
            let outcome = self.deliver_lines(send).await?;
            total.written += outcome.written;
            total.dead_lettered += outcome.dead_lettered;
            total.undelivered += outcome.undelivered;
            if self.again.is_empty() {
                return Ok(total);
            }
            let mut again = std::mem::take(&mut self.again);
            if outcome.undelivered > 0 {
                total.undelivered += again.len() as u64;
                return Ok(total);
            }
            // Check the lines again as they came in, not as the guard changed them.
            for line in &mut again {
                if let Some(original) = self.originals.get(line.as_str()) {
                    line.clone_from(original);
                }
            }
            current = std::borrow::Cow::Owned(join_owned(&again));
        }
    }

    /// [`Delivery::deliver`] after the guard: lines refused for a newly learned type go to `self.again`.
    async fn deliver_lines(&mut self, body: &str) -> Result<Outcome, WriteError> {
        let mut outcome = Outcome::default();
        let mut work: Vec<Vec<&str>> = vec![lines_of(body)];
        let mut attempt: u32 = 0;
        while let Some(lines) = work.pop() {
            if lines.is_empty() {
                continue;
            }
            let joined;
            let text: &str = if work.is_empty() && outcome == Outcome::default() && attempt == 0 {
                body
            } else {
                joined = join(&lines);
                &joined
            };
            let started = std::time::Instant::now();
            let result = self.writer.attempt(text).await;
            metrics::histogram!(SINK_BATCH_DURATION, "sink" => self.writer.name)
                .record(started.elapsed().as_secs_f64());
            let failure = match result {
                Ok(()) => {
                    self.delivered(lines.len() as u64, text.len() as u64);
                    crate::monitor::latency::observe_accepted(
                        self.writer.name,
                        lines.iter().copied(),
                    );
                    outcome.written += lines.len() as u64;
                    attempt = 0;
                    continue;
                }
                Err(f) => f,
            };
            metrics::counter!(SINK_ERRORS, "sink" => self.writer.name, "error_type" => failure.error.kind())
                .increment(1);
            // The server's message, read once: classified here, quoted in dead letters below.
            let (verdict, message) = match &failure.error {
                WriteError::Status { code, body } => {
                    let message = server_message(body);
                    (classify(*code, &message), message)
                }
                WriteError::Transport { .. } | WriteError::Timeout(_) => {
                    (Verdict::Retry, String::new())
                }
                _ => (Verdict::Hold, String::new()),
            };
            match verdict {
                Verdict::Delivered => unreachable_delivered(&mut outcome, &lines),
                Verdict::Split => {
                    attempt = 0;
                    let reason = failure.error.to_string();
                    self.set_aside_or_halve(
                        &lines,
                        "line_too_large",
                        &reason,
                        &mut work,
                        &mut outcome,
                    );
                }
                Verdict::Rejected { partial, dropped } => {
                    attempt = 0;
                    self.rejected(&lines, &message, partial, dropped, &mut work, &mut outcome);
                }
                Verdict::Retry => {
                    attempt = attempt.saturating_add(1);
                    metrics::counter!(SINK_RETRIES, "sink" => self.writer.name).increment(1);
                    self.not_ready(&failure.error, false);
                    let delay = retry_delay(
                        attempt,
                        failure.retry_after,
                        self.writer.retry_min,
                        self.writer.retry_max,
                        rand::rng().random::<f64>(),
                    );
                    // WARN on the 1st, 2nd, 4th, 8th… attempt of a streak, so an outage does not flood the log.
                    if attempt.is_power_of_two() {
                        tracing::warn!(
                            message = "Write to InfluxDB failed; retrying the same batch.",
                            error = %failure.error,
                            attempt,
                            delay = ?delay,
                            points = lines.len(),
                        );
                    } else {
                        tracing::debug!(message = "Write to InfluxDB failed; retrying the same batch.", error = %failure.error, attempt);
                    }
                    if !self.wait(delay).await {
                        outcome.undelivered += remaining(&lines, &work);
                        return Ok(outcome);
                    }
                    work.push(lines);
                }
                Verdict::Hold => {
                    if self.hold_is_fatal {
                        return Err(failure.error);
                    }
                    metrics::counter!(SINK_RETRIES, "sink" => self.writer.name).increment(1);
                    self.not_ready(&failure.error, true);
                    if !self.wait(self.writer.retry_max).await {
                        outcome.undelivered += remaining(&lines, &work);
                        return Ok(outcome);
                    }
                    work.push(lines);
                }
            }
        }
        Ok(outcome)
    }

    /// Handles a 400/422 (or any "partial write") reply for `lines`.
    fn rejected<'l>(
        &mut self,
        lines: &[&'l str],
        message: &str,
        partial: bool,
        dropped: Option<usize>,
        work: &mut Vec<Vec<&'l str>>,
        outcome: &mut Outcome,
    ) {
        let mut rest: Vec<&'l str> = Vec::with_capacity(lines.len());
        for line in lines {
            match unparsable_reason(message, line) {
                Some(reason) => {
                    self.dead_letter(line, "unparsable_line", reason);
                    outcome.dead_lettered += 1;
                }
                None => rest.push(line),
            }
        }
        if rest.is_empty() {
            return;
        }
        let kind = reject_kind(message);
        if kind == "type_conflict" && self.writer.types().learn_from_conflict(message) {
            // The guard now knows the stored type: it resolves these lines and they are resent
            // (the ones the server wrote are written again, harmlessly: same timestamps).
            self.again.extend(rest.iter().map(|l| l.to_string()));
            return;
        }
        // Lines the server named that we could not match stay unidentified: never count them as written.
        let all_named = message.matches("unable to parse '").count() == lines.len() - rest.len();
        if partial {
            match dropped {
                Some(0) if all_named => {
                    // Only the named lines were refused; the server wrote the others.
                    self.delivered(rest.len() as u64, 0);
                    outcome.written += rest.len() as u64;
                    return;
                }
                Some(n) if n >= rest.len() && all_named => {
                    for line in &rest {
                        self.dead_letter(line, kind, message);
                    }
                    outcome.dead_lettered += rest.len() as u64;
                    return;
                }
                // Unknown which lines were dropped: resend halves (idempotent) to find them.
                _ => {}
            }
        } else if rest.len() < lines.len() {
            // Nothing was written: resend what the server did not name.
            work.push(rest);
            return;
        }
        self.set_aside_or_halve(&rest, kind, message, work, outcome);
    }

    /// A single line is set aside with `kind` and `reason`; more are queued again as two halves.
    fn set_aside_or_halve<'l>(
        &self,
        lines: &[&'l str],
        kind: &'static str,
        reason: &str,
        work: &mut Vec<Vec<&'l str>>,
        outcome: &mut Outcome,
    ) {
        if let [line] = lines {
            self.dead_letter(line, kind, reason);
            outcome.dead_lettered += 1;
        } else {
            let (a, b) = lines.split_at(lines.len() / 2);
            work.push(b.to_vec());
            work.push(a.to_vec());
        }
    }

    fn delivered(&mut self, points: u64, bytes: u64) {
        metrics::counter!(SINK_SENT_POINTS, "sink" => self.writer.name).increment(points);
        metrics::counter!(SINK_SENT_BYTES, "sink" => self.writer.name).increment(bytes);
        metrics::histogram!(SINK_BATCH_POINTS, "sink" => self.writer.name).record(points as f64);
        if let Some(stats) = self.stats {
            Stats::add(&stats.written, points);
            stats.sink_result(self.writer.name, Ok(()));
        }
        if self.holding {
            tracing::info!(message = "InfluxDB accepts writes again.");
            self.holding = false;
            self.hold_logged = false;
        }
    }

    fn dead_letter(&self, line: &str, kind: &'static str, reason: &str) {
        let line = self.originals.get(line).map_or(line, String::as_str);
        self.dead_letters.record(DeadLetter {
            stage: "sink",
            kind,
            reason,
            source: self.writer.name,
            input: line.as_bytes(),
        });
        if let Some(stats) = self.stats {
            Stats::add(&stats.dead_lettered, 1);
        }
    }

    fn not_ready(&mut self, error: &WriteError, hold: bool) {
        if let Some(stats) = self.stats {
            stats.sink_failed(self.writer.name, error.to_string(), hold);
        }
        if !hold {
            // Retry streaks are logged by the caller; this marks them for the recovery message.
            self.holding = true;
            return;
        }
        if !self.hold_logged {
            self.holding = true;
            self.hold_logged = true;
            tracing::error!(
                message = "InfluxDB refuses the writes until its configuration or ours is fixed; the batch is kept and retried.",
                %error,
                retry_every = ?self.writer.retry_max,
            );
        }
    }

    /// Sleeps `delay`; false when the shutdown deadline passed and the caller should give up.
    async fn wait(&mut self, delay: Duration) -> bool {
        if self.deadline.is_none()
            && let Some(token) = self.shutdown
        {
            tokio::select! {
                _ = tokio::time::sleep(delay) => return true,
                _ = token.cancelled() => {
                    self.deadline = Some(Instant::now() + SHUTDOWN_FLUSH_DEADLINE);
                    return true;
                }
            }
        }
        match self.deadline {
            None => {
                tokio::time::sleep(delay).await;
                true
            }
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                tokio::time::sleep_until((now + delay).min(deadline)).await;
                Instant::now() < deadline
            }
        }
    }
}

fn unreachable_delivered(outcome: &mut Outcome, lines: &[&str]) {
    // `classify` is only called for non-2xx replies; count as written for totality.
    outcome.written += lines.len() as u64;
}

fn remaining(lines: &[&str], work: &[Vec<&str>]) -> u64 {
    (lines.len() + work.iter().map(Vec::len).sum::<usize>()) as u64
}

fn lines_of(body: &str) -> Vec<&str> {
    body.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .collect()
}

fn join(lines: &[&str]) -> String {
    let mut s = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn join_owned(lines: &[String]) -> String {
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    join(&refs)
}

fn gzip(body: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
    enc.write_all(body.as_bytes())?;
    enc.finish()
}

async fn read_body(reply: reqwest::Response) -> String {
    match reply.text().await {
        Ok(mut s) => {
            if s.len() > MAX_ERROR_BODY {
                let mut end = MAX_ERROR_BODY;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
            s
        }
        Err(e) => format!("(body unreadable: {e})"),
    }
}

async fn json_reply(reply: reqwest::Response) -> Result<serde_json::Value, WriteError> {
    let code = reply.status().as_u16();
    let body = read_body(reply).await;
    if !(200..300).contains(&code) {
        return Err(WriteError::Status { code, body });
    }
    serde_json::from_str(&body)
        .map_err(|e| WriteError::Protocol(format!("reply is not JSON ({e}): {body:.200}")))
}

fn tls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, WriteError> {
    let mut config = crate::tls::client_config(tls, "influxdb")
        .map_err(|e| WriteError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What to do with a batch after a non-2xx reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
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
fn classify(code: u16, message: &str) -> Verdict {
    match code {
        200..=299 => Verdict::Delivered,
        413 => Verdict::Split,
        401 | 403 | 404 => Verdict::Hold,
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
fn server_message(body: &str) -> String {
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
fn unparsable_reason<'m>(message: &'m str, line: &str) -> Option<&'m str> {
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

fn reject_kind(message: &str) -> &'static str {
    if message.contains("field type conflict") {
        "type_conflict"
    } else if message.contains("beyond retention") {
        "out_of_retention"
    } else if message.contains("max-series") || message.contains("max series") {
        "series_limit"
    } else if message.contains("max-values-per-tag") {
        "tag_values_limit"
    } else {
        "rejected_line"
    }
}

/// Exponential backoff with full jitter between `min` and the exponential cap, at least `retry_after`.
fn retry_delay(
    attempt: u32,
    retry_after: Option<Duration>,
    min: Duration,
    max: Duration,
    jitter: f64,
) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let cap = min.saturating_mul(1u32 << exp).min(max).max(min);
    let span = cap.saturating_sub(min);
    let backoff = min + span.mul_f64(jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(after) => backoff.max(after.min(MAX_RETRY_AFTER)),
        None => backoff,
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
    fn retry_delay_grows_within_bounds_and_honours_retry_after() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        assert_eq!(retry_delay(1, None, min, max, 0.0), min);
        assert_eq!(retry_delay(1, None, min, max, 1.0), min);
        assert_eq!(retry_delay(3, None, min, max, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(40, None, min, max, 1.0), max);
        for attempt in 1..50 {
            let d = retry_delay(attempt, None, min, max, 0.5);
            assert!(d >= min && d <= max, "{attempt}: {d:?}");
        }
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(30)), min, max, 0.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(3600)), min, max, 0.0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn write_url_and_errors() {
        let mut cfg = InfluxConfig::v1("http://h:8086/", "home assistant");
        cfg.retention_policy = Some("autogen".into());
        let w = InfluxWriter::new(&cfg).unwrap();
        assert_eq!(
            w.write_url,
            "http://h:8086/write?db=home+assistant&rp=autogen&precision=ns"
        );
        cfg.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let err = InfluxWriter::new(&cfg).unwrap_err();
        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let status = WriteError::Status {
            code: 401,
            body: String::new(),
        };
        assert!(status.is_auth());
        assert_eq!(status.kind(), "unauthorized");
    }

    #[test]
    fn lines_split_by_series_keep_each_series_whole_and_every_part_the_seq() {
        let lines: String = (0..200)
            .map(|i| format!("m,entity_id=e{} value={i} {i}\n", i % 7))
            .chain(["m\\ x,entity_id=e1 value=1 1\n".to_string()])
            .collect();
        let chunk = Chunk {
            lines,
            points: 201,
            seq: Some(9),
            marks: Default::default(),
        };
        let parts = split_by_series(&chunk, 3);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.seq == Some(9)));
        assert_eq!(parts.iter().map(|p| p.points).sum::<usize>(), 201);
        for e in 0..7 {
            let key = format!("m,entity_id=e{e} ");
            let holding: Vec<usize> = (0..3).filter(|&i| parts[i].lines.contains(&key)).collect();
            assert_eq!(holding.len(), 1, "series {key} in parts {holding:?}");
            // In order within its part.
            let values: Vec<u64> = parts[holding[0]]
                .lines
                .lines()
                .filter(|l| l.starts_with(&key))
                .map(|l| l.split(' ').nth(2).unwrap().parse().unwrap())
                .collect();
            assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
        }
        // A space escaped in the measurement is part of the series key.
        assert_ne!(series_hash("m\\ x,entity_id=e1 v=1"), series_hash("m v=1"));
    }

    #[test]
    fn dropped_count_is_parsed() {
        assert_eq!(parse_dropped("partial write: x dropped=12"), Some(12));
        assert_eq!(parse_dropped("partial write"), None);
    }
}
