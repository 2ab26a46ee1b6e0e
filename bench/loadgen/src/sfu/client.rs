//! A synthetic participant: a str0m client (full ICE, DTLS-SRTP, frame-level media, as the
//! SFU's own tests drive it) with a microphone and a camera sending three simulcast layers,
//! on a UDP socket of its own.
//!
//! Live, it only negotiates: ICE and DTLS with the SFU, its offer and its answers to the SFU's
//! offers. Its media is then rendered ahead of time ([`Participant::prerender`]): frames are
//! written with future timestamps and the client's clock is moved on with `Input::Timeout`,
//! and the SRTP datagrams it would send are kept with the time they would leave, to be
//! replayed on time later without any crypto in the loop.

use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use rand::Rng;
use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use switchboard_sfu::client;
use uuid::Uuid;

/// The simulcast layers, lowest first, and each one's share of the video bitrate.
pub const LAYERS: [(&str, f64); 3] = [("l", 0.1), ("m", 0.2), ("h", 0.7)];
/// Opus: a packet every 20 ms, 960 ticks of 48 kHz.
pub const AUDIO_EVERY: Duration = Duration::from_millis(20);
/// Video frames per second.
pub const FPS: u32 = 30;
/// A key frame every this many frames (and the first), three times a delta frame's size.
const KEY_EVERY: u64 = 90;

/// A datagram the participant would send, `due` after the start of its rendering.
pub struct Datagram {
    pub due: Duration,
    pub data: Vec<u8>,
}

pub struct Participant {
    pub room: Uuid,
    pub user: Uuid,
    pub socket: UdpSocket,
    pub rtc: Rtc,
    /// Our offer, awaiting the SFU's answer.
    pub pending: Option<SdpPendingOffer>,
    audio: Mid,
    video: Mid,
    /// The client's DTLS is up.
    pub connected: bool,
    /// The SFU said it is connected.
    pub sfu_connected: bool,
    /// What each m-line of the SFU's offers carries: whose track, which kind.
    pub tracks: HashMap<String, (Uuid, MediaKind)>,
    /// The SSRC the SFU sends on each m-line, from its offers.
    pub ssrcs: HashMap<String, u32>,
    /// Answers of ours the SFU has not confirmed yet.
    pub unconfirmed: usize,
}

