//! Who may read the monitor, over real sockets: the `Host` check (DNS rebinding), the
//! two token roles on every route, the page's cookie login and `ingress_only_from`
//! (two peers on loopback: a client bound to 127.0.0.2 and one on 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use ha_ingestor::config::{Config, MonitorConfig};
use ha_ingestor::monitor::Stats;
use ha_ingestor::monitor::http::serve_config;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HOST, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use tokio_util::sync::CancellationToken;

const METRICS_TOKEN: &str = "metrics-token-4f1c9a7e2b";
const VIEWER_TOKEN: &str = "viewer-token-8d3e6b0a51";

/// A running listener; stops when dropped.
struct Monitor {
    addr: SocketAddr,
    token: CancellationToken,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Monitor {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn start(cfg: &MonitorConfig) -> Monitor {
    ha_ingestor::ensure_crypto_provider();
    let token = CancellationToken::new();
    let (addr, fut) = serve_config(cfg, Arc::new(Stats::default()), token.clone())
        .await
        .expect("binds");
    tokio::spawn(fut);
    Monitor { addr, token }
}

/// `[monitor]` as a config file in `dir` would give it, with its token files beside it.
fn load(dir: &Path, monitor: &str) -> MonitorConfig {
    std::fs::write(dir.join("metrics.token"), format!("{METRICS_TOKEN}\n")).expect("written");
    std::fs::write(dir.join("viewer.token"), format!("{VIEWER_TOKEN}\n")).expect("written");
    let text = format!("[monitor]\nlisten = \"127.0.0.1:0\"\n{monitor}");
    Config::from_toml_with_env(&text, &dir.join("config.toml"), &[])
        .expect("config loads")
        .monitor
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A request the monitor must answer (whatever the status).
trait Ask {
    /// The reply.
    async fn answer(self) -> reqwest::Response;
    /// The reply's body.
    async fn reply_text(self) -> String;
}

impl Ask for reqwest::RequestBuilder {
    async fn answer(self) -> reqwest::Response {
        self.send().await.expect("answers")
    }

    async fn reply_text(self) -> String {
        self.answer().await.text().await.expect("body")
    }
}

/// The `ha_ingestor_monitor_rejected_total{reason}` value in a `/metrics` text, 0 when absent.
fn rejected(metrics: &str, reason: &str) -> f64 {
    let prefix = format!("ha_ingestor_monitor_rejected_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_foreign_host_is_refused_and_the_listeners_own_names_are_accepted() {
    let m = start(&MonitorConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        allowed_hosts: vec!["ingestor.lan".into()],
        ..MonitorConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let port = m.addr.port();
    let before = client.get(m.url("/metrics")).reply_text().await;

    // What a page served from a rebound name sends: its own name.
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "localhost.evil.example",
    ] {
        for path in ["/api/stats", "/", "/metrics", "/ready", "/alerts"] {
            let reply = client.get(m.url(path)).header(HOST, host).answer().await;
            assert_eq!(
                reply.status(),
                StatusCode::MISDIRECTED_REQUEST,
                "{host} {path}"
            );
            let body = reply.text().await.expect("body");
            assert!(body.contains("[monitor] allowed_hosts"), "{body}");
        }
    }
    // Probes need no name.
    let health = client
        .get(m.url("/health"))
        .header(HOST, "evil.example")
        .answer()
        .await;
    assert_eq!(health.status(), StatusCode::OK);

    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
        format!("INGESTOR.lan:{port}"),
        "ingestor.lan".to_string(),
    ] {
        let reply = client
            .get(m.url("/api/stats"))
            .header(HOST, &host)
            .answer()
            .await;
        assert_eq!(reply.status(), StatusCode::OK, "{host}");
    }

    let after = client.get(m.url("/metrics")).reply_text().await;
    // Other tests of this process may refuse hosts too: at least these 15 were counted.
    assert!(
        rejected(&after, "host") - rejected(&before, "host") >= 15.0,
        "{after}"
    );
}

/// Each route × {no token, metrics, viewer, unknown}: what each role may read.
#[tokio::test]
async fn tokens_open_routes_by_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load(
        dir.path(),
        "metrics_token_file = \"metrics.token\"\nviewer_token_file = \"viewer.token\"\n",
    );
    let m = start(&cfg).await;
    let client = reqwest::Client::new();
    let metrics_routes = ["/metrics", "/ready"];
    let viewer_routes = ["/", "/page.js", "/page.css", "/api/stats", "/alerts"];
    let passed = |s: StatusCode| s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN;

    for path in metrics_routes
        .iter()
        .chain(&viewer_routes)
        .chain(&["/health"])
    {
        let open = *path == "/health";
        let is_viewer_route = viewer_routes.contains(path);
        for (who, token) in [
            ("none", None),
            ("metrics", Some(METRICS_TOKEN)),
            ("viewer", Some(VIEWER_TOKEN)),
            ("wrong", Some("not-a-token-of-this-monitor")),
        ] {
            let mut request = client.get(m.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let reply = request.answer().await;
            let status = reply.status();
            let challenge = reply
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match (open, who) {
                (true, _) => assert_eq!(status, StatusCode::OK, "{path} as {who}"),
                (false, "none" | "wrong") => {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} as {who}");
                    assert!(
                        challenge
                            .as_deref()
                            .is_some_and(|c| c.starts_with("Bearer")),
                        "{path} as {who}: {challenge:?}"
                    );
                }
                (false, "metrics") if is_viewer_route => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{path} as {who}");
                }
                (false, _) => assert!(passed(status), "{path} as {who}: {status}"),
            }
        }
    }
    let metrics = client
        .get(m.url("/metrics"))
        .bearer_auth(VIEWER_TOKEN)
        .reply_text()
        .await;
    assert!(rejected(&metrics, "auth") >= 1.0, "{metrics}");
    assert!(rejected(&metrics, "role") >= 1.0, "{metrics}");
    // No answer names a token.
    let refused = client
        .get(m.url("/api/stats"))
        .bearer_auth(METRICS_TOKEN)
        .reply_text()
        .await;
    assert!(!refused.contains(METRICS_TOKEN) && !refused.contains(VIEWER_TOKEN));
}

#[tokio::test]
async fn the_page_logs_in_once_with_a_query_token_and_then_uses_a_cookie() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load(
        dir.path(),
        "metrics_token_file = \"metrics.token\"\nviewer_token_file = \"viewer.token\"\n",
    );
    let m = start(&cfg).await;
    let client = no_redirects();

