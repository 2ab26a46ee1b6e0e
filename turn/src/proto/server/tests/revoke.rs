//! Revoked users (`Server::revoke_user`): their allocations close at once, and their
//! credentials minted before the revocation are refused (401) until they expire; other users,
//! and credentials minted after it, are not touched.

use super::*;

/// The revocation's horizon: a day's credential, minted at `T0`, expires then.
const UNTIL: u64 = T0 + 86_400;

#[test]
fn a_revoked_users_allocations_close_and_their_old_credentials_are_refused() {
    let (mut h, alice, old) = with_alice(config());
    h.allocate(client(2), "bob");
    h.events();
    assert_eq!(h.server.revoke_user(h.now, "alice", UNTIL), 1);
    h.open_relays();
    assert_eq!(h.closed, [alice], "her relay socket closes");
    let closed = h.events();
    assert!(
        matches!(&closed[..], [Event::AllocationClosed { reason: CloseReason::Revoked, user, .. }] if &**user == "alice"),
        "{closed:?}"
    );
    assert_eq!(h.server.allocation_count(), 1, "bob's stays");
    // Her old credential: refused for a new allocation, as an expired one is (401).
    h.assert_auth_failed(
        client(3),
        &old,
        allocate_request(),
        ErrorCode::UNAUTHORIZED,
        AuthFailure::Revoked,
    );
    // So are a Refresh and a CreatePermission on the allocation that closed.
    for request in [refresh(600), permission(PUBLIC_PEER)] {
        h.assert_auth_failed(
            client(1),
            &old,
            request,
            ErrorCode::UNAUTHORIZED,
            AuthFailure::Revoked,
        );
    }
    // Bob goes on, and a credential minted after the revocation (later expiry) is hers again.
    assert_eq!(h.ask(client(2), &Cred::day("bob"), refresh(600)), OK);
    let fresh = Cred::new("alice", UNTIL + 1);
    assert_eq!(h.ask(client(3), &fresh, allocate_request()), OK);
}

#[test]
fn a_revocation_ends_when_the_credentials_it_refuses_have_expired() {
    let mut h = H::new(config());
    h.server.revoke_user(h.now, "alice", UNTIL);
    // A revocation already over at its arrival is not kept.
    h.server.revoke_user(h.now, "carol", T0 - 1);
    assert_eq!(h.server.revoked_users(), 1);
    let short = Cred::new("alice", T0 + 60);
    assert_eq!(
        h.ask(client(1), &short, allocate_request()),
        ErrorCode::UNAUTHORIZED
    );
    h.advance(86_401);
    // Past `until`, every credential it refused has expired: the entry goes at the next sweep
    // (or revocation), and the wall clock, not the monotonic one, says when.
    h.server.handle_wall_clock(UNTIL + 1);
    h.server.revoke_user(h.now, "bob", UNTIL + 100);
    assert_eq!(h.server.revoked_users(), 1, "alice's is forgotten");
    let later = Cred::new("alice", UNTIL + 3600);
    assert_eq!(h.ask(client(1), &later, allocate_request()), OK);
}
