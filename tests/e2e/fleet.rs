//! Resharding a fleet, end to end: nine simulated homes listed once in a folder
//! of home files, run by two `ha-ingestor run` replicas (`shard.count = 2`, each
//! with its own data directory, the index from a StatefulSet-style `HOSTNAME`),
//! writing to one real `influxd`. Both stop; the homes keep changing; three
//! replicas start (`count = 3`: 0 and 1 keep their data directories, 2 is new).
//! In each phase every home is run by exactly one replica (`/api/stats`); the
//! homes that moved went to the new replica and resumed from the store's last
//! point of them (their old cursor is on another volume), the others from their
//! cursor; and at the end every home's points in InfluxDB are exactly the
//! simulator's state changes of that home, value for value: no gap, no extra.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ha_ingestor::config::shard_of;
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use serde_json::Value;
use support::ha_schema::{assert_state_point, instance_rows, is_written, state_key};
use support::{Influxd, Running, wait_for};

const HOMES: usize = 9;
const WAIT: Duration = Duration::from_secs(60);

fn home_name(i: usize) -> String {
    format!("home-{i}")
}

/// One replica: its data directory (kept across phases), config and log per start.
struct Replica {
    index: u32,
    dir: PathBuf,
    port: u16,
    run: Option<Running>,
}

impl Replica {
    /// Starts `ha-ingestor run` as pod `ha-ingestor-<index>` of a StatefulSet of `count`.
    fn start(root: &Path, index: u32, count: u32, homes_dir: &Path, influx: &Influxd) -> Self {
        let dir = root.join(format!("replica-{index}"));
        std::fs::create_dir_all(&dir).expect("replica dir");
        let port = free_port();
        let config = dir.join(format!("run-{count}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\nhomes_dir = {homes_dir:?}\n\
                 [shard]\ncount = {count}\n\
                 [influxdb]\nurl = \"{url}\"\ndatabase = \"{db}\"\nflush_interval = \"100ms\"\n\
                 [buffer]\nfsync_interval = \"100ms\"\n\
                 [monitor]\nlisten = \"127.0.0.1:{port}\"\n",
                data = dir.join("data"),
                url = influx.url(),
                db = influx.database(),
            ),
        )
        .expect("config");
        let run = Running::launch(&config)
            .log(dir.join(format!("run-{count}.log")))
            // The shard index comes from the pod's name, as in a StatefulSet.
            .env("HOSTNAME", format!("ha-ingestor-{index}"))
            .spawn();
        Replica {
            index,
            dir,
            port,
            run: Some(run),
        }
    }

    /// `fleet` of `/api/stats`, once the monitor answers and every owned home recorded where it resumed from.
    async fn fleet(&self) -> Value {
        let url = format!("http://127.0.0.1:{}/api/stats", self.port);
        wait_for(
            &format!("replica {}'s /api/stats", self.index),
            WAIT,
            || async {
                let reply = reqwest::get(&url).await.ok()?;
                let stats: Value = serde_json::from_str(&reply.text().await.ok()?).ok()?;
                let fleet = stats.get("fleet")?.clone();
                let owned = fleet["homes_owned"].as_array()?.len();
                (fleet["resumed_from"].as_object()?.len() == owned).then_some(fleet)
            },
        )
        .await
    }