    let login = client
        .get(m.url(&format!("/?token={VIEWER_TOKEN}")))
        .answer()
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        login.headers().get(LOCATION).and_then(|v| v.to_str().ok()),
        Some("./"),
        "relative, so it works under a proxy's prefix"
    );
    let cookie = login
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("Path="),
        "scoped to the page's folder: {cookie}"
    );
    assert!(!cookie.contains(VIEWER_TOKEN), "{cookie}");
    let pair = cookie.split(';').next().expect("name=value").to_string();

    for path in ["/", "/page.js", "/api/stats", "/alerts", "/metrics"] {
        let reply = client.get(m.url(path)).header(COOKIE, &pair).answer().await;
        assert_eq!(reply.status(), StatusCode::OK, "{path} with the cookie");
    }
    // A forged cookie, or none, is refused.
    let (name, value) = pair.split_once('=').expect("name=value");
    let forged = format!("{name}={}", value.replace(|c: char| c != '0', "0"));
    for cookie in [forged.as_str(), "other=1"] {
        let reply = client
            .get(m.url("/api/stats"))
            .header(COOKIE, cookie)
            .answer()
            .await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{cookie}");
    }
    // The metrics token cannot log in, an unknown one neither.
    let reply = client
        .get(m.url(&format!("/?token={METRICS_TOKEN}")))
        .answer()
        .await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    let reply = client
        .get(m.url("/?token=nope-not-a-token-at-all"))
        .answer()
        .await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert!(reply.headers().get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn ingress_only_from_serves_the_page_to_the_proxy_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A viewer token too: the Ingress peer needs none (the proxy authenticated the user).
    let cfg = load(
        dir.path(),
        "ingress_only_from = [\"127.0.0.2\"]\nmetrics_token_file = \"metrics.token\"\nviewer_token_file = \"viewer.token\"\n",
    );
    let m = start(&cfg).await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
            .build()
            .expect("client")
    };
    let proxy = from([127, 0, 0, 2]);
    let other = from([127, 0, 0, 1]);

    for path in ["/", "/page.js", "/api/stats", "/alerts"] {
        // The proxy forwards the browser's own Host: not checked for it.
        let reply = proxy
            .get(m.url(path))
            .header(HOST, "homeassistant.local:8123")
            .header("x-ingress-path", "/api/hassio_ingress/abc")
            .answer()
            .await;
        assert_eq!(reply.status(), StatusCode::OK, "{path} from the proxy");
        // Another peer is refused even with the viewer token.
        let reply = other
            .get(m.url(path))
            .bearer_auth(VIEWER_TOKEN)
            .answer()
            .await;
        assert_eq!(
            reply.status(),
            StatusCode::FORBIDDEN,
            "{path} from another peer"
        );
    }
    // Probes and the scrape stay reachable for others (Prometheus uses the mapped port).
    let health = other.get(m.url("/health")).answer().await;
    assert_eq!(health.status(), StatusCode::OK);
    let scrape = other
        .get(m.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .answer()
        .await;
    assert_eq!(scrape.status(), StatusCode::OK);
    let text = scrape.text().await.expect("body");
    assert!(rejected(&text, "peer") >= 4.0, "{text}");
}

