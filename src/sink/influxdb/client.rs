//! HTTP to one InfluxDB: authentication, the TLS client configuration, gzip,
//! query URLs, reading bounded reply bodies, the write request itself (with
//! its `Retry-After`) and the `check` probe.

use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{InfluxWriter, WriteError};
use crate::config::{Flavor, InfluxApi, InfluxConfig, TlsConfig};

/// Longest `Retry-After` honoured.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Largest error body read from a reply; the rest is never read (InfluxDB's messages are short).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest successful JSON reply read (`SHOW FIELD KEYS` of a large database, the bucket list).
const MAX_JSON_BODY: usize = 16 << 20;

/// How requests to one InfluxDB authenticate; shared by the writer and the InfluxQL tools.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Basic { user: String, password: String },
    Token(String),
}

impl Auth {
    /// v1: basic auth when both user and password are set; v2: the token when it is not empty.
    /// VictoriaMetrics: basic auth (its `-httpAuth.*`) on either API, else the token.
    pub(crate) fn from_config(cfg: &InfluxConfig) -> Auth {
        if cfg.flavor == Flavor::VictoriaMetrics
            && let (Some(user), Some(password)) = (&cfg.username, &cfg.password)
        {
            return Auth::Basic {
                user: user.clone(),
                password: password.clone(),
            };
        }
        match cfg.api {
            InfluxApi::V1 => match (&cfg.username, &cfg.password) {
                (Some(user), Some(password)) => Auth::Basic {
                    user: user.clone(),
                    password: password.clone(),
                },
                _ => Auth::None,
            },
            InfluxApi::V2 => match &cfg.token {
                Some(t) if !t.is_empty() => Auth::Token(t.clone()),
                _ => Auth::None,
            },
        }
    }

    /// Adds the credentials to a request.
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Token(t) => req.header(reqwest::header::AUTHORIZATION, format!("Token {t}")),
        }
    }
}

/// A failed attempt with what the retry policy needs to know.
pub(super) struct Failure {
    /// What went wrong.
    pub(super) error: WriteError,
    /// The server's `Retry-After`, capped at [`MAX_RETRY_AFTER`].
    pub(super) retry_after: Option<Duration>,
}

impl InfluxWriter {
    /// Adds this target's credentials to a request.
    pub(super) fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.auth.apply(req)
    }

    /// A transport failure as a [`WriteError`], without the URL's credentials.
    pub(super) fn transport(&self, url: &str, e: reqwest::Error) -> WriteError {
        if e.is_timeout() {
            WriteError::Timeout(self.timeout)
        } else {
            // reqwest's own message would repeat the URL, credentials included.
            let url = crate::config::redact_url(url);
            WriteError::Transport {
                url,
                source: e.without_url(),
            }
        }
    }

    /// For `ha-ingestor check`: reachable (`/ping`), credentials accepted and database/bucket present; returns the server version.
    pub async fn check(&self) -> Result<String, WriteError> {
        let ping = format!("{}/ping", self.base);
        let reply = self
            .client
            .get(&ping)
            .send()
            .await
            .map_err(|e| self.transport(&ping, e))?;
        let code = reply.status().as_u16();
        if !(200..300).contains(&code) {
            return Err(WriteError::Status {
                code,
                body: read_body(reply).await,
            });
        }
        let version = reply
            .headers()
            .get("X-Influxdb-Version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_string();
        if self.flavor == Flavor::VictoriaMetrics {
            // No databases, buckets or version to ask for: an empty write checks the path and credentials.
            self.check_empty_write().await?;
            return Ok("VictoriaMetrics".to_string());
        }
        match self.api {
            InfluxApi::V1 => {
                // An empty write checks exactly what writing needs: credentials, the
                // write privilege and the database (1.x answers 204, 401/403 or 404).
                let db = self.database.as_deref().unwrap_or_default();
                let reply = self
                    .authorize(self.client.post(&self.write_url))
                    .body(Vec::new())
                    .send()
                    .await
                    .map_err(|e| self.transport(&self.write_url, e))?;
                let code = reply.status().as_u16();
                match code {
                    200..=299 => {}
                    404 => {
                        return Err(WriteError::Missing(format!(
                            "database {db:?} not found (create it with: CREATE DATABASE \"{db}\")"
                        )));
                    }
                    _ => {
                        return Err(WriteError::Status {
                            code,
                            body: read_body(reply).await,
                        });
                    }
                }
            }
            InfluxApi::V2 => {
                let org = self.org.as_deref().unwrap_or_default();
                let bucket = self.bucket.as_deref().unwrap_or_default();
                let url = with_query(
                    &format!("{}/api/v2/buckets", self.base),
                    &[("org", org), ("name", bucket)],
                )?;
                let reply = self
                    .authorize(self.client.get(&url))
                    .send()
                    .await
                    .map_err(|e| self.transport(&url, e))?;
                let json = json_reply(reply).await?;
                let present = json
                    .get("buckets")
                    .and_then(|b| b.as_array())
                    .is_some_and(|b| !b.is_empty());
                if !present {
                    return Err(WriteError::Missing(format!(
                        "bucket {bucket:?} not found in organisation {org:?}"
                    )));
                }
            }
        }
        Ok(version)
    }

    /// An empty write to the write URL: 2xx, or the reply as an error (VictoriaMetrics answers
    /// 401 for refused credentials and 400 `unsupported path` for a URL that is not its own).
    async fn check_empty_write(&self) -> Result<(), WriteError> {
        let reply = self
            .authorize(self.client.post(&self.write_url))
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Vec::new())
            .send()
            .await
            .map_err(|e| self.transport(&self.write_url, e))?;
        let code = reply.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(());
        }
        Err(WriteError::Status {
            code,
            body: read_body(reply).await,
        })
    }

    /// One write attempt of whole lines (gzip when configured); classifies the reply.
    pub async fn write(&self, body: &str) -> Result<(), WriteError> {
        self.attempt(body).await.map_err(|f| f.error)
    }

    /// One write request; a failure carries the server's `Retry-After`.
    pub(super) async fn attempt(&self, body: &str) -> Result<(), Failure> {
        let payload = if self.gzip {
            gzip(body).map_err(|e| Failure {
                error: WriteError::Compress(e),
                retry_after: None,
            })?
        } else {
            body.as_bytes().to_vec()
        };
        let mut req = self
            .client
            .post(&self.write_url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(reqwest::header::ACCEPT, "application/json");
        if self.gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let reply = self
            .authorize(req)
            .body(payload)
            .send()
            .await
            .map_err(|e| Failure {
                error: self.transport(&self.write_url, e),
                retry_after: None,
            })?;
        let code = reply.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(());
        }
        let retry_after = reply
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        Err(Failure {
            error: WriteError::Status {
                code,
                body: read_body(reply).await,
            },
            retry_after,
        })
    }
}

