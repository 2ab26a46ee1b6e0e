//! The daemon under a service manager (systemd's `Type=notify`, sd_notify(3)), played by the
//! test: it binds the datagram socket named in `NOTIFY_SOCKET` and reads what the daemon says.
//! - `READY=1` comes once every listener answers, with a `STATUS=` naming them; `/healthz`
//!   and `/readyz` then answer 200;
//! - with `WATCHDOG_USEC` set, `WATCHDOG=1` comes every half period;
//! - a SIGHUP is `RELOADING=1` (with `MONOTONIC_USEC`), then `READY=1` again;
//! - a SIGTERM is `STOPPING=1`, and the daemon exits 0.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{allocate, Daemon, Options};
use serde_json::json;

/// The watchdog period the test asks for.
const WATCHDOG: Duration = Duration::from_millis(400);

/// The notifications that arrive within `limit`, until one satisfies `done` (included).
fn until(sock: &UnixDatagram, limit: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let last = done(&m);
            got.push(m);
            if last {
                return got;
            }
        }
    }
    panic!("not within {limit:?}; got {got:?}");
}

/// `/healthz` and `/readyz` answer 200.
fn probes_answer(d: &Daemon) {
    let api = d.api();
    let health = api.send("GET", "/healthz", None, None);
    assert_eq!(health, (200, json!({"status": "ok"})));
    let ready = api.send("GET", "/readyz", None, None);
    assert_eq!(ready, (200, json!({"status": "ready"})));
}

fn lines(m: &str) -> Vec<&str> {
    m.lines().collect()
}

#[test]
fn ready_watchdog_reload_and_stop_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let usec = WATCHDOG.as_micros().to_string();
    let mut d = Daemon::start_with(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), usec),
        ],
        ..Options::default()
    });

    // READY=1 with a one-line status naming the listeners; both probes answer by then.
    let got = until(&sock, Duration::from_secs(10), |m| m.contains("READY=1"));
    let ready = got.last().unwrap();
    let sfu = d.sfu.expect("an SFU by default");
    let status = format!(
        "STATUS=serving turn {} (udp, tcp), sfu {sfu} (udp), http {}",
        d.turn, d.http
    );
    assert_eq!(lines(ready), ["READY=1", status.as_str()], "{got:?}");
    probes_answer(&d);

    // The watchdog is fed every half period (200 ms): at least 4 pings in 1.2 s.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        let got = until(&sock, WATCHDOG, |m| m.contains("WATCHDOG=1"));
        pings += got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    }
    assert!(pings >= 4, "{pings} watchdog pings in 1.2 s");

    // A reload: RELOADING=1 with the monotonic time, then READY=1 again.
    d.sighup();
    let got = until(&sock, Duration::from_secs(5), |m| m.contains("READY=1"));
    let reloading = got
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {got:?}"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(got.last().unwrap().contains("(reloaded)"), "{got:?}");

    // A stop: STOPPING=1, and exit 0.
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    let got = until(&sock, Duration::from_secs(1), |m| m.contains("STOPPING=1"));
    assert!(got.last().unwrap().contains("STATUS=stopping"), "{got:?}");
}

/// Without `NOTIFY_SOCKET` (not under systemd) nothing changes, and the probes answer.
#[test]
fn without_a_service_manager_the_probes_still_answer() {
    let mut d = Daemon::start("");
    probes_answer(&d);
    assert!(d.stop().success());
}

/// A SIGHUP reads `log.level` again from the config file: debug lines appear once it says
/// `debug`, and a config that no longer loads changes nothing.
#[test]
fn sighup_reloads_the_log_level() {
    let d = Daemon::start("");
    let config = d.store_path().with_file_name("switchboard.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let (username, _) = d.credentials("someone");
    let debug_line = |d: &Daemon| {
        d.log()
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("authentication failed"))
    };

    // At info, a failed authentication is not logged.
    allocate(d.turn, &username, "wrong");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!debug_line(&d));

    // A broken config: the reload is refused, the old level stays.
    std::fs::write(&config, "[log\nlevel = \"debug\"\n").unwrap();
    d.sighup();
    let refused = d.wait_log(Duration::from_secs(5), |l| {
        l.contains("config not reloaded")
    });
    assert!(refused.is_some(), "{:?}", d.log());
    allocate(d.turn, &username, "wrong");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!debug_line(&d));

    // debug: it is.
    std::fs::write(
        &config,
        text.replace("level = \"info\"", "level = \"debug\""),
    )
    .unwrap();
    d.sighup();
    let reloaded = d.wait_log(Duration::from_secs(5), |l| l.contains("log level reloaded"));
    assert!(
        reloaded.is_some_and(|l| l.contains("level=debug")),
        "{:?}",
        d.log()
    );
    allocate(d.turn, &username, "wrong");
    assert!(
        common::wait_until(Duration::from_secs(5), || debug_line(&d)),
        "no debug line after the reload"
    );
}
