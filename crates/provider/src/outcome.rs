//! What a charge attempt came to, and [`classify`]: the pure mapping from an
//! HTTP answer (status, three headers, body) to a [`ChargeOutcome`].

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// A payment intent's Stripe `status`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntentStatus {
    /// `succeeded`: the card was charged.
    Succeeded,
    /// `processing`: the charge is under way (asynchronous payment methods).
    Processing,
    /// `requires_action`: the customer must authenticate (3-D Secure).
    RequiresAction,
    /// `requires_capture`: authorised, waiting for a manual capture.
    RequiresCapture,
    /// `requires_confirmation`: created but never confirmed.
    RequiresConfirmation,
    /// `requires_payment_method`: the last attempt failed (a decline leaves a
    /// payment intent here), or no payment method was given.
    RequiresPaymentMethod,
    /// `canceled`.
    Canceled,
    /// Any other status text, kept as sent.
    Other(String),
}

impl IntentStatus {
    /// Reads Stripe's status text.
    pub fn parse(text: &str) -> IntentStatus {
        match text {
            "succeeded" => IntentStatus::Succeeded,
            "processing" => IntentStatus::Processing,
            "requires_action" => IntentStatus::RequiresAction,
            "requires_capture" => IntentStatus::RequiresCapture,
            "requires_confirmation" => IntentStatus::RequiresConfirmation,
            "requires_payment_method" => IntentStatus::RequiresPaymentMethod,
            "canceled" => IntentStatus::Canceled,
            other => IntentStatus::Other(other.to_string()),
        }
    }

    /// Stripe's status text.
    pub fn as_str(&self) -> &str {
        match self {
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Processing => "processing",
            IntentStatus::RequiresAction => "requires_action",
            IntentStatus::RequiresCapture => "requires_capture",
            IntentStatus::RequiresConfirmation => "requires_confirmation",
            IntentStatus::RequiresPaymentMethod => "requires_payment_method",
            IntentStatus::Canceled => "canceled",
            IntentStatus::Other(s) => s,
        }
    }

    /// Whether the money may still move without a new request from us
    /// (`processing`, `requires_action`, `requires_capture`): such an intent
    /// is neither a charge nor a failure yet.
    pub fn is_in_progress(&self) -> bool {
        matches!(
            self,
            IntentStatus::Processing | IntentStatus::RequiresAction | IntentStatus::RequiresCapture
        )
    }
}

impl fmt::Display for IntentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the same request should be sent again, with the same Idempotency-Key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryCause {
    /// 429: the provider's rate limiter refused the request before anything
    /// ran (Stripe's limiter sits in front of its idempotency layer).
    RateLimited,
    /// 409: another request with the same key is still executing
    /// (`idempotency_key_in_use`).
    Conflict,
    /// No answer within the request timeout (or an HTTP 408).
    Timeout,
    /// The connection failed or broke before a whole answer was read,
    /// including a connection dropped after the request was sent: the charge
    /// may have happened, and the key replays whatever did.
    Connection,
}

impl RetryCause {
    /// A short snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::RateLimited => "rate_limited",
            RetryCause::Conflict => "conflict",
            RetryCause::Timeout => "timeout",
            RetryCause::Connection => "connection",
        }
    }
}

