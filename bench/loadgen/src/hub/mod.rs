//! The load generator of the signaling hub benchmark (`bench/hub.sh`): N sockets in pairs
//! exchanging `call:ice-candidate` messages through a hub, the same wire protocol and the same
//! client for every server, so that switchboard and the Node `socket.io` anchor
//! (`bench/node/relay_server.mjs`) are measured alike.
//!
//! One run, against one server (`--addr`), over one transport (`--transport`):
//!
//! - `sio`: Socket.IO v5 over Engine.IO v4, websocket transport only, spoken raw: the
//!   connection to `/socket.io/?EIO=4&transport=websocket`, the open packet `0{...}`, the
//!   namespace connect `40{"token": JWT}` answered `40{"sid": ...}`, events
//!   `42["call:ice-candidate", {...}]`, and every Engine.IO ping `2` answered `3`;
//! - `ws`: switchboard's JSON WebSocket at `/ws`, the token in `Authorization: Bearer`, frames
//!   `{"event": "call:ice-candidate", "data": {...}}`.
//!
//! The steps, each bounded in time:
//!
//! 1. Connect: `--sockets` sockets, one user each (random UUIDs, tokens minted with
//!    `auth::mint` from `--jwt-secret`), at most `--connect-concurrency` handshakes at once.
//!    The server's resident memory (VmRSS of `--server-pid`) before and after gives its memory
//!    per 1,000 sockets.
//! 2. Set up: socket 2i (A) and socket 2i+1 (B) are a pair with a live call, made over the
//!    server's REST API with `--setup-threads` keep-alive connections: B makes itself known
//!    (`GET /api/calls`), A calls B (`POST /api/calls/initiate`, a new conversation: the
//!    daemon must run with `auth.open_conversations = true`) and B answers
//!    (`POST /api/calls/{id}/answer`). A call's own events (`call:incoming`, ...) reach the
//!    sockets and are counted, not measured.
//! 3. Phases (`--phases name:rate,...`): in each, every pair passes `--window` candidates back
//!    and forth (a closed loop: a socket sends one for each it receives, A starts with the
//!    window), and no socket sends more than `rate` per second (its sends are at least
//!    1/rate apart, A's first at a random point of its first interval), which keeps every
//!    socket under the hub's 50 per second. A high rate finds the server's throughput (the
//!    loop is then bound by the server: the window's messages are always queued somewhere); a
//!    low one offers a fixed load (sockets × rate messages per second) and shows the latency
//!    of an unsaturated server. Each candidate carries its send time (`"t"`, microseconds);
//!    the receiver counts it and its delivery latency if it arrives inside the measured
//!    window (after `--warmup`, for `--duration`); a message sent in an earlier phase is
//!    ignored; between phases, a one-second pause lets what is in flight drain. The server's
//!    CPU (the sum of its threads' `schedstat`) and this process's (`getrusage`) over each
//!    window give CPU per message delivered; the machine's busy time (/proc/stat) less both
//!    is what other processes took.
//! 4. Close every socket; the last memory figures are taken before.
//!
//! Anything unexpected is an error: a socket that does not connect or is closed by the server,
//! an `error` event (e.g. `rate_limited`), a candidate from someone other than the partner, a
//! failed setup request. The first few are printed, all are counted, and the exit status is 1.
//!
//! ```text
//! loadgen hub --addr IP:PORT --transport sio|ws --jwt-secret S [--sockets 10000] [--window 1]
//!             [--phases max:40,fixed:1] [--warmup 2] [--duration 10] [--server-pid PID]
//!             [--connect-concurrency 256] [--setup-threads 16] [--threads 1] [--label NAME]
//! ```
//! Output ends with machine-readable lines: `connect key=value ...`, one `phase name=...`
//! per phase, and `end ...`.

pub(crate) mod proc;
mod setup;
mod socket;
mod ws;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::value_parser;
use switchboard_signaling::auth;
use switchboard_signaling::time::Timestamp;
use tokio::sync::{mpsc, watch, Semaphore};
use uuid::Uuid;

