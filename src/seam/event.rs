//! A Seam event as webhooks (and `/events/list`) carry it: one flat JSON object.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// Longest id we accept in an event; Seam ids are uuids (36 characters).
const MAX_ID_BYTES: usize = 255;

/// The one redaction of PINs, here too for the callers that know it by this path.
use super::redact::redact_top_level_entry;
pub use super::redact::{REDACTED, redact_pin};

#[derive(Debug, Clone, PartialEq)]
pub struct SeamEvent {
    pub event_id: String,
    pub event_type: String,
    pub access_code_id: Option<String>,
    pub device_id: Option<String>,
    pub connected_account_id: Option<String>,
    pub workspace_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// The `backup_access_code_id` of the event, when it is a string.
    backup_access_code_id: Option<String>,
    /// The whole event as received, as JSON text, every PIN redacted (`redact_pin`:
    /// nested ones too) unless the user opted in. Its entries keep their order and
    /// their text, except those that may hold a PIN, written again after redaction.
    pub payload: String,
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

    /// The endpoint that serves the codes this one does not.
    pub fn other(self) -> CodeEndpoint {
        match self {
            CodeEndpoint::Managed => CodeEndpoint::Unmanaged,
            CodeEndpoint::Unmanaged => CodeEndpoint::Managed,
        }
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

/// Seam's event for a backup code pulled for a code: it names the backup
/// (`backup_access_code_id`), which is fetched too.
pub const BACKUP_PULLED_EVENT: &str = "access_code.backup_access_code_pulled";

/// The `access_code.*` types in `/events/list`'s `event_types` enum as Seam publishes
/// it (`@seamapi/types` 1.977.0). Seam's repository defines more (`issued`,
/// `failed_to_update`, …): those are handled when they arrive, never asked for, since
/// a value outside the published enum may be refused.
pub const LISTED_ACCESS_CODE_EVENT_TYPES: &[&str] = &[
    "access_code.created",
    "access_code.changed",
    "access_code.name_changed",
    "access_code.code_changed",
    "access_code.time_frame_changed",
    "access_code.mutations_requested",
    "access_code.scheduled_on_device",
    "access_code.set_on_device",
    "access_code.removed_from_device",
    "access_code.delay_in_setting_on_device",
    "access_code.failed_to_set_on_device",
    "access_code.deleted",
    "access_code.delay_in_removing_from_device",
    "access_code.failed_to_remove_from_device",
    "access_code.modified_external_to_seam",
    "access_code.deleted_external_to_seam",
    "access_code.backup_access_code_pulled",
    "access_code.unmanaged.converted_to_managed",
    "access_code.unmanaged.failed_to_convert_to_managed",
    "access_code.unmanaged.created",
    "access_code.unmanaged.removed",
];

/// `device.*` events that can change the warnings and errors of every code on the
/// device (the access-code errors flagged `is_device_error`: `device_offline`,
/// `device_disconnected`, `hub_disconnected`, `device_removed`,
/// `subscription_required`, and the `third_party_integration_detected` warning).
/// Battery and doorbell events change no code and are not here.
pub const DEVICE_EVENT_TYPES: &[&str] = &[
    "device.connected",
    "device.disconnected",
    "device.removed",
    "device.deleted",
    "device.converted_to_unmanaged",
    "device.unmanaged.converted_to_managed",
    "device.third_party_integration_detected",
    "device.third_party_integration_no_longer_detected",
    "device.connection_became_flaky",
    "device.connection_stabilized",
    "device.error.subscription_required",
    "device.error.subscription_required.resolved",
];

/// `connected_account.*` events that can change the codes on every device of the
/// account (the errors flagged `is_connected_account_error`: `account_disconnected`,
/// `salto_ks_subscription_limit_exceeded`, `bridge_disconnected`, …).
pub const CONNECTED_ACCOUNT_EVENT_TYPES: &[&str] = &[
    "connected_account.connected",
    "connected_account.disconnected",
    "connected_account.deleted",
    "connected_account.reauthorization_requested",
    "connected_account.completed_first_sync_after_reconnection",
];

/// Every event type the service asks `/events/list` for: each one it acts on that
/// Seam's published enum holds (the contract test checks them against it).
pub fn listed_event_types() -> Vec<&'static str> {
    [LISTED_ACCESS_CODE_EVENT_TYPES, DEVICE_EVENT_TYPES, CONNECTED_ACCOUNT_EVENT_TYPES].concat()
}

/// What the service does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Fetch the code again, from this endpoint.
    Refetch { access_code_id: String, endpoint: CodeEndpoint },
    /// Fetch every mirrored, not deleted code of the device again.
    RefetchDevice { device_id: String },
    /// Fetch every mirrored, not deleted code of the account's devices again.
    RefetchConnectedAccount { connected_account_id: String },
    /// Stored and acknowledged only.
    Ignore,
}

