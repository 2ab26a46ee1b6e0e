//! The admin API's users, conversations and revocations, and the demo's sign-in to a
//! conversation.

use uuid::Uuid;

use super::{CallError, CallService, ConversationView, Missing, UserView};
use crate::call::{Refusal, User};
use crate::store::{Db, Revocation};

impl CallService {
    pub async fn admin_upsert_user(&self, user: User) -> Result<UserView, CallError> {
        self.at_now(move |db, now| {
            db.upsert_user(&user, now)?;
            Ok(UserView::from(user))
        })
        .await
    }

    /// Creates or updates a conversation; its members become exactly `members` (users not
    /// known yet are created, to be named by their first token).
    pub async fn admin_put_conversation(
        &self,
        id: Uuid,
        name: Option<String>,
        members: Vec<Uuid>,
    ) -> Result<ConversationView, CallError> {
        self.at_now(move |db, now| {
            db.upsert_conversation(id, name.as_deref(), now)?;
            for &m in &members {
                db.ensure_user(m, now)?;
                db.add_member(id, m, now)?;
            }
            db.retain_members(id, &members)?;
            conversation_view(db, id)
        })
        .await
    }

    /// Adds `user` (created, or renamed to their name) to conversation `id` (created, named
    /// `name`, if new), unless that would make it more than `max_members`: the demo's sign-in.
    pub async fn join_conversation(
        &self,
        id: Uuid,
        name: &'static str,
        user: User,
        max_members: usize,
    ) -> Result<ConversationView, CallError> {
        self.at_now(move |db, now| {
            db.upsert_conversation(id, None, now)?;
            let before = conversation_view(db, id)?;
            if before.name.is_none() {
                db.upsert_conversation(id, Some(name), now)?;
            }
            let member = before.members.iter().any(|m| m.id == user.id);
            if !member && before.members.len() >= max_members {
                let full = format!("the conversation is full ({max_members} members)");
                return Err(Refusal::Conflict(full).into());
            }
            db.upsert_user(&user, now)?;
            db.add_member(id, user.id, now)?;
            conversation_view(db, id)
        })
        .await
    }

    /// Revokes `user` (`DELETE /api/admin/users/{userId}/sessions`), in one job: the
    /// revocation is stored (the user created if unknown: a token of theirs may be valid all
    /// the same), their TURN credentials are deleted (none is handed out again), and they are
    /// taken out of every live call they are in ([`crate::call::Call::revoke`]). The relay's
    /// part lasts until the last credential they may hold expires: the credential lifetime
    /// from now, or the latest stored one if later. Returns the revocation and the calls; the
    /// caller puts it in force ([`crate::revoke::Revocations::apply`]) and closes the sockets.
    pub async fn revoke_user(&self, user: Uuid) -> Result<(Revocation, Vec<Uuid>), CallError> {
        let inner = self.inner.clone();
        self.at_now(move |db, now| {
            let minted = db.delete_turn_credentials_of(user)?;
            let relay_until = (now + inner.turn.ttl).max(minted.unwrap_or(now));
            let revocation = db.revoke(Revocation {
                user,
                at: now,
                relay_until,
            })?;
            let calls = db.live_calls_of(user)?;
            for &id in &calls {
                let Some(mut call) = db.load_call(id)? else {
                    continue;
                };
                let before = call.clone();
                let events = call.revoke(user, now)?;
                inner.save(db, &before, &mut call)?;
                db.emit(events);
            }
            Ok((revocation, calls))
        })
        .await
    }

    /// Every stored revocation (to put in force again at start).
    pub async fn revocations(&self) -> Result<Vec<Revocation>, CallError> {
        self.inner.store.run(|db| Ok(db.revocations()?)).await
    }

    pub async fn admin_conversation(&self, id: Uuid) -> Result<ConversationView, CallError> {
        self.inner
            .store
            .run(move |db| conversation_view(db, id))
            .await
    }
}

fn conversation_view(db: &Db, id: Uuid) -> Result<ConversationView, CallError> {
    let c = db
        .conversation(id)?
        .ok_or(CallError::NotFound(Missing::Conversation))?;
    Ok(ConversationView {
        id,
        name: c.name,
        members: c.members.into_iter().map(UserView::from).collect(),
    })
}
