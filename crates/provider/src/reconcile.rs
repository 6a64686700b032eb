//! Reconciliation: reading a page of `GET /v1/payment_intents` and picking the
//! payment intent that stands for a command. Pure.

use serde_json::Value;

use crate::{IntentStatus, ProviderError};

/// What the provider holds for a command, found by
/// [`Provider::find_charge`](crate::Provider::find_charge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCharge {
    /// The payment intent that stands for the command (`pi_…`): see
    /// [`Provider::find_charge`](crate::Provider::find_charge) for which one
    /// when several carry the command id.
    pub payment_intent: String,
    /// Its status: `Succeeded` means the command was charged;
    /// `RequiresPaymentMethod` (with a `decline_code`) that its last attempt
    /// was declined; an [in-progress](IntentStatus::is_in_progress) status
    /// that the money may still move.
    pub status: IntentStatus,
    /// The decline code of its last failed attempt
    /// (`last_payment_error.decline_code`, else `last_payment_error.code`),
    /// if any.
    pub decline_code: Option<String>,
    /// How many payment intents carry the command id (1 in the normal case;
    /// more after a decline and a later attempt, or a retry under a new key).
    pub matches: usize,
    /// How many of them succeeded. More than one means the command was
    /// charged more than once: an incident to raise, never to settle
    /// silently.
    pub succeeded: usize,
}

/// One payment intent of a listing, as reconciliation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub id: String,
    pub status: IntentStatus,
    pub created: i64,
    pub command_id: Option<String>,
    pub decline_code: Option<String>,
}

/// Reads one page of Stripe's list envelope: `(data, has_more)`.
pub(crate) fn parse_page(v: &Value) -> Result<(Vec<Listed>, bool), ProviderError> {
    let decode = |message: String| ProviderError::Decode {
        what: "list payment intents",
        message,
    };
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| decode("no `data` array".into()))?;
    let has_more = v.get("has_more").and_then(Value::as_bool).unwrap_or(false);
    let mut out = Vec::with_capacity(data.len());
    for (i, item) in data.iter().enumerate() {
        let text = |key: &str| item.get(key).and_then(Value::as_str);
        let (Some(id), Some(status)) = (text("id"), text("status")) else {
            return Err(decode(format!("item {i} has no string `id` and `status`")));
        };
        let error = item.get("last_payment_error");
        let error_text = |key: &str| {
            error
                .and_then(|e| e.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        out.push(Listed {
            id: id.to_string(),
            status: IntentStatus::parse(status),
            created: item.get("created").and_then(Value::as_i64).unwrap_or(0),
            command_id: item
                .get("metadata")
                .and_then(|m| m.get("command_id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            decline_code: error_text("decline_code").or_else(|| error_text("code")),
        });
    }
    Ok((out, has_more))
}

/// How much a status counts when several intents match: lower is preferred.
fn rank(status: &IntentStatus) -> u8 {
    if *status == IntentStatus::Succeeded {
        0
    } else if status.is_in_progress() {
        1
    } else {
        2
    }
}

/// Picks the intent that stands for `command_id` among `listed` (in list
/// order, newest first): a succeeded one first; else one still in progress;
/// else any other (declined, canceled, never confirmed). Within a rank, the
/// newest by `created`, then the first listed.
pub(crate) fn pick(listed: &[Listed], command_id: &str) -> Option<FoundCharge> {
    let matching: Vec<&Listed> = listed
        .iter()
        .filter(|l| l.command_id.as_deref() == Some(command_id))
        .collect();
    let mut best: Option<&Listed> = None;
    for l in &matching {
        best = match best {
            None => Some(l),
            Some(b) => {
                let better = (rank(&l.status), std::cmp::Reverse(l.created))
                    < (rank(&b.status), std::cmp::Reverse(b.created));
                Some(if better { l } else { b })
            }
        };
    }
    best.map(|b| FoundCharge {
        payment_intent: b.id.clone(),
        status: b.status.clone(),
        decline_code: b.decline_code.clone(),
        matches: matching.len(),
        succeeded: matching
            .iter()
            .filter(|l| l.status == IntentStatus::Succeeded)
            .count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(items: Value, has_more: bool) -> Value {
        json!({"object": "list", "url": "/v1/payment_intents", "data": items, "has_more": has_more})
    }

    #[test]
    fn reads_a_page() {
        let v = page(
            json!([
                {"id": "pi_2", "status": "succeeded", "created": 20, "metadata": {"command_id": "c1"}, "last_payment_error": null},
                {"id": "pi_1", "status": "requires_payment_method", "created": 10,
                 "metadata": {"command_id": "c1"},
                 "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}},
                {"id": "pi_0", "status": "requires_payment_method", "created": 5, "metadata": {},
                 "last_payment_error": {"code": "card_declined"}},
            ]),
            true,
        );
        let (items, more) = parse_page(&v).expect("page");
        assert!(more);
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(items[2].decline_code.as_deref(), Some("card_declined"));
        assert_eq!(items[2].command_id, None);
        assert!(parse_page(&json!({"data": [{"id": "pi_1"}]})).is_err());
        assert!(parse_page(&json!({"object": "list"})).is_err());
        assert!(!parse_page(&json!({"data": []})).expect("empty").1);
    }

    fn listed(id: &str, status: &str, created: i64, command: &str) -> Listed {
        Listed {
            id: id.into(),
            status: IntentStatus::parse(status),
            created,
            command_id: Some(command.into()),
            decline_code: (status == "requires_payment_method").then(|| "generic_decline".into()),
        }
    }

    #[test]
    fn prefers_a_success_then_progress_then_the_newest() {
        let l = vec![
            listed("pi_4", "requires_payment_method", 40, "c1"),
            listed("pi_3", "succeeded", 30, "c1"),
            listed("pi_2", "processing", 20, "c1"),
            listed("pi_x", "succeeded", 50, "other"),
        ];
        let f = pick(&l, "c1").expect("found");
        assert_eq!(f.payment_intent, "pi_3");
        assert_eq!(f.status, IntentStatus::Succeeded);
        assert_eq!(f.decline_code, None);
        assert_eq!((f.matches, f.succeeded), (3, 1));

        let f = pick(
            &l[..1].iter().chain(&l[2..3]).cloned().collect::<Vec<_>>(),
            "c1",
        )
        .expect("found");
        assert_eq!(f.payment_intent, "pi_2");

        let declines = vec![
            listed("pi_6", "requires_payment_method", 60, "c2"),
            listed("pi_5", "requires_payment_method", 50, "c2"),
        ];
        let f = pick(&declines, "c2").expect("found");
        assert_eq!(f.payment_intent, "pi_6");
        assert_eq!(f.decline_code.as_deref(), Some("generic_decline"));

        let twice = vec![
            listed("pi_8", "succeeded", 80, "c3"),
            listed("pi_7", "succeeded", 70, "c3"),
        ];
        let f = pick(&twice, "c3").expect("found");
        assert_eq!((f.payment_intent.as_str(), f.succeeded), ("pi_8", 2));

        assert_eq!(pick(&l, "nobody"), None);
        assert_eq!(pick(&[], "c1"), None);
    }
}
