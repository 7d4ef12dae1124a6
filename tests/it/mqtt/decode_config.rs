//! The documented subscription example builds, and the docs list every subscription key.

use std::path::Path;

use ha_ingestor::config::{DecoderKind, SubscriptionConfig};
use ha_ingestor::source::mqtt::decode::Decoders;

#[derive(serde::Deserialize)]
struct Broker {
    subscriptions: Vec<SubscriptionConfig>,
}

#[derive(serde::Deserialize)]
struct File {
    mqtt: Vec<Broker>,
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).expect("file exists")
}

/// The `[[mqtt]]` part of the example, uncommented.
fn example() -> String {
    read("examples/mqtt-subscriptions.toml")
        .lines()
        .skip_while(|l| !l.starts_with("# [[mqtt]]"))
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_subscriptions_build() {
    let file: File = toml::from_str(&example()).expect("example parses");
    let subs = &file.mqtt[0].subscriptions;
    assert!(subs.len() >= 6, "{} subscriptions", subs.len());
    for kind in [
        DecoderKind::Statestream,
        DecoderKind::Eventstream,
        DecoderKind::Json,
        DecoderKind::Value,
    ] {
        assert!(
            subs.iter().any(|s| s.decoder == kind),
            "no {} example",
            kind.as_str()
        );
    }
    let d = Decoders::new(subs).expect("example builds");
    // The ordering the example explains: availability before device state, bridge apart.
    let name = |topic: &str| d.route(topic).map(|i| subs[i].name.as_str());
    assert_eq!(
        name("zigbee2mqtt/kitchen/lamp/availability"),
        Some("z2m_availability")
    );
    assert_eq!(name("zigbee2mqtt/bridge/devices"), Some("z2m_bridge"));
    assert_eq!(name("zigbee2mqtt/kitchen/lamp"), Some("z2m"));
    assert_eq!(name("tele/plug/SENSOR"), Some("tasmota"));
    assert_eq!(name("nothing/here"), None);
}

#[test]
fn every_subscription_key_is_documented_and_in_the_example() {
    let example = example();
    let docs = read("docs/configuration.md");
    // Serialising a full subscription lists every key.
    let mut full: SubscriptionConfig = toml::from_str(
        "name = 'n'\ntopic = 't'\ndecoder = 'json'\npattern = 'p'\nevent_type = 'e'\ntimestamp = 'ts'",
    )
    .expect("parses");
    full.qos = 1;
    let value = toml::Value::try_from(&full).expect("serialises");
    let keys: Vec<&String> = value.as_table().expect("a table").keys().collect();
    assert!(keys.len() >= 16, "{keys:?}");
    for key in keys {
        assert!(
            docs.contains(&format!("| `{key}` |")),
            "docs/configuration.md lacks `{key}`"
        );
        assert!(
            example
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} ="))),
            "examples/mqtt-subscriptions.toml lacks {key}"
        );
    }
}
