//! The packets: Engine.IO's open packet and Socket.IO's event packet going out, and the
//! splitting of a Socket.IO packet coming in into its namespace, acknowledgement id and event.

use serde_json::value::RawValue;

use crate::socket::limits::{MAX_FRAME, PING_EVERY, PING_TIMEOUT};

/// `42["event",data]`: an event for the client. Our event names are plain ASCII.
#[doc(hidden)] // pub for signaling/fuzz
pub fn event_packet(event: &str, data: &str) -> String {
    let mut p = String::with_capacity(event.len() + data.len() + 8);
    p.push_str("42[\"");
    p.push_str(event);
    p.push_str("\",");
    p.push_str(data);
    p.push(']');
    p
}

/// The open packet of session `sid`.
pub(super) fn open_packet(sid: &str, upgrades: bool) -> String {
    format!(
        r#"0{{"sid":"{sid}","upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        if upgrades { r#""websocket""# } else { "" },
        PING_EVERY.as_millis(),
        PING_TIMEOUT.as_millis(),
        MAX_FRAME,
    )
}

/// `/ns,rest` → (`/ns`, `rest`); without a leading `/`, the main namespace.
#[doc(hidden)] // pub for signaling/fuzz
pub fn split_namespace(packet: &str) -> (&str, &str) {
    if !packet.starts_with('/') {
        return ("/", packet);
    }
    match packet.find(',') {
        Some(i) => (&packet[..i], &packet[i + 1..]),
        None => (packet, ""),
    }
}

/// `12["e",{}]` → (Some(12), `["e",{}]`).
#[doc(hidden)] // pub for signaling/fuzz
pub fn split_ack(packet: &str) -> (Option<u64>, &str) {
    let digits = packet.bytes().take_while(u8::is_ascii_digit).count();
    (packet[..digits].parse().ok(), &packet[digits..])
}

/// `["event", data]` → the event's name and the data's JSON text (`null` without data).
#[doc(hidden)] // pub for signaling/fuzz
pub fn split_event(text: &str) -> Option<(String, &str)> {
    let parts: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    let event: String = serde_json::from_str(parts.first()?.get()).ok()?;
    Some((event, parts.get(1).map_or("null", |d| d.get())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_split_into_namespace_ack_and_event() {
        assert_eq!(
            split_namespace(r#"{"token":"t"}"#),
            ("/", r#"{"token":"t"}"#)
        );
        assert_eq!(split_namespace("/admin,{}"), ("/admin", "{}"));
        assert_eq!(split_namespace("/admin"), ("/admin", ""));
        assert_eq!(split_ack(r#"12["e",{}]"#), (Some(12), r#"["e",{}]"#));
        assert_eq!(split_ack(r#"["e"]"#), (None, r#"["e"]"#));
        // An id too long for u64 is dropped (the event is answered without an ack).
        let (id, rest) = split_ack("99999999999999999999999[\"e\"]");
        assert_eq!((id, split_event(rest).is_some()), (None, true));
        assert_eq!(
            split_event(r#"["call:end",{"callId":"x"}]"#),
            Some(("call:end".to_owned(), r#"{"callId":"x"}"#))
        );
        assert_eq!(
            split_event(r#"["call:end"]"#),
            Some(("call:end".to_owned(), "null"))
        );
        assert_eq!(split_event(r#"[1,{}]"#), None);
        assert_eq!(split_event(r#"{"a":1}"#), None);
        assert_eq!(split_event("[]"), None);
    }

    #[test]
    fn packets_out_are_socket_io_text() {
        assert_eq!(
            event_packet("call:ended", r#"{"a":1}"#),
            r#"42["call:ended",{"a":1}]"#
        );
        let open: serde_json::Value = serde_json::from_str(&open_packet("abc", true)[1..]).unwrap();
        assert_eq!(open["sid"], "abc");
        assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
        assert_eq!(open["pingInterval"], 25_000);
        assert_eq!(open["pingTimeout"], 20_000);
        assert_eq!(open["maxPayload"], MAX_FRAME);
        let open: serde_json::Value =
            serde_json::from_str(&open_packet("abc", false)[1..]).unwrap();
        assert_eq!(open["upgrades"], serde_json::json!([]));
    }
}
