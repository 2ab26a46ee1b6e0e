// WebRTC calls signaled through the switchboard hub: a 1:1 call is one RTCPeerConnection
// between the two browsers (through the daemon's TURN relay when needed); a group call on the
// daemon's SFU is one RTCPeerConnection with the SFU, whatever the number of people.
//
// It works with anything that has socket.io's `emit(event, data, ack?)`, `on` and `off`: a
// socket.io `Socket` on `/socket.io/` or a `SignalingSocket` (./signaling.js) on `/ws`.
// Tokens are the socket's business: give a `SignalingSocket` a token provider, or a socket.io
// `Socket` `authOf(provider)` and `keepTokenFresh(socket, provider)` (./signaling.js), and the
// socket refreshes its token before it expires; the calls outlast the tokens.
//
// Who offers: the daemon sends `call:participant-joined` to everyone already in the call when
// someone answers; they offer to the newcomer, who only answers. Nobody offers to an invitee
// who has not answered: an offer carries this side's camera and microphone, and ringing is not
// consent (`initiateCallToUser` on someone still being rung waits for them to join). Later offers (ICE restarts,
// screen share renegotiation) may come from either side: the side that made the first offer
// wins a collision ("impolite"), the other rolls its own back ("polite"). When both made a first
// offer (a newcomer who saw someone join before answering offers to them as they offer to it),
// the offer with the larger SDP session id goes on, on both sides alike; the other side drops
// its own with its connection and answers on a new one.
//
// Which of the two: the host page does not say. When a call becomes current, the manager sends
// the SFU its offer (`call:sfu-offer`, made but not applied yet, so a 1:1 call allocates nothing
// for it). Refused `not_on_sfu`, the call is a mesh (a 1:1 call, or a daemon without SFU): the
// offer is dropped and the mesh goes on with the events held meanwhile. Accepted, the page is in
// the SFU room; refused `not_in_sfu_room`, the call is on the SFU but this side has not joined
// yet (the host answers over REST right after making the call current): sent again, backing off.
// The initiator, joined from the start, is thus in the room at once, its tracks ready for
// whoever comes. Later offers are the SFU's (others' tracks added or stopped); the client is
// the impolite side: an offer of the SFU's that crosses its own is ignored (the SFU drops it
// when it takes the client's, and offers again).

const NOOP = () => {};
/** ICE restarts per peer in one outage (between two connected states), at most. */
const ICE_RESTART_LIMIT = 3;
/** How long ICE may stay `disconnected` before a restart. */
const DISCONNECTED_GRACE_MS = 5_000;
/** Offers and candidates kept while no call is current (see `currentCallId`), and how long. */
const EARLY_SIGNAL_LIMIT = 64;
const EARLY_SIGNAL_MS = 60_000;
/** The events kept while no call is current. */
const EARLY_EVENTS = new Set(['call:offer', 'call:ice-candidate', 'call:participant-joined']);
/** Candidates kept per peer before its remote description is known. */
const PENDING_CANDIDATE_LIMIT = 200;
/** A media change refused for the socket's rate is sent again this much later, this often. */
const MEDIA_STATE_RETRY_MS = 1_000;
const MEDIA_STATE_RETRIES = 3;
/** The daemon takes one `call:stats` per second from a participant; timers are not exact. */
const MIN_STATS_INTERVAL_MS = 1_100;
/** The largest figures `call:stats` accepts (signaling/src/quality.rs). */
const MAX_MS = 60_000;
const MAX_BITRATE = 100e9;
/** The camera's simulcast layers sent to the SFU, lowest first (the SFU reads them in the order
 * of the offer's `a=simulcast`). */
const SIMULCAST = [
  { rid: 'l', scaleResolutionDownBy: 4 },
  { rid: 'm', scaleResolutionDownBy: 2 },
  { rid: 'h' },
];
/** Joining the SFU's room. */
const SFU_JOIN = {
  // Offers before this side joined (`not_in_sfu_room`): how many, how far apart.
  tries: 40,
  firstMs: 200,
  maxMs: 3_000,
  // Offers refused for another reason before the mode is known, before it is taken as a mesh.
  probeTries: 3,
  // An offer not acknowledged this long is taken as refused.
  ackMs: 10_000,
  // New connections after `call:sfu-closed`, before one connects.
  rejoins: 3,
};
/** The mesh's events, held while the call's kind (mesh or SFU) is not known yet. */
const MESH_EVENTS = new Set(['call:offer', 'call:answer', 'call:ice-candidate', 'call:participant-joined']);
/** The SFU's events: they say the call is on the SFU. */
const SFU_EVENTS = new Set(['call:sfu-offer', 'call:sfu-answer', 'call:sfu-closed', 'call:active-speaker']);

/** The transport a TURN URL reaches the relay over: `udp`, `tcp` or `tls` (`turns:`). */
function turnTransport(url) {
  if (/^turns:/i.test(url)) return 'tls';
  const match = /[?&]transport=(udp|tcp)/i.exec(url);
  return match ? match[1].toLowerCase() : 'udp';
}

const CREDENTIALS_HELP =
  'pass the JSON body of GET /api/calls/turn-credentials, or its `credentials` ' +
  '({urls, username, credential}): `const body = await (await fetch(url, {headers})).json(); ' +
  'await manager.setTurnCredentials(body.credentials)`';

/**
 * Throws a TypeError saying what to pass when `credentials` cannot be TURN credentials:
 * nothing (`undefined`, as `(await fetch(...)).credentials` is), a fetch `Response` (its body
 * not read yet), or an object without `urls`. Silently using no ICE server would only show up
 * later, as calls that fail behind NAT.
 */
function checkCredentials(credentials) {
  const fail = (what) => {
    throw new TypeError(`setTurnCredentials: ${what}; ${CREDENTIALS_HELP}`);
  };
  if (credentials === undefined || credentials === null) fail(`got ${credentials}`);
  const isResponse =
    (typeof Response === 'function' && credentials instanceof Response) ||
    (typeof credentials?.json === 'function' && 'status' in credentials);
  if (isResponse) fail('got a fetch Response, not its JSON body');
  if (Array.isArray(credentials)) {
    if (!credentials.every((server) => server?.urls)) fail('an RTCIceServer without `urls`');
    return;
  }
  if (typeof credentials !== 'object') fail(`got ${typeof credentials} ${String(credentials).slice(0, 40)}`);
  const server = credentials.credentials ?? credentials;
  if (!server?.urls) fail(`got an object without \`urls\` (keys: ${Object.keys(credentials).join(', ') || 'none'})`);
}

/**
 * RTCIceServers from TURN credentials: `{urls, username, credential}`, the whole
 * turn-credentials response `{credentials, expiresAt}`, or an array of RTCIceServer. With
 * `transports`, TURN URLs over other transports are left out (STUN URLs are kept).
 */
function toIceServers(credentials, transports) {
  checkCredentials(credentials);
  const servers = Array.isArray(credentials) ? credentials : [credentials.credentials ?? credentials];
  const wanted = transports?.map((t) => String(t).toLowerCase());
  const keep = (url) => !wanted || !/^turns?:/i.test(url) || wanted.includes(turnTransport(url));
  return servers
    .filter((server) => server?.urls)
    .map((server) => ({ ...server, urls: [server.urls].flat().filter(keep) }))
    .filter((server) => server.urls.length > 0);
}

