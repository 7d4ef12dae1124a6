//! Gap backfill is exact: two `ha-ingestor run` processes follow the same
//! simulated Home Assistant — whose recorder, like HA's, commits every 5 s and
//! drops the attributes entities declare unrecorded — each writing to its own
//! real `influxd`. One (the reference) is never disturbed; the other is killed
//! with SIGKILL at several points, loses its connection, or loses InfluxDB
//! with a kill inside the outage. Afterwards both databases hold the same
//! points, field for field: the backfill wrote every change up to the first
//! live event, attributes included, as the live stream did.

use crate::support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use serde_json::Value;
use support::ha_schema::{Rows, all_rows, is_written};
use support::{Influxd, Running, wait_for};

const TOKEN: &str = "exact-token";
/// An entity HA's recorder is told to exclude in the kill test.
const EXCLUDED: &str = "sensor.kitchen_temperature_0";
/// The object id (the `entity_id` tag) of [`EXCLUDED`].
const EXCLUDED_TAG: &str = "kitchen_temperature_0";
const WAIT: Duration = Duration::from_secs(60);

async fn simulator(seed: u64, exclude: &[&str]) -> SimulatorHandle {
    Simulator::start(
        SimulatorConfig {
            entities: 40,
            rate: 100.0,
            token: TOKEN.into(),
            seed,
            // HA's defaults: a 5 s commit interval, unrecorded attributes dropped.
            recorder_exclude: exclude.iter().map(|e| e.to_string()).collect(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts")
}

/// One `ha-ingestor run` with its own data directory, config and logs (one per start).
struct Ingestor {
    dir: PathBuf,
    config: PathBuf,
    run: Option<Running>,
    starts: usize,
}

impl Ingestor {
    fn new(root: &Path, name: &str, ha_url: &str, influx: &Influxd) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token");
        let config = dir.join("run.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n\
                 [homeassistant]\nurl = \"{ha_url}\"\ntoken_file = \"token\"\ninitial_snapshot = false\n\
                 reconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n\
                 [influxdb]\nurl = \"{url}\"\ndatabase = \"{db}\"\nflush_interval = \"100ms\"\n\
                 [buffer]\nfsync_interval = \"100ms\"\n\
                 [monitor]\nenabled = false\n",
                data = dir.join("data"),
                url = influx.url(),
                db = influx.database(),
            ),
        )
        .expect("config");
        Ingestor {
            dir,
            config,
            run: None,
            starts: 0,
        }
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("run{}.log", self.starts));
        self.run = Some(Running::launch(&self.config).log(log).spawn());
    }

    fn kill(&mut self) {
        // Already gone (it crashed) is fine here: the comparison tells what it left.
        if let Some(mut run) = self.run.take() {
            run.kill();
        }
    }

    async fn stop(&mut self) {
        if let Some(mut run) = self.run.take() {
            let exit = run.stop().await;
            assert!(exit.success(), "run exited with {exit}");
        }
    }

    /// The log of the latest start.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("run{}.log", self.starts)))
            .unwrap_or_default()
    }

    /// Every log of every start.
    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("run{n}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn cursor_saved(&self) -> bool {
        self.dir.join("data/cursor/homeassistant.json").exists()
    }
}

impl Drop for Ingestor {
    /// A failed test must not leave its processes running.
    fn drop(&mut self) {
        self.kill();
    }
}

/// State points (not `ha_events`), by (measurement, entity_id tag, time).
async fn state_rows(influx: &Influxd) -> Rows {
    all_rows(influx)
        .await
        .into_iter()
        .filter(|((m, _, _), _)| m != "ha_events")
        .collect()
}

/// Waits until `sim` has made `more` changes beyond now.
async fn changes(sim: &SimulatorHandle, more: usize) {
    let target = sim.state_changes().len() + more;
    wait_for("state changes", WAIT, || async {
        (sim.state_changes().len() >= target).then_some(())
    })
    .await;
}

