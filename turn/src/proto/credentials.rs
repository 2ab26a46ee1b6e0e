//! The TURN REST API credential scheme: time-limited usernames signed with a shared secret.
//!
//! This is the scheme of draft-uberti-behave-turn-rest and coturn's `use-auth-secret`:
//!
//! - username = `<expiry as Unix seconds><separator><user>` (separator `:` unless configured
//!   otherwise, as coturn's `rest-api-separator`), or `<expiry>` alone
//! - password = base64(HMAC-SHA1(secret, username))
//!
//! The relay keeps no credential table: anyone holding the secret (the REST API of this same
//! daemon, or another box sharing it) can [`mint`], and the relay [`verify`]s statelessly. The
//! password then feeds the RFC 8489 §9.2 long-term mechanism, whose key is
//! MD5(username ":" realm ":" password) ([`long_term_key`]).
//!
//! As coturn does, the expiry is what comes before the *first* separator and everything after
//! it is an opaque user name that only the HMAC vouches for: other deployments mint usernames
//! this relay must take as they are, e.g. (all with `:`)
//!
//! - Matrix (Synapse): `<expiry>:@alice:example.org`, the full Matrix user id;
//! - Nextcloud Talk: `<expiry>:<16 random characters of A-Za-z0-9+/>`;
//! - Jitsi (Prosody's mod_turncredentials, mod_external_services): `<expiry>` alone;
//! - BigBlueButton: `<expiry>:w_<12 lowercase letters and digits>`, its internal user id.
//!
//! The user name is what allocation quotas and usage are counted by; a username without one
//! (`<expiry>` or `<expiry>:`) counts as a user of its own, as coturn counts it.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun_types::message::{IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials};

type HmacSha1 = Hmac<Sha1>;

/// The longest username accepted, in bytes. STUN's USERNAME is fewer than 513 bytes
/// (RFC 5389 §15.3, which the stun-types parser enforces); a longer one does not parse at all
/// (400), one of exactly 513 bytes is refused here (401).
pub const MAX_USERNAME_LEN: usize = 512;

/// The most digits an expiry can have (`u64::MAX` has 20).
const MAX_EXPIRY_DIGITS: usize = 20;

/// The longest user name [`mint`] accepts: any expiry and separator still fit in
/// [`MAX_USERNAME_LEN`].
pub const MAX_USER_ID_LEN: usize = MAX_USERNAME_LEN - MAX_EXPIRY_DIGITS - 1;

/// The separator between expiry and user name unless configured otherwise (coturn's default).
pub const DEFAULT_SEPARATOR: char = ':';

/// A minted credential, as handed to a WebRTC client in its `iceServers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// `<expiry><separator><user>`.
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
    /// Longer than [`MAX_USERNAME_LEN`], or not starting with 1 to 20 digits (the expiry)
    /// followed by the separator or the end.
    #[error("username is not of the form <expiry>[<separator><user>]")]
    Malformed,
    /// The expiry in the username has passed.
    #[error("credential expired")]
    Expired,
}

/// What a valid username says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedUser<'a> {
    /// Who the username belongs to, for quotas and usage: the opaque rest after the first
    /// separator, or the whole username when that rest is empty or there is no separator.
    /// Always a suffix of the username.
    pub user: &'a str,
    /// The expiry before it, in Unix seconds.
    pub expires_unix: u64,
}

/// Mints a credential for `user` that expires at `expires_unix`, with the default separator.
///
/// The user id must satisfy [`valid_user_id`]; the REST API and CLI check that before calling.
pub fn mint(secret: &[u8], user: &str, expires_unix: u64) -> Credential {
    mint_with_separator(secret, user, DEFAULT_SEPARATOR, expires_unix)
}

/// [`mint`] with `separator` between expiry and user (`turn.rest_api_separator`).
pub fn mint_with_separator(
    secret: &[u8],
    user: &str,
    separator: char,
    expires_unix: u64,
) -> Credential {
    let username = format!("{expires_unix}{separator}{user}");
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

/// Checks the form and expiry of `username` at `now_unix`: the expiry is what comes before
/// the first `separator`, the rest is the user name, taken as it is.
///
/// This does not prove the client knows the password: that is MESSAGE-INTEGRITY's job, checked
/// with [`long_term_key`] of [`password_for`] this username.
pub fn verify(
    username: &str,
    separator: char,
    now_unix: u64,
) -> Result<VerifiedUser<'_>, CredentialError> {
    let v = parse(username, separator)?;
    if v.expires_unix < now_unix {
        return Err(CredentialError::Expired);
    }
    Ok(v)
}

