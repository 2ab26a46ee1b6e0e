//! Address families (RFC 8656 §7.2): IPv6 and dual allocations, ADDRESS-ERROR-CODE, 440.

use super::*;

// ---- IPv6 and dual allocations (RFC 8656 §7) -----------------------------------------------

#[test]
fn ipv6_allocation_relays_to_ipv6_peers_only() {
    let mut h = H::new(dual_stack_config());
    let bytes = allocate_with(&mut h, client(1), "alice", ipv6);
    assert_eq!(code(&bytes), OK, "{}", describe(&bytes));
    assert_eq!(relayed_addresses(&bytes), [addr("[2001:db8::10]:50000")]);
    let id = alloc_id(&h, client(1));
    let alice = Cred::day("alice");
    // An IPv4 peer on an IPv6-only allocation: 443, for permissions and channels alike.
    assert_eq!(
        h.ask(client(1), &alice, permission(PUBLIC_PEER)),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH
    );
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER)),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH
    );
    // IPv6 peers go through the same policy: a private (ULA) one is refused, a public one not.
    assert_eq!(
        h.ask(client(1), &alice, permission("[fd00::1]:1")),
        ErrorCode::FORBIDDEN
    );
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER6)),
        OK
    );
    match h
        .server
        .handle_client(h.now, client(1), &channel_data(0x4000, b"six"))
    {
        ClientAction::Relay { peer, payload, .. } => {
            assert_eq!((peer, payload), (addr(PUBLIC_PEER6), &b"six"[..]));
        }
        other => panic!("{other:?}"),
    }
    let (_, frame) = from_peer(&mut h, id, PUBLIC_PEER6, b"back").unwrap();
    assert_eq!(frame, channel_data(0x4000, b"back"));
    // A Send to an IPv4 peer is dropped, whatever permissions exist.
    assert_eq!(
        h.handle(client(1), &send_indication(PUBLIC_PEER, b"x")),
        ClientAction::Done
    );
    // Refresh naming the other family: 443; naming its own: fine.
    let mut w = request(REFRESH);
    w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV4))
        .unwrap();
    assert_eq!(
        h.ask(client(1), &alice, w),
        ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH
    );
    let mut w = request(REFRESH);
    w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
    assert_eq!(h.ask(client(1), &alice, w), OK);
}

#[test]
fn dual_allocation_relays_both_families() {
    let mut h = H::new(dual_stack_config());
    let bytes = allocate_with(&mut h, client(1), "alice", and_ipv6);
    assert_eq!(code(&bytes), OK, "{}", describe(&bytes));
    // IPv4 first, then IPv6, and no ADDRESS-ERROR-CODE.
    assert_eq!(
        relayed_addresses(&bytes),
        [addr("198.51.100.10:50000"), addr("[2001:db8::10]:50001")]
    );
    assert_eq!(address_error(&bytes), None);
    let alice = Cred::day("alice");
    let mut w = permission(PUBLIC_PEER);
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(addr(PUBLIC_PEER6), txid))
        .unwrap();
    assert_eq!(h.ask(client(1), &alice, w), OK);
    for peer in [PUBLIC_PEER, PUBLIC_PEER6] {
        match h
            .server
            .handle_client(h.now, client(1), &send_indication(peer, b"x"))
        {
            ClientAction::Relay { peer: p, .. } => assert_eq!(p, addr(peer)),
            other => panic!("{other:?}"),
        }
    }
    // Both relay addresses are the relay's own; deleting the allocation closes both sockets
    // with one command.
    assert_eq!(h.server.by_relay.len(), 2);
    assert_eq!(h.ask(client(1), &alice, refresh(0)), OK);
    assert_eq!(h.closed.len(), 1);
    assert!(h.server.by_relay.is_empty());
}

