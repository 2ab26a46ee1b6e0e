//! Users, conversations and their members: the rows the admin API provisions and the call
//! rules check membership against; and users' revocations (version 3).

use rusqlite::{params, OptionalExtension as _};
use uuid::Uuid;

use super::{stamp, time, uuid, Db, StoreError};
use crate::call::User;
use crate::time::Timestamp;

/// Version 3: revocations (`DELETE /api/admin/users/{userId}/sessions`). `revoked_at`: the
/// user's tokens issued (`iat`) in that second or before are refused; `relay_revoked_until`:
/// until then the relay refuses their TURN credentials that expire by then (the ones minted
/// before the revocation).
pub(super) const REVOCATION: &str = "
ALTER TABLE users ADD COLUMN revoked_at TEXT
  CHECK (revoked_at GLOB '????-??-??T??:??:??.???Z');
ALTER TABLE users ADD COLUMN relay_revoked_until TEXT
  CHECK (relay_revoked_until GLOB '????-??-??T??:??:??.???Z');
";

/// A user's revocation: their tokens issued at or before `at` (in whole seconds, as `iat` is)
/// are refused, and the relay refuses their TURN credentials expiring by `relay_until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub user: Uuid,
    pub at: Timestamp,
    pub relay_until: Timestamp,
}

/// A conversation with its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub name: Option<String>,
    pub members: Vec<User>,
}

impl Db {
    /// Inserts or updates a user, name and email as given (the admin API); a user already
    /// stored so is left untouched (no write).
    pub fn upsert_user(&self, user: &User, now: Timestamp) -> Result<(), StoreError> {
        let now = now.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, name, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
                   updated_at = excluded.updated_at
                 WHERE name IS NOT excluded.name OR email IS NOT excluded.email",
            )?
            .execute(params![user.id.to_string(), user.name, user.email, now])?;
        Ok(())
    }

    /// Records the user a token stands for: inserted if new; a name or email the token carries
    /// replaces the stored one, one it lacks keeps it (so a bare token does not erase what the
    /// admin API provisioned). No write when nothing changes.
    pub fn record_user(&self, user: &User, now: Timestamp) -> Result<(), StoreError> {
        let now = now.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, name, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (id) DO UPDATE SET name = coalesce(excluded.name, name),
                   email = coalesce(excluded.email, email), updated_at = excluded.updated_at
                 WHERE coalesce(excluded.name, name) IS NOT name
                    OR coalesce(excluded.email, email) IS NOT email",
            )?
            .execute(params![user.id.to_string(), user.name, user.email, now])?;
        Ok(())
    }

    /// Makes sure a user row exists, keeping its name and email if it does.
    pub fn ensure_user(&self, id: Uuid, now: Timestamp) -> Result<(), StoreError> {
        let now = now.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, created_at, updated_at) VALUES (?1, ?2, ?2)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![id.to_string(), now])?;
        Ok(())
    }

    /// Records `r` (creating the user if need be); a revocation of the user's relay access
    /// until later than `r.relay_until` stays. Returns the stored revocation.
    pub fn revoke(&self, r: Revocation) -> Result<Revocation, StoreError> {
        let (user, at) = (r.user.to_string(), r.at.to_string());
        self.ensure_user(r.user, r.at)?;
        let until: String = self
            .conn
            .prepare_cached(
                "UPDATE users SET revoked_at = ?2, updated_at = ?2,
                   relay_revoked_until = max(coalesce(relay_revoked_until, ''), ?3)
                 WHERE id = ?1 RETURNING relay_revoked_until",
            )?
            .query_row(params![user, at, r.relay_until.to_string()], |row| {
                row.get(0)
            })?;
        Ok(Revocation {
            relay_until: stamp(&until)?,
            ..r
        })
    }

    /// Every revocation: their tokens' (kept for good, as a token's life is the host
    /// application's) and, until they are over, their relay's.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, revoked_at, relay_revoked_until FROM users WHERE revoked_at IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, at, until): (String, String, Option<String>) = row?;
            let at = stamp(&at)?;
            out.push(Revocation {
                user: uuid(&id)?,
                at,
                relay_until: time(until)?.unwrap_or(at),
            });
        }
        Ok(out)
    }

    pub fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT name, email FROM users WHERE id = ?1")?
            .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(name, email)| User { id, name, email }))
    }

    pub fn conversation_exists(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")?
            .exists([id.to_string()])?)
    }

    pub fn is_member(&self, conversation: Uuid, user: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM conversation_members WHERE conversation_id = ?1 AND user_id = ?2",
            )?
            .exists([conversation.to_string(), user.to_string()])?)
    }

    /// Creates the conversation, or renames it if `name` is given (`""` clears the name).
    pub fn upsert_conversation(
        &self,
        id: Uuid,
        name: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO conversations (id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = coalesce(excluded.name, name),
                   updated_at = excluded.updated_at",
            )?
            .execute(params![id.to_string(), name, now.to_string()])?;
        if name == Some("") {
            self.conn
                .prepare_cached("UPDATE conversations SET name = NULL WHERE id = ?1")?
                .execute([id.to_string()])?;
        }
        Ok(())
    }

    pub fn add_member(
        &self,
        conversation: Uuid,
        user: Uuid,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO conversation_members (conversation_id, user_id, created_at)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                conversation.to_string(),
                user.to_string(),
                now.to_string()
            ])?;
        Ok(())
    }

    /// Removes every member not in `keep`.
    pub fn retain_members(&self, conversation: Uuid, keep: &[Uuid]) -> Result<(), StoreError> {
        let keep: Vec<String> = keep.iter().map(Uuid::to_string).collect();
        let keep = serde_json::to_string(&keep).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn
            .prepare_cached(
                "DELETE FROM conversation_members WHERE conversation_id = ?1
                 AND user_id NOT IN (SELECT value FROM json_each(?2))",
            )?
            .execute(params![conversation.to_string(), keep])?;
        Ok(())
    }

    /// A conversation's name and its members (with their names), or None.
    pub fn conversation(&self, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let name: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT name FROM conversations WHERE id = ?1")?
            .query_row([id.to_string()], |r| r.get(0))
            .optional()?;
        let Some(name) = name else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT u.id, u.name, u.email FROM conversation_members m JOIN users u ON u.id = m.user_id
             WHERE m.conversation_id = ?1 ORDER BY m.created_at, u.id",
        )?;
        let rows = stmt.query_map([id.to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
        })?;
        let mut members = Vec::new();
        for row in rows {
            let (uid, name, email) = row?;
            members.push(User {
                id: uuid(&uid)?,
                name,
                email,
            });
        }
        Ok(Some(Conversation { name, members }))
    }
}
