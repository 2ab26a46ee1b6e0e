//! The SFU under test in a process of its own (`loadgen sfu-server`, started by `loadgen sfu`),
//! so that its CPU and memory are read apart from the generator's: the daemon's driver
//! ([`SfuHandle::start`], the media port and the core on their own thread, named `sfu`), and
//! signaling through the handle, as the hub calls it.
//!
//! The floor runs in a process of its own as well (`loadgen sfu-floor`, [`run_floor`]), so
//! that the two are measured alike: each forwarding thread in its own process, waking and
//! being woken by the generator's threads across processes.
//!
//! The two processes speak JSON lines: on the child's stdin, commands (`offer`, `answer`,
//! `stats`; end of input stops it); on its stdout, `listening` first, then the result of each
//! offer and answer in order, the SFU's events (`answer`, `offer`, `connected`, `gone`) and
//! `stats` when asked.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_sfu::io::{SfuHandle, SfuIoConfig};
use switchboard_sfu::{Caps, SfuEvent};
use uuid::Uuid;

use super::replay::Route;

#[derive(clap::Args)]
pub struct Args {
    /// The media port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where each subscriber's downlink estimate starts, kbit/s. The generator's participants
    /// send no transport-wide feedback (their media is rendered ahead, see `client.rs`), so
    /// nothing moves the estimate from here: the default, above what any room of the bench
    /// forwards to one subscriber, keeps bandwidth estimation and pacing running but never
    /// binding, as for subscribers on ample links. The daemon starts at 1,500
    /// (`switchboard_sfu::START_ESTIMATE`) and follows the feedback.
    #[arg(long, default_value_t = 100_000)]
    start_estimate_kbps: u64,
    /// Forwards through the SFU's own egress, not each subscriber's str0m connection
    /// (`SfuConfig::direct_egress`).
    #[arg(long)]
    direct_egress: bool,
    /// Reads publishers' packets with the SFU's own ingress (`SfuConfig::direct_ingress`).
    #[arg(long)]
    direct_ingress: bool,
}

/// The floor's child: binds a socket on loopback, says where, reads its routes (one line:
/// `[{"from": addr, "to": [addr...], "ssrcs": [u32...]}...]`), then forwards on a thread
/// named `floor` until its stdin ends, and says how many datagrams it forwarded.
pub fn run_floor() -> io::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    super::replay::grow_receive_buffer(&socket);
    say(&json!({"ev": "listening", "addr": socket.local_addr()?.to_string()}));
    let mut lines = io::stdin().lock().lines();
    let routes: Vec<Value> = match lines.next() {
        Some(line) => serde_json::from_str(&line?).map_err(|e| other(&e.to_string()))?,
        None => return Ok(()),
    };
    let routes: HashMap<SocketAddr, Route> = routes
        .iter()
        .filter_map(|r| {
            let addr = |v: &Value| v.as_str()?.parse::<SocketAddr>().ok();
            let to = r["to"].as_array()?.iter().filter_map(addr).collect();
            let ssrcs = r["ssrcs"]
                .as_array()?
                .iter()
                .filter_map(|v| u32::try_from(v.as_u64()?).ok())
                .collect();
            Some((addr(&r["from"])?, Route { to, ssrcs }))
        })
        .collect();
    let stop = AtomicBool::new(false);
    let tid = AtomicU32::new(0);
    let (forwarded, failed) = std::thread::scope(|s| {
        let floor = std::thread::Builder::new()
            .name("floor".into())
            .spawn_scoped(s, || super::replay::floor(&socket, &routes, &stop, &tid))?;
        // Until the generator ends our input.
        for _ in lines.by_ref() {}
        stop.store(true, Ordering::Relaxed);
        io::Result::Ok(floor.join().unwrap_or((0, 0)))
    })?;
    say(&json!({"ev": "done", "forwarded": forwarded, "failed": failed}));
    Ok(())
}

/// The child: runs until its stdin ends.
pub fn run(args: &Args) -> io::Result<()> {
    let (sfu, mut events) = SfuHandle::start(SfuIoConfig {
        listen: args.listen,
        public_ip: None,
        // Longer than any run: a participant is never removed for silence while measured.
        grace: Duration::from_secs(600),
        caps: Caps::default(),
        start_estimate: args.start_estimate_kbps * 1000,
        direct_egress: args.direct_egress,
        direct_ingress: args.direct_ingress,
    })?;
    say(&json!({"ev": "listening", "addr": sfu.local_addr().to_string()}));
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        loop {
            tokio::select! {
                line = lines.recv() => {
                    let Some(line) = line else { break };
                    command(&sfu, &line).await;
                }
                Some(e) = events.recv() => say(&event(e)),
            }
        }
    });
    sfu.shutdown();
    Ok(())
}