/// [`verify`] without the expiry: the form alone, for a caller that decides about the
/// expiry itself (the relay lets an allocation outlive its credential, up to a point).
pub fn parse(username: &str, separator: char) -> Result<VerifiedUser<'_>, CredentialError> {
    if username.len() > MAX_USERNAME_LEN {
        return Err(CredentialError::Malformed);
    }
    let (expiry, rest) = username.split_once(separator).unwrap_or((username, ""));
    if expiry.is_empty()
        || expiry.len() > MAX_EXPIRY_DIGITS
        || !expiry.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(CredentialError::Malformed);
    }
    let expires_unix: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    let user = if rest.is_empty() { username } else { rest };
    Ok(VerifiedUser { user, expires_unix })
}

/// A user id we mint for: 1 to [`MAX_USER_ID_LEN`] bytes without control characters. The
/// relay takes any user name the HMAC covers; minting is stricter so that what we hand out
/// reads well in a log or a JSON body.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_ID_LEN && !user.chars().any(char::is_control)
}

/// The RFC 8489 §9.2.2 long-term key, MD5(username ":" realm ":" password), for
/// MESSAGE-INTEGRITY (HMAC-SHA1), over the bytes as sent: no OpaqueString preparation, as
/// coturn and browsers do it (for ASCII, which our own credentials are, it changes nothing).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> IntegrityKey {
    LongTermKeyCredentials::new(username.to_owned(), password.to_owned(), realm.to_owned())
        .make_key(IntegrityAlgorithm::Sha1)
}

/// Users cut off before their credentials expire. The relay cannot recall a credential (it
/// keeps none, see the module), so a revoked user is refused by the user name their
/// credentials carry: every credential of `user` expiring at or before `until` (Unix seconds)
/// is refused. The daemon revokes until the moment of the revocation plus the credential
/// lifetime, so every credential minted before it is refused, and one minted after it (a user
/// let back in) expires later and is accepted. An entry is forgotten once `until` has passed:
/// every credential it refused has expired by then.
#[derive(Debug, Default)]
pub struct Revocations {
    until: std::collections::HashMap<Box<str>, u64>,
}

impl Revocations {
    /// Refuses `user`'s credentials expiring at or before `until`; a later revocation of the
    /// same user keeps the later `until`.
    pub fn revoke(&mut self, user: &str, until: u64) {
        let at = self.until.entry(user.into()).or_default();
        *at = (*at).max(until);
    }

    /// Whether a credential of `user` expiring at `expires_unix` is refused.
    pub fn refuses(&self, user: &str, expires_unix: u64) -> bool {
        self.until
            .get(user)
            .is_some_and(|&until| expires_unix <= until)
    }

    /// Forgets the revocations over at `now_unix`.
    pub fn prune(&mut self, now_unix: u64) {
        self.until.retain(|_, until| *until >= now_unix);
    }

