//! Which STUN codec on our control path: `stun-types` (what the core uses) against webrtc-rs'
//! `stun`, on the work an authenticated Allocate costs the server: parse the request (with
//! FINGERPRINT), read USERNAME/REALM/NONCE, check MESSAGE-INTEGRITY with the cached long-term
//! key, and build the success answer (XOR-RELAYED-ADDRESS, LIFETIME, XOR-MAPPED-ADDRESS,
//! MESSAGE-INTEGRITY, FINGERPRINT). Same request bytes for both; rounds alternate.
//!
//! `cargo bench -p switchboard-turn --bench codec` prints ns per request for each and the ratio.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use stun_types::attribute::{Nonce, Realm, Username, XorMappedAddress};
use stun_types::message::{
    IntegrityAlgorithm, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt,
    MessageWriteVec,
};
use switchboard_turn::credentials::{long_term_key, mint};
use turn_types::attribute::{Lifetime, RequestedTransport, XorRelayedAddress};
use turn_types::message::ALLOCATE;

const ROUNDS: usize = 5;
const ITERATIONS: u32 = 50_000;
const REALM: &str = "switchboard";

fn main() {
    let cred = mint(
        b"bench-secret",
        "3f1c2a9e-5d7b-4c1e-9a8f-0b6d2e4f7a1c",
        1_900_000_000,
    );
    let key = long_term_key(&cred.username, REALM, &cred.password);
    let request = {
        let mut w = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        w.add_attribute(&Lifetime::new(600)).unwrap();
        w.add_attribute(&Username::new(&cred.username).unwrap())
            .unwrap();
        w.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
        w.add_attribute(&Nonce::new("AAAAAAAAAAAAAAAA").unwrap())
            .unwrap();
        w.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1)
            .unwrap();
        w.add_fingerprint().unwrap();
        w.finish()
    };
    let client: SocketAddr = "192.0.2.1:50000".parse().unwrap();
    let relayed: SocketAddr = "198.51.100.10:49152".parse().unwrap();
    let webrtc_key = stun::integrity::MessageIntegrity::new_long_term_integrity(
        cred.username.clone(),
        REALM.to_owned(),
        cred.password.clone(),
    );

    // Both must accept the request and produce answers that verify, or the race is void.
    let ends = Ends { client, relayed };
    let a = stun_types_path(&request, &key, ends);
    let b = webrtc_path(&request, &webrtc_key, ends);
    for answer in [&a, &b] {
        let msg = Message::from_bytes(answer).expect("a valid answer");
        assert_eq!(msg.class(), MessageClass::Success);
        msg.validate_integrity_with_key(&key).expect("integrity");
        let r = msg.attribute::<XorRelayedAddress>().unwrap();
        assert_eq!(r.addr(msg.transaction_id()), relayed);
    }

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..ITERATIONS {
            black_box(stun_types_path(black_box(&request), &key, ends));
        }
        ours.push(t.elapsed().as_nanos() as f64 / f64::from(ITERATIONS));
        let t = Instant::now();
        for _ in 0..ITERATIONS {
            black_box(webrtc_path(black_box(&request), &webrtc_key, ends));
        }
        theirs.push(t.elapsed().as_nanos() as f64 / f64::from(ITERATIONS));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!(
        "authenticated Allocate: parse, check integrity, build the answer ({} bytes in)",
        request.len()
    );
    println!("  stun-types (ours)   {a:8.0} ns/request  (rounds: {ours:.0?})");
    println!("  webrtc-rs stun      {b:8.0} ns/request  (rounds: {theirs:.0?})");
    println!("  ratio ours/theirs   {:8.2}", a / b);
}

/// The client's address and its relayed one, as the answer to an Allocate names them.
#[derive(Clone, Copy)]
struct Ends {
    client: SocketAddr,
    relayed: SocketAddr,
}

fn stun_types_path(request: &[u8], key: &stun_types::message::IntegrityKey, ends: Ends) -> Vec<u8> {
    let Ends { client, relayed } = ends;
    let msg = Message::from_bytes(request).expect("parse");
    let user = msg.attribute::<Username>().expect("USERNAME");
    let realm = msg.attribute::<Realm>().expect("REALM");
    let nonce = msg.attribute::<Nonce>().expect("NONCE");
    black_box((user.username(), realm.realm(), nonce.nonce()));
    msg.validate_integrity_with_key(key).expect("integrity");
    let txid = msg.transaction_id();
    let mtype = MessageType::from_class_method(MessageClass::Success, ALLOCATE);
    let mut w = Message::builder(mtype, txid, MessageWriteVec::with_capacity(96));
    w.add_attribute(&XorRelayedAddress::new(relayed, txid))
        .unwrap();
    w.add_attribute(&Lifetime::new(600)).unwrap();
    w.add_attribute(&XorMappedAddress::new(client, txid))
        .unwrap();
    w.add_message_integrity_with_key(key, IntegrityAlgorithm::Sha1)
        .unwrap();
    w.add_fingerprint().unwrap();
    w.finish()
}

fn webrtc_path(request: &[u8], key: &stun::integrity::MessageIntegrity, ends: Ends) -> Vec<u8> {
    use stun::attributes::{
        ATTR_LIFETIME, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_RELAYED_ADDRESS,
    };
    use stun::message::{Setter, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE};
    let Ends { client, relayed } = ends;
    let mut m = stun::message::Message::new();
    m.unmarshal_binary(request).expect("parse");
    let user = stun::textattrs::TextAttribute::get_from_as(&m, ATTR_USERNAME).expect("USERNAME");
    let realm = stun::textattrs::TextAttribute::get_from_as(&m, ATTR_REALM).expect("REALM");
    let nonce = stun::textattrs::TextAttribute::get_from_as(&m, ATTR_NONCE).expect("NONCE");
    black_box((user, realm, nonce));
    stun::fingerprint::FINGERPRINT
        .check(&m)
        .expect("fingerprint");
    key.check(&mut m).expect("integrity");
    let mut out = stun::message::Message::new();
    out.typ = stun::message::MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE);
    out.transaction_id = m.transaction_id;
    out.write_header();
    let relayed = stun::xoraddr::XorMappedAddress {
        ip: relayed.ip(),
        port: relayed.port(),
    };
    relayed
        .add_to_as(&mut out, ATTR_XOR_RELAYED_ADDRESS)
        .unwrap();
    out.add(ATTR_LIFETIME, &600u32.to_be_bytes());
    stun::xoraddr::XorMappedAddress {
        ip: client.ip(),
        port: client.port(),
    }
    .add_to(&mut out)
    .unwrap();
    key.add_to(&mut out).unwrap();
    stun::fingerprint::FINGERPRINT.add_to(&mut out).unwrap();
    out.raw
}
