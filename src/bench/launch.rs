//! What the launchers of throw-away servers ([`super::influxd`], [`super::victoria`])
//! share: finding the binary, a fresh folder, starting the child with its output in a
//! log, waiting until it answers, its CPU time, and killing it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Distinguishes the folders one process makes within the same nanosecond.
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// The longest a server may take to answer after it was started.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(60);

/// `explicit` if given, else the first `name` on `PATH`, else `/usr/bin/<name>`.
pub(crate) fn find_binary(name: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(Path::new("/usr/bin").join(name)).filter(|p| p.is_file()))
}

/// Creates a new folder under the temp dir, named after `label`, this process and the time.
pub(crate) fn fresh_dir(label: &str) -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "ha-ingestor-{label}-{}-{nanos}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Starts `cmd` with stdout and stderr appended to `log`; `Err` names what failed.
pub(crate) fn spawn_logged(
    cmd: &mut Command,
    log: &Path,
) -> Result<Child, (String, std::io::Error)> {
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ("creating the log".to_string(), e))?;
    let err = out
        .try_clone()
        .map_err(|e| ("opening the log".to_string(), e))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            (
                format!("starting {}", cmd.get_program().to_string_lossy()),
                e,
            )
        })
}

/// Waits until `GET <url>` answers `status`, at most [`START_DEADLINE`]; `Err` says why
/// (the child exited, or no answer in time) with the end of its log.
pub(crate) async fn wait_answering(
    child: &mut Child,
    client: &reqwest::Client,
    url: &str,
    status: u16,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(format!("exited with {exit}; its log:\n{}", tail(log)));
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().as_u16() == status
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no answer on {url} within {START_DEADLINE:?}; its log:\n{}",
                tail(log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CPU seconds (user + system) `child` has used so far, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(child: Option<&Child>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child?.id())).ok()?;
    crate::monitor::process::cpu_seconds(&stat)
}

/// Kills and reaps the child, if there is one.
pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last 40 lines of a log file, for error messages.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