crate::text_enum::text_enum! {
    /// `EventAction` as stored in `seam_events.action`.
    pub enum ActionKind {
        Refetch = "refetch",
        RefetchDevice = "refetch_device",
        RefetchConnectedAccount = "refetch_connected_account",
        Ignored = "ignored",
    }
}

impl EventAction {
    pub fn kind(&self) -> ActionKind {
        match self {
            EventAction::Refetch { .. } => ActionKind::Refetch,
            EventAction::RefetchDevice { .. } => ActionKind::RefetchDevice,
            EventAction::RefetchConnectedAccount { .. } => ActionKind::RefetchConnectedAccount,
            EventAction::Ignore => ActionKind::Ignored,
        }
    }
}

/// What an event is about, as far as the service acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Code(CodeEndpoint),
    Device,
    ConnectedAccount,
}

impl Scope {
    /// The one rule for what an event type asks of the service (`None`: store it only).
    fn of(event_type: &str) -> Option<Scope> {
        if let Some(endpoint) = refetch_endpoint(event_type) {
            Some(Scope::Code(endpoint))
        } else if DEVICE_EVENT_TYPES.contains(&event_type) {
            Some(Scope::Device)
        } else if CONNECTED_ACCOUNT_EVENT_TYPES.contains(&event_type) {
            Some(Scope::ConnectedAccount)
        } else {
            None
        }
    }

    /// The event field this scope needs.
    fn field(self) -> &'static str {
        match self {
            Scope::Code(_) => "access_code_id",
            Scope::Device => "device_id",
            Scope::ConnectedAccount => "connected_account_id",
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
#[derive(Default)]
struct Fields {
    event_id: Option<Value>,
    event_type: Option<Value>,
    access_code_id: Option<Value>,
    device_id: Option<Value>,
    connected_account_id: Option<Value>,
    workspace_id: Option<Value>,
    occurred_at: Option<Value>,
    backup_access_code_id: Option<Value>,
}

impl Fields {
    /// Where the field named `key` goes, if it is one we read.
    fn slot(&mut self, key: &str) -> Option<&mut Option<Value>> {
        Some(match key {
            "event_id" => &mut self.event_id,
            "event_type" => &mut self.event_type,
            "access_code_id" => &mut self.access_code_id,
            "device_id" => &mut self.device_id,
            "connected_account_id" => &mut self.connected_account_id,
            "workspace_id" => &mut self.workspace_id,
            "occurred_at" => &mut self.occurred_at,
            "backup_access_code_id" => &mut self.backup_access_code_id,
            _ => return None,
        })
    }
}

/// The top-level entries of an event, each value as its text (checked as JSON
/// syntax only), keys unescaped (borrowed when they hold no escape).
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Key(key)) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// An object key, borrowed from the body when it holds no escape.
#[derive(Deserialize)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Deepest nesting of arrays and objects in a top-level entry's value: the whole
/// event may nest 127 deep, as deep as `serde_json` parses a `Value` (the event
/// object itself is the first level).
const MAX_ENTRY_DEPTH: usize = 126;

/// Checks a value as a `Value` parse would (numbers in range, escapes valid, depth
/// as above) without building it; notes a NUL in a string or key.
struct Check<'n> {
    depth: usize,
    nul: &'n mut bool,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        *self.nul |= text.contains('\0');
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        if depth > MAX_ENTRY_DEPTH {
            return Err(de::Error::custom("nested too deep"));
        }
        while seq.next_element_seed(Check { depth, nul: &mut *self.nul })?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        if depth > MAX_ENTRY_DEPTH {
            return Err(de::Error::custom("nested too deep"));
        }
        while map.next_key_seed(Check { depth, nul: &mut *self.nul })?.is_some() {
            map.next_value_seed(Check { depth, nul: &mut *self.nul })?;
        }
        Ok(())
    }
}

/// `Check` on one entry's text.
fn check(text: &str, nul: &mut bool) -> Result<(), EventError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Check { depth: 0, nul }.deserialize(&mut deserializer).map_err(|_| EventError::NotJson)
}

