//! How long a socket may live: until its token's `exp`, unless a fresh token comes first.
//!
//! A socket opens with a user's JWT (`/ws`'s upgrade, Socket.IO's CONNECT); its [`Lease`]
//! runs to that token's `exp`. Shortly before, the server emits `auth:expiring` with
//! `{expiresAt}` (RFC 3339): [`WARN_BEFORE`] before it, or a third of the token's remaining
//! life when it was presented if that is shorter (a 10 s token is warned 3.3 s before). The
//! client answers with `auth:refresh` `{token}`, a fresh token of the same user, acked
//! `{success: true, expiresAt}`; the socket then lives to the new token's `exp`. A token that
//! is not valid, already past its `exp`, or another user's is refused (the error's code says
//! which) and the socket keeps its term. A socket not refreshed by then is closed
//! ([`DisconnectReason::TokenExpired`](crate::hub::DisconnectReason::TokenExpired)): `/ws`
//! with 1008 and the reason `token expired`, Socket.IO with an `error` event `{code:
//! "token_expired"}` and a disconnect. Its calls are not ended: the socket's user has
//! `calls.reconnect_grace` to come back with a fresh token, as after any lost connection.
//!
//! The term is read on the daemon's wall clock. A token accepted within the clock-skew leeway
//! after its `exp` gives its socket [`MIN_TERM`] to refresh.

use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use super::dispatch::Reply;
use crate::auth::Auth;
use crate::hub::{Message, Outbox};
use crate::time::Timestamp;

/// How long before a socket's term `auth:expiring` is sent, at most.
pub const WARN_BEFORE: Duration = Duration::from_secs(60);
/// The shortest term a socket is given when it opens.
pub const MIN_TERM: Duration = Duration::from_secs(10);

/// A socket's term: its user, and until when (see the module).
#[derive(Debug)]
pub struct Lease {
    user: Uuid,
    term: Mutex<Term>,
}

/// Unix milliseconds: when the socket is warned, and when it is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Term {
    warn: u64,
    until: u64,
}

impl Term {
    /// The term of a token expiring at `exp` (Unix seconds), presented at `now`.
    fn new(exp: u64, now: Timestamp, floor: Duration) -> Term {
        let now = now.unix_millis();
        let until = exp
            .saturating_mul(1000)
            .max(now.saturating_add(floor.as_millis() as u64));
        let before = (WARN_BEFORE.as_millis() as u64).min((until - now) / 3);
        Term {
            warn: until - before,
            until,
        }
    }
}

impl Lease {
    /// The lease of `user`'s socket opened with a token expiring at `exp` (Unix seconds).
    pub fn new(user: Uuid, exp: u64) -> Lease {
        Lease {
            user,
            term: Mutex::new(Term::new(exp, Timestamp::now(), MIN_TERM)),
        }
    }

    fn term(&self) -> Term {
        *self.term.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the socket is closed unless refreshed.
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.term().until)
    }

    /// `auth:refresh` with `token`: the socket lives to its `exp` if it is a valid token of
    /// the socket's user not past its `exp`; else refused, and the term stays.
    pub fn refresh(&self, auth: &Auth, token: &str) -> Reply {
        let (user, exp) = match auth.session(Some(&format!("Bearer {token}"))) {
            Ok(session) => (session.user, session.exp),
            Err(e) => return Reply::error(e.code(), e.to_string()),
        };
        if user.id != self.user {
            let message = "the token is another user's: a socket stays its user's";
            return Reply::error("wrong_user", message);
        }
        let now = Timestamp::now();
        if exp.saturating_mul(1000) <= now.unix_millis() {
            return Reply::error("token_expired", "the token has expired");
        }
        let term = Term::new(exp, now, Duration::ZERO);
        *self.term.lock().unwrap_or_else(|e| e.into_inner()) = term;
        let expires_at = Timestamp::from_unix_millis(term.until);
        Reply::Ack(serde_json::json!({"success": true, "expiresAt": expires_at}))
    }

    /// Sends `auth:expiring` to `outbox` when the term nears its end, and returns once it is
    /// over without a refresh (the socket is then closed by its transport).
    pub async fn run(&self, outbox: &dyn Outbox) {
        loop {
            let term = self.term();
            sleep_until(term.warn).await;
            if self.term() != term {
                continue;
            }
            let expires_at = Timestamp::from_unix_millis(term.until);
            let data = serde_json::json!({"expiresAt": expires_at});
            // A socket whose queue is full is being closed already.
            let _ = outbox.push(&Message::new("auth:expiring", &data));
            sleep_until(term.until).await;
            if self.term() == term {
                return;
            }
        }
    }
}

/// Sleeps until `at` (Unix milliseconds) on the wall clock.
async fn sleep_until(at: u64) {
    let now = Timestamp::now().unix_millis();
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A third of a short token's life is left when the socket is warned, a minute of a long
    /// one's; a token presented past its `exp` (within the leeway) gets the floor.
    #[test]
    fn the_warning_comes_a_third_or_a_minute_before() {
        let now = Timestamp::from_unix_millis(1_000_000_000);
        let s = now.unix_seconds();
        let short = Term::new(s + 9, now, MIN_TERM);
        assert_eq!(
            (short.until - now.unix_millis(), short.until - short.warn),
            (10_000, 3_333),
            "a token past its floor is floored"
        );
        let ten = Term::new(s + 30, now, Duration::ZERO);
        assert_eq!(ten.until - ten.warn, 10_000);
        let hour = Term::new(s + 3600, now, MIN_TERM);
        assert_eq!(hour.until - hour.warn, 60_000);
        let past = Term::new(s - 20, now, MIN_TERM);
        assert_eq!(past.until, now.unix_millis() + 10_000);
    }

    /// A token that never expires (its `exp` as large as a u64 goes) is a long sleep, not a
    /// panic.
    #[tokio::test]
    async fn an_exp_at_the_end_of_time_is_only_far() {
        let term = Term::new(u64::MAX, Timestamp::now(), MIN_TERM);
        assert_eq!(term.until - term.warn, 60_000);
        let short = Duration::from_millis(20);
        assert!(tokio::time::timeout(short, sleep_until(term.warn))
            .await
            .is_err());
    }
}
