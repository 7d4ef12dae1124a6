//! The status page and `/api/stats` against a running topology (simulator → pipeline →
//! buffer → file sink), the page driven in a real headless Chromium over the DevTools
//! protocol: it loads, its chart gains data points, its panels show what the API says;
//! a screenshot is saved under the target's temp dir (`monitor-page/status-page.png`).
//!
//! Needs `chromium` (Debian package; `scripts/test` installs it when missing).

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use ha_ingestor::app::{self, Running};
use ha_ingestor::config::Config;
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use serde_json::{Value, json};
use support::wait_for;
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "page-test-token";
const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Simulator (endless, 40 events/s) and a topology writing files, with the monitor on a free port.
async fn start(dir: &Path) -> (SimulatorHandle, Running, String) {
    ha_ingestor::ensure_crypto_provider();
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 30,
            rate: 40.0,
            token: TOKEN.into(),
            seed: 11,
            max_events: None,
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");
    let config = dir.join("page.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\
             [buffer]\nmax_bytes = {MAX_BYTES}\n[monitor]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("data"),
            sim.url()
        ),
    )
    .expect("config written");
    let cfg = Config::load(&config).expect("config loads");
    let running = app::start(&cfg).await.expect("topology starts");
    let base = format!(
        "http://{}",
        running.monitor_addr().expect("monitor enabled")
    );
    (sim, running, base)
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let text = client
        .get(url)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_stats_reports_rates_connections_buffer_and_entities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sim, running, base) = start(dir.path()).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/api/stats");

    let s = wait_for(
        "events and writes in /api/stats",
        Duration::from_secs(30),
        || {
            let (client, url) = (&client, &url);
            async move {
                let s = get_json(client, url).await;
                (s["totals"]["received"].as_u64()? >= 100 && s["totals"]["written"].as_u64()? > 0)
                    .then_some(s)
            }
        },
    )
    .await;

    assert_eq!(s["connections"]["homeassistant"]["connected"], true, "{s}");
    let ha = &s["rates"]["source"]["homeassistant"];
    for window in ["1m", "5m", "15m"] {
        let r = ha[window].as_f64().expect("rate");
        // The simulator sends 40 events/s; over a few seconds the average is near that.
        assert!(r > 5.0 && r < 200.0, "{window}: {r} in {s}");
    }
    let types = s["rates"]["event_type"].as_object().expect("event types");
    assert!(types.contains_key("state_changed"), "{types:?}");
    let domains = s["rates"]["domain"].as_object().expect("domains");
    assert!(!domains.is_empty());
    assert!(domains.keys().all(|d| !d.contains('.')), "{domains:?}");
    let top = s["rates"]["top_entities"].as_array().expect("entities");
    assert!(!top.is_empty() && top.len() <= 10, "{top:?}");
    let rates: Vec<f64> = top.iter().filter_map(|e| e["rate"].as_f64()).collect();
    assert!(
        rates.windows(2).all(|w| w[0] >= w[1]),
        "highest first: {rates:?}"
    );
    assert!(
        top.iter().all(|e| e["entity_id"]
            .as_str()
            .is_some_and(|id| domains.contains_key(id.split('.').next().unwrap_or("")))),
        "every top entity's domain is counted: {top:?} {domains:?}"
    );
    assert!(s["rates"]["total"]["written"]["1m"].as_f64().expect("rate") > 0.0);

    let buffer = &s["buffer"];
    assert_eq!(buffer["max_bytes"].as_u64(), Some(MAX_BYTES), "{s}");
    assert_eq!(buffer["when_full"], "block");
    let fill = buffer["fill_percent"].as_f64().expect("fill");
    let bytes = buffer["bytes"].as_u64().expect("bytes");
    assert!((fill - bytes as f64 * 100.0 / MAX_BYTES as f64).abs() < 1e-9);
    assert!(s["buffer_error"].is_null());
    assert_eq!(s["sink"]["name"], "file");
    assert!(s["errors"].is_array());

    // The history fills at one point per 5 s; the uptime moves on.
    let later = wait_for("a second history point", Duration::from_secs(30), || {
        let (client, url) = (&client, &url);
        async move {
            let s = get_json(client, url).await;
            (s["rates"]["history"].as_array()?.len() >= 2).then_some(s)
        }
    })
    .await;
    assert!(later["uptime_seconds"].as_f64() > s["uptime_seconds"].as_f64());
    assert!(
        later["rates"]["history"][1]["received"]
            .as_f64()
            .expect("rate")
            > 0.0
    );
    running.stop().await;
}

