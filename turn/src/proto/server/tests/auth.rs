//! Long-term credentials (RFC 8489 §9.2): the RFC 5769 vectors, challenges and their limit,
//! nonces (438), wrong, expired and malformed credentials (401).

use super::*;

// ---- RFC 5769 test vectors ----------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 5769 §2.1: a Binding request with short-term credentials and FINGERPRINT.
const RFC5769_2_1: &str = "000100582112a442b7e7a701bc34d686fa87dfae
    802200105354554e207465737420636c69656e74 002400046e0001ff 80290008932ff9b151263b36
    000600096576746a3a6836765920202000080014 9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
    80280004e57a3bcf";

/// RFC 5769 §2.4: a request with long-term credentials.
const RFC5769_2_4: &str = "000100602112a44278ad3433c6ad72c029da412e
    00060012e3839ee38388e383aae38383e382afe382b90000
    0015001c662f2f3439396b3935346436 4f4c33346f4c394653547679363473 41
    0014000b6578616d706c652e6f726700
    00080014f67024656dd64a3e02b8e0712e85c9a28ca89666";

#[test]
fn rfc5769_sample_request_integrity_and_fingerprint() {
    let data = hex(RFC5769_2_1);
    let msg = Message::from_bytes(&data).expect("FINGERPRINT verifies");
    let key = MessageIntegrityCredentials::from(ShortTermCredentials::new(
        "VOkJxbRl1RmTxUk/WvJxBt".to_owned(),
    ))
    .make_key(IntegrityAlgorithm::Sha1);
    assert!(msg.validate_integrity_with_key(&key).is_ok());
    // Our server: PRIORITY (0x0024) is an ICE attribute a TURN server does not understand.
    let mut h = H::new(config());
    let bytes = h.one(client(1000), &data);
    assert_eq!(code(&bytes), ErrorCode::UNKNOWN_ATTRIBUTE);
    let resp = Message::from_bytes(&bytes).unwrap();
    assert_eq!(resp.transaction_id(), msg.transaction_id());
    assert!(resp
        .attribute::<UnknownAttributes>()
        .unwrap()
        .has_attribute(0x0024.into()));
    assert!(resp.has_attribute(Fingerprint::TYPE), "FINGERPRINT echoed");
}

#[test]
fn rfc5769_long_term_vector_verifies_with_our_key_derivation() {
    let data = hex(RFC5769_2_4);
    let msg = Message::from_bytes(&data).unwrap();
    let user = msg.attribute::<Username>().unwrap();
    assert_eq!(
        user.username(),
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"
    );
    // The password after SASLprep is "TheMatrIX".
    let key = long_term_key(user.username(), "example.org", "TheMatrIX");
    assert!(msg.validate_integrity_with_key(&key).is_ok());
    let wrong = long_term_key(user.username(), "example.org", "TheMatrix");
    assert!(msg.validate_integrity_with_key(&wrong).is_err());
}

// ---- Authentication ----------------------------------------------------------------------

#[test]
fn unauthenticated_allocate_is_challenged_small_and_identically() {
    let mut h = H::new(config());
    let mut w = allocate_request();
    w.add_attribute(&Lifetime::new(600)).unwrap();
    let req = w.finish();
    assert_eq!(req.len(), 36, "the minimal Allocate");
    let first = h.one(client(1000), &req);
    assert_eq!(code(&first), ErrorCode::UNAUTHORIZED);
    let msg = Message::from_bytes(&first).unwrap();
    assert_eq!(msg.attribute::<Realm>().unwrap().realm(), REALM);
    assert_eq!(msg.attribute::<ErrorCode>().unwrap().reason(), "");
    assert!(!msg.has_attribute(stun_types::attribute::MessageIntegrity::TYPE));
    assert!(first.len() <= 2 * req.len(), "401 is {} bytes", first.len());
    // A retransmission within the minute: byte-identical, and no state was kept.
    h.now = h.now + Duration::from_secs(10);
    assert_eq!(h.one(client(1000), &req), first);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.server.by_tuple.is_empty() && h.server.users.is_empty());
}

