//! A small InfluxQL client over HTTP `/query` (JSON replies, ns epochs) and `/write`,
//! for the schema tools: they read the database's own statistics and rows.
//!
//! InfluxDB 1.x serves `/query` natively. InfluxDB 2.x and 3.x serve the same
//! endpoint as their v1 compatibility API (a DBRP mapping from the database
//! name to a bucket must exist); there the token is sent as `Token …` and
//! statements that manage retention policies or continuous queries are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::config::{Flavor, InfluxApi, InfluxConfig};
use crate::sink::influxdb::Auth;

/// Largest error body kept from a reply.
const MAX_ERROR_BODY: usize = 4096;

/// Why a query or a write did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The configuration cannot be used (URL, TLS files, missing database).
    #[error("invalid InfluxDB configuration: {0}")]
    Config(String),
    /// The connection failed or timed out.
    #[error("cannot reach InfluxDB at {url}: {source}")]
    Transport {
        /// The URL without credentials or query.
        url: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// A non-success HTTP status.
    #[error("InfluxDB answered {code}: {body}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// The reply body (truncated).
        body: String,
    },
    /// The statement was refused by InfluxDB (syntax, unknown database, unsupported).
    #[error("InfluxDB refused {statement:?}: {message}")]
    Statement {
        /// The statement (truncated).
        statement: String,
        /// InfluxDB's message.
        message: String,
    },
    /// The reply was not the JSON InfluxDB sends.
    #[error("unexpected reply from InfluxDB: {0}")]
    Protocol(String),
}

/// One series of a result: `name`, group-by `tags`, `columns` and rows of `values`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// The measurement (absent for some `SHOW` results).
    pub name: Option<String>,
    /// Group-by tags of this series.
    pub tags: BTreeMap<String, String>,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, one value per column.
    pub values: Vec<Vec<Value>>,
}