/// Waits until the latest start of `ingestor` logged a filled gap.
async fn backfilled(ingestor: &Ingestor) {
    wait_for("the gap backfilled", WAIT, || async {
        ingestor
            .log()
            .contains("Gap backfilled from Home Assistant's history.")
            .then_some(())
    })
    .await;
}

/// Waits for `ingestor`'s first points; returns the time of its first one: the
/// changes from then on are all its to write (it subscribed before it).
async fn started(influx: &Influxd, ingestor: &Ingestor) -> i64 {
    wait_for("points written", WAIT, || async {
        let rows = state_rows(influx).await;
        (rows.len() >= 50 && ingestor.cursor_saved())
            .then(|| rows.keys().map(|(_, _, t)| *t).min())
            .flatten()
    })
    .await
}

/// Stops the simulator, waits for both databases to settle and compares them
/// point for point, field for field, from `since` on (the disturbed run's first
/// point; rows of `skip_tag` apart); returns the rows.
async fn assert_same_databases(
    sim: &SimulatorHandle,
    reference: &Influxd,
    disturbed: &Influxd,
    since: i64,
    skip_tag: Option<&str>,
) -> (Rows, Rows) {
    sim.stop_generating();
    let made = sim.state_changes();
    let expected = made.iter().filter(|s| is_written(s)).count();
    let kept = |rows: &Rows| -> BTreeMap<(String, String, i64), BTreeMap<String, Value>> {
        rows.iter()
            .filter(|((_, tag, t), _)| Some(tag.as_str()) != skip_tag && *t >= since)
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.iter().map(|(f, x)| (f.clone(), x.clone())).collect(),
                )
            })
            .collect()
    };
    wait_for("the reference has every change", WAIT, || async {
        (state_rows(reference).await.len() >= expected).then_some(())
    })
    .await;
    let want = kept(&state_rows(reference).await);
    // Caught up, or the comparison below says what is missing.
    let deadline = tokio::time::Instant::now() + WAIT;
    while kept(&state_rows(disturbed).await).len() < want.len()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reference_rows = state_rows(reference).await;
    let disturbed_rows = state_rows(disturbed).await;
    let got = kept(&disturbed_rows);
    assert_eq!(
        reference_rows.len(),
        expected,
        "the reference holds one point per state change"
    );
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "points differ: missing {missing:?}, extra {extra:?}"
    );
    let mut differ = want
        .iter()
        .filter(|(k, fields)| got.get(*k) != Some(fields))
        .map(|(k, fields)| (k, fields, got.get(k)));
    if let Some((key, want_fields, got_fields)) = differ.next() {
        panic!(
            "{} points differ in their fields; first {key:?}:\n reference {want_fields:?}\n disturbed {got_fields:?}",
            1 + differ.count()
        );
    }
    (reference_rows, disturbed_rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_point_the_ingestor_writes_what_an_undisturbed_one_writes() {
    let sim = simulator(31, &[EXCLUDED]).await;
    let reference_db = Influxd::start("reference").await;
    let killed_db = Influxd::start("killed").await;
    let root = tempfile::tempdir().expect("tempdir");
    let mut reference = Ingestor::new(root.path(), "reference", &sim.url(), &reference_db);
    let mut killed = Ingestor::new(root.path(), "killed", &sim.url(), &killed_db);
    // The simulator changes states only while someone is subscribed until told
    // otherwise: the reference writes every change from its first on.
    reference.start();
    started(&reference_db, &reference).await;
    sim.keep_running_while_disconnected(true);
    killed.start();
    let since = started(&killed_db, &killed).await;

    // 1. In the middle of a steady stream.
    killed.kill();
    changes(&sim, 300).await;
    // 2. Within a second of its reconnect: subscribed, waiting for the recorder's commit.
    let subscribed = sim.commands_received("subscribe_events");
    killed.start();
    wait_for("resubscribed", WAIT, || async {
        (sim.commands_received("subscribe_events") > subscribed).then_some(())
    })
    .await;
    killed.kill();
    changes(&sim, 200).await;
    // 3. During a backfill: its history requests have begun.
    let asked = sim.commands_received("history/history_during_period");
    killed.start();
    wait_for("backfill begun", WAIT, || async {
        (sim.commands_received("history/history_during_period") > asked).then_some(())
    })
    .await;
    killed.kill();
    changes(&sim, 200).await;
    // Then it runs undisturbed: the gap since the first kill's cursor is filled.
    killed.start();
    backfilled(&killed).await;
    changes(&sim, 300).await;

    let (reference_rows, killed_rows) =
        assert_same_databases(&sim, &reference_db, &killed_db, since, Some(EXCLUDED_TAG)).await;
    // The excluded entity: what the recorder does not keep cannot be backfilled, and it is said.
    let excluded = |rows: &Rows| {
        rows.keys()
            .filter(|(_, tag, _)| tag == EXCLUDED_TAG)
            .count()
    };
    assert!(
        excluded(&killed_rows) < excluded(&reference_rows),
        "changes of an entity the recorder excludes cannot be backfilled"
    );
    let logs = killed.logs();
    assert!(
        logs.contains("keeps no history of them") && logs.contains(EXCLUDED),
        "the unrecorded entity is reported"
    );
    assert!(
        logs.contains("attributes_restored"),
        "the filled gap reports restored attributes"
    );
    killed.stop().await;
    reference.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_leaves_what_an_undisturbed_ingestor_writes() {
    let sim = simulator(32, &[]).await;
    let reference_db = Influxd::start("reference").await;
    let dropped_db = Influxd::start("dropped").await;
    let root = tempfile::tempdir().expect("tempdir");
    let mut reference = Ingestor::new(root.path(), "reference", &sim.url(), &reference_db);
    let mut dropped = Ingestor::new(root.path(), "dropped", &sim.url(), &dropped_db);
    // The simulator changes states only while someone is subscribed until told
    // otherwise: the reference writes every change from its first on.
    reference.start();
    started(&reference_db, &reference).await;
    sim.keep_running_while_disconnected(true);
    dropped.start();
    let since = started(&dropped_db, &dropped).await;

    // Only the newest connection goes, and cannot come back for a while; the reference stays.
    sim.refuse_connections(true);
    assert!(sim.disconnect_latest());
    changes(&sim, 300).await;
    sim.refuse_connections(false);
    backfilled(&dropped).await;
    changes(&sim, 300).await;

    assert_same_databases(&sim, &reference_db, &dropped_db, since, None).await;
    dropped.stop().await;
    reference.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_influxdb_outage_with_a_kill_inside_leaves_what_an_undisturbed_ingestor_writes() {
    let sim = simulator(33, &[]).await;
    let reference_db = Influxd::start("reference").await;
    let mut outage_db = Influxd::start("outage").await;
    let root = tempfile::tempdir().expect("tempdir");
    let mut reference = Ingestor::new(root.path(), "reference", &sim.url(), &reference_db);
    let mut victim = Ingestor::new(root.path(), "outage", &sim.url(), &outage_db);
    // The simulator changes states only while someone is subscribed until told
    // otherwise: the reference writes every change from its first on.
    reference.start();
    started(&reference_db, &reference).await;
    sim.keep_running_while_disconnected(true);
    victim.start();
    let since = started(&outage_db, &victim).await;

    // InfluxDB goes; the ingestor keeps buffering, is killed, restarts, fills its gap into the buffer.
    outage_db.stop();
    changes(&sim, 200).await;
    victim.kill();
    changes(&sim, 200).await;
    victim.start();
    backfilled(&victim).await;
    changes(&sim, 100).await;
    outage_db.restart().await;
    changes(&sim, 200).await;

    assert_same_databases(&sim, &reference_db, &outage_db, since, None).await;
    victim.stop().await;
    reference.stop().await;
    sim.shutdown().await;
}
