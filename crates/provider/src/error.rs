//! [`ProviderError`]: what can go wrong outside a charge's own outcome.

use std::time::Duration;

/// Why a transport-level exchange failed (no HTTP answer was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportCause {
    /// The request or the connection attempt took longer than its timeout.
    Timeout,
    /// The connection could not be made, or it broke before a whole answer
    /// was read (refused, reset, closed without an answer, TLS failure, DNS).
    Connection,
}

impl TransportCause {
    /// A short snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportCause::Timeout => "timeout",
            TransportCause::Connection => "connection",
        }
    }
}

/// An error of the provider client: a configuration that cannot be used, or a
/// request (other than a charge, whose result is a
/// [`ChargeOutcome`](crate::ChargeOutcome)) that did not get a usable answer.
///
/// No variant ever holds the API key: messages that come from the provider
/// are scrubbed of it before they are stored here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// A live-mode key (`sk_live_…` or `rk_live_…`) was given without
    /// [`ProviderConfig::allow_live`](crate::ProviderConfig::allow_live).
    #[error(
        "refusing a live-mode provider key (sk_live_/rk_live_) without allow_live (--allow-live): \
         live keys move real money"
    )]
    LiveKeyRefused,
    /// The key does not look like a Stripe secret or restricted key.
    #[error("the provider key is not a Stripe secret key: {reason}")]
    MalformedKey {
        /// What is wrong with it, without any part of the key.
        reason: &'static str,
    },
    /// [`ProviderConfig::base_url`](crate::ProviderConfig::base_url) is not a
    /// usable URL.
    #[error("invalid provider base URL: {reason}")]
    InvalidBaseUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// Another configuration value is out of range.
    #[error("invalid provider configuration: {0}")]
    InvalidConfig(String),
    /// An argument of a call is unusable (e.g. an empty customer id).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The HTTP client could not be built (e.g. the TLS backend failed to
    /// initialise).
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    /// No answer was read: timeout, refused or broken connection.
    #[error("provider unreachable ({}): {message}", cause.as_str())]
    Transport {
        /// Timeout or connection failure.
        cause: TransportCause,
        /// The transport error, with its causes.
        message: String,
    },
    /// The provider refused the key (401) or its permissions (403): a
    /// configuration problem.
    #[error("the provider refused the API key (HTTP {status}): {message}")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The provider's message (never containing the key).
        message: String,
    },
    /// The provider's rate limiter answered 429.
    #[error("rate limited by the provider (HTTP 429){}", match retry_after {
        Some(d) => format!(", retry after {:.1} s", d.as_secs_f64()),
        None => String::new(),
    })]
    RateLimited {
        /// The `Retry-After` header, if any.
        retry_after: Option<Duration>,
    },
    /// Any other answer that is not a success, with Stripe's error object
    /// when there is one.
    #[error("provider answered HTTP {status}{}: {message}", match code {
        Some(c) => format!(" ({c})"),
        None => String::new(),
    })]
    Api {
        /// The HTTP status.
        status: u16,
        /// Stripe's `error.type` (`invalid_request_error`, `api_error`, ...).
        kind: Option<String>,
        /// Stripe's `error.code` (`resource_missing`, ...).
        code: Option<String>,
        /// Stripe's `error.message`, or a description of the answer.
        message: String,
    },
    /// A success answer whose body is not what Stripe sends.
    #[error("unreadable provider answer to {what}: {message}")]
    Decode {
        /// Which request it answered.
        what: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// Listing kept saying `has_more` beyond the page limit, or repeated a
    /// page: the answer cannot be trusted to be complete.
    #[error("listing payment intents did not end after {pages} pages of 100")]
    ListTooLong {
        /// How many pages were read.
        pages: usize,
    },
}

impl ProviderError {
    /// Replaces every occurrence of `secret` in the messages it holds.
    pub(crate) fn redact(mut self, secret: &str) -> Self {
        match &mut self {
            ProviderError::Transport { message, .. }
            | ProviderError::Unauthorized { message, .. }
            | ProviderError::Api { message, .. }
            | ProviderError::Decode { message, .. }
            | ProviderError::Client(message)
            | ProviderError::InvalidConfig(message) => crate::redact::scrub(message, secret),
            ProviderError::InvalidBaseUrl { reason } => crate::redact::scrub(reason, secret),
            ProviderError::LiveKeyRefused
            | ProviderError::MalformedKey { .. }
            | ProviderError::InvalidArgument(_)
            | ProviderError::RateLimited { .. }
            | ProviderError::ListTooLong { .. } => {}
        }
        self
    }
}
