//! switchboard's SFU (selective forwarding unit): the media of group calls, forwarded on the
//! server so that each participant sends its camera and microphone once, whatever the size of
//! the call.
//!
//! Built on str0m, sans-IO WebRTC: ICE-lite (the SFU has one public address; clients do the
//! checks), DTLS-SRTP, RTP and RTCP with NACK/RTX, and TWCC with its bandwidth estimate, by
//! which each subscriber's simulcast layers are chosen. Media is forwarded as RTP packets, never
//! decoded; the codec payload is read only for its first bytes, to tell key frames
//! ([`core::keyframe`]).
//!
//! # Layout
//! - [`core`]: the sans-IO SFU: peers, demultiplexing, forwarding, negotiation (`core/mod.rs`);
//!   a peer's state (`core/peer.rs`); simulcast layer switching and RTP renumbering
//!   (`core/rewrite.rs`); which layer fits each subscriber's bandwidth estimate
//!   (`core/bwe.rs`); key frame detection (`core/keyframe.rs`); the STUN USERNAME read for
//!   demultiplexing (`core/stun.rs`).
//! - [`srtp`], [`rtp`] and [`twcc`]: SRTP and SRTCP of our own with the connections' DTLS
//!   keys, RTP packets read in place, and transport-wide congestion control feedback read and
//!   written: the direct egress protects with the first and reads the last; together they are
//!   what an ingress of our own needs to take publishers' packets without a str0m connection
//!   parsing each one.
//! - `io` (feature `io`): the driver: one UDP socket for all media, on a thread of its own.
//!
//! # Privacy
//! DTLS-SRTP ends here, as in every SFU without end-to-end encryption: the server sees the
//! media of group calls. Forwarding reads only RTP headers, header extensions and the codec's
//! payload header, which end-to-end encryption of the encoded frames leaves readable.

pub mod client;
pub mod core;
#[cfg(feature = "io")]
pub mod io;
pub mod rtp;
pub mod srtp;
pub mod twcc;

/// The WebRTC stack underneath, for what this crate's API passes through (media kinds, say).
pub use str0m;

pub use crate::core::quality::Figures;
pub use crate::core::{
    Caps, Counters, Quality, Sfu, SfuConfig, SfuError, SfuEvent, TrackInfo, Transmit,
    START_ESTIMATE,
};

/// The crypto provider str0m uses for DTLS and SRTP here: aws-lc-rs, its DTLS instances noting
/// each connection's SRTP keys ([`srtp::keys`]).
pub fn crypto() -> std::sync::Arc<str0m::crypto::CryptoProvider> {
    std::sync::Arc::new(srtp::keys::provider())
}
