//! The OpenAPI document (`api::OPENAPI`, served at `/openapi.json`) against the router that
//! serves the API:
//! - it is OpenAPI 3.1, every `$ref` resolves and every example fits its schema;
//! - its operations are exactly the routes `api::router` declares, and the router serves each
//!   of them, and answers 405 for every other method on those paths;
//! - `/openapi.json` serves it as is;
//! - a real flow of calls gets only documented statuses, with bodies that fit the documented
//!   schemas (strictly: no undocumented field) and error codes named by the documented response.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use switchboard_signaling::api::{self, ApiState, UserLimits};
use switchboard_signaling::auth::{self, Auth};
use switchboard_signaling::event::LogSink;
use switchboard_signaling::service::{CallService, Settings};
use switchboard_signaling::store::Store;
use switchboard_signaling::time::{Clock, Timestamp};
use switchboard_signaling::turn::TurnIssuer;
use tempfile::TempDir;
use tower::ServiceExt;
use uuid::Uuid;

const JWT_SECRET: &str = "jwt";
const ADMIN_TOKEN: &str = "admin";
const MAX_PARTICIPANTS: usize = 4;

/// The methods a path item may hold, as OpenAPI spells them.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The methods probed for 405 on every documented path (HEAD is served wherever GET is).
const PROBED: [&str; 6] = ["get", "put", "post", "delete", "patch", "options"];

fn doc() -> Value {
    serde_json::from_str(api::OPENAPI).expect("api::OPENAPI is JSON")
}

/// The API over a store in a temporary directory, with the fallback the daemon adds.
fn app() -> (Router, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store =
        Store::open(&dir.path().join("calls.db"), Arc::new(LogSink), None).expect("the store");
    let settings = Settings {
        ring_timeout: Duration::from_secs(30),
        reconnect_grace: Duration::from_secs(30),
        max_participants: MAX_PARTICIPANTS,
        open_conversations: false,
        max_live_per_user: 4,
        sfu_from: None,
    };
    let turn = TurnIssuer::new(
        b"s",
        Duration::from_secs(3600),
        vec!["turn:127.0.0.1:3478?transport=udp".into()],
    );
    let state = Arc::new(ApiState {
        calls: CallService::new(store, settings, turn, None, None, Clock::system()),
        auth: Auth::new(Some(JWT_SECRET), Some(ADMIN_TOKEN)),
        hub: Arc::new(switchboard_signaling::hub::Hub::new(16).0),
        // Every request is one user's, as fast as it runs: no budget.
        limits: UserLimits::new(u32::MAX, u32::MAX),
    });
    (api::router(state).fallback(api::not_found), dir)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Reply {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("a method");
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(b) = &body {
        req = req
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, b.len());
    }
    let req = req
        .body(body.map_or_else(Body::empty, Body::from))
        .expect("a request");
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        bytes,
    }
}

/// Every (method, path template) the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.clone(), path.clone()));
            }
        }
    }
    ops
}

