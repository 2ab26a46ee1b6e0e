//! What the three fuzz targets share: a fixed secret and realm, the clients and peers they pick
//! from, credentials minted with the crate's own functions, a STUN request builder (the
//! `stun-types` writer the core's tests use) and a byte reader that never fails.
//!
//! Nothing here reads a clock: time is [`Time`] from a counter that starts at [`T0`].

use std::net::{IpAddr, SocketAddr};

use stun_types::attribute::{Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, TransactionId,
};
use switchboard_turn::credentials;
use switchboard_turn::proto::{FiveTuple, ServerConfig, Transport};
use switchboard_turn::Time;
use turn_types::attribute::{Data, XorPeerAddress};
use turn_types::message::DATA;

pub const REALM: &str = "example.org";
pub const SECRET: &[u8] = b"fuzz-secret";
/// The virtual clock's start, in Unix seconds.
pub const T0: u64 = 1_700_000_000;
/// The relay's IPv4 address (relay sockets and the UDP/TCP listener).
pub const RELAY_V4: &str = "198.51.100.10";
/// The relay's IPv6 address, when a target configures dual stack.
pub const RELAY_V6: &str = "2001:db8::10";
/// The relay port range: small, so that ports run out and hairpin targets are hit.
pub const RELAY_PORTS: std::ops::RangeInclusive<u16> = 50000..=50007;

/// The largest message the core may hand a client: 65,535 bytes of payload plus headers.
pub const MAX_TRANSMIT: usize = 65_535 + 20 + 4 + 20 + 4 + 3;

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid IP literal")
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("valid socket address literal")
}

/// The core's configuration: RFC defaults, the fixed secret, a fixed nonce key and seed.
pub fn base_config() -> ServerConfig {
    let mut c = ServerConfig::new(REALM, SECRET, ip(RELAY_V4));
    c.nonce_key = [9; 32];
    c.seed = 0x5eed;
    c.relay_ports = RELAY_PORTS;
    c
}

/// The clients the targets speak from: UDP, TCP and TLS 5-tuples, IPv4 and IPv6, and two odd
/// ones (a client at a public peer's address, and one at the relay's own relay address).
pub fn client(i: u8) -> FiveTuple {
    let listener_v4 = sa("198.51.100.10:3478");
    let (transport, client, server) = match i % 8 {
        0 => (Transport::Udp, sa("192.0.2.1:1000"), listener_v4),
        1 => (Transport::Udp, sa("192.0.2.1:1001"), listener_v4),
        2 => (Transport::Udp, sa("192.0.2.2:1000"), listener_v4),
        3 => (
            Transport::Udp,
            sa("[2001:db8::1]:1000"),
            sa("[2001:db8::10]:3478"),
        ),
        4 => (Transport::Tcp, sa("192.0.2.1:1000"), listener_v4),
        5 => (
            Transport::Tls,
            sa("192.0.2.3:5000"),
            sa("198.51.100.10:5349"),
        ),
        6 => (Transport::Udp, sa("8.8.8.8:1000"), listener_v4),
        _ => (Transport::Udp, sa("198.51.100.10:50000"), listener_v4),
    };
    FiveTuple {
        transport,
        client,
        server,
    }
}

