//! Each participant's connection as the SFU sees it, from its own RTCP view (str0m's stats,
//! every [`STATS_EVERY`]): what signaling grades and keeps as the call's quality, so that a
//! group call's quality no longer depends on clients reporting it.
//!
//! The figures are the participant's, as its own `call:stats` would give them: the round trip
//! to it, the worse of its up- and downlink loss (what the SFU lost of its media, what it lost
//! of the SFU's by its receiver reports), the worst jitter either side measured, and the media
//! bit rate it receives.

use std::time::{Duration, Instant};

use str0m::media::MediaKind;
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

/// How often str0m gives each peer's stats, and so a participant's figures.
pub const STATS_EVERY: Duration = Duration::from_secs(5);

/// One participant's connection over the last [`STATS_EVERY`]; a figure the SFU could not
/// measure yet (no receiver report, say) is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub rtt_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub loss_percent: Option<f64>,
    /// Media bits per second the SFU sent the participant.
    pub bitrate: Option<f64>,
}

/// What is gathered of a peer's stats between two [`PeerStats`].
#[derive(Default)]
pub(crate) struct Watch {
    jitter_ms: Option<f64>,
    rtt_ms: Option<f64>,
    /// The media bytes sent to the peer at the last [`PeerStats`], and when.
    sent: Option<(Instant, u64)>,
}

fn ms_of(units: u32, kind: MediaKind) -> f64 {
    let rate = if kind == MediaKind::Audio { 48.0 } else { 90.0 };
    f64::from(units) / rate
}

fn worst(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Watch {
    /// A stream the peer sends us (of `kind`): the jitter we measured.
    pub fn ingress(&mut self, kind: MediaKind, s: &MediaIngressStats) {
        if s.packets > 0 {
            self.jitter_ms = worst(self.jitter_ms, Some(ms_of(s.jitter, kind)));
        }
    }

    /// A stream we send the peer (of `kind`): the jitter and round trip by its reports.
    pub fn egress(&mut self, kind: MediaKind, s: &MediaEgressStats) {
        if let Some(r) = &s.remote {
            self.jitter_ms = worst(self.jitter_ms, Some(ms_of(r.jitter, kind)));
        }
        let rtt = s.rtt.map(|d| d.as_secs_f64() * 1000.0);
        self.rtt_ms = worst(self.rtt_ms, rtt);
    }

    /// What the direct egress read of the peer's reports about the streams it sent: the round
    /// trip and the worst jitter (ms).
    pub fn reported(&mut self, rtt_ms: Option<f64>, jitter_ms: Option<f64>) {
        self.jitter_ms = worst(self.jitter_ms, jitter_ms);
        self.rtt_ms = worst(self.rtt_ms, rtt_ms);
    }

    /// The peer's stats, after its streams': the figures of the interval, and a new one.
    pub fn peer(&mut self, s: &PeerStats) -> Figures {
        let loss = worst(
            s.ingress_loss_fraction.map(f64::from),
            s.egress_loss_fraction.map(f64::from),
        );
        let bitrate = self.sent.and_then(|(at, bytes)| {
            let secs = s.timestamp.checked_duration_since(at)?.as_secs_f64();
            (secs > 0.0).then(|| s.bytes_tx.saturating_sub(bytes) as f64 * 8.0 / secs)
        });
        self.sent = Some((s.timestamp, s.bytes_tx));
        let rtt = s.rtt.map(|d| d.as_secs_f64() * 1000.0);
        let figures = Figures {
            rtt_ms: rtt.or(self.rtt_ms),
            jitter_ms: self.jitter_ms,
            loss_percent: loss.map(|l| (l * 100.0).clamp(0.0, 100.0)),
            bitrate,
        };
        (self.jitter_ms, self.rtt_ms) = (None, None);
        figures
    }
}
