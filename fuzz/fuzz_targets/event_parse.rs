//! `SeamEvent::parse` on arbitrary bytes, and on JSON objects built from the input
//! (known fields with values of any type, repeated keys, nesting), with both
//! `store_pins` values.
//!
//! Invariants checked on every input:
//! - it never panics, and `store_pins` changes what is stored, never whether or why
//!   an event is accepted;
//! - an accepted event has an `event_id` and `event_type` of 1..=255 bytes, other ids
//!   of 1..=255 bytes when present, and an `access_code_id` when it is an
//!   `access_code.*` event; its `action()` re-fetches exactly that code;
//! - with `store_pins = false` the payload's top-level `code` is absent, null or
//!   "[redacted]"; with `store_pins = true` the payload is the body as parsed; the
//!   two differ in `code` only;
//! - nothing accepted holds a NUL character, which Postgres cannot store (text and
//!   jsonb refuse it), so an accepted event can always be written.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use seam_access_sync::seam::event::{EventAction, REDACTED, SeamEvent};
use serde_json::Value;

#[derive(Arbitrary, Debug)]
enum Key {
    EventId,
    EventType,
    AccessCodeId,
    DeviceId,
    WorkspaceId,
    OccurredAt,
    Code,
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
    Time(u32, i16),
    /// Raw text spliced in as is: a number like `1e400`, an escape like `"\u0000"`.
    Raw(String),
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
        Key::WorkspaceId => "workspace_id",
        Key::OccurredAt => "occurred_at",
        Key::Code => "code",
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
    let (redacted, kept) = match (redacted, kept) {
        (Err(a), Err(b)) => return assert_eq!(a, b, "store_pins changed the error"),
        (Ok(redacted), Ok(kept)) => (redacted, kept),
        (a, b) => panic!("store_pins changed the outcome: {a:?} / {b:?}"),
    };
    for event in [&redacted, &kept] {
        check_id(&event.event_id, "event_id");
        check_id(&event.event_type, "event_type");
        for (id, name) in [
            (&event.access_code_id, "access_code_id"),
            (&event.device_id, "device_id"),
            (&event.workspace_id, "workspace_id"),
        ] {
            if let Some(id) = id {
                check_id(id, name);
            }
        }
        match (event.event_type.starts_with("access_code."), event.action()) {
            (true, EventAction::Refetch { access_code_id, .. }) => {
                assert_eq!(Some(access_code_id), event.access_code_id.clone())
            }
            (false, EventAction::Ignore) => {}
            (is_access_code, action) => panic!("{} ({is_access_code}) gave {action:?}", event.event_type),
        }
        assert!(
            !holds_nul(&event.payload)
                && ![&event.event_id, &event.event_type].iter().any(|s| s.contains('\0'))
                && ![&event.access_code_id, &event.device_id, &event.workspace_id]
                    .iter()
                    .any(|s| s.as_deref().is_some_and(|s| s.contains('\0'))),
            "accepted an event Postgres cannot store (NUL character)"
        );
    }
    match redacted.payload.get("code") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == REDACTED => {}
        Some(other) => panic!("PIN not redacted: {other}"),
    }
    let as_received: Value = serde_json::from_slice(body).expect("accepted, so it is JSON");
    assert_eq!(kept.payload, as_received, "store_pins = true changed the payload");
    let (mut a, mut b) = (redacted.clone(), kept.clone());
    a.payload.as_object_mut().unwrap().remove("code");
    b.payload.as_object_mut().unwrap().remove("code");
    assert_eq!(a, b, "store_pins changed more than the PIN");
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Ok(fields) = Vec::<(Key, Json)>::arbitrary_take_rest(Unstructured::new(data)) {
        let mut body = String::new();
        write(&Json::Object(fields), &mut body);
        check(body.as_bytes());
    }
});
