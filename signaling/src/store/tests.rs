//! The store's tests: the schema and its version, the constraints, nested savepoints, the
//! provisioned name, `created_at` order across restarts, and a failed job in a batch.

use super::*;
use crate::call::User;
use crate::event::LogSink;

/// 2025-01-10T14:30:00.000Z.
const NOW: Timestamp = Timestamp::from_unix_millis(1_736_519_400_000);

fn open(dir: &tempfile::TempDir) -> Connection {
    open_connection(&dir.path().join("t.db")).unwrap()
}

/// A store in `dir`, its events logged.
fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("t.db"), Arc::new(LogSink), None).unwrap()
}

fn user(n: u128, name: Option<&str>, email: Option<&str>) -> User {
    User {
        id: Uuid::from_u128(n),
        name: name.map(str::to_owned),
        email: email.map(str::to_owned),
    }
}

#[test]
fn schema_is_applied_once_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(&dir);
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(conn);
    // A second open applies nothing again (it would fail: the tables exist).
    let conn = open(&dir);
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    // A newer database is refused, not downgraded.
    conn.pragma_update(None, "user_version", 7).unwrap();
    drop(conn);
    let e = open_connection(&dir.path().join("t.db")).unwrap_err();
    assert!(matches!(e, StoreError::TooNew { found: 7, .. }), "{e}");
}

#[test]
fn constraints_refuse_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(&dir);
    let now = "2025-01-10T14:30:00.000Z";
    let u = "0b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c";
    let ok = conn.execute(
        "INSERT INTO users (id, created_at, updated_at) VALUES (?1, ?2, ?2)",
        [u, now],
    );
    assert_eq!(ok.unwrap(), 1);
    for (sql, args) in [
        // Not a lowercase UUID.
        ("INSERT INTO users (id, created_at, updated_at) VALUES (?1, ?2, ?2)", ["0B6F1A3C-2D4E-4F5A-8B9C-0D1E2F3A4B5C", now]),
        // Not our timestamp form.
        ("INSERT INTO users (id, created_at, updated_at) VALUES (?1, ?2, ?2)", ["1b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c", "2025-01-10 14:30:00"]),
        // A conversation that does not exist.
        ("INSERT INTO calls (id, conversation_id, initiated_by, created_at, updated_at) VALUES ('2b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c', ?1, ?1, ?2, ?2)", [u, now]),
    ] {
        assert!(conn.execute(sql, args).is_err(), "{sql} {args:?}");
    }
    conn.execute(
        "INSERT INTO conversations (id, created_at, updated_at) VALUES (?1, ?2, ?2)",
        [u, now],
    )
    .unwrap();
    let call = "INSERT INTO calls (id, conversation_id, initiated_by, type, status, ended_at, \
                quality_stats, created_at, updated_at) \
                VALUES ('3b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c', ?1, ?1, ?2, ?3, ?4, ?5, ?6, ?6)";
    let bad: [[Option<&str>; 6]; 5] = [
        [
            Some(u),
            Some("fax"),
            Some("initiated"),
            None,
            None,
            Some(now),
        ],
        [
            Some(u),
            Some("audio"),
            Some("on-hold"),
            None,
            None,
            Some(now),
        ],
        // A live call cannot have ended.
        [
            Some(u),
            Some("audio"),
            Some("ringing"),
            Some(now),
            None,
            Some(now),
        ],
        // JSON that is not.
        [
            Some(u),
            Some("audio"),
            Some("initiated"),
            None,
            Some("{nope"),
            Some(now),
        ],
        // Active without a start.
        [
            Some(u),
            Some("audio"),
            Some("active"),
            None,
            None,
            Some(now),
        ],
    ];
    for args in bad {
        assert!(conn.execute(call, args).is_err(), "{args:?}");
    }
    let good: [Option<&str>; 6] = [
        Some(u),
        Some("screen"),
        Some("initiated"),
        None,
        Some("{}"),
        Some(now),
    ];
    assert_eq!(conn.execute(call, good).unwrap(), 1);
}

#[tokio::test]
async fn a_failed_nested_step_keeps_what_came_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let now = NOW;
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let (inner, events) = store
        .run(move |db| {
            db.upsert_user(&user(1, None, None), now)?;
            let inner = db.nested(|db| {
                db.upsert_user(&user(2, None, None), now)?;
                db.next_created_at(now);
                Err::<(), _>(StoreError::Corrupt("refused".into()))
            });
            Ok::<_, StoreError>((inner, db.events.len()))
        })
        .await
        .unwrap();
    assert!(matches!(inner, Err(StoreError::Corrupt(_))));
    assert_eq!(events, 0);
    let (ua, ub, next) = store
        .run(move |db| Ok::<_, StoreError>((db.user(a)?, db.user(b)?, db.next_created_at(now))))
        .await
        .unwrap();
    assert!(ua.is_some());
    assert_eq!(ub, None);
    // The rolled-back step's created_at was given back.
    assert_eq!(next, now);
    store.close().await;
}

