//! Signals while `ha-ingestor run` starts: a SIGTERM stops it cleanly (exit 0, "Stopped.",
//! nothing lost), a SIGHUP is a reload once started — never the signal's default action,
//! which ends the process on the spot.
//!
//! Start-up is held, deterministically, at a real wait it has: it reads
//! `[influxdb.tls] ca_file` after the monitor answers `/health`, and here that file is a
//! named pipe, so the read waits until the test writes the certificate.

use crate::support;

use std::ffi::CString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::Duration;

use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use support::{Running, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A `run` held in start-up on its CA file, with the simulator as Home Assistant.
struct Held {
    run: Running,
    /// The pipe's write end: start-up goes on once it is written and closed.
    pipe: std::fs::File,
    sim: SimulatorHandle,
    _dir: tempfile::TempDir,
}

/// Starts `run` and returns once it is held: `/health` answers and it waits on the CA file.
async fn start_held() -> Held {
    let sim = Simulator::start(
        SimulatorConfig {
            token: "t".into(),
            max_events: Some(0),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("ca.pem");
    let c_path = CString::new(fifo.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: mkfifo(3) only creates the named pipe at a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let config = dir.path().join("run.toml");
    // Nothing listens on port 9 (discard): no point is written, none is due.
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"{}\"\ntoken = \"t\"\n[monitor]\nlisten = \"127.0.0.1:0\"\n\
             [influxdb]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"held\"\n[influxdb.tls]\nca_file = {fifo:?}\n",
            dir.path().join("data"),
            sim.url()
        ),
    )
    .expect("config");
    let mut run = Running::launch(&config).json().spawn();
    run.wait_log("Monitor listening.", WAIT).await;
    let addr = run.log_lines("Monitor listening.")[0]["addr"]
        .as_str()
        .expect("the monitor's address")
        .to_string();
    run.wait_http(&format!("http://{addr}/health"), WAIT).await;
    // The write end opens (without blocking) only once the process has the pipe open to
    // read; kept open, it holds the process in its read.
    let pipe = wait_for("run to read its CA file", WAIT, || {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        async move { opened.ok() }
    })
    .await;
    assert!(
        run.log_lines("Started.").is_empty() && run.exited().is_none(),
        "not held in start-up:\n{}",
        run.log()
    );
    Held {
        run,
        pipe,
        sim,
        _dir: dir,
    }
}

/// Lets start-up go on: writes a certificate into the pipe and closes it.
fn release(mut pipe: std::fs::File) {
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a certificate")
        .cert
        .pem();
    // After a default action the reader is gone: the write fails and the exit status tells.
    let _ = pipe.write_all(ca.as_bytes());
}

/// No ERROR line, and the final totals lost nothing.
fn assert_clean_stop(run: &Running) {
    let log = run.log();
    let stopped = run.log_lines("Stopped.");
    assert_eq!(stopped.len(), 1, "one Stopped line:\n{log}");
    assert_eq!(stopped[0]["dropped"], 0, "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_stops_cleanly() {
    let Held {
        mut run,
        pipe,
        sim,
        _dir,
    } = start_held().await;
    run.signal(libc::SIGTERM);
    release(pipe);
    let status = run.wait_exit(WAIT).await;
    assert!(
        status.success(),
        "a SIGTERM during start-up ended run with {status}:\n{}",
        run.log()
    );
    assert_clean_stop(&run);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_start_up_is_a_reload_once_started() {
    let Held {
        mut run,
        pipe,
        sim,
        _dir,
    } = start_held().await;
    run.signal(libc::SIGHUP);
    release(pipe);
    run.wait_log("SIGHUP: reloading the configuration.", WAIT)
        .await;
    assert!(
        run.exited().is_none() && !run.log_lines("Started.").is_empty(),
        "not running after a SIGHUP during start-up:\n{}",
        run.log()
    );
    let status = run.stop().await;
    assert!(status.success(), "run exited with {status}:\n{}", run.log());
    assert_clean_stop(&run);
    sim.shutdown().await;
}
