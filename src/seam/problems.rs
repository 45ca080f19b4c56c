//! What each access code warning and error means, and what to do about it: the
//! console's explanations. The meanings are the descriptions in Seam's published
//! OpenAPI document (npm `@seamapi/types`, `access_code.errors` / `.warnings`); the
//! remedies are those of Seam's guide "Troubleshooting Access Codes" where it names the
//! code, otherwise the step the description itself points to. Codes not listed here
//! (Seam adds new ones often) are shown as Seam sent them.

/// A known warning or error code, in plain words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explanation {
    /// What is going on.
    pub meaning: &'static str,
    /// What an operator can do.
    pub remedy: &'static str,
}

const fn explained(meaning: &'static str, remedy: &'static str) -> Explanation {
    Explanation { meaning, remedy }
}

const CONNECTIVITY: &str = "Check that the lock (and its hub or bridge) has power and a stable internet connection, \
     for example by locking and unlocking it through Seam; Seam retries once it is reachable, and this service \
     re-fetches the code when Seam reports the change.";

/// The explanation of an access code's `error_code`, when it is a known one.
pub fn error(code: &str) -> Option<Explanation> {
    Some(match code {
        "failed_to_set_on_device" => explained(
            "Seam could not program the code on the lock.",
            "Check the error message for more specific steps, or give the guest a backup access code \
             (see \"Backup access codes\").",
        ),
        "failed_to_remove_from_device" => explained(
            "Seam could not remove the code from the lock.",
            "Check the error message for more specific steps. Confirm in the lock provider's app whether the \
             code is still on the lock: it may have been deleted through another source.",
        ),
        "duplicate_code_on_device" => explained(
            "The lock already holds a code with the same PIN (or name).",
            "Look for unmanaged access codes with the same PIN or name, in the provider's app or in Seam. If \
             you find a duplicate, delete it or convert it to a managed code.",
        ),
        "no_space_for_access_code_on_device" => explained(
            "The lock has no free slot for another code.",
            "Delete access codes the lock no longer needs to free slots (through Seam where you can).",
        ),
        "conflicting_external_modification" => explained(
            "The code was changed or removed on the lock outside Seam after Seam had set it, and the change \
             conflicts with what Seam is applying.",
            "Seam sets the code on the lock again by itself. If it keeps happening, find what else manages the \
             lock, or delete and re-create the code through Seam.",
        ),
        "access_code_inactive" => explained(
            "The code exists on the lock but is disabled: it will not open the door until it is re-enabled.",
            "Re-enable the code on the lock (in the provider's app), or re-create it through Seam.",
        ),
        "insufficient_permissions" => explained(
            "The connected account lacks the admin role needed to manage PINs on this lock.",
            "Ask an admin of the lock's account to update your role, or to set the PIN.",
        ),
        "provider_issue" => explained(
            "A problem on the lock provider's side prevents Seam from setting or managing the code.",
            "Check the error message for details; it usually clears when the provider recovers.",
        ),
        "account_disconnected" => explained(
            "The lock's connected account is disconnected from Seam.",
            "Reconnect the account (a new Connect Webview for it); Seam then retries its codes.",
        ),
        "salto_ks_subscription_limit_exceeded" => explained(
            "The Salto KS site has reached its user limit.",
            "Check the Salto user's subscription and your Salto site's subscription limit.",
        ),
        "dormakaba_sites_disconnected" => explained(
            "One or more dormakaba sites of the connected account could not be connected.",
            "Contact dormakaba support.",
        ),
        "device_offline" => explained("The lock is offline.", CONNECTIVITY),
        "device_disconnected" => explained("The lock is disconnected.", CONNECTIVITY),
        "hub_disconnected" => explained("The lock's hub is disconnected.", CONNECTIVITY),
        "device_removed" => explained(
            "The lock has been removed from its account.",
            "Add the lock back to the provider account connected to Seam, or delete the code.",
        ),
        "empty_backup_access_code_pool" => explained(
            "The lock's pool of backup access codes is empty.",
            "Wait for Seam to program more backup codes, or free slots on the lock so that it can.",
        ),
        "august_lock_not_authorized" => explained(
            "The account is not authorized to use this August lock.",
            "Grant the connected August account access to the lock in the August app.",
        ),
        "missing_device_credentials" => explained(
            "Seam lacks the credentials it needs for this lock.",
            "Provide the lock's credentials again (reconnect the account or the lock).",
        ),
        "subscription_required" => explained(
            "A subscription is required to connect this lock.",
            "Activate the lock's subscription with its provider.",
        ),
        "bridge_disconnected" => explained(
            "Seam cannot communicate with Seam Bridge: the Bridge program stopped, or the computer running it is \
             offline.",
            "Start Seam Bridge again and check that its computer is online.",
        ),
        // Named in Seam's troubleshooting guide; older or provider-specific codes.
        "code_modified_external_to_seam" => explained(
            "The code was modified or created on the lock by something other than Seam.",
            "Delete and re-create the code through Seam, or convert it from unmanaged to managed if it was \
             created outside Seam. By default Seam attempts to reset the code.",
        ),
        "august_device_programming_delay" | "august_lock_temporarily_offline" => {
            explained("The August lock is slow to respond or temporarily offline.", CONNECTIVITY)
        }
        "august_device_slots_full" => explained(
            "The August lock has no free code slot.",
            "Delete existing access codes on the lock to free slots, through Seam if possible.",
        ),
        "august_lock_bad_access_code_format" => explained(
            "The PIN or name does not meet this August lock's requirements.",
            "Review the PIN and name requirements of the lock and update the access code in Seam to match.",
        ),
        "salto_site_user_not_subscribed" => explained(
            "The Salto user is not subscribed.",
            "Check the Salto user's subscription and your Salto site's subscription limit.",
        ),
        "smartthings_failed_to_set_after_multiple_retries" => explained(
            "SmartThings failed to set the code after several retries.",
            "Check for duplicate codes caused by third-party software managing the lock (RBoy Apps in particular) \
             and disable it for locks managed through Seam.",
        ),
        "smartthings_no_free_slots_available" => explained(
            "The SmartThings lock has no free code slot.",
            "Delete existing access codes on the lock; besides the codes Seam manages, 3 other codes are on it.",
        ),
        "kwikset_unable_to_confirm_code" => explained(
            "Kwikset could not confirm the code, usually because of a duplicate PIN set outside Seam.",
            "Change this access code's PIN through Seam (Update Access Code).",
        ),
        "kwikset_unable_to_confirm_deletion" => explained(
            "Kwikset could not confirm that the code was deleted.",
            "Check the list of codes in the Kwikset app (over Bluetooth). If the code is not there it was deleted \
             elsewhere: contact Seam to remove their record; otherwise Seam keeps trying.",
        ),
        _ => return None,
    })
}

