//! The hub's sockets: one layer from the bytes on the connection to the hub and the call
//! service.
//!
//! - [`limits`]: what one socket may send and have queued, how often it is pinged, and the
//!   rate's [`Bucket`](limits::Bucket); every transport and the framing take them from there.
//! - [`client`]: the client → server events, parsed once into a [`ClientEvent`] (or a
//!   [`Refusal`]) whatever the transport.
//! - [`dispatch`](mod@dispatch): a client event relayed through the hub or performed by the call service,
//!   and what it comes to ([`Reply`]).
//! - [`lease`]: how long a socket may live, its token's `exp` (`auth:expiring`, `auth:refresh`,
//!   the close at its end).
//! - The transports: [`ws`], the JSON `/ws`; [`sio`], Socket.IO on Engine.IO
//!   (`/socket.io/`); both over [`wire`], the RFC 6455 WebSocket (handshake, framing, the
//!   shared write path), which knows nothing of either.
//!
//! Each transport attaches its sockets to the hub as [`Outbox`](crate::hub::Outbox)es and
//! closes them for a [`DisconnectReason`]; the hub's heartbeat ([`run_heartbeat`]) pings
//! every socket of both.

pub mod client;
pub mod dispatch;
pub mod lease;
pub mod limits;
pub mod sio;
pub mod wire;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

pub use client::{ClientEvent, Refusal};
pub use dispatch::{dispatch, perform, Reply};
pub use lease::Lease;

use crate::hub::{DisconnectReason, Hub};
use limits::PING_EVERY;

// The header naming a device's socket belongs to the REST API, which reads it; `/ws`'s upgrade
// answers with it.
pub use crate::api::SOCKET_ID;

/// The heartbeat of every socket of the hub, both transports: [`Hub::pulse`] every
/// [`PING_EVERY`].
pub async fn run_heartbeat(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        hub.pulse();
    }
}

/// `f`, bounded by `limit` if it does not finish at its first poll: most writes do, and a
/// timer armed for each would cost more than the write.
pub(crate) async fn bounded<F: std::future::Future>(limit: Duration, f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    if let Some(out) = futures_util::FutureExt::now_or_never(f.as_mut()) {
        return Some(out);
    }
    tokio::time::timeout(limit, f).await.ok()
}

/// The close code of a WebSocket closed for `reason`: 1001 (going away) when the server stops
/// or the client stopped answering, 1008 (policy) when it fell too far behind or its token
/// expired (the reason says which), 1000 otherwise.
pub(crate) fn close_code(reason: DisconnectReason) -> u16 {
    match reason {
        DisconnectReason::ServerShutdown | DisconnectReason::PingTimeout => wire::GOING_AWAY,
        DisconnectReason::SlowConsumer
        | DisconnectReason::TokenExpired
        | DisconnectReason::Revoked => wire::POLICY,
        DisconnectReason::ConnectTimeout
        | DisconnectReason::TransportError
        | DisconnectReason::TransportClose
        | DisconnectReason::ClientClose
        | DisconnectReason::ClientDisconnect
        | DisconnectReason::Refused
        | DisconnectReason::PayloadTooLarge
        | DisconnectReason::OverlappingPolls => wire::NORMAL,
    }
}
