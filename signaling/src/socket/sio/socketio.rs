//! Socket.IO over a session: the Engine.IO packets a client sends (messages, pings, close),
//! the Socket.IO CONNECT with its token, and events performed through [`dispatch`] and
//! answered through their acknowledgement or an `error` event.

use std::sync::Arc;

use serde::Deserialize;
use uuid::Uuid;

use super::packet::{event_packet, split_ack, split_event, split_namespace};
use super::{Engine, Inbound, Session, MAX_PING};
use crate::hub::{DisconnectReason, Outbox as _};
use crate::socket::dispatch::{dispatch, Origin, Reply};
use crate::socket::lease::Lease;
use crate::socket::limits::MAX_SOCKETS_PER_USER;

impl Engine {
    /// One Engine.IO packet from the client. False when the client closes the session.
    /// Every message and ping counts against the socket's rate, connected or not.
    pub(super) async fn on_packet(&self, s: &Arc<Session>, me: &mut Inbound, packet: &str) -> bool {
        match packet.as_bytes().first() {
            Some(b'4') => {
                let allowed = me.bucket.take();
                return self.on_message(s, me, &packet[1..], allowed).await;
            }
            Some(b'1') => return false,
            // A ping from the client (in v4 the server pings): answered, if short and within
            // the rate; a client that floods them is closed.
            Some(b'2') => {
                if packet.len() > MAX_PING || !me.bucket.take() {
                    return false;
                }
                s.reply(format!("3{}", &packet[1..]));
            }
            // Pongs and noops: being heard is all they do. Anything else is not ours to take.
            _ => {}
        }
        true
    }

    /// One Socket.IO packet (the data of an Engine.IO message); `allowed`: within the rate.
    /// False once the client has disconnected: nothing after it (in the same POST, say) is
    /// taken.
    async fn on_message(
        &self,
        s: &Arc<Session>,
        me: &mut Inbound,
        packet: &str,
        allowed: bool,
    ) -> bool {
        // (`get`: the first character may be any, not only an ASCII packet type.)
        let (Some(&kind), Some(mut rest)) = (packet.as_bytes().first(), packet.get(1..)) else {
            return true;
        };
        if matches!(kind, b'5' | b'6') {
            // `<attachments>-` comes first in a binary packet.
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            rest = rest[digits..].strip_prefix('-').unwrap_or(&rest[digits..]);
        }
        let (namespace, rest) = split_namespace(rest);
        match kind {
            // A connect over the rate: dropped (each is a token check).
            b'0' if !allowed => {}
            b'0' => self.on_connect(s, me, namespace, rest).await,
            // Not connected there: nothing to do, as a Socket.IO server does.
            _ if namespace != "/" || me.connected.is_none() => {}
            b'1' => {
                self.end(s, DisconnectReason::ClientDisconnect);
                me.connected = None;
                return false;
            }
            b'2' => self.on_event(s, me, rest, allowed).await,
            // Binary attachments would reach peers as placeholders: not taken.
            b'5' => {
                let (ack, body) = split_ack(rest);
                if !allowed {
                    answer(s, ack, "", rate_limited());
                    return true;
                }
                let event = split_event(body)
                    .map(|(event, _)| event)
                    .unwrap_or_default();
                let message = "binary attachments are not taken";
                answer(s, ack, &event, Reply::error("invalid_frame", message));
            }
            // Acknowledgements: the server asks for none.
            _ => {}
        }
        true
    }

