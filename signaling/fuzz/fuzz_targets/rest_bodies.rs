//! `rest_bodies`: arbitrary bytes as the JSON body of every REST endpoint that takes one,
//! through the in-process daemon's router (the `JsonBody` extractor, the handler's checks and
//! the call service's, as a request meets them), with valid credentials:
//! - `PATCH /api/calls/{live call}/media` as Alice (joined in it);
//! - `PUT /api/admin/users/{Dave}` and `PUT /api/admin/conversations/{id}` with the admin token;
//! - `POST /api/calls/initiate` as Alice (a call it makes is ended again).
//!
//! (The demo's sign-in is the daemon crate's, not this one's.)
//!
//! Invariant: a body the JSON parser (`api::parse_json`, what `JsonBody` runs) refuses is
//! answered with exactly its 400 (`invalid_json` or `invalid_field` naming the field); a body
//! over `MAX_BODY` is a 413 `body_too_large`, whether or not it declares its length; a body it
//! takes is refused only as documented (a named field out of its bounds: 400; a call that
//! cannot be made: 404/422 with the code its cause calls for) or done with a response whose
//! fields satisfy the documented bounds (invitees distinct, the caller not among them, at most
//! `max_participants` with the caller; names and emails within their lengths; at most
//! `MAX_MEMBERS` members, none nil). Every error body is `{"error": {"code", "message"}}`.
//! Nothing else, and no 5xx.
//!
//! An input starting with a space is first grown with spaces to either side of `MAX_BODY`
//! (see `pad`), sent with `Content-Length` to two endpoints and without it to the other two.

#![no_main]

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use switchboard_signaling::api::{self, ApiError, PutConversation, PutUser};
use switchboard_signaling::auth::{MAX_EMAIL_LEN, MAX_NAME_LEN};
use switchboard_signaling::service::{InitiateRequest, MediaRequest};
use switchboard_signaling_fuzz::{
    pad, substitute, world, Reply, World, ADMIN_CONVERSATION, ADMIN_TOKEN, ALICE, BOB, CAROL,
    CONVERSATION, DAVE, MAX_PARTICIPANTS,
};
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let w = world();
    w.run(async {
        let call = w.live_call().await;
        let body = pad(&substitute(data, call), b" ", b" ", api::MAX_BODY);
        let padded = body.len() != data.len();
        media(w, call, &body, !padded).await;
        admin_user(w, &body, true).await;
        admin_conversation(w, &body, !padded).await;
        initiate(w, &body, true).await;
    });
});

/// `{"error": {"code", "message"}}`: the code and the message.
fn error_of(r: &Reply) -> (String, String) {
    let v = r.json();
    let code = v["error"]["code"].as_str();
    let message = v["error"]["message"].as_str();
    let (Some(code), Some(message)) = (code, message) else {
        panic!("{}: not an error body: {v}", r.status);
    };
    assert_eq!(
        v,
        json!({"error": {"code": code, "message": message}}),
        "an error body with more"
    );
    (code.to_owned(), message.to_owned())
}

/// The common part: no 5xx; 413 over the bound; the parser's refusal, exactly. `None` when
/// that settled it.
fn parsed<T: serde::de::DeserializeOwned>(what: &str, body: &[u8], r: &Reply) -> Option<T> {
    assert!(
        !r.status.is_server_error(),
        "{what}: {} {}",
        r.status,
        r.text()
    );
    if body.len() > api::MAX_BODY {
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{what}: {}",
            r.text()
        );
        let message = format!("the body is over {} bytes", api::MAX_BODY);
        assert_eq!(error_of(r), ("body_too_large".into(), message), "{what}");
        return None;
    }
    match api::parse_json::<T>(body) {
        Ok(t) => Some(t),
        Err(ApiError {
            status,
            code,
            message,
            retry_after,
        }) => {
            assert_eq!(retry_after, None, "{what}: a parse error is not a 429");
            assert_eq!(r.status, status, "{what}: {}", r.text());
            assert!(
                matches!(code, "invalid_json" | "invalid_field"),
                "{what}: {code}"
            );
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
            assert_eq!(error_of(r), (code.to_owned(), message), "{what}");
            None
        }
    }
}

