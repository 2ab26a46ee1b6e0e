//! The WebSocket transport: a session opened on a WebSocket, the upgrade of a polling session
//! to one (the `2probe`/`3probe`/`5` exchange), and serving a session over it.

use std::sync::Arc;

use super::packet::open_packet;
use super::{Ending, Engine, Session, Transport, CONNECT_TIMEOUT, UPGRADE_TIMEOUT};
use crate::hub::DisconnectReason;
use crate::socket::bounded;
use crate::socket::limits::PING_TIMEOUT;
use crate::socket::wire::{self, Conn, Incoming, Reader};
use crate::source::ClientAddr;

impl Engine {
    /// A WebSocket without a session: the session opens on it.
    pub(super) async fn websocket(
        self: Arc<Self>,
        token: Option<String>,
        client: Option<ClientAddr>,
        conn: Arc<Conn>,
        reader: Reader,
    ) {
        let Ok(s) = self.open(token, client, Transport::Websocket) else {
            return conn.close(wire::TRY_AGAIN_LATER, "too many sessions", false);
        };
        if !conn.send_text(&[&open_packet(&s.sid, false)], false) {
            return self.end(&s, DisconnectReason::TransportError);
        }
        s.out().conn = Some(conn.clone());
        self.serve(s, conn, reader).await;
    }

    /// A WebSocket upgrading polling session `s`: the probe, then the session goes over it.
    pub(super) async fn upgrade(
        self: Arc<Self>,
        s: Arc<Session>,
        conn: Arc<Conn>,
        mut reader: Reader,
    ) {
        // Whether this WebSocket began the upgrade (and so must undo it if it fails).
        let mut began = false;
        let upgraded = tokio::time::timeout(UPGRADE_TIMEOUT, async {
            if !next_text_is(&mut reader, &conn, "2probe").await {
                return false;
            }
            {
                let mut o = s.out();
                if o.transport != Transport::Polling || o.closed.is_some() {
                    return false;
                }
                o.transport = Transport::Upgrading;
                began = true;
            }
            s.wake.notify_one();
            conn.send_text(&["3probe"], false) && next_text_is(&mut reader, &conn, "5").await
        })
        .await;
        let closed = {
            let mut o = s.out();
            if upgraded != Ok(true) {
                if began && o.transport == Transport::Upgrading {
                    o.transport = Transport::Polling;
                }
                return;
            }
            o.transport = Transport::Websocket;
            // What was queued while polling goes first, in order.
            for packet in o.queue.drain(..) {
                conn.send_text(&[&packet], false);
            }
            Session::trim(&mut o);
            o.conn = Some(conn.clone());
            o.closed
        };
        if let Some(reason) = closed {
            // Closed during the upgrade: the WebSocket closes the same way.
            s.close(reason);
        }
        s.wake.notify_one();
        self.serve(s, conn, reader).await;
    }

    /// Serves session `s` over its WebSocket until either side closes it; then ends it (the
    /// close frame goes out once this returns, see [`wire::Upgrade::on_upgrade`]).
    async fn serve(self: Arc<Self>, s: Arc<Session>, conn: Arc<Conn>, mut reader: Reader) {
        // Ends the session however this returns, a panic included.
        let _ending = Ending(&self, &s);
        let connect_by = tokio::time::sleep_until(s.opened + CONNECT_TIMEOUT);
        tokio::pin!(connect_by);
        let mut awaiting_connect = !s.connected();
        // Larger messages once the session has connected to the hub (authenticated).
        let mut authenticated = false;
        let reason = loop {
            if !authenticated && s.connected() {
                reader.authenticated();
                authenticated = true;
            }
            tokio::select! {
                biased;
                () = conn.woken() => {
                    if conn.is_closing() {
                        break s.out().closed.unwrap_or(DisconnectReason::TransportError);
                    }
                    // What the socket could not take at once. A peer that stopped reading
                    // blocks the write: bounded, then closed.
                    if !matches!(bounded(PING_TIMEOUT, conn.flush()).await, Some(Ok(()))) {
                        break DisconnectReason::TransportError;
                    }
                }
                () = &mut connect_by, if awaiting_connect => {
                    if !s.connected() {
                        break DisconnectReason::ConnectTimeout;
                    }
                    awaiting_connect = false;
                }
                incoming = reader.next(&conn) => {
                    let packet = match incoming {
                        Incoming::Text(t) => t,
                        // A binary attachment: its event was refused already.
                        Incoming::Binary | Incoming::Control => continue,
                        Incoming::Closed => break DisconnectReason::TransportClose,
                    };
                    s.heard();
                    let mut inbound = s.inbound.lock().await;
                    if !self.on_packet(&s, &mut inbound, packet).await {
                        break DisconnectReason::ClientClose;
                    }
                }
            }
        };
        self.end(&s, reason);
    }
}

/// Reads until a text frame (pings aside): whether it is `expected`.
async fn next_text_is(reader: &mut Reader, conn: &Conn, expected: &str) -> bool {
    loop {
        match reader.next(conn).await {
            Incoming::Text(t) => return t == expected,
            Incoming::Control => continue,
            Incoming::Binary | Incoming::Closed => return false,
        }
    }
}
