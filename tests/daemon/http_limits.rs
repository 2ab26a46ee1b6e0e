//! The HTTP API's connection limits through the real daemon: slow, silent and idle clients are
//! closed by the header-read timeout (10 s), a request trickled past `http.request_timeout` gets
//! 408 and a closed connection (while long polls and WebSockets, which owe no body, outlive it),
//! connections over `http.max_connections` are closed as they come, and so are those over
//! `http.max_connections_per_source` from one address (counted by the client a trusted proxy
//! names, and only a trusted one), and a SIGTERM with a stuck client open exits within the
//! drain bound (5 s). An early answer (413 for a body of megabytes) reaches a client that
//! writes its whole body before it reads (Python's urllib), because closing lingers.
//!
//! The 10 s wait runs beside the other tests (they run in parallel), which take a few seconds.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{run_bounded, wait_until, Daemon, Options, Person};

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
    response_on(s)
}

/// Reads a response (a body with a Content-Length, as every answer of the API has) on `s`: the
/// status.
fn response_on(s: &mut TcpStream) -> u16 {
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
            api.try_send_with("GET", "/no-such-route", None, &[], None),
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

/// A connection to `addr` from the loopback address `from` (127.0.0.2 is another source than
/// the usual 127.0.0.1).
fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// `GET /no-such-route` on `s` with `X-Forwarded-For: forwarded`: the status.
fn get_forwarded(s: &mut TcpStream, forwarded: &str) -> u16 {
    let head = format!(
        "GET /no-such-route HTTP/1.1\r\nHost: switchboard.test\r\nX-Forwarded-For: {forwarded}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    response_on(s)
}

/// The request timeout the tests below set.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

fn with_request_timeout() -> Options {
    Options {
        http: format!("request_timeout = \"{}s\"", REQUEST_TIMEOUT.as_secs()),
        ..Options::default()
    }
}

/// Sends `POST /api/calls/initiate` (a body of 1000 bytes announced) on `s`: the head in two
/// halves `pause` apart, then the body's first bytes, then a byte every 200 ms until the
/// daemon answers (or for 3 × the timeout). The answer, and when it came from the first byte.
fn trickle_a_request(s: &mut TcpStream, token: &str, pause: Duration) -> (String, Duration) {
    let head = format!(
        "POST /api/calls/initiate HTTP/1.1\r\nHost: switchboard.test\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"conversationId\": "
    );
    let since = Instant::now();
    let (first, rest) = head.as_bytes().split_at(40);
    s.write_all(first).unwrap();
    thread::sleep(pause);
    s.write_all(rest).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while since.elapsed() < 3 * REQUEST_TIMEOUT && !got.ends_with(b"}") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got.is_empty() && s.write_all(b" ").is_err() {
                    break;
                }
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), since.elapsed())
}

#[test]
fn a_request_trickled_past_the_request_timeout_gets_408_and_a_closed_connection() {
    let d = Daemon::start_with(with_request_timeout());
    let alice = Person::new("Alice");
    let on_time = |answered: Duration| {
        answered >= REQUEST_TIMEOUT - Duration::from_millis(300)
            && answered < REQUEST_TIMEOUT + Duration::from_millis(900)
    };

    // The deadline counts from the request's first byte: the head's 1.5 s are in it.
    let mut s = connect(d.http);
    let (text, answered) = trickle_a_request(&mut s, &alice.token, Duration::from_millis(1500));
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "after {answered:?}: {text:?}"
    );
    assert!(text.contains("request_timeout"), "{text}");
    assert!(on_time(answered), "answered after {answered:?}");
    let closed = closed_within(&mut s, Instant::now(), Duration::from_secs(2));
    assert!(closed.is_some(), "the connection stayed open after the 408");

    // On a keep-alive connection, from the next request's first byte, not from the last one
    // or the idle time between.
    let mut s = connect(d.http);
    let quick = format!(
        "POST /api/calls/initiate HTTP/1.1\r\nHost: switchboard.test\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\n\r\n{{}}",
        alice.token
    );
    s.write_all(quick.as_bytes()).unwrap();
    assert_eq!(response_on(&mut s), 400);
    thread::sleep(REQUEST_TIMEOUT + Duration::from_millis(500));
    let (text, answered) = trickle_a_request(&mut s, &alice.token, Duration::ZERO);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "after {answered:?}: {text:?}"
    );
    assert!(on_time(answered), "answered after {answered:?}");
}

#[test]
fn the_demo_sign_in_answers_without_waiting_for_a_body_when_dev_is_off() {
    let d = Daemon::start_with(with_request_timeout());
    let mut s = connect(d.http);
    // A head announcing a body that never comes.
    s.write_all(
        b"POST /api/demo/sign-in HTTP/1.1\r\nHost: switchboard.test\r\n\
          Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
    )
    .unwrap();
    let since = Instant::now();
    let status = response_on(&mut s);
    assert_eq!(status, 404);
    assert!(
        since.elapsed() < REQUEST_TIMEOUT / 2,
        "answered after {:?}",
        since.elapsed()
    );
}

