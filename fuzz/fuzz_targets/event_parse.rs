//! `SeamEvent::parse` on arbitrary bytes, and on JSON objects built from the input
//! (known fields with values of any type, repeated keys, nesting), with both
//! `store_pins` values.
//!
//! Invariants checked on every input:
//! - it never panics, and `store_pins` changes what is stored, never whether or why
//!   an event is accepted;
//! - an accepted event has an `event_id` and `event_type` of 1..=255 bytes, other ids
//!   of 1..=255 bytes when present, and an `access_code_id` when it is an
//!   `access_code.*` event; its `action()` re-fetches exactly that code (for the
//!   device and account events the service acts on: that device's or account's codes);
//! - with `store_pins = false` no PIN is left where Seam puts one (the top-level
//!   `code`; `code` in an object with an `access_code_id`, in a `from`, `to`,
//!   `access_code` or `backup_access_code` object, in an entry of
//!   `pending_mutations`, `requested_mutations` or `changed_properties`; the `from`
//!   and `to` of a `changed_properties` entry whose `property` is `code`): each is
//!   absent, null or "[redacted]"; with `store_pins = true` the payload is the body
//!   as parsed; the two differ only in values replaced by "[redacted]";
//! - nothing accepted holds a NUL character, which Postgres cannot store (text and
//!   jsonb refuse it), so an accepted event can always be written;
//! - it accepts what parsing the whole body into a `serde_json::Value` accepts (a
//!   body refused as not JSON does not parse), and stores what `redact_pin` leaves
//!   of that `Value`.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use seam_access_sync::seam::event::{
    CONNECTED_ACCOUNT_EVENT_TYPES, DEVICE_EVENT_TYPES, EventAction, EventError, REDACTED, SeamEvent, redact_pin,
};
use serde_json::Map;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
enum Key {
    EventId,
    EventType,
    AccessCodeId,
    DeviceId,
    ConnectedAccountId,
    WorkspaceId,
    OccurredAt,
    Code,
    From,
    To,
    Property,
    MutationCode,
    AccessCode,
    PendingMutations,
    RequestedMutations,
    ChangedProperties,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// `access_code.` followed by anything.
    AccessCodeType(String),
    /// One of the device and account event types the service acts on.
    ActedOnType(u8),
    Time(u32, i16),
    /// Raw text spliced in as is: a number like `1e400`, an escape like `"\u0000"`.
    Raw(String),
    /// `"code"` (false) or `"updating_code"` (true): the values that mark a change
    /// of a PIN.
    CodeWord(bool),
}