    /// A Socket.IO CONNECT with `auth` (JSON, or empty).
    async fn on_connect(&self, s: &Arc<Session>, me: &mut Inbound, namespace: &str, auth: &str) {
        #[derive(Deserialize)]
        struct Auth {
            token: Option<String>,
        }
        let refuse = |message: String| {
            let body = serde_json::json!({"message": message});
            let comma = if namespace == "/" { "" } else { "," };
            let ns = if namespace == "/" { "" } else { namespace };
            s.reply(format!("44{ns}{comma}{body}"));
        };
        if namespace != "/" {
            return refuse("Invalid namespace".into());
        }
        if me.connected.is_some() {
            return;
        }
        let token = serde_json::from_str::<Auth>(auth)
            .ok()
            .and_then(|a| a.token)
            .or_else(|| s.token.clone());
        let header = token.map(|t| format!("Bearer {t}"));
        let hub = &self.state.hub;
        let session = match self.state.auth.session(header.as_deref()) {
            Ok(session) => session,
            Err(e) => return refuse(format!("{}: {e}", e.code())),
        };
        let (user, exp) = (session.user.clone(), session.exp);
        if hub.sockets_of(user.id) >= MAX_SOCKETS_PER_USER {
            let max = MAX_SOCKETS_PER_USER;
            return refuse(format!("too_many_sockets: at most {max} per user"));
        }
        // Named from this token in the calls, as a REST request would (before the socket can
        // be rung: the invitee of a call waiting for them is then named in it).
        if let Err(e) = self.state.calls.record_user(&user).await {
            tracing::warn!(user = %user.id, error = %e, "the user's name is not recorded");
        }
        // CONNECT goes out before anything the hub sends the new socket. Its id (the client's
        // `socket.id`, which a REST request may name in `X-Socket-Id`) is not the session's:
        // that one lets whoever knows it poll and post as the user.
        let name: Arc<str> = Arc::from(Uuid::new_v4().simple().to_string());
        s.reply(format!(r#"40{{"sid":"{name}"}}"#));
        match hub.attach_named(user.id, Some(name), s.clone()) {
            Ok(id) => {
                let mut o = s.out();
                if o.closed.is_some() {
                    drop(o);
                    hub.detach(user.id, id);
                    return;
                }
                o.socket = Some((user.id, id));
                self.unpend(s, &mut o);
                drop(o);
                let lease = Arc::new(Lease::new(user.id, exp));
                tokio::spawn(expire(s.clone(), lease.clone()));
                me.connected = Some((user, id, lease));
                // A revocation made while the socket was connecting did not find it.
                if self.state.auth.revoked(&session) {
                    s.disconnect(DisconnectReason::Revoked);
                }
            }
            Err(e) => {
                let data = serde_json::json!({"code": e.code(), "message": e.to_string()});
                s.send(&[&event_packet("error", &data.to_string())], false);
                s.send(&["41"], false);
                s.close(DisconnectReason::Refused);
            }
        }
    }

    /// A Socket.IO EVENT: `[<ack id>]["event", data]`.
    async fn on_event(&self, s: &Arc<Session>, me: &mut Inbound, packet: &str, allowed: bool) {
        let (ack, body) = split_ack(packet);
        let Some((user, socket, lease)) = &me.connected else {
            return;
        };
        let Some((event, data)) = split_event(body) else {
            let message = "a message is [\"event\", data]";
            return answer(s, ack, "", Reply::error("invalid_frame", message));
        };
        if !allowed {
            return answer(s, ack, &event, rate_limited());
        }
        // (A socket that goes while this is performed, an answer say, is detached when the
        // session ends, which starts the reconnect grace if that left the user joined.)
        let origin = Origin {
            user,
            socket: *socket,
            lease,
        };
        let reply = dispatch(&self.state, origin, &event, data).await;
        answer(s, ack, &event, reply);
    }
}

/// A connected socket's term (see [`Lease`]): warned, then, unless refreshed, told why (an
/// `error` event `{code: "token_expired"}`), disconnected from the namespace and closed. Over
/// with the session, however it ends.
async fn expire(s: Arc<Session>, lease: Arc<Lease>) {
    tokio::select! {
        () = lease.run(&*s) => {
            s.kick("token_expired", "the token has expired", DisconnectReason::TokenExpired);
        }
        () = s.ended() => {}
    }
}

impl Session {
    /// Returns once the session is closed.
    async fn ended(&self) {
        let notified = self.closing.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.out().closed.is_none() {
            notified.await;
        }
    }
}

fn rate_limited() -> Reply {
    Reply::error("rate_limited", "too many messages; slow down")
}

/// Answers a client event: through its acknowledgement if it asked for one, else (for
/// refusals) an `error` event. A socket too far behind to take it is closed.
fn answer(s: &Session, ack: Option<u64>, event: &str, reply: Reply) {
    let packet = match (reply, ack) {
        (Reply::Relayed, Some(id)) => format!(r#"43{id}[{{"success":true}}]"#),
        (Reply::Ack(body), Some(id)) => format!("43{id}[{body}]"),
        (Reply::Relayed | Reply::Ack(_), None) => return,
        (Reply::Error { code, message }, Some(id)) => {
            let body = serde_json::json!({"error": {"code": code, "message": message}});
            format!("43{id}[{body}]")
        }
        (Reply::Error { code, message }, None) => {
            let data = serde_json::json!({"code": code, "message": message, "event": event});
            event_packet("error", &data.to_string())
        }
    };
    s.reply(packet);
}
