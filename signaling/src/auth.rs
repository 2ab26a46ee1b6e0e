//! Who is calling the API (DESIGN.md, "Calls"):
//! - users present `Authorization: Bearer <JWT>`, HS256 with `auth.jwt_secret`, minted by the
//!   host application (or `switchboard token`): `sub` is the user's UUID, `exp` is required,
//!   `name` and `email` are optional and become the spec's userName and userIdentifier;
//!   when `auth.audience` or `auth.issuer` are set, the token's `aud` and `iss` must carry them
//!   ([`Scope`]), so a token the host application minted for another service is refused;
//! - the host application's provisioning presents `Authorization: Bearer <auth.admin_token>`
//!   on `/api/admin/`, and can do nothing else;
//! - a user the admin API revoked is refused with every token issued (`iat`) by the second of
//!   the revocation, or without `iat` ([`crate::revoke`]): `token_revoked`.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::call::User;
use crate::revoke::Revocations;
use crate::time::Timestamp;

/// The longest `name` claim kept (the users table's limit).
pub const MAX_NAME_LEN: usize = 200;
/// The longest `email` claim kept (the users table's limit).
pub const MAX_EMAIL_LEN: usize = 320;
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY: Duration = Duration::from_secs(30);

/// The claims switchboard reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A valid user token: its user, and its `exp` and `iat` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub exp: u64,
    pub iat: Option<u64>,
}

/// The `aud` and `iss` user tokens must carry (`auth.audience`, `auth.issuer`); `None`: the
/// claim is not checked (and not required).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

/// Why a request is not authenticated (all 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an `Authorization: Bearer <token>` header is required")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token was revoked: the user's tokens issued before the revocation are refused")]
    Revoked,
}

impl AuthError {
    /// The JSON error code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Expired => "token_expired",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Revoked => "token_revoked",
        }
    }
}

/// Verifies user tokens and the admin token.
pub struct Auth {
    jwt: Option<(DecodingKey, Validation)>,
    admin_token: Option<String>,
    scope: Scope,
    revoked: Arc<Revocations>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt", &self.jwt.is_some())
            .field("admin_token", &self.admin_token.is_some())
            .field("scope", &self.scope)
            .field("revoked", &self.revoked)
            .finish()
    }
}

impl Auth {
    /// Without a JWT secret no user is accepted; without an admin token no admin is.
    pub fn new(jwt_secret: Option<&str>, admin_token: Option<&str>) -> Auth {
        let jwt = jwt_secret.map(|s| {
            let mut v = Validation::new(Algorithm::HS256);
            v.leeway = LEEWAY.as_secs();
            v.validate_nbf = true;
            v.validate_aud = false;
            v.set_required_spec_claims(&["exp", "sub"]);
            (DecodingKey::from_secret(s.as_bytes()), v)
        });
        Auth {
            jwt,
            admin_token: admin_token.map(str::to_owned),
            scope: Scope::default(),
            revoked: Arc::default(),
        }
    }

    /// User tokens are checked against `revoked` (the domain's, which the admin API adds to).
    pub fn with_revocations(mut self, revoked: Arc<Revocations>) -> Auth {
        self.revoked = revoked;
        self
    }

