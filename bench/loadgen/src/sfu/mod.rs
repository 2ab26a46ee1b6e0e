//! `loadgen sfu`: the SFU under a load of synthetic participants (`bench/sfu.sh`), beside the
//! floor of what forwarding the same packets costs.
//!
//! 1. The SFU starts in a child process (`loadgen sfu-server`, [`server`]): the daemon's driver
//!    on its own thread, signaling through its handle.
//! 2. `--rooms` rooms of `--size` participants join ([`client`]): str0m clients negotiate
//!    with the SFU as its tests' clients do (ICE, DTLS-SRTP, the SFU's offers answered), each
//!    publishing Opus and VP8 in three simulcast layers; every subscriber gets the top layer.
//! 3. Each participant renders its next `--warmup` + `--duration` seconds of media ahead of
//!    time through its own str0m client: Opus at 50 packets/s and ~`--video-kbps` of video,
//!    encrypted once, now, so that the replay does no crypto and the generator is not the
//!    bottleneck on a small machine.
//! 4. The SFU phase: the datagrams are replayed on time from each participant's socket to the
//!    SFU, and what comes back to every socket is counted by SSRC and sequence number from the
//!    clear RTP header ([`replay`] explains how received packets are matched to sent ones):
//!    forwarded packets/s, loss, latency; CPU of the SFU's thread (and process), of the
//!    generator's threads, and the SFU process's memory.
//! 5. The floor phase: the same datagrams, same times, to a plain UDP fan-out in a process of
//!    its own, as the SFU is (`loadgen sfu-floor`: receive one, send it to the N-1 others of
//!    the room; no SRTP), measured the same way. The SFU's CPU per forwarded packet over the floor's is the ratio the issue
//!    sets a target for.
//!
//! ```text
//! loadgen sfu [--rooms 1] [--size 20] [--warmup 3] [--duration 15] [--video-kbps 1000]
//!             [--label NAME] [--direct-egress] [--no-floor] [--perf FILE] [--pin]
//!             [--receive-every-us 0]
//! ```
//! Prints `sfu_load: ` lines, then one machine-readable `result label=.. target=sfu|floor ..`
//! line per phase.

mod client;
mod replay;
mod rtp;
pub mod server;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use rand::Rng;
use serde_json::{json, Value};
use str0m::media::MediaKind;
use uuid::Uuid;

use crate::hub::proc::{machine_busy_ns, server_cpu_ns, status_kib};
use client::Participant;
use replay::{Plan, Received, Send, Sources};
use server::Server;

/// Participants in all rooms, at most.
const MAX_PARTICIPANTS: usize = 200;
/// How long negotiation may take, at most.
const NEGOTIATION: Duration = Duration::from_secs(120);
/// Negotiation is over once every participant has been ready this long.
const SETTLE: Duration = Duration::from_millis(500);
/// Between the end of a replay and the end of counting what comes back.
const DRAIN: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct Args {
    /// Rooms, all live at once.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=50))]
    rooms: usize,
    /// Participants per room.
    #[arg(long, default_value_t = 20, value_parser = RangedU64ValueParser::<usize>::new().range(2..=50))]
    size: usize,
    /// Seconds replayed before the measured window.
    #[arg(long, default_value = "3", value_parser = crate::seconds(1.0, 60.0))]
    warmup: Duration,
    /// Seconds measured.
    #[arg(long, default_value = "15", value_parser = crate::seconds(1.0, 120.0))]
    duration: Duration,
    /// Each participant's video bitrate, its three layers together (kbit/s).
    #[arg(long = "video-kbps", default_value_t = 1000, value_parser = RangedU64ValueParser::<u64>::new().range(50..=5000))]
    video_kbps: u64,
    /// The name of this run in the result lines.
    #[arg(long, default_value = "sfu")]
    label: String,
    /// Forwards through the SFU's direct egress (`SfuConfig::direct_egress`), not each
    /// subscriber's str0m connection.
    #[arg(long)]
    direct_egress: bool,
    /// Reads publishers' packets with the SFU's own ingress too (`SfuConfig::direct_ingress`,
    /// experimental; implies --direct-egress).
    #[arg(long)]
    direct_ingress: bool,
    /// Skips the floor phase.
    #[arg(long)]
    no_floor: bool,
    /// Keeps the forwarding thread (the SFU's, then the floor's) on the first CPU and the
    /// generator's replay and receiving threads on the last. On loopback each datagram the
    /// forwarding thread sends wakes a receiving thread, which the kernel otherwise often
    /// runs on the sender's CPU, preempting it: a cost of the benchmark, not of forwarding,
    /// and one the SFU paid many times more of than the floor did (`preempted` in the
    /// results).
    #[arg(long)]
    pin: bool,
    /// The generator's receiving thread looks at the participants' sockets every this many
    /// µs, rather than being woken by each datagram (0). A datagram the forwarding thread
    /// sends then wakes nobody, as over a network, where the receivers are other machines;
    /// on loopback each wake-up is paid by the sender, and (the kernel's choice) often by
    /// preempting it. Latency then reads up to this much later.
    #[arg(long, default_value_t = 0, value_parser = RangedU64ValueParser::<u64>::new().range(0..=5000))]
    receive_every_us: u64,
    /// Records a profile of the SFU's process over the measured window (`perf record -g`)
    /// to this file; the sampling costs the SFU CPU, so its figures then read higher.
    #[arg(long)]
    perf: Option<PathBuf>,
}

