//! The call operations: initiate, answer, reject, end, media, `call:stats`, the hub's ring and
//! user record, a call and the history as the API shows them, and TURN credentials.

use uuid::Uuid;

use super::{
    visible_call, AnswerResponse, CallError, CallResponse, CallService, CallView, EndResponse,
    HistoryResponse, InitiateRequest, InitiateResponse, MediaRequest, MediaResponse, Missing,
    RejectResponse, StatsResponse, HISTORY_MAX_LIMIT, STATS_EVERY,
};
use crate::call::{Call, InitiateError, MediaChange, ParticipantStatus, Refusal, User};
use crate::event::{Event, Payload, QualityReport};
use crate::quality::{Figures, MediaStats, Quality, MAX_BITRATE, MAX_MS};
use crate::store::Db;
use crate::time::Timestamp;
use crate::turn::TurnCredentials;

impl CallService {
    pub async fn initiate(
        &self,
        caller: &User,
        req: InitiateRequest,
    ) -> Result<InitiateResponse, CallError> {
        let settings = self.inner.settings.clone();
        let initiator = caller.clone();
        let inner = self.inner.clone();
        // The caller and duplicates dropped, the count checked, before any lookup: a body
        // full of ids costs the store nothing. (Inviting every member, the caller included, is
        // a normal way for a client to call a conversation.)
        let mut ids: Vec<Uuid> = Vec::with_capacity(req.participant_ids.len());
        for (i, &id) in req.participant_ids.iter().enumerate() {
            if id.is_nil() {
                return Err(CallError::InvalidField {
                    field: format!("participantIds[{i}]"),
                    message: "the nil UUID is not a user".into(),
                });
            }
            if id != caller.id && !ids.contains(&id) {
                ids.push(id);
                if ids.len() + 1 > settings.max_participants {
                    return Err(InitiateError::TooMany {
                        count: ids.len() + 1,
                        max: settings.max_participants,
                    }
                    .into());
                }
            }
        }
        let call = self
            .job(caller, move |db, now| {
                // Each live call holds a row the ring timer and the sockets keep working on: a
                // user starting calls in a loop must not make that work grow without bound.
                if db.joined_live_calls(initiator.id)? >= settings.max_live_per_user {
                    return Err(CallError::TooManyCalls {
                        max: settings.max_live_per_user,
                    });
                }
                let conv = req.conversation_id;
                let open = settings.open_conversations;
                let exists = db.conversation_exists(conv)?;
                if exists && !db.is_member(conv, initiator.id)? || !exists && !open {
                    return Err(CallError::NotFound(Missing::Conversation));
                }
                if exists {
                    // An existing conversation's members are its own (the admin API's, or its
                    // first call's), whatever the mode.
                    let mut outsiders = Vec::new();
                    for &id in &ids {
                        if !db.is_member(conv, id)? {
                            outsiders.push(id);
                        }
                    }
                    if !outsiders.is_empty() {
                        return Err(CallError::NotMembers(outsiders));
                    }
                }
                // The members of a chat app live in the chat app: an invitee switchboard has
                // not seen yet (in a new open conversation; a provisioned member not named by
                // a token yet) is a user all the same, bare until their first token names
                // them. Created here, so a refused call leaves no row behind.
                let mut invitees = Vec::with_capacity(ids.len());
                for id in ids {
                    let user = match db.user(id)? {
                        Some(u) => u,
                        None => {
                            db.ensure_user(id, now)?;
                            User {
                                id,
                                name: None,
                                email: None,
                            }
                        }
                    };
                    invitees.push(user);
                }
                let created = db.next_created_at(now);
                let (mut call, mut events) = Call::initiate(
                    Uuid::new_v4(),
                    conv,
                    req.kind,
                    initiator.clone(),
                    invitees,
                    settings.max_participants,
                    Uuid::new_v4,
                    created,
                )?;
                if !exists {
                    // Open conversations: the first call creates its conversation with its
                    // participants.
                    db.upsert_conversation(conv, None, now)?;
                    for p in &call.participants {
                        db.add_member(conv, p.user.id, now)?;
                    }
                }
                if settings
                    .sfu_from
                    .is_some_and(|n| call.participants.len() >= n)
                {
                    call.use_sfu(&mut events);
                }
                db.insert_call(&call)?;
                // The relay's counters as the call starts, before anything can end it.
                if inner.relay.is_some() {
                    let marks = call
                        .participants
                        .iter()
                        .filter_map(|p| Some((p.user.id, inner.relay_usage(p.user.id)?)))
                        .collect();
                    inner.marks().insert(call.id, marks);
                }
                db.emit(events);
                Ok(call)
            })
            .await?;
        self.inner.ringing.notify_one();
        Ok(InitiateResponse {
            call_id: call.id,
            status: call.status,
            participants: call.invitees().map(|p| p.view()).collect(),
            sfu_room_id: call.sfu_room_id.clone(),
        })
    }

