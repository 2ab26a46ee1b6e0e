//! The TURN REST API credential scheme: time-limited usernames signed with a shared secret.
//!
//! This is the scheme of draft-uberti-behave-turn-rest and coturn's `use-auth-secret`:
//!
//! - username = `<expiry as Unix seconds>:<user id>`
//! - password = base64(HMAC-SHA1(secret, username))
//!
//! The relay keeps no credential table: anyone holding the secret (the REST API of this same
//! daemon, or another box sharing it) can [`mint`], and the relay [`verify`]s statelessly. The
//! password then feeds the RFC 8489 §9.2 long-term mechanism, whose key is
//! MD5(username ":" realm ":" password) ([`long_term_key`]).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun_types::message::{IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials};

type HmacSha1 = Hmac<Sha1>;

/// The longest user id accepted inside a username. RFC 8489 limits USERNAME to 509 bytes.
pub const MAX_USER_ID_LEN: usize = 255;

/// A minted credential, as handed to a WebRTC client in its `iceServers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// `<expiry>:<user id>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// When it stops being accepted, in Unix seconds.
    pub expires_unix: u64,
}

/// Why a username was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// Not `<digits>:<user id>`, or a user id that is empty, too long or not printable.
    #[error("username is not of the form <expiry>:<user id>")]
    Malformed,
    /// The expiry in the username has passed.
    #[error("credential expired")]
    Expired,
}

/// What a valid username says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedUser<'a> {
    /// The user id after the colon.
    pub user: &'a str,
    /// The expiry before it, in Unix seconds.
    pub expires_unix: u64,
}

/// Mints a credential for `user` that expires at `expires_unix`.
///
/// The user id must satisfy [`valid_user_id`]; the REST API and CLI check that before calling.
pub fn mint(secret: &[u8], user: &str, expires_unix: u64) -> Credential {
    let username = format!("{expires_unix}:{user}");
    let password = password_for(secret, &username);
    Credential {
        username,
        password,
        expires_unix,
    }
}

/// The password the relay expects for `username`: base64(HMAC-SHA1(secret, username)).
pub fn password_for(secret: &[u8], username: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks the form and expiry of `username` at `now_unix`.
///
/// This does not prove the client knows the password: that is MESSAGE-INTEGRITY's job, checked
/// with [`long_term_key`] of [`password_for`] this username.
pub fn verify(username: &str, now_unix: u64) -> Result<VerifiedUser<'_>, CredentialError> {
    let (expiry, user) = username.split_once(':').ok_or(CredentialError::Malformed)?;
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CredentialError::Malformed);
    }
    let expires_unix: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    if !valid_user_id(user) {
        return Err(CredentialError::Malformed);
    }
    if expires_unix < now_unix {
        return Err(CredentialError::Expired);
    }
    Ok(VerifiedUser { user, expires_unix })
}

/// A user id we mint for and accept: 1 to [`MAX_USER_ID_LEN`] bytes of printable ASCII other
/// than `:` (the spec's users are UUIDs; coturn's tools use plain names).
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_ID_LEN
        && user.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// The RFC 8489 §9.2.2 long-term key, MD5(username ":" realm ":" password), for
/// MESSAGE-INTEGRITY (HMAC-SHA1). Our usernames and passwords are ASCII, so OpaqueString
/// preparation leaves them unchanged.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> IntegrityKey {
    LongTermKeyCredentials::new(username.to_owned(), password.to_owned(), realm.to_owned())
        .make_key(IntegrityAlgorithm::Sha1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_matches_the_coturn_rest_scheme() {
        // Computed independently: printf '1736517600:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let c = mint(b"secret", "alice", 1_736_517_600);
        assert_eq!(c.username, "1736517600:alice");
        assert_eq!(c.password, "DolFTSEG85ZJiJWslIq8ApYL7cE=");
        assert_eq!(c.expires_unix, 1_736_517_600);
    }

    #[test]
    fn verify_accepts_until_expiry_and_not_after() {
        let c = mint(b"k", "u-1", 1000);
        assert_eq!(
            verify(&c.username, 1000),
            Ok(VerifiedUser {
                user: "u-1",
                expires_unix: 1000
            })
        );
        assert_eq!(verify(&c.username, 1001), Err(CredentialError::Expired));
    }

    #[test]
    fn verify_rejects_malformed_usernames() {
        for u in [
            "",
            "alice",
            ":alice",
            "12a:alice",
            "-5:alice",
            "100:",
            "100:a:b",
            "100:a b",
            "99999999999999999999999:a",
        ] {
            assert_eq!(verify(u, 0), Err(CredentialError::Malformed), "{u:?}");
        }
        let long = format!("100:{}", "x".repeat(MAX_USER_ID_LEN + 1));
        assert_eq!(verify(&long, 0), Err(CredentialError::Malformed));
    }

    #[test]
    fn password_depends_on_secret_and_username() {
        assert_ne!(password_for(b"a", "1:u"), password_for(b"b", "1:u"));
        assert_ne!(password_for(b"a", "1:u"), password_for(b"a", "2:u"));
    }
}
