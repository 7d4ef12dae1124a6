//! A real `influxd` 1.6.7 per test, on free loopback ports, with its data in a temp dir.
//!
//! ```ignore
//! let db = Influxd::start("home_assistant").await;   // panics if it cannot start
//! // … point the code under test at db.url() …
//! let rows = db.rows("°C").await;                     // every row of SELECT * FROM "°C"
//! ```
//!
//! The process is killed and its folder removed when the value is dropped.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// How long `influxd` may take to answer `/ping` (two busy cores: be generous).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running `influxd`; killed and cleaned up on drop.
pub struct Influxd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    http_port: u16,
    database: String,
    client: reqwest::Client,
    tls: bool,
    auth: bool,
}

/// The admin user of servers started with [`Influxd::start_auth`].
pub const ADMIN_USER: &str = "admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// Next port to probe; tests of one binary run in parallel and must never pick the same one.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A loopback port that is free now and never handed out twice by this process.
fn free_port() -> u16 {
    // Start in a range chosen by the process id so parallel test binaries rarely overlap.
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

fn influxd_binary() -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("influxd");
            if p.is_file() {
                return p;
            }
        }
    }
    let p = PathBuf::from("/usr/bin/influxd");
    if p.is_file() {
        return p;
    }
    panic!("influxd not found: run scripts/test, which installs it");
}