#[test]
fn challenges_over_udp_are_limited_per_source_address() {
    use crate::proto::limit::{CHALLENGES_PER_SECOND, CHALLENGE_BURST};
    let mut h = H::new(config());
    let w = allocate_request();
    let req = w.finish();
    // One address, any ports (a spoofer picks them): the burst, then silence.
    let answered = (0..2 * CHALLENGE_BURST as u16)
        .filter(|i| !h.feed(client(1000 + i), &req).is_empty())
        .count();
    assert_eq!(answered as u64, CHALLENGE_BURST);
    let dropped = h
        .events()
        .into_iter()
        .filter(|e| *e == Event::ChallengeDropped)
        .count();
    assert_eq!(dropped as u64, CHALLENGE_BURST);
    // Nothing was kept for the silenced requests either.
    assert!(h.server.by_tuple.is_empty() && h.server.tombstones.is_empty());
    // Another address is not affected; nor is the same one over TCP (its address is real).
    let other = FiveTuple::udp(addr("192.0.2.99:1000"), addr("198.51.100.10:3478"));
    assert_eq!(code(&h.one(other, &req)), ErrorCode::UNAUTHORIZED);
    assert_eq!(
        code(&h.one(tcp_client(5000), &req)),
        ErrorCode::UNAUTHORIZED
    );
    // Nor loopback, which no outside packet can claim.
    let local = FiveTuple::udp(addr("127.0.0.1:1000"), addr("127.0.0.1:3478"));
    for _ in 0..2 * CHALLENGE_BURST {
        assert_eq!(code(&h.one(local, &req)), ErrorCode::UNAUTHORIZED);
    }
    // A second later, a second's worth again.
    h.advance(1);
    let answered = (0..2 * CHALLENGE_BURST as u16)
        .filter(|i| !h.feed(client(3000 + i), &req).is_empty())
        .count();
    assert_eq!(answered as u64, CHALLENGES_PER_SECOND);
}

#[test]
fn every_unauthenticated_answer_over_udp_draws_on_the_source_budget() {
    use crate::proto::limit::CHALLENGE_BURST;
    // Each request that proves nothing, and what it would draw: a Binding answer, its 420, a
    // 400 for a malformed request, an unknown method, a bare Allocate, integrity without
    // credentials, and a challenge.
    let binding = request(BINDING).finish();
    let mut unknown_attr = request(BINDING);
    unknown_attr.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(
        0x0030.into(),
        &[1, 2, 3, 4],
    ));
    let mut malformed = binding.clone();
    malformed[3] = 8;
    malformed.extend_from_slice(&[0x00, 0x06, 0x00, 0x40, b'a', b'b', b'c', b'd']);
    let no_credentials = Cred::new("alice", T0 + 60).sign(request(ALLOCATE), REALM, None);
    let requests = [
        binding,
        unknown_attr.finish(),
        malformed,
        request(Method::new(0x0099)).finish(),
        request(ALLOCATE).finish(),
        no_credentials.finish(),
        allocate_request().finish(),
    ];
    for req in &requests {
        let mut h = H::new(config());
        // One address, any ports: the burst, then silence, whatever the request.
        let answered = (0..2 * CHALLENGE_BURST as u16)
            .filter(|i| !h.feed(client(1000 + i), req).is_empty())
            .count();
        assert_eq!(answered as u64, CHALLENGE_BURST, "{}", describe(req));
        let dropped = h
            .events()
            .iter()
            .filter(|e| **e == Event::ChallengeDropped)
            .count();
        assert_eq!(dropped as u64, CHALLENGE_BURST, "{}", describe(req));
        // They share one budget: a source that spent it on Bindings gets no 400 either.
        for other in &requests {
            assert!(
                h.feed(client(5000), other).is_empty(),
                "{}",
                describe(other)
            );
        }
        // Over TCP, and from loopback, nothing is limited.
        assert_eq!(h.feed(tcp_client(5000), req).len(), 1);
        let local = FiveTuple::udp(addr("127.0.0.1:1000"), addr("127.0.0.1:3478"));
        assert_eq!(h.feed(local, req).len(), 1);
    }
}

