//! The data paths (RFC 8656 §9–12): permissions and the peer policy, Send and Data
//! indications, channels and ChannelData, the in-process hairpin, and streams (TCP, TLS).

use super::*;

// ---- Permissions and peer policy ---------------------------------------------------------

#[test]
fn peer_policy_matrix_is_403_on_permission_channel_and_send() {
    let (mut h, id, alice) = with_alice(config());
    let refused = [
        "127.0.0.1:9",
        "0.0.0.0:9",
        "10.0.0.1:9",
        "169.254.169.254:80",
        "[::1]:9",
        "[::ffff:127.0.0.1]:9",
        "[64:ff9b::7f00:1]:9",
        "[2002:7f00:1::]:9",
        "192.168.1.1:9",
        "100.64.0.1:9",
        "224.0.0.1:9",
        "255.255.255.255:9",
        "[fe80::1]:9",
        "[fd00::1]:9",
    ];
    for peer in refused {
        let bytes = h.authed(client(1), &alice, permission(peer));
        assert_eq!(
            code(&bytes),
            ErrorCode::FORBIDDEN,
            "CreatePermission {peer}"
        );
        let bytes = h.authed(client(1), &alice, channel_bind(0x4000, peer));
        assert_eq!(code(&bytes), ErrorCode::FORBIDDEN, "ChannelBind {peer}");
        let send = send_indication(peer, b"x");
        let action = h.handle(client(1), &send);
        assert_eq!(action, ClientAction::Done, "Send {peer}");
    }
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, Event::PeerRefused(Refusal::Reserved("link-local")))));
    // Nothing was installed: data from those peers is dropped.
    assert!(from_peer(&mut h, id, "127.0.0.1:9", b"x").is_none());
    assert_eq!(h.server.get(id).unwrap().permissions.len(), 0);
}

#[test]
fn create_permission_is_all_or_nothing_and_checks_family() {
    let (mut h, id, alice) = with_alice(config());
    // One good and one refused peer: 403 and neither installed.
    let mut w = permission(PUBLIC_PEER);
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(addr("10.1.1.1:1"), txid))
        .unwrap();
    assert_eq!(h.ask(client(1), &alice, w), ErrorCode::FORBIDDEN);
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"x").is_none());
    // A public IPv6 peer on an IPv4 allocation: 443.
    let bytes = h.authed(client(1), &alice, permission("[2606:4700::1111]:1"));
    assert_eq!(code(&bytes), ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
    // No peer at all: 400.
    assert_eq!(
        h.ask(client(1), &alice, request(CREATE_PERMISSION)),
        ErrorCode::BAD_REQUEST
    );
    // IPv4-mapped form of a public address counts as that address.
    let bytes = h.authed(client(1), &alice, permission("[::ffff:8.8.4.4]:1"));
    assert_eq!(code(&bytes), OK);
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"x").is_some());
}

#[test]
fn allow_peers_opens_a_range_and_deny_peers_wins() {
    let mut c = config();
    c.policy = policy::PeerPolicy::new(
        vec!["127.0.0.0/8".parse().unwrap()],
        vec!["8.8.4.0/24".parse().unwrap()],
    );
    let (mut h, _, alice) = with_alice(c);
    let ok = h.authed(client(1), &alice, permission("127.0.0.1:3480"));
    assert_eq!(code(&ok), OK);
    let denied = h.authed(client(1), &alice, permission(PUBLIC_PEER));
    assert_eq!(code(&denied), ErrorCode::FORBIDDEN);
    assert!(h.saw(Event::PeerRefused(Refusal::Denied)));
}

#[test]
fn permissions_expire_after_300_seconds() {
    let (mut h, id, alice) = with_alice(config());
    assert_eq!(h.ask(client(1), &alice, permission(PUBLIC_PEER)), OK);
    h.advance(299);
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"x").is_some());
    let send = send_indication(PUBLIC_PEER, b"y");
    assert!(matches!(
        h.handle(client(1), &send),
        ClientAction::Relay { .. }
    ));
    h.advance(1);
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"x").is_none());
    assert_eq!(h.handle(client(1), &send), ClientAction::Done);
    // Any port of the permitted IP is fine; other IPs are not.
    assert_eq!(h.ask(client(1), &alice, permission(PUBLIC_PEER)), OK);
    assert!(from_peer(&mut h, id, "8.8.4.4:9999", b"x").is_some());
    assert!(from_peer(&mut h, id, "8.8.4.5:4000", b"x").is_none());
}

