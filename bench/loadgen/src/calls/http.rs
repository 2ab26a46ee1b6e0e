//! A minimal HTTP/1.1 client: one keep-alive connection, requests with a Content-Length,
//! responses with a Content-Length (or chunked).

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connect, read and write timeout: no request waits longer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest response accepted.
const MAX_RESPONSE: usize = 1 << 20;

pub struct Http {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    /// Bytes read and not yet consumed: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last response's body.
    pub body: Vec<u8>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            host: addr.to_string(),
            stream: None,
            request: Vec::with_capacity(1024),
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            body: Vec::with_capacity(1024),
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        self.stream = Some(stream);
        self.start = 0;
        self.end = 0;
        Ok(())
    }

    /// Sends one request and reads its response: the status, the body in `self.body`. On any
    /// error the connection is dropped (the next request opens a new one).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> io::Result<u16> {
        let result = self.exchange(method, path, token, body);
        if !matches!(result, Ok((_, true))) {
            self.stream = None;
        }
        result.map(|(status, _)| status)
    }

    /// The status, and whether the connection may be reused.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> io::Result<(u16, bool)> {
        if self.stream.is_none() {
            self.connect()?;
        }
        self.request.clear();
        let body = body.unwrap_or_default();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n",
            self.host
        )?;
        if !body.is_empty() {
            self.request
                .extend_from_slice(b"Content-Type: application/json\r\n");
        }
        if !body.is_empty() || method != "GET" {
            write!(self.request, "Content-Length: {}\r\n", body.len())?;
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&self.request)?;
        self.read_response()
    }

    /// Reads more bytes into the buffer; an error at end of stream.
    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                if self.buf.len() >= MAX_RESPONSE {
                    return Err(bad("response too large"));
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let stream = self.stream.as_mut().expect("connected");
        let n = stream.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }

    /// Waits for `n` unread bytes.
    fn need(&mut self, n: usize) -> io::Result<()> {
        if n > MAX_RESPONSE {
            return Err(bad("response too large"));
        }
        while self.end - self.start < n {
            self.fill()?;
        }
        Ok(())
    }

    /// Consumes a line ending in CRLF and returns its length without it; the line is at
    /// `buf[start - len - 2..start - 2]`.
    fn line(&mut self) -> io::Result<(usize, usize)> {
        let mut scanned = 0;
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(i) = find(&unread[scanned..], b"\r\n") {
                let at = self.start;
                self.start += scanned + i + 2;
                return Ok((at, scanned + i));
            }
            scanned = unread.len().saturating_sub(1);
            self.fill()?;
        }
    }

    fn read_response(&mut self) -> io::Result<(u16, bool)> {
        // The head.
        let mut scanned = 0;
        let head_len = loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(i) = find(&unread[scanned..], b"\r\n\r\n") {
                break scanned + i + 4;
            }
            scanned = unread.len().saturating_sub(3);
            if unread.len() > 64 * 1024 {
                return Err(bad("response head too large"));
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[self.start..self.start + head_len])
            .map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
        let mut keep_alive = version == "HTTP/1.1";
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad("bad Content-Length"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                if value.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
        self.start += head_len;
        self.body.clear();
        if chunked {
            loop {
                let (at, len) = self.line()?;
                let size = std::str::from_utf8(&self.buf[at..at + len])
                    .ok()
                    .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                    .ok_or_else(|| bad("bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while self.line()?.1 != 0 {}
                    break;
                }
                self.need(size + 2)?;
                self.body
                    .extend_from_slice(&self.buf[self.start..self.start + size]);
                self.start += size + 2;
                if self.body.len() > MAX_RESPONSE {
                    return Err(bad("response too large"));
                }
            }
        } else if let Some(n) = length {
            self.need(n)?;
            self.body
                .extend_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // The body runs to the end of the connection: not what the daemon sends.
            return Err(bad("a response without Content-Length"));
        }
        Ok((status, keep_alive))
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}