fn assert_error(what: &str, r: &Reply, status: StatusCode, code: &str, message: Option<&str>) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let (c, m) = error_of(r);
    assert_eq!(c, code, "{what}: {m}");
    if let Some(message) = message {
        assert_eq!(m, message, "{what}");
    }
}

/// Sends `body` and settles what the parser alone decides ([`parsed`]): the answer and the
/// request it was parsed as, or `None` when that settled it.
async fn ask<T: serde::de::DeserializeOwned>(
    w: &World,
    what: &str,
    (method, uri, token): (Method, &str, Option<&str>),
    body: &[u8],
    content_length: bool,
) -> Option<(Reply, T)> {
    let r = w
        .request(method, uri, token, Some(body.to_vec()), content_length)
        .await;
    let req = parsed::<T>(what, body, &r)?;
    Some((r, req))
}

/// A 400 `invalid_field` with exactly `message`.
fn assert_invalid(what: &str, r: &Reply, message: &str) {
    assert_error(
        what,
        r,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some(message),
    );
}

async fn media(w: &World, call: Uuid, body: &[u8], content_length: bool) {
    let uri = format!("/api/calls/{call}/media");
    let to = (Method::PATCH, uri.as_str(), Some(w.alice_token.as_str()));
    let Some((r, req)) = ask::<MediaRequest>(w, "media", to, body, content_length).await else {
        return;
    };
    let flags = [req.audio_enabled, req.video_enabled, req.screen_sharing];
    if flags.iter().all(Option::is_none) {
        let message = "body: give at least one of audioEnabled, videoEnabled, screenSharing";
        return assert_invalid("media", &r, message);
    }
    // Alice is joined in the live call: done, and the state says what was asked.
    assert_eq!(r.status, StatusCode::OK, "media: {}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    for (flag, key) in flags
        .iter()
        .zip(["audioEnabled", "videoEnabled", "screenSharing"])
    {
        assert!(v["mediaState"][key].is_boolean(), "{v}");
        if let Some(f) = flag {
            assert_eq!(v["mediaState"][key], *f, "{v}");
        }
    }
}

fn too_long(field: &str, value: &Option<String>, max: usize) -> Option<String> {
    value
        .as_ref()
        .filter(|v| v.chars().count() > max)
        .map(|_| format!("{field}: longer than {max} characters"))
}

async fn admin_user(w: &World, body: &[u8], content_length: bool) {
    let uri = format!("/api/admin/users/{DAVE}");
    let to = (Method::PUT, uri.as_str(), Some(ADMIN_TOKEN));
    let Some((r, req)) = ask::<PutUser>(w, "admin user", to, body, content_length).await else {
        return;
    };
    let refusal = too_long("name", &req.name, MAX_NAME_LEN)
        .or_else(|| too_long("email", &req.email, MAX_EMAIL_LEN));
    if let Some(message) = refusal {
        return assert_invalid("admin user", &r, &message);
    }
    assert_eq!(r.status, StatusCode::OK, "admin user: {}", r.text());
    let v = r.json();
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    assert_eq!(
        v,
        json!({"user": {"id": DAVE, "name": non_empty(&req.name), "email": non_empty(&req.email)}})
    );
}

async fn admin_conversation(w: &World, body: &[u8], content_length: bool) {
    let what = "admin conversation";
    let uri = format!("/api/admin/conversations/{ADMIN_CONVERSATION}");
    let to = (Method::PUT, uri.as_str(), Some(ADMIN_TOKEN));
    let Some((r, req)) = ask::<PutConversation>(w, what, to, body, content_length).await else {
        return;
    };
    let refusal = too_long("name", &req.name, MAX_NAME_LEN)
        .or_else(|| {
            (req.member_ids.len() > api::MAX_MEMBERS)
                .then(|| format!("memberIds: at most {} members", api::MAX_MEMBERS))
        })
        .or_else(|| {
            let i = req.member_ids.iter().position(Uuid::is_nil)?;
            Some(format!("memberIds[{i}]: the nil UUID is not a user"))
        });
    if let Some(message) = refusal {
        return assert_invalid(what, &r, &message);
    }
    assert_eq!(r.status, StatusCode::OK, "admin conversation: {}", r.text());
    let v = r.json();
    let c = &v["conversation"];
    assert_eq!(c["id"], json!(ADMIN_CONVERSATION), "{v}");
    if let Some(name) = req.name.as_ref().filter(|n| !n.is_empty()) {
        assert_eq!(c["name"], json!(name), "{v}");
    }
    let members: Vec<Uuid> = c["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            m["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("a member id")
        })
        .collect();
    let set: BTreeSet<Uuid> = members.iter().copied().collect();
    assert_eq!(set.len(), members.len(), "a member twice: {v}");
    assert_eq!(set, req.member_ids.iter().copied().collect(), "{v}");
    assert!(members.len() <= api::MAX_MEMBERS);
}

