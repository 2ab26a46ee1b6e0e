// The demo page: sign in as a name, see who is online in the demo conversation, call them
// through the daemon's REST API, signal over /ws and carry the media with WebRTCManager through
// the daemon's TURN relay (a group call: through its SFU, which WebRTCManager finds by itself).
// Each tab is its own session (sessionStorage), so two tabs are two people.
//
// For tests and the curious, `window.switchboardDemo` exposes the session, the current call
// and its WebRTCManager.

import { SignalingSocket } from './signaling.js';
import WebRTCManager from './webrtc.js';

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'switchboard.demo';
const POLL_MS = 2000;

/** What this tab knows: the session, the people, the call. */
const state = {
  session: null, // {token, user: {id, name}, conversationId, expiresAt}
  socket: null,
  people: [],
  selected: new Set(),
  pollTimer: null,
  incoming: null, // the call:incoming payload being rung
  call: null, // {id, type, names: Map userId → name, manager, media: {audio, video, screen}}
};
window.switchboardDemo = state;

// --- The API ---------------------------------------------------------------------------------

/** A JSON request to the daemon; throws an Error with the API's message on a non-2xx. */
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (state.session) headers.Authorization = `Bearer ${state.session.token}`;
  // This device: its answer or rejection is not announced back to it as done elsewhere.
  if (state.socket?.id) headers['X-Socket-Id'] = state.socket.id;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    // The API's errors are `{"error": {"code", "message"}}`.
    const err = new Error(data.error?.message || `${method} ${path}: HTTP ${res.status}`);
    err.status = res.status;
    err.code = data.error?.code;
    throw err;
  }
  return data;
}

function notice(text) {
  $('notice').textContent = text || '';
  $('notice').hidden = !text;
}

function show(...ids) {
  for (const id of ['sign-in', 'lobby', 'incoming', 'call']) $(id).hidden = !ids.includes(id);
}

// --- Signing in ------------------------------------------------------------------------------

async function signIn(name) {
  try {
    state.session = await api('POST', '/api/demo/sign-in', { name });
  } catch (e) {
    notice(e.code === 'demo_disabled'
      ? 'This daemon runs with dev = false: the demo sign-in is off. Users sign in through your chat application.'
      : `Cannot sign in: ${e.message}`);
    return;
  }
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  start();
}

/**
 * The session's token, or a fresh one when it expires within a minute: the demo signs in
 * again (the same name is the same user).
 */
async function freshToken() {
  const left = Date.parse(state.session.expiresAt) - Date.now();
  if (!(left < 60_000)) return state.session.token;
  state.session = await api('POST', '/api/demo/sign-in', { name: state.session.user.name });
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  return state.session.token;
}

function signOut() {
  endCallLocally();
  clearInterval(state.pollTimer);
  state.socket?.close();
  state.socket = null;
  state.session = null;
  sessionStorage.removeItem(SESSION_KEY);
  $('me').hidden = true;
  show('sign-in');
}

/** Signed in: connect the socket, poll the people, listen for calls. */
function start() {
  notice('');
  $('me-name').textContent = state.session.user.name;
  $('me').hidden = false;
  show('lobby');
  // A provider, not the token: the socket refreshes it before it expires (a call outlives it).
  const socket = new SignalingSocket(undefined, freshToken, {
    onTokenError: (e) => notice(`Cannot refresh the session: ${e.message}`),
  });
  state.socket = socket;
  socket.on('connect', () => { $('link').classList.add('on'); refreshPeople(); });
  socket.on('disconnect', () => $('link').classList.remove('on'));
  socket.on('connect_error', () => $('link').classList.remove('on'));
  socket.on('call:incoming', onIncoming);
  // Another device of this user answered or declined: stop ringing. (Ignored for a call this
  // tab answered itself: it is then no longer `state.incoming`.)
  socket.on('call:answered-elsewhere', (d) => {
    if (state.incoming?.callId === d.callId) dismissIncoming('Answered on another device.');
  });
  socket.on('call:rejected-elsewhere', (d) => {
    if (state.incoming?.callId === d.callId) dismissIncoming('Declined on another device.');
  });
  socket.on('call:ended', onEnded);
  socket.on('call:participant-joined', (d) => {
    if (d.callId !== state.call?.id) return;
    state.call.names.set(d.userId, d.userName || 'someone');
    tile(d.userId);
    // The call is active: the caller's "Calling …" becomes what the others read.
    $('call-title').textContent = withTitle(state.call.names);
    status(`${d.userName || 'Someone'} joined; connecting…`);
  });
  socket.on('call:participant-left', (d) => {
    if (d.callId !== state.call?.id) return;
    removeTile(d.userId);
    status(`${state.call.names.get(d.userId) || 'Someone'} left.`);
  });
  socket.on('error', (e) => console.warn('signaling refused', e));
  refreshPeople();
  state.pollTimer = setInterval(refreshPeople, POLL_MS);
}

