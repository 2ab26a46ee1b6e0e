//! The ChannelData path, both ways, allocates nothing on the heap: counted with a global
//! allocator while the core relays.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use stun_types::attribute::{Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, Message, MessageWrite, MessageWriteExt, MessageWriteVec,
};
use switchboard_turn::credentials::{long_term_key, mint};
use switchboard_turn::proto::{
    BandwidthCaps, ClientAction, Command, Family, FiveTuple, RelayRequest, Server, ServerConfig,
    Time, PEER_HEADROOM, PEER_TAILROOM,
};
use turn_types::attribute::{ChannelNumber, RequestedTransport, XorPeerAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn channel_data_both_ways_allocates_nothing() {
    let now = Time::from_unix_secs(1_700_000_000);
    let mut config = ServerConfig::new("r", b"s".to_vec(), "198.51.100.10".parse().unwrap());
    config.nonce_key = [1; 32];
    // Every bandwidth cap metered, as the daemon's defaults meter two.
    config.bandwidth = BandwidthCaps {
        allocation: 5_000_000,
        user: 25_000_000,
        total: 100_000_000,
        burst: std::time::Duration::from_secs(1),
    };
    let mut server = Server::new(config);
    let tuple = FiveTuple::udp(
        "192.0.2.1:1000".parse().unwrap(),
        "198.51.100.10:3478".parse().unwrap(),
    );
    let cred = mint(b"s", "alice", 1_700_003_600);
    let key = long_term_key(&cred.username, "r", &cred.password);
    let authed = |server: &mut Server, mut w: MessageWriteVec| {
        while server.poll_transmit().is_some() {}
        let mut probe = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        probe.add_attribute(&RequestedTransport::new(17)).unwrap();
        let probe = probe.finish();
        let _ = server.handle_client(now, tuple, &probe);
        let challenge = server.poll_transmit().unwrap().data;
        let msg = Message::from_bytes(&challenge).unwrap();
        let nonce = msg.attribute::<Nonce>().unwrap().nonce().to_owned();
        w.add_attribute(&Username::new(&cred.username).unwrap())
            .unwrap();
        w.add_attribute(&Realm::new("r").unwrap()).unwrap();
        w.add_attribute(&Nonce::new(&nonce).unwrap()).unwrap();
        w.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1)
            .unwrap();
        let _ = server.handle_client(now, tuple, &w.finish());
    };
    let mut w = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    authed(&mut server, w);
    let Some(Command::OpenRelay(RelayRequest { id, .. })) = server.poll_command() else {
        panic!("no OpenRelay");
    };
    server.handle_relay_opened(
        now,
        id,
        Family::V4,
        Ok("198.51.100.10:50000".parse().unwrap()),
    );
    let peer: SocketAddr = "8.8.4.4:4000".parse().unwrap();
    let mut w = Message::builder_request(CHANNEL_BIND, MessageWriteVec::new());
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
    w.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
    authed(&mut server, w);
    while server.poll_transmit().is_some() {}
    while server.poll_event().is_some() {}

    // The counter sees allocations on this thread.
    let sanity = allocations();
    let v = std::hint::black_box(Vec::<u8>::with_capacity(8));
    assert_eq!(allocations(), sanity + 1);
    drop(v);

    let mut out = vec![0x40, 0x00, 0x00, 0x64];
    out.extend_from_slice(&[7u8; 100]);
    let mut inbound = vec![0u8; PEER_HEADROOM + 100 + PEER_TAILROOM];
    let before = allocations();
    for _ in 0..1000 {
        match server.handle_client(now, tuple, &out) {
            ClientAction::Relay {
                peer: p, payload, ..
            } => {
                assert_eq!(p, peer);
                assert_eq!(payload.len(), 100);
            }
            other => panic!("{other:?}"),
        }
        let range = PEER_HEADROOM..PEER_HEADROOM + 100;
        let action = server
            .handle_peer_data(now, id, peer, &mut inbound, range)
            .expect("relayed to the client");
        assert_eq!(
            &inbound[action.frame.start..action.frame.start + 4],
            &[0x40, 0, 0, 100]
        );
    }
    assert_eq!(
        allocations() - before,
        0,
        "heap allocations on the ChannelData path"
    );
    let usage = server.allocation_usage(id).unwrap();
    assert_eq!(usage.packets_to_peer, 1000);
    assert_eq!(usage.bytes_from_peer, 100_000);
}
