//! Long-term credentials (RFC 8489 §9.2): checking a request's USERNAME, REALM, NONCE and
//! MESSAGE-INTEGRITY, and the 401/438 challenges with a fresh NONCE (§9.2.4, RFC 8656 §5).

use stun_types::attribute::{
    AttributeStaticType, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Username,
};
use stun_types::message::{IntegrityKey, Message};

use super::reply::{error_bytes, put, reply_opts};
use super::Server;
use crate::proto::allocation::UserName;
use crate::proto::credentials;
use crate::proto::{AuthFailure, Event, FiveTuple, RequestError, Time, Transmit, Transport};

/// What an authenticated request proved.
pub(super) struct Authed {
    pub(super) key: IntegrityKey,
    pub(super) username: UserName,
}

/// The longest message whose MESSAGE-INTEGRITY is checked (see [`Server::authenticate`]).
const MAX_VERIFIABLE: usize = u16::MAX as usize;

impl Server {
    /// Long-term credential check (RFC 8489 §9.2.4). On failure, answer with
    /// [`Server::refuse_unauthenticated`].
    pub(super) fn authenticate(
        &mut self,
        now: Time,
        tuple: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Authed, RequestError> {
        if !has_integrity(msg) {
            return Err(RequestError::Unauthenticated);
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            return Err(RequestError::AuthFailed(AuthFailure::MissingAttributes));
        };
        if !self.nonces.is_valid(nonce.nonce(), now, &tuple) {
            return Err(RequestError::AuthFailed(AuthFailure::StaleNonce));
        }
        if realm.realm() != self.config.realm {
            return Err(RequestError::AuthFailed(AuthFailure::WrongRealm));
        }
        let user_at = match credentials::verify(
            username.username(),
            self.config.rest_api_separator,
            now.unix_secs(),
        ) {
            Ok(v) => username.username().len() - v.user.len(),
            Err(credentials::CredentialError::Expired) => {
                return Err(RequestError::AuthFailed(AuthFailure::Expired))
            }
            Err(_) => return Err(RequestError::AuthFailed(AuthFailure::MalformedUsername)),
        };
        let cached = self
            .by_tuple
            .get(&tuple)
            .and_then(|&id| self.get(id))
            .filter(|a| a.username.as_str() == username.username())
            .map(|a| a.key.clone());
        let key = cached.unwrap_or_else(|| {
            let password = credentials::password_for(&self.config.secret, username.username());
            credentials::long_term_key(username.username(), &self.config.realm, &password)
        });
        // stun-types recomputes the length field with u16 arithmetic that overflows when the
        // integrity attribute sits past 65,511 bytes (possible only over TCP/TLS, whose frames
        // reach 65,555 bytes); no real request comes near that, so such a message is refused as
        // unverifiable instead of being handed to it.
        if msg.as_bytes().len() > MAX_VERIFIABLE || msg.validate_integrity_with_key(&key).is_err() {
            return Err(RequestError::AuthFailed(AuthFailure::BadIntegrity));
        }
        Ok(Authed {
            key,
            username: UserName::new(username.username(), user_at),
        })
    }

    /// Answers a request that did not authenticate: a challenge, or (credentials missing
    /// beside MESSAGE-INTEGRITY) a plain error, unsigned either way.
    pub(super) fn refuse_unauthenticated(
        &mut self,
        now: Time,
        tuple: FiveTuple,
        msg: &Message<'_>,
        error: &RequestError,
    ) {
        let reply = reply_opts(msg, None);
        let (method, txid) = (msg.method(), msg.transaction_id());
        if !error.is_challenge() {
            return self.refuse(tuple, method, txid, error, &reply);
        }
        self.record(error);
        // A spoofable source gets only so many: see [`limit`](crate::proto::limit). Loopback
        // cannot be spoofed from outside the box (the kernel drops such packets as martians).
        let source = tuple.client.ip().to_canonical();
        if tuple.transport == Transport::Udp
            && !source.is_loopback()
            && !self.challenges.allow(source, now)
        {
            self.events.push_back(Event::ChallengeDropped);
            return;
        }
        let nonce = self.nonces.issue(now, &tuple);
        let realm = Realm::new(&self.config.realm);
        let nonce = Nonce::new(&nonce);
        let bytes = error_bytes(method, txid, error, &reply, |w| {
            if let Ok(realm) = &realm {
                put(w, realm);
            }
            if let Ok(nonce) = &nonce {
                put(w, nonce);
            }
        });
        self.transmits.push_back(Transmit { tuple, data: bytes });
    }
}

pub(super) fn has_integrity(msg: &Message<'_>) -> bool {
    msg.has_attribute(MessageIntegrity::TYPE) || msg.has_attribute(MessageIntegritySha256::TYPE)
}