/** The DTLS fingerprint of an SDP: a new one means the remote side made a new connection. */
function fingerprint(sdp) {
  return /^a=fingerprint:(.*)$/m.exec(sdp ?? '')?.[1].trim() ?? null;
}

/** The `o=` line of an SDP: the same for an offer sent again (even with candidates added). */
function origin(sdp) {
  return /^o=.*$/m.exec(sdp ?? '')?.[0] ?? null;
}

/**
 * Of two first offers that crossed (each side saw the other join and offered), whether ours
 * goes on: the one with the larger session id (the `o=` line's), so both sides keep the same.
 */
function ourFirstOfferWins(ours, theirs) {
  const id = (sdp) => (/^o=\S+ (\d+)/m.exec(sdp ?? '')?.[1] ?? '').replace(/^0+/, '');
  const [a, b] = [id(ours), id(theirs)];
  return a.length === b.length ? a > b : a.length > b.length;
}

/** `{type, sdp}` of a session description, for the wire. */
function describe(description) {
  return { type: description.type, sdp: description.sdp };
}

/** The candidate pair the ICE transport uses, from a stats report. */
function selectedPair(report) {
  let fallback = null;
  for (const stats of report.values()) {
    if (stats.type === 'transport' && stats.selectedCandidatePairId) {
      const pair = report.get(stats.selectedCandidatePairId);
      if (pair) return pair;
    }
    if (stats.type === 'candidate-pair' && (stats.selected || (stats.nominated && stats.state === 'succeeded'))) {
      fallback ??= stats;
    }
  }
  return fallback;
}

/** The path of the selected pair: `{relayed, localType, remoteType, relayProtocol, rtt}`. */
function readPath(report) {
  const pair = selectedPair(report);
  if (!pair) return null;
  const local = report.get(pair.localCandidateId);
  const remote = report.get(pair.remoteCandidateId);
  return {
    relayed: local?.candidateType === 'relay' || remote?.candidateType === 'relay',
    localType: local?.candidateType,
    remoteType: remote?.candidateType,
    relayProtocol: local?.candidateType === 'relay' ? local.relayProtocol : undefined,
    rtt: Number.isFinite(pair.currentRoundTripTime) ? pair.currentRoundTripTime * 1000 : undefined,
  };
}

/** Every inbound RTP stream summed: the worst jitter (ms) and the counters. */
function readInbound(report) {
  let jitter;
  let counters = null;
  for (const stats of report.values()) {
    if (stats.type !== 'inbound-rtp') continue;
    if (Number.isFinite(stats.jitter)) jitter = Math.max(jitter ?? 0, stats.jitter * 1000);
    counters ??= { lost: 0, received: 0, bytes: 0, timestamp: stats.timestamp };
    counters.lost += stats.packetsLost ?? 0;
    counters.received += stats.packetsReceived ?? 0;
    counters.bytes += stats.bytesReceived ?? 0;
    counters.timestamp = Math.max(counters.timestamp, stats.timestamp);
  }
  return { jitter, counters };
}

/** Packet loss (percent) and bitrate (bits/s) between two counter readings. */
function rates(previous, current) {
  if (!previous || !current) return {};
  const lost = current.lost - previous.lost;
  const received = current.received - previous.received;
  const bytes = current.bytes - previous.bytes;
  const seconds = (current.timestamp - previous.timestamp) / 1000;
  const out = {};
  if (received >= 0 && Math.max(lost, 0) + received > 0) {
    out.packetLoss = (Math.max(lost, 0) / (Math.max(lost, 0) + received)) * 100;
  }
  if (bytes >= 0 && seconds > 0) out.bitrate = (bytes * 8) / seconds;
  return out;
}

/** `x` with at most `decimals` decimals, within `[0, max]`. */
function bound(x, max, decimals) {
  const scale = 10 ** decimals;
  return Math.min(max, Math.max(0, Math.round(x * scale) / scale));
}

/**
 * One `call:stats` report from every peer's sample: the worst rtt, jitter and loss, the summed
 * bitrate, relayed if any path is. Null when there is no figure to report.
 */
function aggregate(samples) {
  const values = (key) => samples.map((s) => s[key]).filter(Number.isFinite);
  const figures = {};
  const [rtt, jitter, loss, bitrate] = ['rtt', 'jitter', 'packetLoss', 'bitrate'].map(values);
  if (rtt.length) figures.rtt = bound(Math.max(...rtt), MAX_MS, 1);
  if (jitter.length) figures.jitter = bound(Math.max(...jitter), MAX_MS, 1);
  if (loss.length) figures.packetLoss = bound(Math.max(...loss), 100, 2);
  if (bitrate.length) figures.bitrate = bound(bitrate.reduce((a, b) => a + b, 0), MAX_BITRATE, 0);
  if (Object.keys(figures).length === 0) return null;
  const paths = samples.map((s) => s.path).filter(Boolean);
  if (paths.length) figures.relayed = paths.some((p) => p.relayed);
  return figures;
}

/**
 * The calls of one page: local media, a peer connection per remote participant (a 1:1 call) or
 * one with the SFU (a group call), signaling through `socket`, connection reports
 * (`call:stats`) to the daemon.
 *
 * Set `currentCallId` before joining a call (answering or initiating); call `cleanup()` when
 * it is over. Signals of other calls are ignored; offers, candidates and joins that come while
 * no call is current are kept (a few) and handled if their call becomes current.
 */
export class WebRTCManager {
  /** Whether this side started the call (informational). */
  isInitiator = false;
  /** The camera/microphone stream from {@link initializeLocalStream}. */
  localStream = null;
  /** The screen being shared, or null. */
  screenStream = null;
  /** userId → `{pc, stream, isOfferer, ...}`, one per remote participant. In a call on the
   * SFU, every one's `pc` is the connection with the SFU ({@link sfuPeerConnection}). */
  peers = new Map();
  /** What new peer connections use, from {@link setTurnCredentials}. */
  iceServers = [];

  /** @type {(userId: string, stream: MediaStream) => void} */
  onRemoteStream = NOOP;
  /** @type {(userId: string) => void} */
  onRemoteStreamRemoved = NOOP;
  /** In a call on the SFU, someone's screen share: its own stream, beside their camera's;
   * null when they stop.
   * @type {(userId: string, stream: MediaStream | null) => void} */
  onRemoteScreen = NOOP;
  /** @type {(userId: string, state: RTCPeerConnectionState) => void} */
  onConnectionStateChange = NOOP;
  /** @type {(userId: string, path: {relayed: boolean, localType?: string, remoteType?: string, relayProtocol?: string, rtt?: number}) => void} */
  onPathChange = NOOP;
  /** @type {(userId: string, report: {quality: string, stats: object}) => void} */
  onQuality = NOOP;
  /** In a call on the SFU, who speaks now (this side's own user id too), told by the SFU
   * from the audio level of everyone's packets (`call:active-speaker`).
   * @type {(userId: string) => void} */
  onActiveSpeaker = NOOP;
  /** @type {(userId: string, mediaState: {audioEnabled: boolean, videoEnabled: boolean, screenSharing: boolean}) => void} */
  onMediaStateChanged = NOOP;
  /** @type {(stream: MediaStream | null) => void} */
  onLocalStreamChanged = NOOP;
  /** @type {(data: {callId: string, reason: string, endedBy: string | null}) => void} */
  onCallEnded = NOOP;
  /** @type {(error: Error) => void} */
  onError = NOOP;

