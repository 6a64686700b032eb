//! The payment provider as the settler sees it: a command charged under a
//! key, looked up by its id, and retries spaced out. `hashbuy_provider`
//! speaks HTTP and classifies answers; this turns them into the settler's
//! [`Reply`] and [`Found`], whose consequences [`crate::steps`] decides.

use std::collections::BTreeMap;
use std::time::Duration;

use hashbuy_core::connect::Destination;
use hashbuy_proto::v1::PaymentCommand;
use hashbuy_provider::{
    Backoff, ChargeOutcome, ChargeRequest, IntentStatus, Provider, ProviderError,
};

use crate::steps::{Found, Reply};

/// The provider refused hashbuy's credentials: no command can be settled
/// until the key is fixed. Undecided commands stay pending in the ledger.
#[derive(Debug, thiserror::Error)]
#[error(
    "the payment provider refused the API key (HTTP {status}: {message}); fix the key and \
     restart: undecided commands stay pending in the ledger"
)]
pub struct ProviderRefused {
    /// 401 or 403.
    pub status: u16,
    /// The provider's words (never the key).
    pub message: String,
}

/// How far before a command was first received a reconciliation looks for
/// its charges. The settler's clock and the provider's disagree, and a
/// charge dated before the look-back would be missed and made again; a
/// day covers any clock that is not broken, at the cost of listing a day
/// more of the customer's payment intents on this rare path.
pub const RECONCILE_LOOKBACK: Duration = Duration::from_secs(24 * 60 * 60);

/// Most provider calls at once. Each holds a connection for the
/// provider's latency; beyond a few hundred, opening and closing
/// connections costs more CPU than the calls themselves (at 50 ms a call,
/// this still allows 20,000 calls a second).
pub const MAX_CONCURRENT_CALLS: usize = 1024;

/// The provider and the retry spacing.
pub struct Payments {
    provider: Provider,
    backoff: Backoff,
    calls: tokio::sync::Semaphore,
}

impl Payments {
    /// Charges through `provider`, retrying after `backoff`'s delays.
    pub fn new(provider: Provider, backoff: Backoff) -> Payments {
        Payments {
            provider,
            backoff,
            calls: tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS),
        }
    }

    /// Charges a command under `key`, if `go` still says so when the
    /// request leaves (after the waits for a connection slot and the rate
    /// limiter): `None` when it said no, and nothing was sent. `attempt`
    /// (the key's place in the command's chain: every call under a key must
    /// send the same request) goes into the metadata; `destination`, the
    /// entry's route, makes it a Stripe Connect destination charge.
    pub async fn charge(
        &self,
        command: &PaymentCommand,
        destination: Option<&Destination>,
        key: &str,
        attempt: u32,
        go: impl FnOnce() -> bool,
    ) -> Result<Option<Reply>, ProviderRefused> {
        let Ok(amount) = i64::try_from(command.amount) else {
            return Ok(Some(Reply::Invalid {
                reason: format!("amount {} is too large", command.amount),
            }));
        };
        let request = ChargeRequest {
            amount,
            currency: command.currency.clone(),
            customer: command.customer_id.clone(),
            payment_method: command.payment_method_id.clone(),
            command_id: command.command_id.clone(),
            tweet_id: command.tweet_id.clone(),
            offer_id: command.offer_id.clone(),
            merchant_id: command.merchant_id.clone(),
            attempt,
            // Some Stripe-compatible servers (localstripe) refuse one.
            description: None,
            metadata: BTreeMap::from([("user_id".to_owned(), command.user_id.clone())]),
            destination: destination.cloned(),
        };
        let outcome = {
            // Never closed, so a permit always comes.
            let _permit = self.calls.acquire().await;
            self.provider.charge_if(&request, key, go).await
        };
        let Some(outcome) = outcome else {
            return Ok(None);
        };
        Ok(Some(match outcome {
            ChargeOutcome::Succeeded { payment_intent, .. } => Reply::Charged { payment_intent },
            ChargeOutcome::Unsettled {
                payment_intent,
                status,
            } => Reply::Unknown {
                reason: format!("payment intent {payment_intent} is {}", status.as_str()),
            },
            ChargeOutcome::Declined {
                payment_intent,
                decline_code,
                message,
            } => Reply::Declined {
                payment_intent,
                decline_code,
                reason: message,
            },
            ChargeOutcome::Invalid { code, message, .. } => Reply::Invalid {
                reason: match code {
                    Some(code) => format!("{code}: {message}"),
                    None => message,
                },
            },
            ChargeOutcome::KeyMisuse { message } => {
                tracing::error!(
                    command_id = %command.command_id,
                    key,
                    "bug: one idempotency key was sent with two different requests: {message}"
                );
                Reply::Unknown {
                    reason: format!("idempotency key misused: {message}"),
                }
            }
            ChargeOutcome::Retry { cause, after } => Reply::Retry {
                cause: cause.as_str(),
                after,
            },
            ChargeOutcome::Indeterminate {
                status, message, ..
            } => Reply::Unknown {
                reason: format!("HTTP {status}: {message}"),
            },
            ChargeOutcome::Unauthorized { status, message } => {
                return Err(ProviderRefused { status, message })
            }
        }))
    }

    /// Looks for the provider's charge of a command first received at
    /// `received_ms`, among the customer's payment intents created since
    /// [`RECONCILE_LOOKBACK`] before that.
    pub async fn find(
        &self,
        command: &PaymentCommand,
        received_ms: i64,
    ) -> Result<Found, ProviderError> {
        let lookback = RECONCILE_LOOKBACK.as_secs() as i64;
        let since_s = (received_ms / 1000).saturating_sub(lookback);
        let found = {
            let _permit = self.calls.acquire().await;
            self.provider
                .find_charge(&command.customer_id, &command.command_id, since_s)
                .await?
        };
        Ok(match found {
            None => Found::Nothing,
            Some(charge) => match charge.status {
                IntentStatus::Succeeded => Found::Charged {
                    payment_intent: charge.payment_intent,
                    charges: charge.succeeded,
                },
                IntentStatus::RequiresPaymentMethod => Found::Declined {
                    payment_intent: charge.payment_intent,
                    decline_code: charge.decline_code.unwrap_or_else(|| "unknown".into()),
                },
                // Never confirmed, or called off: no money moved.
                IntentStatus::Canceled | IntentStatus::RequiresConfirmation => Found::Nothing,
                // Still moving, or a status this client does not know:
                // wait, never guess.
                _ => Found::Pending {
                    payment_intent: charge.payment_intent,
                },
            },
        })
    }

    /// How long to wait before retry `attempt` of a command, at least the
    /// provider's `Retry-After`.
    pub fn delay(&self, command_id: &str, attempt: u32, after: Option<Duration>) -> Duration {
        self.backoff.for_stream(command_id).delay(attempt, after)
    }
}
