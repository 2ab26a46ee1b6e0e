//! The demo page's sign-in (development mode only): a name becomes a user of the demo
//! conversation and a token for them, so that two browser tabs can call each other without
//! the chat application that normally mints tokens.
//!
//! - `POST /api/demo/sign-in` with `{"name": "Alice"}`: the user whose id is derived from the
//!   name (the same name is the same user, on any device), renamed to it, made a member of the
//!   demo conversation; answers `{token, user: {id, name}, conversationId, expiresAt}`.
//! - `GET /api/demo/online` (bearer token of a member): the demo conversation's members, each
//!   with `online` (whether the hub holds a socket of theirs), online ones first.
//!
//! With `dev = false` both answer 404 `demo_disabled`: there, tokens come from the chat
//! application and nobody may sign in as a name.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest as _, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchboard_signaling::api::{ApiError, ApiState, JsonBody};
use switchboard_signaling::auth::{self, MAX_NAME_LEN};
use switchboard_signaling::call::User;
use switchboard_signaling::time::Timestamp;
use uuid::Uuid;

/// The demo conversation everyone who signs in joins.
pub const CONVERSATION: Uuid = Uuid::from_u128(0xd3e0_0000_0000_4000_8000_0000_0000_0001);
const CONVERSATION_NAME: &str = "Demo";
/// The namespace of the ids derived from names (a random constant).
const NAMES: Uuid = Uuid::from_u128(0x6f1c_2a58_93d4_4b0e_a7c5_1e20_8b3f_d946);
/// How many may join the demo conversation: its member list is sent in full.
const MAX_MEMBERS: usize = 100;
/// The longest name, in characters.
const MAX_NAME_CHARS: usize = 40;
/// How long a demo token lasts.
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The demo routes; `jwt_secret` is `Some` in development mode only.
pub fn router(api: Arc<ApiState>, jwt_secret: Option<String>) -> Router {
    let demo = Arc::new(Demo { api, jwt_secret });
    Router::new()
        .route("/api/demo/sign-in", post(sign_in))
        .route("/api/demo/online", get(online))
        .with_state(demo)
}

struct Demo {
    api: Arc<ApiState>,
    jwt_secret: Option<String>,
}

impl Demo {
    fn secret(&self) -> Result<&str, ApiError> {
        self.jwt_secret.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "demo_disabled",
                "the demo sign-in is off (dev = false): tokens come from your chat application",
            )
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignedIn {
    token: String,
    user: Member,
    conversation_id: Uuid,
    expires_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Member {
    id: Uuid,
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Online {
    conversation_id: Uuid,
    users: Vec<Member>,
}

/// The body is read only in development mode: elsewhere nobody gets to send one.
async fn sign_in(
    State(demo): State<Arc<Demo>>,
    request: Request,
) -> Result<Json<SignedIn>, ApiError> {
    let secret = demo.secret()?;
    let JsonBody(req) = JsonBody::<SignIn>::from_request(request, &()).await?;
    let name = valid_name(&req.name)?;
    let id = user_id(&name);
    let user = User {
        id,
        name: Some(name.clone()),
        email: None,
    };
    demo.api
        .calls
        .join_conversation(CONVERSATION, CONVERSATION_NAME, user, MAX_MEMBERS)
        .await?;
    let now = Timestamp::now();
    Ok(Json(SignedIn {
        token: auth::mint_scoped(
            secret,
            demo.api.auth.scope(),
            id,
            (Some(&name), None),
            now,
            TOKEN_TTL,
        ),
        user: Member {
            id,
            name: Some(name),
            online: None,
        },
        conversation_id: CONVERSATION,
        expires_at: (now + TOKEN_TTL).to_string(),
    }))
}

async fn online(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
) -> Result<Json<Online>, ApiError> {
    demo.secret()?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let me = demo.api.auth.user(authorization)?;
    let view = demo.api.calls.admin_conversation(CONVERSATION).await?;
    if !view.members.iter().any(|m| m.id == me.id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_member",
            "sign in through /api/demo/sign-in first",
        ));
    }
    let mut users: Vec<Member> = view
        .members
        .into_iter()
        .map(|m| Member {
            online: Some(demo.api.hub.sockets_of(m.id) > 0),
            id: m.id,
            name: m.name,
        })
        .collect();
    users.sort_by(|a, b| {
        (
            !a.online.unwrap_or(false),
            a.name.as_deref().map(str::to_lowercase),
        )
            .cmp(&(
                !b.online.unwrap_or(false),
                b.name.as_deref().map(str::to_lowercase),
            ))
    });
    Ok(Json(Online {
        conversation_id: CONVERSATION,
        users,
    }))
}

/// The name trimmed: 1 to [`MAX_NAME_CHARS`] characters, none of them control characters.
fn valid_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.len() > MAX_NAME_LEN {
        let why = format!("must be 1 to {MAX_NAME_CHARS} characters");
        return Err(ApiError::invalid("name", why));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must not hold control characters",
        ));
    }
    Ok(name.to_owned())
}

/// The user a name stands for: the same whatever its case or surrounding spaces.
fn user_id(name: &str) -> Uuid {
    Uuid::new_v5(&NAMES, name.trim().to_lowercase().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_user_whatever_its_case() {
        assert_eq!(user_id("Alice"), user_id(" alice "));
        assert_ne!(user_id("Alice"), user_id("Bob"));
        assert_eq!(user_id("Alice").get_version_num(), 5);
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(valid_name("  Zoë  ").unwrap(), "Zoë");
        for bad in ["", "   ", "a\u{7}b", &"x".repeat(41)] {
            let e = valid_name(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(e.message.starts_with("name: "), "{}", e.message);
        }
        assert!(valid_name(&"é".repeat(40)).is_ok());
    }
}
