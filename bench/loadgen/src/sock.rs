//! The non-blocking UDP clients' wait: `poll(2)` over their sockets.

use std::io;
use std::os::fd::AsRawFd;

/// One `pollfd` per socket, waiting for it to be readable.
pub fn pollfds<'a, S: AsRawFd + 'a>(sockets: impl Iterator<Item = &'a S>) -> Vec<libc::pollfd> {
    sockets
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect()
}

/// Waits up to `timeout_ms` for one of `fds` to be readable: how many are. A signal
/// interrupting the wait counts as nothing ready.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of `fds.len()` entries.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if ready >= 0 {
        return Ok(ready as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        return Ok(0);
    }
    Err(e)
}