// --- The people ------------------------------------------------------------------------------

async function refreshPeople() {
  if (!state.session) return;
  try {
    const { users } = await api('GET', '/api/demo/online');
    state.people = users.filter((u) => u.id !== state.session.user.id);
  } catch (e) {
    if (e.status === 401 || e.status === 403) signOut();
    return;
  }
  renderPeople();
}

function renderPeople() {
  const list = $('people');
  list.replaceChildren(...state.people.map((p) => {
    const li = document.createElement('li');
    li.className = p.online ? 'online' : 'offline';
    li.dataset.userId = p.id;
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.disabled = !p.online;
    box.checked = p.online && state.selected.has(p.id);
    box.setAttribute('aria-label', `select ${p.name}`);
    box.addEventListener('change', () => {
      if (box.checked) state.selected.add(p.id); else state.selected.delete(p.id);
      renderActions();
    });
    const dot = document.createElement('span');
    dot.className = p.online ? 'dot on' : 'dot';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = p.name || p.id;
    li.append(box, dot, name);
    return li;
  }));
  for (const id of [...state.selected]) {
    if (!state.people.some((p) => p.id === id && p.online)) state.selected.delete(id);
  }
  $('nobody').hidden = state.people.length > 0;
  renderActions();
}

function renderActions() {
  const none = state.selected.size === 0 || state.call !== null;
  $('call-audio').disabled = none;
  $('call-video').disabled = none;
}

// --- Calls -----------------------------------------------------------------------------------

/** A WebRTCManager for a call, with this page's network choices and fresh credentials. */
async function newManager(callId, type, isInitiator) {
  const transport = $('transport').value;
  const manager = new WebRTCManager(state.socket, {
    iceTransportPolicy: $('relay-only').checked ? 'relay' : 'all',
    turnTransports: transport ? [transport] : undefined,
    log: (...args) => console.debug('[webrtc]', ...args),
  });
  const { credentials } = await api('GET', '/api/calls/turn-credentials');
  await manager.setTurnCredentials(credentials);
  const media = { audio: true, video: type === 'video', screen: false };
  const stream = await manager.initializeLocalStream(true, media.video);
  $('local-video').srcObject = stream;
  manager.currentCallId = callId;
  manager.isInitiator = isInitiator;
  // In a call on the SFU someone's screen share is a stream of its own: their tile shows it
  // (with their microphone) while they share, then their camera again.
  const cameras = new Map();
  const screens = new Map();
  const show = (userId) => {
    const camera = cameras.get(userId) ?? null;
    const screen = screens.get(userId);
    tile(userId).querySelector('video').srcObject = screen
      ? new MediaStream([...screen.getVideoTracks(), ...(camera?.getAudioTracks() ?? [])])
      : camera;
  };
  manager.onRemoteStream = (userId, s) => { cameras.set(userId, s); show(userId); };
  manager.onRemoteScreen = (userId, s) => {
    if (s) screens.set(userId, s);
    else screens.delete(userId);
    if (cameras.has(userId) || s) show(userId);
  };
  manager.onRemoteStreamRemoved = (userId) => {
    cameras.delete(userId);
    screens.delete(userId);
    removeTile(userId);
  };
  manager.onConnectionStateChange = (userId, s) => {
    if (s === 'connected') {
      status('Connected.');
      if (state.call) $('call-title').textContent = withTitle(state.call.names);
    }
    else if (s === 'failed') status('The connection failed; retrying…');
    badge(userId, 'state', s === 'connected' ? null : s);
  };
  manager.onPathChange = (userId, path) => {
    const where = path.relayed
      ? `relayed${path.relayProtocol ? ` · ${path.relayProtocol}` : ''}`
      : `direct · ${path.localType || '?'}`;
    // A group call's media goes through the SFU: the path shown is this page's to it.
    const via = manager.mode === 'sfu' ? 'SFU · ' : '';
    const rtt = Number.isFinite(path.rtt) ? ` · ${Math.round(path.rtt)} ms` : '';
    tile(userId).querySelector('.path').textContent = via + where + rtt;
  };
  manager.onQuality = (userId, q) => badge(userId, 'quality', q.quality, q.quality);
  // Who speaks, in a group call on the SFU: their tile is outlined (this page's own, too).
  manager.onActiveSpeaker = (userId) => {
    for (const t of document.querySelectorAll('.tile.speaking')) t.classList.remove('speaking');
    const own = userId === state.session?.user.id;
    const t = own
      ? document.querySelector('.tile.local')
      : document.querySelector(`.tile.remote[data-user-id="${CSS.escape(userId)}"]`);
    t?.classList.add('speaking');
  };
  manager.onMediaStateChanged = (userId, m) => {
    badge(userId, 'audio', m.audioEnabled === false ? 'muted' : null, 'off');
    badge(userId, 'video', m.videoEnabled === false ? 'camera off' : null, 'off');
    badge(userId, 'screen', m.screenSharing ? 'sharing' : null);
  };
  manager.onLocalStreamChanged = (s) => { $('local-video').srcObject = s; };
  manager.onError = (e) => console.warn('[webrtc]', e);
  return { manager, media };
}