/// A top-level entry's value: its text as received, or parsed (a field we read, or
/// one that may hold a PIN) and written again.
enum EntryValue<'a> {
    Text(&'a str),
    Parsed(Value),
}

impl SeamEvent {
    /// Parses a verified body. Unknown fields are kept in `payload`, never rejected.
    ///
    /// Accepts and refuses exactly what parsing the body into a `serde_json::Value`
    /// would, without building one for the whole event: the top-level entries are
    /// split as text; only the fields read and the entries that may hold a PIN (their
    /// key or text holds `code`, or an escape) are parsed, then redacted; the others
    /// are checked (`Check`) and kept as they came.
    pub fn parse(body: &[u8], store_pins: bool) -> Result<SeamEvent, EventError> {
        // JSON is UTF-8 text, checked once here rather than entry by entry.
        let Ok(body) = std::str::from_utf8(body) else { return Err(EventError::NotJson) };
        let Ok(Entries(entries)) = serde_json::from_str::<Entries>(body) else {
            // Which answer: not JSON at all, or JSON but not an object.
            return Err(match serde_json::from_str::<Value>(body) {
                Ok(_) => EventError::NotAnObject,
                Err(_) => EventError::NotJson,
            });
        };
        let mut fields = Fields::default();
        let mut nul = false;
        let mut values = Vec::with_capacity(entries.len());
        for (key, raw) in &entries {
            let text = raw.get();
            nul |= key.contains('\0');
            let read = fields.slot(key);
            let may_hold_pin = key.contains("code") || text.contains("code") || text.contains('\\');
            let value = if read.is_some() || may_hold_pin {
                let mut value: Value = serde_json::from_str(text).map_err(|_| EventError::NotJson)?;
                // The nesting of the text, not of the `Value`: of repeated keys only
                // the last one's value is kept, but a whole parse goes through all.
                let brackets = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
                if brackets > MAX_ENTRY_DEPTH {
                    check(text, &mut false)?;
                }
                // NULs in what is kept (the entry is written again from `value`).
                nul |= holds_nul(&value);
                let rewrite = may_hold_pin && !store_pins;
                if let Some(slot) = read {
                    *slot = Some(if rewrite { value.clone() } else { std::mem::take(&mut value) });
                }
                if rewrite {
                    redact_top_level_entry(key, &mut value);
                    EntryValue::Parsed(value)
                } else {
                    EntryValue::Text(text)
                }
            } else {
                check(text, &mut nul)?;
                EntryValue::Text(text)
            };
            values.push(value);
        }
        // Postgres text and jsonb refuse NUL: storing such an event would fail as a
        // database error (a 503 Svix retries for a day; catch-up stuck on it).
        if nul {
            return Err(EventError::NulCharacter);
        }
        let event_id = required_id(fields.event_id, "event_id")?;
        let event_type = required_id(fields.event_type, "event_type")?;
        let access_code_id = optional_id(fields.access_code_id, "access_code_id")?;
        let device_id = optional_id(fields.device_id, "device_id")?;
        let connected_account_id = optional_id(fields.connected_account_id, "connected_account_id")?;
        if let Some(scope) = Scope::of(&event_type) {
            let id = match scope {
                Scope::Code(_) => &access_code_id,
                Scope::Device => &device_id,
                Scope::ConnectedAccount => &connected_account_id,
            };
            if id.is_none() {
                return Err(EventError::MissingField(scope.field()));
            }
        }
        Ok(SeamEvent {
            event_id,
            event_type,
            access_code_id,
            device_id,
            connected_account_id,
            workspace_id: optional_id(fields.workspace_id, "workspace_id")?,
            occurred_at: fields.occurred_at.as_ref().and_then(Value::as_str).and_then(parse_time),
            backup_access_code_id: match fields.backup_access_code_id {
                Some(Value::String(id)) => Some(id),
                _ => None,
            },
            payload: write_object(&entries, &values),
        })
    }

    /// The stored payload as a `Value`.
    pub fn payload_value(&self) -> Value {
        serde_json::from_str(&self.payload).expect("the payload is JSON written by `parse`")
    }

    /// The backup code an `access_code.backup_access_code_pulled` event names
    /// (`backup_access_code_id`), when it is a usable id.
    pub fn backup_access_code_id(&self) -> Option<&str> {
        if self.event_type != BACKUP_PULLED_EVENT {
            return None;
        }
        let id = self.backup_access_code_id.as_deref()?;
        (!id.is_empty() && id.len() <= MAX_ID_BYTES && Some(id) != self.access_code_id.as_deref()).then_some(id)
    }

