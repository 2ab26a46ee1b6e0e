//! The load generator for the forwarder floor of the relay benchmark (`bench/relay.sh`).
//!
//! It mimics the shape of the load `turnutils_uclient` puts on a TURN server, without TURN:
//! `--flows` client sockets (one per uclient session), each sending `--messages` datagrams of
//! `--size` bytes every `--interval-ms` to `--target`, the first after `--start-delay-ms` plus a
//! random part of `--start-spread-ms` (uclient: 1000 + random 0..5000 ms). The target forwards
//! to an echo peer and back; every echo is one round trip.
//!
//! The timing follows uclient's, because it decides how many datagrams a server finds per
//! wake-up, and so its CPU per packet. Sends happen only from a timer that waits `--tick-ms`
//! after each run; the clock is whole milliseconds; a flow whose time has come sends, and one
//! that is late catches up (at most 50 per tick), its schedule advancing by the interval from
//! the previous due time. uclient arms a 1 ms timer, but its sessions' sends do not come out
//! that way: measured on loopback (strace of uclient, and timestamps of its datagrams), they
//! leave in one burst of about one datagram per session every interval (20 sessions at 5 ms:
//! bursts of ~18, some sessions sending two to catch up), with its 1 ms timer wake-ups in
//! between sending nothing. So the tick defaults to the interval, which reproduces that shape
//! (bursts of ~17 per 5 ms for 20 flows); `--tick-ms 1` gives small bursts of ~3 instead, which
//! costs a server about twice the wake-ups per packet.
//!
//! ```text
//! loadgen udp --target 127.0.0.1:13678 [--flows 20] [--messages 2000] [--size 120]
//!             [--interval-ms 5] [--tick-ms INTERVAL] [--start-delay-ms 1000] [--start-spread-ms 5000]
//!             [--drain-ms 2000]
//! ```
//! The last line of output is the machine-readable summary:
//! `summary flows=.. sent=.. received=.. lost=.. loss_pct=.. transmit_s=.. rt_per_s=..
//! rtt_avg_ms=.. rtt_min_ms=.. rtt_max_ms=..`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::value_parser;

use crate::sock;

/// Sends at most this many overdue datagrams per flow per wake-up (uclient: 50).
const MAX_BURST: u64 = 50;
/// Flow id, sequence number, send time in nanoseconds since start.
const HEADER: usize = 16;

#[derive(clap::Args)]
pub struct Args {
    /// Where the flows send (a relay or the forwarder, echoing back).
    #[arg(long)]
    target: SocketAddr,
    /// Client sockets, one per uclient session.
    #[arg(long, default_value_t = 20, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    flows: usize,
    /// Datagrams each flow sends.
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// Datagram size in bytes.
    #[arg(long, default_value_t = 120, value_parser = value_parser!(u64).range(HEADER as u64..=65_000))]
    size: u64,
    /// Each flow's interval between datagrams.
    #[arg(long = "interval-ms", value_name = "MS", default_value = "5", value_parser = crate::millis)]
    interval: Duration,
    /// The timer period [default: the interval].
    #[arg(long = "tick-ms", value_name = "MS", value_parser = crate::millis)]
    tick: Option<Duration>,
    /// When the first datagrams go, plus a random part of --start-spread-ms.
    #[arg(long = "start-delay-ms", value_name = "MS", default_value = "1000", value_parser = crate::millis)]
    start_delay: Duration,
    #[arg(long = "start-spread-ms", value_name = "MS", default_value_t = 5000)]
    start_spread_ms: u64,
    /// How long to wait for echoes after the last send.
    #[arg(long = "drain-ms", value_name = "MS", default_value = "2000", value_parser = crate::millis)]
    drain: Duration,
}

struct Flow {
    socket: UdpSocket,
    /// When the next datagram is due, in whole milliseconds since start.
    due_ms: u64,
    sent: u64,
    received: u64,
}

