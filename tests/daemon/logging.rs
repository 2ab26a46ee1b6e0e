//! `[log] format = "json"`: every line the daemon writes to stderr (the journal, under systemd)
//! is one JSON object, from the first to the graceful stop.

use crate::common;

use common::{Daemon, Options};
use serde_json::Value;

#[test]
fn json_logs_are_one_object_per_line_to_the_end() {
    let mut d = Daemon::start_with(Options {
        json_logs: true,
        ..Options::default()
    });
    assert!(d.stop().success(), "{:#?}", d.log());
    let lines = d.log();
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for o in &objects {
        for key in ["timestamp", "level", "target"] {
            assert!(o[key].is_string(), "no {key}: {o}");
        }
        assert!(o["fields"]["message"].is_string(), "no message: {o}");
    }
    let message = |o: &Value| {
        o["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let listening = objects
        .iter()
        .find(|o| message(o) == "http listening")
        .expect("an `http listening` line");
    assert_eq!(
        listening["fields"]["addr"],
        d.http.to_string(),
        "{listening}"
    );
    assert_eq!(listening["level"], "INFO");
    assert!(
        objects.iter().any(|o| message(o) == "shutting down"),
        "no graceful stop logged: {lines:#?}"
    );
}
