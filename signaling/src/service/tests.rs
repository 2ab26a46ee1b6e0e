//! The call service's rules in time, on a clock the tests move by hand (from a fixed zero,
//! `T0`): the ring timeout to the millisecond, the `call:stats` rate limit, the reuse of TURN
//! credentials; and the relay's figures in `quality_stats`, read through the function the
//! service is given.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::call::tests::{ALICE, BOB, CONVERSATION_ID, RING_TIMEOUT, T0};
use crate::call::{CallStatus, CallType, EndReason};
use crate::event::LogSink;
use crate::quality::{Figures, MediaStats, Quality};

// T0 is far from the system's clock: a rule that read that clock instead of the service's
// would be seen.
const TTL: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

/// A service over a fresh store, on a clock set to `T0` that only the test moves.
struct World {
    calls: CallService,
    now: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(relay: Option<RelayUsageFn>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("calls.db"), Arc::new(LogSink), None).unwrap();
        let settings = Settings {
            ring_timeout: RING_TIMEOUT,
            reconnect_grace: Duration::from_secs(30),
            max_participants: 8,
            open_conversations: true,
            max_live_per_user: 4,
            sfu_from: None,
        };
        let turn = TurnIssuer::new(b"secret", TTL, vec!["turn:127.0.0.1:3478".into()]);
        let now = Arc::new(AtomicU64::new(T0.unix_millis()));
        let hands = now.clone();
        let clock = Clock::new(move || Timestamp::from_unix_millis(hands.load(Ordering::SeqCst)));
        World {
            calls: CallService::new(store, settings, turn, relay, None, clock),
            now,
            _dir: dir,
        }
    }

    fn set(&self, t: Timestamp) {
        self.now.store(t.unix_millis(), Ordering::SeqCst);
    }

    /// Alice calls Bob, now.
    async fn call(&self) -> Uuid {
        let req = InitiateRequest {
            conversation_id: CONVERSATION_ID,
            kind: CallType::Audio,
            participant_ids: vec![BOB],
        };
        self.calls
            .initiate(&user(ALICE), req)
            .await
            .unwrap()
            .call_id
    }

    async fn view(&self, call: Uuid) -> CallView {
        self.calls.get(&user(ALICE), call).await.unwrap().call
    }

    /// Alice's call answered by Bob, and Alice's first report in it (an RTT of 40 ms), at T0.
    async fn answered_with_a_report() -> (World, Uuid, Figures) {
        let w = World::new(None);
        let call = w.call().await;
        w.calls.answer(&user(BOB), call).await.unwrap();
        let figures = Figures {
            rtt: Some(40.0),
            ..Figures::default()
        };
        w.calls
            .record_stats(&user(ALICE), call, figures)
            .await
            .unwrap();
        (w, call, figures)
    }

    /// `who`'s running summary of reports in `call`, as stored.
    async fn media_stats(&self, call: Uuid, who: Uuid) -> MediaStats {
        let rows = self
            .calls
            .store()
            .run(move |db| db.media_stats(call))
            .await
            .unwrap();
        let json = rows.into_iter().find(|(u, _)| *u == who).unwrap().1;
        serde_json::from_str(&json).unwrap()
    }
}

fn user(id: Uuid) -> User {
    User {
        id,
        name: None,
        email: None,
    }
}

#[tokio::test]
async fn an_answer_a_millisecond_before_the_ring_timeout_is_taken() {
    let w = World::new(None);
    let call = w.call().await;
    w.set(T0 + RING_TIMEOUT - MS);
    let answered = w.calls.answer(&user(BOB), call).await.unwrap();
    assert_eq!(answered.status, CallStatus::Active);
    assert_eq!(answered.started_at, Some(T0 + RING_TIMEOUT - MS));
}

#[tokio::test]
async fn at_the_ring_timeout_the_invitation_is_missed_and_the_answer_refused() {
    let w = World::new(None);
    let call = w.call().await;
    w.set(T0 + RING_TIMEOUT);
    let refused = w.calls.answer(&user(BOB), call).await;
    assert!(
        matches!(refused, Err(CallError::Refused(Refusal::Conflict(_)))),
        "{refused:?}"
    );
    // The timeout's change stands although the answer was refused; it happened at the
    // deadline, by the service's clock.
    let view = w.view(call).await;
    assert_eq!(view.status, CallStatus::Missed);
    assert_eq!(view.end_reason, Some(EndReason::NoAnswer));
    assert_eq!(view.ended_at, Some(T0 + RING_TIMEOUT));
    assert_eq!(view.created_at, T0);
}