#[derive(Default)]
struct Rtt {
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Rtt {
    fn record(&mut self, ns: u64) {
        self.min_ns = if self.count == 0 {
            ns
        } else {
            self.min_ns.min(ns)
        };
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
        self.count += 1;
    }
}

pub fn run(args: &Args) -> io::Result<()> {
    let start = Instant::now();
    let mut flows = Vec::with_capacity(args.flows);
    for _ in 0..args.flows {
        let socket = UdpSocket::bind(SocketAddr::new(args.target.ip(), 0))?;
        socket.connect(args.target)?;
        socket.set_nonblocking(true)?;
        let spread = if args.start_spread_ms == 0 {
            0
        } else {
            rand::random_range(0..args.start_spread_ms)
        };
        flows.push(Flow {
            socket,
            due_ms: args.start_delay.as_millis() as u64 + spread,
            sent: 0,
            received: 0,
        });
    }
    let mut pollfds = sock::pollfds(flows.iter().map(|f| &f.socket));

    let total = args.messages * args.flows as u64;
    let mut payload = vec![7u8; args.size as usize];
    let mut buf = vec![0u8; 65_536];
    let mut rtt = Rtt::default();
    let mut send_errors = 0u64;
    let mut received_total = 0u64;
    let mut last_send = start;
    let mut last_report = start;
    let mut next_tick = start;
    let interval_ms = args.interval.as_millis() as u64;
    let tick = args.tick.unwrap_or(args.interval);
    loop {
        // The timer: send what is due, by a whole-millisecond clock.
        if Instant::now() >= next_tick {
            let now_ms = start.elapsed().as_millis() as u64;
            for (id, flow) in flows.iter_mut().enumerate() {
                let mut burst = 0;
                while flow.sent < args.messages && flow.due_ms <= now_ms && burst < MAX_BURST {
                    payload[0..4].copy_from_slice(&(id as u32).to_be_bytes());
                    payload[4..8].copy_from_slice(&(flow.sent as u32).to_be_bytes());
                    let sent_ns = start.elapsed().as_nanos() as u64;
                    payload[8..16].copy_from_slice(&sent_ns.to_be_bytes());
                    if flow.socket.send(&payload).is_err() {
                        send_errors += 1;
                    }
                    flow.sent += 1;
                    flow.due_ms += interval_ms;
                    burst += 1;
                    last_send = Instant::now();
                }
            }
            next_tick = Instant::now() + tick;
        }
        let now = Instant::now();
        let all_sent = flows.iter().all(|f| f.sent >= args.messages);
        if all_sent && (received_total >= total || now >= last_send + args.drain) {
            break;
        }
        // Wait for echoes until the next tick (poll has millisecond resolution).
        let deadline = if all_sent {
            last_send + args.drain
        } else {
            next_tick
        };
        let wait = deadline.saturating_duration_since(now);
        let timeout_ms = wait.as_micros().div_ceil(1000).min(100) as i32;
        sock::poll(&mut pollfds, timeout_ms)?;
        for (pollfd, flow) in pollfds.iter_mut().zip(flows.iter_mut()) {
            if pollfd.revents == 0 {
                continue;
            }
            pollfd.revents = 0;
            loop {
                match flow.socket.recv(&mut buf) {
                    Ok(len) if len >= HEADER => {
                        let sent_ns = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                        let now_ns = start.elapsed().as_nanos() as u64;
                        rtt.record(now_ns.saturating_sub(sent_ns));
                        flow.received += 1;
                        received_total += 1;
                    }
                    Ok(_) => {}
                    // ECONNREFUSED: an ICMP error from an earlier datagram; keep going.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(_) => break,
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let sent: u64 = flows.iter().map(|f| f.sent).sum();
            eprintln!("udp_load: sent={sent} received={received_total}");
        }
    }

    let sent: u64 = flows.iter().map(|f| f.sent).sum();
    let received = received_total.min(sent);
    let lost = sent - received;
    let transmit = start.elapsed().as_secs_f64();
    let worst = flows.iter().map(|f| f.sent - f.received.min(f.sent)).max();
    println!(
        "udp_load: flows={} messages/flow={} size={} interval_ms={} tick_ms={} \
         send_errors={send_errors} worst_flow_lost={}",
        args.flows,
        args.messages,
        args.size,
        args.interval.as_millis(),
        tick.as_millis(),
        worst.unwrap_or(0)
    );
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "summary flows={} sent={sent} received={received} lost={lost} loss_pct={:.4} \
         transmit_s={transmit:.3} rt_per_s={:.1} rtt_avg_ms={:.4} rtt_min_ms={:.4} rtt_max_ms={:.4}",
        args.flows,
        if sent == 0 {
            0.0
        } else {
            100.0 * lost as f64 / sent as f64
        },
        received as f64 / transmit,
        if rtt.count == 0 {
            0.0
        } else {
            rtt.sum_ns as f64 / rtt.count as f64 / 1e6
        },
        ms(rtt.min_ns),
        ms(rtt.max_ns),
    );
    Ok(())
}
