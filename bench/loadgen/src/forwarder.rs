//! The floor for the relay benchmark (`bench/relay.sh`): the least work a UDP relay can do.
//!
//! It has the shape of a TURN server without the protocol: every client sends to one listening
//! socket; the first datagram from a client address gives that client its own "relay" socket,
//! connected to the fixed peer; after that, a datagram from the client goes out of its relay
//! socket to the peer, and a datagram arriving on a relay socket goes back to its client from
//! the listening socket. No parsing, no permissions, no timers, no counters.
//!
//! Two I/O shapes, so the floor can match the server it is compared with:
//! - `epoll` (default): one thread, a level-triggered epoll loop, one `recv` and one `send` per
//!   readable event — the shape of switchboard's relay loop.
//! - `threads`: blocking std sockets, one thread for the listening socket and one per relay
//!   socket.
//!
//! ```text
//! loadgen udp-forwarder --listen 127.0.0.1:13678 --peer 127.0.0.1:13480 [--mode epoll|threads]
//!                       [--unconnected] [--max-flows 10000]
//! ```
//! It runs until killed.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The listening socket, where the clients send.
    #[arg(long)]
    listen: SocketAddr,
    /// The fixed peer every relay socket sends to.
    #[arg(long)]
    peer: SocketAddr,
    #[arg(long, value_enum, default_value_t = Mode::Epoll)]
    mode: Mode,
    /// Relay sockets use sendto/recvfrom rather than being connected to the peer (epoll mode).
    #[arg(long)]
    unconnected: bool,
    /// Clients beyond this many are ignored.
    #[arg(long, default_value_t = 10_000)]
    max_flows: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// One thread, a level-triggered epoll loop.
    Epoll,
    /// Blocking sockets, a thread per relay socket.
    Threads,
}

pub fn run(args: &Args) -> io::Result<()> {
    let threads = matches!(args.mode, Mode::Threads);
    let listener = UdpSocket::bind(args.listen)?;
    eprintln!(
        "udp_forwarder listening addr={} peer={} mode={}",
        listener.local_addr()?,
        args.peer,
        if threads { "threads" } else { "epoll" }
    );
    if threads {
        run_threads(listener, args.peer, args.max_flows)
    } else {
        run_epoll(listener, args.peer, args.max_flows, !args.unconnected)
    }
}

/// A relay socket for one client: bound to the listener's IP, connected to the peer unless
/// asked not to (a TURN relay socket cannot be: one allocation may talk to several peers).
fn relay_socket(listener: &UdpSocket, peer: SocketAddr, connected: bool) -> io::Result<UdpSocket> {
    let relay = UdpSocket::bind(SocketAddr::new(listener.local_addr()?.ip(), 0))?;
    if connected {
        relay.connect(peer)?;
    }
    Ok(relay)
}

fn run_threads(listener: UdpSocket, peer: SocketAddr, max_flows: usize) -> io::Result<()> {
    let listener = Arc::new(listener);
    let mut relays: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut buf = [0u8; 65536];
    loop {
        let (len, client) = listener.recv_from(&mut buf)?;
        if !relays.contains_key(&client) {
            if relays.len() >= max_flows {
                continue;
            }
            let relay = relay_socket(&listener, peer, true)?;
            let back = relay.try_clone()?;
            let listener = Arc::clone(&listener);
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(len) = back.recv(&mut buf) {
                    // A full socket buffer drops the datagram, as UDP does.
                    let _ = listener.send_to(&buf[..len], client);
                }
            });
            relays.insert(client, relay);
        }
        // Errors (e.g. ECONNREFUSED from an earlier ICMP) drop the datagram.
        let _ = relays[&client].send(&buf[..len]);
    }
}

fn run_epoll(
    listener: UdpSocket,
    peer: SocketAddr,
    max_flows: usize,
    connected: bool,
) -> io::Result<()> {
    let epoll = Epoll::new()?;
    listener.set_nonblocking(true)?;
    // Token 0 is the listener; token i + 1 is relays[i].
    epoll.add(listener.as_raw_fd(), 0)?;
    let mut relays: Vec<(UdpSocket, SocketAddr)> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = [0u8; 65536];
    loop {
        let ready = epoll.wait(&mut events)?;
        for event in &events[..ready] {
            let token = event.u64 as usize;
            if token == 0 {
                let Ok((len, client)) = listener.recv_from(&mut buf) else {
                    continue;
                };
                let index = match by_client.get(&client) {
                    Some(&index) => index,
                    None if relays.len() < max_flows => {
                        let relay = relay_socket(&listener, peer, connected)?;
                        relay.set_nonblocking(true)?;
                        epoll.add(relay.as_raw_fd(), relays.len() as u64 + 1)?;
                        relays.push((relay, client));
                        by_client.insert(client, relays.len() - 1);
                        relays.len() - 1
                    }
                    None => continue,
                };
                let relay = &relays[index].0;
                let _ = if connected {
                    relay.send(&buf[..len])
                } else {
                    relay.send_to(&buf[..len], peer)
                };
            } else {
                let (relay, client) = &relays[token - 1];
                let received = if connected {
                    relay.recv(&mut buf)
                } else {
                    relay.recv_from(&mut buf).map(|(len, _)| len)
                };
                if let Ok(len) = received {
                    let _ = listener.send_to(&buf[..len], *client);
                }
            }
        }
    }
}

/// A minimal level-triggered epoll instance.
struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        loop {
            // SAFETY: `events` is a valid, writable buffer of `events.len()` entries.
            let n =
                unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, -1) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it once.
        unsafe { libc::close(self.0) };
    }
}