    /// The revocations tokens are checked against.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revoked
    }

    /// User tokens must also carry `scope`'s audience and issuer, where set.
    pub fn with_scope(mut self, scope: Scope) -> Auth {
        if let Some((_, v)) = &mut self.jwt {
            let mut required = vec!["exp", "sub"];
            if let Some(aud) = &scope.audience {
                v.set_audience(&[aud]);
                v.validate_aud = true;
                required.push("aud");
            }
            if let Some(iss) = &scope.issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            v.set_required_spec_claims(&required);
        }
        self.scope = scope;
        self
    }

    /// The audience and issuer user tokens must carry (for tokens minted here).
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The user a bearer token stands for.
    pub fn user(&self, authorization: Option<&str>) -> Result<User, AuthError> {
        self.session(authorization).map(|s| s.user)
    }

    /// What a bearer token says: its user, its `exp` (how long a socket opened or refreshed
    /// with it may live, `socket::lease`) and its `iat`.
    pub fn session(&self, authorization: Option<&str>) -> Result<Session, AuthError> {
        let token = bearer(authorization).ok_or(AuthError::Missing)?;
        let Some((key, validation)) = &self.jwt else {
            return Err(AuthError::Invalid(
                "user tokens are not accepted: auth.jwt_secret is not configured".into(),
            ));
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("only HS256 is accepted".into()),
                ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("no `{c}` claim")),
                ErrorKind::InvalidAudience => {
                    AuthError::Invalid("`aud` is not this service's (auth.audience)".into())
                }
                ErrorKind::InvalidIssuer => {
                    AuthError::Invalid("`iss` is not the expected issuer (auth.issuer)".into())
                }
                ErrorKind::Json(e) => AuthError::Invalid(format!("claims: {e}")),
                _ => AuthError::Invalid("malformed".into()),
            })?;
        let c = data.claims;
        let id = Uuid::parse_str(&c.sub)
            .ok()
            .filter(|u| !u.is_nil())
            .ok_or_else(|| AuthError::Invalid("`sub` must be the user's UUID".into()))?;
        if self.revoked.refuses(id, c.iat) {
            return Err(AuthError::Revoked);
        }
        if c.name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NAME_LEN)
        {
            return Err(AuthError::Invalid(format!(
                "`name` is longer than {MAX_NAME_LEN} characters"
            )));
        }
        if c.email
            .as_ref()
            .is_some_and(|e| e.chars().count() > MAX_EMAIL_LEN)
        {
            return Err(AuthError::Invalid(format!(
                "`email` is longer than {MAX_EMAIL_LEN} characters"
            )));
        }
        let user = User {
            id,
            name: c.name.filter(|n| !n.is_empty()),
            email: c.email.filter(|e| !e.is_empty()),
        };
        Ok(Session {
            user,
            exp: c.exp,
            iat: c.iat,
        })
    }

    /// Whether a token `session` stood for has been revoked since it was checked (a socket
    /// that was opening meanwhile).
    pub fn revoked(&self, session: &Session) -> bool {
        self.revoked.refuses(session.user.id, session.iat)
    }

    /// Whether the request carries the admin token.
    pub fn admin(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        let token = bearer(authorization).ok_or(AuthError::Missing)?;
        match &self.admin_token {
            Some(admin) if constant_time_eq(admin.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(AuthError::Invalid("not the admin token".into())),
            None => Err(AuthError::Invalid(
                "admin requests are not accepted: auth.admin_token is not configured".into(),
            )),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Mints a user token without `aud` or `iss` (tests).
pub fn mint(
    jwt_secret: &str,
    user: Uuid,
    name: Option<&str>,
    email: Option<&str>,
    now: Timestamp,
    ttl: Duration,
) -> String {
    mint_scoped(jwt_secret, &Scope::default(), user, (name, email), now, ttl)
}

/// Mints a user token carrying `scope`'s audience and issuer (`switchboard token`, the demo
/// sign-in).
pub fn mint_scoped(
    jwt_secret: &str,
    scope: &Scope,
    user: Uuid,
    (name, email): (Option<&str>, Option<&str>),
    now: Timestamp,
    ttl: Duration,
) -> String {
    /// The claims with the scope's, which [`Claims`] (what is read) leaves out.
    #[derive(Serialize)]
    struct Scoped<'a> {
        #[serde(flatten)]
        claims: Claims,
        #[serde(skip_serializing_if = "Option::is_none")]
        aud: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        iss: Option<&'a str>,
    }
    let claims = Claims {
        sub: user.to_string(),
        exp: now.unix_seconds().saturating_add(ttl.as_secs()),
        iat: Some(now.unix_seconds()),
        name: name.map(str::to_owned),
        email: email.map(str::to_owned),
    };
    let claims = Scoped {
        claims,
        aud: scope.audience.as_deref(),
        iss: scope.issuer.as_deref(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(jwt_secret.as_bytes()),
    )
    // HS256 over serializable claims does not fail.
    .expect("HS256 signing")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const SECRET: &str = "jwt-test-secret";

    fn auth() -> Auth {
        Auth::new(Some(SECRET), Some("admin-token"))
    }

    fn header(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn a_minted_token_names_its_user() {
        let id = Uuid::from_u128(0x1234);
        let t = mint(
            SECRET,
            id,
            Some("Ada"),
            Some("ada@example.com"),
            Timestamp::now(),
            Duration::from_secs(60),
        );
        let u = auth().user(Some(&header(&t))).unwrap();
        assert_eq!(
            u,
            User {
                id,
                name: Some("Ada".into()),
                email: Some("ada@example.com".into())
            }
        );
        assert_eq!(auth().user(Some(&format!("bearer  {t} "))).unwrap().id, id);
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let id = Uuid::from_u128(0x1234);
        let now = Timestamp::now();
        let a = auth();
        assert_eq!(a.user(None), Err(AuthError::Missing));
        assert_eq!(a.user(Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(a.user(Some("Bearer ")), Err(AuthError::Missing));
        // Expired beyond the leeway.
        let old = mint(
            SECRET,
            id,
            None,
            None,
            now - Duration::from_secs(3600),
            Duration::from_secs(60),
        );
        assert_eq!(a.user(Some(&header(&old))), Err(AuthError::Expired));
        // Signed with another secret.
        let forged = mint("other", id, None, None, now, Duration::from_secs(60));
        assert_eq!(
            a.user(Some(&header(&forged))).unwrap_err().code(),
            "invalid_token"
        );
        // alg none, with the payload of a good token.
        let good = mint(SECRET, id, None, None, now, Duration::from_secs(60));
        let payload = good.split('.').nth(1).unwrap();
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            a.user(Some(&header(&format!("{none}.{payload}."))))
                .unwrap_err()
                .code(),
            "invalid_token"
        );
        // A token for `sub`, valid for a minute, signed with the right secret by `alg`.
        let signed = |alg, sub: &str| {
            let claims = Claims {
                sub: sub.into(),
                exp: now.unix_seconds() + 60,
                iat: None,
                name: None,
                email: None,
            };
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
        };
        // HS512 with the right secret: only HS256 is accepted.
        let hs512 = signed(Algorithm::HS512, &id.to_string());
        assert_eq!(
            a.user(Some(&header(&hs512))).unwrap_err().code(),
            "invalid_token"
        );
        // Not a UUID subject; the nil UUID.
        for sub in ["alice", "00000000-0000-0000-0000-000000000000"] {
            let t = signed(Algorithm::HS256, sub);
            assert_eq!(
                a.user(Some(&header(&t))).unwrap_err().code(),
                "invalid_token",
                "{sub}"
            );
        }
        // An oversized name.
        let long = "n".repeat(MAX_NAME_LEN + 1);
        let t = mint(SECRET, id, Some(&long), None, now, Duration::from_secs(60));
        assert_eq!(
            a.user(Some(&header(&t))).unwrap_err().code(),
            "invalid_token"
        );
        // Garbage.
        assert_eq!(
            a.user(Some("Bearer a.b.c")).unwrap_err().code(),
            "invalid_token"
        );
        // No JWT secret configured: nobody.
        assert_eq!(
            Auth::new(None, None)
                .user(Some(&header(&good)))
                .unwrap_err()
                .code(),
            "invalid_token"
        );
    }

    #[test]
    fn a_scoped_auth_wants_its_audience_and_issuer() {
        let id = Uuid::from_u128(0x1234);
        let now = Timestamp::now();
        let ttl = Duration::from_secs(60);
        let scope = |aud: Option<&str>, iss: Option<&str>| Scope {
            audience: aud.map(str::to_owned),
            issuer: iss.map(str::to_owned),
        };
        let ours = scope(Some("switchboard"), Some("https://chat.example.com"));
        let a = auth().with_scope(ours.clone());
        let t = |scope: &Scope| header(&mint_scoped(SECRET, scope, id, (None, None), now, ttl));
        assert_eq!(a.user(Some(&t(&ours))).unwrap().id, id);
        for (other, why) in [
            (
                scope(None, Some("https://chat.example.com")),
                "no `aud` claim",
            ),
            (scope(Some("switchboard"), None), "no `iss` claim"),
            (
                scope(Some("another-service"), Some("https://chat.example.com")),
                "`aud` is not",
            ),
            (
                scope(Some("switchboard"), Some("https://evil.example")),
                "`iss` is not",
            ),
        ] {
            match a.user(Some(&t(&other))) {
                Err(AuthError::Invalid(m)) => assert!(m.contains(why), "{other:?}: {m}"),
                r => panic!("{other:?}: {r:?}"),
            }
        }
        // An audience among several (`aud` as an array) is accepted.
        let claims = serde_json::json!({
            "sub": id.to_string(), "exp": now.unix_seconds() + 60,
            "aud": ["another-service", "switchboard"], "iss": "https://chat.example.com",
        });
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let many = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert_eq!(a.user(Some(&header(&many))).unwrap().id, id);
        // Unscoped, a token's aud and iss are not looked at.
        assert_eq!(
            auth()
                .user(Some(&t(&scope(Some("x"), Some("y")))))
                .unwrap()
                .id,
            id
        );
    }

    #[test]
    fn the_admin_token_is_its_own() {
        let a = auth();
        assert_eq!(a.admin(Some("Bearer admin-token")), Ok(()));
        assert!(a.admin(Some("Bearer admin-tokeN")).is_err());
        assert!(a.admin(Some("Bearer admin")).is_err());
        assert_eq!(a.admin(None), Err(AuthError::Missing));
        assert!(Auth::new(Some(SECRET), None)
            .admin(Some("Bearer admin-token"))
            .is_err());
        // A user token is not the admin token, and the admin token is not a user token.
        let t = mint(
            SECRET,
            Uuid::from_u128(1),
            None,
            None,
            Timestamp::now(),
            Duration::from_secs(60),
        );
        assert!(a.admin(Some(&header(&t))).is_err());
        assert!(a.user(Some("Bearer admin-token")).is_err());
    }
}
