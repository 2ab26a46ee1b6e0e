//! Bandwidth caps: per allocation, per user (summed over the user's allocations) and in total,
//! both ways, the hairpin at both ends; over a cap a datagram is dropped and counted, and the
//! buckets fill again with time.

use super::*;
use crate::proto::BandwidthCaps;

/// The test config with these caps (bytes per second) and bursts of a second.
fn capped(allocation: u64, user: u64, total: u64) -> ServerConfig {
    let mut c = config();
    c.bandwidth = BandwidthCaps {
        allocation,
        user,
        total,
        burst: Duration::from_secs(1),
    };
    c
}

/// Allocates for `user` from `tuple` with a channel (0x4000) to `peer`.
fn with_channel(h: &mut H, tuple: FiveTuple, user: &str, peer: &str) -> AllocId {
    h.allocate(tuple, user);
    assert_eq!(
        h.ask(tuple, &Cred::day(user), channel_bind(0x4000, peer)),
        OK
    );
    alloc_id(h, tuple)
}

/// Sends `n` ChannelData of 1000 bytes from `tuple`; how many the core relayed.
fn blast(h: &mut H, tuple: FiveTuple, n: usize) -> usize {
    let data = channel_data(0x4000, &[7; 1000]);
    (0..n)
        .filter(|_| match h.handle(tuple, &data) {
            ClientAction::Relay { payload, .. }
            | ClientAction::Hairpin { payload, .. }
            | ClientAction::Local { payload, .. } => {
                assert_eq!(payload.len(), 1000);
                true
            }
            ClientAction::Done => false,
        })
        .count()
}

/// How many of `n` 1000-byte datagrams from `peer` allocation `id` lets through to its client.
fn blast_back(h: &mut H, id: AllocId, peer: &str, n: usize) -> usize {
    (0..n)
        .filter(|_| from_peer(h, id, peer, &[9; 1000]).is_some())
        .count()
}

fn later(h: &mut H, ms: u64) {
    h.now = h.now + Duration::from_millis(ms);
}

#[test]
fn over_the_allocation_cap_datagrams_are_dropped_and_counted_until_it_refills() {
    let mut h = H::new(capped(100_000, 0, 0));
    let id = with_channel(&mut h, client(1), "alice", PUBLIC_PEER);
    // A full bucket: a second's worth, 100 datagrams of 1000 bytes; the rest dropped.
    assert_eq!(blast(&mut h, client(1), 150), 100);
    // The peer's answers share the bucket: empty.
    assert_eq!(blast_back(&mut h, id, PUBLIC_PEER, 5), 0);
    let usage = h.server.allocation_usage(id).unwrap();
    assert_eq!((usage.packets_to_peer, usage.bytes_to_peer), (100, 100_000));
    assert_eq!(usage.packets_from_peer, 0);
    assert_eq!((usage.packets_dropped, usage.bytes_dropped), (55, 55_000));
    // 100 ms later, 10 more, whichever way.
    later(&mut h, 100);
    assert_eq!(blast_back(&mut h, id, PUBLIC_PEER, 4), 4);
    assert_eq!(blast(&mut h, client(1), 20), 6);
    // The close reports the drops with the rest.
    h.events();
    let alice = Cred::day("alice");
    assert_eq!(h.ask(client(1), &alice, refresh(0)), OK);
    let closed = h.events().into_iter().find_map(|e| match e {
        Event::AllocationClosed { usage, .. } => Some(usage),
        _ => None,
    });
    assert_eq!(
        closed,
        Some(Usage {
            packets_to_peer: 106,
            bytes_to_peer: 106_000,
            packets_from_peer: 4,
            bytes_from_peer: 4_000,
            packets_dropped: 69,
            bytes_dropped: 69_000,
        })
    );
}