async function call(type) {
  const ids = [...state.selected];
  if (ids.length === 0 || state.call) return;
  const names = new Map(ids.map((id) => [id, state.people.find((p) => p.id === id)?.name]));
  state.call = { id: null, type, names, manager: null, media: null };
  enterCall(`Calling ${[...names.values()].join(', ')}…`);
  try {
    // The camera first: once the call exists, an answer (and the offer it asks for) can come
    // at any moment.
    Object.assign(state.call, await newManager(null, type, true));
    const res = await api('POST', '/api/calls/initiate', {
      conversationId: state.session.conversationId,
      type,
      participantIds: ids,
    });
    if (!state.call) { // hung up meanwhile
      await api('POST', `/api/calls/${res.callId}/end`).catch(() => {});
      return;
    }
    state.call.id = res.callId;
    state.call.manager.currentCallId = res.callId;
  } catch (e) {
    notice(`Cannot call: ${e.message}`);
    hangUp();
  }
}

function onIncoming(data) {
  if (state.call || state.incoming) return; // busy: the ring times out as missed
  state.incoming = data;
  const caller = data.participants.find((p) => p.userId === data.initiatedBy);
  $('incoming-from').textContent = caller?.userName || 'Someone';
  $('incoming-kind').textContent = data.type === 'video' ? '(video)' : '(audio)';
  show('lobby', 'incoming');
}

function dismissIncoming(text) {
  state.incoming = null;
  if (!state.call) show('lobby');
  if (text) notice(text);
}

async function answer() {
  const data = state.incoming;
  if (!data) return;
  state.incoming = null;
  const names = new Map(data.participants.map((p) => [p.userId, p.userName]));
  names.delete(state.session.user.id);
  state.call = { id: data.callId, type: data.type, names, manager: null, media: null };
  enterCall(withTitle(names));
  try {
    // Listening before answering: the offers follow the answer at once.
    Object.assign(state.call, await newManager(data.callId, data.type, false));
    await api('POST', `/api/calls/${data.callId}/answer`);
    status('Answered; connecting…');
  } catch (e) {
    notice(`Cannot answer: ${e.message}`);
    endCallLocally();
  }
}

async function decline() {
  const data = state.incoming;
  dismissIncoming();
  if (data) await api('POST', `/api/calls/${data.callId}/reject`).catch(() => {});
}

async function hangUp() {
  const id = state.call?.id;
  endCallLocally();
  if (id) await api('POST', `/api/calls/${id}/end`).catch(() => {});
}

function onEnded(data) {
  if (state.incoming?.callId === data.callId) {
    dismissIncoming('The caller hung up.');
    return;
  }
  if (data.callId !== state.call?.id) return;
  endCallLocally();
  notice(`Call ended (${data.reason}).`);
}

