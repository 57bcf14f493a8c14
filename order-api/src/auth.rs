//! Who is calling: API tokens and tenants.
//!
//! Every `/v1` request carries `Authorization: Bearer <token>`. A tenant's token reaches
//! that tenant's orders only: another tenant's order answers 404, exactly as an order that
//! does not exist, so ids do not leak. An admin token (made with `tokens create --admin`)
//! sees, cancels and deletes every tenant's orders and reaches the operator endpoints
//! (`/v1/orphans`); it orders nothing itself. A missing, unknown or revoked token answers
//! 401. There is no mode without tokens.
//!
//! Tokens are 256 random bits (`pvn_` and 64 hex digits); the database keeps their SHA-256
//! only. A slow password hash buys nothing for a secret that cannot be guessed.
//!
//! This module is plain values and functions that import nothing of this crate: the store
//! keeps the tokens (`store::tokens`) and answers which [`Caller`] one speaks for, and
//! `http::caller` reads a request's token into a [`Caller`] (or refuses it).

use rand::RngCore;

/// What every token starts with, so a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "pvn_";
/// Longest tenant name.
const MAX_TENANT_LEN: usize = 63;

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A tenant: its own orders only.
    Tenant(String),
    /// An operator: every tenant's orders and the operator endpoints.
    Admin,
}

impl Caller {
    /// Whether this caller may see an order of `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Tenant(own) => own == tenant,
        }
    }

    /// The tenant a list is limited to (`None`: every tenant's orders, for an admin).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Tenant(tenant) => Some(tenant),
        }
    }
}

/// A new random token.
pub fn new_token() -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

/// The SHA-256 (hex) the database keeps of a token.
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(token.as_bytes()))
}

/// Tenant names: 1 to 63 of `a-z`, `0-9`, `-`, starting with a letter or digit.
pub fn check_tenant_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TENANT_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    anyhow::ensure!(
        valid,
        "tenant name '{name}' must be 1 to {MAX_TENANT_LEN} of a-z, 0-9 and '-', not starting with '-'"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are distinct, prefixed, and their hash is stable.
    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(token_sha256(&a), token_sha256(&a));
        assert_ne!(token_sha256(&a), token_sha256(&b));
    }

    /// Tenant names are checked.
    #[test]
    fn checks_tenant_names() {
        for good in ["acme", "team-7", "0"] {
            assert!(check_tenant_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "-x", "a b", &"x".repeat(64)] {
            assert!(check_tenant_name(bad).is_err(), "{bad}");
        }
    }

    /// A tenant sees its own orders only; an admin sees all.
    #[test]
    fn tenants_see_their_own() {
        let acme = Caller::Tenant("acme".into());
        assert!(acme.may_see("acme"));
        assert!(!acme.may_see("globex"));
        assert!(Caller::Admin.may_see("globex"));
        assert_eq!(acme.tenant(), Some("acme"));
        assert_eq!(Caller::Admin.tenant(), None);
    }
}