use crate::seconds;
use crate::stats::{ms, own_cpu_us, percentile, Errors};
use proc::{machine_busy_ns, server_cpu_ns, status_kib};
use setup::{setup, Setup};
use socket::{socket, Plan, Shared, SocketStats, Window};

/// The hub's limit is 50 messages per second per socket: the rate stays below it.
const MAX_RATE: f64 = 45.0;
/// One socket's connection and handshake, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// All sockets connected, at most.
const CONNECT_ALL_TIMEOUT: Duration = Duration::from_secs(180);
/// The pause between phases (what is in flight drains) and before the sockets close.
const GAP: Duration = Duration::from_secs(1);
/// How long the sockets have to close and report, at most.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A realistic candidate (the shape browsers send), the same for every message.
const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 192.0.2.10 54321 typ srflx \
                         raddr 10.0.0.2 rport 54321 generation 0 ufrag Wf3q network-cost 999";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    /// Socket.IO v5 over Engine.IO v4, websocket transport only.
    Sio,
    /// switchboard's JSON WebSocket at /ws.
    Ws,
}

#[derive(clap::Args)]
pub struct Args {
    /// The server's HTTP address.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum)]
    transport: Transport,
    /// The server's JWT secret, to mint the sockets' tokens.
    #[arg(long)]
    jwt_secret: String,
    /// Sockets, in pairs.
    #[arg(long, default_value_t = 10_000, value_parser = even_sockets)]
    sockets: usize,
    /// Candidates each pair passes back and forth.
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u32).range(1..=16))]
    window: u32,
    /// The phases, `name:rate` (per socket per second), in order.
    #[arg(long, value_name = "NAME:RATE,...", value_delimiter = ',', default_value = "max:40,fixed:1", value_parser = phase)]
    phases: Vec<(String, f64)>,
    /// Each phase's warm-up.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = seconds(0.0, 600.0))]
    warmup: Duration,
    /// Each phase's measured window.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds(1.0, 600.0))]
    duration: Duration,
    /// The server's process, for its memory and CPU.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Handshakes at once, at most.
    #[arg(long, default_value_t = 256, value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    connect_concurrency: usize,
    /// Keep-alive connections setting up the calls.
    #[arg(long, default_value_t = 16, value_parser = RangedU64ValueParser::<usize>::new().range(1..=256))]
    setup_threads: usize,
    /// This generator's tokio worker threads.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=64))]
    threads: usize,
    /// The name in the output lines [default: the transport].
    #[arg(long, value_name = "NAME")]
    label: Option<String>,
}

fn even_sockets(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !(2..=20_000).contains(&n) || !n.is_multiple_of(2) {
        return Err("must be even (pairs), 2..=20000".into());
    }
    Ok(n)
}

fn phase(p: &str) -> Result<(String, f64), String> {
    let (name, rate) = p.split_once(':').ok_or(format!("{p:?} is not name:rate"))?;
    let rate: f64 = rate.parse().map_err(|e| format!("{p:?}: {e}"))?;
    if !(0.1..=MAX_RATE).contains(&rate) || name.is_empty() {
        return Err(format!(
            "{p:?}: a name, and a rate of 0.1..={MAX_RATE} per second"
        ));
    }
    Ok((name.to_owned(), rate))
}

pub fn main(args: Args) -> ExitCode {
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hub_load: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(Arc::new(args)));
    // Sockets that did not close in time are dropped with the runtime, without waiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    report.print();
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

struct PhaseReport {
    name: String,
    rate: f64,
    secs: f64,
    sent: u64,
    received: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    per_second: Vec<u64>,
    server_ns: u64,
    client_us: f64,
    machine_ns: u64,
}

#[derive(Default)]
struct Report {
    label: String,
    sockets: usize,
    window: u32,
    connected: usize,
    connect_secs: f64,
    connect_server_ns: u64,
    rss_idle_kib: u64,
    rss_connected_kib: u64,
    rss_calls_kib: u64,
    rss_loaded_kib: u64,
    hwm_kib: u64,
    setup_secs: f64,
    calls: usize,
    phases: Vec<PhaseReport>,
    errors: Errors,
    error_events: u64,
    wrong_sender: u64,
    malformed: u64,
    closed_early: u64,
    other_events: u64,
}

