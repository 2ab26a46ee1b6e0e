//! The live part of a run: the replay of the pre-rendered datagrams on time, the count of what
//! comes back to the participants' sockets, and the floor: a plain UDP fan-out.
//!
//! # Matching what comes back to what was sent
//! The SFU rewrites each forwarded packet's SSRC, sequence number and timestamp per
//! subscriber, and SRTP encrypts the payload, so nothing a receiver can read names the sent
//! packet by itself. Two facts do, together:
//! - the SSRC of each m-line of a subscriber's is declared in the SFU's offer, and the offer's
//!   track list names whose track that m-line carries: a received packet's SSRC gives its
//!   publisher and kind;
//! - a subscription that has not switched layers starts at the publisher's 16-bit sequence
//!   number and timestamp and keeps them (`switchboard_sfu::core::rewrite`, "the subscriber's
//!   stream starts at this packet's 16-bit number and time"), which holds for the whole run:
//!   audio has no layers and each subscriber stays on the top video layer.
//!
//! So a received packet is the sent packet of that publisher and kind with the same
//! (sequence number, timestamp) pair. The pair is checked, not assumed: a received packet
//! with no such sent packet is counted as unmatched (a renumbering, a retransmission, padding)
//! and left out of latency and loss; a rewriter that shifted numbers would show as every
//! packet unmatched and all of them lost, never as a wrong latency. The floor keeps the
//! publisher's numbers, so there the SSRC is the publisher's own.
//!
//! Latency is from the moment the replay hands the datagram to the kernel to the moment the
//! receiving thread read it: the SFU's (or the floor's) time plus both sockets' queues.
//! Loss is exact: each packet of a forwarded stream sent in the measured window must reach
//! every other participant of its room once by the end of the drain.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sock;

use super::rtp;

/// Datagrams read from one socket before the receiver looks at the others.
const READ_BATCH: usize = 256;
/// The generator's sockets' receive buffer (the kernel caps it at net.core.rmem_max): so that
/// a receiver scheduled out for a moment loses nothing the SFU sent.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Every participant's datagrams, merged in the order they are due.
pub struct Plan {
    pub sends: Vec<Send>,
    /// The datagrams of forwarded streams, by (publisher, is video, sequence number,
    /// timestamp).
    pub index: HashMap<(usize, bool, u16, u32), usize>,
    /// When the measured window starts and ends, after the replay's start.
    pub window: (Duration, Duration),
}

pub struct Send {
    pub due: Duration,
    pub from: usize,
    pub data: Vec<u8>,
    /// For a forwarded stream's packet, how many participants must receive it.
    pub expected: u16,
}

impl Plan {
    pub fn in_window(&self, t: Duration) -> bool {
        t >= self.window.0 && t < self.window.1
    }
}

/// Where a receiver's packets come from: by SSRC, the publisher and whether it is video.
pub type Sources = HashMap<u32, (usize, bool)>;

/// Sends each datagram of `plan` from its participant's socket to `to` at `t0` + its due time;
/// `sent` gets each one's actual send time (ns after `t0`, taken right before the send). Returns the sends that failed and
/// how late sends were (p50 and p99, µs).
pub fn replay(
    plan: &Plan,
    sockets: &[UdpSocket],
    to: SocketAddr,
    t0: Instant,
    sent: &[AtomicU64],
    stop: &AtomicBool,
    tid: &AtomicU32,
) -> (u64, u64, u64) {
    tid.store(gettid(), Ordering::Relaxed);
    let mut failed = 0;
    let mut late = Vec::with_capacity(plan.sends.len());
    for (i, s) in plan.sends.iter().enumerate() {
        let at = t0 + s.due;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Stamped before the send: on loopback the packet can be forwarded and read before
        // the send returns.
        let now = Instant::now();
        sent[i].store(
            nanos(now.saturating_duration_since(t0)).max(1),
            Ordering::Release,
        );
        late.push(nanos(now.saturating_duration_since(at)) / 1000);
        if sockets[s.from].send_to(&s.data, to).is_err() {
            failed += 1;
        }
    }
    late.sort_unstable();
    (
        failed,
        crate::stats::percentile(&late, 50.0),
        crate::stats::percentile(&late, 99.0),
    )
}