    pub async fn answer(&self, caller: &User, call_id: Uuid) -> Result<AnswerResponse, CallError> {
        let user = caller.id;
        let max = self.inner.settings.max_live_per_user;
        let answer = move |call: &mut Call, now| Ok(((), call.answer(user, now)?));
        // Joining counts against `calls.max_live_per_user` as starting a call does (the other
        // calls: this answer is not in the store yet).
        let room = move |db: &Db| match db.joined_live_calls(user)? {
            n if n >= max => Err(CallError::TooManyCalls { max }),
            _ => Ok(()),
        };
        let ((), call) = self
            .transition_checked(caller, call_id, answer, room)
            .await?;
        Ok(AnswerResponse {
            call_id,
            status: call.status,
            started_at: call.started_at,
            sfu_room_id: call.sfu_room_id.clone(),
        })
    }

    pub async fn reject(&self, caller: &User, call_id: Uuid) -> Result<RejectResponse, CallError> {
        let call = self.act(caller, call_id, Call::reject).await?;
        Ok(RejectResponse {
            call_id,
            status: ParticipantStatus::Rejected,
            call_status: call.status,
        })
    }

    pub async fn end(&self, caller: &User, call_id: Uuid) -> Result<EndResponse, CallError> {
        let call = self.act(caller, call_id, Call::end).await?;
        let over = !call.status.is_live();
        Ok(EndResponse {
            call_id,
            status: if over { "ended" } else { "left" },
            call_status: call.status,
            duration: call.duration_seconds,
            end_reason: call.end_reason,
        })
    }

    pub async fn media(
        &self,
        caller: &User,
        call_id: Uuid,
        req: MediaRequest,
    ) -> Result<MediaResponse, CallError> {
        if req.audio_enabled.is_none()
            && req.video_enabled.is_none()
            && req.screen_sharing.is_none()
        {
            return Err(CallError::InvalidField {
                field: "body".into(),
                message: "give at least one of audioEnabled, videoEnabled, screenSharing".into(),
            });
        }
        let change = MediaChange {
            audio_enabled: req.audio_enabled,
            video_enabled: req.video_enabled,
            screen_sharing: req.screen_sharing,
        };
        let user = caller.id;
        let (media_state, _) = self
            .transition(caller, call_id, move |call, now| {
                call.set_media(user, change, now)
            })
            .await?;
        Ok(MediaResponse {
            success: true,
            media_state,
        })
    }
    /// `call:stats`: `caller`, joined in the live call `call_id`, reports their connection.
    /// Stored in their `media_stats` (a running summary) and `connection_quality`; the other
    /// live participants are sent `call:quality`. At most one report per [`STATS_EVERY`].
    pub async fn record_stats(
        &self,
        caller: &User,
        call_id: Uuid,
        figures: Figures,
    ) -> Result<StatsResponse, CallError> {
        let user = caller.id;
        let quality = self
            .job(caller, move |db, now| {
                record_figures(db, now, call_id, user, figures, Reporter::Client)
            })
            .await?;
        Ok(StatsResponse {
            success: true,
            quality,
        })
    }

    /// The SFU's view of `user`'s connection in the group call `call_id` (see
    /// `switchboard_sfu::Figures`): kept and sent as a `call:stats` of theirs would be, but
    /// apart from their own reports' rate limit. Figures out of range are clamped; a report
    /// for someone no longer joined in a live call is refused as theirs would be.
    pub async fn record_sfu_stats(
        &self,
        call_id: Uuid,
        user: Uuid,
        sfu: switchboard_sfu::Figures,
    ) -> Result<Quality, CallError> {
        let figures = Figures {
            rtt: sfu.rtt_ms.map(|v| v.clamp(0.0, MAX_MS)),
            jitter: sfu.jitter_ms.map(|v| v.clamp(0.0, MAX_MS)),
            packet_loss: sfu.loss_percent.map(|v| v.clamp(0.0, 100.0)),
            bitrate: sfu.bitrate.map(|v| v.clamp(0.0, MAX_BITRATE)),
            relayed: None,
        };
        self.at_now(move |db, now| record_figures(db, now, call_id, user, figures, Reporter::Sfu))
            .await
    }

    /// A socket of `user` connected with a valid token: their name and email are recorded from
    /// it (see [`Db::record_user`]), as any REST request of theirs does, so that an invitee
    /// who has only ever connected a socket is named in the calls.
    ///
    /// [`Db::record_user`]: crate::store::Db::record_user
    pub async fn record_user(&self, user: &User) -> Result<(), CallError> {
        self.job(user, |_, _| Ok(())).await
    }

