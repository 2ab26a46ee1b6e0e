//! The HTTP long-polling transport: the Engine.IO query, `GET` (handshake, poll, or a WebSocket
//! handed to [`super::websocket`]), `POST` (the client's packets), and the protocol's HTTP errors.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::packet::open_packet;
use super::{Engine, NoSession, Session, Transport};
use crate::hub::DisconnectReason;
use crate::socket::limits::{MAX_AUTHENTICATED_FRAME, MAX_FRAME, PING_EVERY, PING_TIMEOUT};
use crate::socket::wire::{NotWebSocket, Upgrade};
use crate::source::ClientAddr;

/// An Engine.IO error: HTTP 400 with the protocol's `{code, message}`.
struct Refused(u8, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.0, "message": self.1});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

fn unknown_sid() -> Response {
    Refused(1, "Session ID unknown").into_response()
}

fn bad_request() -> Response {
    Refused(3, "Bad request").into_response()
}

fn text(body: String) -> Response {
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")];
    (StatusCode::OK, content_type, body).into_response()
}

/// What an Engine.IO request's query says.
struct Query {
    websocket: bool,
    sid: Option<String>,
    token: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Query, Refused> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| Refused(3, "Bad request"))?;
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        if get("EIO").as_deref() != Some("4") {
            return Err(Refused(5, "Unsupported protocol version"));
        }
        let websocket = match get("transport").as_deref() {
            Some("polling") => false,
            Some("websocket") => true,
            _ => return Err(Refused(0, "Transport unknown")),
        };
        Ok(Query {
            websocket,
            sid: get("sid"),
            token: get("token"),
        })
    }
}

/// `GET /socket.io/`: a handshake, a poll, or a WebSocket (new, or upgrading a session).
pub(super) async fn on_get(
    State(e): State<Arc<Engine>>,
    RawQuery(query): RawQuery,
    client: Option<Extension<ClientAddr>>,
    upgrade: Result<Upgrade, NotWebSocket>,
) -> Response {
    let client = client.map(|Extension(c)| c);
    let q = match Query::parse(query.as_deref()) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    if q.websocket {
        let Ok(upgrade) = upgrade else {
            return bad_request();
        };
        let upgrading = match &q.sid {
            None => None,
            Some(sid) => match e.session(sid) {
                Some(s) if s.out().transport == Transport::Polling => Some(s),
                Some(_) => return bad_request(),
                None => return unknown_sid(),
            },
        };
        return upgrade.on_upgrade(move |conn, reader| async move {
            match upgrading {
                Some(s) => e.upgrade(s, conn, reader).await,
                None => e.websocket(q.token, client, conn, reader).await,
            }
        });
    }
    match q.sid {
        None => match e.open(q.token, client, Transport::Polling) {
            Ok(s) => {
                tokio::spawn(e.clone().heartbeat(s.clone()));
                text(open_packet(&s.sid, true))
            }
            Err(NoSession::Full) => {
                (StatusCode::SERVICE_UNAVAILABLE, "no session available").into_response()
            }
            Err(NoSession::SourceFull) => {
                let busy = "too many sessions from this address";
                (StatusCode::TOO_MANY_REQUESTS, busy).into_response()
            }
        },
        Some(sid) => match e.session(&sid) {
            Some(s) => e.poll(s).await,
            None => unknown_sid(),
        },
    }
}

/// `POST /socket.io/?sid=`: the client's packets, over polling.
pub(super) async fn on_post(
    State(e): State<Arc<Engine>>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let q = match Query::parse(query.as_deref()) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let Some(s) = q.sid.as_deref().and_then(|sid| e.session(sid)) else {
        return unknown_sid();
    };
    if q.websocket || s.out().transport == Transport::Websocket {
        return bad_request();
    }
    // Before the session's CONNECT, what a stranger may send (`maxPayload`); after, more.
    let limit = if s.connected() {
        MAX_AUTHENTICATED_FRAME
    } else {
        MAX_FRAME
    };
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        e.end(&s, DisconnectReason::PayloadTooLarge);
        return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
    };
    let Ok(payload) = std::str::from_utf8(&bytes) else {
        return bad_request();
    };
    s.heard();
    let mut inbound = s.inbound.lock().await;
    for packet in payload.split('\x1e') {
        if !e.on_packet(&s, &mut inbound, packet).await {
            drop(inbound);
            e.end(&s, DisconnectReason::ClientClose);
            break;
        }
    }
    let content_type = [(header::CONTENT_TYPE, "text/html")];
    (StatusCode::OK, content_type, "ok").into_response()
}

/// Clears a session's `polling` flag when its GET ends, answered or dropped.
struct Polling<'a>(&'a Session);

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.out().polling = false;
    }
}

impl Engine {
    /// A polling GET: what is queued, at once or as soon as there is some.
    async fn poll(&self, s: Arc<Session>) -> Response {
        {
            let mut o = s.out();
            if o.transport == Transport::Websocket {
                return bad_request();
            }
            if o.polling {
                drop(o);
                self.end(&s, DisconnectReason::OverlappingPolls);
                return bad_request();
            }
            o.polling = true;
        }
        let _polling = Polling(&s);
        loop {
            let (payload, closed) = {
                let mut o = s.out();
                if o.transport != Transport::Polling {
                    // Lets the client finish the upgrade; the queue waits for the WebSocket.
                    (Some("6".to_owned()), None)
                } else if !o.queue.is_empty() || o.closed.is_some() {
                    let mut packets: Vec<String> = o.queue.drain(..).collect();
                    Session::trim(&mut o);
                    if o.closed.is_some() {
                        packets.push("1".into());
                    }
                    (Some(packets.join("\x1e")), o.closed)
                } else {
                    (None, None)
                }
            };
            if let Some(payload) = payload {
                if let Some(reason) = closed {
                    self.end(&s, reason);
                }
                return text(payload);
            }
            // The heartbeat queues a ping every PING_EVERY: this bound only matters if it died.
            let wait = PING_EVERY + PING_TIMEOUT;
            if tokio::time::timeout(wait, s.wake.notified()).await.is_err() {
                return text("6".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_the_protocol_and_the_transport() {
        let q = Query::parse(Some("EIO=4&transport=polling&t=x&sid=s1&token=a%2Bb"))
            .ok()
            .unwrap();
        assert_eq!(
            (q.websocket, q.sid.as_deref(), q.token.as_deref()),
            (false, Some("s1"), Some("a+b"))
        );
        let q = Query::parse(Some("EIO=4&transport=websocket"))
            .ok()
            .unwrap();
        assert!(q.websocket && q.sid.is_none());
        for bad in [
            None,
            Some("EIO=3&transport=polling"),
            Some("EIO=4"),
            Some("EIO=4&transport=flash"),
        ] {
            let r = Query::parse(bad).err().unwrap().into_response();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
