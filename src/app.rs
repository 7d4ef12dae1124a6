//! Wiring of the stages, start-up checks and the shutdown protocol.
//!
//! Topology: source task(s) → bounded `Event` channel → pipeline task →
//! bounded `Chunk` channel → durable buffer (appender thread → disk → feeder
//! task) → bounded `Chunk` channel → sink task (InfluxDB writer or file sink),
//! whose delivery reports go back to the buffer's acknowledger, which removes
//! delivered records. With `[buffer] enabled = false` the pipeline's channel
//! goes straight to the sink. The monitor listener observes through [`Stats`]
//! and the metrics registry.
//!
//! Shutdown runs in data-flow order so nothing in flight is lost: sources stop
//! first; the pipeline drains its channel and ends when the last sender is
//! gone; the appender writes what it still holds to disk; the feeder sends what
//! is on disk to the sink (for at most [`BUFFER_DRAIN_DEADLINE`]); only then is
//! the sink told to flush (within a deadline); the buffer is made durable; the
//! monitor goes last. What the sink could not deliver stays in the buffer for
//! the next start.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dead_letter::DeadLetters;
use crate::encode::Chunk;
use crate::event::SourceId;
use crate::feedback::acks::Acks;
use crate::feedback::handoff::Handoff;
use crate::monitor::{Stats, Totals};
use crate::pipeline::{Pipeline, PipelineError};
use crate::sink::SinkContext;
use crate::sink::buffer::{Buffer, BufferError, tasks};
use crate::sink::file::FileSink;
use crate::sink::influxdb::{InfluxWriter, WriteError};
use crate::source::SourceContext;
use crate::source::homeassistant::client;

/// Capacity of the source → pipeline channel (events).
pub const EVENT_CHANNEL: usize = 8192;
/// Capacity of the pipeline → sink channel (chunks of up to 1024 events).
pub const CHUNK_CHANNEL: usize = 64;
/// Longest wait for the sink's final flush at shutdown.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(20);