#[test]
fn unauthenticated_requests_that_cannot_succeed_are_not_challenged() {
    let mut h = H::new(config());
    // A bare Allocate: a 40-byte 400 (ERROR-CODE and its reason phrase), twice the request.
    let req = request(ALLOCATE).finish();
    let bytes = h.one(client(1000), &req);
    assert_eq!(code(&bytes), ErrorCode::BAD_REQUEST);
    assert_eq!((req.len(), bytes.len()), (20, 40));
    assert!(!Message::from_bytes(&bytes)
        .unwrap()
        .has_attribute(Nonce::TYPE));
    // Refresh, CreatePermission, ChannelBind without integrity from a 5-tuple with no
    // allocation: nothing at all.
    for method in [REFRESH, CREATE_PERMISSION, CHANNEL_BIND] {
        assert!(h.feed(client(1000), &request(method).finish()).is_empty());
    }
    // With an allocation they are challenged as usual.
    h.allocate(client(1000), "alice");
    assert_eq!(
        code(&h.one(client(1000), &request(REFRESH).finish())),
        ErrorCode::UNAUTHORIZED
    );
}

#[test]
fn refresh_never_grants_less_than_the_default_and_moves_the_deadline() {
    let (mut h, _, alice) = with_alice(config());
    let w = refresh(5);
    let bytes = h.authed(client(1), &alice, w);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 600);
    // Many refreshes leave one deadline per allocation, not one per refresh.
    for _ in 0..50 {
        assert_eq!(h.ask(client(1), &alice, request(REFRESH)), OK);
    }
    assert_eq!(h.server.expiries.len(), 1);
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(1);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.server.expiries.is_empty());
}

#[test]
fn stuffed_requests_cost_linear_work_and_are_bounded() {
    let mut h = H::new(config());
    // Thousands of distinct unknown comprehension-required types: 420 listing a few.
    let mut w = request(BINDING);
    for t in 0x0100u16..0x1100 {
        w.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(t.into(), &[]));
    }
    let bytes = h.one(client(1000), &w.finish());
    assert_eq!(code(&bytes), ErrorCode::UNKNOWN_ATTRIBUTE);
    assert!(bytes.len() < 200, "{} bytes", bytes.len());
    // The first MAX_UNKNOWN types are listed, and the scan stops there.
    let msg = Message::from_bytes(&bytes).unwrap();
    let listed = msg.attribute::<UnknownAttributes>().unwrap();
    assert!((0x0100u16..0x0110).all(|t| listed.has_attribute(t.into())));
    assert!(!listed.has_attribute(0x0110.into()));
    // More XOR-PEER-ADDRESSes than an allocation may hold: 508 before any is looked at.
    h.allocate(client(1), "alice");
    let alice = Cred::day("alice");
    let mut w = request(CREATE_PERMISSION);
    let txid = w.transaction_id();
    for i in 0..200u32 {
        let peer = SocketAddr::new(std::net::Ipv4Addr::from(0x0808_0000 + i).into(), 1);
        w.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
    }
    assert_eq!(
        h.ask(client(1), &alice, w),
        ErrorCode::INSUFFICIENT_CAPACITY
    );
}

#[test]
fn integrity_without_username_realm_or_nonce_is_400() {
    let mut h = H::new(config());
    let cred = Cred::new("alice", T0 + 60);
    let w = cred.sign(request(ALLOCATE), REALM, None);
    assert_eq!(
        code(&h.one(client(1000), &w.finish())),
        ErrorCode::BAD_REQUEST
    );
    assert!(h.saw(Event::AuthFailed(AuthFailure::MissingAttributes)));
}