/// Chromium, killed (its own process only, by its id) when dropped, also on panic; its helper
/// processes end with it.
struct Browser {
    child: tokio::process::Child,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Browser {
    /// Waits for chromium and every helper started with its profile to be gone.
    async fn stopped(mut self) {
        let exited = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if exited.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        let profile = self.profile.path().display().to_string();
        wait_for(
            "chromium's helpers to exit",
            Duration::from_secs(10),
            || {
                let profile = profile.clone();
                async move { (!processes_mention(&profile)).then_some(()) }
            },
        )
        .await;
    }
}

/// Whether any process's command line contains `needle`.
fn processes_mention(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
            })
        })
        .unwrap_or(false)
}

/// Starts headless Chromium on a free DevTools port and returns it with the port.
async fn launch_chromium() -> (Browser, u16) {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1180",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts: install it with `apt-get install chromium` (scripts/test does)");
    let stderr = child.stderr.take().expect("stderr piped");
    let browser = Browser { child, profile };
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                let port = rest.split('/').next()?.rsplit(':').next()?.parse().ok()?;
                return Some(port);
            }
        }
        None
    })
    .await
    .expect("chromium announces its DevTools port within 30 s")
    .expect("chromium printed its DevTools address");
    // Keep reading so chromium never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (browser, port)
}

/// A minimal DevTools-protocol client for one page target.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Cdp {
    async fn connect(port: u16) -> Cdp {
        let client = reqwest::Client::new();
        let list = format!("http://127.0.0.1:{port}/json/list");
        let ws_url = wait_for("a page target", Duration::from_secs(20), || {
            let (client, list) = (&client, &list);
            async move {
                let targets = get_json(client, list).await;
                targets.as_array()?.iter().find_map(|t| {
                    (t["type"] == "page")
                        .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
                        .flatten()
                })
            }
        })
        .await;
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .expect("DevTools websocket");
        Cdp { ws, next_id: 0 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to DevTools");
        let reply = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(frame) = self.ws.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
                // Events (no id) and other replies are not ours.
                if v["id"].as_u64() == Some(id) {
                    return v;
                }
            }
            panic!("DevTools connection closed during {method}");
        })
        .await
        .unwrap_or_else(|_| panic!("no DevTools reply to {method} within 30 s"));
        assert!(reply["error"].is_null(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let data = r["data"].as_str().expect("screenshot data");
        let png = base64_decode(data);
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("screenshot written");
    }
}

