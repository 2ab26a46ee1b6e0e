//! Why a socket is closed: given to `Outbox::disconnect` by the hub, and by the
//! transports to their own sessions.

/// Why a socket is closed. [`DisconnectReason::as_str`] is what the client is told: the
/// reason of the WebSocket's close frame (on `/ws`, and for Socket.IO over a WebSocket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The daemon stops.
    ServerShutdown,
    /// Nothing came from the client by the next ping.
    PingTimeout,
    /// The socket's queue is full: it fell too far behind.
    SlowConsumer,
    /// A Socket.IO session that did not connect to the hub in time.
    ConnectTimeout,
    /// The connection failed (a write, or the task serving it).
    TransportError,
    /// The client's WebSocket closed under a Socket.IO session.
    TransportClose,
    /// The client closed its Engine.IO session (`1`).
    ClientClose,
    /// The client disconnected from the Socket.IO namespace (`41`).
    ClientDisconnect,
    /// The hub refused the socket (too many for the user).
    Refused,
    /// A polling POST over the payload bound.
    PayloadTooLarge,
    /// A second polling GET while one waits.
    OverlappingPolls,
    /// The socket's token expired and no fresh one came (`auth:refresh`).
    TokenExpired,
    /// The admin API revoked the socket's user.
    Revoked,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ServerShutdown => "server shutdown",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::SlowConsumer => "slow consumer",
            DisconnectReason::ConnectTimeout => "connect timeout",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::ClientClose => "client close",
            DisconnectReason::ClientDisconnect => "client disconnect",
            DisconnectReason::Refused => "refused",
            DisconnectReason::PayloadTooLarge => "payload too large",
            DisconnectReason::OverlappingPolls => "overlapping polls",
            DisconnectReason::TokenExpired => "token expired",
            DisconnectReason::Revoked => "token revoked",
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
