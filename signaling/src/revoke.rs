//! Revocations in force (`DELETE /api/admin/users/{userId}/sessions`): whose tokens are
//! refused, and the relay told whose TURN credentials to refuse.
//!
//! A revocation is stored first ([`crate::store::Revocation`], one job with the calls the user
//! leaves); then [`Revocations::apply`] puts it in force here: [`crate::auth::Auth`] refuses
//! the user's tokens issued (`iat`) in the second of the revocation or before, and the relay
//! (when the daemon runs one) refuses their TURN credentials minted before it until they
//! expire. At start the domain applies every stored revocation again, so a restart forgets
//! none.
//!
//! `iat` is in whole seconds: a token issued in the same second as the revocation is refused
//! with the older ones, so a user let back in gets a working token from the next second on. A
//! token without `iat` cannot show it was issued after the revocation, and is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::store::Revocation;
use crate::time::Timestamp;

/// Tells the relay to refuse a user's TURN credentials expiring at or before a time (Unix
/// seconds), and to close their allocations (the daemon's `RelayControl::revoke_user`).
pub type RelayRevokeFn = Arc<dyn Fn(Uuid, u64) + Send + Sync>;

/// The revocations in force; shared by the API, the transports' token checks and the domain.
#[derive(Default)]
pub struct Revocations {
    /// Each revoked user's second of revocation (Unix seconds): tokens issued then or before
    /// are refused.
    tokens: Mutex<HashMap<Uuid, u64>>,
    relay: Option<RelayRevokeFn>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("users", &self.lock().len())
            .field("relay", &self.relay.is_some())
            .finish()
    }
}

impl Revocations {
    /// No revocation yet; with `relay`, revocations reach the relay too.
    pub fn new(relay: Option<RelayRevokeFn>) -> Revocations {
        Revocations {
            tokens: Mutex::default(),
            relay,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, u64>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `r` in force at `now`: the user's tokens issued by then are refused, and the relay
    /// is told unless its part is over.
    pub fn apply(&self, r: &Revocation, now: Timestamp) {
        let at = r.at.unix_seconds();
        let mut tokens = self.lock();
        let second = tokens.entry(r.user).or_default();
        *second = (*second).max(at);
        drop(tokens);
        if let (Some(relay), true) = (&self.relay, r.relay_until >= now) {
            relay(r.user, r.relay_until.unix_seconds());
        }
    }

    /// Whether a token of `user` issued at `iat` (Unix seconds; none: unknown) is refused.
    pub fn refuses(&self, user: Uuid, iat: Option<u64>) -> bool {
        self.lock()
            .get(&user)
            .is_some_and(|&at| iat.is_none_or(|iat| iat <= at))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tokens_issued_by_the_second_of_the_revocation_are_refused() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let relay: RelayRevokeFn = {
            let told = told.clone();
            Arc::new(move |user, until| told.lock().unwrap().push((user, until)))
        };
        let r = Revocations::new(Some(relay));
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let now = Timestamp::from_unix_millis(1_000_500);
        let revocation = Revocation {
            user: alice,
            at: now,
            relay_until: now + Duration::from_secs(60),
        };
        r.apply(&revocation, now);
        assert!(r.refuses(alice, Some(999)) && r.refuses(alice, Some(1000)));
        assert!(r.refuses(alice, None), "no iat: not shown to be newer");
        assert!(!r.refuses(alice, Some(1001)), "issued after: let back in");
        assert!(!r.refuses(bob, Some(10)) && !r.refuses(bob, None));
        assert_eq!(*told.lock().unwrap(), [(alice, 1060)]);
        // At a restart, a revocation whose relay part is over only refuses tokens.
        r.apply(&revocation, now + Duration::from_secs(61));
        assert_eq!(told.lock().unwrap().len(), 1);
        assert!(r.refuses(alice, Some(1000)));
    }
}