#[test]
fn too_many_permissions_is_508() {
    let mut c = config();
    c.max_permissions = 2;
    let (mut h, _, alice) = with_alice(c);
    for (i, peer) in ["8.8.4.1:1", "8.8.4.2:1", "8.8.4.3:1"]
        .into_iter()
        .enumerate()
    {
        let want = if i < 2 {
            OK
        } else {
            ErrorCode::INSUFFICIENT_CAPACITY
        };
        assert_eq!(h.ask(client(1), &alice, permission(peer)), want);
    }
}

// ---- Send / Data indications ------------------------------------------------------------

#[test]
fn send_and_data_indications_round_trip() {
    let (mut h, id, alice) = with_alice(config());
    // Without a permission, Send is dropped silently.
    let send = send_indication(PUBLIC_PEER, b"hello peer");
    assert_eq!(h.handle(client(1), &send), ClientAction::Done);
    assert!(h.answers(client(1)).is_empty());
    assert_eq!(h.ask(client(1), &alice, permission(PUBLIC_PEER)), OK);
    match h.handle(client(1), &send) {
        ClientAction::Relay {
            alloc,
            peer,
            payload,
        } => {
            assert_eq!(alloc, id);
            assert_eq!(peer, addr(PUBLIC_PEER));
            assert_eq!(payload, b"hello peer");
        }
        other => panic!("{other:?}"),
    }
    // A Send from a 5-tuple without allocation, or without DATA: dropped.
    assert_eq!(h.handle(client(2), &send), ClientAction::Done);
    let mut w = Message::builder_indication(SEND, MessageWriteVec::new());
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(addr(PUBLIC_PEER), txid))
        .unwrap();
    assert_eq!(h.handle(client(1), &w.finish()), ClientAction::Done);
    // Peer data comes back as a Data indication (no channel bound), odd length padded.
    let (tuple, frame) = from_peer(&mut h, id, PUBLIC_PEER, b"hi back").unwrap();
    assert_eq!(tuple, client(1));
    assert_eq!(frame.len() % 4, 0);
    let msg = Message::from_bytes(&frame).expect("a valid STUN message");
    assert_eq!(msg.class(), MessageClass::Indication);
    assert_eq!(msg.method(), turn_types::message::DATA);
    assert_eq!(
        msg.attribute::<XorPeerAddress>()
            .unwrap()
            .addr(msg.transaction_id()),
        addr(PUBLIC_PEER)
    );
    assert_eq!(msg.attribute::<Data>().unwrap().data(), b"hi back");
}

// ---- Channels ----------------------------------------------------------------------------

#[test]
fn channel_bind_rules() {
    let (mut h, _, alice) = with_alice(config());
    for bad in [0x3FFF, 0x8000, 0xFFFF, 0x0001] {
        assert_eq!(
            h.ask(client(1), &alice, channel_bind(bad, PUBLIC_PEER)),
            ErrorCode::BAD_REQUEST,
            "{bad:#x}"
        );
    }
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER)),
        OK
    );
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER)),
        OK,
        "refresh"
    );
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, "8.8.4.4:4001")),
        ErrorCode::BAD_REQUEST
    );
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4001, PUBLIC_PEER)),
        ErrorCode::BAD_REQUEST
    );
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4FFF, "8.8.4.4:4001")),
        OK
    );
    // Missing attributes.
    assert_eq!(
        h.ask(client(1), &alice, with_peer(CHANNEL_BIND, PUBLIC_PEER)),
        ErrorCode::BAD_REQUEST
    );
    let mut w = request(CHANNEL_BIND);
    w.add_attribute(&ChannelNumber::new(0x4002)).unwrap();
    assert_eq!(h.ask(client(1), &alice, w), ErrorCode::BAD_REQUEST);
    // The box's own address on a port that is not a relay port (its HTTP port, say): 403;
    // its IP may be permitted (relay-to-relay needs that), but nothing from such a port passes.
    assert_eq!(h.ask(client(1), &alice, permission("198.51.100.10:1")), OK);
    let id = alloc_id(&h, client(1));
    assert!(from_peer(&mut h, id, "198.51.100.10:8080", b"x").is_none());
    assert!(from_peer(&mut h, id, "198.51.100.10:50999", b"x").is_some());
    assert_eq!(
        h.ask(
            client(1),
            &alice,
            channel_bind(0x4003, "198.51.100.10:8080")
        ),
        ErrorCode::FORBIDDEN
    );
}

