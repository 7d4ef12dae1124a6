//! Making a connection: the TLS connector, the WebSocket upgrade and the auth phase.
//!
//! [`open`] is what every session and [`super::probe`] start with: connect (within
//! `connect_timeout`, errors sorted into TLS, HTTP and reachability), then
//! `auth_required` → `auth` → `auth_ok` (within `connect_timeout` again). The
//! socket's own message cap is the hard one (see "Message size" in
//! `client.rs`); `max_message_bytes` is enforced by the session.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::ClientError;
use crate::config::HomeAssistantConfig;
use crate::event::SourceId;
use crate::source::homeassistant::decode::{ServerMessage, decode_binary_frame, decode_frame};
use crate::source::homeassistant::protocol::{ClientMessage, ServerReply};

/// Bytes read from the socket at a time (see `open`).
const READ_BUFFER: usize = 16 * 1024;

/// The socket of one connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects and authenticates, each step within `connect_timeout`; returns the socket and HA's version.
pub async fn open(
    cfg: &HomeAssistantConfig,
    url: &str,
    connector: &Connector,
    token: &str,
) -> Result<(Ws, String), ClientError> {
    let mut ws = connect(cfg, url, connector).await?;
    let ha_version = tokio::time::timeout(cfg.connect_timeout, authenticate(&mut ws, token))
        .await
        .map_err(|_| ClientError::Timeout("waiting for authentication".into()))??;
    Ok((ws, ha_version))
}

/// The size tungstenite itself allows: 4 × `max_message_bytes`, at least 16 MiB.
fn hard_message_cap(cfg: &HomeAssistantConfig) -> usize {
    cfg.max_message_bytes.saturating_mul(4).max(16 << 20)
}

/// Plain for `ws://`; rustls on the ring provider for `wss://` (webpki roots + `tls.ca_file`).
pub fn build_connector(cfg: &HomeAssistantConfig) -> Result<Connector, ClientError> {
    if !cfg.websocket_url().starts_with("wss://") {
        return Ok(Connector::Plain);
    }
    let config = crate::tls::client_config(&cfg.tls, "homeassistant")
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    Ok(Connector::Rustls(Arc::new(config)))
}

/// The TCP (and TLS) connection and the WebSocket upgrade, within `connect_timeout`.
async fn connect(
    cfg: &HomeAssistantConfig,
    url: &str,
    connector: &Connector,
) -> Result<Ws, ClientError> {
    let cap = hard_message_cap(cfg);
    // tungstenite zeroes its whole read buffer (128 KiB by default) before every
    // read; HA's frames are a few KiB, so a small one saves that work per frame.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(cap))
        .max_frame_size(Some(cap));
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        url,
        Some(ws_config),
        true,
        Some(connector.clone()),
    );
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Err(_) => Err(ClientError::Timeout(format!("connecting to {url}"))),
        Ok(Err(error)) => Err(match error {
            tungstenite::Error::Tls(e) => ClientError::Tls(format!("{url}: {e}")),
            // rustls handshake failures (unknown issuer, bad name) arrive wrapped in io::Error.
            tungstenite::Error::Io(e)
                if e.get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
            {
                ClientError::Tls(format!("{url}: {e}"))
            }
            tungstenite::Error::Http(response) => {
                ClientError::Connect(format!("{url}: HTTP status {}", response.status()))
            }
            other => ClientError::Connect(format!("{url}: {other}")),
        }),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// Reads the next message of the auth phase (the first element of the frame).
async fn next_control(ws: &mut Ws, source: &SourceId) -> Result<ServerMessage, ClientError> {
    let mut out = Vec::with_capacity(1);
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => decode_frame(&text, source, &mut out),
            Some(Ok(Message::Binary(bytes))) => decode_binary_frame(&bytes, source, &mut out),
            Some(Ok(Message::Close(frame))) => {
                return Err(ClientError::Closed(close_reason(frame.as_ref())));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(ClientError::Closed(error.to_string())),
            None => return Err(ClientError::Closed("end of stream".into())),
        }
        if let Some(first) = out.drain(..).next() {
            return first.map_err(|e| ClientError::Protocol(e.to_string()));
        }
    }
}

/// The error text of a close frame.
pub(super) fn close_reason(frame: Option<&tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed by Home Assistant ({}: {})", f.code, f.reason),
        None => "closed by Home Assistant".to_string(),
    }
}

/// `auth_required` → `auth` → `auth_ok`; returns HA's version.
async fn authenticate(ws: &mut Ws, token: &str) -> Result<String, ClientError> {
    let source = SourceId::from("auth");
    match next_control(ws, &source).await? {
        ServerMessage::Reply(ServerReply::AuthRequired { .. }) => {}
        other => {
            return Err(ClientError::Protocol(format!(
                "expected auth_required, got {}",
                describe(&other)
            )));
        }
    }
    let auth = ClientMessage::Auth {
        access_token: token.to_string(),
    };
    ws.send(Message::text(auth.to_json()))
        .await
        .map_err(|e| ClientError::Closed(e.to_string()))?;
    match next_control(ws, &source).await {
        Ok(ServerMessage::Reply(ServerReply::AuthOk { ha_version })) => Ok(ha_version),
        Ok(ServerMessage::Reply(ServerReply::AuthInvalid { message })) => {
            Err(ClientError::AuthInvalid { message })
        }
        Ok(other) => Err(ClientError::Protocol(format!(
            "expected auth_ok, got {}",
            describe(&other)
        ))),
        Err(e) => Err(e),
    }
}

/// A short name of a message for logs and protocol errors (`auth_ok`, `result 3`, …).
pub(super) fn describe(msg: &ServerMessage) -> String {
    match msg {
        ServerMessage::Reply(ServerReply::AuthRequired { .. }) => "auth_required".into(),
        ServerMessage::Reply(ServerReply::AuthOk { .. }) => "auth_ok".into(),
        ServerMessage::Reply(ServerReply::AuthInvalid { .. }) => "auth_invalid".into(),
        ServerMessage::Reply(ServerReply::Result { id, .. }) => format!("result {id}"),
        ServerMessage::Reply(ServerReply::Pong { id }) => format!("pong {id}"),
        ServerMessage::Event { id, .. } => format!("event {id}"),
        ServerMessage::Entities { id, .. } => format!("entities event {id}"),
        ServerMessage::Other { kind } => kind.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_setup_errors_are_tls_errors() {
        let mut cfg = HomeAssistantConfig::new("https://ha.example:8123", "t");
        assert!(matches!(build_connector(&cfg), Ok(Connector::Rustls(_))));
        cfg.tls.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(build_connector(&cfg), Err(ClientError::Tls(_))));
        cfg.tls.insecure_skip_verify = true;
        cfg.tls.ca_file = None;
        assert!(matches!(build_connector(&cfg), Ok(Connector::Rustls(_))));
        let plain = HomeAssistantConfig::new("http://ha.local:8123", "t");
        assert!(matches!(build_connector(&plain), Ok(Connector::Plain)));
    }

    #[test]
    fn oversized_messages_below_the_hard_cap_survive() {
        let mut cfg = HomeAssistantConfig::new("ws://x", "t");
        cfg.max_message_bytes = 1000;
        assert_eq!(hard_message_cap(&cfg), 16 << 20);
        cfg.max_message_bytes = 64 << 20;
        assert_eq!(hard_message_cap(&cfg), 256 << 20);
    }
}
