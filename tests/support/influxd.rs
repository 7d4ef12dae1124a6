//! A real `influxd` 1.6.7 per test, on free loopback ports, with its data in a temp dir.
//!
//! ```ignore
//! let db = Influxd::start("home_assistant").await;   // panics if it cannot start
//! // … point the code under test at db.url() …
//! let rows = db.rows("°C").await;                     // every row of SELECT * FROM "°C"
//! ```
//!
//! The process is killed and its folder removed when the value is dropped. The
//! launcher itself is the library's ([`ha_ingestor::bench::influxd`], shared with
//! `schema bench`); this wrapper keeps the tests' API, which panics with a clear
//! message instead of returning errors.

use std::path::PathBuf;
use std::time::Duration;

use ha_ingestor::bench::influxd::{self as launcher, InfluxdError, InfluxdOptions};
use serde_json::{Map, Value};

pub use launcher::{ADMIN_PASSWORD, ADMIN_USER};

/// Timeout of the support code's requests to its own servers.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `influxd`; killed and cleaned up on drop.
pub struct Influxd(launcher::Influxd);

/// The client the support code talks to its own servers with (it trusts any
/// certificate: the TLS behaviour under test is the writer's, not this one's).
pub fn http_client() -> reqwest::Client {
    launcher::http_client(CLIENT_TIMEOUT).expect("build the test HTTP client")
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
        let opts = InfluxdOptions {
            tls,
            auth,
            timeout: CLIENT_TIMEOUT,
            label: "test-influxd".to_string(),
            ..InfluxdOptions::default()
        };
        match launcher::Influxd::start(database, &opts).await {
            Ok(db) => Influxd(db),
            Err(InfluxdError::NotFound) => {
                panic!("influxd not found: run scripts/test, which installs it")
            }
            Err(e) => panic!("influxd did not start: {e}"),
        }
    }

    /// The PEM file of the CA that signed the HTTPS server's certificate, when started with TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.0.ca_file()
    }

    /// The base URL, `http://127.0.0.1:<port>` (`https://` when started with TLS).
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The database created at start.
    pub fn database(&self) -> &str {
        self.0.database()
    }

    /// Creates a database (`CREATE DATABASE` is idempotent).
    pub async fn create_database(&self, name: &str) {
        if let Err(e) = self.0.create_database(name).await {
            panic!("CREATE DATABASE failed: {e}");
        }
    }

    /// Runs an InfluxQL query (epoch=ns) against the start database and returns the parsed JSON.
    pub async fn query(&self, q: &str) -> Value {
        match self.0.query(q).await {
            Ok(v) => v,
            Err(e) => panic!("query {q:?}: {e}"),
        }
    }

    /// Every row of `SELECT * FROM "<measurement>"`, as column → value maps (`time` in ns).
    pub async fn rows(&self, measurement: &str) -> Vec<Map<String, Value>> {
        match self.0.rows(measurement).await {
            Ok(rows) => rows,
            Err(e) => panic!("rows of {measurement:?}: {e}"),
        }
    }

    /// Points stored in the start database, over every measurement (rows, so a point written twice counts once).
    pub async fn point_count(&self) -> usize {
        match self.0.point_count().await {
            Ok(n) => n,
            Err(e) => panic!("point count: {e}"),
        }
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
        self.0.stop();
    }

    /// Starts the server again on the same ports with the same data.
    pub async fn restart(&mut self) {
        if let Err(e) = self.0.restart().await {
            panic!("influxd did not restart: {e}");
        }
    }
}
