//! Whole files through [`Config::from_toml_with_env`]: parsing, environment
//! overrides, secrets and validation together, section by section.

use super::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_toml_with_env(text, Path::new("test.toml"), &env)
}

#[test]
fn gzip_is_true_false_or_auto_and_auto_spares_a_loopback_influxdb() {
    let with = |value: &str, url: &str| {
        load(
            &format!("[influxdb]\nurl = \"{url}\"\ndatabase = \"d\"\n{value}"),
            &[],
        )
    };
    let gzip = |value: &str, url: &str| {
        let c = with(value, url).unwrap();
        let i = c.influxdb.unwrap();
        (i.gzip, i.gzip.for_url(&i.url))
    };
    assert_eq!(gzip("", "http://127.0.0.1:8086"), (Gzip::Auto, false));
    assert_eq!(gzip("", "http://localhost:8086"), (Gzip::Auto, false));
    assert_eq!(gzip("", "http://[::1]:8086"), (Gzip::Auto, false));
    assert_eq!(gzip("", "http://127.1.2.3:8086"), (Gzip::Auto, false));
    assert_eq!(gzip("", "http://nas.lan:8086"), (Gzip::Auto, true));
    assert_eq!(gzip("", "https://192.168.1.5:8086"), (Gzip::Auto, true));
    assert_eq!(
        gzip("gzip = \"auto\"", "http://nas.lan:8086"),
        (Gzip::Auto, true)
    );
    assert_eq!(
        gzip("gzip = true", "http://127.0.0.1:8086"),
        (Gzip::On, true)
    );
    assert_eq!(
        gzip("gzip = false", "http://nas.lan:8086"),
        (Gzip::Off, false)
    );
    // An environment override is read as TOML, so `false` is the boolean.
    let env = load(
        "[influxdb]\nurl = \"http://nas.lan:8086\"\ndatabase = \"d\"\n",
        &[("HA_INGESTOR_INFLUXDB__GZIP", "false")],
    )
    .unwrap();
    assert_eq!(env.influxdb.map(|i| i.gzip), Some(Gzip::Off));
    let err = with("gzip = \"yes\"", "http://a:8086")
        .unwrap_err()
        .to_string();
    assert!(err.contains("gzip") || err.contains("auto"), "{err}");
    let written: Vec<serde_json::Value> = [Gzip::On, Gzip::Off, Gzip::Auto]
        .iter()
        .map(|g| serde_json::to_value(g).unwrap())
        .collect();
    assert_eq!(
        written,
        [
            serde_json::json!(true),
            serde_json::json!(false),
            serde_json::json!("auto")
        ]
    );
}

#[test]
fn empty_file_gives_defaults() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert!(c.influxdb.is_none());
    assert_eq!(c.monitor.listen.port(), 9464);
}

#[test]
fn the_entities_subscription_and_a_notifier_instance_are_checked() {
    let two = "[[homeassistant]]\nname = \"home\"\nurl = \"wss://a:8123\"\ntoken = \"t\"\n\
               [[homeassistant]]\nname = \"cabin\"\nurl = \"wss://b:8123\"\ntoken = \"u\"\n\
               subscription = \"entities\"\nentity_ids = [\"sensor.a\"]\n";
    let c = load(two, &[]).unwrap();
    assert_eq!(c.homeassistant[1].subscription, HaSubscription::Entities);
    assert_eq!(c.homeassistant[0].subscription, HaSubscription::Events);
    let notifier = |home: &str| {
        format!(
            "{two}[[alerts.notifiers]]\ntype = \"homeassistant\"\nname = \"n\"\ninstance = \"{home}\"\n"
        )
    };
    assert!(load(&notifier("cabin"), &[]).is_ok());
    let err = load(&notifier("boat"), &[]).unwrap_err().to_string();
    assert!(err.contains("instance") && err.contains("boat"), "{err}");
    let both = two.replace(
        "subscription = \"entities\"",
        "subscription = \"entities\"\nevent_types = [\"call_service\"]",
    );
    let err = load(&both, &[]).unwrap_err().to_string();
    assert!(err.contains("event_types"), "{err}");
    let ids_without = two.replace("subscription = \"entities\"\n", "");
    let err = load(&ids_without, &[]).unwrap_err().to_string();
    assert!(err.contains("entity_ids"), "{err}");
    let bad_id = two.replace("sensor.a", "not an id");
    let err = load(&bad_id, &[]).unwrap_err().to_string();
    assert!(err.contains("entity_ids"), "{err}");
}

