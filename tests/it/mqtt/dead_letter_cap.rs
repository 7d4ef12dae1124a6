//! Whoever may publish on a subscribed topic cannot fill the disk: a flood of bad
//! (non-UTF-8) payloads through the machine's Mosquitto is counted and set aside, each
//! dead letter cut to `[dead_letter] max_input_bytes` and stored once (as hex), and the
//! dead-letter folder kept under `max_bytes` by removing its oldest files.

use std::path::Path;
use std::time::Duration;

use ha_ingestor::app;
use ha_ingestor::config::Config;
use rumqttc::QoS;

use crate::support::wait_for;

const WAIT: Duration = Duration::from_secs(30);
/// `[dead_letter] max_bytes` of the test: a flood of this test's size is many times more.
const MAX_BYTES: u64 = 16 * 1024;
/// `[dead_letter] max_input_bytes` of the test.
const MAX_INPUT: usize = 256;
/// Each bad payload: larger than `MAX_INPUT`, and not UTF-8.
const PAYLOAD: usize = 2048;
/// Bad payloads to set aside: ~300 × (512 hex characters + the record) ≈ 14 × `MAX_BYTES`.
const FLOOD: u64 = 300;

fn config(data: &Path, topic: &str) -> Config {
    let text = format!(
        r#"
data_dir = "{data}"
[dead_letter]
max_bytes = {MAX_BYTES}
max_input_bytes = {MAX_INPUT}
[monitor]
enabled = false
[[mqtt]]
url = "mqtt://127.0.0.1:1883"
client_id = "ha-ingestor-dead-letter-cap-{pid}"
clean_session = true
[[mqtt.subscriptions]]
name = "flood"
topic = "{topic}/#"
decoder = "json"
pattern = "{topic}/{{device}}"
"#,
        data = data.display(),
        pid = std::process::id(),
    );
    Config::from_toml_with_env(&text, Path::new("test.toml"), &[]).expect("test config is valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_payloads_is_cut_and_capped_on_disk() {
    ha_ingestor::ensure_crypto_provider();
    let topic = format!("ha-ingestor-test/dead-letter-cap-{}", std::process::id());
    let data = tempfile::tempdir().expect("tempdir");
    let running = app::start(&config(data.path(), &topic))
        .await
        .expect("starts");
    let stats = running.stats();

    let mut opts = rumqttc::MqttOptions::new(
        format!("dead-letter-cap-pub-{}", std::process::id()),
        "127.0.0.1",
        1883,
    );
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    // Batches until the source (once subscribed) has set aside the whole flood.
    let payload = vec![0xffu8; PAYLOAD];
    wait_for("the flood to be set aside", WAIT, || {
        let (client, payload, stats, topic) = (&client, &payload, &stats, &topic);
        async move {
            if stats.totals().decode_errors >= FLOOD {
                return Some(());
            }
            for i in 0..50 {
                client
                    .publish(
                        format!("{topic}/d{i}"),
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .await
                    .expect("publish");
            }
            None
        }
    })
    .await;
    let _ = client.disconnect().await;
    poller.abort();
    let totals = running.stop().await;
    assert!(totals.decode_errors >= FLOOD, "{totals:?}");

    let dir = data.path().join("dead-letter");
    let mut total = 0u64;
    let mut records = 0u64;
    for entry in std::fs::read_dir(&dir).expect("dead-letter folder") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        total += text.len() as u64;
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            assert_eq!(record["truncated"], true, "{line:.200}");
            assert_eq!(record["input_len"], PAYLOAD, "{line:.200}");
            assert!(record.get("input").is_none(), "stored once, as hex");
            assert_eq!(
                record["input_hex"].as_str().map(str::len),
                Some(2 * MAX_INPUT),
                "{line:.200}"
            );
            records += 1;
        }
    }
    assert!(
        total <= MAX_BYTES,
        "the folder holds {total} bytes, over {MAX_BYTES}"
    );
    assert!(
        records > 0 && records < totals.decode_errors,
        "{records} records kept of {}: the oldest were not removed",
        totals.decode_errors
    );
}