#[test]
fn stale_forged_and_foreign_nonces_get_438_with_a_fresh_one() {
    let mut h = H::new(config());
    let cred = Cred::day("alice");
    let nonce = h.nonce(client(1000));
    // Another 5-tuple's nonce.
    let bytes = h.one(client(1001), &cred.seal(allocate_request(), &nonce));
    assert_eq!(code(&bytes), ErrorCode::STALE_NONCE);
    assert_ne!(nonce_of(&bytes), nonce, "a fresh one");
    // A forged one.
    let bytes = h.one(
        client(1000),
        &cred.seal(allocate_request(), "AAAAAAAAAAAAAAAA"),
    );
    assert_eq!(code(&bytes), ErrorCode::STALE_NONCE);
    // An expired one (nonces live 10 minutes, rounded up to the minute).
    h.advance(11 * 60 + 1);
    let bytes = h.one(client(1000), &cred.seal(allocate_request(), &nonce));
    assert_eq!(code(&bytes), ErrorCode::STALE_NONCE);
    assert!(Message::from_bytes(&bytes)
        .unwrap()
        .has_attribute(Realm::TYPE));
    assert!(h.saw(Event::AuthFailed(AuthFailure::StaleNonce)));
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn expired_forged_and_foreign_credentials_get_401() {
    let mut h = H::new(config());
    let cases: Vec<(Cred, AuthFailure)> = vec![
        (Cred::new("alice", T0 - 1), AuthFailure::Expired),
        (
            Cred {
                username: format!("{}:alice", T0 + 60),
                password: "not-the-password".into(),
            },
            AuthFailure::BadIntegrity,
        ),
        (
            Cred {
                username: "alice".into(),
                password: "x".into(),
            },
            AuthFailure::MalformedUsername,
        ),
        (
            // Minted with another secret.
            {
                let c = mint(b"other secret", "alice", T0 + 60);
                Cred {
                    username: c.username,
                    password: c.password,
                }
            },
            AuthFailure::BadIntegrity,
        ),
    ];
    for (cred, failure) in cases {
        let bytes = h.authed(client(1000), &cred, allocate_request());
        assert_eq!(code(&bytes), ErrorCode::UNAUTHORIZED, "{failure:?}");
        let msg = Message::from_bytes(&bytes).unwrap();
        assert!(msg.has_attribute(Nonce::TYPE) && msg.has_attribute(Realm::TYPE));
        assert!(
            h.events().contains(&Event::AuthFailed(failure)),
            "{failure:?}"
        );
    }
    // The wrong realm.
    let cred = Cred::new("alice", T0 + 60);
    let nonce = h.nonce(client(1000));
    let w = cred.sign(allocate_request(), "evil.example", Some(&nonce));
    assert_eq!(
        code(&h.one(client(1000), &w.finish())),
        ErrorCode::UNAUTHORIZED
    );
    assert!(h.saw(Event::AuthFailed(AuthFailure::WrongRealm)));
    assert_eq!(h.server.allocation_count(), 0);
}

// ---- Credential expiry: the wall clock, and allocations that outlive their credential ----

#[test]
fn a_credential_expired_by_the_wall_clock_is_refused_for_allocate() {
    // The monotonic clock (anchored at start) says T0; the wall clock was stepped two days on
    // since (NTP after a boot with a stale clock). A credential of a day has expired.
    let mut h = H::new(config());
    h.server.handle_wall_clock(T0 + 2 * 86_400);
    let bytes = h.authed(client(1), &Cred::day("alice"), allocate_request());
    assert_eq!(code(&bytes), ErrorCode::UNAUTHORIZED);
    assert!(h.saw(Event::AuthFailed(AuthFailure::Expired)));
    assert_eq!(h.server.allocation_count(), 0);
    // The other way round: stepped back, the monotonic clock two days ahead of the wall
    // clock; the credential is valid.
    let mut h = H::new(config());
    h.advance(2 * 86_400);
    h.server.handle_wall_clock(T0 + 60);
    h.allocate(client(1), "alice");
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn a_call_outlives_its_credential_up_to_max_allocation_life_and_not_beyond() {
    let mut c = config();
    c.max_allocation_life = Duration::from_secs(12 * 3600);
    let mut h = H::new(c);
    // An hour's credential (Synapse's default), refreshed every 500 s as a client does.
    let hour = Cred::hour("alice");
    let bytes = h.authed(client(1), &hour, allocate_request());
    assert_eq!(code(&bytes), OK);
    let id = alloc_id(&h, client(1));
    let lifetime = |bytes: &[u8]| {
        let msg = Message::from_bytes(bytes).unwrap();
        msg.attribute::<Lifetime>().map(|l| l.seconds()).ok()
    };
    let mut elapsed = 0;
    while elapsed + 500 < 12 * 3600 {
        h.advance(500);
        h.server.handle_wall_clock(h.now.unix_secs());
        elapsed += 500;
        let bytes = h.authed(client(1), &hour, refresh(600));
        assert_eq!(code(&bytes), OK, "refresh at +{elapsed} s");
        // Past the credential's hour too, and never beyond the cap.
        let left = 12 * 3600 - elapsed;
        assert_eq!(lifetime(&bytes), Some(600.min(left) as u32), "+{elapsed} s");
        // Permissions and channels are kept up as well.
        assert_eq!(h.ask(client(1), &hour, permission(PUBLIC_PEER)), OK);
    }
    assert!(elapsed > 3600);
    // A new allocation with the expired credential: refused, whoever asks.
    let bytes = h.authed(client(2), &hour, allocate_request());
    assert_eq!(code(&bytes), ErrorCode::UNAUTHORIZED);
    // At the cap the allocation ends, and a refresh cannot bring it back.
    assert_eq!(elapsed, 43_000);
    h.advance(199);
    assert!(h.server.allocation_tuple(id).is_some());
    h.advance(1);
    assert!(h.server.allocation_tuple(id).is_none(), "closed at the cap");
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::AllocationClosed { reason: CloseReason::Expired, lifetime, .. }
            if *lifetime == Duration::from_secs(12 * 3600)
    )));
    let bytes = h.authed(client(1), &hour, refresh(600));
    assert_eq!(code(&bytes), ErrorCode::UNAUTHORIZED);
}