#[test]
fn one_or_several_home_assistants() {
    let one = load(
        "[homeassistant]\nurl = \"wss://a:8123\"\ntoken = \"t\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(one.homeassistant.len(), 1);
    assert_eq!(one.homeassistant[0].name, "homeassistant");
    assert_eq!(
        one.effective_schema().instance_tag,
        None,
        "HA's own schema has no such tag"
    );

    let two = "[[homeassistant]]\nname = \"home\"\nurl = \"wss://a:8123\"\ntoken = \"t\"\n\
               [[homeassistant]]\nname = \"cabin\"\nurl = \"wss://b:8123\"\ntoken = \"u\"\n";
    let c = load(two, &[]).unwrap();
    let names: Vec<&str> = c.homeassistant.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["home", "cabin"]);
    assert_eq!(
        c.effective_schema().instance_tag.as_deref(),
        Some("instance")
    );
    let custom = format!("{two}[schema]\ninstance_tag = \"home\"\n");
    assert_eq!(
        load(&custom, &[])
            .unwrap()
            .effective_schema()
            .instance_tag
            .as_deref(),
        Some("home")
    );

    // Two instances left with the default name would share a cursor file.
    let same = "[[homeassistant]]\nurl = \"wss://a:8123\"\ntoken = \"t\"\n\
                [[homeassistant]]\nurl = \"wss://b:8123\"\ntoken = \"u\"\n";
    let err = load(same, &[]).unwrap_err().to_string();
    assert!(
        err.contains("homeassistant.name") && err.contains("twice"),
        "{err}"
    );
    // A bad key inside one of the tables is still named.
    let bad = "[[homeassistant]]\nname = \"home\"\nurl = \"wss://a:8123\"\ntokn = \"t\"\n";
    let err = load(bad, &[]).unwrap_err().to_string();
    assert!(err.contains("tokn"), "{err}");
}

