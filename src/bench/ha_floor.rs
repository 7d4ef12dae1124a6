//! The floor of the Home Assistant path (`ha-ingestor bench ha-consume`): the source's
//! own connection (connect, auth, coalescing, `subscribe_events`) read in the source's
//! rhythm (a [`ReadRhythm`] tick or a [`READ_LOW_WATER`] burst) and every frame decoded into
//! events by the source's decoder — then dropped: no pipeline, buffer or InfluxDB. Its CPU
//! per event, beside the whole ingestor's on the same load (`scripts/bench-ws-e2e --client
//! floor`), tells what reading and decoding HA's stream costs apart from everything after.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::config::HomeAssistantConfig;
use crate::event::SourceId;
use crate::source::homeassistant::client::{
    READ_LOW_WATER, ReadRhythm, build_connector, open_socket, set_low_water,
};
use crate::source::homeassistant::decode::{ServerMessage, decode_frame};
use crate::source::homeassistant::protocol::{ClientMessage, Features};

/// What to read.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// `ws://host:port/api/websocket`.
    pub url: String,
    /// The access token.
    pub token: String,
    /// Stop once this long passes without an event (after the first one).
    pub idle: Duration,
    /// Read at every frame instead of by tick and burst (what the source did before).
    pub every_frame: bool,
}

/// What was read, and the CPU it cost.
#[derive(Debug, Clone, Serialize)]
pub struct FloorReport {
    /// Events decoded.
    pub received: u64,
    /// Frames read.
    pub frames: u64,
    /// Process CPU seconds from the first event until the end (the idle wait adds next to nothing).
    pub cpu_seconds: f64,
    /// `cpu_seconds` per event, in µs.
    pub micros_per_event: f64,
}

/// Connects, subscribes, calls `subscribed` once HA confirmed, and reads until idle or `stop`.
pub async fn consume(
    cfg: &FloorConfig,
    stop: CancellationToken,
    mut subscribed: impl FnMut(),
) -> anyhow::Result<FloorReport> {
    let ha: HomeAssistantConfig = toml::from_str(&format!("url = {:?}\n", cfg.url))
        .context("the floor's Home Assistant URL")?;
    let connector = build_connector(&ha)?;
    let (mut ws, _version) = open_socket(&ha, &ha.websocket_url(), &connector, &cfg.token)
        .await
        .context("connecting to Home Assistant")?;
    for command in [
        ClientMessage::SupportedFeatures {
            id: 1,
            features: Features {
                coalesce_messages: Some(1),
            },
        },
        ClientMessage::SubscribeEvents {
            id: 2,
            event_type: None,
        },
    ] {
        ws.feed(Message::text(command.to_json())).await?;
    }
    ws.flush().await?;

    let source: SourceId = "floor".into();
    let mut decoded = Vec::new();
    let (mut received, mut frames, mut confirmed) = (0u64, 0u64, false);
    let mut first: Option<f64> = None;
    let mut last_event = Instant::now();
    let mut rhythm = ReadRhythm::new();
    let mut low_water = false;
    loop {
        let frame = tokio::select! {
            biased;
            frame = ws.next() => frame,
            _ = stop.cancelled() => break,
            _ = rhythm.tick() => {
                if first.is_some() && last_event.elapsed() >= cfg.idle {
                    break;
                }
                if low_water {
                    low_water = !set_low_water(&ws, 1);
                }
                continue;
            }
        };
        // This frame, then every frame the socket already holds, as the session does.
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => bail!("Home Assistant closed the connection"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("reading from Home Assistant"),
            };
            frames += 1;
            decode_frame(&text, &source, &mut decoded);
            rhythm.read(decoded.len() as u64);
            for message in decoded.drain(..) {
                match message {
                    Ok(ServerMessage::Event { .. }) => {
                        if first.is_none() {
                            first = Some(process_cpu_seconds()?);
                        }
                        received += 1;
                        last_event = Instant::now();
                    }
                    Ok(ServerMessage::Reply(_)) if !confirmed => {
                        confirmed = true;
                        subscribed();
                    }
                    _ => {}
                }
            }
            next = ws.next().now_or_never();
        }
        // As the session: raised once subscribed and after each read, lowered at each tick.
        if confirmed && !cfg.every_frame && !low_water {
            low_water = set_low_water(&ws, READ_LOW_WATER);
        }
    }
    let cpu_seconds = process_cpu_seconds()? - first.unwrap_or_default();
    Ok(FloorReport {
        received,
        frames,
        cpu_seconds,
        micros_per_event: cpu_seconds / received.max(1) as f64 * 1e6,
    })
}

/// User + system CPU seconds of this process, as the monitor reads them.
fn process_cpu_seconds() -> anyhow::Result<f64> {
    crate::monitor::process::sample()
        .cpu_seconds
        .context("cannot read this process's CPU time from /proc/self/stat")
}
