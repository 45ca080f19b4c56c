//! A Seam event as webhooks (and `/events/list`) carry it: one flat JSON object.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// Longest id we accept in an event; Seam ids are uuids (36 characters).
const MAX_ID_BYTES: usize = 255;

/// The one redaction of PINs, here too for the callers that know it by this path.
pub use super::redact::{REDACTED, redact_pin};

#[derive(Debug, Clone, PartialEq)]
pub struct SeamEvent {
    pub event_id: String,
    pub event_type: String,
    pub access_code_id: Option<String>,
    pub device_id: Option<String>,
    pub workspace_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// The whole event as received, every PIN redacted (`redact_pin`: nested ones
    /// too) unless the user opted in.
    pub payload: Value,
}

crate::text_enum::text_enum! {
    /// Which Seam endpoint serves a code: unmanaged codes have their own.
    pub enum CodeEndpoint {
        /// `/access_codes/get`
        Managed = "managed",
        /// `/access_codes/unmanaged/get`
        Unmanaged = "unmanaged",
    }
}

impl CodeEndpoint {
    /// The endpoint of a mirrored code, from its `is_managed` column.
    pub fn of(is_managed: bool) -> CodeEndpoint {
        if is_managed { CodeEndpoint::Managed } else { CodeEndpoint::Unmanaged }
    }
}

/// The one rule for what an event type asks of the service: every `access_code.*`
/// event, including types Seam adds later, asks for a re-fetch of its code, from
/// the unmanaged endpoint for `access_code.unmanaged.*` (but the conversion to
/// managed); any other family (`device.*`, `lock.*`, …) asks for nothing.
pub fn refetch_endpoint(event_type: &str) -> Option<CodeEndpoint> {
    let rest = event_type.strip_prefix("access_code.")?;
    if rest.starts_with("unmanaged.") && rest != "unmanaged.converted_to_managed" {
        Some(CodeEndpoint::Unmanaged)
    } else {
        Some(CodeEndpoint::Managed)
    }
}

/// What the service does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Fetch the code again, from this endpoint.
    Refetch { access_code_id: String, endpoint: CodeEndpoint },
    /// Stored and acknowledged only.
    Ignore,
}

crate::text_enum::text_enum! {
    /// `EventAction` as stored in `seam_events.action`.
    pub enum ActionKind {
        Refetch = "refetch",
        Ignored = "ignored",
    }
}

impl EventAction {
    pub fn kind(&self) -> ActionKind {
        match self {
            EventAction::Refetch { .. } => ActionKind::Refetch,
            EventAction::Ignore => ActionKind::Ignored,
        }
    }
}

/// An event as the queue, the mirror and its history name it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventRef {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

