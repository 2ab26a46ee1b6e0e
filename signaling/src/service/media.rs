//! A group call's media: a joined participant of a call on the SFU negotiates its one peer
//! connection with the SFU (`call:sfu-offer`, `call:sfu-answer`) and picks the simulcast layer
//! it receives of each other participant (`call:sfu-layer`). What the SFU says back
//! (its answer, its own offers, a closed connection) reaches the participant's sockets through
//! the domain's SFU task ([`crate::domain`]); a participant who leaves, and a call that ends,
//! leave the SFU room through the domain's event sink.
//!
//! Only an offer is checked against the store (the caller must be a joined participant of the
//! live call, and the call on the SFU): it is what admits a participant into the room. An
//! answer or a layer choice is taken by the SFU only from a participant already in the room.

use std::sync::Arc;

use serde::Serialize;
use switchboard_sfu::io::{SfuHandle, SfuStats};
use switchboard_sfu::{Quality as Layer, SfuError};
use uuid::Uuid;

use super::{visible_call, CallError, CallService};
use crate::call::{ParticipantStatus, User};

/// The acknowledgement of an SFU operation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuAck {
    pub call_id: Uuid,
}

impl CallService {
    /// The SFU's counters, when one runs (for `/metrics`).
    pub fn sfu_stats(&self) -> Option<Arc<SfuStats>> {
        self.inner.sfu.as_ref().map(|s| s.stats())
    }

    fn sfu(&self) -> Result<&Arc<SfuHandle>, CallError> {
        self.inner.sfu.as_ref().ok_or(CallError::NotOnSfu)
    }

    /// `caller`'s SDP offer for `call`'s SFU room: the first joins the room, a later one
    /// renegotiates (a screen share added, say). Once the offer is admitted, `claim` is called
    /// (the hub records the socket it came from, see [`crate::hub::SfuClaim`]): if it says
    /// the offer replaces a connection (another device's), the caller's connection in the room
    /// is dropped first and the offer joins afresh. The SFU's answer follows as
    /// `call:sfu-answer`.
    pub async fn sfu_offer(
        &self,
        caller: &User,
        call_id: Uuid,
        sdp: String,
        claim: impl FnOnce() -> bool,
    ) -> Result<SfuAck, CallError> {
        let sfu = self.sfu()?.clone();
        let user = caller.id;
        self.job(caller, move |db, _| {
            let call = visible_call(db, user, call_id)?;
            if call.sfu_room_id.is_none() {
                return Err(CallError::NotOnSfu);
            }
            let joined = call
                .participant(user)
                .is_some_and(|p| p.status == ParticipantStatus::Joined);
            if !call.status.is_live() || !joined {
                return Err(CallError::NotInRoom);
            }
            Ok(())
        })
        .await?;
        if claim() {
            // Ahead of the offer in the SFU's command queue. Not there (a full queue): the offer
            // renegotiates the old connection, and fails, and the client offers again.
            let _ = sfu.leave(call_id, user);
        }
        sfu.offer(call_id, user, sdp).await?;
        Ok(SfuAck { call_id })
    }

    /// `caller`'s answer to the SFU's last offer (`call:sfu-offer` from the server).
    pub async fn sfu_answer(
        &self,
        caller: &User,
        call_id: Uuid,
        sdp: String,
    ) -> Result<SfuAck, CallError> {
        self.sfu()?.answer(call_id, caller.id, sdp).await?;
        Ok(SfuAck { call_id })
    }

    /// Which layer of `publisher`'s video `caller` wants: a thumbnail, the focus, none.
    pub async fn sfu_layer(
        &self,
        caller: &User,
        call_id: Uuid,
        publisher: Uuid,
        quality: Layer,
    ) -> Result<SfuAck, CallError> {
        self.sfu()?
            .set_quality(call_id, caller.id, publisher, quality)
            .await?;
        Ok(SfuAck { call_id })
    }
}

impl From<SfuError> for CallError {
    fn from(e: SfuError) -> CallError {
        match e {
            SfuError::BadSdp(m) | SfuError::Refused(m) => CallError::InvalidField {
                field: "sdp".into(),
                message: m,
            },
            e @ SfuError::TooManyTracks(..) => CallError::InvalidField {
                field: "sdp".into(),
                message: e.to_string(),
            },
            SfuError::NotJoined | SfuError::NoOffer => CallError::NotInRoom,
            _ => CallError::SfuUnavailable,
        }
    }
}
