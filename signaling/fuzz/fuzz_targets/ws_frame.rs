//! `ws_frame`: arbitrary bytes as a client frame of `/ws`.
//!
//! 1. Decoded by `ws::parse_frame`, the decoder `/ws` uses: a frame it takes is a JSON
//!    object, and the server's own encoder (`ws::frame`) round-trips it (event, data, id);
//!    then typed by the parser both transports use (see `typed`).
//! 2. Through the in-process daemon: a WebSocket to `/ws?token=` as Alice (in a live call,
//!    named by the placeholder id), the bytes as one text frame, then a sentinel frame whose
//!    answer marks the end; bytes that are not UTF-8 as a binary frame, then as a (raw) text
//!    frame.
//!    Checked: a frame over `MAX_AUTHENTICATED_FRAME` bytes (the socket authenticated at its
//!    upgrade), or a text frame that is not UTF-8, ends the
//!    connection with nothing answered; a binary frame is refused `invalid_frame`; a frame
//!    the decoder refuses is answered exactly `{"event": "error", "data": {"code":
//!    "invalid_frame", "message": "a frame is ...: <why>", "event": ""}}`; one it takes gets
//!    at most one answer, carrying its `id`, an `ack` only for the events the call service
//!    performs (always answered) and an `error` whose code fits the contract's verdict on
//!    the data, and for a relayed signal `{"success": true}` if it has an `id`, else nothing.
//!
//! An input starting with a space is first grown with spaces (JSON white space) to either
//! side of `MAX_AUTHENTICATED_FRAME` (see `pad`), to probe the bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use switchboard_signaling::socket::ClientEvent;
use switchboard_signaling::ws;
use switchboard_signaling_fuzz::{
    check_verdict, pad, substitute, typed, world, Read, Verdict, World,
};

const SENTINEL: &str = r#"{"event":"fuzz:sentinel","id":"fuzz-sentinel"}"#;

fuzz_target!(|data: &[u8]| {
    let w = world();
    w.run(async {
        let call = w.live_call().await;
        let frame = pad(
            &substitute(data, call),
            b" ",
            b" ",
            ws::MAX_AUTHENTICATED_FRAME,
        );
        decode_only(&frame);
        wire(w, &frame).await;
        w.settle().await;
    });
});

fn data_of<'a>(f: &ws::ClientFrame<'a>) -> &'a str {
    f.data.map_or("null", RawValue::get)
}

fn decode_only(frame: &[u8]) {
    let Ok(text) = std::str::from_utf8(frame) else {
        return;
    };
    let Ok(f) = ws::parse_frame(text) else {
        return;
    };
    assert!(
        text.trim_start().starts_with('{'),
        "a frame that is no object taken: {text}"
    );
    let data = data_of(&f);
    let raw = RawValue::from_string(data.to_owned()).expect("the data is JSON");
    let again = ws::frame(&f.event, &raw, f.id.as_ref());
    let g = ws::parse_frame(&again)
        .unwrap_or_else(|e| panic!("the server's own frame does not decode ({e}): {again}"));
    assert_eq!(
        (&g.event, data_of(&g), &g.id),
        (&f.event, data, &f.id),
        "{text} re-encoded as {again}"
    );
    let _ = typed(&f.event, data);
}

/// The frames answered before the sentinel's (the hub's own events aside); whether the
/// connection ended instead.
async fn answers(ws: &mut switchboard_signaling_fuzz::Ws) -> (Vec<Value>, Option<String>) {
    let mut got = Vec::new();
    loop {
        match ws.read().await {
            Read::Text(t) => {
                let v: Value = serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("a server frame that is not JSON ({e}): {t}"));
                if v["id"] == "fuzz-sentinel" {
                    let expected = json!({"event": "error", "id": "fuzz-sentinel", "data": {
                        "code": "unknown_event", "message": "unknown event `fuzz:sentinel`",
                        "event": "fuzz:sentinel"}});
                    assert_eq!(v, expected);
                    return (got, None);
                }
                // What the server says is what its decoder reads.
                let f = ws::parse_frame(&t).expect("the server's frames decode");
                if matches!(f.event.as_str(), "ack" | "error") {
                    got.push(v);
                }
            }
            Read::Closed(why) => return (got, Some(why)),
        }
    }
}

