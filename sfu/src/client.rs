//! A participant built on str0m, as tests use one (and as a load generator can): full ICE,
//! DTLS-SRTP, a microphone sending Opus and a camera sending VP8, optionally in simulcast
//! layers, through str0m's frame API as an application would.
//!
//! Frames carry who sent them, so that a receiver can check whose media it got and which
//! layer: audio `[b'a', initial, n (8 bytes)]`; video `[key ? 0 : 1, b'v', initial, layer,
//! n (8 bytes), padding to 1,800 bytes (two packets), or to the layer's size if set
//! ([`Participant::set_frame_sizes`])]`, where `initial` is the first byte of
//! the participant's name, `layer` the rid's first byte (`-` without simulcast), and the first
//! byte is a VP8 frame header's key frame bit. A key frame goes out first and whenever the SFU
//! asks for one (PLI).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::SimulcastLayer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast};
use str0m::net::{Protocol, Receive};
use str0m::rtp::VideoOrientation;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig, RtcError};
use uuid::Uuid;

/// Video frames are this long: two RTP packets each.
pub const VIDEO_FRAME: usize = 1800;

/// Applies the answer `sdp` to the offer `pending` of `rtc`'s (taken: one answer each).
pub fn apply_answer(
    rtc: &mut Rtc,
    pending: &mut Option<SdpPendingOffer>,
    sdp: &str,
) -> Result<(), String> {
    let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
    let pending = pending.take().ok_or("no offer of ours is pending")?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())
}

/// `rtc`'s answer to the offer `sdp`.
pub fn answer_offer(rtc: &mut Rtc, sdp: &str) -> Result<String, String> {
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| e.to_string())?;
    Ok(answer.to_sdp_string())
}

pub struct Participant {
    pub name: String,
    pub user: Uuid,
    /// Its one host candidate.
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    audio: Mid,
    video: Mid,
    /// DTLS is up: media can flow.
    pub connected: bool,
    /// Whose track each of its receiving m-lines carries, as the SFU's offers said.
    pub owners: HashMap<String, Uuid>,
    /// What arrived: by (sender, kind), the frames.
    pub got: HashMap<(Uuid, MediaKind), Vec<Vec<u8>>>,
    /// Frames that arrived after a gap in sequence numbers.
    pub gaps: u64,
    /// Media on an m-line no offer named (a bug of the SFU's).
    pub strays: u64,
    frames_sent: u64,
    /// The last video bit rate ceiling the SFU sent it (RTCP REMB), in bits/s.
    pub remb: Option<u64>,
    /// The audio level its packets carry (RFC 6464, dBov: 0 the loudest, -127 silence), if
    /// any: how loud it speaks.
    pub audio_level: Option<i8>,
    /// The rotation its video frames carry (the video orientation extension, as phones send
    /// it), if any; and the last one seen on video it received.
    pub orientation: Option<VideoOrientation>,
    pub orientation_got: Option<VideoOrientation>,
    layers: Vec<Option<Rid>>,
    /// The length of each layer's video frames.
    frame_sizes: Vec<usize>,
    /// Layers a key frame was asked for: the next frame of each is one.
    key_wanted: HashSet<Option<Rid>>,
    /// Layers not sent now (see [`Participant::pause_layer`]).
    paused: HashSet<Option<Rid>>,
    /// A second video track (a screen share), once added, and whether it sends now.
    screen: Option<Mid>,
    screen_on: bool,
    /// The screen's next frame is a key frame (its first, or one asked for).
    screen_key: bool,
}