#[test]
fn channel_data_both_ways() {
    let (mut h, id, alice) = with_alice(config());
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER)),
        OK
    );
    // ChannelBind installs the permission too.
    let data = channel_data(0x4000, b"media");
    match h.handle(client(1), &data) {
        ClientAction::Relay { peer, payload, .. } => {
            assert_eq!(peer, addr(PUBLIC_PEER));
            assert_eq!(payload, b"media");
        }
        other => panic!("{other:?}"),
    }
    // Padding after the length (as over TCP) is ignored; a short frame is dropped.
    let mut padded = channel_data(0x4000, b"abc");
    padded.push(0);
    assert!(matches!(
        h.handle(client(1), &padded),
        ClientAction::Relay {
            payload: b"abc",
            ..
        }
    ));
    let mut short = channel_data(0x4000, b"abcdef");
    short.truncate(7);
    assert_eq!(h.handle(client(1), &short), ClientAction::Done);
    // An unbound channel, or another client: dropped.
    assert_eq!(
        h.handle(client(1), &channel_data(0x4001, b"x")),
        ClientAction::Done
    );
    assert_eq!(h.handle(client(2), &data), ClientAction::Done);
    // From the peer: ChannelData with the bound number.
    let (tuple, frame) = from_peer(&mut h, id, PUBLIC_PEER, b"reply").unwrap();
    assert_eq!(tuple, client(1));
    assert_eq!(frame, channel_data(0x4000, b"reply"));
    // After 600 s without refresh the channel is gone (permission refreshed meanwhile).
    h.advance(290);
    assert_eq!(h.ask(client(1), &alice, permission(PUBLIC_PEER)), OK);
    h.advance(290);
    assert_eq!(h.ask(client(1), &alice, permission(PUBLIC_PEER)), OK);
    assert_eq!(h.ask(client(1), &alice, refresh(3600)), OK);
    h.advance(20);
    assert_eq!(h.handle(client(1), &data), ClientAction::Done);
    let (_, frame) = from_peer(&mut h, id, PUBLIC_PEER, b"late").unwrap();
    assert!(
        Message::from_bytes(&frame).is_ok(),
        "a Data indication once unbound"
    );
    // Within the cooldown the number cannot go to another peer.
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, "8.8.4.4:4001")),
        ErrorCode::BAD_REQUEST
    );
}

// ---- Hairpin -----------------------------------------------------------------------------

