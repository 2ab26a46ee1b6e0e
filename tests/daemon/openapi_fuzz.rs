//! Schemathesis (from PyPI; tests/run.sh installs it into a venv outside the clone) generates
//! requests from the daemon's own `/openapi.json`, valid and invalid (wrong types, missing and
//! unknown fields, bad UUIDs, huge values, odd methods), and sends them to the real daemon,
//! once as a user and once as the admin. Not one may get a 5xx, and the daemon must log no
//! panic.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{run_bounded, Daemon, Options, Person, ADMIN_TOKEN};

/// Examples per operation and phase: about 700 requests a run.
const EXAMPLES: &str = "50";

fn schemathesis() -> PathBuf {
    std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/switchboard-schemathesis/bin/schemathesis".into())
}

fn run(d: &Daemon, bearer: &str) -> String {
    let bin = schemathesis();
    assert!(
        bin.exists(),
        "{} is missing: run tests/run.sh once (it installs schemathesis)",
        bin.display()
    );
    let base = format!("http://{}", d.http);
    let (code, out) = run_bounded(
        Command::new(&bin)
            .args(["run", &format!("{base}/openapi.json"), "--url", &base])
            .args(["-H", &format!("Authorization: Bearer {bearer}")])
            .args(["--checks", "not_a_server_error", "--max-examples", EXAMPLES])
            .arg("--no-color")
            // It keeps a cache (.schemathesis/) in its working directory: not in the clone.
            .current_dir(d.dir.path()),
        Duration::from_secs(300),
    );
    assert_eq!(code, Some(0), "schemathesis found server errors:\n{out}");
    assert!(out.contains(" passed"), "no test cases ran:\n{out}");
    out
}

#[test]
fn generated_requests_never_get_a_server_error() {
    let d = Daemon::start_with(Options::default());
    let api = d.api();
    let alice = Person::new("Alice");
    api.provision(&alice);
    let user = run(&d, &alice.token);
    let admin = run(&d, ADMIN_TOKEN);
    for out in [&user, &admin] {
        let cases = out
            .lines()
            .find(|l| l.contains(" generated, "))
            .unwrap_or_default();
        println!("{}", cases.trim());
    }
    let log = d.log();
    assert!(
        !log.iter()
            .any(|l| l.contains("panicked") || l.contains("ERROR")),
        "the daemon logged errors: {log:#?}"
    );
}
