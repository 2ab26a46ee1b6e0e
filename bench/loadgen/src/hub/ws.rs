//! The hub client's WebSocket.

use std::fmt::Write as _;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A client WebSocket on a plain TCP stream (RFC 6455): the handshake, masked frames out,
/// frames in. Written here rather than taken from tokio-tungstenite so that the generator
/// costs less per message than the servers it measures (it shares their machine): its stream
/// adapters and per-message wakeups were a third of the generator's user time.
pub(super) struct Ws {
    tcp: TcpStream,
    /// Bytes read, `start..end` not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The frame being written.
    out: Vec<u8>,
    /// The masks' generator (xorshift).
    seed: u32,
}

/// A frame from the server, or a text frame to send.
#[derive(Debug)]
pub(super) enum Frame {
    Text(String),
    Close(Option<u16>),
    /// Binary, ping (answered), pong.
    Other,
}

impl Frame {
    pub(super) fn text(t: impl Into<String>) -> Frame {
        Frame::Text(t.into())
    }
}

impl Ws {
    /// The opening handshake for `path` on `tcp`.
    pub(super) async fn handshake(
        mut tcp: TcpStream,
        host: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<Ws, String> {
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(token) = bearer {
            let _ = write!(request, "Authorization: Bearer {token}\r\n");
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut buf = vec![0u8; 2048];
        let mut end = 0;
        let head = loop {
            if let Some(at) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if end == buf.len() {
                return Err("handshake: no end of the response head in 2 KiB".into());
            }
            let n = tcp
                .read(&mut buf[end..])
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            if n == 0 {
                return Err("handshake: closed by the server".into());
            }
            end += n;
        };
        let status = String::from_utf8_lossy(&buf[..head]);
        if !status.starts_with("HTTP/1.1 101") {
            let line = status.lines().next().unwrap_or_default().to_owned();
            return Err(format!("websocket handshake: {line}"));
        }
        Ok(Ws {
            tcp,
            buf,
            start: head,
            end,
            out: Vec::with_capacity(512),
            seed: rand::random::<u32>() | 1,
        })
    }

    /// Sends a text frame (masked, as a client must).
    pub(super) async fn send(&mut self, frame: Frame) -> Result<(), String> {
        let Frame::Text(text) = frame else {
            return Ok(());
        };
        self.write_frame(0x1, text.as_bytes()).await
    }

    pub(super) async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        let mask = self.seed.to_ne_bytes();
        let out = &mut self.out;
        out.clear();
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp
            .write_all(&self.out)
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// The next frame from the server (a ping is answered); None once the stream ended.
    /// Cancel safe: what was read stays in the buffer.
    pub(super) async fn next(&mut self) -> Option<Result<Frame, String>> {
        loop {
            if let Some((opcode, from, to)) = self.parse() {
                self.start = to;
                let payload = &self.buf[from..to];
                return Some(Ok(match opcode {
                    0x1 => match std::str::from_utf8(payload) {
                        Ok(t) => Frame::Text(t.to_owned()),
                        Err(_) => return Some(Err("a text frame that is not UTF-8".into())),
                    },
                    0x8 => Frame::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
                    0x9 => {
                        let ping = payload.to_vec();
                        if let Err(e) = self.write_frame(0xA, &ping).await {
                            return Some(Err(e));
                        }
                        Frame::Other
                    }
                    0x0 => {
                        return Some(Err(
                            "a fragmented message (the servers send none here)".into()
                        ))
                    }
                    _ => Frame::Other,
                }));
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.tcp.read(&mut self.buf[self.end..]).await {
                Ok(0) => return None,
                Ok(n) => self.end += n,
                Err(e) => return Some(Err(format!("read: {e}"))),
            }
        }
    }

    /// A whole frame at `start`: its opcode and payload's range (servers do not mask).
    pub(super) fn parse(&self) -> Option<(u8, usize, usize)> {
        let b = &self.buf[self.start..self.end];
        let (b0, b1) = (*b.first()?, *b.get(1)?);
        let (size, len) = match b1 & 0x7F {
            126 => (
                4,
                usize::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
            ),
            127 => (
                10,
                u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            ),
            n => (2, usize::from(n)),
        };
        if b.len() < size + len {
            return None;
        }
        Some((b0 & 0x0F, self.start + size, self.start + size + len))
    }

    /// Sends a close frame and waits (briefly) for the server's.
    pub(super) async fn close(&mut self) {
        if self.write_frame(0x8, &1000u16.to_be_bytes()).await.is_err() {
            return;
        }
        while let Some(Ok(frame)) = self.next().await {
            if matches!(frame, Frame::Close(_)) {
                break;
            }
        }
    }
}
