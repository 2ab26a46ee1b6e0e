//! Allocate and Refresh (RFC 8656 §7.2, §7.3): attribute rules, retransmissions, quotas,
//! usernames, lifetimes, deletion and expiry.

use super::*;

// ---- Allocate ----------------------------------------------------------------------------

#[test]
fn allocate_succeeds_with_integrity_and_the_advertised_address() {
    let mut c = config();
    c.external_ips = vec!["192.0.2.200".parse().unwrap()];
    let mut h = H::new(c);
    let cred = Cred::hour("alice");
    let w = allocate_request();
    let nonce = h.nonce(client(1000));
    let mut w = cred.sign(w, REALM, Some(&nonce));
    w.add_fingerprint().unwrap();
    let bytes = w.finish();
    let resp = h.one(client(1000), &bytes);
    let msg = Message::from_bytes(&resp).unwrap();
    assert_eq!(msg.class(), MessageClass::Success, "{}", describe(&resp));
    let txid = msg.transaction_id();
    let relayed = msg.attribute::<XorRelayedAddress>().unwrap().addr(txid);
    assert_eq!(relayed, addr("192.0.2.200:50000"), "external_ip advertised");
    assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 600);
    assert_eq!(
        msg.attribute::<XorMappedAddress>().unwrap().addr(txid),
        addr("192.0.2.1:1000")
    );
    assert!(msg.has_attribute(Fingerprint::TYPE));
    let key = long_term_key(&cred.username, REALM, &cred.password);
    assert!(msg.validate_integrity_with_key(&key).is_ok());
    let events = h.events();
    assert!(events.iter().any(|e| matches!(e,
        Event::AllocationCreated { user, relayed, .. }
            if &**user == "alice" && *relayed == addr("198.51.100.10:50000"))));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn allocate_lifetime_is_clamped_between_default_and_maximum() {
    let mut h = H::new(config());
    for (i, (asked, granted)) in [(7200, 3600), (60, 600), (1200, 1200)]
        .into_iter()
        .enumerate()
    {
        let cred = Cred::day("alice");
        let mut w = allocate_request();
        w.add_attribute(&Lifetime::new(asked)).unwrap();
        let bytes = h.authed(client(2000 + i as u16), &cred, w);
        let msg = Message::from_bytes(&bytes).unwrap();
        assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), granted);
    }
}

#[test]
fn retransmitted_allocate_gets_the_same_answer_and_another_gets_437() {
    let mut h = H::new(config());
    let cred = Cred::hour("alice");
    let req = h.sealed(client(1000), &cred, allocate_request());
    let first = h.one(client(1000), &req);
    assert_eq!(code(&first), OK);
    h.now = h.now + Duration::from_secs(2);
    assert_eq!(h.one(client(1000), &req), first, "identical bytes");
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(
        h.ask(client(1000), &cred, allocate_request()),
        ErrorCode::ALLOCATION_MISMATCH
    );
    // Authentication comes first (RFC 8656 §7.2): an unauthenticated one is challenged.
    let w = allocate_request();
    assert_eq!(
        code(&h.one(client(1000), &w.finish())),
        ErrorCode::UNAUTHORIZED
    );
}

#[test]
fn allocate_attribute_rules() {
    let mut h = H::new(config());
    let cred = Cred::hour("alice");
    type Build = Box<dyn Fn(&mut MessageWriteVec)>;
    let cases: Vec<(u16, Build)> = vec![
        (ErrorCode::BAD_REQUEST, Box::new(|_| {})), // no REQUESTED-TRANSPORT
        (
            ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
                    .unwrap()
            }),
        ),
        (
            ErrorCode::INSUFFICIENT_CAPACITY, // EVEN-PORT with R: a reservation
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(17)).unwrap();
                w.add_attribute(&EvenPort::new(true)).unwrap();
            }),
        ),
        (
            ErrorCode::INSUFFICIENT_CAPACITY,
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(17)).unwrap();
                w.add_attribute(&ReservationToken::new(42)).unwrap();
            }),
        ),
        (
            ErrorCode::BAD_REQUEST,
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(17)).unwrap();
                w.add_attribute(&EvenPort::new(false)).unwrap();
                w.add_attribute(&ReservationToken::new(42)).unwrap();
            }),
        ),
        (
            ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(17)).unwrap();
                w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
                    .unwrap();
            }),
        ),
    ];
    for (want, build) in cases {
        let mut w = request(ALLOCATE);
        build(&mut w);
        let bytes = h.authed(client(3000), &cred, w);
        assert_eq!(code(&bytes), want, "{}", describe(&bytes));
        // Errors after authentication carry MESSAGE-INTEGRITY.
        let key = long_term_key(&cred.username, REALM, &cred.password);
        assert!(Message::from_bytes(&bytes)
            .unwrap()
            .validate_integrity_with_key(&key)
            .is_ok());
    }
    assert_eq!(
        h.server.allocation_count(),
        0,
        "failed requests change nothing"
    );
    // EVEN-PORT without R: an even port.
    let mut w = allocate_request();
    w.add_attribute(&EvenPort::new(false)).unwrap();
    h.next_port = 50001;
    let bytes = h.authed(client(3001), &cred, w);
    let msg = Message::from_bytes(&bytes).unwrap();
    let relayed = msg.attribute::<XorRelayedAddress>().unwrap();
    assert_eq!(relayed.addr(msg.transaction_id()).port(), 50002);
    // DONT-FRAGMENT is accepted.
    let mut w = allocate_request();
    w.add_attribute(&turn_types::attribute::DontFragment::new())
        .unwrap();
    assert_eq!(h.ask(client(3000), &cred, w), OK);
}