    /// What the service does with this event (`refetch_endpoint` decides).
    pub fn action(&self) -> EventAction {
        match (Scope::of(&self.event_type), &self.access_code_id, &self.device_id, &self.connected_account_id) {
            (Some(Scope::Code(endpoint)), Some(id), _, _) => {
                EventAction::Refetch { access_code_id: id.clone(), endpoint }
            }
            (Some(Scope::Device), _, Some(id), _) => EventAction::RefetchDevice { device_id: id.clone() },
            (Some(Scope::ConnectedAccount), _, _, Some(id)) => {
                EventAction::RefetchConnectedAccount { connected_account_id: id.clone() }
            }
            _ => EventAction::Ignore,
        }
    }
}

/// The event object again, from its entries' keys and (possibly redacted) values.
fn write_object(entries: &[(Cow<'_, str>, &RawValue)], values: &[EntryValue<'_>]) -> String {
    let mut out =
        String::with_capacity(entries.iter().map(|(key, raw)| key.len() + raw.get().len() + 4).sum::<usize>() + 2);
    out.push('{');
    for (i, ((key, _), value)) in entries.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        match key {
            // Held no escape as received, so it needs none.
            Cow::Borrowed(key) => {
                out.push('"');
                out.push_str(key);
                out.push('"');
            }
            Cow::Owned(key) => out.push_str(&serde_json::to_string(key).expect("a string always serialises")),
        }
        out.push(':');
        match value {
            EntryValue::Text(text) => out.push_str(text),
            EntryValue::Parsed(value) => {
                out.push_str(&serde_json::to_string(value).expect("a Value always serialises"))
            }
        }
    }
    out.push('}');
    out
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
        assert_eq!(parsed.payload_value()["code"], REDACTED);
        assert_eq!(parsed.payload_value()["some_future_field"]["nested"], true);
        assert_eq!(parsed.occurred_at.unwrap().to_rfc3339(), "2026-11-25T10:00:00+00:00");
        assert_eq!(
            parsed.action(),
            EventAction::Refetch { access_code_id: "ac_1".into(), endpoint: CodeEndpoint::Managed }
        );
    }

    #[test]
    fn keeps_the_pin_when_the_user_opted_in() {
        let parsed = SeamEvent::parse(&event(json!({})), true).unwrap();
        assert_eq!(parsed.payload_value()["code"], "1234");
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
            let redacted = SeamEvent::parse(&body, false).unwrap().payload;
            for pin in ["1234", "4821", "9911"] {
                assert!(!redacted.contains(pin), "{pin} stored: {redacted}");
            }
            assert!(redacted.contains(r#""access_code_id":"ac_1""#), "{redacted}");
            let kept = SeamEvent::parse(&body, true).unwrap().payload_value();
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
    fn device_and_account_events_refetch_their_codes_and_other_families_are_ignored() {
        let parsed = SeamEvent::parse(&event(json!({"event_type": "device.disconnected"})), false).unwrap();
        assert_eq!(parsed.action(), EventAction::RefetchDevice { device_id: "dev_1".into() });
        let account = json!({"event_type": "connected_account.disconnected", "connected_account_id": "ca_1"});
        let parsed = SeamEvent::parse(&event(account), false).unwrap();
        assert_eq!(parsed.connected_account_id.as_deref(), Some("ca_1"));
        assert_eq!(parsed.action(), EventAction::RefetchConnectedAccount { connected_account_id: "ca_1".into() });
        for ignored in ["device.low_battery", "device.doorbell_rang", "lock.locked", "connected_account.created"] {
            let parsed = SeamEvent::parse(&event(json!({"event_type": ignored})), false).unwrap();
            assert_eq!(parsed.action(), EventAction::Ignore, "{ignored}");
        }
        let body = br#"{"event_id":"e1","event_type":"lock.locked"}"#;
        assert_eq!(SeamEvent::parse(body, false).unwrap().action(), EventAction::Ignore);
        let no_device = br#"{"event_id":"e1","event_type":"device.disconnected"}"#;
        assert_eq!(SeamEvent::parse(no_device, false).unwrap_err(), EventError::MissingField("device_id"));
        let no_account = br#"{"event_id":"e1","event_type":"connected_account.deleted"}"#;
        assert_eq!(SeamEvent::parse(no_account, false).unwrap_err(), EventError::MissingField("connected_account_id"));
    }

    #[test]
    fn every_listed_type_is_one_the_service_acts_on() {
        let types = listed_event_types();
        assert_eq!(types.len(), 21 + DEVICE_EVENT_TYPES.len() + CONNECTED_ACCOUNT_EVENT_TYPES.len());
        for event_type in types {
            assert!(Scope::of(event_type).is_some(), "{event_type}");
        }
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

    /// What `parse` stores or refuses, as parsing the whole body into a `Value`,
    /// then redacting it, would have it (the event fields' own checks aside).
    fn whole_value(body: &[u8], store_pins: bool) -> Result<Value, EventError> {
        let mut value: Value = serde_json::from_slice(body).map_err(|_| EventError::NotJson)?;
        if !value.is_object() {
            return Err(EventError::NotAnObject);
        }
        if holds_nul(&value) {
            return Err(EventError::NulCharacter);
        }
        if !store_pins {
            redact_pin(&mut value);
        }
        Ok(value)
    }

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn stores_and_refuses_what_a_whole_value_parse_would() {
        let ids = r#""event_id":"e","event_type":"access_code.changed","access_code_id":"a""#;
        let bodies: Vec<String> = [
            // Duplicate keys: the last counts, every PIN is hidden.
            r#"{IDS,"code":"1234","code":null}"#.to_owned(),
            r#"{IDS,"code":null,"code":"1234"}"#.to_owned(),
            r#"{IDS,"event_id":"e2","access_code_id":"b"}"#.to_owned(),
            // Escaped keys and values that spell what redaction looks for.
            r#"{IDS,"c\u006fde":"1234","x":{"access_code_id":"a","co\u0064e":"5"}}"#.to_owned(),
            r#"{IDS,"changed_properties":[{"property":"c\u006fde","from":"1","to":"2"}]}"#.to_owned(),
            r#"{IDS,"requested_mutations":[{"mutation_code":"updating_code","from":"1","to":{"code":"2"}}]}"#
                .to_owned(),
            // PINs nested where no top-level key says so.
            r#"{IDS,"meta":{"deep":[{"access_code_id":"z","code":"4821"}]}}"#.to_owned(),
            r#"{IDS,"meta":{"from":{"code":"4821"},"to":{"code":9911}}}"#.to_owned(),
            // What a `Value` parse refuses in an entry with no `code` and no escape.
            r#"{IDS,"n":1e400}"#.to_owned(),
            r#"{IDS,"n":-1e309,"m":[1]}"#.to_owned(),
            r#"{IDS,"s":"\ud800"}"#.to_owned(),
            r#"{IDS,"s":"\u0000"}"#.to_owned(),
            r#"{IDS,"o":{"k\u0000":1}}"#.to_owned(),
            // The deepest a `Value` parse takes, and one deeper.
            format!(r#"{{IDS,"d":{}}}"#, nested(126)),
            format!(r#"{{IDS,"d":{}}}"#, nested(127)),
            format!(r#"{{IDS,"code":{}}}"#, nested(126)),
            format!(r#"{{IDS,"code":{}}}"#, nested(127)),
            // Repeated keys: a `Value` keeps the last, a whole parse goes through all
            // (found by the fuzz target).
            format!(r#"{{IDS,"code":{{"a":{},"a":1}}}}"#, nested(126)),
            format!(r#"{{IDS,"code":{{"a":{},"a":1}}}}"#, nested(125)),
            r#"{IDS,"m":{"code":"\u0000","code":1}}"#.to_owned(),
            // A float that only a correctly rounded parse (`float_roundtrip`) reads
            // back the same once written again (found by the fuzz target).
            r#"{IDS,"m":{"code":[],"f":6.2106480528337074e+175}}"#.to_owned(),
            // Numbers and spacing kept as written.
            r#"{ IDS , "n" : 0.1000000000000000055511151231257827 , "e":[ ] }"#.to_owned(),
            r#"{IDS,"big":123456789012345678901234567890}"#.to_owned(),
            r#"[IDS]"#.to_owned(),
            r#"{IDS}trailing"#.to_owned(),
            r#"{IDS,"k":}"#.to_owned(),
        ]
        .iter()
        .map(|body| body.replace("IDS", ids))
        .collect();
        for body in &bodies {
            for store_pins in [false, true] {
                let parsed = SeamEvent::parse(body.as_bytes(), store_pins).map(|event| event.payload_value());
                assert_eq!(parsed, whole_value(body.as_bytes(), store_pins), "{body} (store_pins = {store_pins})");
            }
        }
    }
}
