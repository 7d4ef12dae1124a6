//! A JSON POST of each [`Notification`] to a URL. A transport error, a timeout,
//! a 5xx (any reply but 2xx and 4xx), a 408 or a 429 is retried `retries` times
//! with the program's [`Backoff`] (exponential with jitter, from `retry_min` up
//! to `retry_max`); then the notification is given up and counted. Any other
//! 4xx is given up at once: the receiver refused this request (bad URL,
//! credentials, payload), and sending it again cannot change its answer. 408
//! and 429 are the exceptions, as in the InfluxDB writer's classifier: the
//! receiver was only too slow or too busy.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Notification, failed, retried, sent};
use crate::backoff::Backoff;
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
            tls,
            allow_insecure_transport: _,
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
        let mut tls = crate::tls::client_config_for(tls, &format!("alerts.notifiers[{name}]"))
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

    /// One attempt.
    async fn post(&self, n: &Notification) -> Result<(), PostError> {
        let reply = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(n).unwrap_or_default())
            .send()
            .await
            .map_err(|e| PostError {
                kind: if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                },
                // Without the URL: it may carry a secret. With its causes: "error sending request" alone says nothing.
                message: error_chain(&e.without_url()),
                retryable: true,
            })?;
        let status = reply.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(PostError {
                kind: "status",
                message: format!("HTTP {}", status.as_u16()),
                retryable: retryable_status(status.as_u16()),
            })
        }
    }

    /// One POST of `n`, without retries, for `ha-ingestor alerts test`: ok, or why not (no URL: it may hold a secret).
    pub async fn send_once(&self, n: &Notification) -> Result<(), String> {
        self.post(n).await.map_err(|e| e.message)
    }

    /// Delivers notifications in order until `shutdown`.
    pub async fn run(self, mut rx: mpsc::Receiver<Notification>, shutdown: CancellationToken) {
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
            };
            let mut backoff = Backoff::new(self.retry_min, self.retry_max);
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
                    Err(e) if !e.retryable || backoff.attempts() >= self.retries => {
                        failed(&self.name, e.kind);
                        tracing::warn!(message = "Alert webhook failed; notification given up.", notifier = %self.name, rule = %n.rule, error = %e.message, attempts = backoff.attempts() + 1);
                        break;
                    }
                    Err(e) => {
                        retried(&self.name);
                        let delay = backoff.next_delay();
                        let error = e.message;
                        tracing::debug!(message = "Alert webhook failed; retrying.", notifier = %self.name, %error, retry_in = ?delay);
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }
}

/// Why one POST failed.
struct PostError {
    /// The `error_type` label: `status`, `transport` or `timeout`.
    kind: &'static str,
    /// What to log.
    message: String,
    /// Whether sending again may succeed.
    retryable: bool,
}

/// An error and its causes, `outer: inner: …`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A reply worth sending again for: anything but a 4xx, except 408 (timeout) and 429 (throttled).
fn retryable_status(code: u16) -> bool {
    !(400..=499).contains(&code) || matches!(code, 408 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_4xx_other_than_408_and_429_are_final() {
        for code in [400, 401, 403, 404, 405, 410, 413, 422, 499] {
            assert!(!retryable_status(code), "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504, 300, 304] {
            assert!(retryable_status(code), "{code}");
        }
    }
}
