//! Home Assistant WebSocket API message types, shared by the client and the simulator.
//!
//! Only the shapes are here: [`ClientMessage`] (every command the client sends,
//! which the simulator parses) and [`ServerReply`] (every server message but
//! events, which the simulator writes and the client's decoder produces).
//! Moving them over a socket is the client's job (and the simulator's); the
//! hot-path decoding of server frames, events included, is `decode.rs`.

use serde::{Deserialize, Serialize};

/// The path HA serves its WebSocket API on.
pub const WEBSOCKET_PATH: &str = "/api/websocket";

/// `error.code` for a command whose id did not increase.
pub const ERR_ID_REUSE: &str = "id_reuse";
/// `error.code` for a command that is not a well-formed object.
pub const ERR_INVALID_FORMAT: &str = "invalid_format";
/// `error.code` for a command type the server does not know.
pub const ERR_UNKNOWN_COMMAND: &str = "unknown_command";
/// `error.code` for an unknown subscription.
pub const ERR_NOT_FOUND: &str = "not_found";
/// `error.code` HA gives when a subscription cannot be made (e.g. `state_reported`).
pub const ERR_HOME_ASSISTANT: &str = "home_assistant_error";

/// HA's reply text to a refused token.
pub const MSG_INVALID_AUTH: &str = "Invalid access token or password";
/// HA's reply text to a non-increasing id.
pub const MSG_ID_REUSE: &str = "Identifier values have to increase.";
/// HA's reply text to an unknown command.
pub const MSG_UNKNOWN_COMMAND: &str = "Unknown command.";
/// HA's reply text to a malformed command.
pub const MSG_INVALID_FORMAT: &str = "Message incorrectly formatted.";

/// The `features` object of `supported_features`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// `1` lets the server send JSON arrays of messages in one frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_messages: Option<u8>,
}

/// Every client→server message the ingestor sends (and the simulator understands).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The only message of the auth phase; it carries no id.
    Auth {
        /// Long-lived or OAuth access token.
        access_token: String,
    },
    /// Announces optional protocol features (coalescing).
    SupportedFeatures {
        /// Command id.
        id: u64,
        /// The features wanted.
        features: Features,
    },
    /// Subscribes to bus events; without `event_type`, to all of them.
    SubscribeEvents {
        /// Command id, echoed by every event of this subscription.
        id: u64,
        /// One event type, or all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_type: Option<String>,
    },
    /// Subscribes to compressed states and their diffs (`a`/`c`/`r`); no other events.
    SubscribeEntities {
        /// Command id, echoed by every event of this subscription.
        id: u64,
        /// Only these entities; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entity_ids: Option<Vec<String>>,
    },
    /// Ends a subscription.
    UnsubscribeEvents {
        /// Command id.
        id: u64,
        /// The id of the `subscribe_events` command to end.
        subscription: u64,
    },
    /// Asks for every current state.
    GetStates {
        /// Command id.
        id: u64,
    },
    /// Asks for the core configuration (its `state` tells whether HA is running).
    GetConfig {
        /// Command id.
        id: u64,
    },
    /// Application-level heartbeat; answered by `pong`.
    Ping {
        /// Command id.
        id: u64,
    },
    /// Asks the recorder for every state change of `entity_ids` since `start_time` (gap backfill).
    #[serde(rename = "history/history_during_period")]
    HistoryDuringPeriod {
        /// Command id.
        id: u64,
        /// Start of the period, RFC 3339.
        start_time: String,
        /// End of the period; absent means now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_time: Option<String>,
        /// The entities asked for (required by current cores).
        entity_ids: Vec<String>,
        /// Add each entity's state in force at `start_time` as its first row.
        #[serde(default = "default_true")]
        include_start_time_state: bool,
        /// `true` drops attribute-only changes outside HA's significant domains: lossy.
        #[serde(default = "default_true")]
        significant_changes_only: bool,
        /// `true` keeps only the first row whole: lossy.
        #[serde(default)]
        minimal_response: bool,
        /// `true` leaves out attributes: lossy.
        #[serde(default)]
        no_attributes: bool,
    },
}

fn default_true() -> bool {
    true
}

/// By hand, so the token of `auth` never reaches a log line or a test failure.
impl std::fmt::Debug for ClientMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientMessage::Auth { .. } => f
                .debug_struct("Auth")
                .field("access_token", &"<redacted>")
                .finish(),
            other => write!(f, "ClientMessage({})", other.to_json()),
        }
    }
}