/// How the generator runs beside the forwarding thread ([`Args::pin`],
/// [`Args::receive_every_us`]).
#[derive(Clone, Copy)]
struct Conditions {
    pin: bool,
    receive_every: Option<Duration>,
}

/// CPU time read at the start and end of a measured window (ns).
#[derive(Clone, Copy, Default)]
struct Cpu {
    /// The forwarding thread: the SFU's, or the floor's.
    target: u64,
    /// Times the forwarding thread was preempted.
    target_preempted: u64,
    /// The forwarding thread's whole process (the SFU's, the floor's).
    target_process: u64,
    /// The generator's replay and receiving threads.
    generator: u64,
    /// The generator's whole process.
    generator_process: u64,
    machine: u64,
}

/// What a phase measured.
struct Phase {
    received: Received,
    send_failed: u64,
    late_p50_us: u64,
    late_p99_us: u64,
    cpu: Cpu,
    /// Datagrams the kernel dropped over the window for a full receive buffer: at the SFU's
    /// (or the floor's) socket, and at the participants' sockets.
    target_drops: u64,
    generator_drops: u64,
    /// The SFU process's RSS at the start and the end of the window, its peak at the end.
    rss_start_kib: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

impl Args {
    fn conditions(&self) -> Conditions {
        Conditions {
            pin: self.pin,
            receive_every: (self.receive_every_us > 0)
                .then(|| Duration::from_micros(self.receive_every_us)),
        }
    }
}

pub fn run(args: &Args) -> io::Result<()> {
    let n = args.rooms * args.size;
    if n > MAX_PARTICIPANTS {
        return Err(other(format!(
            "{n} participants: at most {MAX_PARTICIPANTS}"
        )));
    }
    let mut server = Server::start(
        args.direct_egress || args.direct_ingress,
        args.direct_ingress,
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_idle = status_kib(Some(server.pid), "VmRSS");
    let sfu_tid = server
        .thread("sfu")
        .ok_or_else(|| other("no thread named sfu in the SFU's process".into()))?;

    // 2. Everyone joins.
    let started = Instant::now();
    let mut people = Vec::with_capacity(n);
    for _ in 0..args.rooms {
        let room = Uuid::new_v4();
        for _ in 0..args.size {
            let (p, offer) = Participant::new(room, Instant::now())?;
            server.send(&json!({"op": "offer", "room": room.to_string(),
                "user": p.user.to_string(), "sdp": offer.to_sdp_string()}))?;
            people.push(p);
        }
    }
    negotiate(&mut server, &mut people, args.size - 1)?;
    let rss_connected = status_kib(Some(server.pid), "VmRSS");
    say(format!(
        "{} room(s) of {}: {n} participants, {} forwarded video streams and as many audio; negotiated in {:.1} s; SFU RSS {:.1} MiB idle, {:.1} MiB connected",
        args.rooms,
        args.size,
        n * (args.size - 1),
        started.elapsed().as_secs_f64(),
        rss_idle as f64 / 1024.0,
        rss_connected as f64 / 1024.0
    ));

    // 3. The media, rendered ahead.
    let rendering = Instant::now();
    let plan = prerender(args, &mut people)?;
    let bytes: usize = plan.sends.iter().map(|s| s.data.len()).sum();
    say(format!(
        "rendered {:.0} s of media for {n} participants in {:.1} s: {} datagrams, {:.1} MB, {} of forwarded streams",
        plan.window.1.as_secs_f64(),
        rendering.elapsed().as_secs_f64(),
        plan.sends.len(),
        bytes as f64 / 1e6,
        plan.index.len()
    ));
    let sockets: Vec<UdpSocket> = people
        .iter()
        .map(|p| p.socket.try_clone())
        .collect::<io::Result<_>>()?;

    // 4. Through the SFU.
    let sources = sfu_sources(&people);
    let pid = server.pid;
    let sfu = run_phase(
        &plan,
        &sockets,
        &sources,
        server.addr,
        (pid, sfu_tid),
        args.perf.as_deref(),
        args.conditions(),
    );
    let stats = server.stats().unwrap_or(Value::Null);
    server.stop();
    let line = report(args, "sfu", &plan, &sfu, n);
    println!(
        "{line} rss_idle_kib={rss_idle} rss_connected_kib={rss_connected} rss_window_start_kib={} rss_loaded_kib={} hwm_kib={} kib_per_participant={:.0} sfu_received={} sfu_forwarded={} sfu_send_dropped={} sfu_refused={} sfu_unknown={}",
        sfu.rss_start_kib,
        sfu.rss_kib,
        sfu.hwm_kib,
        sfu.rss_kib.saturating_sub(rss_idle) as f64 / n as f64,
        stats["received"],
        stats["forwarded"],
        stats["send_dropped"],
        stats["refused"],
        stats["unknown"],
    );
    say(format!(
        "SFU process: RSS {:.1} MiB at the window's start, {:.1} MiB at its end ({:.0} KiB per participant over idle), peak {:.1} MiB; its counters: {stats}",
        sfu.rss_start_kib as f64 / 1024.0,
        sfu.rss_kib as f64 / 1024.0,
        sfu.rss_kib.saturating_sub(rss_idle) as f64 / n as f64,
        sfu.hwm_kib as f64 / 1024.0
    ));

    // 5. The floor.
    if !args.no_floor {
        let floor = floor_phase(&plan, &people, &sockets, args.conditions())?;
        println!("{}", report(args, "floor", &plan, &floor, n));
    }
    Ok(())
}

fn say(s: String) {
    println!("sfu_load: {s}");
}

fn other(m: String) -> io::Error {
    io::Error::other(m)
}

/// Runs signaling until every participant is connected and has all the others' tracks.
fn negotiate(server: &mut Server, people: &mut [Participant], others: usize) -> io::Result<()> {
    let by_user: HashMap<Uuid, usize> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (p.user, i))
        .collect();
    let deadline = Instant::now() + NEGOTIATION;
    let mut buf = vec![0u8; 2048];
    let mut ready_since: Option<Instant> = None;
    while Instant::now() < deadline {
        while let Some(m) = server.next(Duration::ZERO) {
            on_message(server, people, &by_user, &m)?;
        }
        for p in people.iter_mut() {
            p.pump(&mut buf).map_err(other)?;
        }
        if people.iter().all(|p| p.ready(others)) {
            if ready_since.get_or_insert_with(Instant::now).elapsed() >= SETTLE {
                return Ok(());
            }
        } else {
            ready_since = None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = people.iter().filter(|p| p.ready(others)).count();
    Err(other(format!(
        "negotiation did not finish in {NEGOTIATION:?}: {ready} of {} participants ready",
        people.len()
    )))
}

/// One message of the SFU's process during negotiation.
fn on_message(
    server: &mut Server,
    people: &mut [Participant],
    by_user: &HashMap<Uuid, usize>,
    m: &Value,
) -> io::Result<()> {
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let user = Uuid::parse_str(&str_of(&m["user"])).ok();
    let who = user.and_then(|u| by_user.get(&u).copied());
    let ev = str_of(&m["ev"]);
    if let Some(e) = m.get("error") {
        return Err(other(format!("the SFU refused {}: {e}", str_of(&m["op"]))));
    }
    let Some(i) = who else {
        return Err(other(format!("a message about nobody we know: {m}")));
    };
    let p = &mut people[i];
    match ev.as_str() {
        "answer" => p.on_answer(&str_of(&m["sdp"])).map_err(other)?,
        "offer" => {
            let tracks = m["tracks"].as_array().cloned().unwrap_or_default();
            let tracks = tracks.iter().filter_map(|t| {
                let user = Uuid::parse_str(t["user"].as_str()?).ok()?;
                let kind = match t["kind"].as_str()? {
                    "audio" => MediaKind::Audio,
                    _ => MediaKind::Video,
                };
                Some((str_of(&t["mid"]), user, kind))
            });
            let answer = p.on_offer(&str_of(&m["sdp"]), tracks).map_err(other)?;
            server.send(&json!({"op": "answer", "room": p.room.to_string(),
                "user": p.user.to_string(), "sdp": answer}))?;
        }
        "connected" => p.sfu_connected = true,
        "result" if m["op"] == "answer" => p.unconfirmed = p.unconfirmed.saturating_sub(1),
        "result" => {}
        "gone" => return Err(other(format!("the SFU dropped participant {i}"))),
        _ => {}
    }
    Ok(())
}

/// Every participant's media for the warm-up and the window, merged, with the index of the
/// packets of forwarded streams.
fn prerender(args: &Args, people: &mut [Participant]) -> io::Result<Plan> {
    let length = args.warmup + args.duration;
    let start = Instant::now() + Duration::from_millis(10);
    let mut rng = rand::rng();
    let mut sends = Vec::new();
    let mut forwarded = Vec::with_capacity(people.len());
    for (i, p) in people.iter_mut().enumerate() {
        forwarded.push(p.forwarded_ssrcs());
        let audio_phase = Duration::from_micros(rng.random_range(0..20_000));
        let video_phase = Duration::from_micros(rng.random_range(0..33_333));
        let media = p
            .prerender(
                start,
                length,
                audio_phase,
                video_phase,
                args.video_kbps * 1000,
            )
            .map_err(other)?;
        sends.extend(media.into_iter().map(|d| Send {
            due: d.due,
            from: i,
            data: d.data,
            expected: 0,
        }));
    }
    sends.sort_by_key(|s| s.due);
    let mut index = HashMap::new();
    let expected = u16::try_from(args.size - 1).unwrap_or(u16::MAX);
    for (k, s) in sends.iter_mut().enumerate() {
        let Some(h) = rtp::header(&s.data) else {
            continue;
        };
        let Some(&(_, kind)) = forwarded[s.from].iter().find(|(ssrc, _)| *ssrc == h.ssrc) else {
            continue;
        };
        if index
            .insert((s.from, kind == MediaKind::Video, h.seq, h.time), k)
            .is_some()
        {
            return Err(other(format!(
                "two packets of one stream numbered alike: {h:?}"
            )));
        }
        s.expected = expected;
    }
    let missing = forwarded.iter().filter(|f| f.len() != 2).count();
    if missing > 0 {
        return Err(other(format!(
            "{missing} participants without both streams' SSRCs"
        )));
    }
    Ok(Plan {
        sends,
        index,
        window: (args.warmup, length),
    })
}

/// For each participant, the SSRCs the SFU sends it on, from the SFU's offers.
fn sfu_sources(people: &[Participant]) -> Vec<Sources> {
    let by_user: HashMap<Uuid, usize> = people
        .iter()
        .enumerate()
        .map(|(i, p)| (p.user, i))
        .collect();
    people
        .iter()
        .map(|p| {
            p.tracks
                .iter()
                .filter_map(|(mid, (user, kind))| {
                    Some((
                        *p.ssrcs.get(mid)?,
                        (*by_user.get(user)?, *kind == MediaKind::Video),
                    ))
                })
                .collect()
        })
        .collect()
}

/// The floor: the same replay through a plain UDP fan-out, in a process of its own as the
/// SFU is (`loadgen sfu-floor`).
fn floor_phase(
    plan: &Plan,
    people: &[Participant],
    sockets: &[UdpSocket],
    how: Conditions,
) -> io::Result<Phase> {
    let mut floor = Server::start_floor()?;
    let addrs: Vec<SocketAddr> = sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<io::Result<_>>()?;
    // What each participant publishes that is forwarded, by SSRC, from the plan itself.
    let mut published: Vec<Vec<(u32, bool)>> = vec![Vec::new(); people.len()];
    for (&(from, video, _, _), &k) in &plan.index {
        if let Some(h) = rtp::header(&plan.sends[k].data) {
            if !published[from].contains(&(h.ssrc, video)) {
                published[from].push((h.ssrc, video));
            }
        }
    }
    let mut routes = Vec::new();
    let mut sources = vec![Sources::new(); people.len()];
    for (i, p) in people.iter().enumerate() {
        let others: Vec<usize> = (0..people.len())
            .filter(|&j| j != i && people[j].room == p.room)
            .collect();
        for &j in &others {
            for &(ssrc, video) in &published[j] {
                sources[i].insert(ssrc, (j, video));
            }
        }
        let to: Vec<String> = others.iter().map(|&j| addrs[j].to_string()).collect();
        let ssrcs: Vec<u32> = published[i].iter().map(|(s, _)| *s).collect();
        routes.push(json!({"from": addrs[i].to_string(), "to": to, "ssrcs": ssrcs}));
    }
    floor.send(&Value::Array(routes))?;
    let mut tid = None;
    for _ in 0..100 {
        tid = floor.thread("floor");
        if tid.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let tid = tid.ok_or_else(|| other("no thread named floor in the floor's process".into()))?;
    let pid = floor.pid;
    let phase = run_phase(plan, sockets, &sources, floor.addr, (pid, tid), None, how);
    let done = floor.finish(Duration::from_secs(5));
    say(format!(
        "floor: {} datagrams forwarded, {} sends failed",
        done.as_ref()
            .map_or(0, |d| d["forwarded"].as_u64().unwrap_or(0)),
        done.as_ref()
            .map_or(0, |d| d["failed"].as_u64().unwrap_or(0)),
    ));
    Ok(phase)
}

/// One replay of `plan` to `to`, what came back, and the CPU of the forwarding thread
/// (`target`: its process and thread ids), of that whole process, and of ours; `pin`: see [`Args::pin`].
fn run_phase(
    plan: &Plan,
    sockets: &[UdpSocket],
    sources: &[Sources],
    to: SocketAddr,
    target: (u32, u32),
    perf: Option<&Path>,
    how: Conditions,
) -> Phase {
    let receive_every = how.receive_every;
    let target_pid = Some(target.0);
    // What is left from negotiation or an earlier phase is not this phase's.
    let mut buf = vec![0u8; 2048];
    for s in sockets {
        for _ in 0..100_000 {
            if s.recv(&mut buf).is_err() {
                break;
            }
        }
    }
    let sent: Vec<AtomicU64> = (0..plan.sends.len()).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let (replay_tid, receive_tid) = (AtomicU32::new(0), AtomicU32::new(0));
    let t0 = Instant::now() + Duration::from_millis(300);
    let until = t0 + plan.window.1 + DRAIN;
    let pid = std::process::id();
    let ours: Vec<u16> = sockets
        .iter()
        .filter_map(|s| Some(s.local_addr().ok()?.port()))
        .collect();
    let drops = || (udp_drops(&[to.port()]), udp_drops(&ours));
    let sample = || Cpu {
        target: replay::thread_cpu_ns(target.0, target.1),
        target_preempted: replay::thread_preemptions(target.0, target.1),
        target_process: target_pid.map_or(0, |p| server_cpu_ns(Some(p))),
        generator: replay::thread_cpu_ns(pid, replay_tid.load(Ordering::Relaxed))
            + replay::thread_cpu_ns(pid, receive_tid.load(Ordering::Relaxed)),
        generator_process: server_cpu_ns(Some(pid)),
        machine: machine_busy_ns(),
    };
    std::thread::scope(|s| {
        let receiving = s.spawn(|| {
            replay::receive(
                plan,
                sockets,
                sources,
                t0,
                until,
                &sent,
                &receive_tid,
                receive_every,
            )
        });
        let replaying =
            s.spawn(|| replay::replay(plan, sockets, to, t0, &sent, &stop, &replay_tid));
        if how.pin {
            pin_threads(target.1, [&replay_tid, &receive_tid]);
        }
        sleep_until(t0 + plan.window.0);
        let (a, drops_a) = (sample(), drops());
        let rss_start_kib = status_kib(target_pid, "VmRSS");
        let perf = perf
            .zip(target_pid)
            .and_then(|(out, pid)| profile(out, pid, plan.window.1.saturating_sub(plan.window.0)));
        sleep_until(t0 + plan.window.1);
        let (b, drops_b) = (sample(), drops());
        if let Some(mut perf) = perf {
            let _ = perf.wait();
        }
        let rss_kib = status_kib(target_pid, "VmRSS");
        let hwm_kib = status_kib(target_pid, "VmHWM");
        let (send_failed, late_p50_us, late_p99_us) = replaying.join().unwrap_or_else(|_| {
            stop.store(true, Ordering::Relaxed);
            (u64::MAX, 0, 0)
        });
        let received = receiving.join().unwrap_or_default();
        Phase {
            received,
            send_failed,
            late_p50_us,
            late_p99_us,
            cpu: Cpu {
                target: b.target.saturating_sub(a.target),
                target_preempted: b.target_preempted.saturating_sub(a.target_preempted),
                target_process: b.target_process.saturating_sub(a.target_process),
                generator: b.generator.saturating_sub(a.generator),
                generator_process: b.generator_process.saturating_sub(a.generator_process),
                machine: b.machine.saturating_sub(a.machine),
            },
            target_drops: drops_b.0.saturating_sub(drops_a.0),
            generator_drops: drops_b.1.saturating_sub(drops_a.1),
            rss_start_kib,
            rss_kib,
            hwm_kib,
        }
    })
}

/// Pins the forwarding thread `target` to the first CPU and the generator's `threads` (their
/// ids, once they have stored them) to the last ([`Args::pin`]); says so if it cannot.
fn pin_threads(target: u32, threads: [&AtomicU32; 2]) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        say("one CPU: nothing pinned".into());
        return;
    }
    let mut pinned = replay::pin(target, 0);
    for t in threads {
        let mut tid = 0;
        for _ in 0..100 {
            tid = t.load(Ordering::Relaxed);
            if tid != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        pinned &= tid != 0 && replay::pin(tid, cpus - 1);
    }
    if !pinned {
        say("could not pin every thread: figures as unpinned".into());
    }
}

/// `perf record` of process `pid` for `length`, call graphs, to `out` (if perf starts).
fn profile(out: &Path, pid: u32, length: Duration) -> Option<std::process::Child> {
    std::process::Command::new("perf")
        .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .args(["--", "sleep", &format!("{:.1}", length.as_secs_f64())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| say(format!("perf did not start: {e}")))
        .ok()
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Datagrams dropped so far at the IPv4 UDP sockets bound to `ports` (the last column of
/// /proc/net/udp, "drops": a full receive buffer, mostly).
fn udp_drops(ports: &[u16]) -> u64 {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return 0;
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            ports
                .contains(&port)
                .then(|| f.last()?.parse::<u64>().ok())?
        })
        .sum()
}

fn result_prefix(args: &Args, target: &str) -> String {
    format!("result label={} target={target}", args.label)
}

/// Prints a phase's figures; returns its machine-readable line.
fn report(args: &Args, target: &str, plan: &Plan, phase: &Phase, n: usize) -> String {
    let secs = args.duration.as_secs_f64();
    let window_ns = secs * 1e9;
    let r = &phase.received;
    let mut latencies = r.latencies.clone();
    latencies.sort_unstable();
    let p50 = crate::stats::percentile(&latencies, 50.0) as f64 / 1000.0;
    let p99 = crate::stats::percentile(&latencies, 99.0) as f64 / 1000.0;
    let (expected, lost, dup) = r.lost_and_duplicated(plan);
    let per_s = r.packets as f64 / secs;
    let us_per_packet = if r.packets > 0 {
        phase.cpu.target as f64 / 1000.0 / r.packets as f64
    } else {
        0.0
    };
    let pct = |ns: u64| ns as f64 / window_ns * 100.0;
    let others = phase
        .cpu
        .machine
        .saturating_sub(phase.cpu.target_process.max(phase.cpu.target))
        .saturating_sub(phase.cpu.generator_process);
    say(format!(
        "{target}: {per_s:.0} forwarded packets/s ({:.1} Mbit/s) to {n} sockets; {us_per_packet:.2} µs of its thread per packet, {:.1}% of a core, preempted {:.0} times/s; latency p50 {p50:.2} ms, p99 {p99:.2} ms; lost {lost} of {expected} ({:.3}%), {dup} twice, {} unmatched",
        r.bytes as f64 * 8.0 / secs / 1e6,
        pct(phase.cpu.target),
        phase.cpu.target_preempted as f64 / secs,
        if expected > 0 { lost as f64 * 100.0 / expected as f64 } else { 0.0 },
        r.unmatched
    ));
    say(format!(
        "{target}: generator {:.1}% of a core (replay + receive threads; {:.1}% its whole process), other processes {:.1}%; sends late p50 {:.2} ms, p99 {:.2} ms, {} failed; datagrams dropped by the kernel at the {target}'s socket {}, at the participants' {}",
        pct(phase.cpu.generator),
        pct(phase.cpu.generator_process),
        pct(others),
        phase.late_p50_us as f64 / 1000.0,
        phase.late_p99_us as f64 / 1000.0,
        phase.send_failed,
        phase.target_drops,
        phase.generator_drops
    ));
    format!(
        "{} participants={n} rooms={} size={} fwd_per_s={per_s:.0} mbit_s={:.2} cpu_us_per_pkt={us_per_packet:.3} cpu_pct={:.2} preempted_per_s={:.0} proc_cpu_pct={:.2} p50_ms={p50:.3} p99_ms={p99:.3} expected={expected} lost={lost} loss_pct={:.4} dup={dup} unmatched={} gen_cpu_pct={:.2} gen_proc_cpu_pct={:.2} others_cpu_pct={:.2} late_p99_ms={:.3} send_failed={} target_drops={} generator_drops={}",
        result_prefix(args, target),
        args.rooms,
        args.size,
        r.bytes as f64 * 8.0 / secs / 1e6,
        pct(phase.cpu.target),
        phase.cpu.target_preempted as f64 / secs,
        pct(phase.cpu.target_process),
        if expected > 0 { lost as f64 * 100.0 / expected as f64 } else { 0.0 },
        r.unmatched,
        pct(phase.cpu.generator),
        pct(phase.cpu.generator_process),
        pct(others),
        phase.late_p99_us as f64 / 1000.0,
        phase.send_failed,
        phase.target_drops,
        phase.generator_drops
    )
}