/** "Call with Bob, Carol": the title of a call once it is active. */
function withTitle(names) {
  return `Call with ${[...names.values()].join(', ')}`;
}

function enterCall(title) {
  notice('');
  $('call-title').textContent = title;
  status('');
  for (const [id, pressed] of [['mute', false], ['camera', false], ['share', false]]) {
    $(id).setAttribute('aria-pressed', String(pressed));
  }
  $('camera').disabled = state.call.type !== 'video';
  $('share').disabled = !navigator.mediaDevices?.getDisplayMedia;
  show('call');
  renderActions();
}

function endCallLocally() {
  state.call?.manager?.cleanup();
  state.call = null;
  $('local-video').srcObject = null;
  for (const t of document.querySelectorAll('.tile.remote')) t.remove();
  if (state.session) show('lobby');
  renderActions();
}

function status(text) {
  $('call-status').textContent = text;
}

// --- Tiles and badges -------------------------------------------------------------------------

/** The remote tile of `userId`, made on first use. */
function tile(userId) {
  let t = document.querySelector(`.tile.remote[data-user-id="${CSS.escape(userId)}"]`);
  if (!t) {
    t = $('tile').content.firstElementChild.cloneNode(true);
    t.dataset.userId = userId;
    t.querySelector('.name').textContent = state.call?.names.get(userId) || 'someone';
    $('videos').append(t);
  }
  return t;
}

function removeTile(userId) {
  document.querySelector(`.tile.remote[data-user-id="${CSS.escape(userId)}"]`)?.remove();
}

/** Sets (or, with null text, removes) the badge `kind` on `userId`'s tile. */
function badge(userId, kind, text, cls = '') {
  const badges = tile(userId).querySelector('.badges');
  let b = badges.querySelector(`[data-kind="${kind}"]`);
  if (!text) { b?.remove(); return; }
  if (!b) {
    b = document.createElement('span');
    b.dataset.kind = kind;
    badges.append(b);
  }
  b.className = `badge ${cls}`;
  b.textContent = text;
}

function localBadges() {
  const m = state.call.media;
  const parts = [];
  if (!m.audio) parts.push('muted');
  if (state.call.type === 'video' && !m.video) parts.push('camera off');
  if (m.screen) parts.push('sharing');
  $('local-badges').textContent = parts.join(' · ');
}

// --- Controls --------------------------------------------------------------------------------

function toggle(kind) {
  const c = state.call;
  if (!c?.manager) return;
  if (kind === 'audio') c.media.audio = c.manager.toggleAudio(!c.media.audio) ?? !c.media.audio;
  else c.media.video = c.manager.toggleVideo(!c.media.video) ?? !c.media.video;
  $('mute').setAttribute('aria-pressed', String(!c.media.audio));
  $('mute').textContent = c.media.audio ? 'Mute' : 'Unmute';
  $('camera').setAttribute('aria-pressed', String(!c.media.video));
  $('camera').textContent = c.media.video ? 'Camera off' : 'Camera on';
  localBadges();
}

async function toggleShare() {
  const c = state.call;
  if (!c?.manager) return;
  try {
    if (c.media.screen) c.manager.stopScreenShare();
    else await c.manager.startScreenShare();
    c.media.screen = !c.media.screen;
  } catch (e) {
    notice(`Cannot share the screen: ${e.message}`);
  }
  $('share').setAttribute('aria-pressed', String(c.media.screen));
  $('share').textContent = c.media.screen ? 'Stop sharing' : 'Share screen';
  localBadges();
}

// --- Wiring ----------------------------------------------------------------------------------

$('sign-in-form').addEventListener('submit', (e) => {
  e.preventDefault();
  signIn($('name').value);
});
$('sign-out').addEventListener('click', signOut);
$('call-audio').addEventListener('click', () => call('audio'));
$('call-video').addEventListener('click', () => call('video'));
$('answer').addEventListener('click', answer);
$('decline').addEventListener('click', decline);
$('hang-up').addEventListener('click', hangUp);
$('mute').addEventListener('click', () => toggle('audio'));
$('camera').addEventListener('click', () => toggle('video'));
$('share').addEventListener('click', toggleShare);

const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
if (saved && Date.parse(saved.expiresAt) > Date.now() + 60_000) {
  state.session = saved;
  start();
} else {
  show('sign-in');
}
