//! The audit log: every command that changes stored data or the running configuration
//! (`buffer drain`, `replay`, `schema migrate`, `retention apply`, a SIGHUP reload) leaves
//! JSON lines in `<data_dir>/audit.log` (mode 0600) naming who, what, where and how it
//! ended; a command whose audit log cannot be opened refuses to act.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ha_ingestor::config::BufferConfig;
use ha_ingestor::encode::Chunk;
use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use ha_ingestor::sink::buffer::Buffer;
use serde_json::Value;
use support::{Influxd, Running, audit_lines, wait_for};

fn ingestor(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run ha-ingestor")
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Who, when and the result of every line are there and well-formed.
fn assert_who_and_when(lines: &[Value]) {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    for line in lines {
        assert_eq!(line["uid"], uid, "{line}");
        assert!(line.get("user").is_some(), "{line}");
        let time = line["time"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'),
            "{line}"
        );
        assert!(
            matches!(line["result"].as_str(), Some("ok" | "error")),
            "{line}"
        );
    }
}

fn fill_buffer(data: &Path) {
    let (buffer, _) = Buffer::open(&data.join("buffer"), &BufferConfig::default()).expect("buffer");
    let text =
        "m,entity_id=a value=1 1700000000000000000\nm,entity_id=b value=2 1700000000000000001\n";
    buffer
        .append(&Chunk {
            lines: text.to_string(),
            points: 2,
            seq: None,
            marks: Default::default(),
        })
        .expect("append");
}

#[test]
fn buffer_drain_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("data_dir = {data:?}\n")).expect("config");
    fill_buffer(&data);
    ok(&ingestor(
        &["buffer", "drain", "--config", config.to_str().unwrap()],
        dir.path(),
    ));
    let lines = audit_lines(&data);
    assert_who_and_when(&lines);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["action"], "buffer drain");
    assert_eq!(line["result"], "ok");
    assert_eq!(line["what"]["points_written"], 2);
    assert_eq!(line["what"]["records_left"], 0);
    let target = line["target"].as_str().unwrap_or_default();
    assert!(
        target.contains("buffer") && target.contains("points"),
        "{target}"
    );
}