impl Participant {
    /// A participant at `addr` whose camera sends the simulcast `layers` (lowest first; none:
    /// one plain stream), and its first offer (SDP).
    pub fn new(
        name: &str,
        user: Uuid,
        addr: SocketAddr,
        now: Instant,
        layers: &[&str],
    ) -> (Participant, String) {
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(crate::crypto())
            .build(now);
        if let Ok(c) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let simulcast = (!layers.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for l in layers {
                s.add_send_layer(SimulcastLayer::new(l));
            }
            s
        });
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
        let (offer, pending) = api.apply().expect("two new m-lines are a change");
        let p = Participant {
            name: name.to_owned(),
            user,
            addr,
            rtc,
            pending: Some(pending),
            audio,
            video,
            connected: false,
            owners: HashMap::new(),
            got: HashMap::new(),
            gaps: 0,
            strays: 0,
            frames_sent: 0,
            audio_level: None,
            orientation: None,
            orientation_got: None,
            remb: None,
            layers: if layers.is_empty() {
                vec![None]
            } else {
                layers.iter().map(|l| Some(Rid::from(*l))).collect()
            },
            key_wanted: HashSet::new(),
            frame_sizes: vec![VIDEO_FRAME; layers.len().max(1)],
            paused: HashSet::new(),
            screen: None,
            screen_on: false,
            screen_key: false,
        };
        (p, offer.to_sdp_string())
    }

    /// The length of each layer's video frames (lowest first; at least 12 bytes), so that
    /// layers have the rates of a real encoder's: a frame goes out every 15 ms, so 1,000 bytes
    /// are about 530 kbit/s.
    /// The m-lines it sends its audio and its camera on.
    pub fn sending_mids(&self) -> (Mid, Mid) {
        (self.audio, self.video)
    }

    pub fn set_frame_sizes(&mut self, sizes: &[usize]) {
        for (size, new) in self.frame_sizes.iter_mut().zip(sizes) {
            *size = (*new).max(12);
        }
    }

    /// The first byte of its name: how its frames say who sent them.
    pub fn initial(&self) -> u8 {
        self.name.as_bytes().first().copied().unwrap_or(b'?')
    }

    /// The SFU's answer to its offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        apply_answer(&mut self.rtc, &mut self.pending, sdp)
    }

    /// An offer of the SFU's, with whose track each m-line carries (mid, user): its answer.
    pub fn accept_offer(
        &mut self,
        sdp: &str,
        tracks: impl IntoIterator<Item = (String, Uuid)>,
    ) -> Result<String, String> {
        self.owners.extend(tracks);
        answer_offer(&mut self.rtc, sdp)
    }

    /// A datagram that arrived from `source`.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &[u8],
    ) -> Result<(), RtcError> {
        let Ok(contents) = data.try_into() else {
            return Ok(());
        };
        self.rtc.handle_input(Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.addr,
                contents,
            },
        ))
    }

    /// Moves time on, then hands each datagram to send to `send` (destination, bytes) and
    /// takes in the events, until str0m has nothing more.
    pub fn poll(
        &mut self,
        now: Instant,
        mut send: impl FnMut(SocketAddr, &[u8]),
    ) -> Result<(), RtcError> {
        self.rtc.handle_input(Input::Timeout(now))?;
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(_) => return Ok(()),
                Output::Transmit(t) => send(t.destination, &t.contents),
                Output::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.connected = false;
            }
            Event::KeyframeRequest(r) if Some(r.mid) == self.screen => self.screen_key = true,
            Event::KeyframeRequest(r) => {
                self.key_wanted.insert(r.rid);
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                self.remb = Some(estimate.as_u64());
            }
            Event::MediaData(d) => {
                self.gaps += u64::from(!d.contiguous);
                let Some(owner) = self.owners.get(&d.mid.to_string()).copied() else {
                    self.strays += 1;
                    return;
                };
                let kind = if d.params.spec().codec == Codec::Opus {
                    MediaKind::Audio
                } else {
                    self.orientation_got = d.ext_vals.video_orientation.or(self.orientation_got);
                    MediaKind::Video
                };
                self.got
                    .entry((owner, kind))
                    .or_default()
                    .push(d.data.to_vec());
            }
            _ => {}
        }
    }

    /// The frames that arrived from `user` of `kind`.
    pub fn frames_from(&self, user: Uuid, kind: MediaKind) -> &[Vec<u8>] {
        self.got.get(&(user, kind)).map_or(&[], |v| v)
    }

    /// Stops sending simulcast layer `rid` (`paused`), as a browser does with its top layers
    /// when its bandwidth estimate falls short, or starts it again, with a key frame.
    pub fn pause_layer(&mut self, rid: &str, paused: bool) {
        let layer = Some(Rid::from(rid));
        if paused {
            self.paused.insert(layer);
        } else if self.paused.remove(&layer) {
            self.key_wanted.insert(layer);
        }
    }

    /// Starts (`on`) or stops sending a second video track, a screen share (frames tagged
    /// `s` where a camera's name their layer): the first start adds its m-line, a stop makes
    /// it inactive, a start again sends on it again. Returns the offer (SDP) to send the SFU.
    pub fn share_screen(&mut self, on: bool) -> Option<String> {
        let mut api = self.rtc.sdp_api();
        let dir = if on {
            Direction::SendOnly
        } else {
            Direction::Inactive
        };
        match self.screen {
            Some(mid) => api.set_direction(mid, dir),
            None if on => {
                self.screen = Some(api.add_media(MediaKind::Video, dir, None, None, None));
            }
            None => return None,
        }
        let (offer, pending) = api.apply()?;
        self.screen_on = on;
        self.screen_key = on;
        self.pending = Some(pending);
        Some(offer.to_sdp_string())
    }

    /// Sends one audio frame (20 ms of Opus as far as timestamps go), and every third call a
    /// video frame on each camera layer not paused and on the screen being shared.
    pub fn send_media(&mut self, now: Instant) -> Result<(), RtcError> {
        if !self.connected {
            return Ok(());
        }
        let n = self.frames_sent;
        self.frames_sent += 1;
        let initial = self.initial();
        if let Some(w) = self.rtc.writer(self.audio) {
            let opus = w
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
            if let Some(pt) = opus {
                let mut payload = vec![b'a', initial];
                payload.extend(n.to_be_bytes());
                let time = MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ);
                let w = match self.audio_level {
                    Some(level) => w.audio_level(level, level > -50),
                    None => w,
                };
                w.write(pt, now, time, payload)?;
            }
        }
        if !n.is_multiple_of(3) {
            return Ok(());
        }
        if let (Some(mid), true) = (self.screen, self.screen_on) {
            self.send_screen(mid, n, now)?;
        }
        for (layer, size) in self
            .layers
            .clone()
            .into_iter()
            .zip(self.frame_sizes.clone())
        {
            if self.paused.contains(&layer) {
                continue;
            }
            let Some(w) = self.rtc.writer(self.video) else {
                break;
            };
            let vp8 = w
                .payload_params()
                .find(|p| p.spec().codec == Codec::Vp8)
                .map(|p| p.pt());
            let Some(pt) = vp8 else {
                break;
            };
            let w = match layer {
                Some(rid) => w.rid(rid),
                None => w,
            };
            let w = match self.orientation {
                Some(o) => w.video_orientation(o),
                None => w,
            };
            let key = n == 0 || self.key_wanted.remove(&layer);
            let tag = layer.map_or(b'-', |r| r.as_bytes()[0]);
            let mut frame = vec![u8::from(!key), b'v', initial, tag];
            frame.extend(n.to_be_bytes());
            frame.resize(size, 0x5a);
            let time = MediaTime::new(n * 3000, Frequency::NINETY_KHZ);
            w.write(pt, now, time, frame)?;
        }
        Ok(())
    }

    fn send_screen(&mut self, mid: Mid, n: u64, now: Instant) -> Result<(), RtcError> {
        let initial = self.initial();
        let Some(w) = self.rtc.writer(mid) else {
            return Ok(());
        };
        let Some(pt) = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
        else {
            return Ok(());
        };
        let key = std::mem::take(&mut self.screen_key);
        let mut frame = vec![u8::from(!key), b'v', initial, b's'];
        frame.extend(n.to_be_bytes());
        frame.resize(VIDEO_FRAME, 0x5a);
        let time = MediaTime::new(n * 3000, Frequency::NINETY_KHZ);
        w.write(pt, now, time, frame)
    }
}

/// A [`Participant`] on a UDP socket of its own (non-blocking), for tests over real sockets:
/// [`UdpParticipant::pump`] does one round of its network I/O.
pub struct UdpParticipant {
    pub p: Participant,
    pub sock: std::net::UdpSocket,
}

impl UdpParticipant {
    /// A participant on a new socket at `ip` (port 0), and its first offer.
    pub fn bind(
        name: &str,
        user: Uuid,
        ip: std::net::IpAddr,
        layers: &[&str],
    ) -> std::io::Result<(UdpParticipant, String)> {
        let sock = std::net::UdpSocket::bind((ip, 0))?;
        sock.set_nonblocking(true)?;
        let (p, offer) = Participant::new(name, user, sock.local_addr()?, Instant::now(), layers);
        Ok((UdpParticipant { p, sock }, offer))
    }

    /// Takes in what arrived, sends a round of media when `media`, and sends what str0m has
    /// to send.
    pub fn pump(&mut self, now: Instant, media: bool) -> Result<(), RtcError> {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            self.p.receive(now, from, &buf[..n])?;
        }
        if media {
            self.p.send_media(now)?;
        }
        let sock = &self.sock;
        self.p.poll(now, |to, data| {
            let _ = sock.send_to(data, to);
        })
    }
}