  #socket;
  #options;
  #callId = null;
  #handlers;
  #listening = false;
  #early = [];
  /** Who joined the current call since it became current (`call:participant-joined`). */
  #joined = new Set();
  /** Invitees `initiateCallToUser` was asked to offer to before they joined. */
  #offerOnJoin = new Set();
  #strayCandidates = new Map();
  #statsTimer = null;
  #statsBusy = false;
  /** Media changes sent so far, and the last that set each field: a refused change is sent
   * again only for the fields no later change set. */
  #mediaSeq = 0;
  #mediaLatest = {};
  /** The current call's kind: null while not known, `mesh` or `sfu`. */
  #mode = null;
  /** Mesh events held while the mode is not known: `{event, data, run}`. */
  #held = [];
  /** Resolves when the mode of the current call is known. */
  #modeKnown = null;
  #modeResolve = NOOP;
  /** The connection with the SFU (a link: `{pc, tracks, negotiation, ...}`), or null. */
  #sfu = null;
  /** New connections with the SFU since one was last connected. */
  #sfuRejoins = 0;

  /**
   * @param {{emit: Function, on: Function, off: Function}} socket socket.io `Socket` or
   *   `SignalingSocket`.
   * @param {object} [options]
   * @param {'all' | 'relay'} [options.iceTransportPolicy='all']
   * @param {string[]} [options.turnTransports] Keep only TURN URLs over these (`udp`, `tcp`,
   *   `tls` for `turns:`).
   * @param {number} [options.statsIntervalMs=5000] `call:stats` period (at least 1.1 s, the
   *   daemon takes one report a second); 0 disables it.
   * @param {boolean} [options.autoOfferOnJoin=true] Offer to whoever joins the current call.
   * @param {(...args: any[]) => void} [options.log]
   */
  constructor(socket, options = {}) {
    this.#socket = socket;
    this.#options = {
      iceTransportPolicy: 'all',
      turnTransports: null,
      statsIntervalMs: 5000,
      autoOfferOnJoin: true,
      log: NOOP,
      ...options,
    };
    const handle = {
      'call:offer': (data) => this.#handleOffer(data),
      'call:answer': (data) => this.#handleAnswer(data),
      'call:ice-candidate': (data) => this.#handleCandidate(data),
      'call:participant-joined': (data) => this.#handleJoined(data),
      'call:participant-left': (data) => this.#handleLeft(data),
      'call:ended': (data) => this.#handleEnded(data),
      'call:media-state-changed': (data) => this.#notify('onMediaStateChanged', data.userId, data.mediaState),
      'call:quality': (data) =>
        this.#notify('onQuality', data.userId, { quality: data.quality, stats: data.stats }),
      'call:sfu-offer': (data) => this.#sfuOffered(data),
      'call:sfu-answer': (data) => this.#sfuAnswered(data),
      'call:sfu-closed': (data) => this.#sfuClosed(data),
      'call:active-speaker': (data) => this.#notify('onActiveSpeaker', data.userId),
    };
    this.#handlers = Object.fromEntries(
      Object.entries(handle).map(([event, run]) => [event, (data) => this.#onEvent(event, data, run)]),
    );
    this.#listen();
  }

  /** The call signaled for (a UUID string), or null. Setting one (re)attaches the listeners. */
  get currentCallId() {
    return this.#callId;
  }

  set currentCallId(callId) {
    const previous = this.#callId;
    this.#callId = callId || null;
    if (!this.#callId) return;
    this.#listen();
    if (this.#callId !== previous) this.#findMode();
    const early = this.#early.splice(0);
    for (const { event, data } of early) {
      if (data.callId === this.#callId) this.#handlers[event](data);
    }
  }

  /** How the current call's media goes: `mesh`, `sfu`, or null while not known yet. */
  get mode() {
    return this.#mode;
  }

  /** The connection with the SFU in a group call, else null. */
  get sfuPeerConnection() {
    return this.#sfu?.pc ?? null;
  }

  /**
   * In a call on the SFU: which simulcast layer of `userId`'s video to receive, `low` (a
   * thumbnail), `medium`, `high` (the default) or `off`. Returns whether it was asked.
   */
  setVideoQuality(userId, quality) {
    if (this.#mode !== 'sfu' || !this.#callId) return false;
    const data = { callId: this.#callId, userId, quality };
    this.#emit('call:sfu-layer', data, (res) => this.#logRefusal('call:sfu-layer', res));
    return true;
  }

  /**
   * Uses TURN credentials for the peer connections made from now on (and the ICE restarts of
   * the current ones).
   * @param {{urls: string[], username: string, credential: string} | {credentials: object, expiresAt: string} | RTCIceServer[]} credentials
   *   `credentials` of `GET /api/calls/turn-credentials` (the whole JSON body is accepted too).
   * @returns {Promise<RTCIceServer[]>} the servers kept.
   * @throws {TypeError} for nothing (`undefined`), a fetch `Response` whose body was not read,
   *   or an object without `urls`, saying what to pass.
   */
  async setTurnCredentials(credentials) {
    this.iceServers = toIceServers(credentials, this.#options.turnTransports);
    if (this.iceServers.length === 0) this.#log('no usable ICE server in', credentials);
    for (const { pc } of this.#links()) {
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.iceServers });
      } catch (err) {
        this.#log('cannot update the ICE servers of a connection:', err);
      }
    }
    return this.iceServers;
  }

  /**
   * Opens the camera and/or microphone. A stream opened before is stopped, and its tracks are
   * replaced in the current connections.
   * @returns {Promise<MediaStream>}
   */
  async initializeLocalStream(audio = true, video = true) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video });
    const previous = this.localStream;
    this.localStream = stream;
    if (previous) {
      await this.#replaceLocalTracks(previous, stream);
      previous.getTracks().forEach((track) => track.stop());
    }
    return stream;
  }

