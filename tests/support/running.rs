//! `ha-ingestor run` as a child process, the way the e2e tests start, watch and stop it.
//!
//! ```ignore
//! let mut run = Running::start(&config); // log: <config's folder>/<config's stem>.log
//! run.wait_log("Started.", WAIT).await;
//! run.signal(libc::SIGHUP);
//! let status = run.stop().await; // SIGTERM, then the exit within STOP_DEADLINE
//! assert!(status.success(), "{}", run.log());
//! ```
//!
//! Every wait has a deadline and fails with the log so far; a wait for a log line also
//! fails at once when the process has exited. The process is killed when the guard is
//! dropped (a failing test leaves nothing running).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`Running::stop`] waits for the exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// How `ha-ingestor run` is started: made by [`Running::launch`], started by [`Launch::spawn`].
pub struct Launch {
    config: PathBuf,
    log: PathBuf,
    json: bool,
    env: Vec<(OsString, OsString)>,
    umask: Option<libc::mode_t>,
}

impl Launch {
    /// Logs to `log` instead of `<config's stem>.log` beside the config.
    pub fn log(mut self, log: impl Into<PathBuf>) -> Launch {
        self.log = log.into();
        self
    }

    /// JSON log lines (`--log-format json`), for [`Running::log_lines`].
    pub fn json(mut self) -> Launch {
        self.json = true;
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the process with this umask (a service manager's, rather than the test's).
    pub fn umask(mut self, mask: libc::mode_t) -> Launch {
        self.umask = Some(mask);
        self
    }

    /// Starts the process.
    pub fn spawn(self) -> Running {
        let log_file = std::fs::File::create(&self.log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", self.log.display()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
        if self.json {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(mask) = self.umask {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: umask(2) is async-signal-safe and touches no memory; it only sets the child's mask.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("ha-ingestor starts");
        Running {
            child,
            log: self.log,
            exit: None,
        }
    }
}

/// A running `ha-ingestor run`; killed on drop unless it has exited.
pub struct Running {
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Running {
    /// Starts `ha-ingestor run --config CONFIG` with the defaults of [`Running::launch`].
    pub fn start(config: &Path) -> Running {
        Running::launch(config).spawn()
    }

    /// How to start `ha-ingestor run --config CONFIG`; by default human logs to
    /// `<config's stem>.log` beside the config, the test's environment and umask.
    pub fn launch(config: &Path) -> Launch {
        let stem = config.file_stem().unwrap_or_default().to_string_lossy();
        Launch {
            config: config.to_path_buf(),
            log: config.with_file_name(format!("{stem}.log")),
            json: false,
            env: Vec::new(),
            umask: None,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines so far (with [`Launch::json`]) whose `message` is `message`.
    pub fn log_lines(&self, message: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Waits until the log contains `text`; fails with the log after `within`, or as soon
    /// as the process has exited without writing it.
    pub async fn wait_log(&mut self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.log().contains(text) {
                return;
            }
            if let Some(status) = self.exited() {
                // It may have written the line just before it exited.
                let log = self.log();
                assert!(
                    log.contains(text),
                    "run exited ({status}) without logging {text:?}:\n{log}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `GET URL` (`/health`, `/ready` of its monitor) answers 2xx; fails with the
    /// log after `within` or as soon as the process has exited.
    pub async fn wait_http(&mut self, url: &str, within: Duration) {
        let client = super::influxd::http_client();
        let deadline = Instant::now() + within;
        loop {
            let reply = client.get(url).timeout(Duration::from_secs(2)).send().await;
            if reply.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "run exited ({status}) before {url} answered:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGHUP`, …) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) only sends a signal to our own child, which has not been reaped.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            sent,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// The exit status, once the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits for the exit; fails with the log after `within` (the process is then killed by the drop).
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {within:?} after it was asked to stop:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops it as a service manager does (SIGTERM) and waits up to [`STOP_DEADLINE`] for the exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(STOP_DEADLINE).await
    }

    /// Kills it (SIGKILL) and reaps it: a crash.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            self.child.kill().expect("SIGKILL");
            self.exit = Some(self.child.wait().expect("reaped"));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