#[test]
fn tokens_are_checked_at_load_and_never_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("short.token"), "abc123\n").expect("written");
    let text = "[monitor]\nviewer_token_file = \"short.token\"\n";
    let error = Config::from_toml_with_env(text, &dir.path().join("c.toml"), &[])
        .expect_err("a short token is refused")
        .to_string();
    assert!(error.contains("monitor.viewer_token"), "{error}");
    assert!(!error.contains("abc123"), "{error}");
    let error = Config::from_toml_with_env(
        "[monitor]\nviewer_token_file = \"absent.token\"\n",
        &dir.path().join("c.toml"),
        &[],
    )
    .expect_err("a missing file is refused")
    .to_string();
    assert!(error.contains("monitor.viewer_token_file"), "{error}");
    let cfg = load(dir.path(), "viewer_token_file = \"viewer.token\"\n");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains(VIEWER_TOKEN), "{shown}");
    assert_eq!(cfg.viewer_token.as_deref(), Some(VIEWER_TOKEN));

    // Open and reachable from elsewhere: `check` and start-up warn; on loopback they do not.
    let exposed = MonitorConfig {
        listen: "0.0.0.0:9464".parse().expect("address"),
        ..MonitorConfig::default()
    };
    let warnings = exposed.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not loopback") && w.contains("viewer_token_file")),
        "{warnings:?}"
    );
    assert!(MonitorConfig::default().warnings().is_empty());
    let error = Config::from_toml_with_env(
        "[monitor]\nallowed_hosts = [\"prometheus:9090\"]\n",
        &dir.path().join("c.toml"),
        &[],
    )
    .expect_err("a port in a host name is refused")
    .to_string();
    assert!(error.contains("ports are not compared"), "{error}");

    // The container route docs/security.md gives: names and tokens from the environment.
    let env = [
        (
            "HA_INGESTOR_MONITOR__ALLOWED_HOSTS".to_string(),
            "[\"ha-ingestor\"]".to_string(),
        ),
        (
            "HA_INGESTOR_MONITOR__VIEWER_TOKEN".to_string(),
            VIEWER_TOKEN.to_string(),
        ),
    ];
    let cfg = Config::from_toml_with_env("", &dir.path().join("c.toml"), &env)
        .expect("overrides apply")
        .monitor;
    assert_eq!(cfg.allowed_hosts, ["ha-ingestor"]);
    assert_eq!(cfg.viewer_token.as_deref(), Some(VIEWER_TOKEN));
}