/// How long shutdown waits for the monitor listener to close its connections before dropping them.
pub const MONITOR_DEADLINE: Duration = Duration::from_secs(3);
/// At shutdown, how long the buffer keeps feeding the sink what is on disk; the rest waits for the next start.
pub const BUFFER_DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Nothing to read from.
    #[error(
        "no source configured: add a [homeassistant] section or an [[mqtt]] broker (see examples/minimal.toml, examples/mqtt.toml)"
    )]
    NoSource,
    /// An MQTT source could not be built (URL, TLS files, subscriptions).
    #[error(transparent)]
    Mqtt(#[from] crate::source::mqtt::MqttError),
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process owns the data directory.
    #[error("data directory {0} is in use by another ha-ingestor process (lock file .lock)")]
    Locked(PathBuf),
    /// Filter or schema did not compile.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The InfluxDB client could not be built.
    #[error("influxdb: {0}")]
    Influx(#[from] WriteError),
    /// The file sink could not be opened.
    #[error("file sink {path}: {source}")]
    FileSink {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The monitor listener could not bind.
    #[error(transparent)]
    Monitor(#[from] crate::monitor::http::ListenError),
    /// An alert notifier could not be built.
    #[error(transparent)]
    Alerts(#[from] crate::monitor::alerts::AlertsError),
    /// The durable buffer could not be opened.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A thread or blocking task of the buffer could not start.
    #[error("buffer: {0}")]
    BufferTask(String),
}

/// The durable buffer's part of a running topology.
struct Buffered {
    buffer: Buffer,
    appender: std::thread::JoinHandle<()>,
    feeder_token: CancellationToken,
    feeder: JoinHandle<()>,
    acknowledger: JoinHandle<()>,
    release_token: CancellationToken,
    releaser: JoinHandle<()>,
}

/// A running topology; stop it with [`Running::stop`].
pub struct Running {
    stats: Arc<Stats>,
    dead_letters: Arc<DeadLetters>,
    monitor_addr: Option<SocketAddr>,
    sources_token: CancellationToken,
    /// Cancelled once all that sources handed on is safe; their background tasks then finish.
    settled_token: CancellationToken,
    background: tokio_util::task::TaskTracker,
    sink_token: CancellationToken,
    monitor_token: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    pipeline: JoinHandle<()>,
    buffered: Option<Buffered>,
    sink: JoinHandle<()>,
    monitor: Option<JoinHandle<()>>,
    alerting: Option<crate::monitor::alerts::Alerting>,
    _lock: File,
    /// The config the process started with (or last reloaded), to tell what a reload changes.
    config: Config,
    /// One per running MQTT source: takes its re-read `[[mqtt]]` section on SIGHUP.
    mqtt_reloaders: Vec<crate::source::mqtt::MqttReload>,
}

/// Takes the data directory's lock so two processes never share a buffer or cursor,
/// and makes the directory private (0700 folders, 0600 files; see [`crate::private_fs`]).
pub(crate) fn lock_data_dir(dir: &Path) -> Result<File, StartError> {
    crate::private_fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(".lock");
    let file = crate::private_fs::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::DataDir {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StartError::Locked(dir.to_path_buf()));
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(StartError::DataDir { path, source });
        }
    }
    // Files of an older version (or another umask) were created 0644 in 0755 folders.
    match crate::private_fs::tighten(dir) {
        Ok(done) if done.dirs + done.files > 0 => tracing::info!(
            message = "Data directory made private: group and other permissions removed.",
            dir = %dir.display(),
            folders = done.dirs,
            files = done.files
        ),
        Ok(_) => {}
        Err(source) => {
            return Err(StartError::DataDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    Ok(file)
}

/// Builds every stage from the config (failing early on anything invalid) and starts them.
pub async fn start(cfg: &Config) -> Result<Running, StartError> {
    if cfg.homeassistant.is_empty() && cfg.mqtt.is_empty() {
        return Err(StartError::NoSource);
    }
    let mqtt_sources = cfg
        .mqtt
        .iter()
        .map(|m| crate::source::mqtt::MqttSource::build(m, &cfg.data_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    let stats = Arc::new(Stats::default());
    for warning in cfg.transport_warnings() {
        tracing::warn!(message = "Credentials travel in clear text.", %warning);
    }
    let dead_letters = Arc::new(DeadLetters::with_config(
        cfg.dead_letter_dir(),
        &cfg.dead_letter,
    ));
    if !cfg.homeassistant.is_empty() {
        // The cursor code creates its folder with the process's umask; created here first, it is private either way.
        let cursor = cfg.data_dir.join("cursor");
        crate::private_fs::create_dir_all(&cursor).map_err(|source| StartError::DataDir {
            path: cursor,
            source,
        })?;
    }
    let pipeline = Pipeline::new(&cfg.filter, &cfg.effective_schema())?;

    // Every source is listed, not connected, before `/ready` can be asked: until each has
    // connected the ingestor is not ready (else it would answer ready while the buffer opens).
    for ha in cfg.owned_homes() {
        stats.register_source(&ha.name);
    }
    if !cfg.homeassistant.is_empty() {
        stats.set_fleet(crate::monitor::FleetView {
            shard_index: cfg.shard.as_ref().and_then(|s| s.index),
            shard_count: cfg.shard.as_ref().map(|s| s.count),
            homes_total: cfg.homeassistant.len(),
            homes_owned: cfg.owned_homes().map(|ha| ha.name.clone()).collect(),
            resumed_from: Default::default(),
        });
    }
    for mqtt in &mqtt_sources {
        stats.register_source(&mqtt.name());
    }

    let monitor_token = CancellationToken::new();
    let (monitor_addr, monitor) = if cfg.monitor.enabled {
        let (addr, fut) =
            crate::monitor::http::serve_config(&cfg.monitor, stats.clone(), monitor_token.clone())
                .await?;
        tracing::info!(message = "Monitor listening.", %addr, endpoints = "/health /ready /metrics");
        (Some(addr), Some(tokio::spawn(fut)))
    } else {
        (None, None)
    };

    // After the monitor, whose start installs the metrics recorder the gauges go to.
    if let Some(fleet) = stats.fleet() {
        metrics::gauge!(crate::monitor::metrics::HOMES_OWNED).set(fleet.homes_owned.len() as f64);
        metrics::gauge!(crate::monitor::metrics::HOMES_TOTAL).set(fleet.homes_total as f64);
        tracing::info!(
            message = "Homes this process runs.",
            owned = fleet.homes_owned.len(),
            total = fleet.homes_total,
            shard_index = ?fleet.shard_index,
            shard_count = ?fleet.shard_count,
        );
    }
    for peer in cfg.tls_unverified_peers() {
        stats.tls_verification_disabled(&peer);
    }

    // Retention status for its gauges: checked now and every ten minutes until the monitor stops.
    if let Some(watcher) = crate::schema_tools::retention::watcher(cfg) {
        tokio::spawn(watcher.run(monitor_token.clone()));
    }

    // Built before anything is spawned, so a bad sink setting fails start-up cleanly.
    let sink = build_sink(cfg)?;
    let handoff = Handoff::new();
    let (event_tx, event_rx) = mpsc::channel(EVENT_CHANNEL);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNK_CHANNEL);
    let targets = sink.targets();
    let target_names = target_names(cfg, targets);
    let (sink_rxs, acks, buffered) = if cfg.buffer.enabled {
        let buffer = open_buffer(cfg).await?;
        // Also sets the capacity gauge the alert rules read.
        register_buffer_probe(&stats, &buffer, &cfg.buffer);
        let (sink_rxs, acks, buffered) = start_buffer(
            buffer,
            chunk_rx,
            &stats,
            &handoff,
            &target_names,
            tasks::group_commit_for(cfg),
        )?;
        (
            sink_rxs,
            acks.into_iter().map(Some).collect(),
            Some(buffered),
        )
    } else {
        let rx = release_on_handover(chunk_rx, handoff.clone());
        (fan_out(rx, targets), vec![None; targets], None)
    };
    let sink_token = CancellationToken::new();
    let sink = sink.spawn_targets(
        sink_rxs,
        acks,
        SinkContext {
            stats: stats.clone(),
            dead_letters: dead_letters.clone(),
            shutdown: sink_token.clone(),
            acks: None,
        },
    );

    let pipeline = tokio::spawn(pipeline.run(event_rx, chunk_tx, stats.clone()));

    // Alert notifications to Home Assistant travel over the source's connection.
    // One queue per home, so a notifier's `instance` reaches that home's connection only.
    let ha_commands =
        crate::feedback::commands::Commands::for_homes(cfg.owned_homes().map(|ha| ha.name.clone()));
    let alerting =
        crate::monitor::alerts::start(&cfg.alerts, stats.alerts.clone(), Some(&ha_commands))?;

    let sources_token = CancellationToken::new();
    let settled_token = CancellationToken::new();
    let background = tokio_util::task::TaskTracker::new();

    let ctx = SourceContext {
        tx: event_tx,
        stats: stats.clone(),
        dead_letters: dead_letters.clone(),
        shutdown: sources_token.clone(),
        cursor_dir: Some(cfg.data_dir.join("cursor")),
        handoff,
        settled: settled_token.clone(),
        background: background.clone(),
        commands: ha_commands,
    };
    // One connection, cursor and backfill per Home Assistant instance this process runs,
    // named by it; in a sharded fleet each first asks the store where the home ended.
    let store_resume = crate::fleet::StoreResume::from_config(cfg)?;
    let cursor_dir = cfg.data_dir.join("cursor");
    let mut sources: Vec<JoinHandle<()>> = cfg
        .owned_homes()
        .map(|ha| {
            let source_id: SourceId = Arc::from(ha.name.as_str());
            let (ha, ctx, store_resume) = (ha.clone(), ctx.clone(), store_resume.clone());
            let has_cursor =
                crate::source::homeassistant::cursor::path_for(&cursor_dir, &ha.name).exists();
            tokio::spawn(async move {
                let floor = match &store_resume {
                    Some(store) => store.floor(&ha.name, has_cursor, &ctx.shutdown).await,
                    None => None,
                };
                client::run_from(ha, source_id, ctx, floor).await;
            })
        })
        .collect();
    let mqtt_reloaders = mqtt_sources.iter().map(|m| m.reloader()).collect();
    // One task per MQTT broker, each reading its socket continuously.
    for mqtt in mqtt_sources {
        sources.push(tokio::spawn(mqtt.run(ctx.clone())));
    }

    Ok(Running {
        stats,
        dead_letters,
        monitor_addr,
        sources_token,
        settled_token,
        background,
        sink_token,
        monitor_token,
        sources,
        pipeline,
        buffered,
        sink,
        monitor,
        alerting,
        _lock: lock,
        config: cfg.clone(),
        mqtt_reloaders,
    })
}

/// The sink the config asks for: the InfluxDB writer, else the file sink.
pub(crate) enum Sink {
    Influx(InfluxWriter),
    File(FileSink),
    /// Several `[[influxdb]]` targets, each fed and acknowledged on its own.
    Targets(Vec<InfluxWriter>),
}

/// Builds the configured sink without starting it, so its errors come before any task runs.
pub(crate) fn build_sink(cfg: &Config) -> Result<Sink, StartError> {
    Ok(match &cfg.influxdb {
        Some(influx) if !influx.more.is_empty() => {
            let mut writers = Vec::new();
            for target in influx.targets() {
                writers.push(InfluxWriter::new(target)?);
                tracing::info!(message = "Writing to InfluxDB.", target = target.target_name(), url = %crate::config::redact_url(&target.url), api = ?target.api, measurements = ?target.measurements);
            }
            Sink::Targets(writers)
        }
        Some(influx) => {
            let writer = InfluxWriter::new(influx)?;
            tracing::info!(message = "Writing to InfluxDB.", url = %crate::config::redact_url(&influx.url), api = ?influx.api);
            Sink::Influx(writer)
        }
        None => {
            let dir = cfg.points_dir();
            let file_sink = FileSink::new(dir.clone()).map_err(|source| StartError::FileSink {
                path: dir.clone(),
                source,
            })?;
            tracing::info!(message = "No InfluxDB configured; writing line protocol files.", dir = %dir.display());
            Sink::File(file_sink)
        }
    })
}

impl Sink {
    fn spawn(self, rx: mpsc::Receiver<Chunk>, ctx: SinkContext) -> JoinHandle<()> {
        match self {
            Sink::Influx(writer) => tokio::spawn(writer.run(rx, ctx)),
            Sink::File(file_sink) => tokio::spawn(file_sink.run(rx, ctx)),
            Sink::Targets(writers) => {
                let acks = ctx.acks.clone();
                let n = writers.len();
                Sink::Targets(writers).spawn_targets(fan_out(rx, n), vec![acks; n], ctx)
            }
        }
    }

    /// How many inputs (and delivery reports) the sink takes: one per InfluxDB target.
    pub(crate) fn targets(&self) -> usize {
        match self {
            Sink::Targets(writers) => writers.len(),
            Sink::Influx(_) | Sink::File(_) => 1,
        }
    }

    /// Starts the sink on one input and one delivery report per target (see [`Sink::targets`]).
    pub(crate) fn spawn_targets(
        self,
        rxs: Vec<mpsc::Receiver<Chunk>>,
        acks: Vec<Option<Acks>>,
        ctx: SinkContext,
    ) -> JoinHandle<()> {
        let with_acks = |acks: Option<Acks>| SinkContext {
            acks,
            ..ctx.clone()
        };
        match self {
            Sink::Targets(writers) => {
                let tasks: Vec<JoinHandle<()>> = writers
                    .into_iter()
                    .zip(rxs)
                    .zip(acks)
                    .map(|((writer, rx), acks)| tokio::spawn(writer.run(rx, with_acks(acks))))
                    .collect();
                tokio::spawn(async move {
                    for task in tasks {
                        if let Err(error) = task.await {
                            tracing::error!(message = "An InfluxDB target's task failed.", %error);
                        }
                    }
                })
            }
            single => {
                let (Some(rx), Some(acks)) = (rxs.into_iter().next(), acks.into_iter().next())
                else {
                    return tokio::spawn(async {});
                };
                single.spawn(rx, with_acks(acks))
            }
        }
    }
}

/// Without the buffer, several targets: every chunk is copied to each target's input (a slow target slows the others).
fn fan_out(mut rx: mpsc::Receiver<Chunk>, targets: usize) -> Vec<mpsc::Receiver<Chunk>> {
    if targets <= 1 {
        return vec![rx];
    }
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..targets)
        .map(|_| mpsc::channel::<Chunk>(CHUNK_CHANNEL))
        .unzip();
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            for tx in &txs {
                let _ = tx.send(chunk.clone()).await;
            }
        }
    });
    rxs
}

/// One input channel per sink target.
type TargetInputs = Vec<mpsc::Receiver<Chunk>>;

/// Puts the buffer between the pipeline's channel and the sink: the appender writes
/// `from_pipeline` to disk, the feeder sends records to the returned receiver, and the
/// acknowledger removes what the sink reports through the returned [`Acks`].
///
/// With several targets, each has its own feeder (its own position in the buffer)
/// and its own delivery report; a record is removed once every target delivered it.
fn start_buffer(
    buffer: Buffer,
    from_pipeline: mpsc::Receiver<Chunk>,
    stats: &Arc<Stats>,
    handoff: &Arc<Handoff>,
    names: &[String],
    group_commit: Option<Duration>,
) -> Result<(TargetInputs, Vec<Acks>, Buffered), StartError> {
    let targets = names.len();
    // With several targets each resumes after its own saved position (one target needs none:
    // the oldest record left is the first it has not delivered).
    let save = targets > 1 && names.iter().all(|n| !n.is_empty());
    let positions = if save {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        buffer.positions(&refs).unwrap_or_else(|error| {
            tracing::warn!(message = "Cannot read the targets' delivery positions; every target starts from the oldest record.", %error);
            vec![None; targets]
        })
    } else {
        vec![None; targets]
    };
    let (acks, delivered): (Vec<Acks>, Vec<_>) = positions
        .iter()
        .map(|p| Acks::channel_from(p.unwrap_or(0)))
        .unzip();
    let pending = Arc::new(tasks::PendingMarks::default());
    let appender = tasks::spawn_appender(
        buffer.clone(),
        from_pipeline,
        stats.clone(),
        pending.clone(),
        tasks::append_linger(group_commit),
    )
    .map_err(|e| StartError::BufferTask(e.to_string()))?;
    let feeder_token = CancellationToken::new();
    let release_token = CancellationToken::new();
    let releaser = tokio::spawn(tasks::release(
        buffer.clone(),
        pending,
        handoff.clone(),
        release_token.clone(),
        group_commit,
    ));
    let mut sink_rxs = Vec::with_capacity(targets);
    let mut feeders = Vec::with_capacity(targets);
    for position in &positions {
        let (sink_tx, sink_rx) = mpsc::channel::<Chunk>(CHUNK_CHANNEL);
        sink_rxs.push(sink_rx);
        feeders.push(tokio::spawn(tasks::feed_from(
            buffer.clone(),
            sink_tx,
            feeder_token.clone(),
            BUFFER_DRAIN_DEADLINE,
            *position,
        )));
    }
    let feeder = tokio::spawn(async move {
        for feeder in feeders {
            if let Err(error) = feeder.await {
                tracing::error!(message = "A buffer feeder failed.", %error);
            }
        }
    });
    let acknowledger = if save {
        tokio::spawn(tasks::acknowledge_all_saving(
            buffer.clone(),
            delivered,
            names.to_vec(),
        ))
    } else {
        tokio::spawn(tasks::acknowledge_all(buffer.clone(), delivered))
    };
    Ok((
        sink_rxs,
        acks,
        Buffered {
            buffer,
            appender,
            feeder_token,
            feeder,
            acknowledger,
            release_token,
            releaser,
        },
    ))
}

/// The sink targets' names, in the order of their buffer readers (`file` for the file sink).
fn target_names(cfg: &Config, targets: usize) -> Vec<String> {
    let names: Vec<String> = match &cfg.influxdb {
        Some(influx) => influx
            .targets()
            .map(|t| t.target_name().to_string())
            .collect(),
        None => vec!["file".to_string()],
    };
    if names.len() == targets {
        names
    } else {
        // Unnamed: no saved positions.
        vec![String::new(); targets]
    }
}

/// Without the durable buffer: passes chunks with points on to the sink and releases
/// every chunk's upstream marks as the sink takes it (the strongest promise there is
/// without a disk copy; documented under `[buffer] enabled`).
fn release_on_handover(
    mut from_pipeline: mpsc::Receiver<Chunk>,
    handoff: Arc<Handoff>,
) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel::<Chunk>(CHUNK_CHANNEL);
    tokio::spawn(async move {
        while let Some(mut chunk) = from_pipeline.recv().await {
            let marks = std::mem::take(&mut chunk.marks);
            if chunk.points > 0 && tx.send(chunk).await.is_err() {
                break;
            }
            handoff.release(&marks);
        }
    });
    rx
}

/// Lets the status page read the buffer's depth, size and oldest age.
fn register_buffer_probe(stats: &Stats, buffer: &Buffer, cfg: &crate::config::BufferConfig) {
    let buffer = buffer.clone();
    let max_bytes = cfg.max_bytes;
    metrics::gauge!(crate::monitor::metrics::BUFFER_CAPACITY_BYTES).set(max_bytes as f64);
    let when_full = match cfg.when_full {
        crate::config::WhenFull::Block => "block",
        crate::config::WhenFull::DropOldest => "drop_oldest",
    };
    stats.buffer_probe.set(move || {
        let s = buffer.stats().map_err(|e| e.to_string())?;
        Ok(crate::monitor::page::BufferView {
            records: s.records,
            points: s.points,
            bytes: s.bytes,
            max_bytes,
            fill_percent: if max_bytes == 0 {
                0.0
            } else {
                s.bytes as f64 * 100.0 / max_bytes as f64
            },
            oldest_age_seconds: s.oldest_age.map(|a| a.as_secs_f64()),
            when_full: when_full.to_string(),
        })
    });
}

/// Opens `<data_dir>/buffer` off the runtime and says what it found.
pub(crate) async fn open_buffer(cfg: &Config) -> Result<Buffer, StartError> {
    let dir = cfg.buffer_dir();
    let buffer_cfg = cfg.buffer.clone();
    let (buffer, report) = tokio::task::spawn_blocking(move || Buffer::open(&dir, &buffer_cfg))
        .await
        .map_err(|e| StartError::BufferTask(e.to_string()))??;
    if report.records > 0 {
        tracing::info!(
            message = "Points left in the buffer by the previous run are delivered first.",
            records = report.records,
            points = report.points,
            bytes = report.bytes,
        );
    }
    Ok(buffer)
}

impl Running {
    /// Totals and health, shared with every stage.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The dead-letter store.
    pub fn dead_letters(&self) -> Arc<DeadLetters> {
        self.dead_letters.clone()
    }

    /// Where the monitor listens, when enabled (useful with port 0).
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor_addr
    }

    /// Stops in data-flow order and returns the final totals.
    pub async fn stop(self) -> Totals {
        // The page's buffer probe holds a handle; the buffer must be free to close.
        self.stats.buffer_probe.clear();
        self.sources_token.cancel();
        for source in self.sources {
            if let Err(error) = source.await {
                tracing::error!(message = "A source task failed.", %error);
            }
        }
        let pipeline = self.pipeline;
        let pipeline_done = |result: Result<(), tokio::task::JoinError>| {
            if let Err(error) = result {
                tracing::error!(message = "The pipeline task failed.", %error);
            }
        };
        let buffer = match self.buffered {
            None => {
                pipeline_done(pipeline.await);
                None
            }
            Some(b) => {
                // The pipeline drains into the appender, which writes the rest to disk and ends
                // when the pipeline is gone.
                let appender = b.appender;
                let drained = async move {
                    pipeline_done(pipeline.await);
                    tokio::task::spawn_blocking(move || appender.join()).await
                };
                tokio::pin!(drained);
                let result = match tokio::time::timeout(BUFFER_DRAIN_DEADLINE, &mut drained).await {
                    Ok(result) => result,
                    Err(_) => {
                        // A full buffer (`when_full = "block"`) that nothing empties: stop appending.
                        tracing::error!(
                            message = "The buffer is full and the sink delivers nothing; points not yet in the buffer are lost.",
                            deadline_s = BUFFER_DRAIN_DEADLINE.as_secs(),
                        );
                        let buffer = b.buffer.clone();
                        let _ = tokio::task::spawn_blocking(move || buffer.close()).await;
                        drained.await
                    }
                };
                if result.map_or(true, |r| r.is_err()) {
                    tracing::error!(message = "The buffer appender failed.");
                }
                b.feeder_token.cancel();
                if let Err(error) = b.feeder.await {
                    tracing::error!(message = "The buffer feeder failed.", %error);
                }
                Some((b.buffer, b.acknowledger, b.release_token, b.releaser))
            }
        };
        self.sink_token.cancel();
        let sink_abort = self.sink.abort_handle();
        match tokio::time::timeout(FLUSH_DEADLINE, self.sink).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(message = "The sink task failed.", %error),
            Err(_) => {
                sink_abort.abort();
                tracing::error!(
                    message = "The sink did not flush in time; undelivered points are lost.",
                    deadline_s = FLUSH_DEADLINE.as_secs()
                );
            }
        }
        if let Some((buffer, acknowledger, release_token, releaser)) = buffer {
            // The sink is gone, so are its delivery reports: the acknowledger ends after the last one.
            if let Err(error) = acknowledger.await {
                tracing::error!(message = "The buffer acknowledger failed.", %error);
            }
            match tokio::task::spawn_blocking(move || (buffer.close(), buffer.stats())).await {
                Ok((Err(error), _)) => {
                    tracing::error!(message = "Cannot make the buffer durable at shutdown.", %error)
                }
                Ok((Ok(_), Ok(stats))) if stats.records > 0 => tracing::info!(
                    message = "Points stay in the buffer for the next start.",
                    records = stats.records,
                    points = stats.points,
                ),
                Ok(_) => {}
                Err(error) => tracing::error!(message = "The buffer close task failed.", %error),
            }
            // Everything appended is durable now: the releaser's last round releases every mark.
            release_token.cancel();
            if let Err(error) = releaser.await {
                tracing::error!(message = "The buffer releaser failed.", %error);
            }
        }
        // Sources persist their final positions (resume cursors) now that all they handed on is safe.
        self.settled_token.cancel();
        self.background.close();
        self.background.wait().await;
        if let Some(alerting) = self.alerting {
            alerting.stop().await;
        }
        self.monitor_token.cancel();
        if let Some(monitor) = self.monitor {
            // A client that holds a connection open (slow or partial headers) must not hold
            // the process: after the deadline the listener and its connections are dropped.
            let abort = monitor.abort_handle();
            if tokio::time::timeout(MONITOR_DEADLINE, monitor)
                .await
                .is_err()
            {
                abort.abort();
                tracing::warn!(
                    message =
                        "The monitor did not close its connections in time; they are dropped.",
                    deadline_s = MONITOR_DEADLINE.as_secs()
                );
            }
        }
        let totals = self.stats.totals();
        tracing::info!(
            message = "Stopped.",
            received = totals.received,
            written = totals.written,
            dropped = totals.dropped,
            dead_lettered = totals.dead_lettered
        );
        totals
    }
}