/// What one charge attempt came to, as the settler needs it.
///
/// | Variant | From | The settler |
/// | --- | --- | --- |
/// | [`Succeeded`](Self::Succeeded) | 2xx, status `succeeded` | SETTLED |
/// | [`Unsettled`](Self::Unsettled) | 2xx, any other status | keeps it pending; reconciles later |
/// | [`Declined`](Self::Declined) | 402 | DECLINED (never retried) |
/// | [`Invalid`](Self::Invalid) | 400 `invalid_request_error`, 404, other 4xx | REJECTED |
/// | [`KeyMisuse`](Self::KeyMisuse) | 400 `idempotency_error` | logs a bug, reconciles |
/// | [`Retry`](Self::Retry) | 429, 409, 408, timeouts, connection errors | same key, after a backoff |
/// | [`Indeterminate`](Self::Indeterminate) | 5xx, unreadable 2xx, `Stripe-Should-Retry: false` on a retryable answer | reconciles, then a new key |
/// | [`Unauthorized`](Self::Unauthorized) | 401, 403 | configuration problem: stays pending, alerts |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The payment intent was created and charged.
    Succeeded {
        /// Its id (`pi_…`).
        payment_intent: String,
        /// The answer was a replay of a key's saved result
        /// (`Idempotent-Replayed: true`).
        replayed: bool,
    },
    /// The provider accepted the request but the payment intent has not
    /// succeeded (`processing`, `requires_action`, `requires_capture`, ...).
    /// Not terminal: the money may still move, so the settler keeps the
    /// command pending and reconciles it later with
    /// [`Provider::find_charge`](crate::Provider::find_charge).
    Unsettled {
        /// Its id (`pi_…`).
        payment_intent: String,
        /// Its status.
        status: IntentStatus,
    },
    /// The card said no (HTTP 402). Terminal: never retried.
    Declined {
        /// The payment intent left in `requires_payment_method`, when the
        /// error names it (`error.payment_intent.id`).
        payment_intent: Option<String>,
        /// Stripe's `error.decline_code` (`generic_decline`,
        /// `insufficient_funds`, ...); when absent, the error's `code`
        /// (`card_declined`, `expired_card`, ...); when both are absent,
        /// `unknown`.
        decline_code: String,
        /// The provider's message.
        message: String,
    },
    /// The provider found the request invalid (400 `invalid_request_error`,
    /// 404, or another 4xx): nothing was charged, and sending it again would
    /// fail again. The settler marks the command REJECTED.
    Invalid {
        /// The HTTP status.
        status: u16,
        /// Stripe's `error.code` (`resource_missing`, `parameter_invalid_integer`, ...).
        code: Option<String>,
        /// Stripe's `error.param`: the parameter at fault.
        param: Option<String>,
        /// The provider's message.
        message: String,
    },
    /// The key was already used with other parameters (400
    /// `idempotency_error`), or is not a valid key: a bug in hashbuy, which
    /// sent two different requests under one key. The settler logs it and
    /// reconciles.
    KeyMisuse {
        /// The provider's message (or ours, for a key we refused to send).
        message: String,
    },
    /// Send the same request again, with the same Idempotency-Key, after a
    /// backoff (see [`Backoff`](crate::Backoff)): whatever happened is either
    /// nothing or saved under the key.
    Retry {
        /// Why.
        cause: RetryCause,
        /// The `Retry-After` header, when the provider sent one: wait at
        /// least this long.
        after: Option<Duration>,
    },
    /// The outcome is unknown (HTTP 5xx, an unreadable success, or an
    /// answer saying `Stripe-Should-Retry: false`). The charge may or may
    /// not have happened, and retrying the same key would replay a saved
    /// 500. The settler reconciles with
    /// [`Provider::find_charge`](crate::Provider::find_charge), and only when
    /// the provider holds no charge retries under a new key.
    Indeterminate {
        /// The HTTP status.
        status: u16,
        /// The provider's message, or a description of the answer.
        message: String,
        /// The `Stripe-Should-Retry` header: `Some(false)` means Stripe says
        /// the same request must not be sent again; `Some(true)`, that it
        /// may; `None`, that it did not say.
        should_retry: Option<bool>,
        /// The answer was a replay of a key's saved result
        /// (`Idempotent-Replayed: true`): retrying the key is pointless.
        replayed: bool,
    },
    /// The provider refused the key (401) or its permissions (403): a
    /// configuration problem, not the command's. Nothing was charged.
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The provider's message (never containing the key).
        message: String,
    },
}

impl ChargeOutcome {
    /// A short snake_case name, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ChargeOutcome::Succeeded { .. } => "succeeded",
            ChargeOutcome::Unsettled { .. } => "unsettled",
            ChargeOutcome::Declined { .. } => "declined",
            ChargeOutcome::Invalid { .. } => "invalid",
            ChargeOutcome::KeyMisuse { .. } => "key_misuse",
            ChargeOutcome::Retry { .. } => "retry",
            ChargeOutcome::Indeterminate { .. } => "indeterminate",
            ChargeOutcome::Unauthorized { .. } => "unauthorized",
        }
    }

    /// Whether the outcome settles the command for good (SETTLED, DECLINED or
    /// REJECTED): [`Succeeded`](Self::Succeeded),
    /// [`Declined`](Self::Declined) and [`Invalid`](Self::Invalid).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ChargeOutcome::Succeeded { .. }
                | ChargeOutcome::Declined { .. }
                | ChargeOutcome::Invalid { .. }
        )
    }
}