#[test]
fn dual_allocation_without_an_ipv6_socket_keeps_the_ipv4_half() {
    let mut h = H::new(dual_stack_config());
    let cred = Cred::day("alice");
    let mut w = allocate_request();
    w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
    let req = h.sealed(client(1), &cred, w);
    assert_eq!(h.handle(client(1), &req), ClientAction::Done);
    let Some(Command::OpenRelay(RelayRequest {
        id,
        family: Family::V4,
        ..
    })) = h.server.poll_command()
    else {
        panic!("expected the IPv4 socket first");
    };
    h.server
        .handle_relay_opened(h.now, id, Family::V4, Ok(addr("198.51.100.10:50000")));
    assert!(
        h.server.poll_transmit().is_none(),
        "waits for the IPv6 socket"
    );
    let Some(Command::OpenRelay(RelayRequest {
        family: Family::V6, ..
    })) = h.server.poll_command()
    else {
        panic!("expected the IPv6 socket");
    };
    h.server
        .handle_relay_opened(h.now, id, Family::V6, Err(OpenError::NoPorts));
    let bytes = h.answers(client(1)).pop().unwrap();
    assert_eq!(code(&bytes), OK);
    assert_eq!(relayed_addresses(&bytes), [addr("198.51.100.10:50000")]);
    assert_eq!(
        address_error(&bytes),
        Some(ErrorCode::INSUFFICIENT_CAPACITY)
    );

    // The IPv4 half failing fails the whole request, and the IPv6 socket is closed again.
    let mut w = allocate_request();
    w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
    let req = h.sealed(client(2), &cred, w);
    h.handle(client(2), &req);
    let Some(Command::OpenRelay(RelayRequest { id, .. })) = h.server.poll_command() else {
        panic!("expected OpenRelay");
    };
    h.server.poll_command();
    h.server
        .handle_relay_opened(h.now, id, Family::V4, Err(OpenError::NoPorts));
    h.server
        .handle_relay_opened(h.now, id, Family::V6, Ok(addr("[2001:db8::10]:50001")));
    assert_eq!(
        code(&h.answers(client(2)).pop().unwrap()),
        ErrorCode::INSUFFICIENT_CAPACITY
    );
    assert_eq!(h.server.poll_command(), Some(Command::CloseRelay { id }));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn address_families_the_relay_lacks_get_440() {
    // IPv4 only: an IPv6 request is refused; a dual request gets IPv4 and ADDRESS-ERROR-CODE.
    let mut h = H::new(config());
    let bytes = allocate_with(&mut h, client(1), "alice", ipv6);
    assert_eq!(code(&bytes), ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
    let bytes = allocate_with(&mut h, client(2), "alice", and_ipv6);
    assert_eq!(relayed_addresses(&bytes), [addr("198.51.100.10:50000")]);
    assert_eq!(
        address_error(&bytes),
        Some(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED)
    );
    // IPv6 only: the default (IPv4) request is refused, an IPv6 one served.
    let mut c = config();
    c.relay_ips = vec!["2001:db8::10".parse().unwrap()];
    let mut h = H::new(c);
    let bytes = allocate_with(&mut h, client(1), "alice", |_| {});
    assert_eq!(code(&bytes), ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
    let bytes = allocate_with(&mut h, client(2), "alice", ipv6);
    assert_eq!(relayed_addresses(&bytes), [addr("[2001:db8::10]:50000")]);
}

#[test]
fn ipv6_relay_addresses_hairpin_in_process() {
    let mut h = H::new(dual_stack_config());
    let six = |w: &mut MessageWriteVec| {
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    };
    let a = relayed_addresses(&allocate_with(&mut h, client(1), "alice", six))[0];
    let b = relayed_addresses(&allocate_with(&mut h, client(2), "bob", six))[0];
    let alice = Cred::day("alice");
    assert_eq!(h.ask(client(1), &alice, permission(&b.to_string())), OK);
    let bob = Cred::day("bob");
    assert_eq!(h.ask(client(2), &bob, permission(&a.to_string())), OK);
    match h
        .server
        .handle_client(h.now, client(1), &send_indication(&b.to_string(), b"hi"))
    {
        ClientAction::Hairpin { to, from, payload } => {
            assert_eq!(to, alloc_id(&h, client(2)));
            assert_eq!((from, payload), (a, &b"hi"[..]));
        }
        other => panic!("{other:?}"),
    }
}
