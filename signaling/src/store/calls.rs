//! Calls and their participants: insert, save and load, the live and ringing calls, history
//! pages and per-participant media stats.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension as _, Row};
use uuid::Uuid;

use super::{parsed, stamp, time, uuid, Db, StoreError};
use crate::call::{Call, MediaState, Participant, User};
use crate::time::Timestamp;

impl Db {
    pub fn insert_call(&self, call: &Call) -> Result<(), StoreError> {
        let fixed: [Value; 6] = [
            call.id.to_string().into(),
            call.conversation_id.to_string().into(),
            call.kind.as_str().to_owned().into(),
            call.initiated_by.to_string().into(),
            call.created_at.to_string().into(),
            call.sfu_room_id.clone().into(),
        ];
        self.conn
            .prepare_cached(
                "INSERT INTO calls (id, conversation_id, type, initiated_by, created_at,
                   sfu_room_id, status, started_at, ended_at, duration_seconds, end_reason,
                   quality_stats, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params_from_iter(fixed.into_iter().chain(call_state(call))))?;
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO call_participants (id, call_id, user_id, created_at, status, joined_at,
               left_at, media_state, connection_quality, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for p in &call.participants {
            let fixed: [Value; 4] = [
                p.id.to_string().into(),
                call.id.to_string().into(),
                p.user.id.to_string().into(),
                p.created_at.to_string().into(),
            ];
            stmt.execute(params_from_iter(
                fixed.into_iter().chain(participant_state(p)),
            ))?;
        }
        self.webhooks_for_insert(call)
    }

    /// Writes what changed from `before` to `after` (the same call), with the webhooks the
    /// change causes.
    pub fn save_call(&self, before: &Call, after: &Call) -> Result<(), StoreError> {
        let state = call_state(after);
        if call_state(before) != state {
            self.conn
                .prepare_cached(
                    "UPDATE calls SET status = ?2, started_at = ?3, ended_at = ?4,
                       duration_seconds = ?5, end_reason = ?6, quality_stats = ?7, updated_at = ?8
                     WHERE id = ?1",
                )?
                .execute(params_from_iter(
                    std::iter::once(Value::from(after.id.to_string())).chain(state),
                ))?;
        }
        let mut stmt = self.conn.prepare_cached(
            "UPDATE call_participants SET status = ?2, joined_at = ?3, left_at = ?4,
               media_state = ?5, connection_quality = ?6, updated_at = ?7
             WHERE id = ?1",
        )?;
        for p in &after.participants {
            if before.participants.iter().any(|b| b == p) {
                continue;
            }
            let id = Value::from(p.id.to_string());
            stmt.execute(params_from_iter(
                std::iter::once(id).chain(participant_state(p)),
            ))?;
        }
        self.webhooks_for_save(before, after)
    }

    /// The `media_stats` of a call's participants who have some, by user.
    pub fn media_stats(&self, call_id: Uuid) -> Result<Vec<(Uuid, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT user_id, media_stats FROM call_participants
             WHERE call_id = ?1 AND media_stats IS NOT NULL",
        )?;
        let rows = stmt.query_map([call_id.to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (user, stats) = row?;
            out.push((uuid(&user)?, stats));
        }
        Ok(out)
    }

    /// Writes a participant's `media_stats` (JSON text) and `connection_quality`.
    pub fn set_media_stats(
        &self,
        participant: Uuid,
        stats: &str,
        quality: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE call_participants SET media_stats = ?2, connection_quality = ?3,
                   updated_at = ?4
                 WHERE id = ?1",
            )?
            .execute(params![
                participant.to_string(),
                stats,
                quality,
                now.to_string()
            ])?;
        Ok(())
    }

