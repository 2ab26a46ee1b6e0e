//! The load generator of the calls benchmark (`bench/calls.sh`): full call lifecycles over real
//! HTTP/1.1 against a running `switchboard serve`, beside the raw SQLite durable transaction
//! rate of the same filesystem.
//!
//! Three modes, which can be combined (they run in this order):
//!
//! - `--sqlite-anchor PATH`: the anchor. A fresh SQLite file at PATH (WAL, `synchronous =
//!   FULL`, as the call store opens its file), one small INSERT per `BEGIN IMMEDIATE … COMMIT`,
//!   single-threaded, for `--anchor-secs`: durable transactions per second. Every commit waits
//!   for its fsync, so this is what one durable transaction at a time costs on this disk; the
//!   daemon's group commit shares one commit among the transitions waiting for it.
//! - `--http ADDR --jwt-secret S`: the load. `--clients` threads, each with its own keep-alive
//!   connection (a minimal HTTP/1.1 client over `std::net::TcpStream`), its own two users (A and
//!   B, random UUIDs, tokens minted with `auth::mint`) and its own conversation (created by its
//!   first call: the daemon must run with `auth.open_conversations = true`). Each client first
//!   registers B (`GET /api/calls` as B, so the daemon knows B when A invites them), then loops
//!   over full lifecycles: `POST /api/calls/initiate` as A (201), `POST /api/calls/{id}/answer`
//!   as B (200, active), `PATCH /api/calls/{id}/media` as B (200), `POST /api/calls/{id}/end`
//!   as A (200, ended): four durable transitions. Lifecycles and requests are counted when
//!   they complete inside the measured window (after `--warmup`, for `--duration`); a client
//!   starts no lifecycle after the window, and finishes the one in flight, so every call it
//!   made is ended. Any unexpected status, body or I/O error is an error: the first few are
//!   printed, all are counted, and the exit status is 1.
//! - `--count-calls DB`: reads a (stopped) daemon's store and prints how many calls it holds,
//!   by status: the durability cross-check (every lifecycle the client saw complete must be an
//!   ended call on disk).
//!
//! ```text
//! loadgen calls [--sqlite-anchor PATH] [--anchor-secs 3]
//!               [--http IP:PORT --jwt-secret S] [--clients 32] [--duration 10] [--warmup 2]
//!               [--count-calls DB]
//! ```
//! Each mode ends with one machine-readable line: `anchor tx=.. secs=.. tx_per_s=..
//! p50_us=.. p99_us=.. cpu_us_per_tx=..`, `summary clients=.. secs=.. lifecycles=.. lifecycles_per_s=..
//! requests=.. requests_per_s=.. p50_ms=.. p99_ms=.. ... errors=.. completed_total=..
//! initiated_total=..` and `store calls=.. ended=.. live=.. other=..`; with both the anchor
//! and the load, a `ratio` line: durable transitions per second of the daemon (4 per
//! lifecycle) over the anchor's transactions per second.

mod http;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use rusqlite::{Connection, OpenFlags};
use switchboard_signaling::auth;
use switchboard_signaling::time::Timestamp;
use uuid::Uuid;

use crate::seconds;
use crate::stats::{ms, own_cpu_us, percentile, Errors};
use http::{find, Http};

/// The transitions a lifecycle makes (initiate, answer, media, end).
const TRANSITIONS: u64 = 4;
/// The issue's target, in lifecycles per second.
const TARGET: f64 = 1000.0;

const OPS: [&str; 4] = ["initiate", "answer", "media", "end"];

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).multiple(true)
    .args(["anchor", "http", "count_calls"]))]
pub struct Args {
    /// The anchor: durable SQLite transactions in a fresh file at PATH.
    #[arg(long = "sqlite-anchor", value_name = "PATH")]
    anchor: Option<PathBuf>,
    /// How long the anchor runs.
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = seconds(0.001, 3600.0))]
    anchor_secs: Duration,
    /// The load: the daemon's HTTP address.
    #[arg(long, value_name = "IP:PORT", requires = "jwt_secret")]
    http: Option<SocketAddr>,
    /// The daemon's JWT secret, to mint the clients' tokens.
    #[arg(long)]
    jwt_secret: Option<String>,
    /// Client threads, each with its own connection and users.
    #[arg(long, default_value_t = 32, value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    clients: usize,
    /// The measured window.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds(0.001, 3600.0))]
    duration: Duration,
    /// Before the measured window.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = seconds(0.0, 3600.0))]
    warmup: Duration,
    /// The cross-check: count the calls in a (stopped) daemon's store.
    #[arg(long, value_name = "DB")]
    count_calls: Option<PathBuf>,
}

