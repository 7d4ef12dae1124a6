//! A JSON POST of each [`Notification`] to a URL; a non-2xx reply, a transport
//! error or a timeout is retried `retries` times, the delay doubling from
//! `retry_min` up to `retry_max`. Then the notification is given up and counted.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Notification, failed, retried, sent};
use crate::config::TlsConfig;
use crate::config::alerts::NotifierConfig;

/// The webhook notifier.
pub struct Webhook {
    name: String,
    url: String,
    client: reqwest::Client,
    retries: u32,
    retry_min: Duration,
    retry_max: Duration,
}

impl Webhook {
    /// Builds the HTTP client; the error says what was wrong.
    pub fn new(cfg: &NotifierConfig) -> Result<Self, String> {
        let NotifierConfig::Webhook {
            name,
            url,
            headers,
            timeout,
            retries,
            retry_min,
            retry_max,
        } = cfg
        else {
            return Err("not a webhook".into());
        };
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let key = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("header name {k:?}: {e}"))?;
            let mut value =
                HeaderValue::from_str(v).map_err(|e| format!("header {k:?} value: {e}"))?;
            value.set_sensitive(true);
            map.insert(key, value);
        }
        let mut tls = crate::tls::client_config(&TlsConfig::default(), "alerts.notifiers")
            .map_err(|e| e.to_string())?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .default_headers(map)
            .timeout(*timeout)
            .connect_timeout(*timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Webhook {
            name: name.clone(),
            url: url.clone(),
            client,
            retries: *retries,
            retry_min: *retry_min,
            retry_max: (*retry_max).max(*retry_min),
        })
    }

    /// One attempt; the error is the `error_type` label and a message.
    async fn post(&self, n: &Notification) -> Result<(), (&'static str, String)> {
        let reply = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(n).unwrap_or_default())
            .send()
            .await
            .map_err(|e| {
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                // Without the URL: it may carry a secret.
                (kind, e.without_url().to_string())
            })?;
        let status = reply.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(("status", format!("HTTP {}", status.as_u16())))
        }
    }

    /// Delivers notifications in order until `shutdown`.
    pub async fn run(self, mut rx: mpsc::Receiver<Notification>, shutdown: CancellationToken) {
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
            };
            let mut delay = self.retry_min;
            let mut attempt = 0u32;
            loop {
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = self.post(&n) => r,
                };
                match result {
                    Ok(()) => {
                        sent(&self.name, n.status);
                        break;
                    }
                    Err((kind, error)) if attempt >= self.retries => {
                        failed(&self.name, kind);
                        tracing::warn!(message = "Alert webhook failed; notification given up.", notifier = %self.name, rule = %n.rule, %error, attempts = attempt + 1);
                        break;
                    }
                    Err((_, error)) => {
                        retried(&self.name);
                        tracing::debug!(message = "Alert webhook failed; retrying.", notifier = %self.name, %error, retry_in = ?delay);
                        attempt += 1;
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(self.retry_max);
                    }
                }
            }
        }
    }
}