/// Standard base64 (what DevTools sends), without padding checks.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Evaluates `expression` in the page every 50 ms until `check` accepts its value; panics after `timeout`.
async fn wait_page<T>(
    cdp: &mut Cdp,
    what: &str,
    timeout: Duration,
    expression: &str,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let v = cdp.eval(expression).await;
        if let Some(t) = check(&v) {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last value {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("monitor-page");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_loads_and_updates_in_headless_chromium() {
    // The global subscriber below and the process-wide ring of recent errors it fills
    // must be this test's alone: it runs in a process of its own.
    if !support::alone::in_own_process(concat!(
        module_path!(),
        "::status_page_loads_and_updates_in_headless_chromium"
    ))
    .await
    {
        return;
    }
    // The page's "recent errors" come from the log layer, as in the binary.
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber =
            tracing_subscriber::registry().with(ha_ingestor::monitor::page::RecentErrorsLayer);
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sim, running, base) = start(dir.path()).await;
    let client = reqwest::Client::new();
    tracing::warn!(
        message = "Page test warning.",
        detail = "shown under recent errors"
    );

    let (browser, port) = launch_chromium().await;
    let mut cdp = Cdp::connect(port).await;
    cdp.call("Page.enable", json!({})).await;
    cdp.call("Page.navigate", json!({"url": format!("{base}/")}))
        .await;

    // Loaded: the script ran and rendered an answer of /api/stats.
    let points_now = "Number(document.getElementById('rate-chart').dataset.points)";
    wait_page(
        &mut cdp,
        "the page's first updates",
        Duration::from_secs(30),
        "Number(document.body?.dataset.updates ?? 0)",
        |v| (v.as_u64()? >= 2).then_some(()),
    )
    .await;
    let a = cdp.eval(points_now).await.as_u64().expect("a count");
    // The chart gains points as the page polls.
    let b = wait_page(
        &mut cdp,
        "the chart to gain points",
        Duration::from_secs(20),
        points_now,
        |v| v.as_u64().filter(|&b| b >= a + 2),
    )
    .await;
    assert!(b > a);
    // Something was drawn: the canvas is not blank.
    let inked = cdp
        .eval(
            "(() => { const c = document.getElementById('rate-chart'); \
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()",
        )
        .await
        .as_u64()
        .expect("pixel count");
    assert!(inked > 1000, "{inked} drawn pixels");

    // Panels show what the API says.
    let text = |id: &str| format!("document.getElementById('{id}').innerText");
    let connections = cdp.eval(&text("connections")).await;
    let connections = connections.as_str().expect("text");
    assert!(
        connections.contains("homeassistant") && connections.contains("connected"),
        "{connections}"
    );
    // The entities and domains panels list what the API ranks (the ranking moves between
    // two reads, so: the page's panel holds one of the API's top entities and its top domain).
    let s = get_json(&client, &format!("{base}/api/stats")).await;
    let top: Vec<String> = s["rates"]["top_entities"]
        .as_array()
        .expect("entities")
        .iter()
        .filter_map(|e| e["entity_id"].as_str().map(str::to_string))
        .collect();
    assert!(!top.is_empty(), "{s}");
    wait_page(
        &mut cdp,
        "one of the API's top entities on the page",
        Duration::from_secs(10),
        &text("entities"),
        |v| {
            let shown = v.as_str()?;
            top.iter().any(|e| shown.contains(e.as_str())).then_some(())
        },
    )
    .await;
    let top_domain = s["rates"]["domain"]
        .as_object()
        .expect("domains")
        .iter()
        .filter_map(|(d, r)| Some((d.clone(), r["1m"].as_f64()?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("a domain")
        .0;
    wait_page(
        &mut cdp,
        "the API's top domain on the page",
        Duration::from_secs(10),
        &text("domains"),
        |v| v.as_str()?.contains(top_domain.as_str()).then_some(()),
    )
    .await;
    let received = cdp.eval(&text("rate-received")).await;
    let received: f64 = received
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("a rate, not {received}"));
    assert!(received > 0.0);
    let buffer = cdp.eval(&text("buffer-fill")).await;
    assert!(
        buffer.as_str().is_some_and(|b| b.ends_with('%')),
        "{buffer}"
    );
    let errors = cdp.eval(&text("errors")).await;
    assert!(
        errors
            .as_str()
            .is_some_and(|e| e.contains("Page test warning. detail=shown under recent errors")),
        "{errors}"
    );
    // The alerts panel follows `/alerts`: "alerts unavailable" while it is missing.
    let alerts_status = client
        .get(format!("{base}/alerts"))
        .send()
        .await
        .expect("request")
        .status();
    let alerts = cdp.eval(&text("alerts")).await;
    let alerts = alerts.as_str().expect("text").to_string();
    if alerts_status == reqwest::StatusCode::NOT_FOUND {
        assert_eq!(alerts, "alerts unavailable");
    } else {
        assert_ne!(alerts, "alerts unavailable");
        assert_ne!(alerts, "loading…");
    }

    // For the documentation's screenshot, a longer chart: PAGE_SCREENSHOT_SETTLE_SECS=60.
    if let Some(secs) = std::env::var("PAGE_SCREENSHOT_SETTLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let path = screenshot_dir().join("status-page.png");
    cdp.screenshot(&path).await;
    eprintln!("screenshot: {}", path.display());
    // Asks chromium to close (no reply comes: the connection ends with it).
    let close = json!({"id": 0, "method": "Browser.close"});
    let _ = cdp.ws.send(Message::text(close.to_string())).await;
    browser.stopped().await;
    running.stop().await;
}

/// The prefix Home Assistant's Ingress puts before the add-on's paths.
const INGRESS_PREFIX: &str = "/api/hassio_ingress/Xk3f9_test-token";

/// A stand-in for the Supervisor's Ingress hop: serves `INGRESS_PREFIX/<path>` by asking the
/// monitor for `/<path>` from 127.0.0.2, adding `X-Ingress-Path` and passing the browser's
/// `Host` on, as the Supervisor does; anything outside the prefix is a 404.
async fn start_ingress_proxy(
    monitor: SocketAddr,
) -> (SocketAddr, tokio_util::sync::CancellationToken) {
    use axum::body::Body;
    use axum::http::{Request, Response, StatusCode, header};
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let forward = move |request: Request<Body>| {
        let client = client.clone();
        async move {
            let path_and_query = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let Some(rest) = path_and_query.strip_prefix(INGRESS_PREFIX) else {
                return Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Body::from("outside the ingress prefix"))
                    .expect("response");
            };
            let rest = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            };
            let mut upstream = client
                .get(format!("http://{monitor}{rest}"))
                .header("x-ingress-path", INGRESS_PREFIX);
            if let Some(host) = request.headers().get(header::HOST) {
                upstream = upstream.header(header::HOST, host.clone());
            }
            let reply = upstream
                .send()
                .await
                .expect("the monitor answers the proxy");
            let mut response = Response::builder().status(reply.status().as_u16());
            for name in [header::CONTENT_TYPE, header::LOCATION, header::SET_COOKIE] {
                if let Some(value) = reply.headers().get(name.as_str()) {
                    response = response.header(name, value.as_bytes());
                }
            }
            let body = reply.bytes().await.expect("body");
            response.body(Body::from(body)).expect("response")
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy binds");
    let addr = listener.local_addr().expect("address");
    let stop = tokio_util::sync::CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(until.cancelled_owned())
            .await
            .expect("proxy serves");
    });
    (addr, stop)
}

/// Under Home Assistant's Ingress the page is served under a prefix the monitor never sees:
/// every URL the page uses must be relative. Driven in Chromium through a prefix-stripping
/// proxy from a second loopback address, the only peer `ingress_only_from` admits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_works_under_an_ingress_prefix_in_headless_chromium() {
    ha_ingestor::ensure_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("viewer.token"),
        "viewer-token-for-ingress-test\n",
    )
    .expect("written");
    // A viewer token is set: the Ingress peer needs none (Home Assistant authenticated the user).
    let cfg = Config::from_toml_with_env(
        "[monitor]\nlisten = \"127.0.0.1:0\"\ningress_only_from = [\"127.0.0.2\"]\n\
         viewer_token_file = \"viewer.token\"\n",
        &dir.path().join("config.toml"),
        &[],
    )
    .expect("config loads")
    .monitor;
    let stats = std::sync::Arc::new(ha_ingestor::monitor::Stats::default());
    stats.register_source("homeassistant");
    let stop = tokio_util::sync::CancellationToken::new();
    let (monitor, serving) = ha_ingestor::monitor::http::serve_config(&cfg, stats, stop.clone())
        .await
        .expect("monitor binds");
    tokio::spawn(serving);
    let (proxy, stop_proxy) = start_ingress_proxy(monitor).await;
    let page = format!("http://{proxy}{INGRESS_PREFIX}/");
    let client = reqwest::Client::new();

    // The API under the prefix, and not around the proxy.
    let s = get_json(&client, &format!("{page}api/stats")).await;
    assert_eq!(s["connections"]["homeassistant"]["connected"], false, "{s}");
    let direct = client
        .get(format!("http://{monitor}/api/stats"))
        .send()
        .await
        .expect("answers");
    assert_eq!(direct.status(), reqwest::StatusCode::FORBIDDEN);

    let (browser, port) = launch_chromium().await;
    let mut cdp = Cdp::connect(port).await;
    cdp.call("Page.enable", json!({})).await;
    cdp.call("Page.navigate", json!({ "url": page })).await;
    wait_page(
        &mut cdp,
        "the page's updates under the prefix",
        Duration::from_secs(30),
        "Number(document.body?.dataset.updates ?? 0)",
        |v| (v.as_u64()? >= 2).then_some(()),
    )
    .await;
    let connections = cdp
        .eval("document.getElementById('connections').innerText")
        .await;
    assert!(
        connections
            .as_str()
            .is_some_and(|c| c.contains("homeassistant")),
        "{connections}"
    );
    // The alerts panel was filled from `alerts` under the prefix too.
    wait_page(
        &mut cdp,
        "the alerts panel",
        Duration::from_secs(20),
        "document.getElementById('alerts').innerText",
        |v| {
            let text = v.as_str()?;
            (text != "loading…" && text != "alerts unavailable").then_some(())
        },
    )
    .await;
    // Everything the page fetched stayed under the prefix.
    let loaded = cdp
        .eval("JSON.stringify(performance.getEntriesByType('resource').map(e => e.name))")
        .await;
    let loaded: Vec<String> =
        serde_json::from_str(loaded.as_str().expect("a JSON string")).expect("a list of URLs");
    for wanted in ["page.js", "page.css", "api/stats", "alerts"] {
        assert!(
            loaded.iter().any(|u| u == &format!("{page}{wanted}")),
            "{wanted} under the prefix: {loaded:?}"
        );
    }
    assert!(
        loaded.iter().all(|u| u.starts_with(&page)),
        "a URL outside the prefix: {loaded:?}"
    );
    let close = json!({"id": 0, "method": "Browser.close"});
    let _ = cdp.ws.send(Message::text(close.to_string())).await;
    browser.stopped().await;
    stop_proxy.cancel();
    stop.cancel();
}