/// What the participants' sockets received.
#[derive(Default)]
pub struct Received {
    /// RTP packets (matched or not) received in the window.
    pub(super) packets: u64,
    pub(super) bytes: u64,
    /// RTP packets that matched no sent packet, all run.
    pub(super) unmatched: u64,
    /// Latencies (µs) of the packets sent in the window.
    pub(super) latencies: Vec<u64>,
    /// Per sent datagram, how many participants received it.
    pub(super) received_by: Vec<u16>,
}

/// Reads every participant's socket until `until`, matching RTP packets to `plan`'s datagrams
/// through each receiver's `sources`. `every`: `None` to wake when a datagram arrives;
/// `Some(t)` to look every `t` without being woken by arrivals (see `Args::receive_every_us`).
#[allow(clippy::too_many_arguments)]
pub fn receive(
    plan: &Plan,
    sockets: &[UdpSocket],
    sources: &[Sources],
    t0: Instant,
    until: Instant,
    sent: &[AtomicU64],
    tid: &AtomicU32,
    every: Option<Duration>,
) -> Received {
    tid.store(gettid(), Ordering::Relaxed);
    let mut r = Received {
        received_by: vec![0; plan.sends.len()],
        ..Received::default()
    };
    let mut fds = sock::pollfds(sockets.iter());
    let mut buf = vec![0u8; 2048];
    while Instant::now() < until {
        if let Some(every) = every {
            std::thread::sleep(every);
        }
        let wait = if every.is_some() { 0 } else { 5 };
        if sock::poll(&mut fds, wait).is_err() {
            break;
        }
        for (who, socket) in sockets.iter().enumerate() {
            if fds[who].revents == 0 {
                continue;
            }
            for _ in 0..READ_BATCH {
                let Ok(n) = socket.recv(&mut buf) else {
                    break;
                };
                let at = nanos(Instant::now().saturating_duration_since(t0));
                let Some(h) = rtp::header(&buf[..n]) else {
                    continue;
                };
                if plan.in_window(Duration::from_nanos(at)) {
                    r.packets += 1;
                    r.bytes += n as u64;
                }
                let found = sources[who]
                    .get(&h.ssrc)
                    .and_then(|&(from, video)| plan.index.get(&(from, video, h.seq, h.time)));
                let Some(&i) = found else {
                    r.unmatched += 1;
                    continue;
                };
                r.received_by[i] = r.received_by[i].saturating_add(1);
                let at_send = sent[i].load(Ordering::Acquire);
                if at_send != 0 && plan.in_window(plan.sends[i].due) {
                    r.latencies.push(at.saturating_sub(at_send) / 1000);
                }
            }
        }
    }
    r
}

impl Received {
    /// Packets of the window's forwarded datagrams that never arrived, and that arrived twice.
    pub fn lost_and_duplicated(&self, plan: &Plan) -> (u64, u64, u64) {
        let (mut expected, mut lost, mut dup) = (0u64, 0u64, 0u64);
        for (s, &got) in plan.sends.iter().zip(&self.received_by) {
            if s.expected == 0 || !plan.in_window(s.due) {
                continue;
            }
            expected += u64::from(s.expected);
            lost += u64::from(s.expected.saturating_sub(got));
            dup += u64::from(got.saturating_sub(s.expected));
        }
        (expected, lost, dup)
    }
}

/// A route of the floor: the other participants of a sender's room, and the SSRCs of its
/// streams that go to them.
pub struct Route {
    pub to: Vec<SocketAddr>,
    pub ssrcs: Vec<u32>,
}

/// The floor: the least an SFU has to do. One socket; each datagram's sender found in a map
/// by its address; an RTP packet of a forwarded stream (its SSRC read from the clear header)
/// sent as it is to the N-1 others; everything else dropped. No SRTP, no RTCP, no
/// renumbering. Runs until `stop`; returns datagrams forwarded and sends that failed.
pub fn floor(
    socket: &UdpSocket,
    routes: &HashMap<SocketAddr, Route>,
    stop: &AtomicBool,
    tid: &AtomicU32,
) -> (u64, u64) {
    tid.store(gettid(), Ordering::Relaxed);
    let (mut forwarded, mut failed) = (0, 0);
    let mut buf = vec![0u8; 2048];
    if socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .is_err()
    {
        return (0, 0);
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(route) = routes.get(&from) else {
            continue;
        };
        let Some(h) = rtp::header(&buf[..n]) else {
            continue;
        };
        if !route.ssrcs.contains(&h.ssrc) {
            continue;
        }
        for to in &route.to {
            match socket.send_to(&buf[..n], to) {
                Ok(_) => forwarded += 1,
                Err(_) => failed += 1,
            }
        }
    }
    (forwarded, failed)
}

