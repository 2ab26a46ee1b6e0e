// The chat app's page. Chat goes to this app's backend (its own origin); calls go straight to
// switchboard (another origin): REST with the user's token, Socket.IO with the stock client,
// and WebRTCManager imported from switchboard, used as the spec's "Frontend Integration" shows.
//
// `?relay` in the address forces every packet through switchboard's TURN relay.
// For tests and the curious, `window.chatApp` holds the session, the call and the events seen.

import { io } from '/vendor/socket.io.esm.min.js';

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;

// Where switchboard is comes from the backend's configuration.
const { switchboardUrl: SWITCHBOARD_URL } = await (await fetch('/api/config')).json();
// The spec's `import WebRTCManager from './utils/webrtc'`, served by switchboard itself.
const { default: WebRTCManager } = await import(`${SWITCHBOARD_URL}/webrtc.js`);
const RELAY_ONLY = new URLSearchParams(location.search).has('relay');

const app = {
  session: null, // {token, expiresAt, user: {id, name}, conversationId}
  socket: null,
  members: [],
  incoming: null, // the call:incoming being rung
  call: null, // {id, withName, webrtcManager}
  events: [], // [event, data] of the calls' socket events, in order
};
window.chatApp = app;

// --- The two backends -------------------------------------------------------------------------