#[test]
fn user_and_total_quotas_give_486() {
    let mut c = config();
    c.user_quota = 2;
    c.total_quota = 3;
    let mut h = H::new(c);
    // `user` from `tuple` is refused, for the user's quota or (`total`) the relay's.
    let refused = |h: &mut H, tuple, user, total| {
        let cred = Cred::hour(user);
        let code = h.ask(tuple, &cred, allocate_request());
        assert_eq!(code, ErrorCode::ALLOCATION_QUOTA_REACHED, "{user}");
        assert!(h.saw(Event::QuotaReached { total }), "{user}");
    };
    h.allocate(client(1), "alice");
    h.allocate(client(2), "alice");
    refused(&mut h, client(3), "alice", false);
    h.allocate(client(4), "bob");
    refused(&mut h, client(5), "carol", true);
    assert_eq!(h.server.allocation_count(), 3);
    // Freeing one makes room again.
    let alice = Cred::day("alice");
    assert_eq!(h.ask(client(1), &alice, refresh(0)), OK);
    h.allocate(client(6), "alice");
}

impl Cred {
    /// A credential for exactly `username`, signed with the right secret.
    fn raw(username: &str) -> Self {
        Cred {
            username: username.to_owned(),
            password: crate::proto::credentials::password_for(SECRET, username),
        }
    }
}

/// Other deployments' usernames (see `credentials`): quotas and usage count the user after
/// the first separator, whatever it contains; a username without one is a user of its own.
#[test]
fn quotas_and_usage_count_opaque_user_names() {
    let mut c = config();
    c.user_quota = 2;
    let mut h = H::new(c);
    // Two Matrix users of one homeserver: two quotas, though both names hold `:example.org`.
    h.allocate(client(1), "@alice:example.org");
    h.allocate(client(2), "@alice:example.org");
    h.allocate(client(3), "@bob:example.org");
    // Alice again, with a credential of another expiry: the same user, over her quota.
    let again = Cred::raw(&format!("{}:@alice:example.org", T0 + 7200));
    assert_eq!(
        h.ask(client(4), &again, allocate_request()),
        ErrorCode::ALLOCATION_QUOTA_REACHED
    );
    assert!(h.saw(Event::QuotaReached { total: false }));
    // Jitsi's `<expiry>` alone and an empty user: each username is its own user.
    for (port, username) in [
        (5, format!("{}", T0 + 3600)),
        (6, format!("{}:", T0 + 3600)),
    ] {
        let cred = Cred::raw(&username);
        assert_eq!(h.ask(client(port), &cred, allocate_request()), OK);
    }
    let mut users: Vec<&str> = h.server.usage_by_user().map(|(u, _)| u).collect();
    users.sort_unstable();
    assert_eq!(
        users,
        [
            "1700003600",
            "1700003600:",
            "@alice:example.org",
            "@alice:example.org",
            "@bob:example.org"
        ]
    );
    // Non-ASCII, spaces and separators inside the user: opaque too.
    let cred = Cred::raw(&format!("{}:Zoë Ünal:東京", T0 + 3600));
    assert_eq!(h.ask(client(7), &cred, allocate_request()), OK);
    assert!(h.server.usage_by_user().any(|(u, _)| u == "Zoë Ünal:東京"));
}

#[test]
fn the_configured_separator_splits_the_username() {
    let mut c = config();
    c.rest_api_separator = '_';
    let mut h = H::new(c);
    let cred = Cred::raw(&format!("{}_@alice:example.org", T0 + 3600));
    assert_eq!(h.ask(client(1), &cred, allocate_request()), OK);
    assert!(h
        .server
        .usage_by_user()
        .any(|(u, _)| u == "@alice:example.org"));
    // The colon is no separator now: `<expiry>:...` has no digits-only expiry. A 401, with
    // the HMAC right.
    let colon = Cred::raw(&format!("{}:alice", T0 + 3600));
    h.assert_auth_failed(
        client(2),
        &colon,
        allocate_request(),
        ErrorCode::UNAUTHORIZED,
        AuthFailure::MalformedUsername,
    );
}

