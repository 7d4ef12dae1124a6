//! Private data files after a real start: `ha-ingestor run`, started with the common
//! umask 0022 on a data directory an older version left world-readable, makes every
//! kind of data file — the lock, `buffer/buffer.redb`, `points/*.lp` (the file sink),
//! `dead-letter/*` (a bad MQTT payload on the machine's Mosquitto), `cursor/*` (a Home
//! Assistant source on the simulator) and `audit.log` (a SIGHUP reload) — and every
//! folder under `data_dir` is 0700, every file 0600: the old ones tightened at start,
//! the new ones created private (the process umask covers what libraries create).

use crate::support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use support::{Running, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// Every folder and file under `dir` (itself included) with its permission bits; symlinks are not followed.
fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // removed meanwhile (a cursor's temporary file)
        };
        out.push((
            path.clone(),
            meta.is_dir(),
            meta.permissions().mode() & 0o7777,
        ));
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            todo.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out
}

/// Every folder under `dir` is 0700 and every file 0600.
fn assert_private(dir: &Path, when: &str) {
    let wrong: Vec<String> = modes(dir)
        .into_iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(path, is_dir, mode)| {
            format!(
                "{} {} {mode:o}",
                if is_dir { "folder" } else { "file" },
                path.display()
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{when}: not private: {wrong:#?}");
}

/// Writes `text` to `path` with `mode`, creating its folder with 0755, as an older version did.
fn old_file(path: &Path, text: &str, mode: u32) {
    let dir = path.parent().expect("a parent");
    std::fs::create_dir_all(dir).expect("old folder");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod folder");
    std::fs::write(path, text).expect("old file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod file");
}

/// Publishes one message to the machine's Mosquitto (127.0.0.1:1883).
fn publish(topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "1883",
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success(), "mosquitto_pub {topic}");
}

/// The names of the files in `dir` (none when it does not exist).
fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_file_is_private_after_a_start_with_umask_0022() {
    ha_ingestor::ensure_crypto_provider();
    let token = "file-modes-token";
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 10,
            rate: 50.0,
            token: token.into(),
            seed: 18,
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    // What an older version (or another umask) left: 0755/0775 folders, 0644/0664 files.
    old_file(
        &data.join("points/points-2020-01-01T00.lp"),
        "m value=1 1577836800000000000\n",
        0o644,
    );
    old_file(
        &data.join("dead-letter/dead-letter-2020-01-01.jsonl"),
        "{}\n",
        0o644,
    );
    old_file(&data.join("notes/deeper/old.txt"), "old\n", 0o664);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(data.join("notes"), std::fs::Permissions::from_mode(0o775))
        .expect("chmod");
    let before = modes(&data);
    assert!(
        before.iter().any(|(_, d, m)| *d && *m == 0o755)
            && before.iter().any(|(_, d, m)| !*d && *m == 0o644),
        "the old data directory is not world-readable to begin with: {before:?}"
    );

    let topic = format!("ha-ingestor-test/file-modes-{}", std::process::id());
    let config = dir.path().join("run.toml");
    let write_config = |level: &str| {
        std::fs::write(
            &config,
            format!(
                r#"data_dir = {data:?}
[log]
level = "{level}"
[homeassistant]
url = "{ha}"
token = "{token}"
[monitor]
enabled = false
[[mqtt]]
url = "mqtt://127.0.0.1:1883"
client_id = "ha-ingestor-file-modes-{pid}"
clean_session = true
[[mqtt.subscriptions]]
name = "probe"
topic = "{topic}/#"
decoder = "json"
pattern = "{topic}/{{device}}"
"#,
                ha = sim.url(),
                pid = std::process::id(),
            ),
        )
        .expect("config");
    };
    write_config("info");
    // The umask most systems give a service.
    let mut run = Running::launch(&config).umask(0o022).spawn();

    // The cursor (the HA source), the buffer and this hour's points file.
    wait_for("a saved cursor", WAIT, || async {
        (!file_names(&data.join("cursor")).is_empty()).then_some(())
    })
    .await;
    wait_for("the buffer file", WAIT, || async {
        data.join("buffer/buffer.redb").exists().then_some(())
    })
    .await;
    wait_for("a new points file", WAIT, || async {
        (file_names(&data.join("points")).len() >= 2).then_some(())
    })
    .await;
    // A dead letter: publish a bad payload until the MQTT source (once subscribed) sets it aside.
    let dead_letters = data.join("dead-letter");
    let topic_device = format!("{topic}/probe1");
    wait_for("a dead letter of the bad payload", WAIT, || {
        publish(&topic_device, "not json {");
        let dead_letters = dead_letters.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            file_names(&dead_letters)
                .iter()
                .any(|n| !n.starts_with("dead-letter-2020"))
                .then_some(())
        }
    })
    .await;
    // The audit log: a SIGHUP reload with a changed key.
    write_config("debug");
    run.signal(libc::SIGHUP);
    wait_for("the reload's audit line", WAIT, || async {
        std::fs::metadata(data.join("audit.log"))
            .is_ok_and(|m| m.len() > 0)
            .then_some(())
    })
    .await;

    assert_private(&data, "while running");
    let exit = run.stop().await;
    assert!(exit.success(), "run exited with {exit}: {}", run.log());
    // What shutdown writes (the last cursor save, the buffer's commit) is private too.
    assert_private(&data, "after the exit");
    let kinds = modes(&data);
    for expected in [
        ".lock",
        "buffer/buffer.redb",
        "audit.log",
        "notes/deeper/old.txt",
    ] {
        assert!(
            kinds.iter().any(|(p, _, _)| p == &data.join(expected)),
            "{expected} missing"
        );
    }
    for folder in ["cursor", "points", "dead-letter"] {
        assert!(
            !file_names(&data.join(folder)).is_empty(),
            "{folder} is empty"
        );
    }
    assert!(
        run.log().contains("Data directory made private"),
        "the tightening at start is not logged: {}",
        run.log()
    );
    sim.shutdown().await;
}