  /**
   * Offers to `targetUserId` in the current call, with a new connection or the existing one.
   * To an invitee not known to have answered (no `call:participant-joined` for them, no
   * connection with them yet), the offer waits until they join: resolves to null then.
   * @returns {Promise<RTCPeerConnection | null>}
   */
  async initiateCallToUser(targetUserId) {
    if (!this.#callId) throw new Error('initiateCallToUser: set currentCallId first');
    await this.#modeKnown;
    if (!this.#mode) return null; // the call is over
    if (this.#mode === 'sfu') return this.#sfu?.pc ?? null; // the SFU offers their tracks
    const existing = this.peers.get(targetUserId)?.pc;
    const negotiated = existing && existing.signalingState !== 'closed' && (existing.localDescription || existing.remoteDescription);
    if (!this.#joined.has(targetUserId) && !negotiated) {
      this.#offerOnJoin.add(targetUserId);
      this.#log('the offer to', targetUserId, 'waits until they answer');
      return null;
    }
    const peer = this.#peerFor(targetUserId);
    const { pc } = peer;
    if (peer.isOfferer && !pc.remoteDescription) return pc; // offered already, no answer yet
    if (!pc.localDescription && !pc.remoteDescription) peer.isOfferer = true;
    this.#addLocalTracks(peer);
    for (const kind of ['audio', 'video']) {
      const has = pc.getTransceivers().some((t) => (t.sender.track?.kind ?? t.receiver.track.kind) === kind);
      if (!has) pc.addTransceiver(kind, { direction: 'recvonly' });
    }
    await this.#renegotiate(peer);
    return pc;
  }

  /**
   * Mutes or unmutes the microphone (toggles without an argument) and tells the call.
   * @returns {boolean} whether audio is on now.
   */
  toggleAudio(enabled) {
    const tracks = this.localStream?.getAudioTracks() ?? [];
    const on = enabled ?? !tracks.some((track) => track.enabled);
    tracks.forEach((track) => (track.enabled = on));
    this.#sendMediaState({ audioEnabled: on });
    return on;
  }

  /**
   * Turns the outgoing video (camera, and a shared screen) off or on (toggles without an
   * argument) and tells the call.
   * @returns {boolean} whether video is on now.
   */
  toggleVideo(enabled) {
    const tracks = [...(this.localStream?.getVideoTracks() ?? []), ...(this.screenStream?.getVideoTracks() ?? [])];
    const on = enabled ?? !tracks.some((track) => track.enabled);
    tracks.forEach((track) => (track.enabled = on));
    this.#sendMediaState({ videoEnabled: on });
    return on;
  }

  /**
   * Sends a screen instead of the camera to every peer, until {@link stopScreenShare} or until
   * the user stops it from the browser.
   * @returns {Promise<MediaStream>} the screen stream.
   */
  async startScreenShare() {
    if (this.screenStream) return this.screenStream;
    const screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
    const [track] = screen.getVideoTracks();
    this.screenStream = screen;
    track.addEventListener('ended', () => this.screenStream === screen && this.stopScreenShare());
    await Promise.all(this.#links().map((peer) => this.#sendScreen(peer, track)));
    this.#sendMediaState({ screenSharing: true });
    this.#notify('onLocalStreamChanged', screen);
    return screen;
  }

  /** Back to the camera. Never rejects: failures go to `onError`. */
  async stopScreenShare() {
    const screen = this.screenStream;
    if (!screen) return;
    this.screenStream = null;
    screen.getTracks().forEach((track) => track.stop());
    const camera = this.localStream?.getVideoTracks()[0] ?? null;
    const links = this.#links();
    const results = await Promise.allSettled(links.map((peer) => this.#unsendScreen(peer, camera)));
    for (const result of results) {
      if (result.status === 'rejected') this.#fail('stopScreenShare', result.reason);
    }
    this.#sendMediaState({ screenSharing: false });
    this.#notify('onLocalStreamChanged', this.localStream);
  }

  /**
   * The network path to `userId` now, or null before ICE has selected one.
   * @returns {Promise<{relayed: boolean, localType?: string, remoteType?: string, relayProtocol?: string, rtt?: number} | null>}
   */
  async getPathInfo(userId) {
    const peer = this.peers.get(userId);
    if (!peer) return null;
    return readPath(await peer.pc.getStats());
  }

  /**
   * Ends everything local: connections, camera, screen, reports, socket listeners. Idempotent;
   * setting `currentCallId` again makes the manager ready for another call.
   */
  cleanup() {
    clearInterval(this.#statsTimer);
    this.#statsTimer = null;
    this.#sfuClose();
    for (const userId of [...this.peers.keys()]) this.#closePeer(userId);
    this.#setMode(null);
    for (const stream of [this.localStream, this.screenStream]) {
      stream?.getTracks().forEach((track) => track.stop());
    }
    this.localStream = null;
    this.screenStream = null;
    this.#unlisten();
    this.#early = [];
    this.#joined.clear();
    this.#offerOnJoin.clear();
    this.#strayCandidates.clear();
    this.#callId = null;
    this.isInitiator = false;
  }

  // --- Socket events ------------------------------------------------------------------------

  #listen() {
    if (this.#listening) return;
    this.#listening = true;
    for (const [event, handler] of Object.entries(this.#handlers)) this.#socket.on(event, handler);
  }

  #unlisten() {
    if (!this.#listening) return;
    this.#listening = false;
    for (const [event, handler] of Object.entries(this.#handlers)) this.#socket.off(event, handler);
  }

  /**
   * Runs `run(data)` if `data` is about the current call (errors go to `onError`). While no
   * call is current, offers and candidates are kept for a while instead.
   */
  #onEvent(event, data, run) {
    if (!data || typeof data !== 'object') return;
    if (!this.#callId) {
      if (EARLY_EVENTS.has(event) && data.callId) this.#keepEarly(event, data);
      return;
    }
    if (data.callId !== this.#callId) return;
    if (SFU_EVENTS.has(event) && !this.#mode) this.#setMode('sfu');
    if (MESH_EVENTS.has(event) && this.#mode !== 'mesh') {
      // Not known yet: held. In a call on the SFU: not for this side (the SFU offers).
      if (!this.#mode && this.#held.length < EARLY_SIGNAL_LIMIT) this.#held.push({ event, data, run });
      return;
    }
    if (SFU_EVENTS.has(event) && this.#mode !== 'sfu') return this.#log(event, 'in a mesh call');
    this.#guard(event, () => run(data));
  }

  #keepEarly(event, data) {
    const now = Date.now();
    this.#early = this.#early.filter((signal) => now - signal.at < EARLY_SIGNAL_MS);
    // When full, the newest go: an offer is worth more than the candidates after it.
    if (this.#early.length < EARLY_SIGNAL_LIMIT) this.#early.push({ event, data, at: now });
  }

  #guard(context, run) {
    try {
      const result = run();
      if (result instanceof Promise) result.catch((err) => this.#fail(context, err));
    } catch (err) {
      this.#fail(context, err);
    }
  }

  #handleOffer({ fromUserId, offer }) {
    this.#offerOnJoin.delete(fromUserId); // they offered first: the connection is theirs
    const known = this.peers.get(fromUserId)?.pc.remoteDescription;
    if (known && fingerprint(known.sdp) !== fingerprint(offer?.sdp)) {
      this.#log('a new connection from', fromUserId, '(the old one is dropped)');
      this.#closePeer(fromUserId);
    }
    const peer = this.#peerFor(fromUserId);
    return this.#negotiate(peer, () => this.#answerOffer(peer, offer));
  }

  async #answerOffer(peer, offer) {
    const { pc } = peer;
    const known = pc.remoteDescription;
    if (pc.signalingState === 'stable' && known?.type === 'offer' && origin(known.sdp) === origin(offer.sdp)) {
      return this.#sendDescription('call:answer', peer); // the same offer again: the same answer
    }
    const collision = pc.signalingState !== 'stable';
    if (collision && !pc.remoteDescription) {
      // Both made the first offer: one rule on both sides picks the one that goes on, and its
      // maker is the offerer of this connection from now on (the later collisions' winner).
      peer.isOfferer = ourFirstOfferWins(pc.localDescription?.sdp, offer.sdp);
      if (!peer.isOfferer) return this.#answerOnNewConnection(peer, offer);
    }
    peer.ignoreOffer = collision && peer.isOfferer;
    if (peer.ignoreOffer) return this.#log('offer collision with', peer.userId, ': ours goes on');
    if (collision) {
      await pc.setLocalDescription({ type: 'rollback' });
      peer.wantsOffer ??= {}; // ours again, after this exchange
    }
    await pc.setRemoteDescription(offer);
    await this.#flushCandidates(peer);
    this.#addLocalTracks(peer);
    await pc.setLocalDescription(await pc.createAnswer());
    this.#sendDescription('call:answer', peer);
    if (collision) await this.#restartSenders(pc);
    if (peer.wantsOffer) await this.#offer(peer, peer.wantsOffer);
  }

  /**
   * Both made the first offer and theirs goes on: ours goes with its connection, and a new
   * one answers theirs. Rolling a first offer back instead (as a renegotiation's is) left
   * Chromium's connection, now and then, never connecting relay <-> relay although both
   * descriptions were applied: two runs in three of the five-person demo call failed so on
   * the pair that crossed. Nothing was sent on the old connection yet; the candidates that
   * came for their offer are kept, and ours, of the offer dropped, no longer match theirs.
   */
  #answerOnNewConnection(old, offer) {
    const theirs = old.pendingCandidates.splice(0);
    this.peers.delete(old.userId);
    clearTimeout(old.disconnectedTimer);
    old.pc.close();
    const peer = this.#peerFor(old.userId);
    peer.pendingCandidates.unshift(...theirs);
    this.#log('offers crossed with', old.userId, ': theirs goes on, on a new connection');
    return this.#negotiate(peer, async () => {
      await this.#answerOffer(peer, offer);
      // An m-line of theirs carries each of our tracks, or we offer the rest.
      const unsent = peer.pc.getTransceivers().some((t) => t.sender.track && !t.currentDirection?.includes('send'));
      if (unsent) await this.#offer(peer);
    });
  }

  /**
   * After a rollback of a renegotiation: Chromium (148) then sends nothing from the senders
   * (a fresh outbound-rtp, no frame encoded) until their track is set again.
   */
  async #restartSenders(pc) {
    for (const sender of pc.getSenders()) {
      if (sender.track) await sender.replaceTrack(sender.track);
    }
  }

  #handleAnswer({ fromUserId, answer }) {
    const peer = this.peers.get(fromUserId);
    if (!peer) return this.#log('answer from', fromUserId, 'with no connection');
    return this.#negotiate(peer, async () => {
      if (peer.pc.signalingState !== 'have-local-offer') return this.#log('unexpected answer from', fromUserId);
      await peer.pc.setRemoteDescription(answer);
      await this.#flushCandidates(peer);
      if (peer.wantsOffer) await this.#offer(peer, peer.wantsOffer);
    });
  }

  async #handleCandidate({ fromUserId, candidate }) {
    if (!candidate) return;
    const peer = this.peers.get(fromUserId);
    if (!peer) {
      // Before the offer it belongs to (or after the peer left): kept until an offer comes.
      const stray = this.#strayCandidates.get(fromUserId) ?? [];
      if (stray.length < PENDING_CANDIDATE_LIMIT) stray.push(candidate);
      this.#strayCandidates.set(fromUserId, stray);
      return;
    }
    if (!peer.pc.remoteDescription) {
      if (peer.pendingCandidates.length < PENDING_CANDIDATE_LIMIT) peer.pendingCandidates.push(candidate);
      return;
    }
    await this.#addCandidate(peer, candidate);
  }

  #handleJoined({ userId }) {
    this.#joined.add(userId);
    const asked = this.#offerOnJoin.delete(userId);
    const peer = this.peers.get(userId);
    if (peer?.pc.signalingState === 'have-local-offer') {
      // Offered already (they rejoined meanwhile): sent again, for the device they joined on.
      return this.#sendDescription('call:offer', peer);
    }
    if (peer && !['failed', 'closed', 'disconnected'].includes(peer.pc.connectionState)) return;
    if (peer) this.#closePeer(userId); // a connection from before they left
    if (asked || this.#options.autoOfferOnJoin) return this.initiateCallToUser(userId);
  }

  #handleLeft({ userId }) {
    this.#joined.delete(userId);
    this.#offerOnJoin.delete(userId);
    if (this.#mode === 'sfu') this.#sfuRemoveRemote(userId);
    else this.#closePeer(userId);
  }

  #handleEnded(data) {
    this.cleanup();
    this.#notify('onCallEnded', data);
  }

  // --- Peers --------------------------------------------------------------------------------

  /** The peer of `userId`, with a new connection if it has none (or a closed one). */
  #peerFor(userId) {
    const existing = this.peers.get(userId);
    if (existing && existing.pc.signalingState !== 'closed') return existing;
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.#options.iceTransportPolicy,
    });
    const peer = {
      userId,
      pc,
      stream: null,
      isOfferer: false,
      ignoreOffer: false,
      wantsOffer: null,
      negotiation: Promise.resolve(),
      pendingCandidates: this.#strayCandidates.get(userId) ?? [],
      restarts: 0,
      disconnectedTimer: null,
      counters: null,
      pathKey: null,
      screenSender: null,
      screenAdded: false,
    };
    this.#strayCandidates.delete(userId);
    this.peers.set(userId, peer);
    pc.addEventListener('icecandidate', ({ candidate }) => {
      if (!candidate || !this.#callId || this.peers.get(userId) !== peer) return; // null: the end
      this.#emit('call:ice-candidate', { callId: this.#callId, targetUserId: userId, candidate: candidate.toJSON() });
    });
    pc.addEventListener('track', (event) => this.#onTrack(peer, event));
    pc.addEventListener('connectionstatechange', () => this.#onConnectionState(peer));
    pc.addEventListener('iceconnectionstatechange', () => this.#onIceState(peer));
    return peer;
  }

  /** Closes the connection to `userId` and tells the page its stream is gone. */
  #closePeer(userId) {
    const peer = this.peers.get(userId);
    this.#strayCandidates.delete(userId);
    if (!peer) return;
    this.peers.delete(userId);
    clearTimeout(peer.disconnectedTimer);
    peer.pc.close();
    if (peer.stream) this.#notify('onRemoteStreamRemoved', userId);
    if (this.peers.size === 0) {
      clearInterval(this.#statsTimer);
      this.#statsTimer = null;
    }
  }

  /** Sends the local tracks (a shared screen instead of the camera) not sent yet. */
  #addLocalTracks(peer) {
    const { pc } = peer;
    const stream = this.localStream;
    const screen = this.screenStream?.getVideoTracks()[0];
    const sent = new Set(pc.getSenders().map((sender) => sender.track));
    for (const track of stream?.getTracks() ?? []) {
      const outgoing = screen && track.kind === 'video' ? screen : track;
      if (sent.has(outgoing) || sent.has(track) || (outgoing === screen && peer.screenSender)) continue;
      const sender = pc.addTrack(outgoing, stream);
      if (outgoing === screen) peer.screenSender = sender;
    }
    if (screen && !peer.screenSender) {
      peer.screenSender = pc.addTrack(screen, stream ?? this.screenStream);
      peer.screenAdded = true;
    }
  }

  /** After {@link initializeLocalStream} opened a new stream: its tracks in every sender. */
  async #replaceLocalTracks(previous, stream) {
    const old = new Set(previous.getTracks());
    const replacements = [];
    for (const peer of this.#links()) {
      for (const sender of peer.pc.getSenders()) {
        // The SFU link's own senders may have been made with no track yet.
        const own = peer.own?.get(sender);
        if (!old.has(sender.track) && !(own && !sender.track)) continue;
        const kind = sender.track?.kind ?? own;
        replacements.push(sender.replaceTrack(stream.getTracks().find((t) => t.kind === kind) ?? null));
      }
    }
    await Promise.all(replacements);
  }

  /**
   * Runs `step` after the negotiation steps of `peer` queued before it: offers made and
   * offers or answers received are applied one at a time.
   */
  #negotiate(peer, step) {
    const run = peer.negotiation.then(() => (peer.pc.signalingState === 'closed' ? undefined : step()));
    peer.negotiation = run.catch(() => {});
    return run;
  }

  /** Offers to `peer` once its current exchange (if any) is done. */
  #renegotiate(peer, options = {}) {
    return this.#negotiate(peer, () => this.#offer(peer, options));
  }