/// What `POST /api/calls/initiate` must answer a parsed body with.
enum Outcome {
    /// 201, inviting these (distinct, in order).
    Made(Vec<Uuid>),
    /// This status and one of these codes.
    Refused(StatusCode, &'static [&'static str]),
    /// Depends on what the admin target made of its conversation: made, or refused for it.
    Either(Vec<Uuid>),
}

fn outcome(req: &InitiateRequest) -> Outcome {
    let mut ids = Vec::new();
    for &id in &req.participant_ids {
        if id.is_nil() {
            return Outcome::Refused(StatusCode::BAD_REQUEST, &["invalid_field"]);
        }
        // The caller among the invitees is ignored, as duplicates are.
        if id != ALICE && !ids.contains(&id) {
            ids.push(id);
            if ids.len() + 1 > MAX_PARTICIPANTS {
                let codes = &["too_many_participants"];
                return Outcome::Refused(StatusCode::UNPROCESSABLE_ENTITY, codes);
            }
        }
    }
    if req.conversation_id == ADMIN_CONVERSATION {
        return Outcome::Either(ids);
    }
    if req.conversation_id != CONVERSATION {
        return Outcome::Refused(StatusCode::NOT_FOUND, &["conversation_not_found"]);
    }
    if ids.iter().any(|id| *id != BOB && *id != CAROL) {
        let codes = &["not_a_member"];
        return Outcome::Refused(StatusCode::UNPROCESSABLE_ENTITY, codes);
    }
    if ids.is_empty() {
        return Outcome::Refused(StatusCode::UNPROCESSABLE_ENTITY, &["no_participants"]);
    }
    Outcome::Made(ids)
}

async fn initiate(w: &World, body: &[u8], content_length: bool) {
    let to = (
        Method::POST,
        "/api/calls/initiate",
        Some(w.alice_token.as_str()),
    );
    let Some((r, req)) = ask::<InitiateRequest>(w, "initiate", to, body, content_length).await
    else {
        return;
    };
    let check_made = |ids: &[Uuid]| {
        assert_eq!(r.status, StatusCode::CREATED, "initiate: {}", r.text());
        let v = r.json();
        assert!(
            v["callId"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .is_some(),
            "{v}"
        );
        let invited: Vec<Uuid> = v["participants"]
            .as_array()
            .expect("participants")
            .iter()
            .map(|p| {
                p["userId"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("a userId")
            })
            .collect();
        assert_eq!(invited, ids, "the invitees: {v}");
        assert!(
            !invited.contains(&ALICE) && invited.len() < MAX_PARTICIPANTS,
            "{v}"
        );
    };
    match outcome(&req) {
        Outcome::Made(ids) => check_made(&ids),
        Outcome::Refused(status, codes) => {
            assert_eq!(r.status, status, "initiate: {}", r.text());
            let (code, _) = error_of(&r);
            assert!(
                codes.contains(&code.as_str()),
                "initiate: {code}, expected one of {codes:?}"
            );
        }
        Outcome::Either(ids) => {
            if r.status != StatusCode::CREATED {
                let (code, _) = error_of(&r);
                let allowed = [
                    (StatusCode::NOT_FOUND, "conversation_not_found"),
                    (StatusCode::UNPROCESSABLE_ENTITY, "not_a_member"),
                    (StatusCode::UNPROCESSABLE_ENTITY, "no_participants"),
                ];
                assert!(
                    allowed.contains(&(r.status, code.as_str())),
                    "initiate: {}",
                    r.text()
                );
            } else {
                check_made(&ids);
            }
        }
    }
    if r.status == StatusCode::CREATED {
        // Rosters stay small: the call made goes (the fixture call is made again).
        w.end_other_calls().await;
    }
}
