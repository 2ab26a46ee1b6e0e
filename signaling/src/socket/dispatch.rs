//! The transport independent part of every socket: a client's event, parsed once
//! ([`ClientEvent`]), relayed through the hub or performed by the call service as the REST
//! API performs it, and what it comes to ([`Reply`]), which each transport writes its way.

use super::client::{ClientEvent, Refusal};
use super::lease::Lease;
use crate::api::{ApiError, ApiState};
use crate::call::User;
use crate::hub::{Elsewhere, SocketId};
use crate::service::CallError;

/// What a client message comes to.
pub enum Reply {
    /// Relayed to the target (nothing to answer).
    Relayed,
    /// Done: the REST response body.
    Ack(serde_json::Value),
    /// Refused.
    Error { code: &'static str, message: String },
}

impl Reply {
    pub(crate) fn error(code: &'static str, message: impl Into<String>) -> Reply {
        Reply::Error {
            code,
            message: message.into(),
        }
    }
}

impl From<Refusal> for Reply {
    fn from(r: Refusal) -> Reply {
        Reply::error(r.code(), r.message())
    }
}

/// A client message's socket: its user, its id in the hub, its [`Lease`].
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    pub user: &'a User,
    pub socket: SocketId,
    pub lease: &'a Lease,
}

/// Performs one client message, `event` with `data` (JSON text), from `origin` (its user's
/// other devices hear of an answer).
pub async fn dispatch(s: &ApiState, origin: Origin<'_>, event: &str, data: &str) -> Reply {
    match ClientEvent::parse(event, data) {
        Ok(e) => perform(s, origin, e).await,
        Err(refused) => refused.into(),
    }
}

/// Performs `e` from `origin`. A signal is relayed at once, without waiting on anything.
///
/// The call operations wait on the store, and their futures are large (about 1.4 KiB): each
/// is boxed while it runs, so that a socket's task, which holds this future, does not carry
/// that much for its whole life, idle or relaying.
pub async fn perform(s: &ApiState, o: Origin<'_>, e: ClientEvent<'_>) -> Reply {
    let (hub, user, origin) = (&s.hub, o.user, o.socket);
    let result = match e {
        ClientEvent::Signal {
            signal,
            call_id,
            target_user_id,
            payload,
        } => {
            return match hub.relay(user.id, call_id, target_user_id, signal, payload) {
                Ok(()) => Reply::Relayed,
                Err(e) => Reply::error(e.code(), e.to_string()),
            };
        }
        ClientEvent::Accept(call_id) => {
            let answered = Box::pin(s.calls.answer(user, call_id)).await;
            if answered.is_ok() {
                hub.elsewhere(Elsewhere::Answered, user.id, call_id, Some(origin));
            }
            to_value(answered)
        }
        ClientEvent::Reject(call_id) => {
            let rejected = Box::pin(s.calls.reject(user, call_id)).await;
            if rejected.is_ok() {
                hub.elsewhere(Elsewhere::Rejected, user.id, call_id, Some(origin));
            }
            to_value(rejected)
        }
        ClientEvent::End(call_id) => to_value(Box::pin(s.calls.end(user, call_id)).await),
        ClientEvent::Media(call_id, req) => {
            to_value(Box::pin(s.calls.media(user, call_id, req)).await)
        }
        ClientEvent::Stats(call_id, figures) => {
            to_value(Box::pin(s.calls.record_stats(user, call_id, figures)).await)
        }
        ClientEvent::Refresh(token) => return o.lease.refresh(&s.auth, &token),
        ClientEvent::SfuOffer(call_id, sdp) => {
            // Once the store has admitted the offer, and before it reaches the SFU (whose answer
            // may come before the offer's result), this socket takes the SFU connection; one
            // for a new connection replaces another device's, which is told once the SFU has
            // dropped it.
            let fingerprint = crate::hub::fingerprint(&sdp).map(str::to_owned);
            let mut claim = None;
            let offered = s.calls.sfu_offer(user, call_id, sdp, || {
                let c = hub.claim_sfu(call_id, user.id, origin, fingerprint.as_deref());
                let replaces = c.replaces;
                claim = Some(c);
                replaces
            });
            let offered = Box::pin(offered).await;
            if let Some(c) = claim {
                c.notify(call_id);
            }
            to_value(offered)
        }
        ClientEvent::SfuAnswer(call_id, sdp) => {
            to_value(Box::pin(s.calls.sfu_answer(user, call_id, sdp)).await)
        }
        ClientEvent::SfuLayer {
            call_id,
            user_id,
            quality,
        } => to_value(Box::pin(s.calls.sfu_layer(user, call_id, user_id, quality)).await),
    };
    match result {
        Ok(body) => Reply::Ack(body),
        Err(e) => {
            let e = ApiError::from(e);
            Reply::Error {
                code: e.code,
                message: e.message,
            }
        }
    }
}

fn to_value<T: serde::Serialize>(r: Result<T, CallError>) -> Result<serde_json::Value, CallError> {
    r.map(|v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
}
