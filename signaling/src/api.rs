//! The REST API on axum: the spec's seven call endpoints, the call history, the admin
//! provisioning and revocation endpoints and `/openapi.json` describing them all.
//!
//! Every error is `{"error": {"code": "...", "message": "..."}}` ([`ApiError`], mapped once
//! from [`CallError`] and [`AuthError`]): 400 for malformed JSON or a wrong field (named), 401
//! for a missing, expired or forged token, 403 for a role the call does not give, 404 for what
//! does not exist or is not visible, 405 for a wrong method, 409 for a transition the call's
//! state does not allow (or, `too_many_calls`, a caller already in `calls.max_live_per_user` live
//! calls), 413 for a body over [`MAX_BODY`], 422 for a call that cannot be made as asked, 429
//! with `Retry-After` for a user over their request budget ([`UserLimits`]), 503 when the store
//! fails. Bad input never reaches a 500, and a failed request changes
//! nothing (each operation is one store job).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, RawQuery, Request, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{Auth, AuthError};
use crate::call::{InitiateError, Refusal, User};
use crate::hub::{DisconnectReason, Elsewhere, Hub};
use crate::service::{
    CallError, CallService, InitiateRequest, MediaRequest, Missing, RevokeResponse,
    HISTORY_DEFAULT_LIMIT,
};
use crate::store::StoreError;
use crate::time::Timestamp;

mod limit;

pub use limit::{UserLimits, DEFAULT_BURST, DEFAULT_RATE};

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The most members the admin API sets on one conversation.
pub const MAX_MEMBERS: usize = 1000;

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
pub struct ApiState {
    pub calls: CallService,
    pub auth: Auth,
    /// The signaling hub, for the WebSocket transports.
    pub hub: Arc<Hub>,
    /// Each user's request budget.
    pub limits: UserLimits,
}

/// The API's routes; the daemon nests them beside its own.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/calls", get(history))
        .route("/api/calls/initiate", post(initiate))
        .route("/api/calls/turn-credentials", get(turn_credentials))
        .route("/api/calls/{callId}", get(call))
        .route("/api/calls/{callId}/answer", post(answer))
        .route("/api/calls/{callId}/reject", post(reject))
        .route("/api/calls/{callId}/end", post(end))
        .route("/api/calls/{callId}/media", patch(media))
        .route("/api/admin/users/{userId}", put(admin_put_user))
        .route(
            "/api/admin/users/{userId}/sessions",
            delete(admin_revoke_user),
        )
        .route(
            "/api/admin/conversations/{conversationId}",
            put(admin_put_conversation).get(admin_get_conversation),
        )
        .route("/openapi.json", get(openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The answer for paths nothing serves (the daemon's router ends with it).
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// The answer when a handler panics (a bug): a 500 with no details.
pub fn panic_response() -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error",
    )
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// A 429's `Retry-After`, in whole seconds.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 `rate_limited`: over the user's request budget, with a request left after `wait`.
    pub fn over_budget(wait: Duration) -> ApiError {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this user; retry after the Retry-After seconds",
            )
        }
    }

    /// 400 `invalid_field`: `<field>: <message>`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field}: {message}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorFields {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> ApiError {
        use StatusCode as S;
        let message = e.to_string();
        let (status, code) = match &e {
            CallError::InvalidField { .. } => (S::BAD_REQUEST, "invalid_field"),
            CallError::NotFound(Missing::Call) => (S::NOT_FOUND, "call_not_found"),
            CallError::NotFound(Missing::Conversation) => (S::NOT_FOUND, "conversation_not_found"),
            CallError::Refused(Refusal::NotInvited) => (S::FORBIDDEN, "not_invited"),
            CallError::Refused(Refusal::NotParticipant) => (S::FORBIDDEN, "not_a_participant"),
            CallError::Refused(Refusal::Conflict(_)) => (S::CONFLICT, "invalid_transition"),
            CallError::Initiate(InitiateError::TooMany { .. }) => {
                (S::UNPROCESSABLE_ENTITY, "too_many_participants")
            }
            CallError::Initiate(InitiateError::NoInvitees) => {
                (S::UNPROCESSABLE_ENTITY, "no_participants")
            }
            CallError::NotMembers(_) => (S::UNPROCESSABLE_ENTITY, "not_a_member"),
            CallError::TooFrequent { .. } => (S::TOO_MANY_REQUESTS, "rate_limited"),
            CallError::TooManyCalls { .. } => (S::CONFLICT, "too_many_calls"),
            CallError::NotOnSfu => (S::CONFLICT, "not_on_sfu"),
            CallError::NotInRoom => (S::CONFLICT, "not_in_sfu_room"),
            CallError::SfuUnavailable => (S::SERVICE_UNAVAILABLE, "sfu_unavailable"),
            CallError::Store(StoreError::Panicked) => {
                tracing::error!("a store job panicked");
                return ApiError::new(S::INTERNAL_SERVER_ERROR, "internal_error", "internal error");
            }
            CallError::Store(err) => {
                tracing::error!(error = %err, "call store failure");
                return ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the call store is unavailable; try again",
                );
            }
        };
        ApiError::new(status, code, message)
    }
}