async fn command(sfu: &SfuHandle, line: &str) {
    let Ok(c) = serde_json::from_str::<Value>(line) else {
        say(&json!({"ev": "result", "error": "not JSON"}));
        return;
    };
    let field = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let id = |k: &str| Uuid::parse_str(&field(k)).unwrap_or_default();
    let op = field("op");
    let result = match op.as_str() {
        "offer" => sfu.offer(id("room"), id("user"), field("sdp")).await,
        "answer" => sfu.answer(id("room"), id("user"), field("sdp")).await,
        "stats" => {
            use std::sync::atomic::Ordering::Relaxed;
            let s = sfu.stats();
            say(&json!({"ev": "stats", "received": s.received.load(Relaxed),
                "forwarded": s.forwarded.load(Relaxed), "send_dropped": s.send_dropped.load(Relaxed),
                "unknown": s.unknown.load(Relaxed), "refused": s.refused.load(Relaxed),
                "participants": s.participants.load(Relaxed)}));
            return;
        }
        other => {
            say(&json!({"ev": "result", "error": format!("unknown op {other:?}")}));
            return;
        }
    };
    match result {
        Ok(()) => say(&json!({"ev": "result", "op": op, "user": field("user")})),
        Err(e) => {
            say(&json!({"ev": "result", "op": op, "user": field("user"), "error": e.to_string()}))
        }
    }
}

fn event(e: SfuEvent) -> Value {
    match e {
        SfuEvent::Answer { user, sdp, .. } => {
            json!({"ev": "answer", "user": user.to_string(), "sdp": sdp})
        }
        SfuEvent::Offer {
            user, sdp, tracks, ..
        } => {
            let tracks: Vec<Value> = tracks
                .iter()
                .map(|t| json!({"mid": t.mid, "user": t.user.to_string(), "kind": t.kind}))
                .collect();
            json!({"ev": "offer", "user": user.to_string(), "sdp": sdp, "tracks": tracks})
        }
        SfuEvent::Connected { user, .. } => json!({"ev": "connected", "user": user.to_string()}),
        SfuEvent::Gone { user, .. } => json!({"ev": "gone", "user": user.to_string()}),
        SfuEvent::ActiveSpeaker { user, .. } => {
            json!({"ev": "speaker", "user": user.to_string()})
        }
        SfuEvent::Quality { user, figures, .. } => json!({
            "ev": "quality", "user": user.to_string(), "rtt": figures.rtt_ms,
            "jitter": figures.jitter_ms, "loss": figures.loss_percent, "bitrate": figures.bitrate,
        }),
    }
}

fn say(v: &Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The generator's side: the child process, its commands and its messages.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    messages: mpsc::Receiver<Value>,
    pub addr: SocketAddr,
    pub pid: u32,
}

impl Server {
    /// Starts `loadgen sfu-server` (this binary; `direct`: its direct egress; `ingress`: its
    /// direct ingress too) and waits up to 10 s for its address.
    pub fn start(direct: bool, ingress: bool) -> io::Result<Server> {
        let flags = [
            direct.then_some("--direct-egress"),
            ingress.then_some("--direct-ingress"),
        ];
        Server::spawn(&["sfu-server"], &flags)
    }

    /// Starts `loadgen sfu-floor` ([`run_floor`]) and waits up to 10 s for its address.
    pub fn start_floor() -> io::Result<Server> {
        Server::spawn(&["sfu-floor"], &[])
    }

    fn spawn(args: &[&str], flags: &[Option<&str>]) -> io::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .args(flags.iter().flatten())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| other("no stdout"))?;
        let stdin = child.stdin.take();
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        let mut server = Server {
            child,
            stdin,
            messages,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
        };
        let first = server.next(Duration::from_secs(10));
        server.addr = first
            .as_ref()
            .filter(|v| v["ev"] == "listening")
            .and_then(|v| v["addr"].as_str()?.parse().ok())
            .ok_or_else(|| other(&format!("the SFU did not start: {first:?}")))?;
        Ok(server)
    }

    pub fn send(&mut self, command: &Value) -> io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| other("stopped"))?;
        writeln!(stdin, "{command}")?;
        stdin.flush()
    }

    /// The next message, if one comes within `wait`.
    pub fn next(&self, wait: Duration) -> Option<Value> {
        self.messages.recv_timeout(wait).ok()
    }

    /// The SFU's counters, asked for and waited on (up to 5 s; other messages meanwhile are
    /// dropped).
    pub fn stats(&mut self) -> Option<Value> {
        self.send(&json!({"op": "stats"})).ok()?;
        let until = Instant::now() + Duration::from_secs(5);
        while let Some(v) = self.next(until.saturating_duration_since(Instant::now())) {
            if v["ev"] == "stats" {
                return Some(v);
            }
        }
        None
    }

    /// The id of its thread named `name` (the SFU's `sfu`, the floor's `floor`), from /proc.
    pub fn thread(&self, name: &str) -> Option<u32> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .ok()?
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .and_then(|t| t.file_name().to_str()?.parse().ok())
    }

    /// Ends its input and waits up to `wait` for its last message, `done` (the floor's).
    pub fn finish(mut self, wait: Duration) -> Option<Value> {
        drop(self.stdin.take());
        let until = Instant::now() + wait;
        while let Some(v) = self.next(until.saturating_duration_since(Instant::now())) {
            if v["ev"] == "done" {
                return Some(v);
            }
        }
        None
    }

    /// Ends its input (it shuts the SFU down and exits) and waits up to 5 s; then kills it.
    pub fn stop(mut self) {
        drop(self.stdin.take());
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn other(m: &str) -> io::Error {
    io::Error::other(m.to_string())
}