impl Series {
    /// The index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The string in `column` of every row (rows without one are left out).
    pub fn strings(&self, column: &str) -> Vec<String> {
        let Some(i) = self.column(column) else {
            return Vec::new();
        };
        self.values
            .iter()
            .filter_map(|row| row.get(i).and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// The first row's unsigned integer in `column`.
    pub fn first_u64(&self, column: &str) -> Option<u64> {
        let i = self.column(column)?;
        self.values.first()?.get(i).and_then(Value::as_u64)
    }
}

/// Quotes an identifier for InfluxQL (`"a \"b\""`).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Quotes a string literal for InfluxQL (`'it\'s'`).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An InfluxQL connection to one server and database; cheap to clone.
#[derive(Clone)]
pub struct InfluxQl {
    client: reqwest::Client,
    base: String,
    database: String,
    auth: Auth,
}

impl std::fmt::Debug for InfluxQl {
    // By hand, so credentials never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxQl")
            .field("base", &crate::config::redact_url(&self.base))
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl InfluxQl {
    /// A client for the server and database (v1) or bucket (v2, through its v1 compatibility API) of `cfg`.
    pub fn new(cfg: &InfluxConfig) -> Result<InfluxQl, QueryError> {
        let parsed = url::Url::parse(&cfg.url)
            .map_err(|e| QueryError::Config(format!("influxdb.url {:?}: {e}", cfg.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(QueryError::Config(
                "influxdb.url: scheme must be http or https".into(),
            ));
        }
        if cfg.flavor == Flavor::VictoriaMetrics {
            return Err(QueryError::Config(
                "this needs InfluxQL, which a flavor = \"victoriametrics\" target does not have (VictoriaMetrics answers every InfluxQL statement with a database list; docs/stores.md)".into(),
            ));
        }
        let database = match cfg.api {
            InfluxApi::V1 => cfg.database.clone().unwrap_or_default(),
            InfluxApi::V2 => cfg.bucket.clone().unwrap_or_default(),
        };
        let auth = Auth::from_config(cfg);
        if database.is_empty() {
            return Err(QueryError::Config(
                "influxdb.database (v1) or influxdb.bucket (v2) is required".into(),
            ));
        }
        let mut tls = crate::tls::client_config(&cfg.tls, "influxdb")
            .map_err(|e| QueryError::Config(e.to_string()))?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Schema statements over a large database are slow: allow far more than a write.
        let timeout = cfg.timeout.max(Duration::from_secs(300));
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| QueryError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(InfluxQl {
            client,
            base: cfg.url.trim_end_matches('/').to_string(),
            database,
            auth,
        })
    }

    /// The same server with another database.
    pub fn with_database(&self, database: &str) -> InfluxQl {
        InfluxQl {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// The database statements run against.
    pub fn database(&self) -> &str {
        &self.database
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.auth.apply(req)
    }

    fn transport(&self, e: reqwest::Error) -> QueryError {
        QueryError::Transport {
            url: crate::config::redact_url(&self.base),
            source: e.without_url(),
        }
    }

    /// Runs one statement (POST, so it may change things) and returns its series.
    pub async fn query(&self, statement: &str) -> Result<Vec<Series>, QueryError> {
        let url = format!("{}/query", self.base);
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("db", &self.database)
            .append_pair("q", statement)
            .append_pair("epoch", "ns")
            .finish();
        let reply = self
            .authorize(self.client.post(&url))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let code = reply.status().as_u16();
        let body = reply.text().await.map_err(|e| self.transport(e))?;
        if !(200..300).contains(&code) {
            // 1.x answers 400 with {"error": …} for a bad statement.
            if let Some(message) = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            {
                return Err(statement_error(statement, message));
            }
            return Err(QueryError::Status {
                code,
                body: truncate(&body),
            });
        }
        parse_reply(statement, &body)
    }

    /// Writes line protocol (ns timestamps) to `database`, into `retention_policy` or the default one.
    pub async fn write(
        &self,
        database: &str,
        retention_policy: Option<&str>,
        body: String,
    ) -> Result<(), QueryError> {
        let mut url = url::Url::parse(&format!("{}/write", self.base))
            .map_err(|e| QueryError::Config(format!("influxdb.url: {e}")))?;
        url.query_pairs_mut()
            .append_pair("db", database)
            .append_pair("precision", "ns");
        if let Some(rp) = retention_policy.filter(|r| !r.is_empty()) {
            url.query_pairs_mut().append_pair("rp", rp);
        }
        let reply = self
            .authorize(self.client.post(url.as_str()))
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let code = reply.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(());
        }
        let body = reply.text().await.unwrap_or_default();
        Err(QueryError::Status {
            code,
            body: truncate(&body),
        })
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_BODY {
        return text.to_string();
    }
    let mut end = MAX_ERROR_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn statement_error(statement: &str, message: String) -> QueryError {
    QueryError::Statement {
        statement: truncate(statement).chars().take(200).collect(),
        message,
    }
}

/// Parses a `/query` reply of one statement into its series.
pub fn parse_reply(statement: &str, body: &str) -> Result<Vec<Series>, QueryError> {
    let json: Value = serde_json::from_str(body)
        .map_err(|e| QueryError::Protocol(format!("not JSON ({e}): {}", truncate(body))))?;
    if let Some(message) = json.get("error").and_then(Value::as_str) {
        return Err(statement_error(statement, message.to_string()));
    }
    let result = json
        .pointer("/results/0")
        .ok_or_else(|| QueryError::Protocol(format!("no results: {}", truncate(body))))?;
    if let Some(message) = result.get("error").and_then(Value::as_str) {
        return Err(statement_error(statement, message.to_string()));
    }
    let Some(series) = result.get("series").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        let columns = s
            .get("columns")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let values = s
            .get("values")
            .and_then(Value::as_array)
            .map(|rows| {
                rows.iter()
                    .map(|r| r.as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        let tags = s
            .get("tags")
            .and_then(Value::as_object)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Series {
            name: s.get("name").and_then(Value::as_str).map(str::to_string),
            tags,
            columns,
            values,
        });
    }
    Ok(out)
}

/// Parses Go's duration text as InfluxDB prints it (`720h0m0s`, `0s`, `1h30m`, `500ms`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "u" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(number * seconds);
    }
    Some(total)
}

/// An InfluxQL duration literal for whole seconds (`30d`, `1h`, `90s`); zero is `INF`.
pub fn influx_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return "INF".to_string();
    }
    for (unit, len) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(len) {
            return format!("{}{unit}", s / len);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VictoriaMetrics answers every InfluxQL statement with a database list: the tools refuse it up front.
    #[test]
    fn a_victoriametrics_target_is_refused() {
        let mut cfg = InfluxConfig::v1("http://127.0.0.1:8428", "ha");
        cfg.flavor = Flavor::VictoriaMetrics;
        let Err(err) = InfluxQl::new(&cfg) else {
            panic!("a VictoriaMetrics target must be refused");
        };
        let err = err.to_string();
        assert!(err.contains("InfluxQL"), "{err}");
        cfg.flavor = Flavor::InfluxDb;
        assert!(InfluxQl::new(&cfg).is_ok());
    }

    #[test]
    fn replies_and_errors_are_parsed() {
        let body = r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"entity_id":"a"},"columns":["fieldKey","fieldType"],"values":[["x","float"],["x","string"]]}]}]}"#;
        let s = parse_reply("SHOW FIELD KEYS", body).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name.as_deref(), Some("m"));
        assert_eq!(s[0].tags["entity_id"], "a");
        assert_eq!(s[0].strings("fieldType"), ["float", "string"]);
        assert!(
            parse_reply("x", r#"{"results":[{"statement_id":0}]}"#)
                .unwrap()
                .is_empty()
        );
        let err = parse_reply(
            "SELECT",
            r#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("database not found"), "{err}");
        assert!(matches!(
            parse_reply("x", "<html>"),
            Err(QueryError::Protocol(_))
        ));
    }

    #[test]
    fn durations_round_trip() {
        assert_eq!(
            parse_go_duration("720h0m0s"),
            Some(Duration::from_secs(720 * 3600))
        );
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("xyz"), None);
        assert_eq!(influx_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(influx_duration(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(influx_duration(Duration::from_secs(300)), "5m");
        assert_eq!(influx_duration(Duration::from_secs(61)), "61s");
        assert_eq!(influx_duration(Duration::ZERO), "INF");
    }

    #[test]
    fn quoting_escapes() {
        assert_eq!(ident("°C"), "\"°C\"");
        assert_eq!(ident("a\"b"), "\"a\\\"b\"");
        assert_eq!(literal("it's"), "'it\\'s'");
    }
}