#[test]
fn relay_to_relay_is_delivered_inside_the_process_even_behind_nat() {
    let mut c = config();
    c.external_ips = vec!["192.0.2.200".parse().unwrap()];
    let mut h = H::new(c);
    let a_relay = h.allocate(client(1), "alice");
    let b_relay = h.allocate(client(2), "bob");
    assert_eq!(a_relay.ip().to_string(), "192.0.2.200");
    let (a, b) = (alloc_id(&h, client(1)), alloc_id(&h, client(2)));
    let alice = Cred::day("alice");
    let bob = Cred::day("bob");
    // Each permits the other's advertised (public) relayed address: not refused as the
    // documentation range it is, because it is ours.
    let a_peer = a_relay.to_string();
    let b_peer = b_relay.to_string();
    assert_eq!(h.ask(client(1), &alice, channel_bind(0x4000, &b_peer)), OK);
    assert_eq!(h.ask(client(2), &bob, permission(&a_peer)), OK);
    let data = channel_data(0x4000, b"through the hairpin");
    let (to, from, payload) = match h.handle(client(1), &data) {
        ClientAction::Hairpin { to, from, payload } => (to, from, payload.to_vec()),
        other => panic!("{other:?}"),
    };
    assert_eq!(to, b);
    assert_eq!(from, a_relay);
    let (tuple, frame) = from_peer(&mut h, to, &from.to_string(), &payload).unwrap();
    assert_eq!(tuple, client(2));
    let msg = Message::from_bytes(&frame).unwrap();
    assert_eq!(
        msg.attribute::<Data>().unwrap().data(),
        b"through the hairpin"
    );
    assert_eq!(
        msg.attribute::<XorPeerAddress>()
            .unwrap()
            .addr(msg.transaction_id()),
        a_relay
    );
    assert_eq!(h.server.allocation_usage(a).unwrap().packets_to_peer, 1);
    assert_eq!(h.server.allocation_usage(b).unwrap().packets_from_peer, 1);
    // A relay port with no allocation behind it: dropped.
    let ghost = SocketAddr::new(a_relay.ip(), 50999).to_string();
    assert_eq!(h.ask(client(1), &alice, channel_bind(0x4001, &ghost)), OK);
    let data = channel_data(0x4001, b"nobody");
    assert_eq!(h.handle(client(1), &data), ClientAction::Done);
}

#[test]
fn closed_allocation_ids_do_not_reach_their_successor() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let old = alloc_id(&h, client(1));
    h.server.close_allocation(h.now, old);
    h.allocate(client(2), "bob");
    let new = alloc_id(&h, client(2));
    assert_eq!(old.index(), new.index(), "slot reused");
    assert_ne!(old, new);
    assert!(h.server.allocation_tuple(old).is_none());
    assert_eq!(AllocId::from_u64(new.to_u64()), new);
    assert!(from_peer(&mut h, old, PUBLIC_PEER, b"x").is_none());
}

#[test]
fn other_addresses_of_the_host_are_never_peers_unless_allowed() {
    // A second public listener address of this box: permissible as an IP (the policy has
    // nothing against it), but no port of it is reachable, either way.
    let mut c = config();
    c.host_ips = vec!["8.8.8.8".parse().unwrap()];
    let (mut h, id, alice) = with_alice(c.clone());
    assert_eq!(h.ask(client(1), &alice, permission("8.8.8.8:1")), OK);
    assert_unreachable(&mut h, id, &alice, 0x4000, "8.8.8.8:3478");
    // Named in allow_peers, it is an ordinary peer.
    c.policy = policy::PeerPolicy::new(vec!["8.8.8.8/32".parse().unwrap()], vec![]);
    let (mut h, _, _) = with_alice(c);
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, "8.8.8.8:3478")),
        OK
    );
}

/// `peer` is out of reach of alice's allocation `id` (from `client(1)`), though she may hold a
/// permission for its IP: a ChannelBind of `number` to it is 403, a Send indication to it is
/// dropped, and nothing it sends is relayed.
#[track_caller]
fn assert_unreachable(h: &mut H, id: AllocId, alice: &Cred, number: u16, peer: &str) {
    assert_eq!(
        h.ask(client(1), alice, channel_bind(number, peer)),
        ErrorCode::FORBIDDEN,
        "{peer}"
    );
    let send = send_indication(peer, b"x");
    assert_eq!(h.handle(client(1), &send), ClientAction::Done, "{peer}");
    assert!(from_peer(h, id, peer, b"x").is_none(), "{peer}");
}

