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
/// Gauge: Home Assistant instances this process runs (with `[shard]`, its share of the fleet).
pub const HOMES_OWNED: &str = "ha_ingestor_homes_owned";
/// Gauge: Home Assistant instances listed in the configuration (every replica's).
pub const HOMES_TOTAL: &str = "ha_ingestor_homes_total";
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
/// Counter `{source}`: attributes HA's recorder does not keep, put back into backfilled states.
pub const BACKFILL_ATTRIBUTES_RESTORED: &str = "ha_ingestor_backfill_attributes_restored_total";
/// Counter `{source}`: times a gap's commit check was asked again because HA's recorder had not committed the gap's end yet.
pub const BACKFILL_COMMIT_WAITS: &str = "ha_ingestor_backfill_commit_waits_total";
/// Counter `{source}`: gaps read without HA's recorder confirming their end within `backfill_commit_wait`.
pub const BACKFILL_UNCONFIRMED: &str = "ha_ingestor_backfill_unconfirmed_gaps_total";
/// Counter `{source}`: entities that changed during a gap but have no history (not recorded by HA): only their current state was recovered.
pub const BACKFILL_UNRECORDED_ENTITIES: &str = "ha_ingestor_backfill_unrecorded_entities_total";
/// Histogram `{source}`: seconds of each gap (cursor to first live event) that was backfilled.
pub const SOURCE_GAP_SECONDS: &str = "ha_ingestor_source_gap_seconds";
/// Histogram `{source}`: seconds of each gap whose events other than state changes (or all events, when the history was refused) are lost.
pub const SOURCE_UNRECOVERABLE_GAP_SECONDS: &str = "ha_ingestor_source_unrecoverable_gap_seconds";
/// Histogram `{source}`: seconds from HA's `time_fired` to the frame's arrival, per live event (clock skew included).
pub const SOURCE_LAG_SECONDS: &str = "ha_ingestor_source_lag_seconds";
/// Gauge `{source}`: HA's `time_fired` of the last live event, as Unix seconds (`time() - it` is the last event's age).
pub const SOURCE_LAST_EVENT_TIMESTAMP: &str = "ha_ingestor_source_last_event_timestamp_seconds";
/// Counter `{domain}`: events the pipeline stage took in, by HA domain (the entity's; a service call's service domain); at most 64 domains, later ones as `_other`, events without one as `_none`.
pub const PIPELINE_RECEIVED_EVENTS: &str = "ha_ingestor_pipeline_received_events_total";
/// Counter `{reason}`: events the pipeline removed (`filtered`).
pub const PIPELINE_DISCARDED: &str = "ha_ingestor_pipeline_discarded_events_total";
/// Counter `{rule}`: events a filter rule decided (it was the first match); rule names come from the config.
pub const FILTER_RULE_MATCHES: &str = "ha_ingestor_filter_rule_matches_total";
/// Counter `{rule}`: run-time failures of a filter rule's expression.
pub const FILTER_RULE_ERRORS: &str = "ha_ingestor_filter_rule_errors_total";
/// Counter `{rule}`: events a rule kept (it decided `include`, or its `on_error` kept them).
pub const FILTER_RULE_INCLUDED: &str = "ha_ingestor_filter_rule_included_total";
/// Counter `{rule}`: events a rule dropped (it decided `exclude`, its `on_error` or a failing step dropped them).
pub const FILTER_RULE_EXCLUDED: &str = "ha_ingestor_filter_rule_excluded_total";
/// Counter `{rule}`: events a rule's transform steps were applied to.
pub const FILTER_RULE_TRANSFORMED: &str = "ha_ingestor_filter_rule_transformed_total";
/// Histogram `{rule}`: seconds one run of a filter rule's per-event tests took, sampled (every rule run for one event in 64).
pub const FILTER_RULE_EVAL_SECONDS: &str = "ha_ingestor_filter_rule_eval_seconds";
/// Histogram: seconds one event took in the pipeline stage (rule chain, transforms, encoding), sampled (one event in 64).
pub const PIPELINE_EVENT_SECONDS: &str = "ha_ingestor_pipeline_event_seconds";
/// Counter: heartbeat points rate shaping wrote (the last value again, tagged `heartbeat=true`).
pub const PIPELINE_HEARTBEATS: &str = "ha_ingestor_pipeline_heartbeats_total";
/// Gauge: events held by throttles right now (their upstream marks wait with them).
pub const PIPELINE_HELD: &str = "ha_ingestor_pipeline_held_events";
/// Counter: points produced by the encoder.
pub const ENCODER_POINTS: &str = "ha_ingestor_encoder_points_total";
/// Counter `{reason}`: events that give no point by the schema's rules.
pub const ENCODER_SKIPPED: &str = "ha_ingestor_encoder_skipped_events_total";
/// Counter: allow-listed attributes of the `optimized` schema left out because their value does not fit the pinned type.
pub const ENCODER_DROPPED_ATTRIBUTES: &str = "ha_ingestor_encoder_dropped_attributes_total";
/// Counter `{sink}`: points the sink accepted.
pub const SINK_SENT_POINTS: &str = "ha_ingestor_sink_sent_points_total";
/// Counter `{sink}`: request body bytes sent (before compression).
pub const SINK_SENT_BYTES: &str = "ha_ingestor_sink_sent_bytes_total";
/// Counter `{sink, error_type}`: failed write attempts.
pub const SINK_ERRORS: &str = "ha_ingestor_sink_errors_total";
/// Gauge `{peer}`: 1 for each peer whose TLS certificate is not verified (`insecure_skip_verify`).
pub const TLS_VERIFICATION_DISABLED: &str = "ha_ingestor_tls_verification_disabled";
/// Counter `{sink}`: retried write attempts.
pub const SINK_RETRIES: &str = "ha_ingestor_sink_retries_total";
/// Histogram `{sink}`: seconds per write request.
pub const SINK_BATCH_DURATION: &str = "ha_ingestor_sink_batch_duration_seconds";
/// Histogram `{sink}`: points per write request.
pub const SINK_BATCH_POINTS: &str = "ha_ingestor_sink_batch_points";
/// Counter `{sink, measurement, action}`: field values whose type differed from the stored one, by what was done (`converted`, `str_field`, `dead_lettered`).
pub const SINK_TYPE_CONFLICTS: &str = "ha_ingestor_sink_type_conflicts_total";
/// Counter `{stage, kind}`: items set aside in the dead-letter files.
pub const DEAD_LETTERS: &str = "ha_ingestor_dead_letters_total";
/// Counter: bytes of dead-letter files removed to keep the folder under `[dead_letter] max_bytes`.
pub const DEAD_LETTER_ROTATED_BYTES: &str = "ha_ingestor_dead_letter_rotated_bytes_total";
/// Counter: dead-letter files removed to keep the folder under `[dead_letter] max_bytes`.
pub const DEAD_LETTER_ROTATED_FILES: &str = "ha_ingestor_dead_letter_rotated_files_total";
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
/// Gauge: 1 when the database's retention policies and continuous queries match `[retention]`, 0 when `retention apply` has changes to make.
pub const RETENTION_IN_SYNC: &str = "ha_ingestor_retention_in_sync";
/// Gauge: changes `retention apply` would make (policies to create or alter, continuous queries to create or replace).
pub const RETENTION_PENDING_CHANGES: &str = "ha_ingestor_retention_pending_changes";
/// Histogram: seconds from the oldest live point of a record (HA's `time_fired` / `last_updated`) to the record's commit in the durable buffer, where a crash of the process can no longer lose it.
pub const BUFFER_DURABLE_LATENCY: &str = "ha_ingestor_buffer_durable_latency_seconds";
/// Histogram `{sink}`: seconds from the newest point's own timestamp (HA's `time_fired` / `last_updated`) to InfluxDB accepting its batch.
pub const SINK_END_TO_END_LATENCY: &str = "ha_ingestor_sink_end_to_end_latency_seconds";
/// Gauge: the durable buffer's `max_bytes`, so its fill can be read as a fraction.
pub const BUFFER_CAPACITY_BYTES: &str = "ha_ingestor_buffer_capacity_bytes";
/// Gauge (only grows): CPU seconds (user + system) the process used (Linux: `/proc/self/stat`).
pub const PROCESS_CPU_SECONDS: &str = "ha_ingestor_process_cpu_seconds_total";
/// Gauge: resident memory in bytes (Linux: `VmRSS` of `/proc/self/status`).
pub const PROCESS_RESIDENT_MEMORY: &str = "ha_ingestor_process_resident_memory_bytes";
/// Gauge: open file descriptors (Linux: entries of `/proc/self/fd`).
pub const PROCESS_OPEN_FDS: &str = "ha_ingestor_process_open_fds";
/// Gauge: the soft limit on open file descriptors (Linux: `/proc/self/limits`).
pub const PROCESS_MAX_FDS: &str = "ha_ingestor_process_max_fds";
/// Gauge: threads of the process (Linux: `Threads` of `/proc/self/status`).
pub const PROCESS_THREADS: &str = "ha_ingestor_process_threads";
/// Gauge `{rule, severity}`: 1 while an alert rule fires, else 0; rule names come from the config.
pub const ALERT_FIRING: &str = "ha_ingestor_alert_firing";
/// Counter `{rule, state}`: state changes of alert rules (`pending`, `firing`, `resolved`, `inactive`).
pub const ALERT_TRANSITIONS: &str = "ha_ingestor_alert_transitions_total";
/// Counter: alert evaluation ticks run.
pub const ALERT_EVALUATIONS: &str = "ha_ingestor_alert_evaluations_total";
/// Counter `{notifier, status}`: notifications delivered (`firing`, `resolved`); notifier names come from the config.
pub const ALERT_NOTIFICATIONS_SENT: &str = "ha_ingestor_alert_notifications_sent_total";
/// Counter `{notifier, error_type}`: notifications that failed (after retries) or were dropped (`queue_full`).
pub const ALERT_NOTIFICATION_ERRORS: &str = "ha_ingestor_alert_notification_errors_total";
/// Counter `{notifier}`: retried notification attempts.
pub const ALERT_NOTIFICATION_RETRIES: &str = "ha_ingestor_alert_notification_retries_total";
/// Counter `{broker, subscription}`: MQTT messages received, by the subscription their topic matched (`unmatched`: none).
pub const MQTT_RECEIVED_MESSAGES: &str = "ha_ingestor_mqtt_received_messages_total";
/// Counter `{broker, subscription}`: events decoded from MQTT messages.
pub const MQTT_DECODED_EVENTS: &str = "ha_ingestor_mqtt_decoded_events_total";
/// Counter `{broker, subscription, reason}`: MQTT messages that gave no event because they did not decode (each is a dead letter).
pub const MQTT_DECODE_ERRORS: &str = "ha_ingestor_mqtt_decode_errors_total";
/// Gauge `{broker}`: received QoS 1/2 messages not yet acknowledged (waiting for their points to be durable).
pub const MQTT_UNACKED_MESSAGES: &str = "ha_ingestor_mqtt_unacked_messages";
/// Counter `{broker}`: QoS 1/2 messages acknowledged to the broker.
pub const MQTT_ACKED_MESSAGES: &str = "ha_ingestor_mqtt_acked_messages_total";
/// Counter `{broker}`: reconnects on which the broker had kept no session (messages sent meanwhile are lost).
pub const MQTT_SESSIONS_LOST: &str = "ha_ingestor_mqtt_sessions_lost_total";

/// Counter `{reason}`: monitor requests refused: `host` (421, foreign `Host`), `auth` (401), `role` (403, a metrics token on a page route), `peer` (403, outside `ingress_only_from`).
pub const MONITOR_REJECTED: &str = "ha_ingestor_monitor_rejected_total";
