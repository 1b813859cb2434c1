//! Admin API tokens: the one from `admin.token_file` (or `BANYAN_ADMIN_TOKEN`), named
//! `default`, and the named ones of `[admin.tokens]`. A request's bearer token is compared
//! with each in constant time; its name goes to the audit log, so a change says whose
//! token made it. No tokens at all: the API is open, on loopback only (`origin`).

use subtle::ConstantTimeEq;

/// The name the audit log gives the unnamed token.
pub const DEFAULT_NAME: &str = "default";

#[derive(Clone, Default)]
pub struct Tokens {
    /// (name, secret).
    list: Vec<(String, String)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets never reach a log line.
        let names: Vec<&str> = self.list.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

/// What a request's `Authorization` is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No tokens are configured: every request passes, unnamed.
    Open,
    /// The token of this name.
    Named(String),
    Refused,
}

impl Tokens {
    pub fn new(list: Vec<(String, String)>) -> Tokens {
        Tokens { list }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn check(&self, authorization: Option<&[u8]>) -> Verdict {
        if self.list.is_empty() {
            return Verdict::Open;
        }
        let Some(given) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else {
            return Verdict::Refused;
        };
        let given = given.trim_ascii();
        // Every token is compared, so the time taken does not say which one was close.
        let mut found = None;
        for (name, secret) in &self.list {
            if bool::from(given.ct_eq(secret.as_bytes())) && found.is_none() {
                found = Some(name.clone());
            }
        }
        found.map_or(Verdict::Refused, Verdict::Named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_need_the_bearer_scheme_and_an_exact_match() {
        assert_eq!(Tokens::default().check(None), Verdict::Open);
        let one = Tokens::new(vec![(DEFAULT_NAME.into(), "t0k".into())]);
        assert_eq!(one.check(None), Verdict::Refused);
        assert_eq!(one.check(Some(b"t0k")), Verdict::Refused);
        assert_eq!(one.check(Some(b"Bearer t0")), Verdict::Refused);
        assert_eq!(one.check(Some(b"Bearer t0kk")), Verdict::Refused);
        assert_eq!(
            one.check(Some(b"Bearer t0k")),
            Verdict::Named("default".into())
        );
        assert_eq!(
            one.check(Some(b"Bearer t0k ")),
            Verdict::Named("default".into())
        );
    }

    #[test]
    fn a_named_token_names_its_holder() {
        let t = Tokens::new(vec![
            ("ci".into(), "ci-secret".into()),
            ("erin".into(), "erin-secret".into()),
        ]);
        assert_eq!(
            t.check(Some(b"Bearer erin-secret")),
            Verdict::Named("erin".into())
        );
        assert_eq!(
            t.check(Some(b"Bearer ci-secret")),
            Verdict::Named("ci".into())
        );
        assert_eq!(t.check(Some(b"Bearer other")), Verdict::Refused);
        assert!(!format!("{t:?}").contains("secret"));
    }
}