#[test]
fn unknown_key_names_line_and_key() {
    let err = load(
        "data_dir = \"x\"\n[influxdb]\nurl = \"http://h:8086\"\ndatabse = \"ha\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("test.toml"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("databse"), "{err}");
}

#[test]
fn env_overrides_typed_values_and_nested_keys() {
    let text = "[influxdb]\nurl = \"http://h:8086\"\ndatabase = \"ha\"\n";
    let c = load(
        text,
        &[
            ("HA_INGESTOR_INFLUXDB__BATCH_SIZE", "250"),
            ("HA_INGESTOR_INFLUXDB__DATABASE", "other"),
            ("HA_INGESTOR_FILTER__EXCLUDE__DOMAINS", "[\"automation\"]"),
            ("HA_INGESTOR_HOMEASSISTANT__URL", "https://ha.local:8123"),
            ("HA_INGESTOR_HOMEASSISTANT__TOKEN", "abc"),
        ],
    )
    .unwrap();
    let influx = c.influxdb.unwrap();
    assert_eq!(influx.batch_size, 250);
    assert_eq!(influx.database.as_deref(), Some("other"));
    assert_eq!(c.filter.exclude.domains, vec!["automation".to_string()]);
    let ha = &c.homeassistant[0];
    assert_eq!(ha.websocket_url(), "wss://ha.local:8123/api/websocket");
}

#[test]
fn env_unknown_key_names_the_variable() {
    let err = load("", &[("HA_INGESTOR_MONITOR__LISTN", "1.2.3.4:1")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("HA_INGESTOR_MONITOR__LISTN"), "{err}");
    assert!(err.contains("listn"), "{err}");
}

#[test]
fn incomplete_credentials_are_refused() {
    let err = load(
        "[influxdb]\nurl = \"http://h:8086\"\napi = \"v2\"\norg = \"o\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("influxdb.bucket"), "{err}");
    let err = load("[homeassistant]\nurl = \"wss://h:8123\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("homeassistant.token"), "{err}");
}

#[test]
fn secrets_stay_out_of_debug_and_urls() {
    let c = load(
        "[homeassistant]\nurl = \"wss://h:8123\"\ntoken = \"tok-123\"\n[influxdb]\nurl = \"https://me:pw-456@h:8086/?p=pw-456\"\ndatabase = \"ha\"\nusername = \"me\"\npassword = \"pw-456\"\n",
        &[],
    )
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("tok-123") && !debug.contains("pw-456"),
        "{debug}"
    );
    assert!(debug.contains("<redacted>"), "{debug}");
    assert_eq!(redact_url("http://me:pw@h:8086/x?p=pw"), "http://h:8086/x");
}

#[test]
fn token_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tok"), "secret-token\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[homeassistant]\nurl = \"wss://h:8123\"\ntoken_file = \"tok\"\n",
    )
    .unwrap();
    let c = Config::from_toml_with_env(&std::fs::read_to_string(&cfg).unwrap(), &cfg, &[]).unwrap();
    assert_eq!(c.homeassistant[0].token.as_deref(), Some("secret-token"));
}

#[test]
fn several_influxdb_targets_parse_and_validate() {
    let two = "[[influxdb]]\nname = \"a\"\nurl = \"http://a:8086\"\ndatabase = \"d\"\n\
               [[influxdb]]\nname = \"b\"\nurl = \"http://b:8086\"\ndatabase = \"d\"\nmeasurements = [\"°C\"]\n";
    let c = load(two, &[]).unwrap();
    let influx = c.influxdb.unwrap();
    let targets: Vec<(&str, &str, Vec<String>)> = influx
        .targets()
        .map(|t| (t.target_name(), t.url.as_str(), t.measurements.clone()))
        .collect();
    assert_eq!(
        targets,
        [
            ("a", "http://a:8086", vec![]),
            ("b", "http://b:8086", vec!["°C".to_string()])
        ]
    );
    // One table still works, named "influxdb".
    let one = load(
        "[influxdb]\nurl = \"http://a:8086\"\ndatabase = \"d\"\n",
        &[],
    )
    .unwrap();
    let one = one.influxdb.unwrap();
    assert_eq!((one.target_name(), one.more.len()), ("influxdb", 0));
    let err = load(&two.replace("name = \"b\"", "name = \"a\""), &[]).unwrap_err();
    assert!(err.to_string().contains("distinct name"), "{err}");
    let err = load(&two.replace("[\"°C\"]", "[\"[\"]"), &[]).unwrap_err();
    assert!(err.to_string().contains("measurements"), "{err}");
    let err = load(
        &two.replace("url = \"http://b:8086\"", "url = \"ftp://b\""),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("target \"b\""), "{err}");
    let err = load(two, &[("HA_INGESTOR_INFLUXDB__DATABASE", "x")]).unwrap_err();
    assert!(err.to_string().contains("not a section"), "{err}");
    let err = load(
        "[[influxdb]]\nurl = \"http://a\"\ndatabase = \"d\"\nbogus = 1\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn a_broker_whose_subscriptions_the_decoders_refuse_is_refused() {
    let broker = |topic: &str| {
        format!(
            "[[mqtt]]\nname = \"b\"\nurl = \"mqtt://h:1883\"\n\
             [[mqtt.subscriptions]]\nname = \"s\"\ntopic = \"{topic}\"\ndecoder = \"value\"\n"
        )
    };
    assert!(load(&broker("a/+/c"), &[]).is_ok());
    // Only the MQTT source's decoders know topic filters: loading asks them.
    let err = load(&broker("a/#/c"), &[]).unwrap_err().to_string();
    assert!(
        err.contains("mqtt[b].subscriptions") && err.contains("invalid topic filter"),
        "{err}"
    );
}

#[test]
fn only_section_key_variables_are_overrides_and_others_are_ignored() {
    // What Kubernetes injects for a Service named `ha-ingestor`, and the config path.
    let c = load(
        "[influxdb]\nurl = \"http://h:8086\"\ndatabase = \"ha\"\n",
        &[
            ("HA_INGESTOR_SERVICE_HOST", "10.0.0.7"),
            ("HA_INGESTOR_SERVICE_PORT", "9464"),
            ("HA_INGESTOR_PORT", "tcp://10.0.0.7:9464"),
            ("HA_INGESTOR_PORT_9464_TCP", "tcp://10.0.0.7:9464"),
            ("HA_INGESTOR_PORT_9464_TCP_PROTO", "tcp"),
            ("HA_INGESTOR_PORT_9464_TCP_ADDR", "10.0.0.7"),
            ("HA_INGESTOR_CONFIG", "/etc/ha-ingestor.toml"),
            ("HA_INGESTOR_INFLUXDB__BATCH_SIZE", "500"),
        ],
    )
    .unwrap();
    assert_eq!(c.influxdb.unwrap().batch_size, 500);
    assert!(env::is_override("HA_INGESTOR_INFLUXDB__GZIP"));
    for ignored in [
        "HA_INGESTOR_SERVICE_HOST",
        "HA_INGESTOR_PORT",
        "HA_INGESTOR_DATA_DIR",
    ] {
        assert!(env::is_ignored(ignored), "{ignored}");
    }
    assert!(!env::is_ignored("HA_INGESTOR_CONFIG"));
    assert!(!env::is_ignored("HA_INGESTOR_WORKER_THREADS"));
    assert!(!env::is_override("HA_INGESTOR_CONFIG"));
    assert!(!env::is_ignored("PATH"));
}

#[test]
fn string_keys_take_the_text_as_it_is() {
    let c = load(
        "[influxdb]\nurl = \"https://h:8086\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\n",
        &[
            // Set in either order, on a section absent from the file.
            ("HA_INGESTOR_HOMEASSISTANT__URL", "wss://ha:8123"),
            ("HA_INGESTOR_HOMEASSISTANT__TOKEN", "98765432"),
            ("HA_INGESTOR_HOMEASSISTANT__NAME", "2024-01-01"),
            ("HA_INGESTOR_INFLUXDB__TOKEN", "\"quoted\""),
            ("HA_INGESTOR_INFLUXDB__GZIP", "false"),
            ("HA_INGESTOR_INFLUXDB__BATCH_SIZE", "500"),
            ("HA_INGESTOR_INFLUXDB__TIMEOUT", "7s"),
            ("HA_INGESTOR_BUFFER__WHEN_FULL", "drop_oldest"),
        ],
    )
    .unwrap();
    let ha = &c.homeassistant[0];
    assert_eq!(ha.token.as_deref(), Some("98765432"));
    assert_eq!(ha.name, "2024-01-01");
    let influx = c.influxdb.unwrap();
    assert_eq!(influx.token.as_deref(), Some("\"quoted\""));
    assert_eq!(influx.gzip, Gzip::Off);
    assert_eq!(influx.batch_size, 500);
    assert_eq!(influx.timeout, std::time::Duration::from_secs(7));
    assert_eq!(c.buffer.when_full, WhenFull::DropOldest);

    // A password that looks like a boolean, on a user/password pair.
    let c = load(
        "[influxdb]\nurl = \"https://h:8086\"\ndatabase = \"d\"\nusername = \"u\"\n",
        &[("HA_INGESTOR_INFLUXDB__PASSWORD", "true")],
    )
    .unwrap();
    assert_eq!(c.influxdb.unwrap().password.as_deref(), Some("true"));
}

#[test]
fn the_config_types_say_which_keys_are_text() {
    let shape = |path: &str| {
        let keys: Vec<String> = path.split('.').map(str::to_string).collect();
        env::key_shape(&keys)
    };
    for text in [
        "homeassistant.token",
        "homeassistant.url",
        "influxdb.token",
        "influxdb.password",
        "influxdb.database",
        "monitor.listen",
        "influxdb.timeout",
        "data_dir",
    ] {
        assert_eq!(shape(text), env::Shape::Text, "{text}");
    }
    for other in [
        "influxdb.batch_size",
        "influxdb.gzip",
        "filter.exclude.domains",
        "buffer.when_full",
        "monitor.enabled",
    ] {
        assert_eq!(shape(other), env::Shape::Other, "{other}");
    }
    assert_eq!(shape("influxdb.nope"), env::Shape::Unknown);
}

#[test]
fn a_syntax_error_on_the_token_line_does_not_print_the_token() {
    for text in [
        "[homeassistant]\nurl = \"wss://h:8123\"\ntoken = \"s3cr3t-t0ken\" oops\n",
        "[homeassistant]\nurl = \"wss://h:8123\"\ntoken = s3cr3t-t0ken\n",
        "[homeassistant]\nurl = \"wss://h:8123\"\ntoken = 9876543210\n",
        "[influxdb]\nurl = \"http://h:8086\"\npassword = \"s3cr3t-t0ken\nbogus = 1\n",
        "influxdb = { url = \"http://h:8086\", token = \"s3cr3t-t0ken\", x = }\n",
    ] {
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(
            !err.contains("s3cr3t-t0ken") && !err.contains("9876543210"),
            "{err}"
        );
        assert!(err.contains("test.toml") && err.contains("line "), "{err}");
    }
    // The line is still shown, its value redacted; other lines are shown as they are.
    let err = load(
        "[homeassistant]\nurl = \"wss://h:8123\"\ntoken = \"s3cr3t-t0ken\" oops\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("line 3") && err.contains("token = <redacted>"),
        "{err}"
    );
    let err = load("[influxdb]\nurl = \"http://h:8086\" oops\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2") && err.contains("url = \"http://h:8086\" oops"),
        "{err}"
    );
}

#[test]
fn a_wrong_override_names_the_variable_but_not_a_secret() {
    let text = "[influxdb]\nurl = \"http://h:8086\"\ndatabase = \"d\"\n";
    let err = load(
        text,
        &[
            // A token that reads as a number once broke start-up, quoting itself.
            ("HA_INGESTOR_INFLUXDB__TOKEN", "98765432"),
            ("HA_INGESTOR_INFLUXDB__BATCH_SIZE", "many"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("HA_INGESTOR_INFLUXDB__BATCH_SIZE"), "{err}");
    assert!(err.contains("batch_size") && err.contains("many"), "{err}");
    assert!(
        !err.contains("98765432") && !err.contains("HA_INGESTOR_INFLUXDB__TOKEN"),
        "{err}"
    );
    // A secret key that is no string here (several targets) is named, its value is not.
    let two = "[[influxdb]]\nname = \"a\"\nurl = \"http://a:8086\"\ndatabase = \"d\"\n";
    let err = load(two, &[("HA_INGESTOR_INFLUXDB__TOKEN", "tok-0123456789")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("HA_INGESTOR_INFLUXDB__TOKEN"), "{err}");
    assert!(!err.contains("tok-0123456789"), "{err}");
    // A type error on a secret's own value never quotes it.
    assert_eq!(
        secret::scrub(
            "invalid type: integer `98765432`, expected a string",
            ["98765432"]
        ),
        "invalid type: integer <redacted>, expected a string"
    );
}

#[test]
fn a_victoriametrics_target_needs_no_token_and_refuses_retention() {
    let vm = "[influxdb]\nurl = \"http://127.0.0.1:8428\"\nflavor = \"victoriametrics\"\n";
    let c = load(&format!("{vm}database = \"ha\"\n"), &[]).expect("v1 to VictoriaMetrics");
    assert_eq!(
        c.influxdb.as_ref().map(|i| i.flavor),
        Some(super::Flavor::VictoriaMetrics)
    );
    // v2 without a token (VictoriaMetrics has none), with its basic auth instead.
    load(
        &format!(
            "{vm}api = \"v2\"\norg = \"o\"\nbucket = \"b\"\nusername = \"u\"\npassword = \"p\"\n"
        ),
        &[],
    )
    .expect("v2 to VictoriaMetrics");
    // InfluxDB still needs the token with v2.
    let err = load(
        "[influxdb]\nurl = \"http://h:8086\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("influxdb.token"), "{err}");
    let err = load(
        &format!("{vm}database = \"ha\"\n[retention]\nraw_keep = \"30d\"\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("retention") && err.contains("-retentionPeriod"),
        "{err}"
    );
    let err = load(
        "[influxdb]\nurl = \"http://h:8086\"\nflavor = \"victoria\"\ndatabase = \"ha\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("victoriametrics"), "{err}");
}
