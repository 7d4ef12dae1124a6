//! What the install routes rely on, as the binary does it: `--version` with the git
//! commit, shell completions and the man page, `health` (the image's HEALTHCHECK),
//! systemd's `READY=1`/`STOPPING=1` on a real datagram socket, and `run` inside a Home
//! Assistant add-on (`SUPERVISOR_TOKEN`, no `[homeassistant]` URL) reaching Home
//! Assistant through the Supervisor's proxy, with the simulator standing in for it.

use crate::support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use support::{Running, wait_for};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
}

fn stdout_of(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("ha-ingestor runs");
    assert!(
        out.status.success(),
        "ha-ingestor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let version = stdout_of(&["--version"]);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    assert!(head.status.success(), "the tests run in a git checkout");
    let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(
        version.trim(),
        format!(
            "ha-ingestor {} (commit {commit})",
            env!("CARGO_PKG_VERSION")
        )
    );
    // Subcommands show the same.
    let run = stdout_of(&["run", "--version"]);
    assert!(run.ends_with(&format!("(commit {commit})\n")), "{run}");
}

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    let bash = stdout_of(&["completions", "bash"]);
    for sub in [
        "run", "check", "replay", "schema", "alerts", "addon", "health", "man",
    ] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(bash.contains("complete -F _ha__ingestor"), "{bash}");
    // The script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ha-ingestor.bash");
    std::fs::write(&script, &bash).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // And it completes: the words offered after `ha-ingestor ` are the subcommands.
    let offered = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(ha-ingestor ''); COMP_CWORD=1; COMP_LINE='ha-ingestor '; COMP_POINT=12; _ha__ingestor ha-ingestor '' ha-ingestor; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&offered.stdout);
    for sub in ["run", "demo", "check", "alerts", "completions", "man"] {
        assert!(
            offered.lines().any(|w| w == sub),
            "bash offers {offered:?}, not {sub}"
        );
    }
    assert!(stdout_of(&["completions", "zsh"]).starts_with("#compdef ha-ingestor"));
    assert!(stdout_of(&["completions", "fish"]).contains("complete -c ha-ingestor"));
    let refused = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_describes_the_commands_and_writes_one_page_per_subcommand() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH ha-ingestor 1"), "{page}");
    assert!(page.contains(env!("CARGO_PKG_VERSION")), "{page}");
    for sub in ["run", "check", "addon", "health"] {
        assert!(page.contains(sub), "the page lacks {sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "ha-ingestor.1",
        "ha-ingestor-run.1",
        "ha-ingestor-schema-plan.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name} is not a man page");
    }
    let run = std::fs::read_to_string(dir.path().join("ha-ingestor-run.1")).unwrap();
    assert!(run.contains("config"), "the run page names --config: {run}");
}

/// `run` under systemd (`Type=notify`): `READY=1` on `$NOTIFY_SOCKET` once started —
/// by then `health` finds `/health` answering — and `STOPPING=1` on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifies_systemd_and_health_reads_its_monitor() {
    ha_ingestor::ensure_crypto_provider();
    let sim = Simulator::start(
        SimulatorConfig {
            token: "notify-test".into(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"{}\"\ntoken = \"notify-test\"\n[monitor]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data"),
            sim.url()
        ),
    )
    .unwrap();
    let mut run = Running::launch(&config)
        .json()
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn();

    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf))
        .await
        .expect("a notification within 30 s")
        .unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first notification: {ready:?}"
    );

    let listening = run.log_lines("Monitor listening.");
    let addr: SocketAddr = listening
        .first()
        .and_then(|l| l["addr"].as_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the monitor's address in the log: {listening:?}"));
    let health = bin()
        .args(["health", "--addr", &addr.to_string()])
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "health against a running service: {}",
        String::from_utf8_lossy(&health.stderr)
    );
    // A path the monitor does not serve is not healthy.
    let missing = bin()
        .args(["health", "--addr", &addr.to_string(), "--path", "/nothing"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    let status = run.stop().await;
    assert!(status.success(), "run exits 0 on SIGTERM: {status}");
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("a notification on stop")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");

    // Nothing listens there any more: unhealthy, with the reason.
    let down = bin()
        .args(["health", "--addr", &addr.to_string(), "--timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&down.stderr).is_empty());
    sim.shutdown().await;
}

/// Inside an add-on: no `[homeassistant]` in the config, `SUPERVISOR_TOKEN` set. `run`
/// connects to `<SUPERVISOR_API>/core/websocket` (the simulator stands in for the
/// Supervisor's proxy) with that token, and the events arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_inside_an_addon_reaches_home_assistant_through_the_supervisor() {
    ha_ingestor::ensure_crypto_provider();
    let token = "a1b2c3d4e5f6".repeat(9);
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 10,
            rate: 200.0,
            token: token.clone(),
            max_events: Some(100),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!("data_dir = {data:?}\n[monitor]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut run = Running::launch(&config)
        .json()
        .env("SUPERVISOR_TOKEN", &token)
        .env("SUPERVISOR_API", format!("http://{}", sim.addr()))
        .spawn();

    let connected = wait_for(
        "the connection through the Supervisor's proxy",
        Duration::from_secs(30),
        || async {
            run.log_lines("Connected to Home Assistant and subscribed.")
                .pop()
        },
    )
    .await;
    assert_eq!(
        connected["url"],
        format!("ws://{}/core/websocket", sim.addr()),
        "{connected}"
    );
    assert_eq!(
        sim.auth_failures(),
        0,
        "the Supervisor's token was accepted"
    );
    assert!(sim.auth_attempts() >= 1);
    wait_for(
        "the simulator to finish",
        Duration::from_secs(30),
        || async { sim.finished().then_some(()) },
    )
    .await;
    let points = data.join("points");
    wait_for("points in the files", Duration::from_secs(30), || async {
        let lines: usize = std::fs::read_dir(&points)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .count()
            })
            .sum();
        (lines > 0).then_some(())
    })
    .await;
    let status = run.stop().await;
    assert!(status.success(), "{status}");
    let text = run.log();
    assert!(
        !text.contains(&token),
        "the Supervisor's token is never logged"
    );
    sim.shutdown().await;
}

/// Outside an add-on a `[homeassistant]` without `url` is a config error naming the key.
#[test]
fn a_source_without_url_outside_an_addon_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[homeassistant]\ntoken = \"t\"\n").unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env_remove("SUPERVISOR_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("homeassistant.url") || stdout.contains("homeassistant.url"),
        "{stdout}\n{stderr}"
    );
}