#[test]
fn long_polls_and_websockets_outlive_the_request_timeout() {
    let d = Daemon::start_with(with_request_timeout());
    // An Engine.IO session, then a long poll the server holds (nothing to send until the
    // next ping, 25 s away).
    let mut s = connect(d.http);
    let head = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: switchboard.test\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let sid = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(at) = text.find("\"sid\":\"") {
            if let Some(len) = text[at + 7..].find('"') {
                break text[at + 7..at + 7 + len].to_owned();
            }
        }
    };
    let mut poll = connect(d.http);
    let head = format!(
        "GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: switchboard.test\r\n\r\n"
    );
    poll.write_all(head.as_bytes()).unwrap();

    // A WebSocket on /ws.
    let alice = Person::new("Alice");
    let url = format!("ws://{}/ws?token={}", d.http, alice.token);
    let (mut ws, _) = tokio_tungstenite::tungstenite::connect(url.as_str()).expect("ws upgrade");

    let held = REQUEST_TIMEOUT * 2;
    let since = Instant::now();
    assert_eq!(
        closed_within(&mut poll, since, held),
        None,
        "the long poll was ended (or answered)"
    );
    // The socket still answers a ping.
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Ping(b"still there".to_vec().into()))
        .expect("ws still open");
    let ponged = loop {
        match ws.read().expect("ws still open") {
            Message::Pong(p) => break p,
            _ => continue,
        }
    };
    assert_eq!(&ponged[..], b"still there");
}

#[test]
fn connections_over_the_per_source_cap_are_closed_and_other_sources_get_through() {
    let d = Daemon::start_with(Options {
        http: "max_connections_per_source = 3".to_owned(),
        ..Options::default()
    });
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", d.http)).collect();
    for s in &mut held {
        assert_eq!(get_on(s, "/no-such-route"), 404);
    }
    let t0 = Instant::now();
    let mut over = connect_from("127.0.0.1", d.http);
    let closed = closed_within(&mut over, t0, Duration::from_secs(3));
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(1)),
        "the 4th connection from 127.0.0.1 was not closed at once: {closed:?}"
    );
    // Another address is another source.
    let mut other = connect_from("127.0.0.2", d.http);
    assert_eq!(get_on(&mut other, "/no-such-route"), 404);
    // The first three still serve; closing one lets one more in.
    assert_eq!(get_on(&mut held[0], "/no-such-route"), 404);
    drop(held.pop());
    let served = wait_until(Duration::from_secs(3), || {
        let mut s = connect_from("127.0.0.1", d.http);
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.write_all(b"GET /no-such-route HTTP/1.1\r\nHost: switchboard.test\r\n\r\n")
            .is_ok()
            && matches!(s.read(&mut [0u8; 12]), Ok(12))
    });
    assert!(served, "no connection from 127.0.0.1 after one closed");
}

#[test]
fn only_a_trusted_proxy_names_the_client_the_cap_counts() {
    let d = Daemon::start_with(Options {
        http: "max_connections_per_source = 2\ntrusted_proxies = [\"127.0.0.2/32\"]".to_owned(),
        ..Options::default()
    });
    // From 127.0.0.1, not trusted: the header is ignored, and all count as 127.0.0.1.
    let mut untrusted = Vec::new();
    for i in 0..2 {
        let mut s = connect_from("127.0.0.1", d.http);
        assert_eq!(get_forwarded(&mut s, &format!("203.0.113.{i}")), 404);
        untrusted.push(s);
    }
    let t0 = Instant::now();
    let mut third = connect_from("127.0.0.1", d.http);
    assert!(
        closed_within(&mut third, t0, Duration::from_secs(3))
            .is_some_and(|t| t < Duration::from_secs(1)),
        "a forwarded header from an untrusted peer was believed"
    );

    // From 127.0.0.2, trusted: each connection counts for the client it names.
    let mut proxied = Vec::new();
    for i in 0..4 {
        let mut s = connect_from("127.0.0.2", d.http);
        let forwarded = format!("198.51.100.77, 203.0.113.{i}");
        assert_eq!(get_forwarded(&mut s, &forwarded), 404, "client {i}");
        proxied.push(s);
    }
    // Two for one client, and the third is refused (429) and closed.
    let mut same: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.2", d.http)).collect();
    assert_eq!(get_forwarded(&mut same[0], "192.0.2.50"), 404);
    assert_eq!(get_forwarded(&mut same[1], "192.0.2.50"), 404);
    assert_eq!(get_forwarded(&mut same[2], "192.0.2.50"), 429);
    let closed = closed_within(&mut same[2], Instant::now(), Duration::from_secs(2));
    assert!(closed.is_some(), "the refused connection stayed open");
    // The rightmost untrusted hop is the client: a made-up one to its left changes nothing.
    let mut spoof = connect_from("127.0.0.2", d.http);
    assert_eq!(get_forwarded(&mut spoof, "10.9.9.9, 192.0.2.50"), 429);
}

/// Posts `sys.argv[3]` MiB with Python's urllib, which sends the whole body before it reads
/// the answer, and prints the status it got (or the error, on a broken pipe or a reset).
const URLLIB_POST: &str = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=b"x" * (int(sys.argv[3]) << 20), method="POST",
    headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=20)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code)
except Exception as e:
    print(repr(e))
"#;

#[test]
fn an_early_413_reaches_a_client_that_writes_its_whole_body_first() {
    let d = Daemon::start_with(Options::default());
    let alice = Person::new("Alice");
    let url = format!("http://{}/api/calls/initiate", d.http);
    // Over a network a 2 MiB body is still in flight when the answer comes; on loopback the
    // kernel's buffers take it whole at once, so it takes more to be still sending: 16 MiB
    // (a broken pipe, every time, when closing did not linger).
    for (attempt, mib) in [(1, "2"), (2, "16"), (3, "16")] {
        let (code, out) = run_bounded(
            Command::new("python3").args(["-c", URLLIB_POST, &url, &alice.token, mib]),
            Duration::from_secs(30),
        );
        assert_eq!(code, Some(0), "python3: {out}");
        assert_eq!(out.trim(), "413", "attempt {attempt}, {mib} MiB");
    }
    // The daemon serves on.
    let (status, _) = d.api().send("GET", "/no-such-route", None, None);
    assert_eq!(status, 404);
}
