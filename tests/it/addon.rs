//! The Home Assistant add-on's options → config: the options exactly as the Supervisor
//! writes them to `/data/options.json` (its defaults from our `config.yaml`, a user's
//! saved values, unset optional options absent), the MQTT broker from a stand-in for
//! the Supervisor's service discovery (its real reply shapes), and the config that
//! results, loaded as `run` loads it inside the add-on.

use std::path::Path;
use std::process::Command;

use ha_ingestor::addon::{AddonError, AddonOptions, MqttService, discover_mqtt};
use ha_ingestor::config::{Config, InfluxApi, SchemaMode};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CONFIG_YAML: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/homeassistant-addon/ha_ingestor/config.yaml"
);

fn manifest() -> serde_yaml::Value {
    let text = std::fs::read_to_string(CONFIG_YAML).expect("the add-on's config.yaml");
    serde_yaml::from_str(&text).expect("config.yaml is YAML")
}

/// `options.json` as the Supervisor writes it on a first start: the manifest's `options`.
fn default_options_json() -> serde_json::Value {
    let options = manifest()["options"].clone();
    serde_json::to_value(options).expect("options as JSON")
}

/// Loads a generated config as `run` does inside the add-on (`SUPERVISOR_TOKEN` set).
fn load(text: &str) -> Config {
    let env = vec![("SUPERVISOR_TOKEN".to_string(), "f".repeat(112))];
    Config::from_toml_with_env(text, Path::new("/data/ha-ingestor.toml"), &env)
        .unwrap_or_else(|e| panic!("the generated config loads: {e}\n{text}"))
}

#[test]
fn the_default_options_make_a_config_for_the_influxdb_addon_through_the_supervisor() {
    let options = AddonOptions::parse(&default_options_json().to_string()).unwrap();
    let text = options.to_toml(Path::new("/data"), None).unwrap();
    let cfg = load(&text);
    assert_eq!(cfg.data_dir, Path::new("/data"));
    assert_eq!(cfg.monitor.listen.to_string(), "0.0.0.0:9464");
    // The status page answers only the Supervisor's Ingress proxy.
    assert_eq!(cfg.monitor.ingress_only_from.len(), 1);
    assert!(format!("{:?}", cfg.monitor.ingress_only_from).contains("172.30.32.2"));
    assert_eq!(cfg.homeassistant.len(), 1);
    assert_eq!(
        cfg.homeassistant[0].websocket_url(),
        "ws://supervisor/core/websocket"
    );
    let influx = cfg.influxdb.as_ref().expect("[influxdb]");
    assert_eq!(influx.url, "http://a0d7b954-influxdb:8086");
    assert_eq!(influx.api, InfluxApi::V1);
    assert_eq!(influx.database.as_deref(), Some("homeassistant"));
    assert_eq!(cfg.schema.mode, SchemaMode::Homeassistant);
    assert!(cfg.mqtt.is_empty(), "MQTT is off by default");
    assert_eq!(cfg.log.level, "info");
}

#[test]
fn a_users_options_set_v2_filters_and_mqtt_from_the_discovered_broker() {
    // What the Supervisor writes after a user saved these: defaults merged with the
    // user's values, the unset optional ones (username, password, pattern) absent.
    let mut options = default_options_json();
    let saved = json!({
        "influxdb_url": "https://influx.example:8086",
        "influxdb_api": "v2",
        "influxdb_org": "home",
        "influxdb_bucket": "ha",
        "influxdb_token": "tok==",
        "influxdb_database": "",
        "schema_mode": "optimized",
        "include_domains": ["sensor", "binary_sensor"],
        "exclude_entity_globs": ["sensor.*_linkquality"],
        "mqtt_enabled": true,
        "mqtt_subscriptions": [
            {"topic": "zigbee2mqtt/+", "decoder": "json", "pattern": "zigbee2mqtt/{device}"},
            {"name": "statestream", "topic": "homeassistant_statestream/#", "decoder": "statestream"}
        ],
        "log_level": "debug"
    });
    for (k, v) in saved.as_object().unwrap() {
        options[k] = v.clone();
    }
    let options = AddonOptions::parse(&options.to_string()).unwrap();
    // The Mosquitto add-on's announcement (`data` of GET /services/mqtt).
    let broker: MqttService = serde_json::from_value(json!({
        "host": "core-mosquitto", "port": 1883, "ssl": false, "protocol": "3.1.1",
        "username": "addons", "password": "Eix4ahch", "addon": "core_mosquitto"
    }))
    .unwrap();
    let cfg = load(&options.to_toml(Path::new("/data"), Some(&broker)).unwrap());

    let influx = cfg.influxdb.as_ref().unwrap();
    assert_eq!(influx.api, InfluxApi::V2);
    assert_eq!(influx.org.as_deref(), Some("home"));
    assert_eq!(influx.bucket.as_deref(), Some("ha"));
    assert_eq!(influx.token.as_deref(), Some("tok=="));
    assert_eq!(influx.database, None, "an emptied field is no value");
    assert_eq!(cfg.schema.mode, SchemaMode::Optimized);
    assert_eq!(cfg.filter.include.domains, ["sensor", "binary_sensor"]);
    assert_eq!(cfg.filter.exclude.entity_globs, ["sensor.*_linkquality"]);
    assert!(cfg.filter.exclude.domains.is_empty());
    assert_eq!(cfg.log.level, "debug");

    assert_eq!(cfg.mqtt.len(), 1);
    let mqtt = &cfg.mqtt[0];
    assert_eq!(mqtt.url, "mqtt://core-mosquitto:1883");
    assert_eq!(mqtt.username.as_deref(), Some("addons"));
    assert_eq!(mqtt.password.as_deref(), Some("Eix4ahch"));
    assert_eq!(mqtt.protocol, ha_ingestor::config::MqttProtocol::V311);
    let subs: Vec<(&str, &str, Option<&str>)> = mqtt
        .subscriptions
        .iter()
        .map(|s| (s.name.as_str(), s.topic.as_str(), s.pattern.as_deref()))
        .collect();
    assert_eq!(
        subs,
        [
            (
                "subscription_1",
                "zigbee2mqtt/+",
                Some("zigbee2mqtt/{device}")
            ),
            ("statestream", "homeassistant_statestream/#", None),
        ]
    );
}

