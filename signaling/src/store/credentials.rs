//! TURN credentials issued to users: the newest still valid, a new one, and the cleanup of
//! expired ones.

use rusqlite::{params, OptionalExtension as _};
use uuid::Uuid;

use super::{stamp, Db, StoreError};
use crate::time::Timestamp;

impl Db {
    /// The newest unexpired TURN credential of `user` expiring after `after`:
    /// (username, expires_at).
    pub fn turn_credential(
        &self,
        user: Uuid,
        after: Timestamp,
    ) -> Result<Option<(String, Timestamp)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT username, expires_at FROM turn_credentials
                 WHERE user_id = ?1 AND expires_at > ?2 ORDER BY expires_at DESC LIMIT 1",
            )?
            .query_row(params![user.to_string(), after.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(u, e)| Ok((u, stamp(&e)?))).transpose()
    }

    pub fn insert_turn_credential(
        &self,
        user: Uuid,
        username: &str,
        credential: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO turn_credentials (id, user_id, username, credential, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                Uuid::new_v4().to_string(),
                user.to_string(),
                username,
                credential,
                expires_at.to_string(),
                now.to_string()
            ])?;
        Ok(())
    }

    /// Deletes every TURN credential of `user` (a revocation: none is handed out again);
    /// returns when the last of them expires, if any is stored.
    pub fn delete_turn_credentials_of(&self, user: Uuid) -> Result<Option<Timestamp>, StoreError> {
        let last: Option<String> = self
            .conn
            .prepare_cached("SELECT max(expires_at) FROM turn_credentials WHERE user_id = ?1")?
            .query_row([user.to_string()], |r| r.get(0))?;
        self.conn
            .prepare_cached("DELETE FROM turn_credentials WHERE user_id = ?1")?
            .execute([user.to_string()])?;
        last.as_deref().map(stamp).transpose()
    }

    /// The spec's `cleanup_expired_turn_credentials()`: deletes what expired before `now`.
    pub fn delete_expired_turn_credentials(&self, now: Timestamp) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM turn_credentials WHERE expires_at < ?1")?
            .execute([now.to_string()])?)
    }
}