// ---------------------------------------------------------------------------------------------
// Extractors.

/// The user a request's bearer JWT stands for, within their request budget.
pub struct Caller(pub User);

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Caller, ApiError> {
        let user = state.auth.user(authorization(parts))?;
        state
            .limits
            .take(user.id, Instant::now())
            .map_err(ApiError::over_budget)?;
        Ok(Caller(user))
    }
}

/// A request carrying the admin token.
pub struct Admin;

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Admin, ApiError> {
        state.auth.admin(authorization(parts))?;
        Ok(Admin)
    }
}

fn authorization(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// A JSON body of at most [`MAX_BODY`] bytes, whose errors name the field.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<JsonBody<T>, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {MAX_BODY} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| too_large())?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body: syntax errors are `invalid_json`, a wrong field is `invalid_field`
/// naming its path (`participantIds[1]`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    // First JSON at all (syntax), then the fields (types): `"type": null` is valid JSON with a
    // wrong field, and says so.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {e}"),
        )
    })?;
    // serde would take an array for a struct, field by field: every body here is an object.
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::invalid("body", inner)
        } else {
            ApiError::invalid(&path, inner)
        }
    })
}

fn parse_id(s: &str, field: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::invalid(field, format!("`{s}` is not a UUID")))
}

/// The UUID in a route's one path parameter (`{callId}`, ...), or a 400 naming it.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathId, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("path", e.body_text()))?;
        let Some((name, value)) = params.iter().next() else {
            return Err(ApiError::invalid("path", "no id in the path"));
        };
        parse_id(value, name).map(PathId)
    }
}

// ---------------------------------------------------------------------------------------------
// Calls.

async fn initiate(
    State(s): State<Arc<ApiState>>,
    Caller(user): Caller,
    JsonBody(req): JsonBody<InitiateRequest>,
) -> Result<Response, ApiError> {
    let body = s.calls.initiate(&user, req).await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The answering (or rejecting) device's socket, named by `X-Socket-Id`: Socket.IO's
/// `socket.id`, `/ws`'s `socketId`. Empty without the header, or if it is not valid UTF-8 (a
/// name that matches none of the user's sockets leaves none out either).
pub struct Device(Option<String>);

/// The request header naming the socket of the device a REST request comes from (so that an
/// answer or a rejection over REST is not announced to that device as done elsewhere); the
/// `/ws` upgrade answers with it too.
pub const SOCKET_ID: &str = "x-socket-id";

impl<S: Send + Sync> FromRequestParts<S> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Device, ApiError> {
        let name = parts
            .headers
            .get(SOCKET_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Device(name))
    }
}

/// Tells the user's other devices (every one, unless the request named its own in
/// `X-Socket-Id`) what they did with `call`, so that they stop ringing.
fn tell_other_devices(s: &ApiState, what: Elsewhere, user: &User, call: Uuid, device: Device) {
    let origin = device.0.and_then(|name| s.hub.socket_named(user.id, &name));
    s.hub.elsewhere(what, user.id, call, origin);
}

async fn answer(
    State(s): State<Arc<ApiState>>,
    Caller(user): Caller,
    PathId(id): PathId,
    device: Device,
) -> Result<Response, ApiError> {
    let body = s.calls.answer(&user, id).await?;
    tell_other_devices(&s, Elsewhere::Answered, &user, id, device);
    Ok(Json(body).into_response())
}