#[test]
fn a_drain_that_cannot_be_audited_does_not_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("data_dir = {data:?}\n")).expect("config");
    fill_buffer(&data);
    // A folder where the log should be: it cannot be opened for appending.
    std::fs::create_dir(data.join("audit.log")).expect("blocker");
    let out = ingestor(
        &["buffer", "drain", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("audit log"), "{stderr}");
    let inspect = ok(&ingestor(
        &["buffer", "inspect", "--config", config.to_str().unwrap()],
        dir.path(),
    ));
    assert!(inspect.contains("1 records, 2 points"), "{inspect}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_audited_per_file() {
    let influx = Influxd::start("replayed").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let points = dir.path().join("points");
    std::fs::create_dir(&points).expect("points");
    std::fs::write(
        points.join("points-a.lp"),
        "m,e=a value=1 1700000000000000000\n",
    )
    .expect("a");
    std::fs::write(
        points.join("points-b.lp"),
        "m,e=b value=2 1700000000000000000\nm,e=b value=3 1700000000000000001\n",
    )
    .expect("b");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[influxdb]\nurl = \"{}\"\ndatabase = \"replayed\"\n",
            influx.url()
        ),
    )
    .expect("config");
    let (config_s, points_s) = (config.display().to_string(), points.display().to_string());
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        ingestor(
            &["replay", "--to-config", &config_s, "--from", &points_s],
            &cwd,
        )
    })
    .await
    .expect("join");
    ok(&out);
    let lines = audit_lines(&data);
    assert_who_and_when(&lines);
    let mut per_file: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["action"], "replay", "{l}");
            assert_eq!(l["result"], "ok", "{l}");
            assert!(
                l["target"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with(" replayed"),
                "{l}"
            );
            let file = l["what"]["file"].as_str().unwrap_or_default();
            let name = Path::new(file).file_name().unwrap_or_default();
            (
                name.to_string_lossy().into_owned(),
                l["what"]["points"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    per_file.sort();
    assert_eq!(
        per_file,
        [
            ("points-a.lp".to_string(), 1),
            ("points-b.lp".to_string(), 2)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_migrate_is_audited_per_chunk() {
    const DAY: i64 = 86_400_000_000_000;
    let t0 = 1_767_571_200_000_000_000i64;
    let influx = Influxd::start("home_assistant").await;
    // Two points of the `homeassistant` layout a day apart: two one-day chunks.
    let lines = format!(
        "°C,domain=sensor,entity_id=outdoor value=1.5 {t0}\n°C,domain=sensor,entity_id=outdoor value=2.5 {}\n",
        t0 + DAY
    );
    let resp = support::influxd::http_client()
        .post(format!("{}/write?db=home_assistant", influx.url()))
        .body(lines)
        .send()
        .await
        .expect("write");
    assert!(resp.status().is_success(), "{}", resp.status());
    influx.create_database("optimized").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let to_config = dir.path().join("optimized.toml");
    std::fs::write(
        &to_config,
        format!("data_dir = {data:?}\n[schema]\nmode = \"optimized\"\n"),
    )
    .expect("config");
    let (url, to, state, cwd) = (
        influx.url(),
        to_config.display().to_string(),
        dir.path().join("state.json").display().to_string(),
        dir.path().to_path_buf(),
    );
    let out = tokio::task::spawn_blocking(move || {
        ingestor(
            &[
                "schema",
                "migrate",
                "--influx-url",
                &url,
                "--database",
                "home_assistant",
                "--to-database",
                "optimized",
                "--quiet",
                "--to-config",
                &to,
                "--state",
                &state,
            ],
            &cwd,
        )
    })
    .await
    .expect("join");
    ok(&out);
    let lines = audit_lines(&data);
    assert_who_and_when(&lines);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, start) in lines.iter().zip([t0, t0 + DAY]) {
        assert_eq!(line["action"], "schema migrate", "{line}");
        assert_eq!(line["result"], "ok", "{line}");
        assert_eq!(line["what"]["points"], 1, "{line}");
        assert_eq!(
            line["what"]["from"],
            ha_ingestor::event::Timestamp(start).to_rfc3339(),
            "{line}"
        );
        assert!(
            line["target"]
                .as_str()
                .unwrap_or_default()
                .ends_with(" optimized"),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_apply_is_audited_per_statement() {
    let influx = Influxd::start("home_assistant").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("retention.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
[influxdb]
url = "{}"
database = "home_assistant"
[retention]
raw_keep = "30d"
[[retention.downsample]]
name = "everything"
tiers = [{{ every = "1h", keep = "inf" }}]
"#,
            influx.url()
        ),
    )
    .expect("config");
    let (config_s, cwd) = (config.display().to_string(), dir.path().to_path_buf());
    // Without --yes nothing changes and nothing is audited.
    let c = config_s.clone();
    let cwd2 = cwd.clone();
    let out = tokio::task::spawn_blocking(move || {
        ingestor(&["retention", "apply", "--config", &c], &cwd2)
    })
    .await
    .expect("join");
    ok(&out);
    assert!(!data.join("audit.log").exists());
    let out = tokio::task::spawn_blocking(move || {
        ingestor(
            &["retention", "apply", "--yes", "--config", &config_s],
            &cwd,
        )
    })
    .await
    .expect("join");
    let text = ok(&out);
    let lines = audit_lines(&data);
    assert_who_and_when(&lines);
    let statements: Vec<&str> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["action"], "retention apply", "{l}");
            assert_eq!(l["result"], "ok", "{l}");
            assert!(
                l["target"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with(" home_assistant"),
                "{l}"
            );
            l["what"]["statement"].as_str().unwrap_or_default()
        })
        .collect();
    // One line per statement sent: the raw policy altered, a tier policy, its query.
    assert!(text.contains("applied 3 changes"), "{text}");
    assert_eq!(statements.len(), 3, "{statements:?}");
    assert!(
        statements
            .iter()
            .any(|s| s.starts_with("ALTER RETENTION POLICY")),
        "{statements:?}"
    );
    assert!(
        statements
            .iter()
            .any(|s| s.starts_with("CREATE RETENTION POLICY")),
        "{statements:?}"
    );
    assert!(
        statements
            .iter()
            .any(|s| s.starts_with("CREATE CONTINUOUS QUERY")),
        "{statements:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_reload_is_audited_with_the_changed_keys_and_no_secret() {
    let token = "reload-secret-token";
    let sim = Simulator::start(
        SimulatorConfig {
            token: token.into(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("c.toml");
    let write = |level: &str| {
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[log]\nlevel = \"{level}\"\n[homeassistant]\nurl = \"{}\"\ntoken = \"{token}\"\n[monitor]\nenabled = false\n",
                sim.url()
            ),
        )
        .expect("config");
    };
    write("info");
    let mut run = Running::start(&config);
    wait_for(
        "the process to connect",
        Duration::from_secs(20),
        || async { (sim.clients() == 1).then_some(()) },
    )
    .await;
    write("debug");
    run.signal(libc::SIGHUP);
    wait_for("the reload's audit line", Duration::from_secs(20), || {
        let path = data.join("audit.log");
        async move {
            let text = std::fs::read_to_string(&path).ok()?;
            (!text.is_empty()).then_some(())
        }
    })
    .await;
    run.stop().await;
    let lines = audit_lines(&data);
    assert_who_and_when(&lines);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["action"], "reload");
    assert_eq!(lines[0]["result"], "ok");
    assert_eq!(
        lines[0]["what"]["changed"],
        serde_json::json!(["log.level"])
    );
    let text = std::fs::read_to_string(data.join("audit.log")).expect("read");
    assert!(!text.contains(token));
    sim.shutdown().await;
}
