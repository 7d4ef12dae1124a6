//! Who may read the monitor: the `Host` check against DNS rebinding, bearer tokens
//! with two roles (`metrics`, `viewer`), the status page's login cookie and the
//! Ingress rule (`ingress_only_from`). One middleware in front of every route;
//! `docs/security.md` explains the threats each answers.
//!
//! Order of the checks, each refusal counted in [`MONITOR_REJECTED`] by reason:
//! `/health` passes always (probes); a peer in `ingress_only_from` passes as a viewer
//! (the Ingress proxy authenticated the user); with `ingress_only_from` set, other
//! peers get 403 on the page routes (`peer`); a foreign `Host` gets 421 (`host`);
//! with tokens set, none or an unknown one gets 401 (`auth`) and a `metrics` token on
//! a page route 403 (`role`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use super::metrics::MONITOR_REJECTED;
use crate::config::{MonitorConfig, PeerRange};

/// The cookie that carries the page's login (an HMAC of the viewer token, never the token).
pub const SESSION_COOKIE: &str = "ha_ingestor_monitor";
/// How long the page's login cookie lasts in the browser.
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// After a refusal is logged, further ones of the same reason are summed for this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// What the cookie's HMAC signs: changing it logs every browser out.
const SESSION_LABEL: &[u8] = b"ha-ingestor monitor page session v1";

/// The peer's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What a route reveals, so who may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `/health`: always open.
    Open,
    /// `/metrics`, `/ready`: the `metrics` role or more.
    Metrics,
    /// The page, its assets, `/api/*`, `/alerts` and anything else: the `viewer` role.
    Viewer,
}

fn class_of(path: &str) -> Class {
    match path {
        "/health" => Class::Open,
        "/metrics" | "/ready" => Class::Metrics,
        _ => Class::Viewer,
    }
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `/metrics`, `/ready`, `/health`.
    Metrics,
    /// Every route.
    Viewer,
}

/// Why a request was refused: the `reason` label and the log's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// The `Host` header names neither this listener nor an allowed name.
    Host,
    /// No token, or one that matches neither role.
    Auth,
    /// A `metrics` token on a page route.
    Role,
    /// A page route from a peer outside `ingress_only_from`.
    Peer,
}

impl Reason {
    const ALL: [Reason; 4] = [Reason::Host, Reason::Auth, Reason::Role, Reason::Peer];

    fn as_str(self) -> &'static str {
        match self {
            Reason::Host => "host",
            Reason::Auth => "auth",
            Reason::Role => "role",
            Reason::Peer => "peer",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the middleware does with a request.
#[derive(Debug)]
enum Decision {
    /// Serve it.
    Pass,
    /// A valid `?token=` on the page: set the cookie and send the browser to `./` (the token leaves the address bar).
    Login,
    /// Refuse it with this answer.
    Refuse(Refusal),
}

/// A refusal: its reason and what the client is told.
#[derive(Debug)]
struct Refusal {
    reason: Reason,
    status: StatusCode,
    body: String,
    /// `WWW-Authenticate` for a 401.
    challenge: Option<&'static str>,
}

/// The access rules of one listener, built from `[monitor]`.
pub struct Access {
    /// `localhost`, `127.0.0.1` and `[::1]` are ours when listening on loopback or all interfaces.
    allow_localhost: bool,
    /// `[monitor] allowed_hosts`, lower case, without a trailing dot.
    allowed_hosts: Vec<String>,
    /// SHA-256 of the `metrics` token: compared in constant time, also its length hidden.
    metrics_digest: Option<[u8; 32]>,
    /// SHA-256 of the `viewer` token.
    viewer_digest: Option<[u8; 32]>,
    /// The cookie value a logged-in browser sends: hex HMAC-SHA256 of [`SESSION_LABEL`] keyed with the viewer token.
    session: Option<String>,
    /// `[monitor] ingress_only_from`.
    ingress_only_from: Vec<PeerRange>,
    /// Per reason: when a refusal was last logged and how many came since.
    log: Mutex<[(Option<Instant>, u64); Reason::ALL.len()]>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("allow_localhost", &self.allow_localhost)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("metrics_token", &self.metrics_digest.is_some())
            .field("viewer_token", &self.viewer_digest.is_some())
            .field("ingress_only_from", &self.ingress_only_from)
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The cookie value for `viewer_token`.
fn session_value(viewer_token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, viewer_token.as_bytes());
    hex(ring::hmac::sign(&key, SESSION_LABEL).as_ref())
}

impl Access {
    /// The rules of `cfg` (its tokens already read from their files).
    pub fn new(cfg: &MonitorConfig) -> Access {
        let ip = cfg.listen.ip();
        Access {
            allow_localhost: ip.is_loopback() || ip.is_unspecified(),
            allowed_hosts: cfg
                .allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            metrics_digest: cfg.metrics_token.as_deref().map(|t| digest(t.as_bytes())),
            viewer_digest: cfg.viewer_token.as_deref().map(|t| digest(t.as_bytes())),
            session: cfg.viewer_token.as_deref().map(session_value),
            ingress_only_from: cfg.ingress_only_from.clone(),
            log: Mutex::new([(None, 0); Reason::ALL.len()]),
        }
    }

    fn has_tokens(&self) -> bool {
        self.metrics_digest.is_some() || self.viewer_digest.is_some()
    }

    /// Whether `host` (a `Host` header) names this listener: any IP literal (a rebinding
    /// page can only send its own name), `localhost` on loopback, or an allowed name.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
        if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return v6.parse::<std::net::Ipv6Addr>().is_ok();
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return true;
        }
        (self.allow_localhost && name == "localhost") || self.allowed_hosts.contains(&name)
    }

