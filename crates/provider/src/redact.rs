//! Keeping the key out of text that came from elsewhere.

/// What stands in for the key.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// Replaces every occurrence of `secret` in `text`. A provider no one here
/// wrote might echo the `Authorization` header in an error message; Stripe
/// and paysim never do, but the key must not reach a log either way.
pub(crate) fn scrub(text: &mut String, secret: &str) {
    if !secret.is_empty() && text.contains(secret) {
        *text = text.replace(secret, REDACTED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_every_occurrence() {
        let mut s = "bad key sk_test_abc, really sk_test_abc".to_string();
        scrub(&mut s, "sk_test_abc");
        assert_eq!(s, "bad key [REDACTED], really [REDACTED]");
        let mut t = "nothing here".to_string();
        scrub(&mut t, "");
        assert_eq!(t, "nothing here");
    }
}