#[test]
fn past_the_cap_an_expired_credential_no_longer_refreshes() {
    let mut c = config();
    c.max_allocation_life = Duration::from_secs(1800);
    let mut h = H::new(c);
    let hour = Cred::hour("alice");
    assert_eq!(code(&h.authed(client(1), &hour, allocate_request())), OK);
    // Within its credential's hour the cap does not apply: a valid credential refreshes as
    // always, past the 30 minutes.
    for _ in 0..6 {
        h.advance(500);
        h.server.handle_wall_clock(h.now.unix_secs());
        assert_eq!(h.ask(client(1), &hour, refresh(1200)), OK);
    }
    // After the hour, the allocation (live until 70 minutes, and 62 old) is past its 30: 401.
    h.advance(700);
    h.server.handle_wall_clock(h.now.unix_secs());
    assert_eq!(h.server.allocation_count(), 1);
    let bytes = h.authed(client(1), &hour, refresh(600));
    assert_eq!(code(&bytes), ErrorCode::UNAUTHORIZED);
    assert!(h.saw(Event::AuthFailed(AuthFailure::Expired)));
}

#[test]
fn an_oversized_signed_message_is_refused_not_verified() {
    // Over TCP a STUN message may be 65,555 bytes. One whose MESSAGE-INTEGRITY sits past
    // 65,511 bytes made stun-types' length arithmetic overflow (a panic with overflow checks,
    // a wrapped length without): it is refused as unverifiable, 401, like a bad signature.
    let mut h = H::new(config());
    let tuple = tcp_client(4000);
    let bob = Cred::day("bob");
    let mut w = allocate_request();
    // A comprehension-optional attribute nobody knows, ignored but counted in the length.
    let padding = vec![0u8; 65_436];
    w.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(
        0x8f00.into(),
        &padding,
    ));
    let nonce = h.nonce(tuple);
    let bytes = bob.seal(w, &nonce);
    assert!(bytes.len() > usize::from(u16::MAX), "{} bytes", bytes.len());
    assert_eq!(code(&h.one(tuple, &bytes)), ErrorCode::UNAUTHORIZED);
    // The same request at a normal size is accepted.
    let w = allocate_request();
    let nonce = h.nonce(tuple);
    let answer = h.one(tuple, &bob.seal(w, &nonce));
    assert_ne!(
        code(&answer),
        ErrorCode::UNAUTHORIZED,
        "{}",
        describe(&answer)
    );
}
