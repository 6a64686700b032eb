//! Stripe's wire format: form-encoded parameters in, error objects out, test cards.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

/// The parameters of one request, in the order sent.
///
/// Stripe encodes nested parameters with bracketed keys
/// (`metadata[command_id]=...`, `created[gte]=...`, `expand[]=...`). Serde-based
/// form decoders (`serde_urlencoded`) only handle flat structs, and nested-form
/// crates disagree with Stripe on details (empty values, arrays), so the pairs
/// are read with `form_urlencoded` (the WHATWG `application/x-www-form-urlencoded`
/// parser behind the `url` crate: percent-decoding and `+` as space) and the
/// brackets are interpreted here, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Reads a query string or a form body (both may be given: Stripe merges them).
    pub(crate) fn parse(query: Option<&str>, body: &[u8]) -> Self {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        pairs.extend(form_urlencoded::parse(body).into_owned());
        Params { pairs }
    }

    /// The last value sent for `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A canonical text of the request (method, path, sorted parameters): two
    /// requests are "the same" for the idempotency layer when these are equal.
    pub(crate) fn fingerprint(&self, method: &str, path: &str) -> String {
        let mut pairs = self.pairs.clone();
        pairs.sort();
        let mut out = format!("{method} {path}\n");
        for (k, v) in pairs {
            out.push_str(&form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>());
            out.push('=');
            out.push_str(&form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>());
            out.push('&');
        }
        out
    }

    /// Rejects any parameter that is neither in `names` nor starts with one of
    /// `prefixes` (such as `metadata[`), as Stripe does.
    pub(crate) fn check_known(&self, names: &[&str], prefixes: &[&str]) -> Result<(), ApiError> {
        for (k, _) in &self.pairs {
            let known = names.contains(&k.as_str())
                || prefixes
                    .iter()
                    .any(|p| k.starts_with(p) && k.ends_with(']'));
            if !known {
                return Err(ApiError::invalid_request(
                    format!("Received unknown parameter: {k}"),
                    Some("parameter_unknown"),
                    Some(k),
                ));
            }
        }
        Ok(())
    }

    /// `metadata[key]=value` pairs, with Stripe's limits (50 keys, keys up to 40
    /// characters, values up to 500). An empty value unsets a key.
    pub(crate) fn metadata(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.pairs {
            if k == "metadata" {
                if v.is_empty() {
                    out.clear();
                    continue;
                }
                return Err(ApiError::invalid_request(
                    "Invalid hash".into(),
                    Some("parameter_invalid_string"),
                    Some("metadata"),
                ));
            }
            let Some(key) = k
                .strip_prefix("metadata[")
                .and_then(|r| r.strip_suffix(']'))
            else {
                continue;
            };
            if key.is_empty() || key.contains('[') || key.contains(']') {
                return Err(ApiError::invalid_request(
                    format!("Invalid metadata key: {k}"),
                    None,
                    Some(k),
                ));
            }
            if key.chars().count() > 40 {
                return Err(ApiError::invalid_request(
                    format!("Metadata keys can have up to 40 characters, but you passed in a key that is {} characters.", key.chars().count()),
                    None,
                    Some(k),
                ));
            }
            if v.chars().count() > 500 {
                return Err(ApiError::invalid_request(
                    format!("Metadata values can have up to 500 characters, but you passed in a value that is {} characters.", v.chars().count()),
                    None,
                    Some(k),
                ));
            }
            if v.is_empty() {
                out.remove(key);
            } else {
                out.insert(key.to_string(), v.clone());
            }
        }
        if out.len() > 50 {
            return Err(ApiError::invalid_request(
                "Metadata can have up to 50 keys.".into(),
                None,
                Some("metadata"),
            ));
        }
        Ok(out)
    }

    /// A required parameter, non-empty.
    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::parameter_missing(name)),
        }
    }

    /// An optional boolean (`true`/`false`).
    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid_request(
                format!("Invalid boolean: {other}"),
                Some("parameter_invalid_boolean"),
                Some(name),
            )),
        }
    }

    /// An optional integer.
    pub(crate) fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::invalid_request(
                    format!("Invalid integer: {v}"),
                    Some("parameter_invalid_integer"),
                    Some(name),
                )
            }),
        }
    }
}