#[test]
fn the_burst_is_the_bucket_and_an_idle_bucket_holds_no_more() {
    let mut c = capped(100_000, 0, 0);
    c.bandwidth.burst = Duration::from_secs(3);
    let mut h = H::new(c);
    with_channel(&mut h, client(1), "alice", PUBLIC_PEER);
    assert_eq!(
        blast(&mut h, client(1), 500),
        300,
        "three seconds' worth at once"
    );
    later(&mut h, 1000);
    assert_eq!(blast(&mut h, client(1), 500), 100, "then the rate");
    later(&mut h, 60_000);
    assert_eq!(
        blast(&mut h, client(1), 500),
        300,
        "idle for a minute: full, no more"
    );
    // A burst below the largest datagram is raised to it: 64 KiB.
    let mut c = capped(1_000, 0, 0);
    c.bandwidth.burst = Duration::from_millis(1);
    let mut h = H::new(c);
    with_channel(&mut h, client(1), "alice", PUBLIC_PEER);
    assert_eq!(blast(&mut h, client(1), 100), 65);
}

#[test]
fn the_user_cap_sums_their_allocations_and_spares_other_users() {
    let mut h = H::new(capped(0, 100_000, 0));
    let a1 = with_channel(&mut h, client(1), "alice", PUBLIC_PEER);
    let a2 = with_channel(&mut h, client(2), "alice", PUBLIC_PEER);
    with_channel(&mut h, client(3), "bob", PUBLIC_PEER);
    assert_eq!(blast(&mut h, client(1), 60), 60);
    assert_eq!(blast(&mut h, client(2), 60), 40);
    assert_eq!(blast_back(&mut h, a1, PUBLIC_PEER, 5), 0);
    assert_eq!(blast(&mut h, client(3), 100), 100, "bob has his own");
    assert_eq!(h.server.allocation_usage(a1).unwrap().packets_dropped, 5);
    assert_eq!(h.server.allocation_usage(a2).unwrap().packets_dropped, 20);
    // Alice's bucket outlives one allocation: closing one gives the other nothing back.
    assert_eq!(h.ask(client(1), &Cred::day("alice"), refresh(0)), OK);
    assert_eq!(blast(&mut h, client(2), 10), 0);
    later(&mut h, 500);
    assert_eq!(blast(&mut h, client(2), 100), 50);
}

#[test]
fn the_total_cap_holds_across_users_and_counts_the_hairpin_at_both_ends() {
    let mut h = H::new(capped(0, 0, 100_000));
    with_channel(&mut h, client(1), "alice", PUBLIC_PEER);
    with_channel(&mut h, client(2), "bob", PUBLIC_PEER);
    assert_eq!(blast(&mut h, client(1), 60), 60);
    assert_eq!(blast(&mut h, client(2), 60), 40);
    // A second later: carol sends to dave, both on this relay. Each datagram leaves one
    // allocation and enters the other: 2000 bytes of the total each, 50 of them.
    later(&mut h, 1000);
    let carol_relay = h.allocate(client(3), "carol");
    let dave_relay = h.allocate(client(4), "dave");
    let (carol, dave) = (alloc_id(&h, client(3)), alloc_id(&h, client(4)));
    let bind = channel_bind(0x4000, &dave_relay.to_string());
    assert_eq!(h.ask(client(3), &Cred::day("carol"), bind), OK);
    let perm = permission(&carol_relay.to_string());
    assert_eq!(h.ask(client(4), &Cred::day("dave"), perm), OK);
    let data = channel_data(0x4000, &[5; 1000]);
    let mut delivered = 0;
    for _ in 0..100 {
        if let ClientAction::Hairpin { to, from, payload } = h.handle(client(3), &data) {
            let payload = payload.to_vec();
            delivered += usize::from(from_peer(&mut h, to, &from.to_string(), &payload).is_some());
        }
    }
    assert_eq!(delivered, 50);
    // The other 50 were dropped as they left carol's allocation.
    let sent = h.server.allocation_usage(carol).unwrap();
    assert_eq!((sent.packets_to_peer, sent.packets_dropped), (50, 50));
    let received = h.server.allocation_usage(dave).unwrap();
    assert_eq!(
        (received.packets_from_peer, received.packets_dropped),
        (50, 0)
    );
}

#[test]
fn without_caps_everything_is_relayed() {
    let mut h = H::new(config());
    let id = with_channel(&mut h, client(1), "alice", PUBLIC_PEER);
    assert_eq!(blast(&mut h, client(1), 20_000), 20_000);
    assert_eq!(blast_back(&mut h, id, PUBLIC_PEER, 20_000), 20_000);
    assert_eq!(h.server.allocation_usage(id).unwrap().packets_dropped, 0);
}