    pub fn load_call(&self, id: Uuid) -> Result<Option<Call>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, conversation_id, type, status, initiated_by, started_at, ended_at,
                   duration_seconds, end_reason, quality_stats, created_at, updated_at,
                   sfu_room_id
                 FROM calls WHERE id = ?1",
            )?
            .query_row([id.to_string()], CallRow::read)
            .optional()?;
        row.map(|r| self.complete(r)).transpose()
    }

    fn complete(&self, r: CallRow) -> Result<Call, StoreError> {
        let id = uuid(&r.id)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.id, p.user_id, u.name, u.email, p.status, p.joined_at, p.left_at,
               p.media_state, p.connection_quality, p.created_at, p.updated_at
             FROM call_participants p JOIN users u ON u.id = p.user_id
             WHERE p.call_id = ?1 ORDER BY p.rowid",
        )?;
        let rows = stmt.query_map([&r.id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, Option<String>>(6)?,
                row.get::<_, String>(7)?,
                row.get::<_, Option<String>>(8)?,
                row.get::<_, String>(9)?,
                row.get::<_, String>(10)?,
            ))
        })?;
        let mut participants = Vec::new();
        for row in rows {
            let (pid, uid, name, email, status, joined, left, media, quality, created, updated) =
                row?;
            participants.push(Participant {
                id: uuid(&pid)?,
                user: User {
                    id: uuid(&uid)?,
                    name,
                    email,
                },
                status: parsed(&status)?,
                joined_at: time(joined)?,
                left_at: time(left)?,
                media_state: serde_json::from_str::<MediaState>(&media)
                    .map_err(|e| StoreError::Corrupt(format!("media_state: {e}")))?,
                connection_quality: quality,
                created_at: stamp(&created)?,
                updated_at: stamp(&updated)?,
            });
        }
        let initiated_by = uuid(&r.initiated_by)?;
        // The initiator first, then in the order they were invited.
        participants.sort_by_key(|p| p.user.id != initiated_by);
        Ok(Call {
            id,
            conversation_id: uuid(&r.conversation_id)?,
            kind: parsed(&r.kind)?,
            status: parsed(&r.status)?,
            initiated_by,
            started_at: time(r.started_at)?,
            ended_at: time(r.ended_at)?,
            duration_seconds: r
                .duration_seconds
                .map(|d| u64::try_from(d).map_err(|_| StoreError::Corrupt(format!("duration {d}"))))
                .transpose()?,
            end_reason: r.end_reason.as_deref().map(parsed).transpose()?,
            quality_stats: r.quality_stats,
            sfu_room_id: r.sfu_room_id,
            created_at: stamp(&r.created_at)?,
            updated_at: stamp(&r.updated_at)?,
            participants,
        })
    }

    /// The ids of every live call.
    pub fn live_calls(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM calls WHERE status = 'initiated' OR status = 'ringing' OR status = 'active'
             ORDER BY created_at",
        )?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        ids.map(|id| uuid(&id?)).collect()
    }

    /// The live calls `user` is in (joined, or still being rung), oldest first.
    pub fn live_calls_of(&self, user: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id FROM call_participants p JOIN calls c ON c.id = p.call_id
             WHERE p.user_id = ?1
               AND (p.status = 'invited' OR p.status = 'ringing' OR p.status = 'joined')
               AND (c.status = 'initiated' OR c.status = 'ringing' OR c.status = 'active')
             ORDER BY c.created_at",
        )?;
        let ids = stmt.query_map([user.to_string()], |r| r.get::<_, String>(0))?;
        ids.map(|id| uuid(&id?)).collect()
    }

    /// How many live calls `user` is joined in.
    pub fn joined_live_calls(&self, user: Uuid) -> Result<usize, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COUNT(*) FROM call_participants p JOIN calls c ON c.id = p.call_id
             WHERE p.user_id = ?1 AND p.status = 'joined'
               AND (c.status = 'initiated' OR c.status = 'ringing' OR c.status = 'active')",
        )?;
        let n: i64 = stmt.query_row([user.to_string()], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// How many calls are live in each live state (zeros included), for metrics.
    pub fn live_call_counts(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT status, COUNT(*) FROM calls
             WHERE status = 'initiated' OR status = 'ringing' OR status = 'active'
             GROUP BY status",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts = vec![("initiated", 0), ("ringing", 0), ("active", 0)];
        for row in rows {
            let (status, n) = row?;
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == status) {
                c.1 = n.max(0) as u64;
            }
        }
        Ok(counts)
    }

    /// The earliest `created_at` of a live call with someone still being rung, and the ids of
    /// the live calls with someone being rung that were created at or before `until`.
    pub fn ringing_calls(
        &self,
        until: Timestamp,
    ) -> Result<(Option<Timestamp>, Vec<Uuid>), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.created_at FROM calls c
             WHERE (c.status = 'initiated' OR c.status = 'ringing' OR c.status = 'active')
               AND EXISTS (SELECT 1 FROM call_participants p
                           WHERE p.call_id = c.id AND (p.status = 'invited' OR p.status = 'ringing'))
             ORDER BY c.created_at",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut first = None;
        let mut due = Vec::new();
        for row in rows {
            let (id, created) = row?;
            let created = stamp(&created)?;
            first = first.or(Some(created));
            if created <= until {
                due.push(uuid(&id)?);
            }
        }
        Ok((first, due))
    }

    /// Calls visible to `user`, newest first, created before `before`, at most `limit`: those
    /// of `conversation` (whose membership the caller has checked), or of every conversation
    /// `user` is a member of.
    pub fn history(
        &self,
        user: Uuid,
        conversation: Option<Uuid>,
        before: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<Call>, StoreError> {
        const COLUMNS: &str = "c.id, c.conversation_id, c.type, c.status, c.initiated_by, \
            c.started_at, c.ended_at, c.duration_seconds, c.end_reason, c.quality_stats, \
            c.created_at, c.updated_at, c.sfu_room_id";
        let before = before.map_or_else(|| "9999".to_owned(), |t| t.to_string());
        // Two statements, so that each keeps a plan walking an index newest first
        // (calls_by_conversation) rather than sorting the whole history.
        let rows: Vec<CallRow> = match conversation {
            Some(c) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM calls c WHERE c.conversation_id = ?1 AND c.created_at < ?2
                     ORDER BY c.created_at DESC LIMIT ?3"
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![c.to_string(), before, limit], CallRow::read)?;
                rows.collect::<Result<_, _>>()?
            }
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM conversation_members m
                       JOIN calls c ON c.conversation_id = m.conversation_id
                     WHERE m.user_id = ?1 AND c.created_at < ?2
                     ORDER BY c.created_at DESC LIMIT ?3"
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let rows =
                    stmt.query_map(params![user.to_string(), before, limit], CallRow::read)?;
                rows.collect::<Result<_, _>>()?
            }
        };
        rows.into_iter().map(|r| self.complete(r)).collect()
    }
}