impl Report {
    fn failed(&self) -> bool {
        self.errors.count > 0
            || self.error_events > 0
            || self.wrong_sender > 0
            || self.malformed > 0
            || self.closed_early > 0
            || self.phases.iter().any(|p| p.received == 0)
    }

    fn print(&self) {
        for e in &self.errors.shown {
            eprintln!("hub_load: error: {e}");
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        let per_1000 = if self.connected > 0 {
            mib(self.rss_connected_kib.saturating_sub(self.rss_idle_kib)) * 1000.0
                / self.connected as f64
        } else {
            0.0
        };
        let connect_us = if self.connected > 0 {
            self.connect_server_ns as f64 / 1e3 / self.connected as f64
        } else {
            0.0
        };
        println!(
            "{}: {}/{} sockets connected in {:.2} s ({:.0}/s; server CPU {:.0} us per socket); \
             server RSS {:.1} MiB idle, {:.1} MiB connected = {:.2} MiB per 1,000 sockets; \
             {:.1} MiB with {} calls (set up in {:.2} s), {:.1} MiB after the load, peak {:.1} MiB",
            self.label,
            self.connected,
            self.sockets,
            self.connect_secs,
            self.connected as f64 / self.connect_secs.max(1e-9),
            connect_us,
            mib(self.rss_idle_kib),
            mib(self.rss_connected_kib),
            per_1000,
            mib(self.rss_calls_kib),
            self.calls,
            self.setup_secs,
            mib(self.rss_loaded_kib),
            mib(self.hwm_kib),
        );
        println!(
            "connect label={} sockets={} connected={} secs={:.3} server_us_per_socket={:.1} \
             rss_idle_kib={} rss_connected_kib={} mib_per_1000={:.3} rss_calls_kib={} calls={} \
             setup_secs={:.3}",
            self.label,
            self.sockets,
            self.connected,
            self.connect_secs,
            connect_us,
            self.rss_idle_kib,
            self.rss_connected_kib,
            per_1000,
            self.rss_calls_kib,
            self.calls,
            self.setup_secs
        );
        for p in &self.phases {
            let per = |x: f64| {
                if p.received > 0 {
                    x / p.received as f64
                } else {
                    0.0
                }
            };
            let per_second: Vec<String> = p.per_second.iter().map(u64::to_string).collect();
            let offered = self.calls as f64 * 2.0 * p.rate;
            // What the rest of the machine took (other processes, the kernel's softirqs).
            let others = (p.machine_ns as f64 - p.server_ns as f64 - p.client_us * 1e3).max(0.0);
            println!(
                "{} {}: at most {} per socket per second (up to {:.0}/s), window {} per pair: \
                 {} delivered in {:.2} s = {:.0} msgs/s ({} sent); latency p50 {:.2} ms, p99 {:.2} ms, \
                 max {:.2} ms; server CPU {:.2} us/msg ({:.2} cores), client CPU {:.2} us/msg \
                 ({:.2} cores), other processes {:.2} cores; per second: {}",
                self.label,
                p.name,
                p.rate,
                offered,
                self.window,
                p.received,
                p.secs,
                p.received as f64 / p.secs,
                p.sent,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.max_us),
                per(p.server_ns as f64 / 1e3),
                p.server_ns as f64 / 1e9 / p.secs,
                per(p.client_us),
                p.client_us / 1e6 / p.secs,
                others / 1e9 / p.secs,
                per_second.join(" ")
            );
            let min = p.per_second.iter().min().copied().unwrap_or(0);
            println!(
                "phase label={} name={} rate={} offered_per_s={:.0} window={} secs={:.3} sent={} \
                 received={} msgs_per_s={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
                 server_cpu_ms={:.1} server_us_per_msg={:.3} client_us_per_msg={:.3} \
                 server_cores={:.3} client_cores={:.3} other_cores={:.3} min_per_s={min}",
                self.label,
                p.name,
                p.rate,
                offered,
                self.window,
                p.secs,
                p.sent,
                p.received,
                p.received as f64 / p.secs,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.max_us),
                p.server_ns as f64 / 1e6,
                per(p.server_ns as f64 / 1e3),
                per(p.client_us),
                p.server_ns as f64 / 1e9 / p.secs,
                p.client_us / 1e6 / p.secs,
                others / 1e9 / p.secs,
            );
        }
        println!(
            "end label={} rss_loaded_kib={} hwm_kib={} errors={} error_events={} wrong_sender={} \
             malformed={} closed_early={} other_events={} failed={}",
            self.label,
            self.rss_loaded_kib,
            self.hwm_kib,
            self.errors.count,
            self.error_events,
            self.wrong_sender,
            self.malformed,
            self.closed_early,
            self.other_events,
            u8::from(self.failed())
        );
    }
}

