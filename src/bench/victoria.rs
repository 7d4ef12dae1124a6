//! A throw-away VictoriaMetrics (`victoria-metrics`, Debian's 1.79): the one launcher the
//! integration tests start it with.
//!
//! ```ignore
//! let vm = Victoria::start(&VictoriaOptions::default()).await?;
//! // … point a `flavor = "victoriametrics"` target at vm.url() …
//! let series = vm.export(r#"{__name__=~".+"}"#).await?;   // every stored sample
//! ```
//!
//! Each server gets a free loopback port (from the same counter as
//! [`super::influxd`]) and a fresh folder under the temp dir, its log captured
//! there; it is killed and the folder removed when the value is dropped. It starts
//! with what makes tests exact and quick:
//!
//! - `-search.latencyOffset=0s` and `-search.disableCache`: a sample is queryable
//!   as soon as VictoriaMetrics has flushed it (about a second), not 30 s later;
//! - `-dedup.minScrapeInterval=1ms`: a point written twice (a retried batch, a
//!   replayed buffer) is one sample, as it is one row in InfluxDB — the setting
//!   docs/stores.md recommends for production too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::influxd::{free_port, http_client};
use super::launch;

/// How long a graceful stop (SIGINT: VictoriaMetrics flushes what it holds) may take before a kill.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// Attempts at a start, each on a fresh port (a probed port can be taken before it binds).
const START_ATTEMPTS: usize = 3;

/// Why a server could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum VictoriaError {
    /// No `victoria-metrics` binary on `PATH` nor at `/usr/bin/victoria-metrics`.
    #[error("victoria-metrics not found on PATH nor at /usr/bin/victoria-metrics")]
    NotFound,
    /// Preparing the server's folder or log failed.
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The process did not come up as a fresh server of ours.
    #[error("{0}")]
    Start(String),
    /// A request failed in transport, or the client could not be built.
    #[error("{0}")]
    Http(String),
    /// The server answered with an error status.
    #[error("{what}: {status} {body}")]
    Status {
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The reply's body.
        body: String,
    },
    /// A reply was not what the API documents.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// How to start a server; the default is a plain HTTP server from `PATH`.
#[derive(Debug, Clone)]
pub struct VictoriaOptions {
    /// The binary; `None` looks on `PATH`, then at `/usr/bin/victoria-metrics`.
    pub binary: Option<PathBuf>,
    /// Basic authentication (`-httpAuth.username` / `-httpAuth.password`), used for every
    /// request made through [`Victoria`].
    pub auth: Option<(String, String)>,
    /// Further command-line flags (`-influx.maxLineSize=…`).
    pub args: Vec<String>,
    /// Timeout of every request made through [`Victoria`].
    pub timeout: Duration,
    /// Part of the folder's name (`ha-ingestor-<label>-<pid>-…` under the temp dir).
    pub label: String,
}

impl Default for VictoriaOptions {
    fn default() -> Self {
        VictoriaOptions {
            binary: None,
            auth: None,
            args: Vec::new(),
            timeout: Duration::from_secs(30),
            label: "victoria".to_string(),
        }
    }
}

/// One series of `/api/v1/export`: its labels (`__name__` included) and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSeries {
    /// Every label, the metric name under `__name__`.
    pub labels: Map<String, Value>,
    /// Sample values (VictoriaMetrics writes `+Inf`/`-Inf`/`NaN` bare; read as such).
    pub values: Vec<f64>,
    /// Sample times in milliseconds.
    pub timestamps: Vec<i64>,
}

/// A running VictoriaMetrics; killed and its folder removed on drop.
pub struct Victoria {
    child: Option<Child>,
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    opts: VictoriaOptions,
    client: reqwest::Client,
}

/// The `victoria-metrics` to run: `explicit` if given, else the first on `PATH`, else `/usr/bin/victoria-metrics`.
pub fn victoria_binary(explicit: Option<&Path>) -> Result<PathBuf, VictoriaError> {
    launch::find_binary("victoria-metrics", explicit).ok_or(VictoriaError::NotFound)
}