#[tokio::test]
async fn the_ring_timer_sweep_expires_only_what_is_due_and_says_when_next() {
    let w = World::new(None);
    let call = w.call().await;
    let early = w
        .calls
        .expire_ringing(T0 + RING_TIMEOUT - MS)
        .await
        .unwrap();
    assert_eq!(early, Some(T0 + RING_TIMEOUT));
    assert_eq!(w.view(call).await.status, CallStatus::Initiated);
    let due = w.calls.expire_ringing(T0 + RING_TIMEOUT).await.unwrap();
    assert_eq!(due, None);
    assert_eq!(w.view(call).await.status, CallStatus::Missed);
}

#[tokio::test]
async fn stats_are_taken_at_most_once_a_second_by_the_clock() {
    let (w, call, figures) = World::answered_with_a_report().await;
    w.set(T0 + STATS_EVERY - MS);
    let again = w.calls.record_stats(&user(ALICE), call, figures).await;
    assert!(
        matches!(again, Err(CallError::TooFrequent { .. })),
        "{again:?}"
    );
    w.set(T0 + STATS_EVERY);
    w.calls
        .record_stats(&user(ALICE), call, figures)
        .await
        .unwrap();
}

/// The SFU's view of a participant's connection is kept beside its own reports, neither
/// limiting the other's pace; its figures out of range are clamped, and it is refused for
/// someone not joined.
#[tokio::test]
async fn the_sfus_reports_keep_their_own_pace_beside_the_participants() {
    let (w, call, figures) = World::answered_with_a_report().await;
    let sfu = switchboard_sfu::Figures {
        rtt_ms: Some(30.0),
        jitter_ms: Some(1e9),
        loss_percent: Some(0.5),
        bitrate: Some(1e6),
    };
    for _ in 0..2 {
        let graded = w.calls.record_sfu_stats(call, ALICE, sfu).await.unwrap();
        assert_eq!(graded, Quality::Poor, "a jitter of 60 s, clamped, is poor");
    }
    w.set(T0 + STATS_EVERY);
    w.calls
        .record_stats(&user(ALICE), call, figures)
        .await
        .unwrap();
    let stranger = w
        .calls
        .record_sfu_stats(call, Uuid::from_u128(99), sfu)
        .await;
    assert!(stranger.is_err(), "{stranger:?}");
    let stats = w.media_stats(call, ALICE).await;
    assert_eq!((stats.reports, stats.sfu_reports), (4, 2));
    assert_eq!(stats.jitter.max, 60_000.0);
}

#[tokio::test]
async fn turn_credentials_are_reused_while_valid_for_more_than_half_their_ttl() {
    let w = World::new(None);
    let first = w.calls.turn_credentials(&user(ALICE)).await.unwrap();
    assert_eq!(first.expires_at, "2023-11-14T23:13:20Z");
    w.set(T0 + TTL / 2 - MS * 1000);
    let same = w.calls.turn_credentials(&user(ALICE)).await.unwrap();
    assert_eq!(same.credentials.username, first.credentials.username);
    w.set(T0 + TTL / 2 + MS * 1000);
    let fresh = w.calls.turn_credentials(&user(ALICE)).await.unwrap();
    assert_ne!(fresh.credentials.username, first.credentials.username);
    // Only the first has expired just past an hour after it was minted.
    let sweep = |t| w.calls.delete_expired_turn_credentials(t);
    assert_eq!(sweep(T0 + TTL).await.unwrap(), 0);
    assert_eq!(sweep(T0 + TTL + MS).await.unwrap(), 1);
}

#[tokio::test]
async fn quality_stats_carry_what_the_relay_counted_during_the_call() {
    // Alice's counter as the relay reports it: it grows by 1,000 bytes each reading.
    let readings = Arc::new(AtomicU64::new(0));
    let read = readings.clone();
    let relay: RelayUsageFn = Arc::new(move |user| {
        let n = read.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes = if user == ALICE { 1000 * n } else { 0 };
        RelayUsage {
            bytes_to_peer: bytes,
            ..RelayUsage::default()
        }
    });
    let w = World::new(Some(relay));
    let call = w.call().await;
    w.set(T0 + Duration::from_secs(1));
    w.calls.answer(&user(BOB), call).await.unwrap();
    w.set(T0 + Duration::from_secs(61));
    w.calls.end(&user(ALICE), call).await.unwrap();
    let view = w.view(call).await;
    assert_eq!(view.duration, Some(60));
    let quality = view.quality_stats.unwrap();
    // Read at the start (once per participant) and at the end: Alice's grew by 2,000.
    assert_eq!(readings.load(Ordering::SeqCst), 4);
    assert_eq!(quality["relayBytes"], 2000);
    assert_eq!(quality["participants"][0]["relay"]["bytesToPeer"], 2000);
    assert_eq!(quality["participants"][1]["relay"]["bytesToPeer"], 0);
}