    /// The role a presented token has, if any (both compared in constant time).
    fn role_of(&self, token: &str) -> Option<Role> {
        let presented = digest(token.as_bytes());
        let is = |d: &Option<[u8; 32]>| d.is_some_and(|d| bool::from(d.ct_eq(&presented)));
        // Both are compared, whichever matches, so the timing says nothing of which.
        let viewer = is(&self.viewer_digest);
        let metrics = is(&self.metrics_digest);
        if viewer {
            Some(Role::Viewer)
        } else if metrics {
            Some(Role::Metrics)
        } else {
            None
        }
    }

    fn session_valid(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.session else {
            return false;
        };
        cookie_values(headers, SESSION_COOKIE)
            .any(|value| bool::from(value.as_bytes().ct_eq(expected.as_bytes())))
    }

    fn trusted_peer(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|p| self.ingress_only_from.iter().any(|r| r.contains(p.ip())))
    }

    /// What to do with a request from `peer`.
    fn decide(&self, request: &Request, peer: Option<SocketAddr>) -> Decision {
        let path = request.uri().path();
        let class = class_of(path);
        if class == Class::Open {
            return Decision::Pass;
        }
        if !self.ingress_only_from.is_empty() {
            if self.trusted_peer(peer) {
                // The Ingress proxy authenticated the user and forwards the browser's own Host.
                return Decision::Pass;
            }
            if class == Class::Viewer {
                return Decision::Refuse(Refusal {
                    reason: Reason::Peer,
                    status: StatusCode::FORBIDDEN,
                    body: "forbidden: the status page is served only through the Ingress proxy \
                           ([monitor] ingress_only_from)\n"
                        .into(),
                    challenge: None,
                });
            }
        }
        let host = request_host(request);
        if !host.is_some_and(|h| self.host_allowed(h)) {
            let shown = host.map_or_else(|| "(none)".to_string(), |h| format!("{:?}", clip(h)));
            return Decision::Refuse(Refusal {
                reason: Reason::Host,
                status: StatusCode::MISDIRECTED_REQUEST,
                body: format!(
                    "misdirected request: this monitor does not answer to the host {shown}. \
                     If that is the name you reach it by (a container or service name, a DNS \
                     name Prometheus scrapes), add it to [monitor] allowed_hosts.\n"
                ),
                challenge: None,
            });
        }
        if !self.has_tokens() {
            return Decision::Pass;
        }
        if path == "/"
            && let Some(token) = query_token(request)
        {
            return match self.role_of(&token) {
                Some(Role::Viewer) => Decision::Login,
                Some(Role::Metrics) => Decision::Refuse(role_refusal()),
                None => Decision::Refuse(invalid_token()),
            };
        }
        let role = match bearer(request.headers()) {
            Some(token) => match self.role_of(token) {
                Some(role) => role,
                None => return Decision::Refuse(invalid_token()),
            },
            None if self.session_valid(request.headers()) => Role::Viewer,
            None => {
                return Decision::Refuse(Refusal {
                    reason: Reason::Auth,
                    status: StatusCode::UNAUTHORIZED,
                    body: "unauthorized: send `Authorization: Bearer <token>`; in a browser, \
                           open the page once as ./?token=<viewer token>\n"
                        .into(),
                    challenge: Some("Bearer realm=\"ha-ingestor monitor\""),
                });
            }
        };
        if class == Class::Viewer && role == Role::Metrics {
            return Decision::Refuse(role_refusal());
        }
        Decision::Pass
    }

    /// Counts a refusal and logs it: the first of its reason at once, then at most one
    /// line per [`LOG_INTERVAL`] with the number refused since.
    fn record(&self, reason: Reason, peer: Option<SocketAddr>, request: &Request) {
        metrics::counter!(MONITOR_REJECTED, "reason" => reason.as_str()).increment(1);
        let now = Instant::now();
        let report = {
            // A std Mutex: a few assignments, never held across an `.await`.
            let mut log = match self.log.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let entry = &mut log[reason.index()];
            match entry.0 {
                Some(last) if now.duration_since(last) < LOG_INTERVAL => {
                    entry.1 += 1;
                    None
                }
                _ => {
                    let since = entry.1;
                    *entry = (Some(now), 0);
                    Some(since)
                }
            }
        };
        let Some(suppressed) = report else {
            return;
        };
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string());
        let host = request_host(request).map(clip).unwrap_or("");
        let path = clip(request.uri().path());
        tracing::warn!(
            message = "Monitor request refused.",
            reason = reason.as_str(),
            %peer,
            host = ?host,
            path = ?path,
            refused_since_last_report = suppressed,
            next_report_after_s = LOG_INTERVAL.as_secs(),
        );
    }
}