/// A path template with its parameters' names dropped: `/api/calls/{}`.
fn shape(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// A path template with its parameters filled in.
fn fill(template: &str, values: &[Uuid]) -> String {
    let mut values = values.iter();
    let mut out = String::new();
    for (i, part) in shape(template).split("{}").enumerate() {
        if i > 0 {
            out.push_str(
                &values
                    .next()
                    .expect("a value for each parameter")
                    .to_string(),
            );
        }
        out.push_str(part);
    }
    out
}

/// The (method, path shape) pairs `api::router` declares, read from its source, so that a
/// route added there without documentation (or documented without a route) fails here.
fn declared_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/api.rs");
    let start = src.find("pub fn router(").expect("api::router in api.rs");
    let body = &src[start..];
    let body = &body[..body.find("\n}\n").expect("the end of api::router")];
    for unsupported in [".nest(", ".merge(", ".route_service(", ".nest_service("] {
        assert!(
            !body.contains(unsupported),
            "api::router uses {unsupported}: teach this test about it"
        );
    }
    let mut routes = BTreeSet::new();
    let mut rest = body;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        // The arguments, up to the matching parenthesis.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("balanced parentheses");
        let args = &rest[..end];
        rest = &rest[end..];
        let path = args.split('"').nth(1).expect("a path literal");
        let after_path = &args[args.find(',').expect("a method router")..];
        // Every call in the method router is a method function: `get(h)`, `put(h).get(h)`.
        let mut methods = 0;
        let bytes = after_path.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
                let j = i + bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .unwrap_or(bytes.len() - i);
                let ident = &after_path[i..j];
                if bytes.get(j) == Some(&b'(') {
                    assert!(
                        METHODS.contains(&ident),
                        "route {path}: `{ident}(...)` is not a method function; teach this test about it"
                    );
                    routes.insert((ident.to_owned(), shape(path)));
                    methods += 1;
                }
                i = j;
            } else {
                i += 1;
            }
        }
        assert!(methods > 0, "route {path}: no method found");
    }
    assert!(!routes.is_empty(), "no routes found in api::router");
    routes
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = doc
                .pointer(r.strip_prefix('#').expect("a local $ref"))
                .unwrap_or_else(|| panic!("{r} does not resolve"));
            resolve(doc, target)
        }
        None => v,
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// A JSON Schema check for the keywords the document uses. Objects are closed: a property the
// schema does not list is an error, so the document has to name every field the API sends.

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    }
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        return Err(format!("{at}: the schema is not an object"));
    };
    if let Some(r) = s.get("$ref") {
        check(doc, resolve(doc, &json!({ "$ref": r })), v, at)?;
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts
                .iter()
                .any(|t| type_matches(t.as_str().expect("a type name"), v)),
            _ => return Err(format!("{at}: bad `type`")),
        };
        if !ok {
            return Err(format!("{at}: {v} is not of type {t}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!(
                "{at}: {v} is not one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return Err(format!("{at}: {v} is not {c}"));
        }
    }
    if let (Some(f), Some(text)) = (s.get("format").and_then(Value::as_str), v.as_str()) {
        let ok = match f {
            "uuid" => Uuid::parse_str(text).is_ok(),
            "date-time" => text.ends_with('Z') && Timestamp::parse(text).is_some(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: `{text}` is not a {f}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if s.get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            return Err(format!("{at}: {n} is under the minimum"));
        }
        if s.get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: {n} is over the maximum"));
        }
    }
    if let (Some(max), Some(text)) = (s.get("maxLength").and_then(Value::as_u64), v.as_str()) {
        if text.chars().count() as u64 > max {
            return Err(format!("{at}: longer than {max}"));
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|sub| check(doc, sub, v, at).is_ok()) {
            return Err(format!("{at}: {v} fits none of anyOf"));
        }
    }
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(doc, sub, v, at)?;
    }
    if let (Some(items), Some(a)) = (s.get("items"), v.as_array()) {
        for (i, item) in a.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(o) = v.as_object() {
        check_object(doc, s, o, at)?;
    }
    Ok(())
}

fn check_object(
    doc: &Value,
    s: &Map<String, Value>,
    o: &Map<String, Value>,
    at: &str,
) -> Result<(), String> {
    for name in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = name.as_str().expect("a property name");
        if !o.contains_key(name) {
            return Err(format!("{at}: `{name}` is required"));
        }
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
        if (o.len() as u64) < min {
            return Err(format!("{at}: fewer than {min} properties"));
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (name, value) in o {
            match props.get(name) {
                Some(p) => check(doc, p, value, &format!("{at}.{name}"))?,
                None => return Err(format!("{at}: `{name}` is not documented")),
            }
        }
    }
    Ok(())
}