fn http(what: &str, e: reqwest::Error) -> VictoriaError {
    VictoriaError::Http(format!("{what}: {e}"))
}

impl Victoria {
    /// Starts a server on a free loopback port with its data in a fresh folder, waits for
    /// `/health` (60 s at most) and checks it is the fresh server just spawned. Tries fresh
    /// ports up to three times.
    pub async fn start(opts: &VictoriaOptions) -> Result<Victoria, VictoriaError> {
        let binary = victoria_binary(opts.binary.as_deref())?;
        let client = http_client(opts.timeout).map_err(|e| VictoriaError::Http(e.to_string()))?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let dir = launch::fresh_dir(&opts.label).map_err(|source| VictoriaError::Setup {
                what: "creating its folder".into(),
                source,
            })?;
            // From here on, dropping the value removes the folder.
            let mut vm = Victoria {
                child: None,
                binary: binary.clone(),
                dir,
                port: free_port(),
                opts: opts.clone(),
                client: client.clone(),
            };
            let started = match vm.spawn_and_wait().await {
                Ok(()) => vm.is_fresh_and_ours().await,
                Err(e) => Err(e),
            };
            match started {
                Ok(()) => return Ok(vm),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| VictoriaError::Start("victoria-metrics did not start".into())))
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's folder: its log and `data`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("victoria-metrics.log")
    }

    /// The last 30 lines of the server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        launch::tail(&self.log_path())
    }

    async fn spawn_and_wait(&mut self) -> Result<(), VictoriaError> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.join("data").display()
            ))
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .arg("-dedup.minScrapeInterval=1ms")
            .args(&self.opts.args);
        if let Some((user, password)) = &self.opts.auth {
            cmd.arg(format!("-httpAuth.username={user}"))
                .arg(format!("-httpAuth.password={password}"));
        }
        // VictoriaMetrics opens its storage before it listens: `/health` means ready.
        let (health, log) = (format!("{}/health", self.url()), self.log_path());
        let child = self.child.insert(
            launch::spawn_logged(&mut cmd, &log)
                .map_err(|(what, source)| VictoriaError::Setup { what, source })?,
        );
        launch::wait_answering(child, &self.client, &health, 200, &log)
            .await
            .map_err(|why| VictoriaError::Start(format!("victoria-metrics {why}")))
    }

    /// A server we just started holds no series and our child is still running.
    async fn is_fresh_and_ours(&mut self) -> Result<(), VictoriaError> {
        let reply = self.get_json("/api/v1/series/count", &[]).await?;
        if reply.pointer("/data/0").and_then(Value::as_u64) != Some(0) {
            return Err(VictoriaError::Start(format!(
                "{} is another server (it holds series): {reply}",
                self.url()
            )));
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            _ => Err(VictoriaError::Start(format!(
                "victoria-metrics exited after start; its log:\n{}",
                self.log_tail()
            ))),
        }
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.opts.auth {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    /// `path` on this server with `query` as its query string.
    fn endpoint(&self, path: &str, query: &[(&str, &str)]) -> Result<url::Url, VictoriaError> {
        let mut url = url::Url::parse(&format!("{}{path}", self.url()))
            .map_err(|e| VictoriaError::Http(format!("URL of {path}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn get_text(&self, path: &str, query: &[(&str, &str)]) -> Result<String, VictoriaError> {
        let r = self
            .authorized(self.client.get(self.endpoint(path, query)?))
            .send()
            .await
            .map_err(|e| http(path, e))?;
        let status = r.status().as_u16();
        let body = r.text().await.map_err(|e| http(path, e))?;
        if !(200..300).contains(&status) {
            return Err(VictoriaError::Status {
                what: path.to_string(),
                status,
                body,
            });
        }
        Ok(body)
    }

    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, VictoriaError> {
        let body = self.get_text(path, query).await?;
        serde_json::from_str(&body).map_err(|e| VictoriaError::Reply(format!("{e}: {body:.300}")))
    }

    /// Every series matching the selector `matcher` (`{instance="home"}`), with all its
    /// samples, from `/api/v1/export` (JSON lines).
    pub async fn export(&self, matcher: &str) -> Result<Vec<ExportedSeries>, VictoriaError> {
        let body = self
            .get_text("/api/v1/export", &[("match[]", matcher)])
            .await?;
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_export_line)
            .collect()
    }

    /// Number of series stored (`/api/v1/series/count`).
    pub async fn series_count(&self) -> Result<u64, VictoriaError> {
        let reply = self.get_json("/api/v1/series/count", &[]).await?;
        reply
            .pointer("/data/0")
            .and_then(Value::as_u64)
            .ok_or_else(|| VictoriaError::Reply(reply.to_string()))
    }

    /// Writes line protocol (nanosecond times) to `/write?db=<db>`.
    pub async fn write(&self, db: &str, body: String) -> Result<(), VictoriaError> {
        let r = self
            .authorized(
                self.client
                    .post(self.endpoint("/write", &[("db", db), ("precision", "ns")])?)
                    .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| http("write", e))?;
        let status = r.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(VictoriaError::Status {
                what: "write".into(),
                status,
                body: r.text().await.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// CPU seconds (user + system) the server has used so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        launch::cpu_seconds(self.child.as_ref())
    }

    /// Stops the server gracefully (SIGINT: it flushes what it holds to disk), killing it
    /// after 20 s; keeps its data and port for [`Victoria::restart`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again on the same port with the same data.
    pub async fn restart(&mut self) -> Result<(), VictoriaError> {
        self.stop();
        self.spawn_and_wait().await
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        launch::kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of `/api/v1/export`. VictoriaMetrics writes infinities and NaN bare
/// (`[+Inf]`), which is not JSON: they are quoted inside the `values` array before parsing.
fn parse_export_line(line: &str) -> Result<ExportedSeries, VictoriaError> {
    let bad = || VictoriaError::Reply(format!("export line: {line:.300}"));
    let start = line.find("\"values\":[").ok_or_else(bad)? + "\"values\":[".len();
    let end = start + line[start..].find(']').ok_or_else(bad)?;
    let values: Vec<String> = line[start..end]
        .split(',')
        .filter(|v| !v.is_empty())
        .map(|v| match v {
            "+Inf" | "-Inf" | "NaN" | "Inf" => format!("\"{v}\""),
            other => other.to_string(),
        })
        .collect();
    let text = format!("{}{}{}", &line[..start], values.join(","), &line[end..]);
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| VictoriaError::Reply(format!("{e}: {line:.300}")))?;
    let labels = json["metric"].as_object().cloned().ok_or_else(bad)?;
    let values = json["values"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| match v {
            Value::String(s) if s == "+Inf" || s == "Inf" => Some(f64::INFINITY),
            Value::String(s) if s == "-Inf" => Some(f64::NEG_INFINITY),
            Value::String(s) if s == "NaN" => Some(f64::NAN),
            other => other.as_f64(),
        })
        .collect::<Option<Vec<f64>>>()
        .ok_or_else(bad)?;
    let timestamps = json["timestamps"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(Value::as_i64)
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(bad)?;
    if values.len() != timestamps.len() {
        return Err(bad());
    }
    Ok(ExportedSeries {
        labels,
        values,
        timestamps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines_with_bare_infinities_are_read() {
        let s = parse_export_line(
            r#"{"metric":{"__name__":"n_b","le":"+Inf"},"values":[+Inf,-Inf,1.5],"timestamps":[1,2,3]}"#,
        )
        .expect("parses");
        assert_eq!(s.labels["le"], "+Inf");
        assert_eq!(s.values[0], f64::INFINITY);
        assert_eq!(s.values[1], f64::NEG_INFINITY);
        assert_eq!(s.values[2], 1.5);
        assert_eq!(s.timestamps, vec![1, 2, 3]);
        assert!(parse_export_line(r#"{"metric":{}}"#).is_err());
    }
}