/// The explanation of an access code's `warning_code`, when it is a known one.
pub fn warning(code: &str) -> Option<Explanation> {
    Some(match code {
        "delay_in_setting_on_device" => explained(
            "Programming the code on the lock is taking longer than usual.",
            "Usually nothing: Seam keeps trying. If it lasts, check the lock's connectivity. A code that fails \
             becomes an error (failed_to_set_on_device).",
        ),
        "delay_in_removing_from_device" => explained(
            "Removing the code from the lock is taking longer than usual.",
            "Usually nothing: Seam keeps trying. If it lasts, check the lock's connectivity.",
        ),
        "code_rotates_periodically" => {
            explained("The code's PIN rotates when the code is renewed.", "Retrieve the latest PIN before each use.")
        }
        "time_frame_adjusted_for_unknown_time_zone" => explained(
            "The lock's time zone is unknown and the time frame crosses a daylight-saving change, so Seam added a \
             1-hour safety buffer: the code may work up to an hour beyond the requested window.",
            "Set the lock's time zone in Seam to remove the buffer.",
        ),
        "external_modification_in_effect" => explained(
            "The code was changed or removed on the lock outside Seam; external changes are allowed for this \
             code, so that state is kept.",
            "Nothing, if the change was intended; otherwise update the code through Seam.",
        ),
        "third_party_integration_detected" => explained(
            "Another integration manages this lock and may make access codes fail.",
            "Disable the other integration for locks managed through Seam.",
        ),
        "igloo_algopin_must_be_used_within_24_hours" => explained(
            "Igloo algoPINs must be used within 24 hours of their start, or they expire.",
            "Make sure the guest uses the PIN within 24 hours of its start.",
        ),
        "management_transferred" => explained(
            "Management of the code was transferred to another workspace.",
            "Manage the code from that workspace.",
        ),
        "using_backup_access_code" => explained(
            "A backup access code has been pulled and is used in place of this code.",
            "Give the guest the backup code's PIN (see the backup relation on this page).",
        ),
        "being_deleted" => explained("The code is being deleted.", "Nothing: it disappears once deleted."),
        "unknown_issue_with_access_code" => explained(
            "Seam reports an unknown issue with the code.",
            "Check the message; if it lasts, contact Seam support with the code's id.",
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code in Seam's published document (`@seamapi/types` 1.977.0) is explained.
    #[test]
    fn every_published_code_is_explained_and_unknown_ones_are_not_invented() {
        let errors = [
            "provider_issue",
            "failed_to_set_on_device",
            "failed_to_remove_from_device",
            "duplicate_code_on_device",
            "no_space_for_access_code_on_device",
            "conflicting_external_modification",
            "access_code_inactive",
            "insufficient_permissions",
            "account_disconnected",
            "salto_ks_subscription_limit_exceeded",
            "dormakaba_sites_disconnected",
            "device_offline",
            "device_removed",
            "hub_disconnected",
            "device_disconnected",
            "empty_backup_access_code_pool",
            "august_lock_not_authorized",
            "missing_device_credentials",
            "auxiliary_heat_running",
            "subscription_required",
            "bridge_disconnected",
        ];
        let warnings = [
            "code_rotates_periodically",
            "time_frame_adjusted_for_unknown_time_zone",
            "external_modification_in_effect",
            "delay_in_setting_on_device",
            "delay_in_removing_from_device",
            "third_party_integration_detected",
            "igloo_algopin_must_be_used_within_24_hours",
            "management_transferred",
            "using_backup_access_code",
            "being_deleted",
            "unknown_issue_with_access_code",
        ];
        // A thermostat's error, listed under access codes by the document: shown as sent.
        let unexplained: Vec<&str> = errors.iter().copied().filter(|c| error(c).is_none()).collect();
        assert_eq!(unexplained, ["auxiliary_heat_running"]);
        assert!(warnings.iter().all(|c| warning(c).is_some()));
        assert_eq!(error("made_up_by_seam_tomorrow"), None);
        assert_eq!(warning("failed_to_set_on_device"), None, "an error code is not a warning");
    }
}
