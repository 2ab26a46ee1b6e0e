//! Connection quality: what clients report with `call:stats`, the grade the hub derives from
//! it, the running summary kept per participant (`call_participants.media_stats`) and the
//! call's summary at its end (`calls.quality_stats`).
//!
//! A report carries any of four figures a WebRTC client reads from `getStats()`:
//! `rtt` (round-trip time, ms), `jitter` (ms), `packetLoss` (percent of packets lost, 0–100)
//! and `bitrate` (bits per second received), and optionally `relayed` (whether the selected
//! candidate pair goes through a TURN relay).
//!
//! The grade is the worst any figure given earns (bitrate is not graded: what is enough
//! depends on the media):
//!
//! | grade     | rtt      | jitter  | packetLoss |
//! |-----------|----------|---------|------------|
//! | excellent | ≤ 150 ms | ≤ 20 ms | ≤ 1 %      |
//! | good      | ≤ 300 ms | ≤ 40 ms | ≤ 3 %      |
//! | fair      | ≤ 500 ms | ≤ 80 ms | ≤ 8 %      |
//! | poor      | more     | more    | more       |
//!
//! The first row is about where a call feels like talking face to face (ITU-T G.114 puts the
//! comfortable one-way delay under 150 ms, and Opus hides 1 % loss); the last is where
//! conversation breaks down.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// The grades, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Excellent,
    Good,
    Fair,
    Poor,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Excellent => "excellent",
            Quality::Good => "good",
            Quality::Fair => "fair",
            Quality::Poor => "poor",
        }
    }
}

/// The limits of each grade but the last: `(rtt ms, jitter ms, packet loss %)`.
const LIMITS: [(Quality, f64, f64, f64); 3] = [
    (Quality::Excellent, 150.0, 20.0, 1.0),
    (Quality::Good, 300.0, 40.0, 3.0),
    (Quality::Fair, 500.0, 80.0, 8.0),
];

/// The largest values a report may carry: beyond them a client is confused, not slow.
pub(crate) const MAX_MS: f64 = 60_000.0;
pub(crate) const MAX_BITRATE: f64 = 100e9;

/// The figures of one `call:stats` (all optional, at least one given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Figures {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed: Option<bool>,
}

impl Figures {
    /// Checks the figures: `Err((field, message))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let checks = [
            ("rtt", self.rtt, MAX_MS, "milliseconds"),
            ("jitter", self.jitter, MAX_MS, "milliseconds"),
            ("packetLoss", self.packet_loss, 100.0, "percent"),
            ("bitrate", self.bitrate, MAX_BITRATE, "bits per second"),
        ];
        if checks.iter().all(|(_, v, _, _)| v.is_none()) {
            return Err((
                "data",
                "give at least one of rtt, jitter, packetLoss, bitrate".into(),
            ));
        }
        for (field, value, max, unit) in checks {
            if let Some(v) = value {
                if !(0.0..=max).contains(&v) {
                    return Err((field, format!("{v} is not between 0 and {max} ({unit})")));
                }
            }
        }
        Ok(())
    }

    /// The grade these figures earn (see the module doc).
    pub fn grade(&self) -> Quality {
        let within = |v: Option<f64>, limit: f64| !matches!(v, Some(v) if v > limit);
        LIMITS
            .iter()
            .find(|(_, rtt, jitter, loss)| {
                within(self.rtt, *rtt)
                    && within(self.jitter, *jitter)
                    && within(self.packet_loss, *loss)
            })
            .map_or(Quality::Poor, |(q, ..)| *q)
    }
}

/// The average and the maximum of one figure over a participant's reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Reports that gave it.
    pub n: u64,
    pub avg: f64,
    pub max: f64,
}

impl Series {
    fn add(&mut self, v: Option<f64>) {
        let Some(v) = v else { return };
        self.n += 1;
        self.avg += (v - self.avg) / self.n as f64;
        self.max = if self.n == 1 { v } else { self.max.max(v) };
    }

    fn avg(&self) -> Option<f64> {
        (self.n > 0).then_some(self.avg)
    }
}