impl Running {
    /// Waits for SIGINT or SIGTERM; on each SIGHUP meanwhile re-reads `config_path` and
    /// applies it with [`Running::reload`] (a file that does not load is logged and ignored).
    /// A signal that arrived during start-up is read first: a stop wins over a reload.
    pub async fn serve_until_shutdown(
        &mut self,
        config_path: &Path,
        signals: &mut crate::signals::Signals,
    ) {
        while signals.next().await == crate::signals::Received::Hangup {
            tracing::info!(message = "SIGHUP: reloading the configuration.", config = %config_path.display());
            match Config::load(config_path) {
                Ok(cfg) => self.reload(cfg),
                Err(error) => {
                    tracing::error!(
                        message = "The reloaded configuration is invalid; nothing changes.",
                        %error
                    );
                    self.audit_reload(&[], &crate::audit::Outcome::Error(error.to_string()));
                }
            }
        }
    }

    /// Applies a re-read config: each MQTT broker's subscriptions change on its live
    /// connection; any other change (brokers added or removed, other sections) is logged as
    /// needing a restart and keeps its old value.
    pub fn reload(&mut self, new: Config) {
        // Audited before anything changes: a reload that cannot be audited is not applied.
        let changed = changed_keys(&self.config, &new);
        if !self.audit_reload(&changed, &crate::audit::Outcome::Ok) {
            return;
        }
        let mut restart: Vec<String> = Vec::new();
        for m in &new.mqtt {
            match self.mqtt_reloaders.iter().find(|r| r.broker() == m.name) {
                Some(r) => {
                    if !r.send(m.clone()) {
                        tracing::error!(message = "The MQTT source cannot take the reload now (stopped, or busy with the last one); try again.", broker = %m.name);
                    }
                }
                None => restart.push(format!("mqtt[{}] (added)", m.name)),
            }
        }
        for r in &self.mqtt_reloaders {
            if !new.mqtt.iter().any(|m| m.name == r.broker()) {
                restart.push(format!("mqtt[{}] (removed)", r.broker()));
            }
        }
        let mut others = new.clone();
        others.mqtt = self.config.mqtt.clone();
        if others != self.config {
            restart.extend(changed_sections(&self.config, &others));
        }
        if !restart.is_empty() {
            tracing::warn!(
                message = "Changed settings need a restart; they keep their old values until then.",
                changed = %restart.join(", "),
            );
        }
        // What took effect: the MQTT subscriptions; the rest stays as started.
        let mut applied = self.config.clone();
        for m in &mut applied.mqtt {
            if let Some(n) = new.mqtt.iter().find(|n| n.name == m.name) {
                m.subscriptions = n.subscriptions.clone();
            }
        }
        self.config = applied;
    }
}