/// The README's example: `relay_ip 10.0.0.5`, `allow_peers 10.0.0.0/8`, and a database on the
/// relay's own 10.0.0.5:5432 (and on another address of the box, 10.0.0.6).
fn lan_relay(allow: &[&str]) -> (H, AllocId, Cred) {
    let mut c = ServerConfig::new(REALM, SECRET, "10.0.0.5".parse().unwrap());
    c.nonce_key = [9; 32];
    c.relay_ports = 50000..=50999;
    c.host_ips = vec!["10.0.0.6".parse().unwrap(), "127.0.0.1".parse().unwrap()];
    c.policy = policy::PeerPolicy::new(allow.iter().map(|s| s.parse().unwrap()).collect(), vec![]);
    with_alice(c)
}

#[test]
fn a_range_containing_the_box_own_addresses_does_not_open_their_services() {
    let (mut h, id, alice) = lan_relay(&["10.0.0.0/8", "0.0.0.0/0"]);
    // The LAN is open...
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, "10.9.9.9:5432")),
        OK
    );
    // ...but not the box itself, by any of its addresses, loopback or unspecified included.
    for own in [
        "10.0.0.5:5432",
        "10.0.0.6:5432",
        "127.0.0.1:5432",
        "0.0.0.0:5432",
    ] {
        assert_eq!(h.ask(client(1), &alice, permission(own)), OK, "{own}");
        assert_unreachable(&mut h, id, &alice, 0x4001, own);
    }
    assert!(h.saw(Event::PeerRefused(Refusal::Reserved("own-address"))));
    // Its relay ports stay reachable (relay to relay; nobody holds this one).
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4002, "10.0.0.5:50900")),
        OK
    );
}

#[test]
fn an_entry_naming_the_own_address_alone_opens_it_on_its_ports() {
    let (mut h, id, alice) = lan_relay(&["10.0.0.5:5000-5100", "10.0.0.6/32", "127.0.0.0/8"]);
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, "10.0.0.5:5000")),
        OK
    );
    assert!(matches!(
        h.handle(client(1), &send_indication("10.0.0.5:5100", b"x")),
        ClientAction::Relay { .. }
    ));
    assert!(from_peer(&mut h, id, "10.0.0.5:5000", b"x").is_some());
    // Outside the range: refused.
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4001, "10.0.0.5:5432")),
        ErrorCode::FORBIDDEN
    );
    assert!(from_peer(&mut h, id, "10.0.0.5:5432", b"x").is_none());
    // Named without ports, and the loopback range: every port.
    for (number, open) in [(0x4002, "10.0.0.6:5432"), (0x4003, "127.0.0.1:5432")] {
        assert_eq!(
            h.ask(client(1), &alice, channel_bind(number, open)),
            OK,
            "{open}"
        );
        assert!(from_peer(&mut h, id, open, b"x").is_some(), "{open}");
    }
}

// ---- Streams (TCP, TLS) ---------------------------------------------------------------------

#[test]
fn stream_channel_data_is_padded_and_the_connection_owns_the_allocation() {
    let mut h = H::new(config());
    h.allocate(tcp_client(1), "alice");
    let id = alloc_id(&h, tcp_client(1));
    let alice = Cred::day("alice");
    assert_eq!(
        h.ask(tcp_client(1), &alice, channel_bind(0x4000, PUBLIC_PEER)),
        OK
    );
    // Five payload bytes: padded with three zeros to eight after the header.
    let (_, frame) = from_peer(&mut h, id, PUBLIC_PEER, b"hello").unwrap();
    let mut want = channel_data(0x4000, b"hello");
    want.extend_from_slice(&[0, 0, 0]);
    assert_eq!(frame, want);
    // A padded frame from the client relays just the payload.
    let mut padded = channel_data(0x4000, b"abcde");
    padded.extend_from_slice(&[0, 0, 0]);
    assert!(matches!(
        h.handle(tcp_client(1), &padded),
        ClientAction::Relay {
            payload: b"abcde",
            ..
        }
    ));
    // Over UDP the same reply is not padded.
    h.allocate(client(1), "alice");
    let udp_id = alloc_id(&h, client(1));
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER)),
        OK
    );
    let (_, frame) = from_peer(&mut h, udp_id, PUBLIC_PEER, b"hello").unwrap();
    assert_eq!(frame, channel_data(0x4000, b"hello"));
    // The connection closes: its allocation ends, and only its.
    h.events();
    h.server.close_client(h.now, &tcp_client(1));
    h.open_relays();
    assert_eq!(h.closed, [id]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::AllocationClosed { reason: CloseReason::Closed, tuple, .. } if *tuple == tcp_client(1)
    )));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn data_indications_that_would_overflow_their_length_are_dropped() {
    let mut h = H::new(dual_stack_config());
    let bytes = allocate_with(&mut h, tcp_client(1), "alice", ipv6);
    assert_eq!(code(&bytes), OK);
    let id = alloc_id(&h, tcp_client(1));
    let alice = Cred::day("alice");
    assert_eq!(h.ask(tcp_client(1), &alice, permission(PUBLIC_PEER6)), OK);
    // 28 bytes of XOR-PEER-ADDRESS (IPv6) and DATA header, and DATA padded to four: 65,504
    // payload bytes fit; 65,505 would wrap the 16-bit length and desynchronise the stream.
    let (_, frame) = from_peer(&mut h, id, PUBLIC_PEER6, &vec![7; 65_504]).unwrap();
    let msg = Message::from_bytes(&frame).unwrap();
    assert_eq!(msg.attribute::<Data>().unwrap().data().len(), 65_504);
    assert!(from_peer(&mut h, id, PUBLIC_PEER6, &vec![7; 65_505]).is_none());
    assert_eq!(h.server.allocation_usage(id).unwrap().packets_from_peer, 1);
}