/// The answer headers [`classify`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// `Retry-After`, in seconds (integer or decimal). HTTP dates, which
    /// Stripe does not send, are ignored.
    pub retry_after: Option<Duration>,
    /// `Stripe-Should-Retry`: `true` or `false`.
    pub should_retry: Option<bool>,
    /// `Idempotent-Replayed: true`.
    pub replayed: bool,
}

impl ResponseHeaders {
    /// Reads them from an answer's headers; absent or unreadable headers are
    /// `None` / `false`.
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        ResponseHeaders {
            retry_after: text("retry-after").and_then(parse_retry_after),
            should_retry: text("stripe-should-retry").and_then(parse_bool),
            replayed: text("idempotent-replayed").and_then(parse_bool) == Some(true),
        }
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `Retry-After` as seconds; `None` for a date, a negative or an absurd value.
fn parse_retry_after(text: &str) -> Option<Duration> {
    let secs: f64 = text.parse().ok()?;
    if secs.is_finite() && secs >= 0.0 {
        Duration::try_from_secs_f64(secs).ok()
    } else {
        None
    }
}

/// Stripe's error object (`{"error": {...}}`), leniently read: every field may
/// be missing, and servers other than Stripe fill it unevenly.
#[derive(Debug, Default)]
pub(crate) struct StripeError {
    pub kind: Option<String>,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
    pub param: Option<String>,
    pub payment_intent: Option<String>,
}

impl StripeError {
    /// Reads the `error` member of a JSON body; an empty value if there is none.
    pub(crate) fn parse(body: &[u8]) -> StripeError {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return StripeError::default();
        };
        let e = &v["error"];
        let s = |key: &str| e.get(key).and_then(Value::as_str).map(str::to_string);
        let payment_intent = match e.get("payment_intent") {
            Some(Value::Object(pi)) => pi.get("id").and_then(Value::as_str).map(str::to_string),
            Some(Value::String(id)) => Some(id.clone()),
            _ => None,
        };
        StripeError {
            kind: s("type"),
            code: s("code"),
            decline_code: s("decline_code"),
            message: s("message"),
            param: s("param"),
            payment_intent,
        }
    }

    /// The message, or a description of the answer.
    pub(crate) fn message_or(&self, status: u16, body: &[u8]) -> String {
        match &self.message {
            Some(m) => m.clone(),
            None => describe_body(status, body),
        }
    }
}

/// A short description of an answer that carried no Stripe error message:
/// the start of its body, if it is text.
fn describe_body(status: u16, body: &[u8]) -> String {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        let more = if body.len() > SHOWN { "…" } else { "" };
        format!("HTTP {status}: {text}{more}")
    }
}