/// `call_participants.media_stats`: a participant's reports so far, summarised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaStats {
    pub reports: u64,
    /// The last report, and when it came.
    pub last: Figures,
    pub last_at: Option<Timestamp>,
    pub rtt: Series,
    pub jitter: Series,
    pub packet_loss: Series,
    pub bitrate: Series,
    /// How many reports earned each grade.
    pub grades: Grades,
    /// Reports that said the path was relayed.
    pub relayed_reports: u64,
    /// Of `reports`, those the SFU made from its RTCP view of the participant's connection
    /// (a group call's), not the participant's own.
    #[serde(default)]
    pub sfu_reports: u64,
}

/// Report counts by grade.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Grades {
    pub excellent: u64,
    pub good: u64,
    pub fair: u64,
    pub poor: u64,
}

impl MediaStats {
    /// Adds a report the participant made at `at` that earned `grade`.
    pub fn add(&mut self, f: &Figures, grade: Quality, at: Timestamp) {
        self.last_at = Some(at);
        self.fold(f, grade);
    }

    /// Adds a report of the SFU's that earned `grade` (the participant's own reports keep
    /// their pace: `last_at` is theirs).
    pub fn add_from_sfu(&mut self, f: &Figures, grade: Quality) {
        self.sfu_reports += 1;
        self.fold(f, grade);
    }

    fn fold(&mut self, f: &Figures, grade: Quality) {
        self.reports += 1;
        self.last = *f;
        self.rtt.add(f.rtt);
        self.jitter.add(f.jitter);
        self.packet_loss.add(f.packet_loss);
        self.bitrate.add(f.bitrate);
        match grade {
            Quality::Excellent => self.grades.excellent += 1,
            Quality::Good => self.grades.good += 1,
            Quality::Fair => self.grades.fair += 1,
            Quality::Poor => self.grades.poor += 1,
        }
        self.relayed_reports += u64::from(f.relayed == Some(true));
    }

    /// The grade of the averages: the participant's quality over the whole call.
    pub fn overall(&self) -> Quality {
        Figures {
            rtt: self.rtt.avg(),
            jitter: self.jitter.avg(),
            packet_loss: self.packet_loss.avg(),
            ..Figures::default()
        }
        .grade()
    }
}

/// What the relay carried for a participant, in payload bytes and packets each way: their
/// allocations' counters as the daemon reads them from the relay (see
/// [`crate::service::RelayUsageFn`]), and in `quality_stats` the difference from the call's
/// start to its end. The relay's own type stays with the relay: the daemon converts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayUsage {
    pub packets_to_peer: u64,
    pub bytes_to_peer: u64,
    pub packets_from_peer: u64,
    pub bytes_from_peer: u64,
}

impl RelayUsage {
    /// What was relayed since `earlier` (a reading of the same counters), each counter at
    /// least 0.
    pub fn since(self, earlier: RelayUsage) -> RelayUsage {
        RelayUsage {
            packets_to_peer: self.packets_to_peer.saturating_sub(earlier.packets_to_peer),
            bytes_to_peer: self.bytes_to_peer.saturating_sub(earlier.bytes_to_peer),
            packets_from_peer: self
                .packets_from_peer
                .saturating_sub(earlier.packets_from_peer),
            bytes_from_peer: self.bytes_from_peer.saturating_sub(earlier.bytes_from_peer),
        }
    }
}

/// One participant in `calls.quality_stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantQuality {
    pub user_id: Uuid,
    /// The grade of the participant's average figures; `null` without reports.
    pub quality: Option<Quality>,
    pub reports: u64,
    pub rtt: Option<Series>,
    pub jitter: Option<Series>,
    pub packet_loss: Option<Series>,
    pub bitrate: Option<Series>,
    pub grades: Grades,
    pub relayed_reports: u64,
    /// Of `reports`, the SFU's (a group call's): its RTCP view of the participant.
    pub sfu_reports: u64,
    /// The relay's own counters for the participant during the call; `null` when the daemon
    /// runs no relay.
    pub relay: Option<RelayUsage>,
}

impl ParticipantQuality {
    pub fn new(user_id: Uuid, stats: Option<&MediaStats>, relay: Option<RelayUsage>) -> Self {
        let series = |s: Series| (s.n > 0).then_some(s);
        let empty = MediaStats::default();
        let m = stats.unwrap_or(&empty);
        ParticipantQuality {
            user_id,
            quality: (m.reports > 0).then(|| m.overall()),
            reports: m.reports,
            rtt: series(m.rtt),
            jitter: series(m.jitter),
            packet_loss: series(m.packet_loss),
            bitrate: series(m.bitrate),
            grades: m.grades,
            relayed_reports: m.relayed_reports,
            sfu_reports: m.sfu_reports,
            relay,
        }
    }
}