impl ClientMessage {
    /// The JSON text of this message (cannot fail: every field is a string, number or map of those).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `error` object of a failed `result`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable code (`id_reuse`, `unknown_command`, …).
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// Server→client messages other than events: the one wire type of both sides.
///
/// The simulator writes these; the client's decoder (`decode.rs`) produces them
/// as `ServerMessage::Reply`, in its single pass over the frame. Events are not
/// here: the simulator writes them by hand (`{"type":"event","event":…,"id":N}`,
/// id last as current HA does) and the decoder reads them with typed visitors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerReply {
    /// First message of every connection.
    AuthRequired {
        /// The server's version.
        ha_version: String,
    },
    /// The token was accepted.
    AuthOk {
        /// The server's version.
        ha_version: String,
    },
    /// The token or the auth message was refused; the server closes next.
    AuthInvalid {
        /// Why (empty when the server gives no reason).
        #[serde(default)]
        message: String,
    },
    /// The answer to a command.
    Result {
        /// The command's id.
        id: u64,
        /// Whether it worked.
        success: bool,
        /// The payload of a success (`null` for most commands).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
        /// The reason of a failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// The answer to `ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
}

impl ServerReply {
    /// A successful result carrying `result` (`Value::Null` for plain acknowledgements).
    pub fn success(id: u64, result: serde_json::Value) -> Self {
        ServerReply::Result {
            id,
            success: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failed result with HA's code and message.
    pub fn failure(id: u64, code: &str, message: &str) -> Self {
        ServerReply::Result {
            id,
            success: false,
            result: None,
            error: Some(ErrorInfo {
                code: code.to_string(),
                message: message.to_string(),
            }),
        }
    }

    /// The JSON text of this reply.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let auth = ClientMessage::Auth {
            access_token: "abc.def.ghi-token".into(),
        };
        let text = format!("{auth:?}");
        assert!(!text.contains("abc.def.ghi-token"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn commands_serialise_as_ha_expects() {
        let sub = ClientMessage::SubscribeEvents {
            id: 2,
            event_type: None,
        };
        assert_eq!(sub.to_json(), r#"{"type":"subscribe_events","id":2}"#);
        let entities = ClientMessage::SubscribeEntities {
            id: 3,
            entity_ids: Some(vec!["sensor.a".into()]),
        };
        assert_eq!(
            entities.to_json(),
            r#"{"type":"subscribe_entities","id":3,"entity_ids":["sensor.a"]}"#
        );
        let feat = ClientMessage::SupportedFeatures {
            id: 1,
            features: Features {
                coalesce_messages: Some(1),
            },
        };
        assert_eq!(
            feat.to_json(),
            r#"{"type":"supported_features","id":1,"features":{"coalesce_messages":1}}"#
        );
        let auth: ClientMessage =
            serde_json::from_str(r#"{"type":"auth","access_token":"abc"}"#).unwrap();
        assert_eq!(
            auth,
            ClientMessage::Auth {
                access_token: "abc".into()
            }
        );
    }

    #[test]
    fn a_history_request_names_its_command_as_ha_does() {
        let request = ClientMessage::HistoryDuringPeriod {
            id: 7,
            start_time: "2026-01-01T10:00:00.000000+00:00".into(),
            end_time: None,
            entity_ids: vec!["sensor.a".into()],
            include_start_time_state: true,
            significant_changes_only: false,
            minimal_response: false,
            no_attributes: false,
        };
        assert_eq!(
            request.to_json(),
            r#"{"type":"history/history_during_period","id":7,"start_time":"2026-01-01T10:00:00.000000+00:00","entity_ids":["sensor.a"],"include_start_time_state":true,"significant_changes_only":false,"minimal_response":false,"no_attributes":false}"#
        );
        // HA's defaults apply to what a client leaves out.
        let parsed: ClientMessage = serde_json::from_str(
            r#"{"type":"history/history_during_period","id":2,"start_time":"x","entity_ids":[]}"#,
        )
        .unwrap();
        assert!(matches!(
            parsed,
            ClientMessage::HistoryDuringPeriod {
                include_start_time_state: true,
                significant_changes_only: true,
                minimal_response: false,
                no_attributes: false,
                ..
            }
        ));
    }

    #[test]
    fn replies_serialise_as_ha_sends_them() {
        assert_eq!(
            ServerReply::success(1, serde_json::Value::Null).to_json(),
            r#"{"type":"result","id":1,"success":true,"result":null}"#
        );
        assert_eq!(
            ServerReply::failure(3, ERR_ID_REUSE, MSG_ID_REUSE).to_json(),
            r#"{"type":"result","id":3,"success":false,"error":{"code":"id_reuse","message":"Identifier values have to increase."}}"#
        );
    }
}
