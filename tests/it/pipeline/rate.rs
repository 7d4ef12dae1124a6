//! Rate shaping in the pipeline task: a throttled event is held with its upstream
//! mark, written by the wall-clock tick, then heartbeats follow; shutdown writes
//! what is still held. The clock is tokio's paused one, so nothing sleeps.

use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::cli::explain::event_from_json;
use ha_ingestor::config::Config;
use ha_ingestor::encode::Chunk;
use ha_ingestor::event::Event;
use ha_ingestor::feedback::handoff::Handoff;
use ha_ingestor::monitor::Stats;
use ha_ingestor::pipeline::Pipeline;
use tokio::sync::mpsc;

const CONFIG: &str = r#"
[[filter.rules]]
name = "power meters"
action = "include"
match = { entity = { glob = ["sensor.*_power"] } }
rate = { throttle = "10s", aggregate = "max", heartbeat = "1m" }
"#;

fn power(entity: &str, state: &str, second: u32) -> Event {
    let time = format!("2026-11-26T20:00:{second:02}.000000+00:00");
    let json = format!(
        r#"{{"event_type":"state_changed","data":{{"entity_id":"{entity}","old_state":null,"new_state":{{"entity_id":"{entity}","state":"{state}","attributes":{{"unit_of_measurement":"W"}},"last_changed":"{time}","last_updated":"{time}","context":{{"id":"01KXTEST000000000000000001","parent_id":null,"user_id":null}}}}}},"origin":"LOCAL","time_fired":"{time}","context":{{"id":"01KXTEST000000000000000001","parent_id":null,"user_id":null}}}}"#
    );
    event_from_json(&json, "mqtt:test").expect("test event decodes")
}

async fn next(out: &mut mpsc::Receiver<Chunk>) -> Chunk {
    tokio::time::timeout(Duration::from_secs(600), out.recv())
        .await
        .expect("a chunk within ten virtual minutes")
        .expect("the pipeline is still running")
}

#[tokio::test(start_paused = true)]
async fn throttle_holds_marks_and_heartbeats_follow() {
    let cfg = Config::from_toml_with_env(CONFIG, std::path::Path::new("t.toml"), &[]).unwrap();
    let pipeline = Pipeline::new(&cfg.filter, &cfg.schema).unwrap();
    let handoff = Handoff::new();
    let mut tracker = handoff.register("mqtt:test");
    let (tx, rx) = mpsc::channel(16);
    let (out_tx, mut out) = mpsc::channel(16);
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(pipeline.run(rx, out_tx, stats.clone()));

    // A quiet meter writes at once; the next two within 10 s are held as one interval.
    let mut events = vec![
        power("sensor.oven_power", "100", 0),
        power("sensor.oven_power", "300", 2),
        power("sensor.oven_power", "200", 4),
        power("sensor.other", "7", 5),
    ];
    for e in &mut events {
        e.meta.mark = tracker.mark();
    }
    for e in events {
        tx.send(e).await.unwrap();
    }
    let first = next(&mut out).await;
    assert_eq!(first.points, 2, "{}", first.lines);
    assert!(first.lines.contains("value=100.0"), "{}", first.lines);
    assert!(first.lines.contains("entity_id=other"), "{}", first.lines);
    handoff.release(&first.marks);
    assert_eq!(
        tracker.safe(),
        1,
        "marks 2 and 3 are held; mark 4 (written) may not release them"
    );

    // The tick writes the interval (its max) once 10 s of wall clock have passed.
    let second = next(&mut out).await;
    assert_eq!(second.points, 1, "{}", second.lines);
    assert!(second.lines.contains("value=300.0"), "{}", second.lines);
    assert!(!second.lines.contains("heartbeat"), "{}", second.lines);
    handoff.release(&second.marks);
    assert_eq!(tracker.safe(), 4, "nothing is held any more");

    // A minute of silence brings heartbeats: the last written value, tagged.
    let beat = loop {
        let chunk = next(&mut out).await;
        if chunk.points > 0 {
            break chunk;
        }
    };
    assert!(beat.lines.contains("heartbeat=true"), "{}", beat.lines);
    assert!(beat.lines.contains("value=300.0"), "{}", beat.lines);
    // The held write was stamped 20:00:04; the heartbeat one minute later.
    let stamp = ha_ingestor::event::Timestamp::parse_rfc3339("2026-11-26T20:01:04.000000+00:00")
        .unwrap()
        .as_nanos();
    assert!(
        beat.lines.trim_end().ends_with(&stamp.to_string()),
        "{}",
        beat.lines
    );

    // A held value is written at shutdown.
    let mut last = power("sensor.oven_power", "5", 59);
    last.meta.mark = tracker.mark();
    let mut held = power("sensor.oven_power", "6", 59);
    held.meta.mark = tracker.mark();
    tx.send(last).await.unwrap();
    tx.send(held).await.unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(chunk) = out.recv().await {
        handoff.release(&chunk.marks);
        rest.push(chunk);
    }
    task.await.unwrap();
    let lines: String = rest.iter().map(|c| c.lines.as_str()).collect();
    assert!(lines.contains("value=6.0"), "{lines}");
    assert_eq!(
        tracker.safe(),
        6,
        "every mark released once nothing is held"
    );
}
