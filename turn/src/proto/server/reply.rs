//! Building answers (RFC 8489 §6.3.1–6.3.4): success and error responses (ERROR-CODE as
//! [`RequestError`] maps it), and MESSAGE-INTEGRITY and FINGERPRINT when the request had them
//! (§14.5, §14.7).

use stun_types::attribute::{AttributeStaticType, Fingerprint};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, TransactionId,
};

use super::Server;
use crate::proto::{FiveTuple, RequestError, Transmit};

/// Per-request output options.
pub(super) struct Reply<'k> {
    pub(super) key: Option<&'k IntegrityKey>,
    pub(super) fingerprint: bool,
}

pub(super) fn reply_opts<'k>(msg: &Message<'_>, key: Option<&'k IntegrityKey>) -> Reply<'k> {
    Reply {
        key,
        fingerprint: msg.has_attribute(Fingerprint::TYPE),
    }
}

pub(super) fn put(w: &mut MessageWriteVec, attr: &dyn stun_types::attribute::AttributeWrite) {
    // Only fails on a message already sealed by MESSAGE-INTEGRITY, which callers never pass.
    let res = w.add_attribute(attr);
    debug_assert!(res.is_ok(), "{res:?}");
}

pub(super) fn success_bytes(
    method: Method,
    txid: TransactionId,
    reply: &Reply<'_>,
    attrs: impl FnOnce(&mut MessageWriteVec),
) -> Vec<u8> {
    answer(MessageClass::Success, method, txid, reply, attrs)
}

/// An error response: ERROR-CODE, then UNKNOWN-ATTRIBUTES for a 420, then `attrs`.
pub(super) fn error_bytes(
    method: Method,
    txid: TransactionId,
    error: &RequestError,
    reply: &Reply<'_>,
    attrs: impl FnOnce(&mut MessageWriteVec),
) -> Vec<u8> {
    answer(MessageClass::Error, method, txid, reply, |w| {
        if let Some(ec) = error.error_code() {
            put(w, &ec);
        }
        if let RequestError::UnknownAttributes(unknown) = error {
            put(w, unknown);
        }
        attrs(w);
    })
}

/// A response of `class` with `attrs`, then MESSAGE-INTEGRITY and FINGERPRINT as `reply` says.
fn answer(
    class: MessageClass,
    method: Method,
    txid: TransactionId,
    reply: &Reply<'_>,
    attrs: impl FnOnce(&mut MessageWriteVec),
) -> Vec<u8> {
    let mtype = MessageType::from_class_method(class, method);
    let mut w = Message::builder(mtype, txid, MessageWriteVec::with_capacity(96));
    attrs(&mut w);
    if let Some(key) = reply.key {
        let res = w.add_message_integrity_with_key(key, IntegrityAlgorithm::Sha1);
        debug_assert!(res.is_ok(), "{res:?}");
    }
    if reply.fingerprint {
        let res = w.add_fingerprint();
        debug_assert!(res.is_ok(), "{res:?}");
    }
    w.finish()
}

impl Server {
    /// The answer refusing a request with `error`, whose event (if it has one) is recorded.
    pub(super) fn refusal(
        &mut self,
        method: Method,
        txid: TransactionId,
        error: &RequestError,
        reply: &Reply<'_>,
    ) -> Vec<u8> {
        self.record(error);
        error_bytes(method, txid, error, reply, |_| {})
    }

    /// Refuses a request from `tuple` with `error` (not a challenge: see
    /// [`Server::refuse_unauthenticated`]).
    pub(super) fn refuse(
        &mut self,
        tuple: FiveTuple,
        method: Method,
        txid: TransactionId,
        error: &RequestError,
        reply: &Reply<'_>,
    ) {
        let data = self.refusal(method, txid, error, reply);
        self.transmits.push_back(Transmit { tuple, data });
    }

    /// Records the event `error` is counted as, if any.
    pub(super) fn record(&mut self, error: &RequestError) {
        self.events.extend(error.event());
    }
}