    /// The hub delivered `call:incoming` to one of `user`'s sockets.
    pub async fn ring(&self, user: &User, call_id: Uuid) -> Result<(), CallError> {
        let ring = |call: &mut Call, user, now| {
            call.ring(user, now);
            Ok(Vec::new())
        };
        self.act(user, call_id, ring).await.map(|_| ())
    }

    pub async fn get(&self, caller: &User, call_id: Uuid) -> Result<CallResponse, CallError> {
        let user = caller.id;
        let call = self
            .job(caller, move |db, _| visible_call(db, user, call_id))
            .await?;
        Ok(CallResponse {
            call: CallView::from(&call),
        })
    }

    pub async fn history(
        &self,
        caller: &User,
        conversation: Option<Uuid>,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<HistoryResponse, CallError> {
        let user = caller.id;
        let limit = limit.clamp(1, HISTORY_MAX_LIMIT);
        let calls = self
            .job(caller, move |db, _| {
                if let Some(c) = conversation {
                    if !db.is_member(c, user)? {
                        return Err(CallError::NotFound(Missing::Conversation));
                    }
                }
                Ok(db.history(user, conversation, before, limit)?)
            })
            .await?;
        let next_before = (calls.len() == limit as usize)
            .then(|| calls.last().map(|c| c.created_at))
            .flatten();
        Ok(HistoryResponse {
            calls: calls.iter().map(CallView::from).collect(),
            next_before,
        })
    }

    /// TURN credentials for `caller`: the ones last minted if they are valid for more than
    /// half the TTL still, else new ones, recorded. So a client asking often gets the same
    /// credentials, and the table grows with users, not with requests.
    pub async fn turn_credentials(&self, caller: &User) -> Result<TurnCredentials, CallError> {
        let turn = self.inner.turn.clone();
        let user = caller.id;
        self.job(caller, move |db, now| {
            if let Some((username, expires)) = db.turn_credential(user, now + turn.ttl / 2)? {
                if let Some(body) = turn.reissue(&username, expires) {
                    return Ok(body);
                }
            }
            let body = turn.issue(&user.to_string(), now, turn.ttl);
            let expires = Timestamp::from_unix_millis(
                now.unix_seconds()
                    .saturating_add(turn.ttl.as_secs())
                    .saturating_mul(1000),
            );
            db.insert_turn_credential(
                user,
                &body.credentials.username,
                &body.credentials.credential,
                expires,
                now,
            )?;
            Ok(body)
        })
        .await
    }
}

/// Who reports a participant's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reporter {
    /// The participant itself (`call:stats`), at most once per [`STATS_EVERY`].
    Client,
    /// The SFU of its group call, from its RTCP view, at its own pace.
    Sfu,
}

/// Keeps `user`'s report of `figures` in their `media_stats` and `connection_quality`, and
/// sends the other joined participants `call:quality`: `user` must be joined in the live call.
fn record_figures(
    db: &mut Db,
    now: Timestamp,
    call_id: Uuid,
    user: Uuid,
    figures: Figures,
    reporter: Reporter,
) -> Result<Quality, CallError> {
    figures
        .validate()
        .map_err(|(field, message)| CallError::InvalidField {
            field: field.into(),
            message,
        })?;
    let call = visible_call(db, user, call_id)?;
    let me = call.participant(user).ok_or(Refusal::NotParticipant)?;
    if !call.status.is_live() || me.status != ParticipantStatus::Joined {
        return Err(Refusal::Conflict(format!(
            "only a participant joined in a live call reports stats (you are {}, the call is {})",
            me.status, call.status
        ))
        .into());
    }
    let mut stats: MediaStats = db
        .media_stats(call_id)?
        .into_iter()
        .find(|(u, _)| *u == user)
        .and_then(|(_, json)| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    if reporter == Reporter::Client && stats.last_at.is_some_and(|t| now < t + STATS_EVERY) {
        return Err(CallError::TooFrequent {
            what: "call:stats",
            every: STATS_EVERY,
        });
    }
    let quality = figures.grade();
    match reporter {
        Reporter::Client => stats.add(&figures, quality, now),
        Reporter::Sfu => stats.add_from_sfu(&figures, quality),
    }
    let json = serde_json::to_string(&stats).unwrap_or_else(|_| "{}".into());
    db.set_media_stats(me.id, &json, quality.as_str(), now)?;
    let to = call
        .participants
        .iter()
        .filter(|p| p.user.id != user && p.status == ParticipantStatus::Joined)
        .map(|p| p.user.id)
        .collect();
    db.emit(vec![Event {
        to,
        payload: Payload::Quality(QualityReport {
            call_id,
            user_id: user,
            quality,
            stats: figures,
        }),
    }]);
    Ok(quality)
}