impl Participant {
    /// A participant of `room` on a fresh loopback socket, and its first offer.
    pub fn new(room: Uuid, now: Instant) -> io::Result<(Participant, SdpOffer)> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        super::replay::grow_receive_buffer(&socket);
        let addr = socket.local_addr()?;
        let mut config = RtcConfig::new().set_crypto_provider(switchboard_sfu::crypto());
        // Replayed media carries binding requests nobody answers (the client no longer reads
        // its socket): the client must not give its candidate pair up while rendering ahead.
        config.set_max_stun_retransmits(1000);
        let mut rtc = config.build(now);
        let candidate = Candidate::host(addr, "udp").map_err(io::Error::other)?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let mut simulcast = Simulcast::new();
        for (rid, _) in LAYERS {
            simulcast.add_send_layer(SimulcastLayer::new(rid));
        }
        let video = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(simulcast),
        );
        let (offer, pending) = api.apply().ok_or_else(|| io::Error::other("no offer"))?;
        let p = Participant {
            room,
            user: Uuid::new_v4(),
            socket,
            rtc,
            pending: Some(pending),
            audio,
            video,
            connected: false,
            sfu_connected: false,
            tracks: HashMap::new(),
            ssrcs: HashMap::new(),
            unconfirmed: 0,
        };
        Ok((p, offer))
    }

    /// The SFU's answer to our offer.
    pub fn on_answer(&mut self, sdp: &str) -> Result<(), String> {
        client::apply_answer(&mut self.rtc, &mut self.pending, sdp)
    }

    /// An offer of the SFU's: the m-lines it names, and our answer.
    pub fn on_offer(
        &mut self,
        sdp: &str,
        tracks: impl Iterator<Item = (String, Uuid, MediaKind)>,
    ) -> Result<String, String> {
        for (mid, user, kind) in tracks {
            self.tracks.insert(mid, (user, kind));
        }
        self.ssrcs.extend(super::rtp::ssrcs_by_mid(sdp));
        let answer = client::answer_offer(&mut self.rtc, sdp)?;
        self.unconfirmed += 1;
        Ok(answer)
    }

    /// One turn of the live client: what arrived on its socket, its timers, what it sends.
    pub fn pump(&mut self, buf: &mut [u8]) -> Result<(), String> {
        let local = self.socket.local_addr().map_err(|e| e.to_string())?;
        // Bounded: a socket's backlog, at most a few hundred datagrams during negotiation.
        for _ in 0..1000 {
            let Ok((n, from)) = self.socket.recv_from(buf) else {
                break;
            };
            let Ok(contents) = buf[..n].try_into() else {
                continue;
            };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source: from,
                    destination: local,
                    contents,
                },
            );
            // What the client refuses (e.g. media on an m-line not negotiated yet) is dropped.
            if self.rtc.accepts(&input) {
                let _ = self.rtc.handle_input(input);
            }
        }
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .map_err(|e| e.to_string())?;
        // Until it only has a deadline; bounded all the same.
        for _ in 0..100_000 {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(_) => return Ok(()),
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(_) => {}
            }
        }
        Err("the client never ran out of output".into())
    }

    /// Whether negotiation is over: connected both ways, our answers confirmed, and an m-line
    /// with a known SSRC for each of the `others`' two tracks.
    pub fn ready(&self, others: usize) -> bool {
        self.connected
            && self.sfu_connected
            && self.pending.is_none()
            && self.unconfirmed == 0
            && self.tracks.len() == 2 * others
            && self.tracks.keys().all(|m| self.ssrcs.contains_key(m))
    }

    /// The SSRCs of what it sends that the SFU forwards to a subscriber asking for the best
    /// layer: its audio and its top video layer.
    pub fn forwarded_ssrcs(&mut self) -> Vec<(u32, MediaKind)> {
        let mut api = self.rtc.direct_api();
        let mut out = Vec::new();
        if let Some(tx) = api.stream_tx_by_mid(self.audio, None) {
            out.push((*tx.ssrc(), MediaKind::Audio));
        }
        let top = Rid::from(LAYERS[LAYERS.len() - 1].0);
        if let Some(tx) = api.stream_tx_by_mid(self.video, Some(top)) {
            out.push((*tx.ssrc(), MediaKind::Video));
        }
        out
    }

    /// Renders `length` of its media from `start` (its clock must not have passed it): Opus
    /// every 20 ms (60-120 bytes) and VP8 at 30 frames/s in three layers adding up to
    /// `video_bps` (each frame ±10%, key frames 3x), the first audio packet and video frame
    /// `audio_phase` and `video_phase` after `start`. Returns the datagrams in order.
    pub fn prerender(
        &mut self,
        start: Instant,
        length: Duration,
        audio_phase: Duration,
        video_phase: Duration,
        video_bps: u64,
    ) -> Result<Vec<Datagram>, String> {
        let pt_of = |rtc: &mut Rtc, mid: Mid, codec: Codec| {
            rtc.writer(mid).and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == codec)
                    .map(|p| p.pt())
            })
        };
        let audio_pt = pt_of(&mut self.rtc, self.audio, Codec::Opus).ok_or("no Opus")?;
        let video_pt = pt_of(&mut self.rtc, self.video, Codec::Vp8).ok_or("no VP8")?;
        let frame_every = Duration::from_secs(1) / FPS;
        let end = start + length;
        let mut rng = rand::rng();
        let mut out = Vec::new();
        let (mut audio_n, mut video_n) = (0u64, 0u64);
        let mut next_audio = start + audio_phase;
        let mut next_video = start + video_phase;
        let mut t = start;
        // Bounded: every turn moves the clock on by at least 1 ms or to the next frame.
        let max_turns = 4 * length.as_millis() as u64 + 1000;
        for _ in 0..max_turns {
            if t >= end {
                break;
            }
            self.rtc
                .handle_input(Input::Timeout(t))
                .map_err(|e| e.to_string())?;
            if t >= next_audio {
                let size = rng.random_range(60..=120);
                let w = self.rtc.writer(self.audio).ok_or("no audio writer")?;
                let time = MediaTime::new(audio_n * 960, Frequency::FORTY_EIGHT_KHZ);
                w.write(audio_pt, t, time, vec![0xfc; size])
                    .map_err(|e| e.to_string())?;
                audio_n += 1;
                next_audio = start + audio_phase + AUDIO_EVERY * audio_n as u32;
            }
            if t >= next_video {
                let key = video_n.is_multiple_of(KEY_EVERY);
                let time = MediaTime::new(video_n * 90_000 / u64::from(FPS), Frequency::NINETY_KHZ);
                for (rid, share) in LAYERS {
                    let mean = video_bps as f64 * share / 8.0 / f64::from(FPS);
                    let mut size = (mean * rng.random_range(0.9..1.1)) as usize;
                    if key {
                        size *= 3;
                    }
                    let w = self.rtc.writer(self.video).ok_or("no video writer")?;
                    w.rid(Rid::from(rid))
                        .write(video_pt, t, time, vp8_frame(key, size.max(16)))
                        .map_err(|e| e.to_string())?;
                }
                video_n += 1;
                next_video = start + video_phase + frame_every * video_n as u32;
            }
            let mut deadline = end;
            for _ in 0..100_000 {
                match self.rtc.poll_output().map_err(|e| e.to_string())? {
                    Output::Timeout(d) => {
                        deadline = d;
                        break;
                    }
                    Output::Transmit(tx) => out.push(Datagram {
                        due: t - start,
                        data: tx.contents.to_vec(),
                    }),
                    Output::Event(_) => {}
                }
            }
            t = next_audio
                .min(next_video)
                .min(deadline.max(t + Duration::from_millis(1)));
        }
        Ok(out)
    }
}

/// A VP8 frame's shape: its 3-byte frame tag (bit 0 of the first byte: 0 for a key frame,
/// RFC 6386 §9.1) and, for a key frame, the start code; the rest filler (it is encrypted on
/// the wire anyway).
fn vp8_frame(key: bool, size: usize) -> Vec<u8> {
    let mut f = vec![0x5a; size];
    f[0] = if key { 0x10 } else { 0x11 };
    if key {
        f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    }
    f
}