/// Seconds as SQLite stores integers.
/// The columns of a call's row that its transitions change, in the order the statements bind
/// them after the fixed ones: status, started_at, ended_at, duration_seconds, end_reason,
/// quality_stats, updated_at.
fn call_state(c: &Call) -> [Value; 7] {
    [
        c.status.as_str().to_owned().into(),
        c.started_at.map(|t| t.to_string()).into(),
        c.ended_at.map(|t| t.to_string()).into(),
        c.duration_seconds.map(secs).into(),
        c.end_reason.map(|r| r.as_str().to_owned()).into(),
        c.quality_stats.clone().into(),
        c.updated_at.to_string().into(),
    ]
}

/// The same for a participant's row: status, joined_at, left_at, media_state,
/// connection_quality, updated_at.
fn participant_state(p: &Participant) -> [Value; 6] {
    [
        p.status.as_str().to_owned().into(),
        p.joined_at.map(|t| t.to_string()).into(),
        p.left_at.map(|t| t.to_string()).into(),
        media_json(&p.media_state).into(),
        p.connection_quality.clone().into(),
        p.updated_at.to_string().into(),
    ]
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

fn media_json(m: &MediaState) -> String {
    // Three booleans: serializing cannot fail.
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

struct CallRow {
    id: String,
    conversation_id: String,
    kind: String,
    status: String,
    initiated_by: String,
    started_at: Option<String>,
    ended_at: Option<String>,
    duration_seconds: Option<i64>,
    end_reason: Option<String>,
    quality_stats: Option<String>,
    created_at: String,
    updated_at: String,
    sfu_room_id: Option<String>,
}

impl CallRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<CallRow> {
        Ok(CallRow {
            id: r.get(0)?,
            conversation_id: r.get(1)?,
            kind: r.get(2)?,
            status: r.get(3)?,
            initiated_by: r.get(4)?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            duration_seconds: r.get(7)?,
            end_reason: r.get(8)?,
            quality_stats: r.get(9)?,
            created_at: r.get(10)?,
            updated_at: r.get(11)?,
            sfu_room_id: r.get(12)?,
        })
    }
}
