//! The hub's limits: what one socket may send and have queued, and how often it is pinged.
//! They bound both transports alike (the JSON `/ws` in `ws.rs` and Socket.IO in `sio/`) and
//! the framing under them (`wire/`); [`Bucket`] keeps a socket to its rate.

use std::time::{Duration, Instant};

/// The largest client frame (a WebSocket message, a polling POST's body) before the socket has
/// authenticated: a Socket.IO session before its CONNECT is accepted (advertised as Engine.IO's
/// `maxPayload`; a handshake needs no credentials, so this is all a stranger can make us
/// buffer). A `/ws` socket authenticates at its upgrade, and never reads under this one.
pub const MAX_FRAME: usize = 64 * 1024;
/// The largest client frame once the socket has authenticated. An SFU offer grows with the
/// room: a browser's m-line is 1 to 3 KB (its codecs, their RTX, header extensions, simulcast),
/// and a participant of a room of twenty where five share their screens has about 50 of them
/// (its own, and one per track of the others'), 150 KB of SDP and more as JSON (its `\r\n`
/// escaped). 256 KiB takes that with room, while a socket's read buffer (which grows to a
/// message, and back once it has gone) stays a quarter of a MiB, 4 MiB for a user's
/// [`MAX_SOCKETS_PER_USER`] sockets at once. What a user can have relayed to another stays
/// bounded by [`RELAY_BYTES_PER_USER`], whatever the frame.
pub const MAX_AUTHENTICATED_FRAME: usize = 256 * 1024;
/// What a socket reads at once (a longer frame is read in several). Signaling messages are a
/// few hundred bytes (an SDP a few KiB), and every socket has this buffer for its whole life.
pub const READ_BUFFER: usize = 1024;
/// Client frames per second, sustained.
pub const RATE: f64 = 50.0;
/// Client frames at once above the rate.
pub const BURST: f64 = 100.0;
/// Messages queued towards one socket before it counts as a slow consumer.
pub const QUEUE: usize = 256;
/// A peer-to-peer message relayed to a user is refused to its sender while one of the user's
/// sockets has this many messages queued: a sender cannot fill the queue, and so cannot get
/// the target closed as a slow consumer (see `Hub::relay`).
pub const RELAY_QUEUE: usize = QUEUE / 2;
/// The same while the user's sockets have this many bytes queued in all (a relayed message
/// may be [`MAX_AUTHENTICATED_FRAME`]: without it a user's [`MAX_SOCKETS_PER_USER`] sockets
/// could hold 16 × 128 × 256 KiB, half a GiB, for a sender; with it, eight of the largest).
pub const RELAY_BYTES_PER_USER: usize = 2 * 1024 * 1024;
/// Sockets (devices, tabs) one user may hold.
pub const MAX_SOCKETS_PER_USER: usize = 16;
/// The server pings a socket this often (Engine.IO's default `pingInterval`, which the
/// Socket.IO side keeps too). On `/ws` a socket from which nothing at all, not even the pong,
/// has come by the next ping is closed. A peer that vanished without closing (a NAT that
/// dropped the mapping, a laptop lid) is then detached, and the reconnect grace starts.
pub const PING_EVERY: Duration = Duration::from_secs(25);
/// Socket.IO's `pingTimeout` (Engine.IO's default), and on `/ws` the longest a write to the
/// socket may take.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A token bucket: [`RATE`] per second, [`BURST`] at once.
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for Bucket {
    fn default() -> Bucket {
        Bucket::new()
    }
}

impl Bucket {
    pub fn new() -> Bucket {
        Bucket {
            tokens: BURST,
            at: Instant::now(),
        }
    }

    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).min(Duration::from_secs(10));
        self.at = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * RATE).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