fn role_refusal() -> Refusal {
    Refusal {
        reason: Reason::Role,
        status: StatusCode::FORBIDDEN,
        body: "forbidden: this token's role (metrics) may read /metrics, /ready and /health only\n"
            .into(),
        challenge: None,
    }
}

fn invalid_token() -> Refusal {
    Refusal {
        reason: Reason::Auth,
        status: StatusCode::UNAUTHORIZED,
        body: "unauthorized: the token matches no role\n".into(),
        challenge: Some("Bearer realm=\"ha-ingestor monitor\", error=\"invalid_token\""),
    }
}

/// At most 100 characters of a client's text, for logs and answers.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(100) {
        Some((i, _)) => text.get(..i).unwrap_or(text),
        None => text,
    }
}

/// The `Host` header, or the authority of an absolute-form request target.
fn request_host(request: &Request) -> Option<&str> {
    match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok(),
        None => request.uri().authority().map(|a| a.as_str()),
    }
}

/// `host` without its port: `name:9464` → `name`, `[::1]:9464` → `[::1]`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The values of every cookie called `name`.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The `token` query parameter (percent-decoded).
fn query_token(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// The middleware: runs the checks and answers a refusal or a login itself.
pub async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    match access.decide(&request, peer) {
        Decision::Pass => next.run(request).await,
        Decision::Login => login(&access, &request),
        Decision::Refuse(refusal) => {
            access.record(refusal.reason, peer, &request);
            let mut response = (
                refusal.status,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                refusal.body,
            )
                .into_response();
            if let Some(challenge) = refusal.challenge {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            response
        }
    }
}

/// `303 See Other` to `./` with the session cookie. The cookie has no `Path`, so the
/// browser scopes it to the folder the page was opened at (`/`, or a proxy's prefix);
/// `Secure` when a proxy says the browser came over HTTPS.
fn login(access: &Access, request: &Request) -> Response {
    let Some(value) = &access.session else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let https = request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        SESSION_MAX_AGE.as_secs(),
        if https { "; Secure" } else { "" }
    );
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "./"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
    )
        .into_response();
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            response.headers_mut().insert(header::SET_COOKIE, v);
            response
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(listen: &str, hosts: &[&str]) -> Access {
        Access::new(&MonitorConfig {
            listen: listen.parse().expect("address"),
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..MonitorConfig::default()
        })
    }

    #[test]
    fn host_names_are_matched_without_port_and_case() {
        let a = access("127.0.0.1:9464", &["Monitor.LAN"]);
        for ok in [
            "127.0.0.1:9464",
            "127.0.0.1",
            "[::1]:9464",
            "[::1]",
            "localhost",
            "LOCALHOST:9464",
            "192.168.1.5:9464",
            "monitor.lan",
            "monitor.lan.:80",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:9464",
            "localhost.evil.example",
            "monitor.lan.evil",
            "[not-an-ip]",
            "127.1",
            "",
        ] {
            assert!(!a.host_allowed(refused), "{refused}");
        }
        // On a LAN address, `localhost` cannot reach the listener: not one of its names.
        let lan = access("192.168.1.5:9464", &[]);
        assert!(!lan.host_allowed("localhost:9464"));
        assert!(lan.host_allowed("192.168.1.5:9464"));
        assert!(access("0.0.0.0:9464", &[]).host_allowed("localhost"));
    }

    #[test]
    fn tokens_map_to_roles_and_the_cookie_is_not_the_token() {
        let a = Access::new(&MonitorConfig {
            metrics_token: Some("metrics-token-0123456789".into()),
            viewer_token: Some("viewer-token-0123456789".into()),
            ..MonitorConfig::default()
        });
        assert_eq!(a.role_of("metrics-token-0123456789"), Some(Role::Metrics));
        assert_eq!(a.role_of("viewer-token-0123456789"), Some(Role::Viewer));
        assert_eq!(a.role_of("viewer-token-012345678"), None);
        assert_eq!(a.role_of(""), None);
        let session = a.session.clone().expect("a session value");
        assert_eq!(session.len(), 64);
        assert!(!session.contains("viewer-token"));
        assert_ne!(session, session_value("another-viewer-token"));
    }

    #[test]
    fn refusals_are_logged_once_per_interval_per_reason() {
        let a = access("127.0.0.1:9464", &[]);
        let request = Request::new(axum::body::Body::empty());
        a.record(Reason::Host, None, &request);
        a.record(Reason::Host, None, &request);
        a.record(Reason::Host, None, &request);
        a.record(Reason::Auth, None, &request);
        let log = a.log.lock().expect("lock");
        // The first of each reason was logged; two host refusals wait for the next report.
        assert_eq!(log[Reason::Host.index()].1, 2);
        assert!(log[Reason::Host.index()].0.is_some());
        assert_eq!(log[Reason::Auth.index()].1, 0);
        assert!(log[Reason::Auth.index()].0.is_some());
        assert!(log[Reason::Role.index()].0.is_none());
    }
}
