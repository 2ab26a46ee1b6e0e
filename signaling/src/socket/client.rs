//! The client → server events, typed once for every transport (the other direction is
//! [`crate::event::Payload`]).
//!
//! A transport takes an event's name and its data (JSON text) out of its own framing (`/ws`'s
//! `{"event", "data", "id"}`, Socket.IO's `["event", data]`); [`ClientEvent::parse`] makes a
//! [`ClientEvent`] of them, or the [`Refusal`] the client is answered with, before anything is
//! looked up. `dispatch.rs` then performs it.

use serde::Deserialize;
use serde_json::value::RawValue;
use switchboard_sfu::Quality as Layer;
use uuid::Uuid;

use crate::hub::Signal;
use crate::quality::Figures;
use crate::service::MediaRequest;

/// A client's event, well formed (its call, and whether the client may act on it, are the
/// hub's and the call service's to check).
#[derive(Debug)]
pub enum ClientEvent<'a> {
    /// `call:offer`, `call:answer`, `call:ice-candidate` with `{callId, targetUserId, offer |
    /// answer | candidate}` (other fields ignored): relayed to the target. `candidate: null`
    /// (the end of the candidates) is a candidate; a null offer or answer is none.
    Signal {
        signal: Signal,
        call_id: Uuid,
        target_user_id: Uuid,
        payload: &'a RawValue,
    },
    /// `call:accept` with `{callId}`.
    Accept(Uuid),
    /// `call:reject` with `{callId}`.
    Reject(Uuid),
    /// `call:end` with `{callId}`.
    End(Uuid),
    /// `call:media` with `{callId, audioEnabled?, videoEnabled?, screenSharing?}`.
    Media(Uuid, MediaRequest),
    /// `call:stats` with `{callId, rtt?, jitter?, packetLoss?, bitrate?, relayed?}`.
    Stats(Uuid, Figures),
    /// `auth:refresh` with `{token}`: the socket's fresh token (see [`super::lease`]).
    Refresh(String),
    /// `call:sfu-offer` with `{callId, sdp}`: the participant's offer to the call's SFU.
    SfuOffer(Uuid, String),
    /// `call:sfu-answer` with `{callId, sdp}`: its answer to the SFU's offer.
    SfuAnswer(Uuid, String),
    /// `call:sfu-layer` with `{callId, userId, quality}`: which layer of `userId`'s video it
    /// receives (`low`, `medium`, `high` or `off`).
    SfuLayer {
        call_id: Uuid,
        user_id: Uuid,
        quality: Layer,
    },
}

/// Why a client event is refused before it is performed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No client event has this name: `unknown_event`.
    UnknownEvent(String),
    /// The data is no object, or a field is wrong or missing: `invalid_field`.
    InvalidField(String),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownEvent(_) => "unknown_event",
            Refusal::InvalidField(_) => "invalid_field",
        }
    }

    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            Refusal::UnknownEvent(event) => format!("unknown event `{event}`"),
            Refusal::InvalidField(message) => message.clone(),
        }
    }
}

/// The client events the call service performs, and the socket's own `auth:refresh` (the
/// others are [`Signal`]s).
const PERFORMED: [&str; 9] = [
    "call:accept",
    "call:reject",
    "call:end",
    "call:media",
    "call:stats",
    "auth:refresh",
    "call:sfu-offer",
    "call:sfu-answer",
    "call:sfu-layer",
];