/// Checks a reply against the document's description of `method path`: its status is one
/// the operation lists, its body fits the schema, and an error's code is one that the
/// response's description names.
fn conforms(doc: &Value, method: &str, template: &str, reply: &Reply) {
    let op = &doc["paths"][template][method];
    assert!(op.is_object(), "{method} {template} is not documented");
    let status = reply.status.as_u16().to_string();
    let Some(response) = op["responses"].get(&status) else {
        panic!(
            "{method} {template} answered {status}, which it does not document: {}",
            String::from_utf8_lossy(&reply.bytes)
        )
    };
    let response = resolve(doc, response);
    let Some(media) = response["content"].get("application/json") else {
        return;
    };
    let content_type = reply
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    assert_eq!(
        content_type,
        Some("application/json"),
        "{method} {template} {status}"
    );
    let body = reply.json();
    if let Err(e) = check(doc, &media["schema"], &body, "body") {
        panic!("{method} {template} {status}: {e}\n{body:#}");
    }
    if !reply.status.is_success() {
        let code = reply.error_code();
        let description = response["description"].as_str().unwrap_or_default();
        assert!(
            description.contains(&format!("`{code}`")),
            "{method} {template} {status}: code {code} is not one its response names: {description}"
        );
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_document_is_openapi_3_1_and_self_consistent() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("an `openapi` field");
    assert!(version.starts_with("3.1"), "openapi is {version}");
    assert_eq!(doc["info"]["title"], "switchboard");
    assert_eq!(doc["info"]["version"], "0.1.0");
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(
        schemes.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["adminToken", "userToken"])
    );
    assert_eq!(
        schemes["userToken"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": schemes["userToken"]["description"]})
    );
    assert_eq!(schemes["adminToken"]["scheme"], "bearer");

    // Every $ref resolves to a component.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        assert!(
            r.starts_with("#/components/"),
            "{r} does not point into components"
        );
        assert!(doc.pointer(&r[1..]).is_some(), "{r} does not resolve");
    }

    // Every operation: a unique operationId, a summary, a description, the right security,
    // its path parameters declared, 401 wherever a token is required.
    let mut ids = BTreeSet::new();
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][&method];
        let what = format!("{method} {path}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no operationId"));
        assert!(
            ids.insert(id.to_owned()),
            "{what}: operationId {id} is not unique"
        );
        for field in ["summary", "description"] {
            assert!(
                op[field].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: no {field}"
            );
        }
        let scheme = if path.starts_with("/api/admin/") {
            Some("adminToken")
        } else if path.starts_with("/api/") {
            Some("userToken")
        } else {
            None
        };
        let expected = match scheme {
            Some(s) => json!([{ s: [] }]),
            None => json!([]),
        };
        assert_eq!(op["security"], expected, "{what}: security");
        let responses = op["responses"].as_object().expect("responses");
        assert_eq!(
            responses.contains_key("401"),
            scheme.is_some(),
            "{what}: 401"
        );
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no success response"
        );
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| resolve(&doc, p))
            .collect();
        for name in path
            .split('{')
            .skip(1)
            .map(|s| &s[..s.find('}').expect("a closed {")])
        {
            let p = params
                .iter()
                .find(|p| p["name"] == name && p["in"] == "path")
                .unwrap_or_else(|| panic!("{what}: path parameter {name} is not declared"));
            assert_eq!(p["required"], true, "{what}: {name}");
            assert_eq!(
                p["schema"],
                json!({"type": "string", "format": "uuid"}),
                "{what}: {name}"
            );
        }
    }

    // Every example fits the schema beside it.
    fn examples(doc: &Value, v: &Value, at: &str) {
        match v {
            Value::Object(m) => {
                if let Some(schema) = m.get("schema") {
                    let named = m
                        .get("examples")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten();
                    let named = named.map(|(k, e)| (k.clone(), &e["value"]));
                    for (name, example) in m
                        .get("example")
                        .map(|e| ("example".to_owned(), e))
                        .into_iter()
                        .chain(named)
                    {
                        if let Err(e) = check(doc, schema, example, &format!("{at}/{name}")) {
                            panic!("an example does not fit its schema: {e}");
                        }
                    }
                }
                if m.contains_key("type") || m.contains_key("$ref") || m.contains_key("properties")
                {
                    for (i, example) in m
                        .get("examples")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        if let Err(e) = check(doc, v, example, &format!("{at}/examples/{i}")) {
                            panic!("a schema's example does not fit it: {e}");
                        }
                    }
                }
                for (k, v) in m {
                    examples(doc, v, &format!("{at}/{k}"));
                }
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| examples(doc, v, &format!("{at}/{i}"))),
            _ => {}
        }
    }
    examples(&doc, &doc, "#");
}