async fn wire(w: &World, frame: &[u8]) {
    let mut ws = w.websocket(&format!("/ws?token={}", w.alice_token)).await;
    let Ok(text) = std::str::from_utf8(frame) else {
        // As a binary frame: refused, the connection stays; as a text frame: it ends.
        let _ = ws.send_binary(frame).await && ws.send(SENTINEL.as_bytes()).await;
        let (got, closed) = answers(&mut ws).await;
        let context = format!(
            "{} bytes, answered {got:?}, closed: {closed:?}",
            frame.len()
        );
        if frame.len() > ws::MAX_AUTHENTICATED_FRAME {
            assert!(
                closed.is_some() && got.is_empty(),
                "over MAX_AUTHENTICATED_FRAME: {context}"
            );
            return ws.close().await;
        }
        let binary = json!({"event": "error", "data": {"code": "invalid_frame",
            "message": "frames are JSON text", "event": ""}});
        assert!(
            closed.is_none() && got == [binary],
            "a binary frame: {context}"
        );
        let _ = ws.send(frame).await && ws.send(SENTINEL.as_bytes()).await;
        let (got, closed) = answers(&mut ws).await;
        let context = format!(
            "{} bytes, answered {got:?}, closed: {closed:?}",
            frame.len()
        );
        assert!(closed.is_some() && got.is_empty(), "not UTF-8: {context}");
        return ws.close().await;
    };
    let _ = ws.send(frame).await && ws.send(SENTINEL.as_bytes()).await;
    let (got, closed) = answers(&mut ws).await;
    let context = || {
        format!(
            "{} bytes, answered {got:?}, closed: {closed:?}",
            frame.len()
        )
    };
    if frame.len() > ws::MAX_AUTHENTICATED_FRAME {
        assert!(
            closed.is_some() && got.is_empty(),
            "over MAX_AUTHENTICATED_FRAME: {}",
            context()
        );
    } else {
        assert!(closed.is_none(), "{}", context());
        match ws::parse_frame(text) {
            Err(e) => {
                let message = format!("a frame is {{\"event\": \"...\", \"data\": {{...}}}}: {e}");
                let expected = json!({"event": "error", "data": {"code": "invalid_frame",
                    "message": message, "event": ""}});
                assert_eq!(got, [expected], "{}", context());
            }
            Ok(f) => check_taken(&f, &got, &context()),
        }
    }
    ws.close().await;
}

fn check_taken(f: &ws::ClientFrame<'_>, got: &[Value], context: &str) {
    let data = data_of(f);
    let verdict = typed(&f.event, data);
    assert!(got.len() <= 1, "more than one answer: {context}");
    let Some(answer) = got.first() else {
        // Nothing: a relayed signal without an id.
        assert!(
            matches!(verdict, Verdict::Valid(ClientEvent::Signal { .. })) && f.id.is_none(),
            "no answer to {:?} ({verdict:?}): {context}",
            f.event
        );
        return;
    };
    let id = answer.get("id");
    assert_eq!(id, f.id.as_ref(), "the answer's id: {context}");
    match answer["event"].as_str() {
        Some("error") => {
            assert_eq!(answer["data"]["event"], json!(f.event), "{context}");
            let code = answer["data"]["code"].as_str();
            check_verdict(&f.event, data, code, "/ws");
        }
        // A relayed signal with an id: acked as Socket.IO acks it (or refused by the hub,
        // above: its target or its call).
        Some("ack") if matches!(verdict, Verdict::Valid(ClientEvent::Signal { .. })) => {
            assert!(f.id.is_some(), "an ack without an id: {context}");
            assert_eq!(answer["data"], json!({"success": true}), "{context}");
        }
        Some("ack") => {
            assert!(
                matches!(&verdict, Verdict::Valid(e) if !matches!(e, ClientEvent::Signal { .. })),
                "an ack to {:?} ({verdict:?}): {context}",
                f.event
            );
        }
        _ => unreachable!("only acks and errors are kept"),
    }
}
