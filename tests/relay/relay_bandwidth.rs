//! The bandwidth caps through the real daemon: a client sends far more than its allocation's
//! cap over real UDP sockets on loopback; the peer gets the cap's bucket and rate, and the rest
//! is dropped and counted, in `/metrics` and in the allocation's close line.

use crate::common;

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use common::{code, field, wait_until, Daemon};
use stun_types::message::MessageWriteExt as _;
use turn_types::attribute::{ChannelNumber, Lifetime};
use turn_types::message::{CHANNEL_BIND, REFRESH};

use crate::relay_errors::{with_peer, Client};

/// The cap: 20 kB/s per allocation, whose bucket is then the 64 KiB floor (a second's worth
/// would be less than the largest datagram).
const CAP: u64 = 20_000;
const BUCKET: u64 = 65_536;
const SENT: u64 = 400;
const LEN: usize = 500;

#[test]
fn an_allocation_over_its_cap_delivers_the_cap_and_counts_every_drop() {
    let d = Daemon::start(&format!(
        "allow_peers = [\"127.0.0.1/32\"]\nallocation_bandwidth = {CAP}\n"
    ));
    let c = Client::new(&d, "alice");
    assert_eq!(code(&c.allocate()), 200);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let peer_addr = peer.local_addr().unwrap().to_string();
    let bind = c.authed(|| {
        let mut w = with_peer(CHANNEL_BIND, &peer_addr);
        w.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
        w
    });
    assert_eq!(code(&bind), 200);
    // The peer counts what arrives until the relay has been silent for 1.5 s.
    let receiver = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        while let Ok(len) = peer.recv(&mut buf) {
            assert_eq!(len, LEN);
            n += 1;
        }
        n
    });
    // 400 datagrams of 500 bytes, one a millisecond: 200 kB in about half a second, ten times
    // the cap (paced, so that no socket buffer overflows and every loss is the relay's).
    let mut frame = vec![0x40, 0x00];
    frame.extend_from_slice(&(LEN as u16).to_be_bytes());
    frame.resize(4 + LEN, 7);
    let start = Instant::now();
    for _ in 0..SENT {
        c.sock.send_to(&frame, d.turn).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    let sending = start.elapsed();
    let received = receiver.join().unwrap();
    // At least the full bucket; at most the bucket and the rate over the time it took (with
    // a little for the relay reading behind), never all of it.
    let secs = sending.as_secs_f64() + 0.2;
    let most = (BUCKET as f64 + CAP as f64 * secs) / LEN as f64;
    assert!(
        received >= BUCKET / LEN as u64 && received as f64 <= most,
        "{received} delivered in {sending:?}, expected {} to {most:.0}",
        BUCKET / LEN as u64
    );
    // Every datagram not delivered was dropped by the cap, and counted so.
    let dropped = SENT - received;
    let counted = wait_until(Duration::from_secs(5), || {
        d.metric("switchboard_turn_dropped_packets_total") == dropped
            && d.metric("switchboard_turn_dropped_bytes_total") == dropped * LEN as u64
    });
    assert!(
        counted,
        "{} packets and {} bytes counted as dropped, {dropped} expected",
        d.metric("switchboard_turn_dropped_packets_total"),
        d.metric("switchboard_turn_dropped_bytes_total")
    );
    // And the allocation's close says so too.
    let delete = c.authed(|| {
        let mut w = common::request(REFRESH);
        w.add_attribute(&Lifetime::new(0)).unwrap();
        w
    });
    assert_eq!(code(&delete), 200);
    let line = d
        .wait_log(Duration::from_secs(5), |l| l.contains("allocation closed"))
        .expect("an allocation closed line");
    assert_eq!(
        field(&line, "packets_dropped"),
        Some(&*dropped.to_string()),
        "{line}"
    );
    assert_eq!(
        field(&line, "packets_to_peer"),
        Some(&*received.to_string()),
        "{line}"
    );
}