#[tokio::test]
async fn the_documented_operations_are_the_routes() {
    let doc = doc();
    let (app, _dir) = app();
    let documented = documented(&doc);
    let documented_shapes: BTreeSet<(String, String)> = documented
        .iter()
        .map(|(m, p)| (m.clone(), shape(p)))
        .collect();
    assert_eq!(
        documented_shapes,
        declared_routes(),
        "the document's operations vs api::router's routes"
    );

    // The router serves every documented operation (unauthenticated: typically 401).
    for (method, path) in &documented {
        let uri = fill(path, &[Uuid::new_v4(), Uuid::new_v4()]);
        let reply = send(&app, method, &uri, None, None).await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert!(
            !(reply.status == StatusCode::NOT_FOUND && reply.error_code() == "route_not_found"),
            "{method} {uri}: route_not_found"
        );
        conforms(&doc, method, path, &reply);
    }

    // Every other method on a documented path is 405.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let uri = fill(path, &[Uuid::new_v4(), Uuid::new_v4()]);
        let mut probed = 0;
        for method in PROBED {
            if documented.contains(&(method.to_owned(), path.clone())) {
                continue;
            }
            let reply = send(&app, method, &uri, None, None).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}"
            );
            assert_eq!(reply.error_code(), "method_not_allowed", "{method} {uri}");
            probed += 1;
        }
        assert!(probed > 0, "{path}: every method is documented?");
    }

    // Paths the document does not have are 404 route_not_found.
    let call = Uuid::new_v4();
    for uri in [
        "/api/nope",
        "/api/calls/",
        &format!("/api/calls/{call}/nope"),
        "/api/admin/users",
    ] {
        let reply = send(&app, "get", uri, None, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.error_code(), "route_not_found", "{uri}");
    }
}

#[tokio::test]
async fn openapi_json_serves_the_document() {
    let (app, _dir) = app();
    let reply = send(&app, "get", "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(reply.bytes, api::OPENAPI.as_bytes());
    assert_eq!(reply.json(), doc());
}

/// A client of the API that checks every request body and reply against the document.
struct Client {
    app: Router,
    doc: Value,
}

impl Client {
    /// A caller with `token` (`None`: without one), whose user id is `id`.
    fn caller(&self, id: Uuid, token: Option<&str>) -> Caller<'_> {
        Caller {
            client: self,
            id,
            token: token.map(str::to_owned),
        }
    }

    /// A new user called `name`, with a token (as their host application would mint it).
    fn user(&self, name: &str) -> Caller<'_> {
        let id = Uuid::new_v4();
        let email = format!("{}@example.com", name.to_lowercase());
        let ttl = Duration::from_secs(600);
        let token = auth::mint(
            JWT_SECRET,
            id,
            Some(name),
            Some(&email),
            Timestamp::now(),
            ttl,
        );
        self.caller(id, Some(&token))
    }
}

/// Someone calling the API through a [`Client`]: a user, the admin, or nobody.
struct Caller<'a> {
    client: &'a Client,
    id: Uuid,
    token: Option<String>,
}

impl Caller<'_> {
    /// `method template` with its parameters filled from `ids` and `query` appended, `bytes`
    /// sent as they are (bodies the document does not allow too); the reply, which must conform.
    async fn send(
        &self,
        method: &str,
        template: &str,
        ids: &[Uuid],
        query: &str,
        bytes: Option<Vec<u8>>,
    ) -> Reply {
        let Client { app, doc } = self.client;
        let uri = format!("{}{query}", fill(template, ids));
        let reply = send(app, method, &uri, self.token.as_deref(), bytes).await;
        conforms(doc, method, template, &reply);
        if reply.status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                reply
                    .headers
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
        }
        reply
    }

    /// [`Caller::send`] with a JSON body, which must fit the document's request schema.
    async fn json(&self, method: &str, template: &str, ids: &[Uuid], body: Option<Value>) -> Reply {
        let doc = &self.client.doc;
        let bytes = body.map(|b| {
            let op = &doc["paths"][template][method];
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{method} {template} documents no body");
            if let Err(e) = check(doc, schema, &b, "request") {
                panic!("{method} {template}: the test's own request does not fit: {e}");
            }
            serde_json::to_vec(&b).expect("JSON")
        });
        self.send(method, template, ids, "", bytes).await
    }

    /// [`Caller::json`], whose reply must be `status`; its JSON.
    async fn expect(
        &self,
        status: StatusCode,
        method: &str,
        template: &str,
        ids: &[Uuid],
        body: Option<Value>,
    ) -> Value {
        expect(&self.json(method, template, ids, body).await, status, None)
    }

    /// [`Caller::json`], which must be refused with `status` and the error `code`.
    async fn refused(
        &self,
        status: StatusCode,
        code: &str,
        method: &str,
        template: &str,
        ids: &[Uuid],
        body: Option<Value>,
    ) {
        expect(
            &self.json(method, template, ids, body).await,
            status,
            Some(code),
        );
    }

    /// `GET /api/calls` with `query`, whose reply must be `status`; its JSON.
    async fn history(&self, query: &str, status: StatusCode, code: Option<&str>) -> Value {
        expect(
            &self.send("get", HISTORY, &[], query, None).await,
            status,
            code,
        )
    }
}