/// `base` with `pairs` appended as its query string.
pub(super) fn with_query(base: &str, pairs: &[(&str, &str)]) -> Result<String, WriteError> {
    let mut url =
        url::Url::parse(base).map_err(|e| WriteError::Config(format!("influxdb.url: {e}")))?;
    url.query_pairs_mut().extend_pairs(pairs);
    Ok(url.to_string())
}

/// `body` compressed with gzip's fast level.
fn gzip(body: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
    enc.write_all(body.as_bytes())?;
    enc.finish()
}

/// An error reply's body, at most [`MAX_ERROR_BODY`] bytes (see [`read_limited`]).
async fn read_body(reply: reqwest::Response) -> String {
    read_limited(reply, MAX_ERROR_BODY).await
}

/// The reply body, at most `limit` bytes: read chunk by chunk and abandoned at the
/// limit, so a huge (or endless) reply is never held whole; a cut body ends with `…(truncated)`.
async fn read_limited(mut reply: reqwest::Response, limit: usize) -> String {
    let mut body: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        match reply.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    // Dropping `reply` closes the connection instead of reading the rest.
                    cut = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if body.is_empty() => return format!("(body unreadable: {e})"),
            // What arrived before the failure is still the server's message.
            Err(_) => break,
        }
    }
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if cut {
        // A character the limit split shows as one replacement character: drop it.
        if text.ends_with('\u{fffd}') {
            text.pop();
        }
        text.push_str(" …(truncated)");
    }
    text
}

/// A 2xx reply's JSON body; any other status is a [`WriteError::Status`].
pub(super) async fn json_reply(reply: reqwest::Response) -> Result<serde_json::Value, WriteError> {
    let code = reply.status().as_u16();
    if !(200..300).contains(&code) {
        let body = read_body(reply).await;
        return Err(WriteError::Status { code, body });
    }
    let body = read_limited(reply, MAX_JSON_BODY).await;
    serde_json::from_str(&body)
        .map_err(|e| WriteError::Protocol(format!("reply is not JSON ({e}): {body:.200}")))
}

/// The client TLS configuration (HTTP/1.1 only) for `tls`.
pub(super) fn tls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, WriteError> {
    let mut config = crate::tls::client_config(tls, "influxdb")
        .map_err(|e| WriteError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