/// The client the support code talks to its own servers with (it trusts any
/// certificate: the TLS behaviour under test is the writer's, not this one's).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("build the test HTTP client")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Influxd {
    /// Starts influxd 1.6.7 on free loopback ports (HTTP and the RPC bind address) with data in a temp dir; waits for /ping with a deadline; panics with a clear message (stderr tail) if it cannot start. Creates `database`.
    pub async fn start(database: &str) -> Influxd {
        Influxd::start_with(database, false, false).await
    }

    /// As [`Influxd::start`], with authentication on and one admin user,
    /// [`ADMIN_USER`] / [`ADMIN_PASSWORD`] (the support code uses it for its own queries).
    pub async fn start_auth(database: &str) -> Influxd {
        Influxd::start_with(database, false, true).await
    }

    /// As [`Influxd::start`], serving HTTPS with a fresh self-signed certificate for
    /// `127.0.0.1` (see [`Influxd::ca_file`]); needs the `openssl` command.
    pub async fn start_tls(database: &str) -> Influxd {
        Influxd::start_with(database, true, false).await
    }

    async fn start_with(database: &str, tls: bool, auth: bool) -> Influxd {
        let mut last_error = String::new();
        // A free port can be taken by another process between probe and bind, and
        // then /ping may reach someone else's server: check, and try again.
        for _ in 0..3 {
            let mut db = Influxd {
                child: None,
                dir: tempfile::tempdir().expect("create a temp dir for influxd"),
                http_port: free_port(),
                database: database.to_string(),
                client: http_client(),
                tls,
                auth,
            };
            if tls {
                db.make_certificate();
            }
            db.write_config(free_port());
            let started = match db.spawn_and_wait().await {
                Ok(()) => db.is_fresh_and_ours().await,
                Err(e) => Err(e),
            };
            match started {
                Ok(()) => {
                    db.create_database(database).await;
                    return db;
                }
                Err(e) => {
                    last_error = e;
                    db.stop();
                }
            }
        }
        panic!("influxd did not start: {last_error}");
    }

    /// A server we just started has no database yet and our child is still running.
    async fn is_fresh_and_ours(&mut self) -> Result<(), String> {
        if self.auth {
            // Only a server without users accepts this unauthenticated.
            let q = format!(
                "CREATE USER \"{ADMIN_USER}\" WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES"
            );
            let reply = self
                .client
                .post(self.query_url(&[("q", q.as_str())]))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = reply.status();
            let text = reply.text().await.unwrap_or_default();
            if !status.is_success() || text.contains("\"error\"") {
                return Err(format!("cannot create the admin user: {status} {text}"));
            }
        }
        let url = self.query_url(&[("q", "SHOW DATABASES")]);
        let reply = self
            .authorized(self.client.get(url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let text = reply.text().await.map_err(|e| e.to_string())?;
        let json: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if json.pointer("/results/0/series/0/values").is_some() {
            return Err(format!(
                "{} is another server (it has databases)",
                self.url()
            ));
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            _ => Err(format!(
                "influxd exited after start; its log:\n{}",
                tail(&self.stderr_path())
            )),
        }
    }

    /// A throw-away CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed.
    fn make_certificate(&self) {
        let d = self.dir.path();
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write ext.cnf");
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
                .expect("openssl not found: it is needed to test TLS");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The PEM file of the CA that signed the HTTPS server's certificate, when started with TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.pem"))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("influxdb.conf")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    fn write_config(&self, rpc_port: u16) {
        let d = self.dir.path();
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
  trace-logging-enabled = false

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
        let mut f = std::fs::File::create(self.config_path()).expect("write influxd config");
        f.write_all(text.as_bytes()).expect("write influxd config");
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.stderr_path()).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(influxd_binary())
            .arg("run")
            .arg("-config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run influxd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "influxd exited with {status}; its log:\n{}",
                    tail(&self.stderr_path())
                ));
            }
            if let Ok(r) = self.client.get(format!("{}/ping", self.url())).send().await
                && r.status().as_u16() == 204
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no answer on {}/ping within {START_DEADLINE:?}; its log:\n{}",
                    self.url(),
                    tail(&self.stderr_path())
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    fn query_url(&self, pairs: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("{}/query", self.url())).expect("query URL");
        url.query_pairs_mut().extend_pairs(pairs);
        url.to_string()
    }

    /// The database created at start.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Creates a database (`CREATE DATABASE` is idempotent).
    pub async fn create_database(&self, name: &str) {
        let q = format!("CREATE DATABASE \"{name}\"");
        let r = self
            .authorized(self.client.post(self.query_url(&[("q", q.as_str())])))
            .send()
            .await
            .expect("POST /query to influxd");
        assert!(
            r.status().is_success(),
            "CREATE DATABASE failed: {:?}",
            r.text().await
        );
    }

    /// Runs an InfluxQL query (GET /query, epoch=ns) against the start database and returns the parsed JSON.
    pub async fn query(&self, q: &str) -> Value {
        let url = self.query_url(&[("db", self.database.as_str()), ("q", q), ("epoch", "ns")]);
        let r = self
            .authorized(self.client.get(url))
            .send()
            .await
            .expect("query influxd");
        let status = r.status();
        let body = r.text().await.expect("read query reply");
        assert!(status.is_success(), "query {q:?} failed: {status} {body}");
        serde_json::from_str(&body).expect("query reply is JSON")
    }

    /// Every row of `SELECT * FROM "<measurement>"`, as column → value maps (`time` in ns).
    pub async fn rows(&self, measurement: &str) -> Vec<Map<String, Value>> {
        let q = format!("SELECT * FROM \"{}\"", measurement.replace('"', "\\\""));
        let json = self.query(&q).await;
        let Some(series) = json.pointer("/results/0/series/0") else {
            return Vec::new();
        };
        let columns: Vec<String> = series["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c.as_str().expect("column name").to_string())
            .collect();
        series["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .cloned()
                    .zip(row.as_array().expect("row").iter().cloned())
                    .collect()
            })
            .collect()
    }

    /// Points stored in the start database, over every measurement (rows, so a point written twice counts once).
    pub async fn point_count(&self) -> usize {
        let count = self.query("SELECT count(*) FROM /.*/").await;
        let mut stored = 0u64;
        for series in count["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for row in series["values"].as_array().cloned().unwrap_or_default() {
                // count(*) gives one column per field; the largest is the number of points.
                stored += row.as_array().map_or(0, |r| {
                    r[1..].iter().filter_map(Value::as_u64).max().unwrap_or(0)
                });
            }
        }
        stored as usize
    }

    /// Polls `rows(measurement)` until it has at least `n` rows, panicking after `timeout`.
    pub async fn wait_rows(
        &self,
        measurement: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Map<String, Value>> {
        super::wait_for(&format!("{n} rows in {measurement:?}"), timeout, || async {
            let rows = self.rows(measurement).await;
            (rows.len() >= n).then_some(rows)
        })
        .await
    }

    /// Kills the server, keeping its data and ports for [`Influxd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait().await {
            panic!("influxd did not restart: {e}");
        }
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}