impl EventRef {
    /// Whether `self` replaces `older` as the event a code's queue row and mirror
    /// row name: the newer by `occurred_at`, where an event without one is older
    /// than any with one, and no event at all (a sweep) older still; on a tie the
    /// later arrival (`self`) wins. The SQL twin is the `event_supersedes` function
    /// (migrations), used by the queue's upsert; a test checks that both agree.
    pub fn supersedes(&self, older: &EventRef) -> bool {
        (self.occurred_at, self.event_id.is_some()) >= (older.occurred_at, older.event_id.is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not JSON")]
    NotJson,
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("`{0}` is missing or not a non-empty string")]
    MissingField(&'static str),
    #[error("`{0}` is longer than {MAX_ID_BYTES} bytes")]
    FieldTooLong(&'static str),
    #[error("a string or key holds a NUL character (\\u0000), which Postgres cannot store")]
    NulCharacter,
}

/// The fields we read; everything else stays in the raw payload.
#[derive(Deserialize)]
struct Fields {
    event_id: Option<Value>,
    event_type: Option<Value>,
    access_code_id: Option<Value>,
    device_id: Option<Value>,
    workspace_id: Option<Value>,
    occurred_at: Option<Value>,
}

impl SeamEvent {
    /// Parses a verified body. Unknown fields are kept in `payload`, never rejected.
    pub fn parse(body: &[u8], store_pins: bool) -> Result<SeamEvent, EventError> {
        let mut payload: Value = serde_json::from_slice(body).map_err(|_| EventError::NotJson)?;
        if !payload.is_object() {
            return Err(EventError::NotAnObject);
        }
        // Postgres text and jsonb refuse NUL: storing such an event would fail as a
        // database error (a 503 Svix retries for a day; catch-up stuck on it).
        if holds_nul(&payload) {
            return Err(EventError::NulCharacter);
        }
        let fields: Fields = serde_json::from_value(payload.clone()).map_err(|_| EventError::NotAnObject)?;
        let event_id = required_id(fields.event_id, "event_id")?;
        let event_type = required_id(fields.event_type, "event_type")?;
        let access_code_id = optional_id(fields.access_code_id, "access_code_id")?;
        if refetch_endpoint(&event_type).is_some() && access_code_id.is_none() {
            return Err(EventError::MissingField("access_code_id"));
        }
        if !store_pins {
            redact_pin(&mut payload);
        }
        Ok(SeamEvent {
            event_id,
            event_type,
            access_code_id,
            device_id: optional_id(fields.device_id, "device_id")?,
            workspace_id: optional_id(fields.workspace_id, "workspace_id")?,
            occurred_at: fields.occurred_at.as_ref().and_then(Value::as_str).and_then(parse_time),
            payload,
        })
    }

    /// What the service does with this event (`refetch_endpoint` decides).
    pub fn action(&self) -> EventAction {
        match (&self.access_code_id, refetch_endpoint(&self.event_type)) {
            (Some(access_code_id), Some(endpoint)) => {
                EventAction::Refetch { access_code_id: access_code_id.clone(), endpoint }
            }
            _ => EventAction::Ignore,
        }
    }
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Seam's ISO-8601 date-times; anything unreadable is treated as absent.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

fn required_id(value: Option<Value>, name: &'static str) -> Result<String, EventError> {
    optional_id(value, name)?.ok_or(EventError::MissingField(name))
}

fn optional_id(value: Option<Value>, name: &'static str) -> Result<Option<String>, EventError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(EventError::MissingField(name)),
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => Err(EventError::FieldTooLong(name)),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(EventError::MissingField(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(extra: Value) -> Vec<u8> {
        let mut base = json!({
            "event_id": "7b6c2a4e-0000-4000-8000-000000000001",
            "event_type": "access_code.set_on_device",
            "access_code_id": "ac_1",
            "device_id": "dev_1",
            "workspace_id": "ws_1",
            "occurred_at": "2026-11-25T10:00:00.000Z",
            "code": "1234",
            "some_future_field": {"nested": true}
        });
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::to_vec(&base).unwrap()
    }

    #[test]
    fn parses_a_set_on_device_event_and_redacts_its_pin() {
        let parsed = SeamEvent::parse(&event(json!({})), false).unwrap();
        assert_eq!(parsed.access_code_id.as_deref(), Some("ac_1"));
        assert_eq!(parsed.payload["code"], REDACTED);
        assert_eq!(parsed.payload["some_future_field"]["nested"], true);
        assert_eq!(parsed.occurred_at.unwrap().to_rfc3339(), "2026-11-25T10:00:00+00:00");
        assert_eq!(
            parsed.action(),
            EventAction::Refetch { access_code_id: "ac_1".into(), endpoint: CodeEndpoint::Managed }
        );
    }

    #[test]
    fn keeps_the_pin_when_the_user_opted_in() {
        let parsed = SeamEvent::parse(&event(json!({})), true).unwrap();
        assert_eq!(parsed.payload["code"], "1234");
    }

    #[test]
    fn nested_pins_are_redacted_in_the_stored_payload_unless_opted_in() {
        let code_changed = json!({
            "event_type": "access_code.code_changed", "from": {"code": "4821"}, "to": {"code": "9911"}
        });
        let changed = json!({
            "event_type": "access_code.changed",
            "changed_properties": [{"property": "code", "from": "4821", "to": "9911"}]
        });
        let mutations = json!({
            "event_type": "access_code.mutations_requested",
            "requested_mutations": [{"mutation_code": "updating_code", "from": {"code": "4821"}, "to": {"code": 9911}}]
        });
        for extra in [code_changed, changed, mutations] {
            let body = event(extra);
            let redacted = SeamEvent::parse(&body, false).unwrap().payload.to_string();
            for pin in ["1234", "4821", "9911"] {
                assert!(!redacted.contains(pin), "{pin} stored: {redacted}");
            }
            assert!(redacted.contains(r#""access_code_id":"ac_1""#), "{redacted}");
            let kept = SeamEvent::parse(&body, true).unwrap().payload;
            assert_eq!(kept, serde_json::from_slice::<Value>(&body).unwrap(), "store_pins = true keeps everything");
        }
    }

    #[test]
    fn unmanaged_events_use_the_unmanaged_endpoint_until_converted() {
        for (event_type, endpoint) in [
            ("access_code.unmanaged.created", CodeEndpoint::Unmanaged),
            ("access_code.unmanaged.removed", CodeEndpoint::Unmanaged),
            ("access_code.unmanaged.converted_to_managed", CodeEndpoint::Managed),
            ("access_code.some_type_invented_next_year", CodeEndpoint::Managed),
        ] {
            let parsed = SeamEvent::parse(&event(json!({"event_type": event_type})), false).unwrap();
            assert_eq!(
                parsed.action(),
                EventAction::Refetch { access_code_id: "ac_1".into(), endpoint },
                "{event_type}"
            );
        }
    }

    #[test]
    fn other_families_are_ignored() {
        let parsed = SeamEvent::parse(&event(json!({"event_type": "device.disconnected"})), false).unwrap();
        assert_eq!(parsed.action(), EventAction::Ignore);
        let body = br#"{"event_id":"e1","event_type":"lock.locked"}"#;
        assert_eq!(SeamEvent::parse(body, false).unwrap().action(), EventAction::Ignore);
    }

    #[test]
    fn rejects_nul_characters_postgres_cannot_store() {
        // Found by the `event_parse` fuzz target: before, such an event parsed, then
        // failed to insert (text and jsonb refuse NUL) and was answered 503.
        let found_by_fuzzing: &[u8] =
            br#"{"event_id":"e2","event_type":"access_code-.unmanaged.created","a\u0000code_id":"ac_4","code":null}"#;
        for body in [
            found_by_fuzzing.to_vec(),
            event(json!({"access_code_id": "ac\u{0}1"})),
            event(json!({"event_id": "\u{0}"})),
            event(json!({"some_future_field": {"deep": [1, "a\u{0}b"]}})),
            event(json!({"code": "12\u{0}34"})),
        ] {
            for store_pins in [false, true] {
                let error = SeamEvent::parse(&body, store_pins).unwrap_err();
                assert_eq!(error, EventError::NulCharacter, "{}", String::from_utf8_lossy(&body));
            }
        }
    }

    #[test]
    fn rejects_what_is_not_an_event() {
        let cases: Vec<(Vec<u8>, EventError)> = vec![
            (b"not json".to_vec(), EventError::NotJson),
            (b"[1,2]".to_vec(), EventError::NotAnObject),
            (
                br#"{"event_type":"access_code.created","access_code_id":"a"}"#.to_vec(),
                EventError::MissingField("event_id"),
            ),
            (br#"{"event_id":"e","access_code_id":"a"}"#.to_vec(), EventError::MissingField("event_type")),
            (
                br#"{"event_id":"e","event_type":"access_code.created"}"#.to_vec(),
                EventError::MissingField("access_code_id"),
            ),
            (event(json!({"access_code_id": null})), EventError::MissingField("access_code_id")),
            (event(json!({"access_code_id": 42})), EventError::MissingField("access_code_id")),
            (event(json!({"access_code_id": ""})), EventError::MissingField("access_code_id")),
            (event(json!({"access_code_id": "x".repeat(256)})), EventError::FieldTooLong("access_code_id")),
            (event(json!({"event_id": ["e"]})), EventError::MissingField("event_id")),
        ];
        for (body, expected) in cases {
            assert_eq!(SeamEvent::parse(&body, false).unwrap_err(), expected, "{}", String::from_utf8_lossy(&body));
        }
    }
}