#[test]
fn options_that_cannot_work_are_refused_with_the_option_named() {
    let mut options = default_options_json();
    options["influxdb_database"] = json!("");
    let err = AddonOptions::parse(&options.to_string())
        .unwrap()
        .to_toml(Path::new("/data"), None)
        .unwrap_err();
    assert!(err.to_string().contains("influxdb_database"), "{err}");

    let mut options = default_options_json();
    options["mqtt_enabled"] = json!(true);
    options["mqtt_subscriptions"] = json!([]);
    let broker: MqttService =
        serde_json::from_value(json!({"host": "core-mosquitto", "port": 1883})).unwrap();
    let err = AddonOptions::parse(&options.to_string())
        .unwrap()
        .to_toml(Path::new("/data"), Some(&broker))
        .unwrap_err();
    assert!(err.to_string().contains("mqtt_subscriptions"), "{err}");

    // An option this version does not know (options.json of another version) is named.
    let mut options = default_options_json();
    options["influx_url"] = json!("http://x:8086");
    let err = AddonOptions::parse(&options.to_string()).unwrap_err();
    assert!(err.contains("influx_url"), "{err}");
    // A password never shows in the error of a wrong type.
    let mut options = default_options_json();
    options["influxdb_password"] = json!(["s3cr3t-value"]);
    let err = AddonOptions::parse(&options.to_string()).unwrap_err();
    assert!(!err.contains("s3cr3t-value"), "{err}");
}

/// The first value of a `list(a|b|c)` schema element.
fn first_of_list(element: &str) -> &str {
    element
        .strip_prefix("list(")
        .and_then(|rest| rest.split(['|', ')']).next())
        .unwrap_or(element)
}

/// Every option of the manifest's `schema` is one the binary reads (and no more): a
/// value of the right type for each key parses, with unknown keys refused.
#[test]
fn the_manifest_schema_and_the_options_type_agree() {
    let schema = manifest()["schema"].clone();
    let mut sample = serde_json::Map::new();
    for (key, element) in schema.as_mapping().unwrap() {
        let key = key.as_str().unwrap().to_string();
        let value = match element {
            serde_yaml::Value::String(t) if t.starts_with("bool") => json!(true),
            serde_yaml::Value::String(t) if t.starts_with("url") => json!("http://h:1"),
            serde_yaml::Value::String(t) if t.starts_with("list(") => json!(first_of_list(t)),
            serde_yaml::Value::String(_) => json!("text"),
            serde_yaml::Value::Sequence(items) => match &items[0] {
                serde_yaml::Value::Mapping(m) => {
                    let mut item = serde_json::Map::new();
                    for (k, t) in m {
                        let t = t.as_str().unwrap();
                        let v = if t.starts_with("list(") {
                            json!(first_of_list(t))
                        } else {
                            json!("x")
                        };
                        item.insert(k.as_str().unwrap().to_string(), v);
                    }
                    json!([item])
                }
                _ => json!(["text"]),
            },
            other => panic!("{key}: unexpected schema element {other:?}"),
        };
        sample.insert(key, value);
    }
    let parsed = AddonOptions::parse(&serde_json::Value::Object(sample.clone()).to_string());
    assert!(
        parsed.is_ok(),
        "every schema key is an option the binary reads: {parsed:?}"
    );
    // And the other way: each option the binary reads is in the schema (else the
    // Supervisor would drop it from options.json).
    let read_by_binary = [
        "influxdb_url",
        "influxdb_api",
        "influxdb_database",
        "influxdb_username",
        "influxdb_password",
        "influxdb_org",
        "influxdb_bucket",
        "influxdb_token",
        "schema_mode",
        "include_domains",
        "include_entities",
        "include_entity_globs",
        "exclude_domains",
        "exclude_entities",
        "exclude_entity_globs",
        "mqtt_enabled",
        "mqtt_subscriptions",
        "log_level",
    ];
    let mut in_schema: Vec<&str> = sample.keys().map(String::as_str).collect();
    in_schema.sort_unstable();
    let mut expected = read_by_binary.to_vec();
    expected.sort_unstable();
    assert_eq!(in_schema, expected);
    for key in read_by_binary {
        let mut one = sample.clone();
        one.remove(key);
        one.insert(format!("{key}_"), json!(null));
        assert!(
            AddonOptions::parse(&serde_json::Value::Object(one).to_string()).is_err(),
            "{key}_ is not an option"
        );
    }
}