impl<'a> ClientEvent<'a> {
    /// `event` with `data` (JSON text; `null` when the client sent none).
    pub fn parse(event: &str, data: &'a str) -> Result<ClientEvent<'a>, Refusal> {
        let signal = Signal::from_event(event);
        if signal.is_none() && !PERFORMED.contains(&event) {
            return Err(Refusal::UnknownEvent(event.to_owned()));
        }
        // serde would also read a struct from an array, field by field.
        if !data.trim_start().starts_with('{') {
            let message = "data: must be a JSON object";
            return Err(Refusal::InvalidField(message.into()));
        }
        Ok(match (event, signal) {
            (_, Some(signal)) => {
                let m: SignalIn<'a> = fields(data)?;
                let payload = match signal {
                    Signal::Offer => m.offer,
                    Signal::Answer => m.answer,
                    Signal::IceCandidate => m.candidate,
                };
                let Some(payload) = payload else {
                    let message = format!("`{}` is required", signal.field());
                    return Err(Refusal::InvalidField(message));
                };
                ClientEvent::Signal {
                    signal,
                    call_id: m.call_id,
                    target_user_id: m.target_user_id,
                    payload,
                }
            }
            ("call:accept", None) => ClientEvent::Accept(fields::<CallIn>(data)?.call_id),
            ("call:reject", None) => ClientEvent::Reject(fields::<CallIn>(data)?.call_id),
            ("call:end", None) => ClientEvent::End(fields::<CallIn>(data)?.call_id),
            ("call:media", None) => {
                let m: MediaIn = fields(data)?;
                let req = MediaRequest {
                    audio_enabled: m.audio_enabled,
                    video_enabled: m.video_enabled,
                    screen_sharing: m.screen_sharing,
                };
                ClientEvent::Media(m.call_id, req)
            }
            ("auth:refresh", None) => ClientEvent::Refresh(fields::<RefreshIn>(data)?.token),
            ("call:sfu-offer", None) => {
                let m: SdpIn = fields(data)?;
                ClientEvent::SfuOffer(m.call_id, m.sdp)
            }
            ("call:sfu-answer", None) => {
                let m: SdpIn = fields(data)?;
                ClientEvent::SfuAnswer(m.call_id, m.sdp)
            }
            ("call:sfu-layer", None) => {
                let m: LayerIn = fields(data)?;
                ClientEvent::SfuLayer {
                    call_id: m.call_id,
                    user_id: m.user_id,
                    quality: m.quality.0,
                }
            }
            _ => {
                let m: StatsIn = fields(data)?;
                let figures = Figures {
                    rtt: m.rtt,
                    jitter: m.jitter,
                    packet_loss: m.packet_loss,
                    bitrate: m.bitrate,
                    relayed: m.relayed,
                };
                ClientEvent::Stats(m.call_id, figures)
            }
        })
    }
}

/// The fields of `data`, an object; serde's complaint is what the client is told.
fn fields<'a, T: Deserialize<'a>>(data: &'a str) -> Result<T, Refusal> {
    serde_json::from_str(data).map_err(|e| Refusal::InvalidField(e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignalIn<'a> {
    call_id: Uuid,
    target_user_id: Uuid,
    #[serde(borrow)]
    offer: Option<&'a RawValue>,
    #[serde(borrow)]
    answer: Option<&'a RawValue>,
    /// Present, `null` included: a null candidate is the end of the candidates, relayed.
    #[serde(borrow, default, deserialize_with = "present")]
    candidate: Option<&'a RawValue>,
}

/// A field that is there, whatever its value (`null` included): `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CallIn {
    call_id: Uuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshIn {
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MediaIn {
    call_id: Uuid,
    audio_enabled: Option<bool>,
    video_enabled: Option<bool>,
    screen_sharing: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SdpIn {
    call_id: Uuid,
    sdp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LayerIn {
    call_id: Uuid,
    user_id: Uuid,
    quality: QualityIn,
}

/// `low`, `medium`, `high` or `off`.
struct QualityIn(Layer);

impl<'de> Deserialize<'de> for QualityIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <&str>::deserialize(d)?;
        Ok(QualityIn(match s {
            "low" => Layer::Low,
            "medium" => Layer::Medium,
            "high" => Layer::High,
            "off" => Layer::Off,
            other => {
                return Err(serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(other),
                    &"low, medium, high or off",
                ))
            }
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatsIn {
    call_id: Uuid,
    rtt: Option<f64>,
    jitter: Option<f64>,
    packet_loss: Option<f64>,
    bitrate: Option<f64>,
    relayed: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(event: &str, field: &str, value: &str) -> Result<Option<String>, Refusal> {
        let call = Uuid::from_u128(1);
        let data = format!(r#"{{"callId":"{call}","targetUserId":"{call}","{field}":{value}}}"#);
        match ClientEvent::parse(event, &data)? {
            ClientEvent::Signal { payload, .. } => Ok(Some(payload.get().to_owned())),
            _ => Ok(None),
        }
    }

    /// `candidate: null` (the end of the candidates) is a candidate, relayed as it is; a
    /// missing one is not. An offer or an answer must be there and not null.
    #[test]
    fn a_null_candidate_is_present_a_null_offer_is_not() {
        let ice = "call:ice-candidate";
        assert_eq!(signal(ice, "candidate", "null"), Ok(Some("null".into())));
        let c = r#"{"candidate":"","sdpMid":"0"}"#;
        assert_eq!(signal(ice, "candidate", c), Ok(Some(c.into())));
        let required = |f: &str| Err(Refusal::InvalidField(format!("`{f}` is required")));
        assert_eq!(signal(ice, "offer", "{}"), required("candidate"));
        assert_eq!(signal("call:offer", "offer", "null"), required("offer"));
        assert_eq!(signal("call:answer", "answer", "{}"), Ok(Some("{}".into())));
    }

    /// The name first, then that the data is an object, then its fields.
    #[test]
    fn refusals_name_what_is_wrong_in_order() {
        let unknown = ClientEvent::parse("call:nope", "[]").unwrap_err();
        assert_eq!(
            (unknown.code(), unknown.message()),
            ("unknown_event", "unknown event `call:nope`".into())
        );
        let array = ClientEvent::parse("call:end", "[\"x\"]").unwrap_err();
        assert_eq!(
            array,
            Refusal::InvalidField("data: must be a JSON object".into())
        );
        let missing = ClientEvent::parse("call:end", "{}").unwrap_err();
        assert_eq!(missing.code(), "invalid_field");
        assert!(missing.message().contains("callId"), "{missing:?}");
        let call = Uuid::from_u128(7);
        let data = format!(r#"{{"callId":"{call}"}}"#);
        let end = ClientEvent::parse("call:end", &data);
        assert!(matches!(end, Ok(ClientEvent::End(c)) if c == call));
    }

    /// `auth:refresh` takes a token, and nothing else.
    #[test]
    fn a_refresh_is_a_token() {
        let refresh = ClientEvent::parse("auth:refresh", r#"{"token":"a.b.c"}"#);
        assert!(matches!(refresh, Ok(ClientEvent::Refresh(t)) if t == "a.b.c"));
        for bad in ["{}", r#"{"token":1}"#, r#"{"token":"t","x":1}"#] {
            let refused = ClientEvent::parse("auth:refresh", bad).unwrap_err();
            assert_eq!(refused.code(), "invalid_field", "{bad}");
        }
    }
}