#[tokio::test]
async fn a_bare_token_keeps_the_provisioned_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let now = NOW;
    let id = Uuid::from_u128(7);
    let named = user(7, Some("Ada"), Some("ada@example.com"));
    let bare = user(7, None, None);
    let renamed = user(7, Some("Ada L."), None);
    let seen = store
        .run(move |db| {
            db.upsert_user(&named, now)?;
            db.record_user(&bare, now)?;
            let a = db.user(id)?;
            db.record_user(&renamed, now)?;
            let b = db.user(id)?;
            // The admin API sets exactly what it is given.
            db.upsert_user(&bare, now)?;
            Ok::<_, StoreError>((a, b, db.user(id)?))
        })
        .await
        .unwrap();
    let (a, b, c) = seen;
    assert_eq!(a.unwrap().name.as_deref(), Some("Ada"));
    let b = b.unwrap();
    assert_eq!(
        (b.name.as_deref(), b.email.as_deref()),
        (Some("Ada L."), Some("ada@example.com"))
    );
    assert_eq!(c.unwrap().name, None);
    store.close().await;
}

#[tokio::test]
async fn created_at_keeps_its_order_across_restarts_but_not_a_wrong_clock() {
    let now = NOW;
    // (the stored call's created_at, the next call's)
    let cases = [
        // Just ahead (calls in the same millisecond before a restart): just after it.
        ("2025-01-10T14:30:00.500Z", "2025-01-10T14:30:00.501Z"),
        // Far ahead (a clock that was wrong): not followed; the ring timeout counts from it.
        ("2999-01-01T00:00:00.000Z", "2025-01-10T14:30:00.000Z"),
    ];
    for (stored, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open_connection(&path).unwrap();
        let u = "0b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c";
        conn.execute_batch(&format!(
            "INSERT INTO users (id, created_at, updated_at) VALUES ('{u}', '{stored}', '{stored}');
             INSERT INTO conversations (id, created_at, updated_at) VALUES ('{u}', '{stored}', '{stored}');
             INSERT INTO calls (id, conversation_id, initiated_by, created_at, updated_at)
               VALUES ('{u}', '{u}', '{u}', '{stored}', '{stored}');"
        ))
        .unwrap();
        drop(conn);
        let store = Store::open(&path, Arc::new(LogSink), None).unwrap();
        let next = store
            .run(move |db| Ok::<_, StoreError>(db.next_created_at(now)))
            .await
            .unwrap();
        assert_eq!(next.to_string(), expected, "after {stored}");
        store.close().await;
    }
}

#[tokio::test]
async fn a_failed_job_changes_nothing_and_the_others_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let (ra, rb, rc) = tokio::join!(
        store.run(move |db| db.upsert_user(&user(1, Some("A"), None), NOW)),
        store.run(move |db| {
            db.upsert_user(&user(2, None, None), NOW)?;
            Err::<(), _>(StoreError::Corrupt("refused".into()))
        }),
        store.run(move |_db| -> Result<(), StoreError> { panic!("a bug in a job") }),
    );
    ra.unwrap();
    assert!(matches!(rb, Err(StoreError::Corrupt(_))));
    assert!(matches!(rc, Err(StoreError::Panicked)));
    let (ua, ub) = store
        .run(move |db| Ok::<_, StoreError>((db.user(a)?, db.user(b)?)))
        .await
        .unwrap();
    assert_eq!(ua.unwrap().name.as_deref(), Some("A"));
    assert_eq!(ub, None);
    store.close().await;
    let r = store.run(|_| Ok::<_, StoreError>(())).await;
    assert!(matches!(r, Err(StoreError::Closed)));
}

/// A revocation creates an unknown user, moves `revoked_at` when repeated but never shortens
/// the relay's part, and is read back after a reopen.
#[tokio::test]
async fn revocations_are_kept_and_the_relay_part_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::from_u128(7);
    let later = NOW + std::time::Duration::from_secs(60);
    let revoke = |at, relay_until| Revocation {
        user: id,
        at,
        relay_until,
    };
    let store = store(&dir);
    let first = revoke(NOW, NOW + std::time::Duration::from_secs(3600));
    let again = revoke(later, later + std::time::Duration::from_secs(600));
    let (a, b) = store
        .run(move |db| Ok::<_, StoreError>((db.revoke(first)?, db.revoke(again)?)))
        .await
        .unwrap();
    assert_eq!(a, first);
    assert_eq!(
        b,
        revoke(later, first.relay_until),
        "the later relay end stays"
    );
    store.close().await;
    let store = self::store(&dir);
    let all = store.run(|db| db.revocations()).await.unwrap();
    assert_eq!(all, [b]);
    store.close().await;
}