/// Maps one HTTP answer to a payment-intent creation (`POST
/// /v1/payment_intents` with `confirm=true`) to a [`ChargeOutcome`]. Pure:
/// no I/O, no clock.
///
/// The rules, in order:
///
/// 1. 2xx: the body's `id` and `status`: `succeeded` is
///    [`Succeeded`](ChargeOutcome::Succeeded), anything else
///    [`Unsettled`](ChargeOutcome::Unsettled); a body without them is
///    [`Indeterminate`](ChargeOutcome::Indeterminate) (something may have
///    been charged).
/// 2. 401 and 403: [`Unauthorized`](ChargeOutcome::Unauthorized).
/// 3. 402: [`Declined`](ChargeOutcome::Declined), whatever the error type
///    (Stripe says `card_error`; localstripe says `invalid_request_error`).
/// 4. 409, or an `idempotency_error` with code `idempotency_key_in_use`:
///    [`Retry`](ChargeOutcome::Retry) (`Conflict`).
/// 5. Any other `idempotency_error`: [`KeyMisuse`](ChargeOutcome::KeyMisuse).
/// 6. 429: [`Retry`](ChargeOutcome::Retry) (`RateLimited`, with
///    `Retry-After`); 408: `Retry` (`Timeout`).
/// 7. Other 4xx with a Stripe error object (400 `invalid_request_error`,
///    404, ...): [`Invalid`](ChargeOutcome::Invalid). A 4xx without one was
///    not the provider's refusal but a proxy's or gateway's answer (an HTML
///    page), which says nothing of the charge: rule 8.
/// 8. 5xx and anything else: [`Indeterminate`](ChargeOutcome::Indeterminate),
///    carrying `Stripe-Should-Retry`.
///
/// A [`Retry`](ChargeOutcome::Retry) whose answer says
/// `Stripe-Should-Retry: false` becomes
/// [`Indeterminate`](ChargeOutcome::Indeterminate) with `should_retry:
/// Some(false)`: the provider says not to send that request again, so the
/// settler reconciles instead.
pub fn classify(status: u16, headers: &ResponseHeaders, body: &[u8]) -> ChargeOutcome {
    if (200..300).contains(&status) {
        return classify_success(status, headers, body);
    }
    let err = StripeError::parse(body);
    let message = err.message_or(status, body);
    let is_idempotency = err.kind.as_deref() == Some("idempotency_error");
    let retry = |cause: RetryCause| {
        if headers.should_retry == Some(false) {
            ChargeOutcome::Indeterminate {
                status,
                message: message.clone(),
                should_retry: Some(false),
                replayed: headers.replayed,
            }
        } else {
            ChargeOutcome::Retry {
                cause,
                after: headers.retry_after,
            }
        }
    };
    match status {
        401 | 403 => ChargeOutcome::Unauthorized { status, message },
        402 => ChargeOutcome::Declined {
            payment_intent: err.payment_intent,
            decline_code: err
                .decline_code
                .or(err.code)
                .unwrap_or_else(|| "unknown".to_string()),
            message,
        },
        409 => retry(RetryCause::Conflict),
        _ if is_idempotency && err.code.as_deref() == Some("idempotency_key_in_use") => {
            retry(RetryCause::Conflict)
        }
        _ if is_idempotency => ChargeOutcome::KeyMisuse { message },
        429 => retry(RetryCause::RateLimited),
        408 => retry(RetryCause::Timeout),
        400..=499 if err.kind.is_some() => ChargeOutcome::Invalid {
            status,
            code: err.code,
            param: err.param,
            message,
        },
        _ => ChargeOutcome::Indeterminate {
            status,
            message,
            should_retry: headers.should_retry,
            replayed: headers.replayed,
        },
    }
}

/// The two fields of a payment intent that classifying needs. Read into
/// this rather than a `serde_json::Value`: the rest of the body is skipped,
/// not built, which matters at thousands of charges a second.
#[derive(serde::Deserialize)]
struct IntentHead<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<std::borrow::Cow<'a, str>>,
}