#[derive(Arbitrary, Debug)]
enum Json {
    Scalar(Scalar),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

fn key_text(key: &Key) -> String {
    let key = match key {
        Key::EventId => "event_id",
        Key::EventType => "event_type",
        Key::AccessCodeId => "access_code_id",
        Key::DeviceId => "device_id",
        Key::ConnectedAccountId => "connected_account_id",
        Key::WorkspaceId => "workspace_id",
        Key::OccurredAt => "occurred_at",
        Key::Code => "code",
        Key::From => "from",
        Key::To => "to",
        Key::Property => "property",
        Key::MutationCode => "mutation_code",
        Key::AccessCode => "access_code",
        Key::PendingMutations => "pending_mutations",
        Key::RequestedMutations => "requested_mutations",
        Key::ChangedProperties => "changed_properties",
        Key::Other(other) => other,
    };
    Value::String(key.to_owned()).to_string()
}

fn write(json: &Json, out: &mut String) {
    match json {
        Json::Scalar(Scalar::Null) => out.push_str("null"),
        Json::Scalar(Scalar::Bool(b)) => out.push_str(&b.to_string()),
        Json::Scalar(Scalar::Int(i)) => out.push_str(&i.to_string()),
        Json::Scalar(Scalar::Float(f)) => out.push_str(&Value::from(*f).to_string()),
        Json::Scalar(Scalar::Text(s)) => out.push_str(&Value::String(s.clone()).to_string()),
        Json::Scalar(Scalar::AccessCodeType(s)) => out.push_str(&Value::String(format!("access_code.{s}")).to_string()),
        Json::Scalar(Scalar::ActedOnType(n)) => {
            let types = [DEVICE_EVENT_TYPES, CONNECTED_ACCOUNT_EVENT_TYPES].concat();
            out.push_str(&Value::String(types[usize::from(*n) % types.len()].to_owned()).to_string())
        }
        Json::Scalar(Scalar::Time(seconds, offset_minutes)) => {
            let (sign, minutes) = if *offset_minutes < 0 {
                ('-', -i32::from(*offset_minutes))
            } else {
                ('+', i32::from(*offset_minutes))
            };
            let (days, rest) = (seconds / 86_400, seconds % 86_400);
            out.push_str(&format!(
                "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}\"",
                1970 + days / 365 % 9000,
                1 + days % 12,
                1 + days % 28,
                rest / 3600,
                rest / 60 % 60,
                rest % 60,
                seconds % 1000,
                minutes / 60 % 100,
                minutes % 60,
            ));
        }
        Json::Scalar(Scalar::Raw(raw)) => out.push_str(raw),
        Json::Scalar(Scalar::CodeWord(updating)) => {
            out.push_str(if *updating { "\"updating_code\"" } else { "\"code\"" })
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Json::Object(fields) => {
            out.push('{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&key_text(key));
                out.push(':');
                write(value, out);
            }
            out.push('}');
        }
    }
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn check_id(id: &str, name: &str) {
    assert!(!id.is_empty() && id.len() <= 255, "{name} of {} bytes accepted", id.len());
}

fn check(body: &[u8]) {
    let redacted = SeamEvent::parse(body, false);
    let kept = SeamEvent::parse(body, true);
    // `parse` takes the body apart without one `Value` for the whole event: it must
    // accept exactly what such a parse accepts, and store what `redact_pin` on it
    // leaves.
    let whole = serde_json::from_slice::<Value>(body);
    if let Err(EventError::NotJson) = redacted {
        assert!(whole.is_err(), "refused as not JSON, but serde_json parses it");
    }
    let (redacted, kept) = match (redacted, kept) {
        (Err(a), Err(b)) => return assert_eq!(a, b, "store_pins changed the error"),
        (Ok(redacted), Ok(kept)) => (redacted, kept),
        (a, b) => panic!("store_pins changed the outcome: {a:?} / {b:?}"),
    };
    let mut whole = whole.expect("accepted, so it is JSON");
    redact_pin(&mut whole);
    assert_eq!(redacted.payload_value(), whole, "stored otherwise than redact_pin on the whole event");
    for event in [&redacted, &kept] {
        check_id(&event.event_id, "event_id");
        check_id(&event.event_type, "event_type");
        for (id, name) in [
            (&event.access_code_id, "access_code_id"),
            (&event.device_id, "device_id"),
            (&event.connected_account_id, "connected_account_id"),
            (&event.workspace_id, "workspace_id"),
        ] {
            if let Some(id) = id {
                check_id(id, name);
            }
        }
        let device_rule = DEVICE_EVENT_TYPES.contains(&event.event_type.as_str());
        let account_rule = CONNECTED_ACCOUNT_EVENT_TYPES.contains(&event.event_type.as_str());
        match (event.event_type.starts_with("access_code."), event.action()) {
            (true, EventAction::Refetch { access_code_id, .. }) => {
                assert_eq!(Some(access_code_id), event.access_code_id.clone())
            }
            (false, EventAction::RefetchDevice { device_id }) if device_rule => {
                assert_eq!(Some(device_id), event.device_id.clone())
            }
            (false, EventAction::RefetchConnectedAccount { connected_account_id }) if account_rule => {
                assert_eq!(Some(connected_account_id), event.connected_account_id.clone())
            }
            (false, EventAction::Ignore) if !device_rule && !account_rule => {}
            (is_access_code, action) => panic!("{} ({is_access_code}) gave {action:?}", event.event_type),
        }
        assert!(
            !holds_nul(&event.payload_value())
                && ![&event.event_id, &event.event_type].iter().any(|s| s.contains('\0'))
                && ![&event.access_code_id, &event.device_id, &event.connected_account_id, &event.workspace_id]
                    .iter()
                    .any(|s| s.as_deref().is_some_and(|s| s.contains('\0'))),
            "accepted an event Postgres cannot store (NUL character)"
        );
    }
    let (redacted_payload, kept_payload) = (redacted.payload_value(), kept.payload_value());
    let top = redacted_payload.as_object().expect("an event is an object");
    assert_hidden(top.get("code"), "code");
    assert_no_pin(&redacted_payload, "");
    let as_received: Value = serde_json::from_slice(body).expect("accepted, so it is JSON");
    assert_eq!(kept_payload, as_received, "store_pins = true changed the payload");
    assert_only_redacted(&redacted_payload, &kept_payload, "");
    let (mut a, mut b) = (redacted.clone(), kept.clone());
    (a.payload, b.payload) = (String::new(), String::new());
    assert_eq!(a, b, "store_pins changed more than the payload");
}

/// A PIN's place: absent, null or redacted.
fn assert_hidden(value: Option<&Value>, at: &str) {
    match value {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == REDACTED => {}
        Some(other) => panic!("PIN not redacted at {at}: {other}"),
    }
}

/// Every place a PIN can be, anywhere in `value` (the rules of the module doc,
/// restated here rather than taken from `redact_pin`).
fn assert_no_pin(value: &Value, at: &str) {
    match value {
        Value::Array(items) => items.iter().enumerate().for_each(|(i, item)| assert_no_pin(item, &format!("{at}/{i}"))),
        Value::Object(map) => {
            if map.contains_key("access_code_id") {
                assert_hidden(map.get("code"), &format!("{at}/code"));
            }
            for (key, child) in map {
                let here = format!("{at}/{key}");
                if ["from", "to", "access_code", "backup_access_code"].contains(&key.as_str())
                    && let Value::Object(inner) = child
                {
                    assert_hidden(inner.get("code"), &format!("{here}/code"));
                }
                if ["pending_mutations", "requested_mutations", "changed_properties"].contains(&key.as_str())
                    && let Value::Array(entries) = child
                {
                    for (i, entry) in entries.iter().enumerate() {
                        let Value::Object(entry) = entry else { continue };
                        assert_change_hidden(entry, &format!("{here}/{i}"));
                    }
                }
                assert_no_pin(child, &here);
            }
        }
        _ => {}
    }
}

fn assert_change_hidden(entry: &Map<String, Value>, at: &str) {
    assert_hidden(entry.get("code"), &format!("{at}/code"));
    if entry.get("property").and_then(Value::as_str) == Some("code") {
        assert_hidden(entry.get("from"), &format!("{at}/from"));
        assert_hidden(entry.get("to"), &format!("{at}/to"));
    }
    if entry.get("mutation_code").and_then(Value::as_str) == Some("updating_code") {
        for side in ["from", "to"] {
            if let Some(value) = entry.get(side).filter(|v| !v.is_object() && !v.is_array()) {
                assert_hidden(Some(value), &format!("{at}/{side}"));
            }
        }
    }
}

/// `redacted` is `kept` with some values replaced by "[redacted]", nothing else.
fn assert_only_redacted(redacted: &Value, kept: &Value, at: &str) {
    match (redacted, kept) {
        (Value::Object(r), Value::Object(k)) => {
            assert!(r.keys().eq(k.keys()), "keys changed at {at}");
            for (key, value) in r {
                assert_only_redacted(value, &k[key], &format!("{at}/{key}"));
            }
        }
        (Value::Array(r), Value::Array(k)) => {
            assert_eq!(r.len(), k.len(), "length changed at {at}");
            for (i, (r, k)) in r.iter().zip(k).enumerate() {
                assert_only_redacted(r, k, &format!("{at}/{i}"));
            }
        }
        (Value::String(s), k) if s == REDACTED && !k.is_null() => {}
        (r, k) => assert_eq!(r, k, "changed at {at}, not redacted"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(fields) = Vec::<(Key, Json)>::arbitrary_take_rest(Unstructured::new(data)) {
        let mut body = String::new();
        write(&Json::Object(fields), &mut body);
        check(body.as_bytes());
    }
});