impl Running {
    /// Writes a `reload` line to the audit log; false (and an ERROR log) when it cannot.
    fn audit_reload(&self, changed: &[String], outcome: &crate::audit::Outcome) -> bool {
        let written = crate::audit::AuditLog::open(&self.config.data_dir).and_then(|log| {
            log.record(
                "reload",
                "configuration",
                serde_json::json!({ "changed": changed }),
                outcome,
            )
        });
        match written {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(message = "Cannot audit the reload; nothing changes.", %error);
                false
            }
        }
    }
}

/// The dotted keys (`section.key`, `mqtt[0].subscriptions`) whose values differ, never the
/// values; secrets, which are not serialized, show as `<section> (secret)`.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    fn walk(
        path: &str,
        a: &serde_json::Value,
        b: &serde_json::Value,
        depth: u8,
        out: &mut Vec<String>,
    ) {
        use serde_json::Value;
        if a == b {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) if depth > 0 => {
                let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
                for k in keys {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &child,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        depth - 1,
                        out,
                    );
                }
            }
            (Value::Array(x), Value::Array(y)) if depth > 0 && x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), p, q, depth - 1, out);
                }
            }
            _ => out.push(path.to_string()),
        }
    }
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["(unknown)".to_string()];
    };
    let mut out = Vec::new();
    walk("", &a, &b, 3, &mut out);
    if out.is_empty() && old != new {
        // A difference serde does not show (a secret): say so without naming its value.
        out.push("a setting not shown (secret)".to_string());
    }
    out
}

/// The top-level keys (sections) that differ between two configs, for a "needs restart" log.
fn changed_sections(old: &Config, new: &Config) -> Vec<String> {
    match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => {
            let mut keys: Vec<String> = a
                .keys()
                .chain(b.keys().filter(|k| !a.contains_key(*k)))
                .filter(|k| a.get(*k) != b.get(*k))
                .cloned()
                .collect();
            if keys.is_empty() {
                // A difference serde does not show (a secret): say so without naming it.
                keys.push("a setting not shown (secret)".to_string());
            }
            keys
        }
        _ => vec!["(unknown)".to_string()],
    }
}

/// Resolves on SIGINT or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(message = "Cannot listen for Ctrl-C.", %error);
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(message = "Cannot listen for SIGTERM.", %error);
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