fn classify_success(status: u16, headers: &ResponseHeaders, body: &[u8]) -> ChargeOutcome {
    let head = serde_json::from_slice::<IntentHead>(body).ok();
    let id = head
        .as_ref()
        .and_then(|h| h.id.as_deref())
        .filter(|s| !s.is_empty());
    let state = head
        .as_ref()
        .and_then(|h| h.status.as_deref())
        .filter(|s| !s.is_empty());
    match (id, state) {
        (Some(id), Some("succeeded")) => ChargeOutcome::Succeeded {
            payment_intent: id.to_string(),
            replayed: headers.replayed,
        },
        (Some(id), Some(s)) => ChargeOutcome::Unsettled {
            payment_intent: id.to_string(),
            status: IntentStatus::parse(s),
        },
        _ => ChargeOutcome::Indeterminate {
            status,
            message: format!(
                "a success answer without a payment intent's id and status ({})",
                describe_body(status, body)
            ),
            should_retry: headers.should_retry,
            replayed: headers.replayed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn none() -> ResponseHeaders {
        ResponseHeaders::default()
    }

    fn pi(id: &str, status: &str) -> Vec<u8> {
        serde_json::json!({
            "id": id, "object": "payment_intent", "amount": 4200, "currency": "usd",
            "status": status, "metadata": {"command_id": "c1"}, "livemode": false,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn success_and_unsettled() {
        assert_eq!(
            classify(200, &none(), &pi("pi_1", "succeeded")),
            ChargeOutcome::Succeeded {
                payment_intent: "pi_1".into(),
                replayed: false
            }
        );
        let replayed = ResponseHeaders {
            replayed: true,
            ..none()
        };
        assert_eq!(
            classify(200, &replayed, &pi("pi_1", "succeeded")),
            ChargeOutcome::Succeeded {
                payment_intent: "pi_1".into(),
                replayed: true
            }
        );
        for (text, status) in [
            ("processing", IntentStatus::Processing),
            ("requires_action", IntentStatus::RequiresAction),
            ("requires_capture", IntentStatus::RequiresCapture),
            (
                "weird_new_status",
                IntentStatus::Other("weird_new_status".into()),
            ),
        ] {
            let o = classify(200, &none(), &pi("pi_2", text));
            assert_eq!(
                o,
                ChargeOutcome::Unsettled {
                    payment_intent: "pi_2".into(),
                    status
                }
            );
            assert!(!o.is_terminal());
        }
    }

    #[test]
    fn unreadable_success_is_indeterminate() {
        for body in [
            &b"<html>ok</html>"[..],
            b"",
            b"{\"id\": \"pi_1\"}",
            b"{\"status\":\"succeeded\"}",
        ] {
            let o = classify(200, &none(), body);
            assert!(
                matches!(o, ChargeOutcome::Indeterminate { status: 200, .. }),
                "{o:?}"
            );
        }
    }

    #[test]
    fn card_errors_are_declines() {
        let body = serde_json::json!({"error": {
            "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "payment_intent": {"id": "pi_3", "object": "payment_intent", "status": "requires_payment_method"},
        }});
        let o = classify(402, &none(), body.to_string().as_bytes());
        assert_eq!(
            o,
            ChargeOutcome::Declined {
                payment_intent: Some("pi_3".into()),
                decline_code: "insufficient_funds".into(),
                message: "Your card has insufficient funds.".into(),
            }
        );
        assert!(o.is_terminal());

        // No decline_code (Stripe's expired_card, or localstripe): the code.
        let body = br#"{"error": {"type": "invalid_request_error", "code": "card_declined", "charge": "ch_1", "message": "Your card was declined."}}"#;
        assert_eq!(
            classify(402, &none(), body),
            ChargeOutcome::Declined {
                payment_intent: None,
                decline_code: "card_declined".into(),
                message: "Your card was declined.".into(),
            }
        );
        // Nothing at all.
        assert!(matches!(
            classify(402, &none(), b""),
            ChargeOutcome::Declined { decline_code, .. } if decline_code == "unknown"
        ));
    }

    #[test]
    fn invalid_requests_and_missing_resources() {
        let body = br#"{"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "payment_method", "message": "No such PaymentMethod: 'pm_nope'"}}"#;
        assert_eq!(
            classify(400, &none(), body),
            ChargeOutcome::Invalid {
                status: 400,
                code: Some("resource_missing".into()),
                param: Some("payment_method".into()),
                message: "No such PaymentMethod: 'pm_nope'".into(),
            }
        );
        let body = br#"{"error": {"type": "invalid_request_error", "message": "Not Found"}}"#;
        assert!(matches!(
            classify(404, &none(), body),
            ChargeOutcome::Invalid {
                status: 404,
                code: None,
                ..
            }
        ));
        // A 4xx that is not Stripe's error object came from something in
        // between, not the provider: indeterminate, with its body shown.
        assert!(matches!(
            classify(400, &none(), b"Bad request"),
            ChargeOutcome::Indeterminate { message, .. } if message.contains("Bad request")
        ));
    }

    #[test]
    fn idempotency_errors() {
        let in_use = br#"{"error": {"type": "idempotency_error", "code": "idempotency_key_in_use", "message": "There is currently another in-progress request using this Stripe API key and idempotency key"}}"#;
        let retry_true = ResponseHeaders {
            should_retry: Some(true),
            ..none()
        };
        assert_eq!(
            classify(409, &retry_true, in_use),
            ChargeOutcome::Retry {
                cause: RetryCause::Conflict,
                after: None
            }
        );
        let mismatch = br#"{"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}}"#;
        let o = classify(400, &none(), mismatch);
        assert!(
            matches!(o, ChargeOutcome::KeyMisuse { ref message } if message.starts_with("Keys for idempotent")),
            "{o:?}"
        );
        assert!(!o.is_terminal());
    }

    #[test]
    fn rate_limits_retry_after_the_header() {
        let body = br#"{"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Request rate limit exceeded."}}"#;
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        h.insert("stripe-should-retry", HeaderValue::from_static("true"));
        let headers = ResponseHeaders::from_headers(&h);
        assert_eq!(
            classify(429, &headers, body),
            ChargeOutcome::Retry {
                cause: RetryCause::RateLimited,
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            classify(429, &none(), b""),
            ChargeOutcome::Retry {
                cause: RetryCause::RateLimited,
                after: None
            }
        );
        assert_eq!(
            classify(408, &none(), b""),
            ChargeOutcome::Retry {
                cause: RetryCause::Timeout,
                after: None
            }
        );
    }

    #[test]
    fn should_retry_false_turns_a_retry_into_reconciliation() {
        let h = ResponseHeaders {
            should_retry: Some(false),
            retry_after: Some(Duration::from_secs(1)),
            replayed: false,
        };
        assert!(matches!(
            classify(429, &h, b"{}"),
            ChargeOutcome::Indeterminate {
                status: 429,
                should_retry: Some(false),
                ..
            }
        ));
    }

    #[test]
    fn server_errors_are_indeterminate() {
        let body = br#"{"error": {"type": "api_error", "message": "An unknown error occurred."}}"#;
        let h = ResponseHeaders {
            should_retry: Some(false),
            replayed: true,
            ..none()
        };
        assert_eq!(
            classify(500, &h, body),
            ChargeOutcome::Indeterminate {
                status: 500,
                message: "An unknown error occurred.".into(),
                should_retry: Some(false),
                replayed: true,
            }
        );
        assert!(matches!(
            classify(503, &none(), b"<html>503 Service Unavailable</html>"),
            ChargeOutcome::Indeterminate { status: 503, should_retry: None, ref message, .. }
                if message.contains("503 Service Unavailable")
        ));
        assert!(matches!(
            classify(302, &none(), b""),
            ChargeOutcome::Indeterminate { status: 302, .. }
        ));
    }

    #[test]
    fn unauthorized() {
        let body = br#"{"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_********"}}"#;
        assert_eq!(
            classify(401, &none(), body),
            ChargeOutcome::Unauthorized {
                status: 401,
                message: "Invalid API Key provided: sk_test_********".into()
            }
        );
        assert!(matches!(
            classify(403, &none(), b"{}"),
            ChargeOutcome::Unauthorized { status: 403, .. }
        ));
    }

    #[test]
    fn headers_are_read_leniently() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("0.5"));
        h.insert("stripe-should-retry", HeaderValue::from_static("False"));
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
        assert_eq!(
            ResponseHeaders::from_headers(&h),
            ResponseHeaders {
                retry_after: Some(Duration::from_millis(500)),
                should_retry: Some(false),
                replayed: true
            }
        );
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        h.insert("stripe-should-retry", HeaderValue::from_static("maybe"));
        assert_eq!(
            ResponseHeaders::from_headers(&h),
            ResponseHeaders::default()
        );
        for bad in ["-1", "NaN", "inf", "1e300"] {
            assert_eq!(parse_retry_after(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_4xx_without_a_stripe_error_is_no_refusal() {
        let html = b"<html><body>413 Request Entity Too Large</body></html>";
        let o = classify(413, &ResponseHeaders::default(), html);
        assert!(
            matches!(o, ChargeOutcome::Indeterminate { status: 413, .. }),
            "{o:?}"
        );
        let stripe = br#"{"error":{"type":"invalid_request_error","message":"No such customer"}}"#;
        let o = classify(404, &ResponseHeaders::default(), stripe);
        assert!(
            matches!(o, ChargeOutcome::Invalid { status: 404, .. }),
            "{o:?}"
        );
    }
}