    /// The log of the start with `count` replicas, without terminal colours.
    fn log(&self, count: u32) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("run-{count}.log"))).unwrap_or_default();
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // An SGR sequence: ESC [ … m.
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
    }

    async fn stop(&mut self) {
        if let Some(mut run) = self.run.take() {
            let exit = run.stop().await;
            assert!(exit.success(), "replica {} exited with {exit}", self.index);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Owner of every home by replica index, checking that no home has two and every home one.
async fn owners(replicas: &[Replica]) -> (BTreeMap<String, u32>, BTreeMap<String, String>) {
    let mut owner = BTreeMap::new();
    let mut resumed = BTreeMap::new();
    for r in replicas {
        let fleet = r.fleet().await;
        assert_eq!(fleet["homes_total"], HOMES, "{fleet}");
        assert_eq!(fleet["shard_index"], r.index, "{fleet}");
        for home in fleet["homes_owned"].as_array().expect("homes_owned") {
            let home = home.as_str().expect("name").to_string();
            if let Some(other) = owner.insert(home.clone(), r.index) {
                panic!("{home} is run by replicas {other} and {}", r.index);
            }
            let from = fleet["resumed_from"][&home].as_str().expect("resumed_from");
            resumed.insert(home, from.to_string());
        }
    }
    let all: BTreeSet<String> = (0..HOMES).map(home_name).collect();
    assert_eq!(
        owner.keys().cloned().collect::<BTreeSet<_>>(),
        all,
        "every home is run by one replica"
    );
    (owner, resumed)
}

/// Waits until every home has `more` changes beyond now.
async fn changes(sims: &[SimulatorHandle], more: usize) {
    let targets: Vec<usize> = sims
        .iter()
        .map(|s| s.state_changes().len() + more)
        .collect();
    wait_for("state changes in every home", WAIT, || async {
        sims.iter()
            .zip(&targets)
            .all(|(s, t)| s.state_changes().len() >= *t)
            .then_some(())
    })
    .await;
}

/// Waits until every home sent `more` live events beyond now.
async fn live(sims: &[SimulatorHandle], more: u64) {
    let targets: Vec<u64> = sims.iter().map(|s| s.emitted_count() + more).collect();
    wait_for("live events in every home", WAIT, || async {
        sims.iter()
            .zip(&targets)
            .all(|(s, t)| s.emitted_count() >= *t)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_become_three_and_every_home_is_whole_in_influxdb() {
    // The names are fixed, so which homes move is known before the run: some must.
    let moving: Vec<String> = (0..HOMES)
        .map(home_name)
        .filter(|h| shard_of(h, 2) != shard_of(h, 3))
        .collect();
    assert!(
        !moving.is_empty(),
        "no home moves from 2 to 3 replicas: pick other names"
    );

    let influx = Influxd::start("fleet").await;
    let root = tempfile::tempdir().expect("tempdir");
    let homes_dir = root.path().join("homes.d");
    std::fs::create_dir_all(&homes_dir).expect("homes dir");
    let mut sims = Vec::new();
    for i in 0..HOMES {
        let token = format!("fleet-token-{i}");
        let sim = Simulator::start(
            SimulatorConfig {
                entities: 6,
                rate: 20.0,
                token: token.clone(),
                seed: 100 + i as u64,
                // A quick recorder, so a gap's end is committed soon.
                recorder_commit_interval: Duration::from_millis(200),
                ..SimulatorConfig::default()
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("simulator starts");
        // One file per home; the changes before the first connection are not part of the record.
        std::fs::write(
            homes_dir.join(format!("{}.toml", home_name(i))),
            format!(
                "url = \"{}\"\ntoken = \"{token}\"\ninitial_snapshot = false\n\
                 reconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n",
                sim.url()
            ),
        )
        .expect("home file");
        sims.push(sim);
    }

    // Phase 1: two replicas.
    let mut two: Vec<Replica> = (0..2)
        .map(|i| Replica::start(root.path(), i, 2, &homes_dir, &influx))
        .collect();
    let (before, resumed) = owners(&two).await;
    assert!(
        resumed.values().all(|r| r == "none"),
        "a first start has nothing to resume from: {resumed:?}"
    );
    live(&sims, 40).await;
    // Every home's cursor is saved by its owner before the replicas stop.
    wait_for("every home's cursor saved", WAIT, || async {
        before
            .iter()
            .all(|(home, r)| {
                two[*r as usize]
                    .dir
                    .join(format!("data/cursor/{home}.json"))
                    .exists()
            })
            .then_some(())
    })
    .await;
    for sim in &sims {
        sim.keep_running_while_disconnected(true);
    }
    for r in &mut two {
        r.stop().await;
    }
    // The homes go on changing while no replica runs.
    changes(&sims, 20).await;

    // Phase 2: three replicas; 0 and 1 keep their data, 2 is new.
    let mut three: Vec<Replica> = (0..3)
        .map(|i| Replica::start(root.path(), i, 3, &homes_dir, &influx))
        .collect();
    let (after, resumed) = owners(&three).await;
    let moved: Vec<String> = after
        .iter()
        .filter(|(home, r)| before[*home] != **r)
        .map(|(home, _)| home.clone())
        .collect();
    assert_eq!(
        moved, moving,
        "the homes that moved are those the hash moves"
    );
    for (home, r) in &after {
        if moved.contains(home) {
            assert_eq!(*r, 2, "{home} moved, but not to the new replica");
            assert_eq!(
                resumed[home], "store",
                "{home} moved: its new owner resumes from the store"
            );
        } else {
            assert_eq!(
                resumed[home], "cursor",
                "{home} stayed: it resumes from its cursor"
            );
        }
    }
    let log = three[2].log(3);
    for home in &moved {
        assert!(
            log.lines().any(
                |l| l.contains("Resuming from the store's last point of this home.")
                    && l.contains(&format!("source={home} "))
            ),
            "replica 2's log says {home} resumed from the store:\n{log}"
        );
    }
    // Every gap is filled and live events flow again in every home.
    live(&sims, 40).await;
    for sim in &sims {
        sim.stop_generating();
    }

    // Every home's points are exactly its state changes, value for value.
    for (i, sim) in sims.iter().enumerate() {
        let home = home_name(i);
        let made: Vec<_> = sim.state_changes().into_iter().filter(is_written).collect();
        let states = |rows: &support::ha_schema::Rows| {
            rows.keys().filter(|(m, _, _)| m != "ha_events").count()
        };
        wait_for(
            &format!("every change of {home} in InfluxDB"),
            WAIT,
            || async { (states(&instance_rows(&influx, &home).await) >= made.len()).then_some(()) },
        )
        .await;
        let rows = instance_rows(&influx, &home).await;
        for state in &made {
            assert_state_point(&rows, state);
        }
        let keys: HashSet<_> = made.iter().map(state_key).collect();
        let extra: Vec<_> = rows
            .keys()
            .filter(|k| k.0 != "ha_events" && !keys.contains(*k))
            .take(5)
            .collect();
        assert!(extra.is_empty(), "{home}: points no change made: {extra:?}");
        assert_eq!(states(&rows), made.len(), "{home}: points vs changes");
        assert!(
            made.len() >= 60,
            "{home}: too few changes to prove anything"
        );
    }
    for r in &mut three {
        r.stop().await;
    }
    for sim in sims {
        sim.shutdown().await;
    }
}