/// Asks for a receive buffer of [`RECEIVE_BUFFER`] (best effort).
pub fn grow_receive_buffer(socket: &UdpSocket) {
    let _ = socket2::SockRef::from(socket).set_recv_buffer_size(RECEIVE_BUFFER);
}

pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// How often a thread was preempted (switched out while it could run), from
/// /proc/PID/task/TID/status; 0 if unreadable.
pub fn thread_preemptions(pid: u32, tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Keeps thread `tid` (of any process) on CPU `cpu`; false if the kernel refused.
pub fn pin(tid: u32, cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for any cpu
    // below CPU_SETSIZE (checked); sched_setaffinity reads the set we own.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid as libc::pid_t, std::mem::size_of_val(&set), &set) == 0
    }
}

/// A thread's on-CPU time (ns), from /proc/PID/task/TID/schedstat; 0 if unreadable.
pub fn thread_cpu_ns(pid: u32, tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet of `ssrc` numbered `seq`, `time`, with a 100-byte payload.
    fn rtp(ssrc: u32, seq: u16, time: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend(seq.to_be_bytes());
        p.extend(time.to_be_bytes());
        p.extend(ssrc.to_be_bytes());
        p.resize(112, 0xaa);
        p
    }

    /// Three participants of one room, each sending 20 audio packets 2 ms apart, through the
    /// floor: with every stream routed nothing is lost and every packet has a latency; with
    /// one publisher's stream left out of its route, exactly its packets are lost, twice each.
    #[test]
    fn the_floor_forwards_and_the_receiver_counts_and_matches() {
        for drop_first in [false, true] {
            let sockets: Vec<UdpSocket> = (0..3)
                .map(|_| {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    s.set_nonblocking(true).unwrap();
                    s
                })
                .collect();
            let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
            let mut sends = Vec::new();
            let mut index = HashMap::new();
            for n in 0..20u16 {
                for from in 0..3 {
                    let (seq, time) = (1000 + n, 960 * u32::from(n));
                    index.insert((from, false, seq, time), sends.len());
                    sends.push(Send {
                        due: Duration::from_millis(2 * u64::from(n)),
                        from,
                        data: rtp(100 + from as u32, seq, time),
                        expected: 2,
                    });
                }
            }
            let plan = Plan {
                sends,
                index,
                window: (Duration::ZERO, Duration::from_millis(40)),
            };
            let routes: HashMap<SocketAddr, Route> = (0..3)
                .map(|i| {
                    let ssrcs = if drop_first && i == 0 {
                        vec![]
                    } else {
                        vec![100 + i as u32]
                    };
                    let to = (0..3).filter(|&j| j != i).map(|j| addrs[j]).collect();
                    (addrs[i], Route { to, ssrcs })
                })
                .collect();
            let sources: Vec<Sources> = (0..3)
                .map(|i| {
                    (0..3)
                        .filter(|&j| j != i)
                        .map(|j| (100 + j as u32, (j, false)))
                        .collect()
                })
                .collect();
            let floor_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = floor_socket.local_addr().unwrap();
            let sent: Vec<AtomicU64> = (0..plan.sends.len()).map(|_| AtomicU64::new(0)).collect();
            let stop = AtomicBool::new(false);
            let tids = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];
            let t0 = Instant::now() + Duration::from_millis(50);
            let until = t0 + Duration::from_millis(1500);
            let received = std::thread::scope(|s| {
                let floor = s.spawn(|| floor(&floor_socket, &routes, &stop, &tids[0]));
                let r = s
                    .spawn(|| receive(&plan, &sockets, &sources, t0, until, &sent, &tids[1], None));
                let (failed, _, _) = replay(&plan, &sockets, to, t0, &sent, &stop, &tids[2]);
                assert_eq!(failed, 0);
                let r = r.join().unwrap();
                stop.store(true, Ordering::Relaxed);
                floor.join().unwrap();
                r
            });
            let (expected, lost, dup) = received.lost_and_duplicated(&plan);
            assert_eq!(expected, 120);
            assert_eq!(dup, 0);
            assert_eq!(received.unmatched, 0);
            if drop_first {
                assert_eq!(lost, 40, "participant 0's 20 packets, to two others each");
                assert_eq!(received.latencies.len(), 80);
            } else {
                assert_eq!(lost, 0);
                assert_eq!(received.latencies.len(), 120);
                assert_eq!(received.packets, 120);
            }
        }
    }
}