    /// How many users are revoked.
    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(user: &str, expires_unix: u64) -> Result<VerifiedUser<'_>, CredentialError> {
        Ok(VerifiedUser { user, expires_unix })
    }

    #[test]
    fn mint_matches_the_coturn_rest_scheme() {
        // Computed independently: printf '1736517600:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let c = mint(b"secret", "alice", 1_736_517_600);
        assert_eq!(c.username, "1736517600:alice");
        assert_eq!(c.password, "DolFTSEG85ZJiJWslIq8ApYL7cE=");
        assert_eq!(c.expires_unix, 1_736_517_600);
        // printf '1736517600_@alice:example.org' | openssl dgst -sha1 -hmac secret -binary | base64
        let c = mint_with_separator(b"secret", "@alice:example.org", '_', 1_736_517_600);
        assert_eq!(c.username, "1736517600_@alice:example.org");
        assert_eq!(c.password, "20kjIwOJTT5xWw12GFB1prVwOTo=");
    }

    #[test]
    fn verify_accepts_until_expiry_and_not_after() {
        let c = mint(b"k", "u-1", 1000);
        assert_eq!(verify(&c.username, ':', 1000), ok("u-1", 1000));
        assert_eq!(
            verify(&c.username, ':', 1001),
            Err(CredentialError::Expired)
        );
    }

    #[test]
    fn the_expiry_is_before_the_first_separator_and_the_rest_is_opaque() {
        let t = 1_700_000_000;
        for (username, user) in [
            // Matrix (Synapse): the full user id, colon and all.
            ("1700000000:@alice:example.org", "@alice:example.org"),
            // Nextcloud Talk: random base64 characters.
            ("1700000000:aB3+/x9QzK2mN7pR", "aB3+/x9QzK2mN7pR"),
            // BigBlueButton: its internal user id.
            ("1700000000:w_abcd1234efgh", "w_abcd1234efgh"),
            // Whatever else the HMAC covers: spaces, non-ASCII, more separators.
            ("1700000000:a b", "a b"),
            ("1700000000:Zoë:東京::", "Zoë:東京::"),
            ("1700000000::", ":"),
        ] {
            assert_eq!(verify(username, ':', t), ok(user, t), "{username:?}");
        }
    }

    #[test]
    fn a_username_without_a_user_counts_as_its_own_user() {
        // Jitsi (Prosody's mod_turncredentials): the expiry alone; or an empty user.
        let expiry = 1_700_000_000;
        for (username, now, want) in [
            ("1700000000", 5, ok("1700000000", expiry)),
            ("1700000000:", 5, ok("1700000000:", expiry)),
            ("1700000000", expiry + 1, Err(CredentialError::Expired)),
        ] {
            assert_eq!(verify(username, ':', now), want, "{username:?}");
        }
    }

    #[test]
    fn a_configured_separator_splits_instead_of_the_colon() {
        let expiry = 1_700_000_000;
        for (username, want) in [
            (
                "1700000000_@alice:example.org",
                ok("@alice:example.org", expiry),
            ),
            // With `_` configured, a colon is part of the expiry, which is then not digits.
            ("1700000000:alice", Err(CredentialError::Malformed)),
            ("1700000000_a_b", ok("a_b", expiry)),
        ] {
            assert_eq!(verify(username, '_', 5), want, "{username:?}");
        }
    }

    #[test]
    fn verify_rejects_malformed_usernames() {
        for u in [
            "",
            "alice",
            ":alice",
            "12a:alice",
            "-5:alice",
            "+5:alice",
            " 5:alice",
            "alice:100",
            "99999999999999999999999:a",
            "18446744073709551616:a",
        ] {
            assert_eq!(verify(u, ':', 0), Err(CredentialError::Malformed), "{u:?}");
        }
        assert_eq!(verify("18446744073709551615:a", ':', 0).unwrap().user, "a");
    }

    #[test]
    fn verify_bounds_the_length() {
        let at_limit = format!("100:{}", "x".repeat(MAX_USERNAME_LEN - 4));
        assert_eq!(at_limit.len(), MAX_USERNAME_LEN);
        assert!(verify(&at_limit, ':', 0).is_ok());
        let over = format!("{at_limit}x");
        assert_eq!(verify(&over, ':', 0), Err(CredentialError::Malformed));
        // Multi-byte characters count by their bytes, and never split.
        let wide = format!("100:{}", "é".repeat(300));
        assert_eq!(verify(&wide, ':', 0), Err(CredentialError::Malformed));
    }

    #[test]
    fn minting_takes_any_printable_user_and_fits_the_bound() {
        assert!(valid_user_id("@alice:example.org"));
        assert!(valid_user_id("Zoë"));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id("a\nb"));
        let longest = "x".repeat(MAX_USER_ID_LEN);
        assert!(valid_user_id(&longest));
        assert!(!valid_user_id(&format!("{longest}x")));
        let c = mint(b"k", &longest, u64::MAX);
        assert_eq!(c.username.len(), MAX_USERNAME_LEN);
        assert_eq!(verify(&c.username, ':', 0).unwrap().user, longest);
    }

    #[test]
    fn password_depends_on_secret_and_username() {
        assert_ne!(password_for(b"a", "1:u"), password_for(b"b", "1:u"));
        assert_ne!(password_for(b"a", "1:u"), password_for(b"a", "2:u"));
        assert_ne!(password_for(b"a", "1:u"), password_for(b"a", "1_u"));
    }

    #[test]
    fn a_revocation_refuses_the_credentials_minted_before_it_until_they_expire() {
        let mut r = Revocations::default();
        r.revoke("u-1", 2000);
        assert!(r.refuses("u-1", 1500) && r.refuses("u-1", 2000));
        assert!(!r.refuses("u-1", 2001), "minted after the revocation");
        assert!(!r.refuses("u-2", 1500), "another user");
        r.revoke("u-1", 1000);
        assert!(
            r.refuses("u-1", 2000),
            "an earlier revocation does not shorten one"
        );
        r.prune(2000);
        assert_eq!(r.len(), 1);
        r.prune(2001);
        assert!(r.is_empty() && !r.refuses("u-1", 1500));
    }
}