async function request(url, method, body) {
  const headers = { Authorization: `Bearer ${app.session?.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error?.message ?? `${method} ${url}: HTTP ${res.status}`);
  return data;
}

/** This app's own API. */
const backend = (method, path, body) => request(path, method, body);
/** Switchboard's API, on its origin (CORS: `http.allowed_origins` lists this page's). */
const switchboard = (method, path, body) => request(SWITCHBOARD_URL + path, method, body);

function notice(text) {
  $('notice').textContent = text ?? '';
  $('notice').hidden = !text;
}

// --- Signing in -------------------------------------------------------------------------------

async function signIn(name) {
  app.session = await backend('POST', '/api/sign-in', { name });
  // The token lives 15 minutes: a new one before it ends, for the API and socket reconnects.
  const renewIn = Date.parse(app.session.expiresAt) - Date.now() - 60_000;
  setTimeout(() => signIn(name).catch((e) => notice(`Signed out: ${e.message}`)), renewIn);
  if (app.socket) {
    app.socket.auth.token = app.session.token;
    // The live socket too: switchboard closes a socket at its token's `exp` (auth:refresh).
    app.socket.emit('auth:refresh', { token: app.session.token });
    return;
  }
  $('sign-in').hidden = true;
  $('me-name').textContent = app.session.user.name;
  $('me').hidden = false;
  $('chat').hidden = false;
  connect();
  refresh();
  setInterval(refresh, POLL_MS);
}

function connect() {
  const socket = io(SWITCHBOARD_URL, { auth: { token: app.session.token } });
  app.socket = socket;
  const seen = (event) => socket.on(event, (data) => app.events.push([event, data]));
  ['call:incoming', 'call:participant-joined', 'call:participant-left', 'call:ended'].forEach(seen);
  socket.on('call:incoming', onIncoming);
  // Answered or declined on another device of mine: stop ringing here.
  for (const elsewhere of ['call:answered-elsewhere', 'call:rejected-elsewhere']) {
    socket.on(elsewhere, ({ callId }) => callId === app.incoming?.callId && ring(null));
  }
  socket.on('call:ended', onEnded);
  socket.on('call:participant-joined', ({ callId }) => {
    if (callId === app.call?.id) $('call-title').textContent = `Call with ${app.call.withName}`;
  });
  socket.on('error', (err) => console.warn('switchboard refused a message:', err));
  socket.on('connect_error', (err) => notice(`Calls unavailable: ${err.message}`));
  socket.on('connect', () => notice(''));
}

// --- The conversation -------------------------------------------------------------------------

async function refresh() {
  const id = app.session.conversationId;
  const [{ conversation }, { messages }] = await Promise.all([
    backend('GET', `/api/conversations/${id}`),
    backend('GET', `/api/conversations/${id}/messages`),
  ]).catch(() => [{ conversation: { members: app.members } }, { messages: null }]);
  app.members = conversation.members.filter((m) => m.id !== app.session.user.id);
  $('members').replaceChildren(...app.members.map(memberRow));
  if (messages) $('messages').replaceChildren(...messages.map(messageRow));
}

function memberRow(member) {
  const li = document.createElement('li');
  li.dataset.userId = member.id;
  const name = Object.assign(document.createElement('span'), { className: 'name', textContent: member.name });
  const buttons = ['audio', 'video'].map((type) => {
    const b = Object.assign(document.createElement('button'), { textContent: type === 'video' ? 'Video' : 'Call' });
    b.dataset.call = type;
    b.disabled = Boolean(app.call);
    b.addEventListener('click', () => startCall(member, type).catch(callFailed));
    return b;
  });
  li.append(name, ...buttons);
  return li;
}

function messageRow(message) {
  const li = document.createElement('li');
  li.className = message.kind;
  li.textContent = message.kind === 'text' ? `${message.fromName}: ${message.text}` : message.text;
  return li;
}

$('say').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = $('text').value;
  $('text').value = '';
  await backend('POST', `/api/conversations/${app.session.conversationId}/messages`, { text }).catch(failed);
  refresh();
});

// --- Calls: the spec's Frontend Integration ----------------------------------------------------

/** A WebRTCManager with TURN credentials and the camera, ready for a call. */
async function prepare(type) {
  const webrtcManager = new WebRTCManager(app.socket, { iceTransportPolicy: RELAY_ONLY ? 'relay' : 'all' });
  const turnCreds = await fetch(`${SWITCHBOARD_URL}/api/calls/turn-credentials`, {
    headers: { Authorization: `Bearer ${app.session.token}` },
  });
  await webrtcManager.setTurnCredentials((await turnCreds.json()).credentials);
  const localStream = await webrtcManager.initializeLocalStream(true, type === 'video');
  $('local-video').srcObject = localStream;
  webrtcManager.onRemoteStream = (userId, stream) => {
    $('remote-video').srcObject = stream;
  };
  webrtcManager.onConnectionStateChange = (userId, state) => {
    $('call-status').textContent = state === 'connected' ? 'Connected.' : `${state}…`;
  };
  return webrtcManager;
}

async function startCall(member, type) {
  if (app.call) return;
  app.call = { id: null, withName: member.name, webrtcManager: null };
  showCall(`Calling ${member.name}…`);
  // Camera first: once the call exists, the other side may answer at any moment.
  const webrtcManager = await prepare(type);
  app.call.webrtcManager = webrtcManager;
  const { callId } = await switchboard('POST', '/api/calls/initiate', {
    conversationId: app.session.conversationId,
    type,
    participantIds: [member.id],
  });
  app.call.id = callId;
  webrtcManager.currentCallId = callId;
  webrtcManager.isInitiator = true;
  // The offer itself waits until they answer (call:participant-joined): ringing someone does
  // not send them this side's camera and microphone.
  await webrtcManager.initiateCallToUser(member.id);
}

function onIncoming(data) {
  if (app.call || app.incoming) return; // busy: it rings out as missed
  const caller = data.participants.find((p) => p.userId === data.initiatedBy);
  ring(data, caller?.userName ?? 'Someone');
}

function ring(data, from) {
  app.incoming = data;
  $('incoming').hidden = !data;
  if (!data) return;
  $('incoming-from').textContent = from;
  $('incoming-kind').textContent = data.type === 'video' ? '(video)' : '(audio)';
}

async function answer() {
  const data = app.incoming;
  if (!data) return;
  ring(null);
  const caller = data.participants.find((p) => p.userId === data.initiatedBy);
  app.call = { id: data.callId, withName: caller?.userName ?? 'someone', webrtcManager: null };
  showCall(`Call with ${app.call.withName}`);
  // Listening before answering: the caller's offer follows the answer at once.
  const webrtcManager = await prepare(data.type);
  app.call.webrtcManager = webrtcManager;
  webrtcManager.currentCallId = data.callId;
  webrtcManager.isInitiator = false;
  await switchboard('POST', `/api/calls/${data.callId}/answer`);
}

async function decline() {
  const data = app.incoming;
  ring(null);
  if (data) await switchboard('POST', `/api/calls/${data.callId}/reject`).catch(failed);
}

async function hangUp() {
  const id = app.call?.id;
  endLocally();
  if (id) await switchboard('POST', `/api/calls/${id}/end`).catch(failed);
}

function onEnded(data) {
  if (data.callId === app.incoming?.callId) ring(null);
  if (data.callId !== app.call?.id) return;
  endLocally();
  notice(`Call ended (${data.reason}).`);
}

function showCall(title) {
  notice('');
  $('call-title').textContent = title;
  $('call-status').textContent = '';
  $('call').hidden = false;
  refresh();
}

function endLocally() {
  app.call?.webrtcManager?.cleanup();
  app.call = null;
  $('call').hidden = true;
  $('local-video').srcObject = null;
  $('remote-video').srcObject = null;
  refresh();
}

function failed(err) {
  notice(err.message);
}

/** Placing or answering a call failed: hung up here, and over there if it exists. */
function callFailed(err) {
  hangUp();
  notice(`The call failed: ${err.message}`);
}

$('sign-in').addEventListener('submit', (e) => {
  e.preventDefault();
  signIn($('name').value.trim()).catch(failed);
});
$('answer').addEventListener('click', () => answer().catch(callFailed));
$('decline').addEventListener('click', decline);
$('hang-up').addEventListener('click', hangUp);
