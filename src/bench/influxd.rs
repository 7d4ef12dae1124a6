//! A throw-away `influxd` (InfluxDB 1.x): the one launcher of the schema bench and the integration tests.
//!
//! ```ignore
//! let db = Influxd::start("home_assistant", &InfluxdOptions::default()).await?;
//! // … point the code under test at db.url() …
//! let rows = db.rows("°C").await?;   // every row of SELECT * FROM "°C"
//! ```
//!
//! Each server gets free loopback ports (HTTP and the RPC bind address) and a
//! fresh folder under the temp dir; the process is killed and the folder
//! removed when the value is dropped. Ports come from a process-wide counter, so
//! servers started in parallel by one process never pick the same one; a port
//! can still be taken by another process between probe and bind, so a start
//! checks that the server answering is the fresh one it spawned, and tries again
//! (three times) when it is not.
//!
//! Options cover what the callers need: HTTPS with a throw-away CA (TLS tests),
//! authentication with one admin user (auth tests), and a quick write of the
//! cache to TSM files and full compaction (the schema bench measures disk
//! usage once those have settled). `tests/support/influxd.rs` wraps this with
//! panicking helpers; `ha-ingestor schema bench` uses it directly.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::launch;

/// Attempts at a start, each on fresh ports (a probed port can be taken before influxd binds it).
const START_ATTEMPTS: usize = 3;

/// The admin user of servers started with [`InfluxdOptions::auth`].
pub const ADMIN_USER: &str = "admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// Next port to probe; servers of one process run in parallel and must never pick the same one.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Why a server could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum InfluxdError {
    /// No `influxd` binary on `PATH` nor at `/usr/bin/influxd`.
    #[error("influxd not found on PATH nor at /usr/bin/influxd")]
    NotFound,
    /// Preparing the server's folder, config or log failed.
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTPS certificate could not be made (`openssl` missing or failing).
    #[error("{0}")]
    Certificate(String),
    /// The process did not come up as a fresh server of ours.
    #[error("{0}")]
    Start(String),
    /// The HTTP client could not be built or a request failed in transport.
    #[error("{what}: {source}")]
    Http {
        /// What was being done.
        what: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The server answered a query with an error status.
    #[error("query {query} failed: {status} {body}")]
    Query {
        /// The InfluxQL text.
        query: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The reply's body.
        body: String,
    },
    /// A reply was not the JSON expected.
    #[error("query reply is not JSON: {0}")]
    Reply(String),
    /// The server refused a write.
    #[error("write refused: {status} {body}")]
    Write {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The reply's body.
        body: String,
    },
}

/// How to start a server; the default is a plain HTTP server from `PATH`.
#[derive(Debug, Clone)]
pub struct InfluxdOptions {
    /// The binary; `None` looks on `PATH`, then at `/usr/bin/influxd`.
    pub binary: Option<PathBuf>,
    /// Serve HTTPS with a fresh certificate for `127.0.0.1` signed by a throw-away CA
    /// ([`Influxd::ca_file`]); needs the `openssl` command.
    pub tls: bool,
    /// Authentication on, with one admin user, [`ADMIN_USER`] / [`ADMIN_PASSWORD`]
    /// (used for every request made through [`Influxd`]).
    pub auth: bool,
    /// Write the cache to TSM files after 2 s without writes and compact fully after 4 s
    /// (InfluxDB: 10 min and 4 h), so disk usage settles soon after loading.
    pub settle_quickly: bool,
    /// Timeout of every request made through [`Influxd`].
    pub timeout: Duration,
    /// Part of the folder's name (`ha-ingestor-<label>-<pid>-…` under the temp dir).
    pub label: String,
}

impl Default for InfluxdOptions {
    fn default() -> Self {
        InfluxdOptions {
            binary: None,
            tls: false,
            auth: false,
            settle_quickly: false,
            timeout: Duration::from_secs(30),
            label: "influxd".to_string(),
        }
    }
}

/// A running `influxd`; killed and its folder removed on drop.
pub struct Influxd {
    child: Option<Child>,
    binary: PathBuf,
    dir: PathBuf,
    http_port: u16,
    database: String,
    client: reqwest::Client,
    tls: bool,
    auth: bool,
}

