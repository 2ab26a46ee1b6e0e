//! The few Linux system calls the driver needs that std does not wrap: epoll, eventfd and the
//! host's interface addresses through libc; socket creation and options through socket2.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};

use super::Token;

pub(super) const EMPTY_EVENT: libc::epoll_event = libc::epoll_event { events: 0, u64: 0 };

/// What the event is about: the token its registration was made with (none for a token
/// never written, which cannot happen).
pub(super) fn token(ev: &libc::epoll_event) -> Option<Token> {
    Token::decode(ev.u64)
}

/// Whether the event says the socket can be written.
pub(super) fn writable(ev: &libc::epoll_event) -> bool {
    ev.events & libc::EPOLLOUT as u32 != 0
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A level-triggered epoll instance.
pub(super) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd we own.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability, reporting `token`.
    pub(super) fn add(&self, fd: RawFd, token: Token) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token.into(),
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Watches `fd` for readability, and for writability too when `write`.
    pub(super) fn modify(&self, fd: RawFd, token: Token, write: bool) -> io::Result<()> {
        let mut events = libc::EPOLLIN as u32;
        if write {
            events |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event {
            events,
            u64: token.into(),
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) })?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub(super) fn delete(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = EMPTY_EVENT;
        // SAFETY: as in `add`; the event is ignored for EPOLL_CTL_DEL.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) })?;
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1: forever) and returns how many of `events` were filled.
    pub(super) fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout_ms: i32,
    ) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: the kernel writes at most `max` events into `events`, which has that room.
        let n = check(unsafe {
            libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms)
        })?;
        Ok(n as usize)
    }
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux: a thread's own nice
/// value). Best effort: a failure is logged and changes nothing else.
pub(super) fn lower_priority(nice: i32) {
    // SAFETY: gettid takes nothing; setpriority takes plain integers.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot lower the thread's priority");
    }
}

/// An eventfd, to wake the relay thread from another thread.
pub(super) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; a non-negative result is a new fd we own.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `fd` is fresh and owned by nobody else.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(super) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    pub(super) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Asks for larger kernel buffers on a busy socket (best effort: capped by net.core.*mem_max).
pub(super) fn set_buffers(sock: &UdpSocket, bytes: usize) {
    let sock = SockRef::from(sock);
    let bytes = bytes.min(i32::MAX as usize);
    let _ = sock.set_recv_buffer_size(bytes);
    let _ = sock.set_send_buffer_size(bytes);
}

/// A UDP socket bound to `addr`; an IPv6 one only for IPv6 (`IPV6_V6ONLY`), so that `[::]:3478`
/// and `0.0.0.0:3478` can both be listened on, and IPv4 clients are always seen as IPv4.
pub(super) fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = socket_for(addr, Type::DGRAM)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// A listening TCP socket on `addr`, IPv6-only like [`bind_udp`], with `SO_REUSEADDR` so a
/// restart binds again while old connections sit in TIME_WAIT.
pub(super) fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = socket_for(addr, Type::STREAM)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// Options for an accepted client connection: no Nagle delay (media is latency-bound), and
/// keepalives so a peer that vanished is noticed in about two minutes, not hours.
pub(super) fn tune_stream(sock: &TcpStream) {
    let _ = sock.set_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = SockRef::from(sock).set_tcp_keepalive(&keepalive);
}

/// A new socket of `kind` for `addr`'s family (IPv6-only for IPv6), close-on-exec (socket2
/// creates it so).
fn socket_for(addr: SocketAddr, kind: Type) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), kind, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    Ok(sock)
}

/// The IP addresses of this host's interfaces. glibc asks the kernel over netlink: where
/// `AF_NETLINK` sockets are forbidden (systemd's `RestrictAddressFamilies`, a seccomp
/// profile) this fails, and the caller must not carry on as if the host had no addresses.
pub(super) fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}