pub fn main(args: &Args) -> ExitCode {
    let mut failed = false;
    let mut anchor_rate = None;
    if let Some(path) = &args.anchor {
        match anchor(path, args.anchor_secs) {
            Ok(a) => {
                println!(
                    "sqlite anchor: {} durable transactions in {:.2} s = {:.0} tx/s \
                     (one INSERT per BEGIN IMMEDIATE…COMMIT, WAL, synchronous=FULL); \
                     latency p50 {} us, p99 {} us; CPU {:.1} us per transaction",
                    a.tx, a.secs, a.rate, a.p50_us, a.p99_us, a.cpu_us
                );
                println!(
                    "anchor tx={} secs={:.3} tx_per_s={:.1} p50_us={} p99_us={} cpu_us_per_tx={:.1}",
                    a.tx, a.secs, a.rate, a.p50_us, a.p99_us, a.cpu_us
                );
                anchor_rate = Some(a.rate);
            }
            Err(e) => {
                eprintln!("calls_load: sqlite anchor at {}: {e}", path.display());
                failed = true;
            }
        }
    }
    if let (Some(addr), Some(secret)) = (args.http, &args.jwt_secret) {
        let report = load(args, addr, secret);
        report.print();
        failed |= report.errors.count > 0 || report.lifecycles == 0;
        if let Some(rate) = anchor_rate {
            let transitions = report.lifecycles_per_s * TRANSITIONS as f64;
            println!(
                "daemon durable transitions/s {transitions:.0} ({TRANSITIONS} per lifecycle) \
                 / raw SQLite tx/s {rate:.0} = {:.2}; lifecycles/s {:.0} vs target {TARGET:.0}: {}",
                transitions / rate,
                report.lifecycles_per_s,
                if report.lifecycles_per_s >= TARGET {
                    "met"
                } else {
                    "NOT met"
                }
            );
            println!(
                "ratio transitions_per_s={transitions:.1} anchor_tx_per_s={rate:.1} \
                 transitions_over_anchor={:.3} target_lifecycles_per_s={TARGET:.0} met={}",
                transitions / rate,
                u8::from(report.lifecycles_per_s >= TARGET)
            );
        }
    }
    if let Some(db) = &args.count_calls {
        match count_calls(db) {
            Ok(c) => {
                println!(
                    "store {}: {} calls, {} ended, {} live, {} other",
                    db.display(),
                    c.calls,
                    c.ended,
                    c.live,
                    c.other
                );
                println!(
                    "store calls={} ended={} live={} other={}",
                    c.calls, c.ended, c.live, c.other
                );
            }
            Err(e) => {
                eprintln!("calls_load: reading {}: {e}", db.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------------
// The SQLite anchor.

struct Anchor {
    tx: u64,
    /// CPU time (user + system) per transaction.
    cpu_us: f64,
    secs: f64,
    rate: f64,
    p50_us: u64,
    p99_us: u64,
}

fn anchor(path: &std::path::Path, secs: Duration) -> rusqlite::Result<Anchor> {
    // A fresh file every run: a WAL left by an earlier run would be checkpointed first.
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE anchor (id INTEGER PRIMARY KEY, call_id TEXT NOT NULL, \
         status TEXT NOT NULL, updated_at TEXT NOT NULL) STRICT",
    )?;
    let mut insert =
        conn.prepare("INSERT INTO anchor (call_id, status, updated_at) VALUES (?1, ?2, ?3)")?;
    let mut one = |n: u64| -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let id = Uuid::from_u128(u128::from(n)).to_string();
        insert.execute(rusqlite::params![
            id,
            "active",
            Timestamp::now().to_string()
        ])?;
        conn.execute_batch("COMMIT")
    };
    // A few transactions first, so the file and its WAL exist at their working size.
    for n in 0..20 {
        one(n)?;
    }
    let mut latencies = Vec::with_capacity(16 * 1024);
    let cpu0 = own_cpu_us();
    let start = Instant::now();
    let mut n = 20;
    loop {
        let t = Instant::now();
        if t.duration_since(start) >= secs {
            break;
        }
        one(n)?;
        latencies.push(t.elapsed().as_micros() as u64);
        n += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = own_cpu_us() - cpu0;
    latencies.sort_unstable();
    let tx = latencies.len() as u64;
    Ok(Anchor {
        tx,
        cpu_us: if tx > 0 { cpu / tx as f64 } else { 0.0 },
        secs: elapsed,
        rate: tx as f64 / elapsed,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
    })
}

// ---------------------------------------------------------------------------------------------
// The store cross-check.

struct Counts {
    calls: u64,
    ended: u64,
    live: u64,
    other: u64,
}

fn count_calls(db: &std::path::Path) -> rusqlite::Result<Counts> {
    // Read-write open (not read-only): a WAL the daemon left behind must be readable, which
    // needs the -shm; the daemon checkpoints and truncates it when it stops cleanly.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.query_row(
        "SELECT count(*),
                count(*) FILTER (WHERE status = 'ended'),
                count(*) FILTER (WHERE status IN ('initiated', 'ringing', 'active'))
         FROM calls",
        [],
        |r| {
            let calls: i64 = r.get(0)?;
            let ended: i64 = r.get(1)?;
            let live: i64 = r.get(2)?;
            Ok(Counts {
                calls: calls as u64,
                ended: ended as u64,
                live: live as u64,
                other: (calls - ended - live) as u64,
            })
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The load.

/// What one client measured.
#[derive(Default)]
struct ClientStats {
    /// Lifecycles completed inside the window, and their latencies (microseconds).
    lifecycles: u64,
    lifecycle_us: Vec<u64>,
    /// Requests completed inside the window, by operation, and their latencies.
    requests: u64,
    op_us: [Vec<u64>; 4],
    /// Every lifecycle completed, warm-up and overrun included; every call initiated.
    completed_total: u64,
    initiated_total: u64,
    errors: Errors,
}

/// The measured window: lifecycles and requests completing in it count.
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && t <= self.until
    }
}

struct Client {
    id: usize,
    http: Http,
    token_a: String,
    token_b: String,
    initiate_body: Vec<u8>,
    path: String,
}

impl Client {
    fn new(id: usize, addr: SocketAddr, secret: &str) -> Client {
        let now = Timestamp::now();
        let ttl = Duration::from_secs(24 * 3600);
        let a = random_uuid();
        let b = random_uuid();
        let conversation = random_uuid();
        Client {
            id,
            http: Http::new(addr),
            token_a: auth::mint(secret, a, None, None, now, ttl),
            token_b: auth::mint(secret, b, None, None, now, ttl),
            initiate_body: format!(
                r#"{{"conversationId":"{conversation}","type":"video","participantIds":["{b}"]}}"#
            )
            .into_bytes(),
            path: String::with_capacity(128),
        }
    }

    /// Makes B known to the daemon (any authenticated request records its caller).
    fn register(&mut self) -> Result<(), String> {
        let status = self
            .http
            .send("GET", "/api/calls?limit=1", &self.token_b, None)
            .map_err(|e| format!("client {}: register B: {e}", self.id))?;
        self.expect("register B (GET /api/calls)", status, 200, None)
    }

    fn expect(
        &self,
        what: &str,
        status: u16,
        want: u16,
        body_has: Option<&str>,
    ) -> Result<(), String> {
        let body = &self.http.body;
        let body_ok = match body_has {
            Some(s) => find(body, s.as_bytes()).is_some(),
            None => true,
        };
        if status == want && body_ok {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(body).into_owned();
        if text.len() > 300 {
            let mut cut = 300;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let mut m = format!("client {}: {what}: status {status}", self.id);
        if status == want {
            let _ = write!(m, " but the body lacks {:?}", body_has.unwrap_or_default());
        } else {
            let _ = write!(m, ", expected {want}");
        }
        let _ = write!(m, ": {text}");
        Err(m)
    }

    /// One request of a lifecycle, timed; recorded if it completed inside the window.
    fn step(
        &mut self,
        op: usize,
        method: &str,
        token_b: bool,
        body: Option<&[u8]>,
        stats: &mut ClientStats,
        window: &Window,
    ) -> Result<u16, String> {
        let t = Instant::now();
        let token = if token_b {
            &self.token_b
        } else {
            &self.token_a
        };
        let status = self
            .http
            .send(method, &self.path, token, body)
            .map_err(|e| {
                format!(
                    "client {}: {} ({method} {}): {e}",
                    self.id, OPS[op], self.path
                )
            })?;
        let done = Instant::now();
        if window.contains(done) {
            stats.requests += 1;
            stats.op_us[op].push(done.duration_since(t).as_micros() as u64);
        }
        Ok(status)
    }

    fn lifecycle(&mut self, stats: &mut ClientStats, window: &Window) -> Result<(), String> {
        let t = Instant::now();
        self.path.clear();
        self.path.push_str("/api/calls/initiate");
        let body = std::mem::take(&mut self.initiate_body);
        let status = self.step(0, "POST", false, Some(&body), stats, window);
        self.initiate_body = body;
        self.expect("initiate", status?, 201, Some(r#""callId""#))?;
        stats.initiated_total += 1;
        let call = call_id(&self.http.body)
            .ok_or_else(|| format!("client {}: initiate: no callId in the response", self.id))?;

        self.path.clear();
        let _ = write!(self.path, "/api/calls/{call}/answer");
        let status = self.step(1, "POST", true, None, stats, window)?;
        self.expect("answer", status, 200, Some(r#""status":"active""#))?;

        self.path.clear();
        let _ = write!(self.path, "/api/calls/{call}/media");
        let status = self.step(
            2,
            "PATCH",
            true,
            Some(br#"{"audioEnabled":false}"#),
            stats,
            window,
        )?;
        self.expect("media", status, 200, Some(r#""audioEnabled":false"#))?;

        self.path.clear();
        let _ = write!(self.path, "/api/calls/{call}/end");
        let status = self.step(3, "POST", false, None, stats, window)?;
        self.expect("end", status, 200, Some(r#""callStatus":"ended""#))?;

        let done = Instant::now();
        stats.completed_total += 1;
        if window.contains(done) {
            stats.lifecycles += 1;
            stats
                .lifecycle_us
                .push(done.duration_since(t).as_micros() as u64);
        }
        Ok(())
    }
}

/// `"callId":"<uuid>"` from an initiate response.
fn call_id(body: &[u8]) -> Option<Uuid> {
    let key = br#""callId":""#;
    let at = find(body, key)? + key.len();
    let text = std::str::from_utf8(body.get(at..at + 36)?).ok()?;
    Uuid::parse_str(text).ok()
}

/// A random (version 4) UUID.
fn random_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

struct Report {
    clients: usize,
    secs: f64,
    lifecycles: u64,
    lifecycles_per_s: f64,
    requests: u64,
    requests_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    op_p50_us: [u64; 4],
    op_p99_us: [u64; 4],
    per_second: Vec<u64>,
    completed_total: u64,
    initiated_total: u64,
    errors: Errors,
    client_cpu_us: f64,
}

impl Report {
    fn print(&self) {
        for e in &self.errors.shown {
            eprintln!("calls_load: error: {e}");
        }
        if self.errors.count as usize > self.errors.shown.len() {
            eprintln!(
                "calls_load: ... {} more errors",
                self.errors.count as usize - self.errors.shown.len()
            );
        }
        let per_second: Vec<String> = self.per_second.iter().map(u64::to_string).collect();
        let cpu = if self.completed_total > 0 {
            self.client_cpu_us / self.completed_total as f64
        } else {
            0.0
        };
        let Report {
            clients,
            secs,
            lifecycles,
            lifecycles_per_s,
            requests,
            requests_per_s,
            ..
        } = *self;
        let (p50_ms, p99_ms, max_ms) = (ms(self.p50_us), ms(self.p99_us), ms(self.max_us));
        println!(
            "calls load: {clients} clients, {secs:.2} s measured: {lifecycles} lifecycles = \
             {lifecycles_per_s:.0} lifecycles/s, {requests} requests = {requests_per_s:.0} \
             requests/s, lifecycle latency p50 {p50_ms:.2} ms, p99 {p99_ms:.2} ms, max {max_ms:.2} ms; \
             {} errors",
            self.errors.count
        );
        let ops: Vec<String> = OPS
            .iter()
            .enumerate()
            .map(|(i, op)| {
                format!(
                    "{op} {:.2}/{:.2}",
                    ms(self.op_p50_us[i]),
                    ms(self.op_p99_us[i])
                )
            })
            .collect();
        println!("request latency p50/p99 ms: {}", ops.join(", "));
        println!(
            "lifecycles completed per second of the window: {}",
            per_second.join(" ")
        );
        println!(
            "client CPU: {cpu:.1} us per lifecycle (all {} lifecycles, warm-up included)",
            self.completed_total
        );
        let min = self.per_second.iter().min().copied().unwrap_or(0);
        let max = self.per_second.iter().max().copied().unwrap_or(0);
        let mut line = format!(
            "summary clients={clients} secs={secs:.3} lifecycles={lifecycles} \
             lifecycles_per_s={lifecycles_per_s:.1} requests={requests} \
             requests_per_s={requests_per_s:.1} p50_ms={p50_ms:.3} p99_ms={p99_ms:.3} max_ms={max_ms:.3}"
        );
        for (i, op) in OPS.iter().enumerate() {
            let _ = write!(
                line,
                " {op}_p50_ms={:.3} {op}_p99_ms={:.3}",
                ms(self.op_p50_us[i]),
                ms(self.op_p99_us[i])
            );
        }
        let _ = write!(
            line,
            " min_per_s={min} max_per_s={max} client_cpu_us_per_lifecycle={cpu:.1} errors={} \
             completed_total={} initiated_total={}",
            self.errors.count, self.completed_total, self.initiated_total
        );
        println!("{line}");
    }
}

fn load(args: &Args, addr: SocketAddr, secret: &str) -> Report {
    let n = args.clients;
    let (warmup, duration) = (args.warmup, args.duration);
    // Every client registers its B, then all start together.
    let ready = Arc::new(Barrier::new(n + 1));
    let window: Arc<OnceLock<Window>> = Arc::new(OnceLock::new());
    let go = Arc::new(Barrier::new(n + 1));
    let completed = Arc::new(AtomicU64::new(0));
    let cpu0 = own_cpu_us();
    let mut threads = Vec::with_capacity(n);
    for id in 0..n {
        let (ready, go, window) = (ready.clone(), go.clone(), window.clone());
        let completed = completed.clone();
        let secret = secret.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("client-{id}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut stats = ClientStats::default();
                let mut client = Client::new(id, addr, &secret);
                let registered = client.register();
                ready.wait();
                go.wait();
                if let Err(e) = registered {
                    stats.errors.add(e);
                    return stats;
                }
                let window = window.get().expect("set before go");
                // No lifecycle starts after the window; the one in flight finishes, so every
                // call made is ended (each request is bounded by IO_TIMEOUT).
                while Instant::now() < window.until {
                    match client.lifecycle(&mut stats, window) {
                        Ok(()) => {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => stats.errors.add(e),
                    }
                }
                stats
            })
            .expect("spawn a client thread");
        threads.push(thread);
    }
    ready.wait();
    let start = Instant::now();
    let from = start + warmup;
    let until = from + duration;
    let _ = window.set(Window { from, until });
    go.wait();

    // Lifecycles completed per second of the window (a stall, such as a WAL checkpoint, shows).
    let mut per_second = Vec::new();
    let whole = duration.as_secs();
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    let mut mark = completed.load(Ordering::Relaxed);
    for s in 1..=whole {
        std::thread::sleep(
            (from + Duration::from_secs(s)).saturating_duration_since(Instant::now()),
        );
        let now = completed.load(Ordering::Relaxed);
        per_second.push(now - mark);
        mark = now;
    }
    let mut all = ClientStats::default();
    for t in threads {
        match t.join() {
            Ok(s) => {
                all.lifecycles += s.lifecycles;
                all.lifecycle_us.extend(s.lifecycle_us);
                all.requests += s.requests;
                for (into, from) in all.op_us.iter_mut().zip(s.op_us) {
                    into.extend(from);
                }
                all.completed_total += s.completed_total;
                all.initiated_total += s.initiated_total;
                all.errors.merge(s.errors);
            }
            Err(_) => all.errors.add("a client thread panicked".into()),
        }
    }
    let client_cpu_us = own_cpu_us() - cpu0;
    let secs = until.duration_since(from).as_secs_f64();
    all.lifecycle_us.sort_unstable();
    let mut op_p50_us = [0; 4];
    let mut op_p99_us = [0; 4];
    for (i, v) in all.op_us.iter_mut().enumerate() {
        v.sort_unstable();
        op_p50_us[i] = percentile(v, 50.0);
        op_p99_us[i] = percentile(v, 99.0);
    }
    Report {
        clients: n,
        secs,
        lifecycles: all.lifecycles,
        lifecycles_per_s: all.lifecycles as f64 / secs,
        requests: all.requests,
        requests_per_s: all.requests as f64 / secs,
        p50_us: percentile(&all.lifecycle_us, 50.0),
        p99_us: percentile(&all.lifecycle_us, 99.0),
        max_us: all.lifecycle_us.last().copied().unwrap_or(0),
        op_p50_us,
        op_p99_us,
        per_second,
        completed_total: all.completed_total,
        initiated_total: all.initiated_total,
        errors: all.errors,
        client_cpu_us,
    }
}
