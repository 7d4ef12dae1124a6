//! Alert notifications to Home Assistant with several homes: each home's
//! connection takes only the commands addressed to it, two simulators on
//! 127.0.0.1 standing in for two Home Assistant instances.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::config::HomeAssistantConfig;
use ha_ingestor::config::alerts::NotifierConfig;
use ha_ingestor::dead_letter::DeadLetters;
use ha_ingestor::feedback::commands::Commands;
use ha_ingestor::feedback::handoff::Handoff;
use ha_ingestor::monitor::Stats;
use ha_ingestor::monitor::alerts::notify::{self, Notification, Status};
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use ha_ingestor::source::SourceContext;
use ha_ingestor::source::homeassistant::client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn home(seed: u64) -> SimulatorHandle {
    let cfg = SimulatorConfig {
        entities: 5,
        rate: 5.0,
        seed,
        ..SimulatorConfig::default()
    };
    Simulator::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// Polls `cond` until it holds or [`WAIT`] passes; returns whether it held.
async fn wait_for(cond: impl FnMut() -> bool) -> bool {
    support::holds_within(WAIT, cond).await
}

fn notification(rule: &str) -> Notification {
    Notification {
        rule: rule.to_string(),
        severity: "warning",
        status: Status::Firing,
        value: Some(1.0),
        summary: format!("{rule} fired"),
        description: None,
        firing_since: None,
        at: "2026-01-01T10:00:00+00:00".to_string(),
    }
}

fn notifier(name: &str, instance: Option<&str>) -> NotifierConfig {
    NotifierConfig::Homeassistant {
        name: name.to_string(),
        notification: false,
        event: true,
        event_type: "ha_ingestor_alert".to_string(),
        instance: instance.map(str::to_string),
    }
}

/// The rules named in the `fire_event` commands a simulator received, in order.
fn alerted(sim: &SimulatorHandle) -> Vec<String> {
    sim.service_commands("fire_event")
        .iter()
        .map(|c| c["event_data"]["rule"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn a_notifier_tells_the_home_it_names_or_every_home() {
    let (house, cabin) = (home(1).await, home(2).await);
    let commands = Commands::for_homes(["home", "cabin"]);
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let ctx = SourceContext {
        tx,
        stats: Arc::new(Stats::default()),
        dead_letters: Arc::new(DeadLetters::new(dir.path().join("dead-letter"))),
        shutdown: shutdown.clone(),
        cursor_dir: None,
        handoff: Handoff::new(),
        settled: CancellationToken::new(),
        background: tokio_util::task::TaskTracker::new(),
        commands: commands.clone(),
    };
    let mut sources = Vec::new();
    for (name, sim) in [("home", &house), ("cabin", &cabin)] {
        let mut cfg = HomeAssistantConfig::new(sim.url(), "simulator-token");
        cfg.name = name.to_string();
        cfg.initial_snapshot = false;
        sources.push(tokio::spawn(client::run(cfg, Arc::from(name), ctx.clone())));
    }
    drop(ctx);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });

    let stop = CancellationToken::new();
    let (to_cabin, cabin_task) = notify::spawn(
        &notifier("cabin_only", Some("cabin")),
        Some(&commands),
        stop.clone(),
    )
    .expect("builds");
    let (to_all, all_task) =
        notify::spawn(&notifier("everyone", None), Some(&commands), stop.clone()).expect("builds");
    let unknown = notify::spawn(
        &notifier("boat", Some("boat")),
        Some(&commands),
        stop.clone(),
    );
    assert!(
        unknown.is_err(),
        "an instance that names no home is refused"
    );

    to_cabin.offer(&notification("first"));
    assert!(
        wait_for(|| alerted(&cabin) == ["first"]).await,
        "the cabin got its notification: {:?}",
        alerted(&cabin)
    );
    to_all.offer(&notification("second"));
    assert!(
        wait_for(|| alerted(&house) == ["second"] && alerted(&cabin) == ["first", "second"]).await,
        "every home got the second: home {:?}, cabin {:?}",
        alerted(&house),
        alerted(&cabin)
    );
    // Both connections are up and read their queues, so had the first notification
    // gone to the home, it would have arrived before the second.
    assert_eq!(
        alerted(&house),
        ["second"],
        "the home never got the cabin's"
    );

    stop.cancel();
    cabin_task.await.unwrap();
    all_task.await.unwrap();
    shutdown.cancel();
    for source in sources {
        source.await.unwrap();
    }
    drain.await.unwrap();
    house.shutdown().await;
    cabin.shutdown().await;
}
