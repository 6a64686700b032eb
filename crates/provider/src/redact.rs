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

/// Replaces every occurrence of `secret` in an answer's `body`, before
/// anything reads it, so that no description of the body, however it is
/// cut later, can hold a part of the key. A body that was `cut` short may
/// end in the key's first bytes: those go too.
pub(crate) fn scrub_body(body: &mut Vec<u8>, secret: &str, cut: bool) {
    let secret = secret.as_bytes();
    if secret.is_empty() {
        return;
    }
    if memchr::memmem::find(body, secret).is_some() {
        let mut clean = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(at) = memchr::memmem::find(rest, secret) {
            clean.extend_from_slice(&rest[..at]);
            clean.extend_from_slice(REDACTED.as_bytes());
            rest = &rest[at + secret.len()..];
        }
        clean.extend_from_slice(rest);
        *body = clean;
    }
    if cut {
        let tail = (1..secret.len())
            .rev()
            .find(|&n| body.ends_with(&secret[..n]));
        if let Some(n) = tail {
            body.truncate(body.len() - n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_a_body_and_the_start_of_a_key_it_was_cut_in() {
        let mut body = b"a sk_test_abc b sk_test_abc".to_vec();
        scrub_body(&mut body, "sk_test_abc", false);
        assert_eq!(body, b"a [REDACTED] b [REDACTED]");
        let mut cut = b"x sk_test_abc y sk_test_a".to_vec();
        scrub_body(&mut cut, "sk_test_abc", true);
        assert_eq!(cut, b"x [REDACTED] y ");
        let mut whole = b"ends in sk_test_a".to_vec();
        scrub_body(&mut whole, "sk_test_abc", false);
        assert_eq!(
            whole, b"ends in sk_test_a",
            "a body read whole is left as it is"
        );
    }

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