/// Runs `payload` from the local peer `from` to the relayed address `to`, as the SFU beside
/// the relay hands it over; returns the frame for the client.
fn from_local(
    h: &mut H,
    to: SocketAddr,
    from: &str,
    payload: &[u8],
) -> Option<(FiveTuple, Vec<u8>)> {
    let (mut buf, range) = peer_buffer(payload);
    h.server
        .handle_local_data(h.now, to, addr(from), &mut buf, range)
        .map(|a| (a.tuple, buf[a.frame].to_vec()))
}

/// The SFU's address is a local peer: permitted though the default policy refuses the box's
/// other addresses (loopback here), what is sent to it is handed over from the allocation's
/// relayed address, never sent, and what it sends back reaches the allocation's client.
#[test]
fn the_sfu_beside_the_relay_is_a_local_peer() {
    let mut c = ServerConfig::new(REALM, SECRET, "10.0.0.5".parse().unwrap());
    c.nonce_key = [9; 32];
    c.relay_ports = 50000..=50999;
    c.host_ips = vec!["127.0.0.1".parse().unwrap()];
    c.local_peers = vec![addr("127.0.0.1:3480")];
    let (mut h, id, alice) = with_alice(c);
    assert_eq!(
        h.ask(client(1), &alice, channel_bind(0x4000, "127.0.0.1:3480")),
        OK
    );
    // Not the address's other ports, though the permission (by IP) covers them: no channel,
    // a Send dropped, and nothing from them on the relay socket.
    assert_unreachable(&mut h, id, &alice, 0x4001, "127.0.0.1:3481");
    let relayed = match h.handle(client(1), &channel_data(0x4000, b"stun")) {
        ClientAction::Local { from, to, payload } => {
            assert_eq!(to, addr("127.0.0.1:3480"));
            assert_eq!(payload, b"stun");
            from
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        relayed.ip(),
        "10.0.0.5".parse::<std::net::IpAddr>().unwrap()
    );
    assert!(h.server.config().relay_ports.contains(&relayed.port()));
    let (tuple, frame) = from_local(&mut h, relayed, "127.0.0.1:3480", b"back").unwrap();
    assert_eq!(tuple, client(1));
    assert_eq!(frame, channel_data(0x4000, b"back"));
    // Only from a local peer, and only to a relayed address an allocation holds.
    assert!(from_local(&mut h, relayed, "127.0.0.1:3481", b"x").is_none());
    let unheld = SocketAddr::new(relayed.ip(), relayed.port() ^ 1);
    assert!(from_local(&mut h, unheld, "127.0.0.1:3480", b"x").is_none());
}
