//! Binding and request processing (RFC 8489 §3, §6.3): the reflexive address, FINGERPRINT,
//! malformed messages, unknown methods and unknown comprehension-required attributes.

use super::*;

// ---- Binding ------------------------------------------------------------------------------

#[test]
fn binding_returns_the_reflexive_address() {
    let mut h = H::new(config());
    let req = request(BINDING).finish();
    let bytes = h.one(client(1000), &req);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.class(), MessageClass::Success);
    assert_eq!(
        msg.transaction_id(),
        Message::from_bytes(&req).unwrap().transaction_id()
    );
    let mapped = msg.attribute::<XorMappedAddress>().unwrap();
    assert_eq!(mapped.addr(msg.transaction_id()), addr("192.0.2.1:1000"));
    assert!(!msg.has_attribute(Fingerprint::TYPE));
    assert!(!msg.has_attribute(stun_types::attribute::Software::TYPE));
    assert_eq!(bytes.len(), 32, "header and XOR-MAPPED-ADDRESS only");
}

#[test]
fn binding_echoes_fingerprint_and_drops_a_bad_one() {
    let mut h = H::new(config());
    let mut w = request(BINDING);
    w.add_fingerprint().unwrap();
    let mut req = w.finish();
    let bytes = h.one(client(1000), &req);
    assert!(Message::from_bytes(&bytes)
        .unwrap()
        .has_attribute(Fingerprint::TYPE));
    let last = req.len() - 1;
    req[last] ^= 0xff;
    assert!(
        h.feed(client(1000), &req).is_empty(),
        "bad FINGERPRINT: not STUN, no answer"
    );
}

#[test]
fn malformed_request_keeps_its_transaction_id_for_a_400() {
    let mut h = H::new(config());
    let good = request(BINDING).finish();
    let txid = Message::from_bytes(&good).unwrap().transaction_id();
    // An attribute that runs past the end of the message.
    let mut bad = good.clone();
    bad[3] = 8;
    bad.extend_from_slice(&[0x00, 0x06, 0x00, 0x40, b'a', b'b', b'c', b'd']);
    let bytes = h.one(client(1000), &bad);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.transaction_id(), txid);
    assert_eq!(code(&bytes), ErrorCode::BAD_REQUEST);
    // A length field that disagrees with the datagram.
    let mut bad = good;
    bad.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(code(&h.one(client(1000), &bad)), ErrorCode::BAD_REQUEST);
}

#[test]
fn garbage_and_responses_get_no_answer() {
    let mut h = H::new(config());
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff",
        &[0u8; 19][..],
        &[0x80; 64][..],
    ] {
        assert!(h.feed(client(1000), junk).is_empty());
    }
    let mut w = Message::builder(
        stun_types::message::MessageType::from_class_method(MessageClass::Success, BINDING),
        TransactionId::generate(),
        MessageWriteVec::new(),
    );
    w.add_attribute(&XorMappedAddress::new(
        addr("1.2.3.4:5"),
        w.transaction_id(),
    ))
    .unwrap();
    assert!(h.feed(client(1000), &w.finish()).is_empty());
}

#[test]
fn unknown_method_is_400() {
    let mut h = H::new(config());
    let bytes = h.one(client(1000), &request(Method::new(0x0099)).finish());
    assert_eq!(code(&bytes), ErrorCode::BAD_REQUEST);
}

#[test]
fn unknown_comprehension_required_attribute_is_420() {
    let mut h = H::new(config());
    let mut w = request(BINDING);
    w.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(
        0x0030.into(),
        &[1, 2, 3, 4],
    ));
    // Comprehension-optional ones are ignored.
    w.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(
        0x8030.into(),
        &[1, 2, 3, 4],
    ));
    let bytes = h.one(client(1000), &w.finish());
    assert_eq!(code(&bytes), ErrorCode::UNKNOWN_ATTRIBUTE);
    let msg = Message::from_bytes(&bytes).unwrap();
    let unknown = msg.attribute::<UnknownAttributes>().unwrap();
    assert!(unknown.has_attribute(0x0030.into()));
    assert!(!unknown.has_attribute(0x8030.into()));
}
