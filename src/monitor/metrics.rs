//! Metric names, in one place so code and `docs/metrics.md` cannot drift apart.
//!
//! Label values are bounded: source names, event types, stage and error kinds;
//! never an entity id.

/// Counter `{source, event_type}`: events decoded from a source.
pub const SOURCE_RECEIVED_EVENTS: &str = "ha_ingestor_source_received_events_total";
/// Counter `{source}`: bytes of frames or messages read.
pub const SOURCE_RECEIVED_BYTES: &str = "ha_ingestor_source_received_bytes_total";
/// Counter `{source, error_type}`: undecodable input, connection and auth failures.
pub const SOURCE_ERRORS: &str = "ha_ingestor_source_errors_total";
/// Gauge `{source}`: 1 while connected and subscribed.
pub const SOURCE_CONNECTED: &str = "ha_ingestor_source_connected";
/// Counter `{source}`: successful connections (the first and every reconnect).
pub const SOURCE_CONNECTS: &str = "ha_ingestor_source_connects_total";
/// Counter `{source, reason}`: established connections that were lost (`ping_timeout`, `closed`, `ha_restart`, …) and re-established.
pub const SOURCE_RECONNECTS: &str = "ha_ingestor_source_reconnects_total";
/// Counter `{source}`: current states of the initial snapshot handed on (not counted as received events).
pub const SOURCE_SNAPSHOT_STATES: &str = "ha_ingestor_source_snapshot_states_total";
/// Counter `{source}`: state changes recovered from HA's history after a gap.
pub const SOURCE_BACKFILLED_POINTS: &str = "ha_ingestor_source_backfilled_points_total";
/// Histogram `{source}`: seconds of each gap (cursor to first live event) that was backfilled.
pub const SOURCE_GAP_SECONDS: &str = "ha_ingestor_source_gap_seconds";
/// Histogram `{source}`: seconds of each gap whose events other than state changes (or all events, when the history was refused) are lost.
pub const SOURCE_UNRECOVERABLE_GAP_SECONDS: &str = "ha_ingestor_source_unrecoverable_gap_seconds";
/// Counter `{reason}`: events the pipeline removed (`filtered`).
pub const PIPELINE_DISCARDED: &str = "ha_ingestor_pipeline_discarded_events_total";
/// Counter `{rule}`: events a filter rule decided (it was the first match); rule names come from the config.
pub const FILTER_RULE_MATCHES: &str = "ha_ingestor_filter_rule_matches_total";
/// Counter `{rule}`: run-time failures of a filter rule's expression.
pub const FILTER_RULE_ERRORS: &str = "ha_ingestor_filter_rule_errors_total";
/// Counter: points produced by the encoder.
pub const ENCODER_POINTS: &str = "ha_ingestor_encoder_points_total";
/// Counter `{reason}`: events that give no point by the schema's rules.
pub const ENCODER_SKIPPED: &str = "ha_ingestor_encoder_skipped_events_total";
/// Counter `{sink}`: points the sink accepted.
pub const SINK_SENT_POINTS: &str = "ha_ingestor_sink_sent_points_total";
/// Counter `{sink}`: request body bytes sent (before compression).
pub const SINK_SENT_BYTES: &str = "ha_ingestor_sink_sent_bytes_total";
/// Counter `{sink, error_type}`: failed write attempts.
pub const SINK_ERRORS: &str = "ha_ingestor_sink_errors_total";
/// Counter `{sink}`: retried write attempts.
pub const SINK_RETRIES: &str = "ha_ingestor_sink_retries_total";
/// Histogram `{sink}`: seconds per write request.
pub const SINK_BATCH_DURATION: &str = "ha_ingestor_sink_batch_duration_seconds";
/// Histogram `{sink}`: points per write request.
pub const SINK_BATCH_POINTS: &str = "ha_ingestor_sink_batch_points";
/// Counter `{stage, kind}`: items set aside in the dead-letter files.
pub const DEAD_LETTERS: &str = "ha_ingestor_dead_letters_total";
/// Gauge `{queue}`: items waiting in a stage's input channel.
pub const QUEUE_DEPTH: &str = "ha_ingestor_queue_depth";
/// Gauge `{version}`: always 1, carries the build version.
pub const BUILD_INFO: &str = "ha_ingestor_build_info";
/// Gauge: seconds since the process started.
pub const UPTIME: &str = "ha_ingestor_uptime_seconds";
/// Gauge: bytes of records in the durable buffer.
pub const BUFFER_BYTES: &str = "ha_ingestor_buffer_bytes";
/// Gauge: records (chunks) in the durable buffer.
pub const BUFFER_RECORDS: &str = "ha_ingestor_buffer_records";
/// Gauge: points in the durable buffer.
pub const BUFFER_POINTS: &str = "ha_ingestor_buffer_points";
/// Gauge: seconds since the oldest record in the durable buffer was appended (0 when empty).
pub const BUFFER_OLDEST_AGE: &str = "ha_ingestor_buffer_oldest_age_seconds";
/// Counter: records appended to the durable buffer.
pub const BUFFER_APPENDS: &str = "ha_ingestor_buffer_appends_total";
/// Counter: records removed from the durable buffer after delivery.
pub const BUFFER_ACKED: &str = "ha_ingestor_buffer_acked_records_total";
/// Counter `{reason}`: points removed from the durable buffer undelivered (`buffer_full` with `when_full = "drop_oldest"`).
pub const BUFFER_DROPPED_POINTS: &str = "ha_ingestor_buffer_dropped_points_total";
/// Counter: corrupt records skipped when the durable buffer was opened.
pub const BUFFER_CORRUPT_RECORDS: &str = "ha_ingestor_buffer_corrupt_records_total";
/// Counter: appends that had to wait for space (`when_full = "block"`).
pub const BUFFER_FULL_WAITS: &str = "ha_ingestor_buffer_full_waits_total";
/// Gauge: sequence number of the last buffer record made durable (fsynced).
pub const BUFFER_DURABLE_SEQUENCE: &str = "ha_ingestor_buffer_durable_sequence";
/// Gauge: the durable buffer's `max_bytes`, so its fill can be read as a fraction.
pub const BUFFER_CAPACITY_BYTES: &str = "ha_ingestor_buffer_capacity_bytes";
