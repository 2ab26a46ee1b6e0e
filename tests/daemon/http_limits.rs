//! The HTTP API's connection limits through the real daemon: slow, silent and idle clients are
//! closed by the header-read timeout (10 s), connections over `http.max_connections` are closed
//! as they come, and a SIGTERM with a stuck client open exits within the drain bound (5 s).
//!
//! The 10 s wait runs beside the other tests (they run in parallel), which take a few seconds.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, Daemon, Options};

/// The header-read timeout src/http.rs sets (`HEADER_READ_TIMEOUT`).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).unwrap();
    s
}

/// A request head without its final empty line: the server waits for the rest.
const PARTIAL_HEAD: &[u8] = b"GET /api/calls HTTP/1.1\r\nHost: switchboard.test\r\nX-Slow: ";

/// Reads until the server closes `s` (EOF or reset), for at most `limit`: when it did, counted
/// from `since`, or `None` if it is still open. Whatever the server sends before is skipped.
fn closed_within(s: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return Some(since.elapsed())
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Sends a complete `GET path` on `s` and reads its response (a JSON body with a
/// Content-Length, as every answer of the API has): the status.
fn get_on(s: &mut TcpStream, path: &str) -> u16 {
    request_on(s, "GET", path)
}

/// Sends a complete `method path` without a body on `s` and reads its response (a body with
/// a Content-Length, as every answer of the API has): the status.
pub fn request_on(s: &mut TcpStream, method: &str, path: &str) -> u16 {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: switchboard.test\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read the response");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no content-length: {text}"));
        if got.len() >= end + 4 + length {
            return text[9..12]
                .parse()
                .unwrap_or_else(|_| panic!("status: {text}"));
        }
    }
}

#[test]
fn slow_silent_and_idle_connections_are_closed_by_the_header_timeout() {
    let d = Daemon::start_with(Options::default());
    let lower = HEADER_READ_TIMEOUT - Duration::from_millis(500);
    let upper = HEADER_READ_TIMEOUT + Duration::from_secs(2);

    // A head sent in part, then nothing.
    let partial = {
        let mut s = connect(d.http);
        let since = Instant::now();
        s.write_all(PARTIAL_HEAD).unwrap();
        thread::spawn(move || closed_within(&mut s, since, upper + Duration::from_secs(3)))
    };
    // A head trickled a byte every 200 ms (slowloris): the timeout is for the whole head, not
    // between reads.
    let trickle = {
        let mut s = connect(d.http);
        let since = Instant::now();
        s.write_all(PARTIAL_HEAD).unwrap();
        thread::spawn(move || {
            while since.elapsed() < upper + Duration::from_secs(3) {
                if let Some(t) = closed_within(&mut s, since, Duration::from_millis(200)) {
                    return Some(t);
                }
                if s.write_all(b"a").is_err() {
                    return Some(since.elapsed());
                }
            }
            None
        })
    };
    // Connected, and not a byte.
    let silent = {
        let mut s = connect(d.http);
        let since = Instant::now();
        thread::spawn(move || closed_within(&mut s, since, upper + Duration::from_secs(3)))
    };
    // A keep-alive connection idle after a complete request: bounded too, from the response.
    let idle = {
        let mut s = connect(d.http);
        assert_eq!(get_on(&mut s, "/no-such-route"), 404);
        let since = Instant::now();
        thread::spawn(move || closed_within(&mut s, since, upper + Duration::from_secs(3)))
    };

    for (name, waiter) in [
        ("partial head", partial),
        ("trickled head", trickle),
        ("silent", silent),
        ("idle keep-alive", idle),
    ] {
        let closed = waiter.join().unwrap();
        let closed = closed.unwrap_or_else(|| panic!("{name}: still open after {upper:?}"));
        assert!(
            (lower..upper).contains(&closed),
            "{name}: closed after {closed:?}, not about {HEADER_READ_TIMEOUT:?}"
        );
    }
    // The daemon serves on.
    let (status, _) = d.api().send("GET", "/no-such-route", None, None);
    assert_eq!(status, 404);
}

#[test]
fn connections_over_max_connections_are_closed_at_once() {
    let d = Daemon::start_with(Options {
        http: "max_connections = 5".to_owned(),
        ..Options::default()
    });
    let mut held: Vec<TcpStream> = (0..5).map(|_| connect(d.http)).collect();
    // Let the daemon accept them (in order: they are first in its accept queue) and take the
    // five slots.
    thread::sleep(Duration::from_millis(300));

    let t0 = Instant::now();
    let over: Vec<TcpStream> = (0..5).map(|_| connect(d.http)).collect();
    for (i, mut s) in over.into_iter().enumerate() {
        let closed = closed_within(&mut s, t0, Duration::from_secs(3));
        let closed =
            closed.unwrap_or_else(|| panic!("connection {} over the cap not closed", i + 6));
        assert!(
            closed < Duration::from_secs(1),
            "connection {} closed after {closed:?}",
            i + 6
        );
    }
    // The first five are open, and serve.
    for (i, s) in held.iter_mut().enumerate() {
        let closed = closed_within(s, Instant::now(), Duration::from_millis(200));
        assert_eq!(
            closed,
            None,
            "connection {} under the cap was closed",
            i + 1
        );
    }
    assert_eq!(get_on(&mut held[0], "/no-such-route"), 404);

    // Closing them gives the slots back.
    drop(held);
    let api = d.api();
    let served = wait_until(Duration::from_secs(3), || {
        matches!(
            api.try_send("GET", "/no-such-route", None, None),
            Ok((404, _))
        )
    });
    assert!(
        served,
        "no request served after the held connections closed"
    );
    assert!(
        t0.elapsed() < HEADER_READ_TIMEOUT,
        "too slow to tell the cap from the timeout"
    );
}

#[test]
fn sigterm_with_a_stuck_client_exits_within_the_drain() {
    let mut d = Daemon::start_with(Options::default());
    let mut stuck = connect(d.http);
    stuck.write_all(PARTIAL_HEAD).unwrap();
    let mut idle = connect(d.http);
    assert_eq!(get_on(&mut idle, "/no-such-route"), 404);
    thread::sleep(Duration::from_millis(200));

    let t0 = Instant::now();
    // An idle keep-alive connection is closed at once by the graceful shutdown; the stuck one
    // is ended when the drain runs out (or the process exits).
    let idle = thread::spawn(move || closed_within(&mut idle, t0, Duration::from_secs(9)));
    let stuck = thread::spawn(move || closed_within(&mut stuck, t0, Duration::from_secs(9)));
    let status = d.stop();
    let stopped = t0.elapsed();
    assert!(
        status.success(),
        "exit status {status}; log: {:#?}",
        d.log()
    );
    assert!(
        stopped < Duration::from_secs(8),
        "stopped after {stopped:?}"
    );

    let idle = idle.join().unwrap().expect("idle connection closed");
    assert!(
        idle < Duration::from_secs(2),
        "idle connection closed after {idle:?}"
    );
    let stuck = stuck.join().unwrap().expect("stuck connection closed");
    assert!(
        stuck < Duration::from_secs(8),
        "stuck connection closed after {stuck:?}"
    );

    let log = d.log();
    assert!(
        !log.iter().any(|l| l.to_lowercase().contains("panic")),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("still open after")),
        "no drain timeout logged: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("call store closed")),
        "{log:#?}"
    );
    assert!(
        log.last().is_some_and(|l| l.contains("stopped")),
        "{log:#?}"
    );
}
