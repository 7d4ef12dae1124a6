//! Clear-text credentials: refused to a host that is not loopback unless that peer's
//! `allow_insecure_transport` is set (then allowed and warned about), for every peer
//! that carries credentials; TLS settings that contradict each other; TLS file paths
//! taken from the config file's folder.

use std::path::Path;

use ha_ingestor::config::{Config, ConfigError};

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(text, Path::new("/etc/ha-ingestor/c.toml"), &[])
}

/// The key an `Invalid` error names, and its message.
fn refused(text: &str) -> (String, String) {
    match load(text) {
        Err(ConfigError::Invalid { key, message }) => (key, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn ha(url: &str, extra: &str) -> String {
    format!("[homeassistant]\nurl = \"{url}\"\ntoken = \"s3cret-token\"\n{extra}")
}

#[test]
fn a_token_over_ws_to_a_remote_host_is_refused_naming_the_key_to_set() {
    let (key, message) = refused(&ha("ws://10.0.0.5:8123", ""));
    assert_eq!(key, "homeassistant.allow_insecure_transport");
    assert!(
        message.contains("10.0.0.5") && message.contains("clear text"),
        "{message}"
    );
    assert!(
        message.contains("homeassistant.allow_insecure_transport = true"),
        "{message}"
    );
    assert!(!message.contains("s3cret-token"), "{message}");
    // http:// means ws:// too.
    assert_eq!(refused(&ha("http://10.0.0.5:8123", "")).0, key);

    let allowed = load(&ha(
        "ws://10.0.0.5:8123",
        "allow_insecure_transport = true\n",
    ))
    .expect("allowed with the flag");
    let warnings = allowed.transport_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("homeassistant.allow_insecure_transport:")
            && warnings[0].contains("10.0.0.5"),
        "{warnings:?}"
    );
}

#[test]
fn loopback_tls_and_the_supervisor_need_no_flag_but_other_names_do() {
    for url in [
        "ws://127.0.0.1:8123",
        "ws://127.3.2.1:8123",
        "ws://localhost:8123",
        "ws://LOCALHOST:8123",
        "ws://[::1]:8123",
        "wss://10.0.0.5:8123",
        "https://homeassistant.local:8123",
        "ws://supervisor/core/websocket",
    ] {
        let cfg = load(&ha(url, "")).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(cfg.transport_warnings().is_empty(), "{url}");
    }
    // Names are not resolved: one that points at loopback still counts as remote.
    for url in [
        "ws://ip6-localhost:8123",
        "ws://localhost.example:8123",
        "ws://supervisor.lan:8123",
    ] {
        assert_eq!(
            refused(&ha(url, "")).0,
            "homeassistant.allow_insecure_transport",
            "{url}"
        );
    }
}

#[test]
fn influxdb_credentials_over_http_are_checked_per_target() {
    let (key, message) = refused(
        "[influxdb]\nurl = \"http://nas.lan:8086\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"pw\"\n",
    );
    assert_eq!(key, "influxdb.allow_insecure_transport");
    assert!(message.contains("nas.lan"), "{message}");
    // A v2 token, and credentials in the URL itself.
    refused(
        "[influxdb]\nurl = \"http://nas.lan:8086\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\n",
    );
    refused("[influxdb]\nurl = \"http://u:pw@nas.lan:8086\"\ndatabase = \"d\"\n");
    // No credentials, https, or loopback: fine.
    load("[influxdb]\nurl = \"http://nas.lan:8086\"\ndatabase = \"d\"\n").expect("no credentials");
    load("[influxdb]\nurl = \"https://nas.lan:8086\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"pw\"\n")
        .expect("https");
    // The second target is checked on its own and named.
    let two = "[[influxdb]]\nname = \"local\"\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"pw\"\n\
               [[influxdb]]\nname = \"far\"\nurl = \"http://far.example:8086\"\ndatabase = \"d\"\nusername = \"u\"\npassword = \"pw\"\n";
    let (key, message) = refused(two);
    assert_eq!(key, "influxdb.allow_insecure_transport");
    assert!(message.contains("\"far\""), "{message}");
    let allowed = load(&two.replace(
        "name = \"far\"\n",
        "name = \"far\"\nallow_insecure_transport = true\n",
    ))
    .expect("allowed for that target");
    assert_eq!(allowed.transport_warnings().len(), 1);
}

#[test]
fn an_mqtt_password_over_plain_mqtt_is_checked_per_broker() {
    let broker = |url: &str, extra: &str| {
        format!(
            "[[mqtt]]\nname = \"b\"\nurl = \"{url}\"\nusername = \"u\"\npassword = \"pw\"\n{extra}\
             [[mqtt.subscriptions]]\nname = \"s\"\ntopic = \"t/#\"\ndecoder = \"json\"\n"
        )
    };
    let (key, _) = refused(&broker("mqtt://broker.lan:1883", ""));
    assert_eq!(key, "mqtt[b].allow_insecure_transport");
    load(&broker("mqtts://broker.lan:8883", "")).expect("TLS");
    load(&broker("mqtt://127.0.0.1:1883", "")).expect("loopback");
    let allowed = load(&broker(
        "mqtt://broker.lan:1883",
        "allow_insecure_transport = true\n",
    ))
    .expect("allowed");
    assert_eq!(allowed.transport_warnings().len(), 1);
}

#[test]
fn notifier_credentials_in_clear_are_refused() {
    let hook = |url: &str, extra: &str| {
        format!("[[alerts.notifiers]]\ntype = \"webhook\"\nname = \"h\"\nurl = \"{url}\"\n{extra}")
    };
    let auth = "headers = { Authorization = \"Bearer x\" }\n";
    assert_eq!(
        refused(&hook("http://hooks.example/x", auth)).0,
        "alerts.notifiers[0].allow_insecure_transport"
    );
    refused(&hook("http://me:pw@hooks.example/x", ""));
    refused(&hook(
        "http://hooks.example/x",
        "headers = { X-Api-Key = \"k\" }\n",
    ));
    load(&hook(
        "http://hooks.example/x",
        "headers = { X-Source = \"ingestor\" }\n",
    ))
    .expect("no credential header");
    load(&hook("https://hooks.example/x", auth)).expect("https");
    load(&hook("http://127.0.0.1:8080/x", auth)).expect("loopback");
    load(&hook(
        "http://hooks.example/x",
        &format!("{auth}allow_insecure_transport = true\n"),
    ))
    .expect("allowed");

    let mqtt = |extra: &str| {
        format!(
            "[[alerts.notifiers]]\ntype = \"mqtt\"\nname = \"m\"\nhost = \"broker.lan\"\nusername = \"u\"\npassword = \"pw\"\n{extra}"
        )
    };
    assert_eq!(
        refused(&mqtt("")).0,
        "alerts.notifiers[0].allow_insecure_transport"
    );
    load(&mqtt("tls = {}\n")).expect("TLS");
    load(&mqtt("allow_insecure_transport = true\n")).expect("allowed");
}

#[test]
fn skipping_verification_together_with_a_ca_file_is_an_error() {
    let (key, message) = refused(
        "[influxdb]\nurl = \"https://nas.lan:8086\"\ndatabase = \"d\"\n[influxdb.tls]\nca_file = \"ca.pem\"\ninsecure_skip_verify = true\n",
    );
    assert_eq!(key, "influxdb.tls.insecure_skip_verify");
    assert!(message.contains("ca_file"), "{message}");
    refused(&ha(
        "wss://h:8123",
        "[homeassistant.tls]\nca_file = \"ca.pem\"\ninsecure_skip_verify = true\n",
    ));
    let cfg = load(&ha(
        "wss://h:8123",
        "[homeassistant.tls]\ninsecure_skip_verify = true\n",
    ))
    .expect("skip alone is allowed");
    assert_eq!(
        cfg.tls_unverified_peers(),
        ["homeassistant[homeassistant].tls"]
    );
}

#[test]
fn tls_paths_are_taken_from_the_config_files_folder() {
    let text = "[homeassistant]\nurl = \"wss://h:8123\"\ntoken = \"t\"\n[homeassistant.tls]\nca_file = \"certs/ha.pem\"\n\
                [influxdb]\nurl = \"https://h:8086\"\ndatabase = \"d\"\n[influxdb.tls]\nca_file = \"/abs/influx.pem\"\n\
                [[mqtt]]\nname = \"b\"\nurl = \"mqtts://h\"\n[mqtt.tls]\ncert_file = \"c.pem\"\nkey_file = \"c.key\"\n\
                [[mqtt.subscriptions]]\nname = \"s\"\ntopic = \"t/#\"\ndecoder = \"json\"\n\
                [[alerts.notifiers]]\ntype = \"webhook\"\nname = \"h\"\nurl = \"https://x\"\ntls = { ca_file = \"hook.pem\" }\n";
    let cfg = load(text).expect("valid");
    let base = Path::new("/etc/ha-ingestor");
    assert_eq!(
        cfg.homeassistant[0].tls.ca_file.as_deref(),
        Some(base.join("certs/ha.pem").as_path())
    );
    assert_eq!(
        cfg.influxdb.as_ref().and_then(|i| i.tls.ca_file.as_deref()),
        Some(Path::new("/abs/influx.pem"))
    );
    assert_eq!(
        cfg.mqtt[0].tls.cert_file.as_deref(),
        Some(base.join("c.pem").as_path())
    );
    assert_eq!(
        cfg.mqtt[0].tls.key_file.as_deref(),
        Some(base.join("c.key").as_path())
    );
    match &cfg.alerts.notifiers[0] {
        ha_ingestor::config::alerts::NotifierConfig::Webhook { tls, .. } => {
            assert_eq!(
                tls.ca_file.as_deref(),
                Some(base.join("hook.pem").as_path())
            )
        }
        other => panic!("{other:?}"),
    }
}