/// The peers requests and peer datagrams name: public ones (allowed), IPv4-mapped and NAT64
/// forms, private/loopback ones (refused), the relay's own relay ports (hairpin), its own
/// other ports, the external and host addresses the config may name.
pub fn peer(i: u8) -> SocketAddr {
    match i % 16 {
        0 => sa("8.8.8.8:1000"),
        1 => sa("8.8.8.8:2000"),
        2 => sa("8.8.4.4:1000"),
        3 => sa("[2606:4700::1111]:3000"),
        4 => sa("[::ffff:8.8.8.8]:1000"),
        5 => sa("[64:ff9b::808:808]:1000"),
        6 => sa("10.0.0.1:1000"),
        7 => sa("127.0.0.1:80"),
        8 => sa("198.51.100.10:50000"),
        9 => sa("198.51.100.10:50001"),
        10 => sa("198.51.100.10:22"),
        11 => sa("[2001:db8::10]:50000"),
        12 => sa("192.0.2.200:50000"),
        13 => sa("203.0.113.7:9"),
        14 => sa("[::ffff:198.51.100.10]:50002"),
        _ => sa("1.1.1.1:53"),
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (what the core does to peers).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// A user with minted credentials and the long-term key derived from them.
pub struct User {
    pub username: String,
    pub password: String,
    pub key: IntegrityKey,
}

impl User {
    /// Credentials for `user` expiring at `expires_unix`, minted with the crate's own
    /// function and the fixed secret.
    pub fn mint(user: &str, expires_unix: u64) -> User {
        let c = credentials::mint(SECRET, user, expires_unix);
        let key = credentials::long_term_key(&c.username, REALM, &c.password);
        User {
            username: c.username,
            password: c.password,
            key,
        }
    }
}

/// How a request is signed.
pub struct Sign<'a> {
    pub user: &'a User,
    /// `None`: no NONCE attribute.
    pub nonce: Option<&'a str>,
    pub realm: &'a str,
    /// Sign with a wrong key (a wrong password).
    pub wrong_key: bool,
}

/// Adds USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (then FINGERPRINT when asked) and
/// returns the message bytes. Attributes that do not fit are left out.
pub fn seal(mut w: MessageWriteVec, sign: Option<&Sign<'_>>, fingerprint: bool) -> Vec<u8> {
    if let Some(s) = sign {
        if let Ok(u) = Username::new(&s.user.username) {
            let _ = w.add_attribute(&u);
        }
        if let Ok(r) = Realm::new(s.realm) {
            let _ = w.add_attribute(&r);
        }
        if let Some(n) = s.nonce {
            if let Ok(n) = Nonce::new(n) {
                let _ = w.add_attribute(&n);
            }
        }
        let wrong;
        let key = if s.wrong_key {
            wrong = credentials::long_term_key(&s.user.username, REALM, "wrong-password");
            &wrong
        } else {
            &s.user.key
        };
        let _ = w.add_message_integrity_with_key(key, IntegrityAlgorithm::Sha1);
    }
    if fingerprint {
        let _ = w.add_fingerprint();
    }
    w.finish()
}

/// A message writer for `class`/`method` with a transaction id.
pub fn builder(class: MessageClass, method: Method, txid: u128) -> MessageWriteVec {
    Message::builder(
        MessageType::from_class_method(class, method),
        TransactionId::from(txid),
        MessageWriteVec::new(),
    )
}

/// Checks a frame the core built in place around a peer's payload (`handle_peer_data`):
/// ChannelData with the payload and its length (padded to four bytes on a stream), or a Data
/// indication naming the peer and carrying the payload. Returns the channel number of
/// ChannelData.
pub fn check_peer_frame(
    frame: &[u8],
    from: SocketAddr,
    payload: &[u8],
    stream: bool,
) -> Option<u16> {
    assert!(
        frame.len() <= MAX_TRANSMIT,
        "a frame of {} bytes",
        frame.len()
    );
    assert!(frame.len() >= 4, "a frame of {} bytes", frame.len());
    if frame[0] >> 6 == 1 {
        let number = u16::from_be_bytes([frame[0], frame[1]]);
        let len = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
        assert!((0x4000..=0x7fff).contains(&number), "channel {number:#x}");
        assert_eq!(len, payload.len(), "ChannelData length");
        assert_eq!(&frame[4..4 + len], payload, "ChannelData payload");
        if stream {
            assert_eq!(
                frame.len(),
                4 + ((len + 3) & !3),
                "ChannelData padding on a stream"
            );
            assert!(frame[4 + len..].iter().all(|&b| b == 0), "padding not zero");
        } else {
            assert_eq!(frame.len(), 4 + len, "padded ChannelData over UDP");
        }
        Some(number)
    } else {
        let msg = Message::from_bytes(frame)
            .unwrap_or_else(|e| panic!("malformed Data indication ({e}): {frame:02x?}"));
        assert_eq!(msg.class(), MessageClass::Indication);
        assert_eq!(msg.method(), DATA);
        let txid = msg.transaction_id();
        let peer = msg.attribute::<XorPeerAddress>().expect("XOR-PEER-ADDRESS");
        assert_eq!(
            peer.addr(txid),
            canonical(from),
            "Data indication names another peer"
        );
        let data = msg.attribute::<Data>().expect("DATA");
        assert_eq!(data.data(), payload, "Data indication payload");
        assert_eq!(
            frame.len(),
            20 + usize::from(u16::from_be_bytes([frame[2], frame[3]]))
        );
        None
    }
}

/// The virtual clock.
pub fn at(millis_since_t0: u64) -> Time {
    Time::from_unix_millis(T0 * 1000 + millis_since_t0)
}

/// Reads the fuzz input front to back; past the end every read is zero/empty.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}
