//! TURN credentials for the REST API (`GET /api/calls/turn-credentials`), minted with the
//! relay's own scheme so that the relay accepts exactly what the API hands out.

use std::time::Duration;

use serde::Serialize;
use switchboard_turn::credentials;

use crate::time::Timestamp;

/// Mints credentials for every way into the relay.
#[derive(Clone)]
pub struct TurnIssuer {
    secret: Vec<u8>,
    /// How long minted credentials stay valid (`turn.credential_ttl`).
    pub ttl: Duration,
    /// `turn:`/`turns:` URLs, as clients can reach the relay.
    pub urls: Vec<String>,
    /// Between expiry and user id in usernames (`turn.rest_api_separator`).
    separator: char,
}

impl std::fmt::Debug for TurnIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnIssuer")
            .field("ttl", &self.ttl)
            .field("urls", &self.urls)
            .field("separator", &self.separator)
            .finish_non_exhaustive()
    }
}

/// The response body: `{"credentials": {...}, "expiresAt": "..."}`.
#[derive(Clone, Debug, Serialize)]
pub struct TurnCredentials {
    pub credentials: IceServer,
    #[serde(rename = "expiresAt")]
    pub expires_at: String,
}

/// One entry of a WebRTC `iceServers` list.
#[derive(Clone, Debug, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

impl TurnIssuer {
    /// `secret` is the relay's HMAC key (`turn.secret`'s bytes, as coturn's static-auth-secret).
    pub fn new(secret: &[u8], ttl: Duration, urls: Vec<String>) -> TurnIssuer {
        TurnIssuer {
            secret: secret.to_vec(),
            ttl,
            urls,
            separator: credentials::DEFAULT_SEPARATOR,
        }
    }

    /// Usernames with `separator` between expiry and user id instead of `:`
    /// (`turn.rest_api_separator`, which the relay splits at).
    pub fn with_separator(mut self, separator: char) -> TurnIssuer {
        self.separator = separator;
        self
    }

    /// The credentials of `username` (minted earlier, expiring at `expires`) again: None if
    /// the username is not one we mint, with today's separator.
    pub fn reissue(&self, username: &str, expires: Timestamp) -> Option<TurnCredentials> {
        let (expiry, _) = username.split_once(self.separator)?;
        if expiry.parse::<u64>().ok()? != expires.unix_seconds() {
            return None;
        }
        Some(TurnCredentials {
            credentials: IceServer {
                urls: self.urls.clone(),
                username: username.to_owned(),
                // From the secret as it is now, not as stored: after a secret change the
                // stored password would be refused by the relay.
                credential: credentials::password_for(&self.secret, username),
            },
            expires_at: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(expires.unix_seconds()),
            )
            .to_string(),
        })
    }

    /// Credentials for `user` valid for `ttl` from `now`.
    pub fn issue(&self, user: &str, now: Timestamp, ttl: Duration) -> TurnCredentials {
        let expires = now.unix_seconds().saturating_add(ttl.as_secs());
        let c = credentials::mint_with_separator(&self.secret, user, self.separator, expires);
        TurnCredentials {
            credentials: IceServer {
                urls: self.urls.clone(),
                username: c.username,
                credential: c.password,
            },
            expires_at: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(c.expires_unix),
            )
            .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_spec_shape_and_the_coturn_password() {
        let issuer = TurnIssuer::new(
            b"secret",
            Duration::from_secs(3600),
            vec!["turn:127.0.0.1:3478?transport=udp".into()],
        );
        let now = Timestamp::from_unix_millis(1_736_514_000_999);
        let body = issuer.issue("alice", now, issuer.ttl);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "credentials": {
                    "urls": ["turn:127.0.0.1:3478?transport=udp"],
                    "username": "1736517600:alice",
                    // printf '1736517600:alice' | openssl dgst -sha1 -hmac secret -binary | base64
                    "credential": "DolFTSEG85ZJiJWslIq8ApYL7cE=",
                },
                "expiresAt": "2025-01-10T14:00:00Z",
            })
        );
        assert_eq!(
            credentials::password_for(b"secret", "1736517600:alice"),
            body.credentials.credential
        );
        assert!(credentials::verify("1736517600:alice", ':', 1_736_517_599).is_ok());
    }

    #[test]
    fn the_configured_separator_is_minted_and_reissued() {
        let issuer =
            TurnIssuer::new(b"secret", Duration::from_secs(3600), Vec::new()).with_separator('_');
        let now = Timestamp::from_unix_millis(1_736_514_000_000);
        let body = issuer.issue("@alice:example.org", now, issuer.ttl);
        assert_eq!(body.credentials.username, "1736517600_@alice:example.org");
        // printf '1736517600_@alice:example.org' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(body.credentials.credential, "20kjIwOJTT5xWw12GFB1prVwOTo=");
        let expires = Timestamp::from_unix_millis(1_736_517_600_000);
        let again = issuer
            .reissue("1736517600_@alice:example.org", expires)
            .unwrap();
        assert_eq!(again.credentials.credential, body.credentials.credential);
        // One stored before the separator changed is not handed out again: the relay would
        // not split it where it was minted.
        assert!(issuer.reissue("1736517600:alice", expires).is_none());
    }
}
