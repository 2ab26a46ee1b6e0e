//! switchboard-turn: the STUN/TURN relay of switchboard.
//!
//! Two layers, as in quinn-proto/quinn or str0m:
//!
//! - [`proto`]: the protocol core, **sans-IO**. A plain struct, [`proto::Server`], driven by
//!   `handle_*(now, …)` calls and drained with `poll_*` calls. It opens no socket, reads no clock
//!   and spawns nothing (its Cargo dependencies are a STUN codec and hash functions), so every
//!   RFC rule is unit-tested with injected time.
//! - [`io`] (feature `io`): the UDP driver around it. One thread owns the core, the listener
//!   sockets and one relay socket per allocation, and runs a level-triggered epoll loop. The
//!   ChannelData path in both directions does no heap allocation, no STUN parsing and takes no
//!   lock.
//!
//! Standards: RFC 8489 (STUN: Binding, long-term credentials, FINGERPRINT), RFC 8656 (TURN:
//! Allocate, Refresh, CreatePermission, ChannelBind, Send/Data, ChannelData), RFC 5769 (test
//! vectors), and the TURN REST API credential scheme ([`credentials`]) shared with coturn.
//! Message encoding comes from the `stun-types`/`turn-types` crates; ChannelData is handled
//! directly.

pub mod proto;

pub use proto::credentials;
pub use proto::policy;
pub use proto::{BandwidthCaps, Event, ServerConfig, Time};

#[cfg(feature = "io")]
pub mod io;