/// Stripe's error object, `{"error": {...}}`, with the HTTP status it goes with.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `error` member (boxed: it is large, and errors travel in `Result`s).
    pub body: Box<ErrorBody>,
    /// Seconds for a `Retry-After` header (429s).
    pub retry_after: Option<u64>,
}

/// The `error` member of Stripe's error object. Absent fields are omitted, as
/// Stripe does.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorBody {
    /// `api_error`, `card_error`, `idempotency_error` or `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<&'static str>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<Value>,
}

impl ErrorBody {
    fn new(kind: &'static str, code: Option<&'static str>, message: String) -> Self {
        ErrorBody {
            kind,
            code,
            decline_code: None,
            message,
            param: None,
            doc_url: code.map(|c| {
                format!(
                    "https://stripe.com/docs/error-codes/{}",
                    c.replace('_', "-")
                )
            }),
            charge: None,
            payment_intent: None,
            payment_method: None,
        }
    }
}

impl ApiError {
    fn new(status: StatusCode, body: ErrorBody) -> Self {
        ApiError {
            status,
            body: Box::new(body),
            retry_after: None,
        }
    }

    /// The JSON text of `{"error": ...}`.
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({ "error": &self.body }).to_string()
    }

    /// 400 `invalid_request_error`.
    pub(crate) fn invalid_request(
        message: String,
        code: Option<&'static str>,
        param: Option<&str>,
    ) -> Self {
        let mut body = ErrorBody::new("invalid_request_error", code, message);
        body.param = param.map(str::to_string);
        ApiError::new(StatusCode::BAD_REQUEST, body)
    }

    /// 400 `parameter_missing`.
    pub(crate) fn parameter_missing(param: &str) -> Self {
        ApiError::invalid_request(
            format!("Missing required param: {param}."),
            Some("parameter_missing"),
            Some(param),
        )
    }

    /// `resource_missing` for an object named by a parameter (400) or by the URL
    /// path (404).
    pub(crate) fn resource_missing(status: StatusCode, what: &str, id: &str, param: &str) -> Self {
        let mut e = ApiError::invalid_request(
            format!("No such {what}: '{id}'"),
            Some("resource_missing"),
            Some(param),
        );
        e.status = status;
        e
    }

    /// 404 for a URL the simulator does not serve.
    pub(crate) fn unrecognized_url(method: &str, path: &str) -> Self {
        let mut e = ApiError::invalid_request(
            format!("Unrecognized request URL ({method}: {path}). paysim serves only the subset of Stripe's API that hashbuy uses."),
            None,
            None,
        );
        e.status = StatusCode::NOT_FOUND;
        e
    }

    /// 401. `shown_key` is a redacted form of the key given, if any.
    pub(crate) fn authentication(shown_key: Option<&str>) -> Self {
        let message = match shown_key {
            None => "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').".to_string(),
            Some(k) => format!("Invalid API Key provided: {k}"),
        };
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorBody::new("invalid_request_error", None, message),
        )
    }

    /// 429 `rate_limit` with `Retry-After`.
    pub(crate) fn rate_limit(retry_after_s: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorBody::new(
                "invalid_request_error",
                Some("rate_limit"),
                "Request rate limit exceeded. Back off and retry after the number of seconds in Retry-After.".into(),
            ),
        );
        e.retry_after = Some(retry_after_s.max(1));
        e
    }

    /// 500 `api_error`.
    pub(crate) fn server_error() -> Self {
        let mut body = ErrorBody::new(
            "api_error",
            None,
            "An unknown error occurred. (simulated by paysim)".into(),
        );
        body.doc_url = None;
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, body)
    }

    /// 400 `idempotency_error`: a key reused with other parameters or on another endpoint.
    pub(crate) fn idempotency_mismatch(key: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorBody::new(
                "idempotency_error",
                None,
                format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
            ),
        )
    }

    /// 409 `idempotency_error`: another request with the key is still executing.
    pub(crate) fn idempotency_in_use(key: &str) -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorBody::new(
                "idempotency_error",
                Some("idempotency_key_in_use"),
                format!("There is currently another in-progress request using this Stripe API key and idempotency key (that probably means you submitted twice, and the other request is still going through): {key}. Please try again later."),
            ),
        )
    }

    /// 402 `card_error` / `card_declined`.
    pub(crate) fn card_declined(decline: &Decline) -> Self {
        let mut body = ErrorBody::new(
            "card_error",
            Some("card_declined"),
            decline.message.to_string(),
        );
        body.decline_code = Some(decline.decline_code);
        ApiError::new(StatusCode::PAYMENT_REQUIRED, body)
    }
}