async fn run(args: Arc<Args>) -> Report {
    let n = args.sockets;
    let pid = args.server_pid;
    let mut report = Report {
        label: args.label.clone().unwrap_or_else(|| {
            match args.transport {
                Transport::Sio => "sio",
                Transport::Ws => "ws",
            }
            .into()
        }),
        sockets: n,
        window: args.window,
        ..Report::default()
    };
    let users: Vec<Uuid> = (0..n).map(|_| Uuid::from_bytes(rand::random())).collect();
    let now = Timestamp::now();
    let tokens = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let name = format!("bench {i}");
            auth::mint(
                &args.jwt_secret,
                *u,
                Some(&name),
                None,
                now,
                Duration::from_secs(3600),
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        args: args.clone(),
        users,
        tokens,
        base: Instant::now(),
        delivered: args.phases.iter().map(|_| AtomicU64::new(0)).collect(),
    });

    // 1. Connect.
    report.rss_idle_kib = status_kib(pid, "VmRSS");
    let cpu0 = server_cpu_ns(pid);
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency));
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let (plan_tx, plan_rx) = watch::channel(None);
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|id| {
            tokio::spawn(socket(
                id,
                shared.clone(),
                connecting.clone(),
                connected_tx.clone(),
                plan_rx.clone(),
            ))
        })
        .collect();
    drop(connected_tx);
    let deadline = tokio::time::Instant::now() + CONNECT_ALL_TIMEOUT;
    let mut answered = 0;
    while answered < n {
        match tokio::time::timeout_at(deadline, connected_rx.recv()).await {
            Ok(Some(Ok(()))) => {
                report.connected += 1;
                answered += 1;
            }
            Ok(Some(Err(e))) => {
                report.errors.add(e);
                answered += 1;
            }
            Ok(None) => break,
            Err(_) => {
                report.errors.add(format!(
                    "{} sockets not connected after {CONNECT_ALL_TIMEOUT:?}",
                    n - answered
                ));
                break;
            }
        }
    }
    report.connect_secs = start.elapsed().as_secs_f64();
    report.connect_server_ns = server_cpu_ns(pid).saturating_sub(cpu0);
    // Let the server settle (buffers of the handshakes freed) before reading its memory.
    tokio::time::sleep(GAP).await;
    report.rss_connected_kib = status_kib(pid, "VmRSS");

    // 2. The calls.
    let made = {
        let (args, shared) = (args.clone(), shared.clone());
        tokio::task::spawn_blocking(move || setup(&args, &shared.users, &shared.tokens)).await
    };
    let made = made.unwrap_or_else(|_| Setup {
        calls: vec![None; n / 2],
        secs: 0.0,
        errors: Errors {
            count: 1,
            shown: vec!["the setup panicked".into()],
        },
    });
    report.setup_secs = made.secs;
    report.calls = made.calls.iter().flatten().count();
    report.errors.merge(made.errors);
    tokio::time::sleep(GAP).await;
    report.rss_calls_kib = status_kib(pid, "VmRSS");

    // 3. The phases.
    let mut at = Instant::now() + Duration::from_millis(500);
    let phases: Vec<Window> = args
        .phases
        .iter()
        .map(|_| {
            let w = Window {
                start: at,
                from: at + args.warmup,
                until: at + args.warmup + args.duration,
            };
            at = w.until + GAP;
            w
        })
        .collect();
    let close_at = at;
    let _ = plan_tx.send(Some(Arc::new(Plan {
        calls: made.calls,
        phases: phases.clone(),
        close_at,
    })));
    let mut measured = Vec::new();
    for (k, w) in phases.iter().enumerate() {
        tokio::time::sleep_until(w.from.into()).await;
        let server0 = server_cpu_ns(pid);
        let client0 = own_cpu_us();
        let machine0 = machine_busy_ns();
        let mut per_second = Vec::new();
        let mut mark = shared.delivered[k].load(Ordering::Relaxed);
        let whole = args.duration.as_secs();
        for s in 1..=whole {
            tokio::time::sleep_until((w.from + Duration::from_secs(s)).into()).await;
            let now = shared.delivered[k].load(Ordering::Relaxed);
            per_second.push(now - mark);
            mark = now;
        }
        tokio::time::sleep_until(w.until.into()).await;
        measured.push((
            server_cpu_ns(pid).saturating_sub(server0),
            own_cpu_us() - client0,
            machine_busy_ns().saturating_sub(machine0),
            per_second,
        ));
    }
    report.rss_loaded_kib = status_kib(pid, "VmRSS");
    report.hwm_kib = status_kib(pid, "VmHWM");

    // 4. Close, and gather.
    let mut all = SocketStats::new(args.phases.len());
    let mut shown = Vec::new();
    let gather = async {
        for t in tasks {
            match t.await {
                Ok(s) => {
                    for k in 0..args.phases.len() {
                        all.sent[k] += s.sent[k];
                        all.received[k] += s.received[k];
                        all.latency_us[k].extend_from_slice(&s.latency_us[k]);
                    }
                    if s.connected {
                        all.error_events += s.error_events;
                        all.wrong_sender += s.wrong_sender;
                        all.malformed += s.malformed;
                        all.closed_early += s.closed_early;
                        all.other_events += s.other_events;
                        shown.extend(s.shown);
                    }
                }
                Err(e) => shown.push(format!("a socket task failed: {e}")),
            }
        }
    };
    if tokio::time::timeout_at((close_at + CLOSE_TIMEOUT).into(), gather)
        .await
        .is_err()
    {
        report.errors.add(format!(
            "the sockets did not close within {CLOSE_TIMEOUT:?} (their figures are lost)"
        ));
    }
    report.error_events = all.error_events;
    report.wrong_sender = all.wrong_sender;
    report.malformed = all.malformed;
    report.closed_early = all.closed_early;
    report.other_events = all.other_events;
    shown.into_iter().for_each(|e| report.errors.show(e));
    for (k, (server_ns, client_us, machine_ns, per_second)) in measured.into_iter().enumerate() {
        let lat = &mut all.latency_us[k];
        lat.sort_unstable();
        report.phases.push(PhaseReport {
            name: args.phases[k].0.clone(),
            rate: args.phases[k].1,
            secs: args.duration.as_secs_f64(),
            sent: all.sent[k],
            received: all.received[k],
            p50_us: percentile(lat, 50.0),
            p99_us: percentile(lat, 99.0),
            max_us: lat.last().copied().map_or(0, u64::from),
            per_second,
            server_ns,
            client_us,
            machine_ns,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = [
            "hub",
            "--addr",
            "127.0.0.1:1",
            "--transport",
            "ws",
            "--jwt-secret",
            "s",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.args)
    }

    #[test]
    fn phases_are_name_rate_pairs() {
        let default = parse(&[]).unwrap();
        assert_eq!(
            default.phases,
            [("max".to_owned(), 40.0), ("fixed".to_owned(), 1.0)]
        );
        let given = parse(&["--phases", "a:2,b:0.5"]).unwrap();
        assert_eq!(given.phases, [("a".to_owned(), 2.0), ("b".to_owned(), 0.5)]);
        assert!(parse(&["--phases", "a:46"]).is_err());
        assert!(parse(&["--phases", ":1"]).is_err());
        assert!(parse(&["--phases", "a"]).is_err());
    }

    #[test]
    fn sockets_come_in_pairs() {
        assert_eq!(parse(&["--sockets", "4"]).unwrap().sockets, 4);
        assert!(parse(&["--sockets", "5"]).is_err());
        assert!(parse(&["--sockets", "0"]).is_err());
    }
}