#[test]
fn overlong_and_malformed_usernames_get_401_with_the_hmac_right() {
    let mut h = H::new(config());
    let at_limit = format!("{}:{}", T0 + 3600, "x".repeat(512 - 11));
    assert_eq!(at_limit.len(), 512);
    assert_eq!(
        h.ask(client(1), &Cred::raw(&at_limit), allocate_request()),
        OK
    );
    // 513 bytes: still a STUN USERNAME, but over our bound.
    let over = format!("{at_limit}y");
    h.assert_auth_failed(
        client(2),
        &Cred::raw(&over),
        allocate_request(),
        ErrorCode::UNAUTHORIZED,
        AuthFailure::MalformedUsername,
    );
    for username in ["", "alice", ":alice", "12a:alice", "alice:1700003600"] {
        let bytes = h.authed(client(3), &Cred::raw(username), allocate_request());
        assert_eq!(code(&bytes), ErrorCode::UNAUTHORIZED, "{username:?}");
        assert!(h.saw(Event::AuthFailed(AuthFailure::MalformedUsername)));
    }
    // Expired, with any user part.
    let expired = Cred::raw(&format!("{}:@alice:example.org", T0 - 1));
    h.assert_auth_failed(
        client(4),
        &expired,
        allocate_request(),
        ErrorCode::UNAUTHORIZED,
        AuthFailure::Expired,
    );
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn no_relay_port_gives_508_and_leaves_nothing() {
    let mut h = H::new(config());
    let req = h.sealed(client(1000), &Cred::hour("alice"), allocate_request());
    let action = h.handle(client(1000), &req);
    assert_eq!(action, ClientAction::Done);
    let Some(Command::OpenRelay(RelayRequest { id, .. })) = h.server.poll_command() else {
        panic!("expected OpenRelay");
    };
    h.server
        .handle_relay_opened(h.now, id, Family::V4, Err(OpenError::NoPorts));
    let answers = h.answers(client(1000));
    assert_eq!(code(&answers[0]), ErrorCode::INSUFFICIENT_CAPACITY);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.server.users.is_empty());
    assert_eq!(h.server.poll_command(), None, "no socket to close");
}

// ---- Refresh -----------------------------------------------------------------------------

#[test]
fn refresh_rules() {
    let mut h = H::new(config());
    let alice = Cred::day("alice");
    // No allocation: 437.
    assert_eq!(
        h.ask(client(1), &alice, request(REFRESH)),
        ErrorCode::ALLOCATION_MISMATCH
    );
    h.allocate(client(1), "alice");
    // Another user on the same 5-tuple: 441.
    let mallory = Cred::day("mallory");
    h.assert_auth_failed(
        client(1),
        &mallory,
        request(REFRESH),
        ErrorCode::WRONG_CREDENTIALS,
        AuthFailure::WrongCredentials,
    );
    // Refresh extends; capped at the maximum.
    let w = refresh(99_999);
    let bytes = h.authed(client(1), &alice, w);
    assert_eq!(
        Message::from_bytes(&bytes)
            .unwrap()
            .attribute::<Lifetime>()
            .unwrap()
            .seconds(),
        3600
    );
    h.advance(3000);
    assert_eq!(
        h.server.allocation_count(),
        1,
        "refreshed beyond the first 600 s"
    );
    // Lifetime 0 deletes; its retransmission gets the same bytes.
    let req = h.sealed(client(1), &alice, refresh(0));
    let first = h.one(client(1), &req);
    assert_eq!(code(&first), OK);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::Deleted,
            ..
        }
    )));
    assert_eq!(h.closed.len(), 1, "its relay socket closed");
    assert_eq!(h.one(client(1), &req), first, "retransmitted delete");
    h.advance(60);
    assert_eq!(
        code(&h.one(client(1), &req)),
        ErrorCode::ALLOCATION_MISMATCH,
        "tombstone gone after 40 s"
    );
}

#[test]
fn allocation_expires_with_its_usage_reported() {
    let mut h = H::new(config());
    let relayed = h.allocate(client(1), "alice");
    h.events();
    let id = alloc_id(&h, client(1));
    let alice = Cred::day("alice");
    assert_eq!(h.ask(client(1), &alice, permission(PUBLIC_PEER)), OK);
    let send = send_indication(PUBLIC_PEER, b"hello");
    let action = h.handle(client(1), &send);
    assert!(matches!(
        action,
        ClientAction::Relay {
            payload: b"hello",
            ..
        }
    ));
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"pong!!").is_some());
    assert_eq!(
        h.server.poll_timeout(),
        Some(Time::from_unix_secs(T0 + 30)),
        "sweep first"
    );
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(1);
    assert_eq!(h.server.allocation_count(), 0);
    let closed = h.events().into_iter().find_map(|e| match e {
        Event::AllocationClosed {
            usage,
            reason,
            lifetime,
            ..
        } => Some((usage, reason, lifetime)),
        _ => None,
    });
    let (usage, reason, lifetime) = closed.expect("closed event");
    assert_eq!(reason, CloseReason::Expired);
    assert_eq!(lifetime, Duration::from_secs(600));
    assert_eq!(
        usage,
        Usage {
            packets_to_peer: 1,
            bytes_to_peer: 5,
            packets_from_peer: 1,
            bytes_from_peer: 6,
            ..Usage::default()
        }
    );
    assert_eq!(h.closed, vec![id]);
    assert!(!h.server.by_relay.contains_key(&relayed));
}