/// A loopback port that is free now and never handed out twice by this process (shared with
/// [`super::victoria`], so the two launchers never pick the same one either).
pub(crate) fn free_port() -> u16 {
    // Start in a range chosen by the process id so parallel processes rarely overlap.
    let base = 20_000 + (std::process::id() % 2_000) as u16 * 10;
    let _ = NEXT_PORT.compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        if !(20_000..=60_000).contains(&port) {
            NEXT_PORT.store(20_000, Ordering::SeqCst);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The `influxd` to run: `explicit` if given, else the first on `PATH`, else `/usr/bin/influxd`.
pub fn influxd_binary(explicit: Option<&Path>) -> Result<PathBuf, InfluxdError> {
    launch::find_binary("influxd", explicit).ok_or(InfluxdError::NotFound)
}

/// A client for talking to these throw-away servers: it trusts any certificate
/// (the TLS behaviour under test is the code under test's, not this one's).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, InfluxdError> {
    crate::ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .tls_danger_accept_invalid_certs(true)
        .build()
        .map_err(|source| InfluxdError::Http {
            what: "building the HTTP client".into(),
            source,
        })
}

/// Bytes of the files under a folder (0 for one that cannot be read).
pub fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    for e in entries.flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InfluxdError {
    let what = what.into();
    move |source| InfluxdError::Setup { what, source }
}

fn http(what: impl Into<String>) -> impl FnOnce(reqwest::Error) -> InfluxdError {
    let what = what.into();
    move |source| InfluxdError::Http { what, source }
}

impl Influxd {
    /// Starts a server on free loopback ports with its data in a fresh folder, waits
    /// for `/ping` (60 s at most), checks it is the fresh server just spawned, and
    /// creates `database`. Tries fresh ports up to three times.
    pub async fn start(database: &str, opts: &InfluxdOptions) -> Result<Influxd, InfluxdError> {
        let binary = influxd_binary(opts.binary.as_deref())?;
        let client = http_client(opts.timeout)?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut db = Influxd::prepare(database, opts, &binary, &client)?;
            let started = match db.spawn_and_wait().await {
                Ok(()) => db.is_fresh_and_ours().await,
                Err(e) => Err(e),
            };
            match started {
                Ok(()) => {
                    db.create_database(database).await?;
                    return Ok(db);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| InfluxdError::Start("influxd did not start".into())))
    }

    /// A fresh folder with its config (and certificate), nothing running yet.
    fn prepare(
        database: &str,
        opts: &InfluxdOptions,
        binary: &Path,
        client: &reqwest::Client,
    ) -> Result<Influxd, InfluxdError> {
        let dir = launch::fresh_dir(&opts.label).map_err(setup("creating its folder"))?;
        // From here on, dropping the value removes the folder.
        let db = Influxd {
            child: None,
            binary: binary.to_path_buf(),
            dir,
            http_port: free_port(),
            database: database.to_string(),
            client: client.clone(),
            tls: opts.tls,
            auth: opts.auth,
        };
        if opts.tls {
            db.make_certificate()?;
        }
        db.write_config(free_port(), opts.settle_quickly)?;
        Ok(db)
    }

    /// A server we just started has no database yet and our child is still running.
    async fn is_fresh_and_ours(&mut self) -> Result<(), InfluxdError> {
        if self.auth {
            // Only a server without users accepts this unauthenticated.
            let q = format!(
                "CREATE USER \"{ADMIN_USER}\" WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES"
            );
            let reply = self
                .client
                .post(self.query_url(&[("q", q.as_str())])?)
                .send()
                .await
                .map_err(http("creating the admin user"))?;
            let status = reply.status();
            let text = reply.text().await.unwrap_or_default();
            if !status.is_success() || text.contains("\"error\"") {
                return Err(InfluxdError::Start(format!(
                    "cannot create the admin user: {status} {text}"
                )));
            }
        }
        let url = self.query_url(&[("q", "SHOW DATABASES")])?;
        let reply = self
            .authorized(self.client.get(url))
            .send()
            .await
            .map_err(http("SHOW DATABASES"))?;
        let text = reply.text().await.map_err(http("reading SHOW DATABASES"))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| InfluxdError::Reply(format!("{e}: {text}")))?;
        if json.pointer("/results/0/series/0/values").is_some() {
            return Err(InfluxdError::Start(format!(
                "{} is another server (it has databases)",
                self.url()
            )));
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            _ => Err(InfluxdError::Start(format!(
                "influxd exited after start; its log:\n{}",
                launch::tail(&self.log_path())
            ))),
        }
    }

    /// A throw-away CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed.
    fn make_certificate(&self) -> Result<(), InfluxdError> {
        let d = &self.dir;
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .map_err(setup("writing ext.cnf"))?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=ha-ingestor test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "cert.pem",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .map_err(|e| {
                    InfluxdError::Certificate(format!(
                        "openssl not found: it is needed to test TLS ({e})"
                    ))
                })?;
            if !out.status.success() {
                return Err(InfluxdError::Certificate(format!(
                    "openssl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        Ok(())
    }

    /// The PEM file of the CA that signed the HTTPS server's certificate, when started with TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("ca.pem"))
    }

    /// The server's folder: its config, log, and `meta`, `data` and `wal` directories.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("influxdb.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("influxd.log")
    }

    fn write_config(&self, rpc_port: u16, settle_quickly: bool) -> Result<(), InfluxdError> {
        let d = &self.dir;
        let settle = if settle_quickly {
            "\n  cache-snapshot-write-cold-duration = \"2s\"\n  compact-full-write-cold-duration = \"4s\""
        } else {
            ""
        };
        let text = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{meta}"
  logging-enabled = false

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  trace-logging-enabled = false{settle}

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
  pprof-enabled = false
  auth-enabled = {auth}
  https-enabled = {tls}
  https-certificate = "{cert}"
  https-private-key = "{key}"

[logging]
  level = "warn"
  suppress-logo = true
"#,
            meta = d.join("meta").display(),
            data = d.join("data").display(),
            wal = d.join("wal").display(),
            http = self.http_port,
            tls = self.tls,
            auth = self.auth,
            cert = d.join("cert.pem").display(),
            key = d.join("key.pem").display(),
        );
        std::fs::write(self.config_path(), text).map_err(setup("writing the influxd config"))
    }

    async fn spawn_and_wait(&mut self) -> Result<(), InfluxdError> {
        let _ = std::fs::remove_file(self.log_path());
        let mut cmd = Command::new(&self.binary);
        cmd.arg("run").arg("-config").arg(self.config_path());
        let (ping, log) = (format!("{}/ping", self.url()), self.log_path());
        let child = self.child.insert(
            launch::spawn_logged(&mut cmd, &log)
                .map_err(|(what, source)| InfluxdError::Setup { what, source })?,
        );
        launch::wait_answering(child, &self.client, &ping, 204, &log)
            .await
            .map_err(|why| InfluxdError::Start(format!("influxd {why}")))
    }

    /// The base URL, `http://127.0.0.1:<port>` (`https://` when started with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.auth {
            req.basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        } else {
            req
        }
    }

    fn query_url(&self, pairs: &[(&str, &str)]) -> Result<url::Url, InfluxdError> {
        let mut url = url::Url::parse(&format!("{}/query", self.url()))
            .map_err(|e| InfluxdError::Start(format!("query URL of {}: {e}", self.url())))?;
        url.query_pairs_mut().extend_pairs(pairs);
        Ok(url)
    }

    /// The database created at start.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Creates a database (`CREATE DATABASE` is idempotent).
    pub async fn create_database(&self, name: &str) -> Result<(), InfluxdError> {
        let q = format!("CREATE DATABASE \"{name}\"");
        let r = self
            .authorized(self.client.post(self.query_url(&[("q", q.as_str())])?))
            .send()
            .await
            .map_err(http(format!("query {q}")))?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        if !status.is_success() || body.contains("\"error\"") {
            return Err(InfluxdError::Query {
                query: q,
                status,
                body,
            });
        }
        Ok(())
    }

    /// Runs an InfluxQL query (POST /query, times in nanoseconds) against the start
    /// database and returns the parsed reply; an error inside the reply
    /// (`results[0].error`) is the caller's to look at.
    pub async fn query(&self, q: &str) -> Result<Value, InfluxdError> {
        Ok(self.query_timed(q, "ns").await?.0)
    }

    /// As [`Influxd::query`], with times in `epoch` units (`ns`, `ms`, …), also giving the
    /// milliseconds until the reply's last byte arrived: what influxd and the round trip
    /// cost, not the parsing of the reply here.
    pub async fn query_timed(&self, q: &str, epoch: &str) -> Result<(Value, f64), InfluxdError> {
        let url = self.query_url(&[("db", self.database.as_str()), ("q", q), ("epoch", epoch)])?;
        let started = Instant::now();
        let r = self
            .authorized(self.client.post(url))
            .send()
            .await
            .map_err(http(format!("query {q}")))?;
        let status = r.status();
        let body = r.text().await.map_err(http("reading the query reply"))?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if !status.is_success() {
            return Err(InfluxdError::Query {
                query: q.to_string(),
                status,
                body,
            });
        }
        let json = serde_json::from_str(&body).map_err(|_| InfluxdError::Reply(body))?;
        Ok((json, ms))
    }

    /// Every row of `SELECT * FROM "<measurement>"`, as column → value maps (`time` in ns).
    pub async fn rows(&self, measurement: &str) -> Result<Vec<Map<String, Value>>, InfluxdError> {
        let q = format!("SELECT * FROM \"{}\"", measurement.replace('"', "\\\""));
        let json = self.query(&q).await?;
        let Some(series) = json.pointer("/results/0/series/0") else {
            return Ok(Vec::new());
        };
        let shape = || InfluxdError::Reply(format!("unexpected series shape: {series}"));
        let columns: Vec<String> = series["columns"]
            .as_array()
            .ok_or_else(shape)?
            .iter()
            .map(|c| c.as_str().map(str::to_string).ok_or_else(shape))
            .collect::<Result<_, _>>()?;
        series["values"]
            .as_array()
            .ok_or_else(shape)?
            .iter()
            .map(|row| {
                let cells = row.as_array().ok_or_else(shape)?;
                Ok(columns.iter().cloned().zip(cells.iter().cloned()).collect())
            })
            .collect()
    }

    /// Points stored in the start database, over every measurement (rows, so a point written twice counts once).
    pub async fn point_count(&self) -> Result<usize, InfluxdError> {
        let count = self.query("SELECT count(*) FROM /.*/").await?;
        let mut stored = 0u64;
        for series in count["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for row in series["values"].as_array().cloned().unwrap_or_default() {
                // count(*) gives one column per field; the largest is the number of points.
                stored += row.as_array().map_or(0, |r| {
                    r.iter()
                        .skip(1)
                        .filter_map(Value::as_u64)
                        .max()
                        .unwrap_or(0)
                });
            }
        }
        Ok(stored as usize)
    }

    /// Writes line protocol (nanosecond times) into database `db`.
    pub async fn write(&self, db: &str, body: String) -> Result<(), InfluxdError> {
        let r = self
            .authorized(
                self.client
                    .post(format!("{}/write?db={db}&precision=ns", self.url())),
            )
            .body(body)
            .send()
            .await
            .map_err(http("writing a batch"))?;
        if r.status().as_u16() != 204 {
            let status = r.status();
            return Err(InfluxdError::Write {
                status,
                body: r.text().await.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// CPU seconds (user + system) `influxd` has used so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        launch::cpu_seconds(self.child.as_ref())
    }

    /// Waits until the cache is written to TSM files and compactions settle (size
    /// unchanged for 6 s, 180 s at most), then gives the bytes of the data and WAL
    /// directories. Meant for servers started with [`InfluxdOptions::settle_quickly`].
    pub async fn settled_disk_bytes(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(180);
        let measure = || dir_bytes(&self.dir.join("data")) + dir_bytes(&self.dir.join("wal"));
        let mut last = measure();
        let mut stable_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = measure();
            let wal_small = dir_bytes(&self.dir.join("wal")) < 64 * 1024;
            if now != last || !wal_small {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= Duration::from_secs(6) {
                return now;
            }
            if Instant::now() > deadline {
                tracing::warn!("influxd compaction did not settle within 180 s; measuring anyway");
                return now;
            }
        }
    }

    /// Kills the server, keeping its data and ports for [`Influxd::restart`].
    pub fn stop(&mut self) {
        launch::kill(&mut self.child);
    }

    /// Starts the server again on the same ports with the same data.
    pub async fn restart(&mut self) -> Result<(), InfluxdError> {
        self.stop();
        self.spawn_and_wait().await
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