#[tokio::test]
async fn the_broker_comes_from_the_supervisors_service_discovery() {
    let supervisor = MockServer::start().await;
    let token = "0123abcd".repeat(14);
    Mock::given(method("GET"))
        .and(path("/services/mqtt"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "result": "ok",
            "data": {"host": "core-mosquitto", "port": 1883, "ssl": false,
                     "protocol": "3.1.1", "username": "addons", "password": "pw",
                     "addon": "core_mosquitto"}
        })))
        .mount(&supervisor)
        .await;
    let broker = discover_mqtt(&supervisor.uri(), &token).await.unwrap();
    assert_eq!(broker.host, "core-mosquitto");
    assert_eq!(broker.port, 1883);
    assert_eq!(broker.username.as_deref(), Some("addons"));

    // A wrong token is refused by the stand-in (no mock matches: 404), and said so.
    let err = discover_mqtt(&supervisor.uri(), "wrong").await.unwrap_err();
    assert!(matches!(err, AddonError::Discovery { .. }), "{err}");
}

#[tokio::test]
async fn no_broker_registered_is_an_error_that_says_what_to_do() {
    let supervisor = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/services/mqtt"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"result": "error", "message": "Service not enabled"})),
        )
        .mount(&supervisor)
        .await;
    let err = discover_mqtt(&supervisor.uri(), "t").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Service not enabled") && text.contains("Mosquitto"),
        "{text}"
    );
}

/// The add-on's entry point, as the container runs it: options in, a private config
/// out (with the broker asked of the stand-in Supervisor), which `check` then accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_addon_command_writes_a_private_config_from_the_options() {
    use std::os::unix::fs::PermissionsExt as _;
    let supervisor = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/services/mqtt"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "result": "ok",
            "data": {"host": "127.0.0.1", "port": 1883, "ssl": false, "protocol": "3.1.1"}
        })))
        .mount(&supervisor)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = default_options_json();
    options["influxdb_url"] = json!("");
    options["mqtt_enabled"] = json!(true);
    std::fs::write(dir.path().join("options.json"), options.to_string()).unwrap();
    let generated = dir.path().join("ha-ingestor.toml");
    let data = dir.path().join("data");
    let uri = supervisor.uri();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let generated = generated.clone();
        let data = data.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
                .arg("addon")
                .arg("--options")
                .arg(dir.join("options.json"))
                .arg("--override-config")
                .arg(dir.join("absent.toml"))
                .arg("--write-config")
                .arg(&generated)
                .arg("--data-dir")
                .arg(&data)
                .arg("--write-only")
                .env("SUPERVISOR_TOKEN", "t0k")
                .env("SUPERVISOR_API", uri)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&generated).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the config holds passwords: {mode:o}");
    let text = std::fs::read_to_string(&generated).unwrap();
    let cfg = load(&text);
    assert_eq!(cfg.data_dir, data);
    assert!(cfg.influxdb.is_none(), "no URL: the file sink");
    assert_eq!(cfg.mqtt[0].url, "mqtt://127.0.0.1:1883");

    // With a full config in the add-on's config folder, the options are not used.
    let own = dir.path().join("own.toml");
    std::fs::write(&own, "data_dir = \"/data\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .arg("addon")
        .arg("--options")
        .arg(dir.path().join("missing-options.json"))
        .arg("--override-config")
        .arg(&own)
        .arg("--write-only")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("own.toml"));
}
