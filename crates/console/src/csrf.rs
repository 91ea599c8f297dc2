//! Protection against cross-site request forgery: every state-changing form carries a token
//! (the session's, or before sign-in the login cookie's), compared in constant time; and a
//! request the browser marks as coming from another site (`Sec-Fetch-Site`) is refused
//! whatever it carries. The session cookie is `SameSite=Strict` besides.

use crate::ConsoleError;
use subtle::ConstantTimeEq;

/// The form field that carries the token.
pub const FIELD: &str = "csrf";

/// Whether a state-changing request may go on: `expected` is the session's token,
/// `presented` the form's, `fetch_site` the request's `Sec-Fetch-Site` header.
pub fn check(
    expected: &str,
    presented: Option<&str>,
    fetch_site: Option<&str>,
) -> Result<(), ConsoleError> {
    if let Some(site) = fetch_site {
        if site != "same-origin" && site != "none" {
            return Err(ConsoleError::Csrf("request from another site"));
        }
    }
    let presented = presented.ok_or(ConsoleError::Csrf("no token in the form"))?;
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        return Err(ConsoleError::Csrf("the form's token is not the session's"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_token_from_this_origin_passes() {
        let t = "a".repeat(64);
        assert!(check(&t, Some(&t), None).is_ok());
        assert!(check(&t, Some(&t), Some("same-origin")).is_ok());
        assert!(check(&t, Some(&t), Some("none")).is_ok());
        for site in ["cross-site", "same-site", ""] {
            assert!(matches!(
                check(&t, Some(&t), Some(site)),
                Err(ConsoleError::Csrf("request from another site"))
            ));
        }
        assert!(matches!(
            check(&t, None, None),
            Err(ConsoleError::Csrf("no token in the form"))
        ));
        for wrong in ["", "b", &"b".repeat(64), &t[..63]] {
            assert!(check(&t, Some(wrong), None).is_err(), "{wrong:?}");
        }
        assert!(
            check("", Some(""), None).is_err(),
            "no token expected: nothing passes"
        );
    }
}