  /** Offers to `peer` now, or after the answer to the offer out. Within {@link #negotiate}. */
  async #offer(peer, options = {}) {
    const { pc } = peer;
    if (pc.signalingState !== 'stable') {
      peer.wantsOffer = { ...peer.wantsOffer, ...options };
      return;
    }
    peer.wantsOffer = null;
    await pc.setLocalDescription(await pc.createOffer(options));
    this.#sendDescription('call:offer', peer);
  }

  /** Sends the local offer or answer of `peer`. */
  #sendDescription(event, peer) {
    if (!this.#callId || !peer.pc.localDescription) return;
    const field = event === 'call:offer' ? 'offer' : 'answer';
    const description = describe(peer.pc.localDescription);
    this.#emit(event, { callId: this.#callId, targetUserId: peer.userId, [field]: description });
  }

  async #flushCandidates(peer) {
    const candidates = peer.pendingCandidates.splice(0);
    for (const candidate of candidates) await this.#addCandidate(peer, candidate);
  }

  /** Adds a remote candidate. One that does not fit (of an offer ignored, of a connection
   * gone) fails alone: logged, not an error of the call. */
  async #addCandidate(peer, candidate) {
    try {
      await peer.pc.addIceCandidate(candidate);
    } catch (err) {
      if (!peer.ignoreOffer) this.#log(`candidate from ${peer.userId} refused:`, err);
    }
  }

  #onTrack(peer, event) {
    const stream = event.streams[0] ?? peer.stream ?? new MediaStream();
    if (!event.streams[0] && !stream.getTracks().includes(event.track)) stream.addTrack(event.track);
    if (peer.stream === stream) return;
    peer.stream = stream;
    this.#notify('onRemoteStream', peer.userId, stream);
  }

  #onConnectionState(peer) {
    if (this.peers.get(peer.userId) !== peer) return;
    const state = peer.pc.connectionState;
    this.#notify('onConnectionStateChange', peer.userId, state);
    if (state === 'connected') {
      this.#startStats();
      this.#guard('path', () => this.#checkPath(peer));
    }
  }

  /** ICE restarts: by the side that made the first offer, when ICE failed or stays down. */
  #onIceState(peer) {
    const state = peer.pc.iceConnectionState;
    clearTimeout(peer.disconnectedTimer);
    peer.disconnectedTimer = null;
    if (state === 'failed') this.#restartIce(peer);
    if (state === 'disconnected') {
      peer.disconnectedTimer = setTimeout(() => this.#restartIce(peer), DISCONNECTED_GRACE_MS);
    }
    if (state === 'connected' || state === 'completed') {
      // Back up: the next outage gets its own restarts.
      peer.restarts = 0;
      this.#guard('path', () => this.#checkPath(peer));
    }
  }

  #restartIce(peer) {
    const state = peer.pc.iceConnectionState;
    if (this.peers.get(peer.userId) !== peer || !this.#callId || !peer.isOfferer) return;
    if ((state !== 'failed' && state !== 'disconnected') || peer.restarts >= ICE_RESTART_LIMIT) return;
    peer.restarts += 1;
    this.#log(`ICE ${state} with ${peer.userId}: restart ${peer.restarts}/${ICE_RESTART_LIMIT}`);
    peer.pc.restartIce?.();
    this.#guard('ICE restart', () => this.#renegotiate(peer, { iceRestart: true }));
  }

  // --- Mesh or SFU --------------------------------------------------------------------------

  /** The connections media goes over: the SFU's in a call on it (or maybe on it: the mode
   * not known yet), else one per peer. */
  #links() {
    const links = this.#mode === 'sfu' ? [] : [...this.peers.values()];
    if (this.#sfu) links.push(this.#sfu);
    return links;
  }

  #setMode(mode) {
    if (mode && this.#mode === mode) return;
    this.#mode = mode;
    const held = this.#held.splice(0);
    if (!mode) {
      this.#modeResolve(); // whoever waited on the last call's: it is over
      this.#modeKnown = new Promise((resolve) => (this.#modeResolve = resolve));
      return;
    }
    this.#log('the call is', mode === 'sfu' ? 'on the SFU' : 'a mesh');
    this.#modeResolve();
    if (mode === 'mesh') {
      this.#sfuClose();
      for (const { event, data, run } of held) this.#guard(event, () => run(data));
    }
  }

  /** A call became current: offers to the SFU, which says whether the call is on it. */
  #findMode() {
    this.#sfuClose();
    this.#sfuRejoins = 0;
    this.#setMode(null);
    this.#sfu = this.#sfuLink();
    this.#guard('call:sfu-offer', () => this.#sfuJoin(this.#sfu));
  }

  // --- The SFU ------------------------------------------------------------------------------

  /** A new connection with the SFU, sending the local tracks (the camera in simulcast). */
  #sfuLink() {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.#options.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
    });
    const link = {
      pc,
      callId: this.#callId,
      /** The offer sent and not applied yet (the first, until the SFU takes it). */
      unapplied: null,
      tries: 0,
      retryTimer: null,
      ackTimer: null,
      negotiation: Promise.resolve(),
      /** mid → `{userId, kind}` of the SFU's m-lines, from its offers (in the order offered). */
      tracks: new Map(),
      /** Our senders → their kind. */
      own: new Map(),
      counters: null,
      pathKey: null,
      path: null,
      /** The screen's own transceiver, once shared (kept, inactive, after a stop). */
      screenTransceiver: null,
    };
    const stream = this.localStream;
    const streams = stream ? [stream] : [];
    const audio = stream?.getAudioTracks()[0];
    const video = stream?.getVideoTracks()[0];
    if (audio || !video) {
      const { sender } = pc.addTransceiver(audio ?? 'audio', { direction: 'sendonly', streams });
      link.own.set(sender, 'audio');
    }
    if (video) {
      const init = { direction: 'sendonly', streams, sendEncodings: SIMULCAST.map((e) => ({ ...e })) };
      const { sender } = pc.addTransceiver(video, init);
      link.own.set(sender, 'video');
    }
    const screen = this.screenStream?.getVideoTracks()[0];
    if (screen) link.screenTransceiver = pc.addTransceiver(screen, { direction: 'sendonly', streams: [this.screenStream] });
    pc.addEventListener('track', (event) => this.#sfuTrack(link, event));
    pc.addEventListener('connectionstatechange', () => this.#sfuConnectionState(link));
    return link;
  }

  /** Sends the SFU the link's offer: joins the room, or learns the call is not on it. */
  async #sfuJoin(link) {
    if (this.#sfu !== link) return;
    link.tries += 1;
    const offer = await link.pc.createOffer();
    if (this.#sfu !== link) return;
    link.unapplied = offer;
    let acked = false;
    const answered = (res) => {
      if (acked) return; // the ack after its timeout
      acked = true;
      clearTimeout(link.ackTimer);
      this.#guard('call:sfu-offer', () => this.#sfuJoinAcked(link, res));
    };
    link.ackTimer = setTimeout(() => answered({ error: { code: 'timeout', message: 'no answer' } }), SFU_JOIN.ackMs);
    this.#emit('call:sfu-offer', { callId: link.callId, sdp: offer.sdp }, answered);
  }

  #sfuJoinAcked(link, res) {
    if (this.#sfu !== link || link.pc.signalingState === 'closed') return;
    const code = res?.error?.code;
    if (!res?.error) {
      this.#setMode('sfu');
      return this.#negotiate(link, () => this.#sfuApply(link));
    }
    if (code === 'not_on_sfu') return this.#setMode('mesh');
    if (code === 'not_in_sfu_room') this.#setMode('sfu');
    else this.#logRefusal('call:sfu-offer', res);
    // Refused otherwise (the socket's rate, a lost connection) with the mode not known yet:
    // tried again a few times, then taken for a mesh, as calls were before the SFU.
    const tries = this.#mode ? SFU_JOIN.tries : SFU_JOIN.probeTries;
    if (code === 'invalid_field' || link.tries >= tries) {
      if (!this.#mode) this.#setMode('mesh');
      else this.#fail('call:sfu-offer', new Error(`the SFU refused the offer: ${code} ${res.error.message ?? ''}`));
      return;
    }
    const wait = Math.min(SFU_JOIN.maxMs, SFU_JOIN.firstMs * 2 ** (link.tries - 1));
    link.retryTimer = setTimeout(() => this.#guard('call:sfu-offer', () => this.#sfuJoin(link)), wait);
  }

  /** Applies the offer the SFU took (its answer and the ack may come in either order). */
  async #sfuApply(link) {
    const offer = link.unapplied;
    link.unapplied = null;
    if (offer && link.pc.signalingState === 'stable') await link.pc.setLocalDescription(offer);
  }

  #sfuAnswered({ sdp }) {
    const link = this.#sfu;
    if (!link || typeof sdp !== 'string') return;
    return this.#negotiate(link, async () => {
      await this.#sfuApply(link);
      if (link.pc.signalingState !== 'have-local-offer') return this.#log('unexpected answer from the SFU');
      await link.pc.setRemoteDescription({ type: 'answer', sdp });
    });
  }

  /** The SFU's offer: others' tracks added or stopped. */
  #sfuOffered({ sdp, tracks }) {
    const link = this.#sfu;
    if (!link || typeof sdp !== 'string') return;
    return this.#negotiate(link, async () => {
      const { pc } = link;
      if (link.unapplied || pc.signalingState !== 'stable') {
        return this.#log('an offer of the SFU crossed ours: ours goes on');
      }
      const owners = Array.isArray(tracks) ? tracks.filter((t) => t?.mid && t.userId) : [];
      for (const t of owners) link.tracks.set(String(t.mid), { userId: String(t.userId), kind: t.kind });
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      const answer = { callId: link.callId, sdp: pc.localDescription.sdp };
      this.#emit('call:sfu-answer', answer, (res) => this.#logRefusal('call:sfu-answer', res));
      // Whoever has no m-line left is gone; a screen whose m-line is not listed stopped.
      const present = new Set(owners.map((t) => String(t.userId)));
      const mids = new Set(owners.map((t) => String(t.mid)));
      for (const [userId, peer] of [...this.peers]) {
        if (!present.has(userId)) this.#sfuRemoveRemote(userId);
        else if (peer.screenMid != null && !mids.has(peer.screenMid)) this.#sfuRemoveScreen(peer);
      }
    });
  }

  /** A track of the SFU's: the stream of its publisher (the m-line's owner, its stream id),
   * or, for a publisher's second video m-line, its screen. */
  #sfuTrack(link, event) {
    if (this.#sfu !== link) return;
    const mid = event.transceiver?.mid;
    const userId = (mid != null && link.tracks.get(mid)?.userId) || event.streams[0]?.id;
    if (!userId || userId === '-') return this.#log('a track of the SFU with no owner, mid', mid);
    let peer = this.peers.get(userId);
    if (!peer) {
      peer = { userId, pc: link.pc, stream: null, sfu: true, screen: null, screenMid: null };
      this.peers.set(userId, peer);
    }
    if (event.track.kind === 'video' && this.#sfuIsScreen(link, mid, userId)) {
      // Not in the camera's stream (the SFU names both m-lines' streams after the user).
      for (const s of event.streams) s.removeTrack(event.track);
      peer.screenMid = mid;
      peer.screen = new MediaStream([event.track]);
      return this.#notify('onRemoteScreen', userId, peer.screen);
    }
    const stream = event.streams[0] ?? peer.stream ?? new MediaStream();
    if (!event.streams[0] && !stream.getTracks().includes(event.track)) stream.addTrack(event.track);
    if (peer.stream === stream) return;
    peer.stream = stream;
    this.#notify('onRemoteStream', userId, stream);
    if (link.pc.connectionState === 'connected') {
      this.#notify('onConnectionStateChange', userId, 'connected');
      if (link.path) this.#notify('onPathChange', userId, link.path);
    }
  }

  #sfuConnectionState(link) {
    if (this.#sfu !== link) return;
    const state = link.pc.connectionState;
    for (const userId of this.peers.keys()) this.#notify('onConnectionStateChange', userId, state);
    if (state === 'connected') {
      this.#sfuRejoins = 0;
      this.#startStats();
      this.#guard('path', () => this.#checkPath(link));
    }
  }

  /** The SFU dropped this side's connection: a new one, a few times. Not when another device
   * of the user took the call's media over (`reason: 'replaced'`): offering again would take it
   * back, and the two would take it from each other in turn. */
  #sfuClosed(data) {
    this.#sfuClose();
    if (data?.reason === 'replaced') {
      this.#log('the call\'s media moved to another device of ours');
      return;
    }
    if (this.#sfuRejoins >= SFU_JOIN.rejoins) {
      return this.#fail('call:sfu-closed', new Error(`the SFU connection failed ${this.#sfuRejoins + 1} times`));
    }
    this.#sfuRejoins += 1;
    this.#log(`the SFU closed our connection: a new one (${this.#sfuRejoins}/${SFU_JOIN.rejoins})`);
    this.#sfu = this.#sfuLink();
    this.#guard('call:sfu-offer', () => this.#sfuJoin(this.#sfu));
  }

  /** Closes the connection with the SFU and tells the page everyone's stream is gone. */
  #sfuClose() {
    const link = this.#sfu;
    if (!link) return;
    this.#sfu = null;
    clearTimeout(link.retryTimer);
    clearTimeout(link.ackTimer);
    link.pc.close();
    for (const [userId, peer] of [...this.peers]) if (peer.sfu) this.#sfuRemoveRemote(userId);
    if (this.#mode === 'sfu') {
      clearInterval(this.#statsTimer);
      this.#statsTimer = null;
    }
  }

  #sfuRemoveRemote(userId) {
    const peer = this.peers.get(userId);
    if (!peer?.sfu) return;
    this.#sfuRemoveScreen(peer);
    this.peers.delete(userId);
    if (peer.stream) this.#notify('onRemoteStreamRemoved', userId);
  }

  /** Whether the SFU's video m-line `mid` of `userId` is a screen: any but the first video
   * m-line offered of theirs (their camera, published before any screen; in an audio call
   * the screen is their one video and shows as theirs). */
  #sfuIsScreen(link, mid, userId) {
    for (const [m, t] of link.tracks) {
      if (t.userId !== userId || t.kind !== 'video') continue;
      if (m === mid) return false;
      const first = link.pc.getTransceivers().find((x) => x.mid === m);
      if (first && first.currentDirection !== 'inactive' && !first.stopped) return true;
    }
    return false;
  }

  #sfuRemoveScreen(peer) {
    if (!peer.screen) return;
    peer.screen = null;
    peer.screenMid = null;
    this.#notify('onRemoteScreen', peer.userId, null);
  }

  /** Sends the SFU a new offer of the link's (a screen added or stopped), once the
   * negotiation in course is done. */
  #sfuRenegotiate(link) {
    return this.#negotiate(link, async () => {
      if (this.#sfu !== link || link.pc.signalingState === 'closed') return;
      const offer = await link.pc.createOffer();
      link.unapplied = offer;
      await new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ error: { code: 'timeout', message: 'no answer' } }), SFU_JOIN.ackMs);
        this.#emit('call:sfu-offer', { callId: link.callId, sdp: offer.sdp }, (res) => {
          clearTimeout(timer);
          resolve(res);
        });
      }).then((res) => {
        if (!res?.error) return this.#sfuApply(link);
        link.unapplied = null;
        throw new Error(`the SFU refused the offer: ${res.error.code} ${res.error.message ?? ''}`);
      });
    });
  }

  // --- Screen sharing -----------------------------------------------------------------------

  /** The video transceiver of `pc` (the camera's, or one negotiated to receive video). */
  #videoTransceiver(pc) {
    return pc
      .getTransceivers()
      .find((t) => !t.stopped && t.direction !== 'stopped' && (t.sender.track?.kind ?? t.receiver.track.kind) === 'video');
  }

  async #sendScreen(peer, track) {
    if (peer === this.#sfu) {
      // Its own m-line (the camera goes on beside it), made again sendonly after a stop.
      const t = peer.screenTransceiver;
      if (t && !t.stopped) {
        await t.sender.replaceTrack(track);
        t.direction = 'sendonly';
      } else {
        peer.screenTransceiver = peer.pc.addTransceiver(track, { direction: 'sendonly', streams: [this.screenStream] });
      }
      return this.#sfuRenegotiate(peer);
    }
    const transceiver = this.#videoTransceiver(peer.pc);
    if (!transceiver) {
      peer.screenSender = peer.pc.addTrack(track, this.localStream ?? this.screenStream);
      peer.screenAdded = true;
      return this.#renegotiate(peer);
    }
    await transceiver.sender.replaceTrack(track);
    peer.screenSender = transceiver.sender;
    if (!transceiver.direction.startsWith('send')) {
      transceiver.direction = transceiver.direction === 'inactive' ? 'sendonly' : 'sendrecv';
      await this.#renegotiate(peer);
    }
  }

  async #unsendScreen(peer, camera) {
    if (peer === this.#sfu) {
      const t = peer.screenTransceiver;
      if (!t || t.stopped || peer.pc.signalingState === 'closed') return;
      await t.sender.replaceTrack(null);
      t.direction = 'inactive';
      return this.#sfuRenegotiate(peer);
    }
    const sender = peer.screenSender;
    peer.screenSender = null;
    if (!sender || peer.pc.signalingState === 'closed') return;
    if (peer.screenAdded) {
      peer.screenAdded = false;
      peer.pc.removeTrack(sender);
      return this.#renegotiate(peer);
    }
    await sender.replaceTrack(camera);
  }

  // --- Connection reports -------------------------------------------------------------------

  #startStats() {
    const every = this.#options.statsIntervalMs;
    if (this.#statsTimer || !(every > 0)) return;
    const period = Math.max(every, MIN_STATS_INTERVAL_MS);
    this.#statsTimer = setInterval(() => this.#guard('stats', () => this.#reportStats()), period);
  }

  /** One `call:stats` for every connected peer. */
  async #reportStats() {
    const connected = this.#links().filter((peer) => peer.pc.connectionState === 'connected');
    if (this.#statsBusy || !this.#callId || connected.length === 0) return;
    this.#statsBusy = true;
    try {
      const samples = await Promise.all(connected.map((peer) => this.#sample(peer)));
      const figures = aggregate(samples);
      const callId = this.#callId;
      if (!figures || !callId) return;
      this.#emit('call:stats', { callId, ...figures }, (res) => this.#logRefusal('call:stats', res));
    } finally {
      this.#statsBusy = false;
    }
  }

  /** A peer's figures: `{path, rtt, jitter, packetLoss, bitrate}` (any may be missing). */
  async #sample(peer) {
    const report = await peer.pc.getStats();
    const path = readPath(report);
    this.#notePath(peer, path);
    const { jitter, counters } = readInbound(report);
    const sample = { path, rtt: path?.rtt, jitter, ...rates(peer.counters, counters) };
    peer.counters = counters;
    return sample;
  }

  async #checkPath(peer) {
    this.#notePath(peer, readPath(await peer.pc.getStats()));
  }

  /** Calls `onPathChange` when the path to `peer` (or the SFU: for everyone's) is new or
   * differs from the last one. */
  #notePath(peer, path) {
    const isSfu = peer === this.#sfu;
    if (!path || (!isSfu && this.peers.get(peer.userId) !== peer)) return;
    const key = [path.relayed, path.localType, path.remoteType, path.relayProtocol].join('|');
    if (isSfu) peer.path = path;
    if (key === peer.pathKey) return;
    peer.pathKey = key;
    for (const userId of isSfu ? this.peers.keys() : [peer.userId]) this.#notify('onPathChange', userId, path);
  }

  // --- Plumbing -----------------------------------------------------------------------------

  /**
   * Tells the call a media change. Refused for the socket's rate (`rate_limited`), it is sent
   * again a second later, up to {@link MEDIA_STATE_RETRIES} times, for the fields no newer
   * change set meanwhile: the others must not be left seeing a mute that is over.
   */
  #sendMediaState(fields, retries = MEDIA_STATE_RETRIES) {
    const callId = this.#callId;
    if (!callId) return;
    const seq = ++this.#mediaSeq;
    for (const field of Object.keys(fields)) this.#mediaLatest[field] = seq;
    this.#emit('call:media', { callId, ...fields }, (res) => {
      this.#logRefusal('call:media', res);
      if (res?.error?.code !== 'rate_limited' || retries === 0) return;
      setTimeout(() => {
        const still = Object.entries(fields).filter(([field]) => this.#mediaLatest[field] === seq);
        if (this.#callId === callId && still.length) this.#sendMediaState(Object.fromEntries(still), retries - 1);
      }, MEDIA_STATE_RETRY_MS);
    });
  }

  /** An ack holding `{error: {code, message}}` (socket.io and SignalingSocket alike). */
  #logRefusal(event, response) {
    const error = response?.error;
    if (error) this.#log(`${event} refused: ${error.code ?? ''} ${error.message ?? error}`);
  }

  #emit(event, data, ack) {
    try {
      if (ack) this.#socket.emit(event, data, ack);
      else this.#socket.emit(event, data);
    } catch (err) {
      this.#fail(event, err);
    }
  }

  /** Calls the page's callback `name`; its errors are reported, never thrown here. */
  #notify(name, ...args) {
    try {
      this[name](...args);
    } catch (err) {
      if (name === 'onError') this.#log('onError threw:', err);
      else this.#fail(name, err);
    }
  }

  #fail(context, err) {
    this.#log(`${context}:`, err);
    this.#notify('onError', err instanceof Error ? err : new Error(String(err)));
  }

  #log(...args) {
    try {
      this.#options.log(...args);
    } catch {
      // A broken logger must not break the call.
    }
  }
}

export default WebRTCManager;