/// `calls.quality_stats`: written when a call that was answered ends.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallQuality {
    /// The worst participant's quality; `null` when nobody reported.
    pub quality: Option<Quality>,
    /// Payload bytes the relay carried for the call, all participants and both ways.
    pub relay_bytes: u64,
    pub participants: Vec<ParticipantQuality>,
}

impl CallQuality {
    pub fn new(participants: Vec<ParticipantQuality>) -> CallQuality {
        CallQuality {
            quality: participants.iter().filter_map(|p| p.quality).max(),
            relay_bytes: participants
                .iter()
                .filter_map(|p| p.relay)
                .map(|r| r.bytes_to_peer + r.bytes_from_peer)
                .sum(),
            participants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(rtt: f64, jitter: f64, loss: f64) -> Figures {
        Figures {
            rtt: Some(rtt),
            jitter: Some(jitter),
            packet_loss: Some(loss),
            ..Figures::default()
        }
    }

    #[test]
    fn the_grade_is_the_worst_any_figure_earns() {
        assert_eq!(figures(20.0, 2.0, 0.0).grade(), Quality::Excellent);
        assert_eq!(figures(150.0, 20.0, 1.0).grade(), Quality::Excellent);
        assert_eq!(figures(151.0, 2.0, 0.0).grade(), Quality::Good);
        assert_eq!(figures(20.0, 41.0, 0.0).grade(), Quality::Fair);
        assert_eq!(figures(20.0, 2.0, 8.5).grade(), Quality::Poor);
        assert_eq!(figures(499.0, 79.0, 7.9).grade(), Quality::Fair);
        // Missing figures do not count against; bitrate is not graded.
        let only_rtt = Figures {
            rtt: Some(250.0),
            bitrate: Some(1.0),
            ..Figures::default()
        };
        assert_eq!(only_rtt.grade(), Quality::Good);
    }

    #[test]
    fn reports_are_checked() {
        assert!(figures(10.0, 1.0, 0.0).validate().is_ok());
        assert_eq!(Figures::default().validate().unwrap_err().0, "data");
        assert_eq!(figures(-1.0, 1.0, 0.0).validate().unwrap_err().0, "rtt");
        assert_eq!(
            figures(1.0, 1.0, 100.5).validate().unwrap_err().0,
            "packetLoss"
        );
        let relayed_only = Figures {
            relayed: Some(true),
            ..Figures::default()
        };
        assert!(relayed_only.validate().is_err());
        let unknown = serde_json::from_str::<Figures>(r#"{"rtt": 1, "mos": 4}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn media_stats_summarise_the_reports() {
        let t = Timestamp::from_unix_millis(1_700_000_000_000);
        let mut m = MediaStats::default();
        m.add(&figures(100.0, 10.0, 0.0), Quality::Excellent, t);
        m.add(&figures(300.0, 30.0, 2.0), Quality::Good, t);
        let bitrate_only = Figures {
            bitrate: Some(500_000.0),
            relayed: Some(true),
            ..Figures::default()
        };
        m.add(&bitrate_only, Quality::Excellent, t);
        assert_eq!(m.reports, 3);
        assert_eq!(
            m.rtt,
            Series {
                n: 2,
                avg: 200.0,
                max: 300.0
            }
        );
        assert_eq!(m.bitrate.n, 1);
        assert_eq!((m.grades.excellent, m.grades.good), (2, 1));
        assert_eq!(m.relayed_reports, 1);
        assert_eq!(m.overall(), Quality::Good);
        // Stored as JSON and read back.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<MediaStats>(&json).unwrap(), m);

        let quiet = ParticipantQuality::new(Uuid::from_u128(2), None, None);
        let call = CallQuality::new(vec![
            ParticipantQuality::new(
                Uuid::from_u128(1),
                Some(&m),
                Some(RelayUsage {
                    bytes_to_peer: 10,
                    bytes_from_peer: 5,
                    ..RelayUsage::default()
                }),
            ),
            quiet,
        ]);
        assert_eq!(call.quality, Some(Quality::Good));
        assert_eq!(call.relay_bytes, 15);
        assert_eq!(call.participants[1].quality, None);
    }
}