#[track_caller]
fn expect(reply: &Reply, status: StatusCode, code: Option<&str>) -> Value {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.bytes)
    );
    if let Some(code) = code {
        assert_eq!(reply.error_code(), code);
    }
    reply.json()
}

/// The `callId` of an initiate's answer.
fn call_id(body: &Value) -> Uuid {
    body["callId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no call id: {body}"))
}

const USER: &str = "/api/admin/users/{userId}";
const SESSIONS: &str = "/api/admin/users/{userId}/sessions";
const CONV: &str = "/api/admin/conversations/{conversationId}";
const INITIATE: &str = "/api/calls/initiate";
const HISTORY: &str = "/api/calls";
const CALL: &str = "/api/calls/{callId}";
const ANSWER: &str = "/api/calls/{callId}/answer";
const REJECT: &str = "/api/calls/{callId}/reject";
const END: &str = "/api/calls/{callId}/end";
const MEDIA: &str = "/api/calls/{callId}/media";

#[tokio::test]
async fn a_call_flow_gets_what_the_document_says() {
    use StatusCode as S;
    let (app, _dir) = app();
    let c = Client { app, doc: doc() };
    let [alice, bob, carol, dave, eve] =
        ["Alice", "Bob", "Carol", "Dave", "Eve"].map(|n| c.user(n));
    let admin = c.caller(Uuid::nil(), Some(ADMIN_TOKEN));
    let nobody = c.caller(Uuid::nil(), None);
    let conv = Uuid::new_v4();

    // Provisioning.
    let eve_user = json!({"name": "Eve", "email": ""});
    let body = admin
        .expect(S::OK, "put", USER, &[eve.id], Some(eve_user))
        .await;
    assert_eq!(
        body,
        json!({"user": {"id": eve.id, "name": "Eve", "email": null}})
    );
    let (nil, empty) = (Uuid::nil(), Some(json!({})));
    admin
        .refused(
            S::BAD_REQUEST,
            "invalid_field",
            "put",
            USER,
            &[nil],
            empty.clone(),
        )
        .await;
    alice
        .refused(
            S::UNAUTHORIZED,
            "invalid_token",
            "put",
            USER,
            &[eve.id],
            empty,
        )
        .await;
    let r = admin
        .send("put", USER, &[eve.id], "", Some(b"{".to_vec()))
        .await;
    expect(&r, S::BAD_REQUEST, Some("invalid_json"));
    let too_large = vec![b' '; api::MAX_BODY + 1];
    let r = admin
        .send("put", USER, &[eve.id], "", Some(too_large))
        .await;
    expect(&r, S::PAYLOAD_TOO_LARGE, Some("body_too_large"));
    let members = json!({"name": "Team", "memberIds": [alice.id, bob.id, carol.id, dave.id]});
    let body = admin
        .expect(S::OK, "put", CONV, &[conv], Some(members))
        .await;
    let members = body["conversation"]["members"].as_array().map(Vec::len);
    assert_eq!(members, Some(4));
    let body = admin.expect(S::OK, "get", CONV, &[conv], None).await;
    assert_eq!(body["conversation"]["name"], "Team");
    let elsewhere = [Uuid::new_v4()];
    let not_found = "conversation_not_found";
    admin
        .refused(S::NOT_FOUND, not_found, "get", CONV, &elsewhere, None)
        .await;

    // Starting calls that cannot be made.
    let start = |invitees: Vec<Uuid>| json!({"conversationId": conv, "type": "video", "participantIds": invitees});
    for (invitees, code) in [
        (vec![], "no_participants"),
        // The caller among the invitees is ignored: nobody left.
        (vec![alice.id], "no_participants"),
        (vec![alice.id, alice.id], "no_participants"),
        // A user switchboard has never seen is refused as any outsider of the conversation.
        (vec![Uuid::new_v4()], "not_a_member"),
        (vec![eve.id], "not_a_member"),
        (
            vec![bob.id, carol.id, dave.id, eve.id],
            "too_many_participants",
        ),
    ] {
        let body = Some(start(invitees));
        alice
            .refused(S::UNPROCESSABLE_ENTITY, code, "post", INITIATE, &[], body)
            .await;
    }
    let body = Some(start(vec![alice.id]));
    eve.refused(S::NOT_FOUND, not_found, "post", INITIATE, &[], body)
        .await;
    let wrong = br#"{"conversationId": 1}"#.to_vec();
    let r = alice.send("post", INITIATE, &[], "", Some(wrong)).await;
    expect(&r, S::BAD_REQUEST, Some("invalid_field"));
    let body = Some(start(vec![bob.id]));
    nobody
        .refused(
            S::UNAUTHORIZED,
            "missing_token",
            "post",
            INITIATE,
            &[],
            body,
        )
        .await;

    // A 1:1 call: answered, media, ended.
    let body = alice
        .expect(S::CREATED, "post", INITIATE, &[], Some(start(vec![bob.id])))
        .await;
    // Bob has not made a request yet: provisioned as a member, he has no name.
    assert_eq!(
        body["participants"],
        json!([{"userId": bob.id, "userName": null, "userIdentifier": null, "status": "invited",
        "joinedAt": null, "leftAt": null, "connectionQuality": null,
        "mediaState": {"audioEnabled": true, "videoEnabled": true, "screenSharing": false}}])
    );
    let one = [call_id(&body)];
    eve.refused(S::NOT_FOUND, "call_not_found", "get", CALL, &one, None)
        .await;
    carol.expect(S::OK, "get", CALL, &one, None).await;
    let token = alice.token.as_deref();
    let r = send(&c.app, "get", "/api/calls/not-a-uuid", token, None).await;
    conforms(&c.doc, "get", CALL, &r);
    expect(&r, S::BAD_REQUEST, Some("invalid_field"));
    carol
        .refused(S::FORBIDDEN, "not_invited", "post", ANSWER, &one, None)
        .await;
    alice
        .refused(S::FORBIDDEN, "not_invited", "post", ANSWER, &one, None)
        .await;
    carol
        .refused(S::FORBIDDEN, "not_a_participant", "post", END, &one, None)
        .await;
    bob.refused(S::CONFLICT, "invalid_transition", "post", END, &one, None)
        .await;
    let video_off = Some(json!({"videoEnabled": false}));
    let body = bob.expect(S::OK, "patch", MEDIA, &one, video_off).await;
    assert_eq!(
        body,
        json!({"success": true, "mediaState": {"audioEnabled": true, "videoEnabled": false, "screenSharing": false}})
    );
    let r = bob
        .send("patch", MEDIA, &one, "", Some(b"{}".to_vec()))
        .await;
    expect(&r, S::BAD_REQUEST, Some("invalid_field"));
    let mute = Some(json!({"audioEnabled": false}));
    carol
        .refused(
            S::FORBIDDEN,
            "not_a_participant",
            "patch",
            MEDIA,
            &one,
            mute,
        )
        .await;
    let body = bob.expect(S::OK, "post", ANSWER, &one, None).await;
    assert_eq!(body["status"], "active");
    assert!(body["startedAt"].is_string());
    bob.refused(
        S::CONFLICT,
        "invalid_transition",
        "post",
        ANSWER,
        &one,
        None,
    )
    .await;
    let call = &alice.expect(S::OK, "get", CALL, &one, None).await["call"];
    assert_eq!(call["participants"][0]["userId"], json!(alice.id));
    assert_eq!(call["participants"][1]["userName"], "Bob");
    assert_eq!(call["participants"][1]["mediaState"]["videoEnabled"], false);
    let body = alice.expect(S::OK, "post", END, &one, None).await;
    assert_eq!(
        (&body["status"], &body["callStatus"], &body["endReason"]),
        (&json!("ended"), &json!("ended"), &json!("ended-by-user"))
    );
    bob.refused(
        S::CONFLICT,
        "invalid_transition",
        "post",
        REJECT,
        &one,
        None,
    )
    .await;
    let share = Some(json!({"screenSharing": true}));
    bob.refused(
        S::CONFLICT,
        "invalid_transition",
        "patch",
        MEDIA,
        &one,
        share,
    )
    .await;

    // A group call: one rejects, two answer, one leaves, the last but one ends it.
    let body = Some(start(vec![bob.id, carol.id, dave.id]));
    let group = [call_id(
        &alice.expect(S::CREATED, "post", INITIATE, &[], body).await,
    )];
    let body = bob.expect(S::OK, "post", REJECT, &group, None).await;
    assert_eq!(
        body,
        json!({"callId": group[0], "status": "rejected", "callStatus": "initiated"})
    );
    alice
        .refused(S::FORBIDDEN, "not_invited", "post", REJECT, &group, None)
        .await;
    carol.expect(S::OK, "post", ANSWER, &group, None).await;
    dave.expect(S::OK, "post", ANSWER, &group, None).await;
    let body = carol.expect(S::OK, "post", END, &group, None).await;
    assert_eq!(
        (&body["status"], &body["callStatus"]),
        (&json!("left"), &json!("active"))
    );
    assert!(body["duration"].is_null() && body["endReason"].is_null());
    let body = dave.expect(S::OK, "post", END, &group, None).await;
    assert_eq!(
        (&body["status"], &body["endReason"]),
        (&json!("ended"), &json!("ended-by-user"))
    );

    // A 1:1 call rejected.
    let to_dave = json!({"conversationId": conv, "participantIds": [dave.id]});
    let body = carol
        .expect(S::CREATED, "post", INITIATE, &[], Some(to_dave))
        .await;
    let rejected = [call_id(&body)];
    let body = dave.expect(S::OK, "post", REJECT, &rejected, None).await;
    assert_eq!(body["callStatus"], "rejected");
    let call = &carol.expect(S::OK, "get", CALL, &rejected, None).await["call"];
    assert_eq!(
        (&call["type"], &call["endReason"], &call["duration"]),
        (&json!("audio"), &json!("rejected"), &json!(0))
    );

    // The history, two calls a page.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let body = alice.history(&query, S::OK, None).await;
        let calls = body["calls"].as_array().expect("calls");
        seen.extend(calls.iter().map(|c| c["id"].clone()));
        match body["nextBefore"].as_str() {
            Some(next) => query = format!("?limit=2&conversationId={conv}&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen, [json!(rejected[0]), json!(group[0]), json!(one[0])]);
    let all = alice.history("?limit=500", S::OK, None).await;
    assert_eq!(all["calls"].as_array().map(Vec::len), Some(3));
    let none = eve.history("", S::OK, None).await;
    assert_eq!(none, json!({"calls": [], "nextBefore": null}));
    let query = format!("?conversationId={conv}");
    eve.history(&query, S::NOT_FOUND, Some(not_found)).await;
    for bad in [
        "?limit=0",
        "?limit=x",
        "?before=yesterday",
        "?conversationId=1",
        "?page=2",
    ] {
        alice
            .history(bad, S::BAD_REQUEST, Some("invalid_field"))
            .await;
    }
    let expired = auth::mint(
        JWT_SECRET,
        alice.id,
        None,
        None,
        Timestamp::from_unix_millis(0),
        Duration::from_secs(60),
    );
    let expired = c.caller(alice.id, Some(&expired));
    expired
        .history("", S::UNAUTHORIZED, Some("token_expired"))
        .await;

    // TURN credentials.
    let r = alice
        .send("get", "/api/calls/turn-credentials", &[], "", None)
        .await;
    let body = expect(&r, S::OK, None);
    assert_eq!(
        r.headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let username = body["credentials"]["username"]
        .as_str()
        .expect("a username");
    assert!(username.ends_with(&format!(":{}", alice.id)), "{username}");
    let expires = body["expiresAt"].as_str().expect("expiresAt");
    assert!(
        expires.ends_with('Z') && !expires.contains('.'),
        "whole seconds: {expires}"
    );

    // Revocation: Alice's tokens so far are refused; one issued in a later second is not.
    let body = admin
        .expect(S::OK, "delete", SESSIONS, &[alice.id], None)
        .await;
    assert_eq!(
        (&body["userId"], &body["socketsClosed"]),
        (&json!(alice.id), &json!(0))
    );
    admin
        .refused(
            S::BAD_REQUEST,
            "invalid_field",
            "delete",
            SESSIONS,
            &[nil],
            None,
        )
        .await;
    alice
        .history("", S::UNAUTHORIZED, Some("token_revoked"))
        .await;
    let later = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 2000);
    let later = auth::mint(
        JWT_SECRET,
        alice.id,
        None,
        None,
        later,
        Duration::from_secs(60),
    );
    c.caller(alice.id, Some(&later))
        .history("", S::OK, None)
        .await;
}
