//! Building answers (RFC 8489 §6.3.1–6.3.4): success and error responses, ERROR-CODE with its
//! standard reason phrase, and MESSAGE-INTEGRITY and FINGERPRINT when the request had them
//! (§14.5, §14.7).

use stun_types::attribute::{AttributeStaticType, ErrorCode, Fingerprint};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, TransactionId,
};

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

fn seal(mut w: MessageWriteVec, reply: &Reply<'_>) -> Vec<u8> {
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

pub(super) fn success_bytes(
    method: Method,
    txid: TransactionId,
    reply: &Reply<'_>,
    attrs: impl FnOnce(&mut MessageWriteVec),
) -> Vec<u8> {
    let mtype = MessageType::from_class_method(MessageClass::Success, method);
    let mut w = Message::builder(mtype, txid, MessageWriteVec::with_capacity(96));
    attrs(&mut w);
    seal(w, reply)
}

/// An error response. 401 and 438 carry no reason phrase (they answer unauthenticated
/// requests, and must stay small); others carry the RFC's standard phrase, never a detail.
pub(super) fn error_bytes(
    method: Method,
    txid: TransactionId,
    code: u16,
    reply: &Reply<'_>,
    attrs: impl FnOnce(&mut MessageWriteVec),
) -> Vec<u8> {
    let mtype = MessageType::from_class_method(MessageClass::Error, method);
    let mut w = Message::builder(mtype, txid, MessageWriteVec::with_capacity(96));
    let builder = ErrorCode::builder(code);
    let builder = if matches!(code, 401 | 438) {
        builder.reason("")
    } else {
        builder
    };
    if let Ok(ec) = builder.build() {
        put(&mut w, &ec);
    }
    attrs(&mut w);
    seal(w, reply)
}
