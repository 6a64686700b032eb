//! Payment commands as the settler reads them from Kafka: the record's
//! value decoded and checked, or the reason it cannot be settled.

use hashbuy_proto::v1::PaymentCommand;
use prost::Message as _;

/// Decodes a payment command record's value and checks it has what
/// charging needs; the reason, for its dead letter, when it does not. Never
/// panics, whatever the bytes (fuzzed).
pub fn decode(value: &[u8]) -> Result<PaymentCommand, String> {
    let command =
        PaymentCommand::decode(value).map_err(|e| format!("not a PaymentCommand: {e}"))?;
    let missing = [
        ("command_id", command.command_id.is_empty()),
        ("user_id", command.user_id.is_empty()),
        ("currency", command.currency.is_empty()),
        ("customer_id", command.customer_id.is_empty()),
        ("payment_method_id", command.payment_method_id.is_empty()),
        ("amount", command.amount == 0),
    ];
    match missing.iter().find(|(_, absent)| *absent) {
        Some((field, _)) => Err(format!("invalid PaymentCommand: no {field}")),
        None => Ok(command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_without_what_charging_needs_is_refused_by_name() {
        let whole = PaymentCommand {
            command_id: "c-1".into(),
            user_id: "u-1".into(),
            currency: "usd".into(),
            customer_id: "cus_1".into(),
            payment_method_id: "pm_card_visa".into(),
            amount: 100,
            ..PaymentCommand::default()
        };
        assert_eq!(decode(&whole.encode_to_vec()), Ok(whole.clone()));
        let no_customer = PaymentCommand {
            customer_id: String::new(),
            ..whole
        };
        assert_eq!(
            decode(&no_customer.encode_to_vec()),
            Err("invalid PaymentCommand: no customer_id".into())
        );
        assert!(decode(b"\xff\xff\xff").is_err_and(|e| e.starts_with("not a PaymentCommand")));
    }
}