async fn reject(
    State(s): State<Arc<ApiState>>,
    Caller(user): Caller,
    PathId(id): PathId,
    device: Device,
) -> Result<Response, ApiError> {
    let body = s.calls.reject(&user, id).await?;
    tell_other_devices(&s, Elsewhere::Rejected, &user, id, device);
    Ok(Json(body).into_response())
}

async fn end(
    State(s): State<Arc<ApiState>>,
    Caller(user): Caller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(Json(s.calls.end(&user, id).await?).into_response())
}

async fn media(
    State(s): State<Arc<ApiState>>,
    Caller(user): Caller,
    PathId(id): PathId,
    JsonBody(req): JsonBody<MediaRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(s.calls.media(&user, id, req).await?).into_response())
}

async fn call(
    State(s): State<Arc<ApiState>>,
    Caller(user): Caller,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    Ok(Json(s.calls.get(&user, id).await?).into_response())
}

async fn history(
    State(s): State<Arc<ApiState>>,
    Caller(user): Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid("query", e))?;
    let (mut conversation, mut before, mut limit) = (None, None, HISTORY_DEFAULT_LIMIT);
    for (key, value) in &pairs {
        match key.as_str() {
            "conversationId" => conversation = Some(parse_id(value, key)?),
            "before" => {
                let t = Timestamp::parse(value).ok_or_else(|| {
                    ApiError::invalid(key, format!("`{value}` is not an RFC 3339 UTC time"))
                })?;
                before = Some(t);
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        ApiError::invalid(key, format!("`{value}` is not a count of at least 1"))
                    })?;
            }
            _ => {
                return Err(ApiError::invalid(
                    key,
                    "unknown query parameter (conversationId, limit, before)",
                ))
            }
        }
    }
    Ok(Json(s.calls.history(&user, conversation, before, limit).await?).into_response())
}

async fn turn_credentials(
    State(s): State<Arc<ApiState>>,
    Caller(user): Caller,
) -> Result<Response, ApiError> {
    let mut response = Json(s.calls.turn_credentials(&user).await?).into_response();
    // A secret: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

// ---------------------------------------------------------------------------------------------
// Admin.

/// `PUT /api/admin/users/{userId}` (public for the `rest_bodies` fuzz target, which parses
/// bodies as the handler does).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutUser {
    pub name: Option<String>,
    pub email: Option<String>,
}

/// `PUT /api/admin/conversations/{conversationId}` (public as [`PutUser`] is).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutConversation {
    pub name: Option<String>,
    pub member_ids: Vec<Uuid>,
}

fn not_nil(user: Uuid) -> Result<(), ApiError> {
    match user.is_nil() {
        true => Err(ApiError::invalid("userId", "the nil UUID is not a user")),
        false => Ok(()),
    }
}

fn check_len(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::invalid(
            field,
            format!("longer than {max} characters"),
        )),
        _ => Ok(()),
    }
}

async fn admin_put_user(
    State(s): State<Arc<ApiState>>,
    _: Admin,
    PathId(id): PathId,
    JsonBody(req): JsonBody<PutUser>,
) -> Result<Response, ApiError> {
    not_nil(id)?;
    check_len("name", &req.name, crate::auth::MAX_NAME_LEN)?;
    check_len("email", &req.email, crate::auth::MAX_EMAIL_LEN)?;
    let user = User {
        id,
        name: req.name.filter(|n| !n.is_empty()),
        email: req.email.filter(|e| !e.is_empty()),
    };
    let view = s.calls.admin_upsert_user(user).await?;
    Ok(Json(serde_json::json!({ "user": view })).into_response())
}

