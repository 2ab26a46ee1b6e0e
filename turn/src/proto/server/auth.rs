//! Long-term credentials (RFC 8489 §9.2): checking a request's USERNAME, REALM, NONCE and
//! MESSAGE-INTEGRITY, and the 401/438 challenges with a fresh NONCE (§9.2.4, RFC 8656 §5).

use stun_types::attribute::{
    AttributeStaticType, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Username,
};
use stun_types::message::{IntegrityKey, Message};

use std::time::Duration;

use turn_types::message::ALLOCATE;

use super::reply::{error_bytes, put, reply_opts};
use super::Server;
use crate::proto::allocation::{Allocation, UserName};
use crate::proto::credentials;
use crate::proto::{AuthFailure, Event, FiveTuple, RequestError, Time, Transmit, Transport};

/// What an authenticated request proved.
pub(super) struct Authed {
    pub(super) key: IntegrityKey,
    pub(super) username: UserName,
    /// The credential has expired by the wall clock, and the request was let through only
    /// because its allocation is within `max_allocation_life` ([`Server::grace_left`]).
    pub(super) expired: bool,
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
        let Ok(verified) = credentials::parse(username.username(), self.config.rest_api_separator)
        else {
            return Err(RequestError::AuthFailed(AuthFailure::MalformedUsername));
        };
        let user_at = username.username().len() - verified.user.len();
        let existing = self
            .by_tuple
            .get(&tuple)
            .and_then(|&id| self.get(id))
            .filter(|a| a.username.as_str() == username.username());
        // The expiry by the wall clock (not `now`, which is monotonic from the start and so off
        // by whatever the clock was stepped since). A new allocation needs a valid credential;
        // one it made keeps its own up to `max_allocation_life`, so calls do not drop on the
        // hour (coturn drops them).
        let expired = verified.expires_unix < self.wall_secs(now);
        let grace = msg.method() != ALLOCATE
            && existing.is_some_and(|a| a.is_active() && !self.grace_left(a, now).is_zero());
        if expired && !grace {
            return Err(RequestError::AuthFailed(AuthFailure::Expired));
        }
        let cached = existing.map(|a| a.key.clone());
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
        // After the integrity: only who holds the credential learns it is revoked (and the
        // answer is the 401 of an expired one).
        if self.revoked.refuses(verified.user, verified.expires_unix) {
            return Err(RequestError::AuthFailed(AuthFailure::Revoked));
        }
        Ok(Authed {
            key,
            username: UserName::new(username.username(), user_at),
            expired,
        })
    }

    /// How much longer `alloc` may be refreshed with an expired credential: until
    /// `max_allocation_life` after its creation, in whole seconds (LIFETIME's unit).
    pub(super) fn grace_left(&self, alloc: &Allocation, now: Time) -> Duration {
        let end = alloc.created + self.config.max_allocation_life;
        Duration::from_secs(end.saturating_since(now).as_secs())
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
        if !self.unauthenticated_budget(now, &tuple) {
            self.record(error);
            return;
        }
        if !error.is_challenge() {
            return self.refuse(tuple, method, txid, error, &reply);
        }
        self.record(error);
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

impl Server {
    /// Whether an answer to a request that proved nothing (a challenge, a Binding answer, a
    /// 400 or 420 before authentication) may go to `tuple`'s source. Over UDP a source can be
    /// spoofed to aim those answers at someone else, so each gets only so many (see
    /// [`limit`](crate::proto::limit)); one over its budget is counted and gets nothing.
    /// Loopback cannot be spoofed from outside the box (the kernel drops such packets as
    /// martians), and a stream's source completed a handshake.
    pub(super) fn unauthenticated_budget(&mut self, now: Time, tuple: &FiveTuple) -> bool {
        let source = tuple.client.ip().to_canonical();
        if tuple.transport != Transport::Udp
            || source.is_loopback()
            || self.challenges.allow(source, now)
        {
            return true;
        }
        self.events.push_back(Event::ChallengeDropped);
        false
    }
}

pub(super) fn has_integrity(msg: &Message<'_>) -> bool {
    msg.has_attribute(MessageIntegrity::TYPE) || msg.has_attribute(MessageIntegritySha256::TYPE)
}
