//! The demo's HTTP side without a browser: the embedded page and scripts as served, the demo
//! sign-in (development mode only) and who is online. tests/e2e/demo_chromium.rs drives the page.

use crate::common;

use common::{Api, Daemon};
use serde_json::{json, Value};

fn sign_in(api: &Api, name: &str) -> (u16, Value) {
    api.json("POST", "/api/demo/sign-in", None, &json!({ "name": name }))
}

#[test]
fn the_page_and_its_scripts_are_served_with_a_strict_policy() {
    let d = Daemon::start("");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for (path, kind, needle) in [
        ("/", "text/html", r#"<script type="module" src="/app.js">"#),
        ("/app.js", "text/javascript", "from './webrtc.js'"),
        (
            "/webrtc.js",
            "text/javascript",
            "export class WebRTCManager",
        ),
        (
            "/signaling.js",
            "text/javascript",
            "export class SignalingSocket",
        ),
        ("/style.css", "text/css", "#videos"),
        ("/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let mut resp = agent
            .get(format!("http://{}{path}", d.http))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let body = resp.body_mut().read_to_string().unwrap();
        assert!(body.contains(needle), "{path} lacks {needle:?}");
    }
}

#[test]
fn the_demo_sign_in_is_off_without_dev() {
    let d = Daemon::start("");
    let api = Api::new(d.http);
    let (status, body) = sign_in(&api, "Alice");
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("demo_disabled")),
        "{body}"
    );
    let (status, body) = api.get("/api/demo/online", "whatever");
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("demo_disabled")),
        "{body}"
    );
}

#[test]
fn a_name_signs_in_as_one_user_of_the_demo_conversation() {
    let d = Daemon::dev();
    let api = Api::new(d.http);

    let (status, alice) = sign_in(&api, "Alice");
    assert_eq!(status, 200, "{alice}");
    let token = alice["token"].as_str().unwrap().to_owned();
    let alice_id = alice["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(alice["user"]["name"], "Alice");
    // The same name, another case and spacing: the same user (another device of Alice's).
    let (_, again) = sign_in(&api, "  alice ");
    assert_eq!(again["user"]["id"], alice_id.as_str(), "{again}");
    assert_eq!(again["user"]["name"], "alice");
    let (_, bob) = sign_in(&api, "Bob");
    assert_ne!(bob["user"]["id"], alice_id.as_str());
    assert_eq!(bob["conversationId"], alice["conversationId"]);

    // The token is an API token like any other.
    let (status, creds) = api.get("/api/calls/turn-credentials", &token);
    assert_eq!(status, 200, "{creds}");

    // Both are members; nobody has a socket, so nobody is online. (Alice's name is her first
    // token's again: a token names its user whenever it is used.)
    let (status, online) = api.get("/api/demo/online", &token);
    assert_eq!(status, 200, "{online}");
    let users = online["users"].as_array().unwrap();
    let names: Vec<&str> = users.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Alice", "Bob"], "{online}");
    assert!(users.iter().all(|u| u["online"] == false), "{online}");

    // And they can call each other in the demo conversation.
    let (status, call) = api.json(
        "POST",
        "/api/calls/initiate",
        Some(&token),
        &json!({
            "conversationId": alice["conversationId"],
            "type": "audio",
            "participantIds": [bob["user"]["id"]],
        }),
    );
    assert_eq!(status, 201, "{call}");
}

#[test]
fn bad_sign_ins_are_refused_and_change_nothing() {
    let d = Daemon::dev();
    let api = Api::new(d.http);
    for body in [
        json!({ "name": "" }),
        json!({ "name": "   " }),
        json!({ "name": "x".repeat(41) }),
        json!({ "name": "a\u{7}b" }),
        json!({ "name": 7 }),
        json!({ "name": "Eve", "admin": true }),
        json!({}),
    ] {
        let (status, answer) = api.json("POST", "/api/demo/sign-in", None, &body);
        assert_eq!(status, 400, "{body} -> {answer}");
        // The field at fault is named: `name`, the unknown `admin`, or the missing `name`.
        let (code, message) = (&answer["error"]["code"], &answer["error"]["message"]);
        let message = message.as_str().unwrap();
        assert!(
            code == "invalid_field"
                && ["name: ", "admin: ", "body: missing field `name`"]
                    .iter()
                    .any(|f| message.starts_with(f))
                || code == "invalid_json",
            "{body} -> {answer}"
        );
    }
    let (status, answer) = api.send("POST", "/api/demo/sign-in", None, Some(b"{not json"));
    assert_eq!(status, 400, "{answer}");
    // Nobody was made a member: the first to sign in is alone.
    let (_, first) = sign_in(&api, "Carol");
    let (_, online) = api.get("/api/demo/online", first["token"].as_str().unwrap());
    assert_eq!(online["users"].as_array().unwrap().len(), 1, "{online}");
    // Without a token, or with a forged one, no list.
    let (status, _) = api.send("GET", "/api/demo/online", None, None);
    assert_eq!(status, 401);
    let (status, _) = api.get("/api/demo/online", "e30.e30.e30");
    assert_eq!(status, 401);
}