/// How a test card declines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decline {
    /// Stripe's `decline_code`.
    pub decline_code: &'static str,
    /// Stripe's message for it.
    pub message: &'static str,
    /// Whether attaching the card to a customer fails too (Stripe checks the
    /// card on attach; only `chargeCustomerFail` attaches and fails later).
    pub on_attach: bool,
}

/// One of Stripe's test payment methods.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TestCard {
    /// Card brand, as in `card.brand`.
    pub brand: &'static str,
    /// Last four digits of the test card number.
    pub last4: &'static str,
    /// `credit` or `debit`.
    pub funding: &'static str,
    /// `None` when charges succeed.
    pub decline: Option<Decline>,
}

const DECLINED: Decline = Decline {
    decline_code: "generic_decline",
    message: "Your card was declined.",
    on_attach: true,
};
const INSUFFICIENT: Decline = Decline {
    decline_code: "insufficient_funds",
    message: "Your card has insufficient funds.",
    on_attach: true,
};
const CUSTOMER_FAIL: Decline = Decline {
    decline_code: "generic_decline",
    message: "Your card was declined.",
    on_attach: false,
};

/// Looks up a test payment method by Stripe's name for it.
pub(crate) fn test_card(id: &str) -> Option<TestCard> {
    let card = |brand, last4, funding, decline| TestCard {
        brand,
        last4,
        funding,
        decline,
    };
    Some(match id {
        "pm_card_visa" => card("visa", "4242", "credit", None),
        "pm_card_visa_debit" => card("visa", "5556", "debit", None),
        "pm_card_mastercard" => card("mastercard", "4444", "credit", None),
        "pm_card_amex" => card("amex", "8431", "credit", None),
        "pm_card_chargeDeclined" | "pm_card_visa_chargeDeclined" => {
            card("visa", "0002", "credit", Some(DECLINED))
        }
        "pm_card_chargeDeclinedInsufficientFunds"
        | "pm_card_visa_chargeDeclinedInsufficientFunds" => {
            card("visa", "9995", "credit", Some(INSUFFICIENT))
        }
        "pm_card_chargeCustomerFail" => card("visa", "0341", "credit", Some(CUSTOMER_FAIL)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bracketed_keys_and_fingerprints_order_free() {
        let a = Params::parse(
            None,
            b"amount=4200&metadata%5Bcommand_id%5D=c+1&metadata[x]=%C3%A9",
        );
        assert_eq!(a.get("amount"), Some("4200"));
        let m = a.metadata().expect("metadata");
        assert_eq!(m.get("command_id").map(String::as_str), Some("c 1"));
        assert_eq!(m.get("x").map(String::as_str), Some("é"));
        let b = Params::parse(
            None,
            b"metadata[x]=%C3%A9&metadata[command_id]=c%201&amount=4200",
        );
        assert_eq!(a.fingerprint("POST", "/p"), b.fingerprint("POST", "/p"));
        assert_ne!(a.fingerprint("POST", "/p"), b.fingerprint("POST", "/q"));
        let c = Params::parse(
            None,
            b"amount=4201&metadata[x]=%C3%A9&metadata[command_id]=c%201",
        );
        assert_ne!(a.fingerprint("POST", "/p"), c.fingerprint("POST", "/p"));
    }

    #[test]
    fn unknown_parameters_are_named() {
        let p = Params::parse(None, b"amount=1&metadata[a]=b&bogus=1");
        let e = p.check_known(&["amount"], &["metadata["]).unwrap_err();
        assert_eq!(e.body.code, Some("parameter_unknown"));
        assert_eq!(e.body.param.as_deref(), Some("bogus"));
    }

    #[test]
    fn error_json_omits_absent_fields() {
        let e = ApiError::parameter_missing("amount");
        let v: Value = serde_json::from_str(&e.to_json()).expect("json");
        let obj = v["error"].as_object().expect("object");
        assert_eq!(obj["type"], "invalid_request_error");
        assert_eq!(obj["code"], "parameter_missing");
        assert!(!obj.contains_key("decline_code"));
        assert!(!obj.contains_key("payment_intent"));
    }
}
