//! Seam's objects as Seam's own OpenAPI document describes them (npm `@seamapi/types`
//! 1.977.0, `components.schemas`): every field it requires, uuid ids, warnings and
//! errors in their documented shapes. `tests/api/contract.rs` holds each builder (and
//! the stand-in's answers built from them) to the document with
//! `node tests/e2e/contract.mjs`, so a fixture that drifts from Seam fails there.
//!
//! Tests override what they are about (`status`, `warnings`, …) with [`with`]; their
//! own short ids (`ac_1`) are not uuids, and deliberately minimal answers (the service
//! must take a code with only its ids and status) are kept where a test is about that.

use serde_json::{Value, json};

pub const WORKSPACE_ID: &str = "3f0c2d1e-8a4b-4c5d-9e6f-7a8b9c0d1e2f";
pub const DEVICE_ID: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
pub const CONNECTED_ACCOUNT_ID: &str = "9b8a7c6d-5e4f-4321-8fed-cba987654321";
/// When the fixtures' codes were created.
pub const CREATED_AT: &str = "2026-11-25T09:00:00.000Z";

/// `base` with the fields of the object `fields` laid over it.
pub fn with(mut base: Value, fields: Value) -> Value {
    if let (Some(base), Value::Object(fields)) = (base.as_object_mut(), fields) {
        base.extend(fields);
    }
    base
}

/// A managed code as `/access_codes/get` answers it (`components.schemas.access_code`):
/// ongoing, `set`, PIN 4321, no warnings, errors or pending mutations.
pub fn access_code(access_code_id: &str) -> Value {
    json!({
        "access_code_id": access_code_id,
        "device_id": DEVICE_ID,
        "workspace_id": WORKSPACE_ID,
        "name": "Guest 12",
        "code": "4321",
        "common_code_key": null,
        "type": "ongoing",
        "status": "set",
        "errors": [],
        "warnings": [],
        "is_managed": true,
        "created_at": CREATED_AT,
        "is_backup": false,
        "is_backup_access_code_available": false,
        "pulled_backup_access_code_id": null,
        "is_external_modification_allowed": false,
        "is_one_time_use": false,
        "is_offline_access_code": false,
        "is_scheduled_on_device": true,
        "is_waiting_for_code_assignment": false,
        "pending_mutations": []
    })
}

/// A code found on the lock, as `/access_codes/unmanaged/get` answers it
/// (`components.schemas.unmanaged_access_code`: `is_managed: false`, `set` or `unset`).
pub fn unmanaged_access_code(access_code_id: &str) -> Value {
    json!({
        "access_code_id": access_code_id,
        "device_id": DEVICE_ID,
        "workspace_id": WORKSPACE_ID,
        "name": "Found on the lock",
        "code": "1357",
        "type": "ongoing",
        "status": "set",
        "errors": [],
        "warnings": [],
        "is_managed": false,
        "created_at": CREATED_AT
    })
}

/// A warning of a code (`warning_code`, `message`, and when it was raised).
pub fn warning(warning_code: &str, message: &str) -> Value {
    json!({ "warning_code": warning_code, "message": message, "created_at": CREATED_AT })
}

/// An error of a code itself (`is_access_code_error`).
pub fn error(error_code: &str, message: &str) -> Value {
    json!({ "error_code": error_code, "message": message, "is_access_code_error": true, "created_at": CREATED_AT })
}

/// The `access_code.*` event types of the document (1.977.0).
pub const ACCESS_CODE_EVENT_TYPES: [&str; 21] = [
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

/// An `access_code.*` event as a webhook and `/events/list` carry it
/// (`components.schemas.event`, the branch of `event_type`): the ids, the times, and
/// what the type requires — the PIN on `scheduled_on_device`, `set_on_device` and
/// `deleted`; the six error and warning lists (empty) on the delay and failure types;
/// `from`/`to` on the `*_changed` types; `requested_mutations`;
/// `backup_access_code_id`. An event id is made from the type, code and time.
pub fn access_code_event(event_type: &str, access_code_id: &str, occurred_at: &str) -> Value {
    let event = json!({
        "event_id": event_id(event_type, access_code_id, occurred_at),
        "event_type": event_type,
        "workspace_id": WORKSPACE_ID,
        "device_id": DEVICE_ID,
        "connected_account_id": CONNECTED_ACCOUNT_ID,
        "access_code_id": access_code_id,
        "created_at": occurred_at,
        "occurred_at": occurred_at,
        "event_description": "test event"
    });
    let lists = json!({
        "access_code_errors": [], "access_code_warnings": [], "device_errors": [], "device_warnings": [],
        "connected_account_errors": [], "connected_account_warnings": []
    });
    let extra = match event_type.strip_prefix("access_code.").unwrap_or_default() {
        "scheduled_on_device" | "set_on_device" | "deleted" => json!({ "code": "4321" }),
        "delay_in_setting_on_device"
        | "failed_to_set_on_device"
        | "delay_in_removing_from_device"
        | "failed_to_remove_from_device"
        | "unmanaged.failed_to_convert_to_managed" => lists,
        "name_changed" => {
            json!({ "from": {"name": "Guest"}, "to": {"name": "Guest 12"}, "description": "name changed" })
        }
        "code_changed" => json!({ "from": {"code": "1234"}, "to": {"code": "4321"}, "description": "code changed" }),
        "time_frame_changed" => json!({
            "from": {"starts_at": null, "ends_at": null},
            "to": {"starts_at": "2026-12-01T15:00:00.000Z", "ends_at": "2026-12-05T11:00:00.000Z"},
            "description": "time frame changed"
        }),
        "mutations_requested" => json!({
            "requested_mutations": [{"mutation_code": "updating_code", "from": {"code": "1234"}, "to": {"code": "4321"}}]
        }),
        "backup_access_code_pulled" => json!({ "backup_access_code_id": "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9" }),
        _ => json!({}),
    };
    with(event, extra)
}

/// A uuid (v4-shaped) made from the event's type, code and time, so one test's
/// events have stable, distinct ids.
fn event_id(event_type: &str, access_code_id: &str, occurred_at: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(format!("{event_type}|{access_code_id}|{occurred_at}").as_bytes());
    let hex: String = hash.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}