/// Cuts a user off now: their tokens issued so far are refused, they leave their live calls
/// (one store job), their sockets close, and the relay refuses their TURN credentials minted
/// so far until those expire. In that order: once the revocation is in force no new socket of
/// theirs opens, so none escapes the close. Any UUID but the nil one is a user (a token of
/// a user never seen is valid all the same): there is no 404.
async fn admin_revoke_user(
    State(s): State<Arc<ApiState>>,
    _: Admin,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    not_nil(id)?;
    let (revocation, calls_left) = s.calls.revoke_user(id).await?;
    s.auth.revocations().apply(&revocation, s.calls.now());
    let sockets_closed = s.hub.disconnect_user(id, DisconnectReason::Revoked);
    tracing::info!(user = %id, sockets = sockets_closed, calls = calls_left.len(), "user revoked");
    Ok(Json(RevokeResponse {
        user_id: id,
        revoked_at: revocation.at,
        relay_revoked_until: revocation.relay_until,
        sockets_closed,
        calls_left,
    })
    .into_response())
}

async fn admin_put_conversation(
    State(s): State<Arc<ApiState>>,
    _: Admin,
    PathId(id): PathId,
    JsonBody(req): JsonBody<PutConversation>,
) -> Result<Response, ApiError> {
    check_len("name", &req.name, crate::auth::MAX_NAME_LEN)?;
    if req.member_ids.len() > MAX_MEMBERS {
        return Err(ApiError::invalid(
            "memberIds",
            format!("at most {MAX_MEMBERS} members"),
        ));
    }
    if let Some(i) = req.member_ids.iter().position(Uuid::is_nil) {
        return Err(ApiError::invalid(
            &format!("memberIds[{i}]"),
            "the nil UUID is not a user",
        ));
    }
    let view = s
        .calls
        .admin_put_conversation(id, req.name, req.member_ids)
        .await?;
    Ok(Json(serde_json::json!({ "conversation": view })).into_response())
}

async fn admin_get_conversation(
    State(s): State<Arc<ApiState>>,
    _: Admin,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let view = s.calls.admin_conversation(id).await?;
    Ok(Json(serde_json::json!({ "conversation": view })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        ids: Vec<Uuid>,
        flag: bool,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"ids": ["nope"], "flag": true}"#).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_field")
        );
        assert!(e.message.starts_with("ids[0]: "), "{}", e.message);
        let e = parse_json::<Body>(br#"{"ids": [], "flag": "yes"}"#).unwrap_err();
        assert!(e.message.starts_with("flag: "), "{}", e.message);
        let e = parse_json::<Body>(br#"{"ids": []}"#).unwrap_err();
        assert!(e.message.contains("missing field `flag`"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"ids": [], "flag": true, "extra": 1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);
        for bad in [
            &b"{"[..],
            b"",
            b"  ",
            b"{\"ids\": [], \"flag\": true} x",
            b"nul",
        ] {
            let e = parse_json::<Body>(bad).unwrap_err();
            assert_eq!(e.code, "invalid_json", "{:?}", String::from_utf8_lossy(bad));
        }
        for not_an_object in [
            &b"[]"[..],
            br#"[["0b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c"], true]"#,
            b"5",
            b"null",
        ] {
            let e = parse_json::<Body>(not_an_object).unwrap_err();
            assert_eq!(
                (e.code, e.message.as_str()),
                ("invalid_field", "body: must be a JSON object")
            );
        }
        // Valid JSON with a wrong value is a field error, naming the field; enums are text only.
        let conv = r#""conversationId": "0b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c""#;
        for (ty, expect) in [
            ("null", "type: "),
            ("5", "type: "),
            (r#"{"video": null}"#, "type: "),
        ] {
            let body = format!(r#"{{{conv}, "type": {ty}, "participantIds": []}}"#);
            let e = parse_json::<InitiateRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, "invalid_field", "{ty}");
            assert!(e.message.starts_with(expect), "{ty}: {}", e.message);
        }
        let body = format!(r#"{{{conv}, "type": "fax", "participantIds": []}}"#);
        let e = parse_json::<InitiateRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(e.message, "type: `fax` is not one of audio, video, screen");
        let body = format!(r#"{{{conv}, "type": "screen", "participantIds": []}}"#);
        assert!(parse_json::<InitiateRequest>(body.as_bytes()).is_ok());
        let ok = parse_json::<Body>(
            br#" {"ids": ["0b6f1a3c-2d4e-4f5a-8b9c-0d1e2f3a4b5c"], "flag": false} "#,
        );
        assert_eq!(ok.unwrap().ids.len(), 1);
    }
}
