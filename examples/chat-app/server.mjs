#!/usr/bin/env node
// A minimal chat backend that uses switchboard for its calls, from its own origin. It is what a
// host application does, reduced to the parts switchboard touches:
//
//   - signs users in (by name: a development-style sign-in, a name is a stable user id) and
//     mints their switchboard token: an HS256 JWT with the secret it shares with switchboard
//     (`auth.jwt_secret`), `sub` the user's UUID, `name`, `email`, `exp` in 15 minutes;
//   - provisions the users and the one conversation ("General", every user who signed in)
//     through switchboard's admin API with the admin token (`auth.admin_token`);
//   - receives switchboard's webhooks at POST /webhooks/switchboard: checks the signature
//     (HMAC-SHA256 of "<timestamp>.<body>", compared in constant time), refuses a timestamp
//     more than 5 minutes off, drops an event it already has (by id), and turns missed,
//     rejected and ended calls into lines of the conversation;
//   - serves the page (public/) and socket.io-client from its own node_modules. The page talks
//     to switchboard directly (REST, Socket.IO, /webrtc.js); nothing is proxied through here.
//
// Its state (users, messages, the webhooks it accepted) is one JSON file in DATA_DIR, written
// before a webhook is acknowledged, so a restart loses nothing switchboard was told is
// delivered.
//
// Configuration (environment):
//   SWITCHBOARD_URL             switchboard's origin as the browser reaches it (http://127.0.0.1:8080)
//   SWITCHBOARD_JWT_SECRET      = switchboard's auth.jwt_secret
//   SWITCHBOARD_ADMIN_TOKEN     = switchboard's auth.admin_token
//   SWITCHBOARD_WEBHOOK_SECRET  = switchboard's webhooks.secret
//   PORT (3000), HOST (127.0.0.1), DATA_DIR (./data)
//
// Node 20's standard library only (http, crypto, fs).

import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') {
    console.error(`chat-app: set ${name} (see README.md)`);
    process.exit(2);
  }
  return value;
}

const config = {
  switchboardUrl: env('SWITCHBOARD_URL', 'http://127.0.0.1:8080').replace(/\/+$/, ''),
  jwtSecret: env('SWITCHBOARD_JWT_SECRET'),
  adminToken: env('SWITCHBOARD_ADMIN_TOKEN'),
  webhookSecret: env('SWITCHBOARD_WEBHOOK_SECRET'),
  port: Number(env('PORT', '3000')),
  host: env('HOST', '127.0.0.1'),
  dataDir: env('DATA_DIR', join(HERE, 'data')),
};

const TOKEN_TTL_S = 15 * 60;
/** A webhook whose timestamp is further than this from now is refused (replays). */
const WEBHOOK_TOLERANCE_S = 5 * 60;
const MAX_BODY = 64 * 1024;
/** How long accepted webhooks (their ids, for de-duplication) are kept. */
const KEEP_WEBHOOKS_MS = 8 * 24 * 3600 * 1000;
/** Where this app's user and conversation ids come from (any fixed UUID of the app's own). */
const ID_NAMESPACE = 'switchboard-chat-app-example';
const GENERAL = stableId('conversation:general');

// --- State: one JSON file ---------------------------------------------------------------------

const STATE_FILE = join(config.dataDir, 'state.json');
mkdirSync(config.dataDir, { recursive: true });
const state = load();

function load() {
  try {
    return JSON.parse(readFileSync(STATE_FILE, 'utf8'));
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
    return { users: {}, messages: {}, webhooks: [] };
  }
}

/** Writes the whole state (a temp file renamed over the old one: never half written). */
function save() {
  const tmp = `${STATE_FILE}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 1));
  renameSync(tmp, STATE_FILE);
}

// --- Ids and tokens ---------------------------------------------------------------------------

/** A UUID (version 5 layout) from a name: the same name is the same user, every time. */
function stableId(name) {
  const h = createHash('sha256').update(`${ID_NAMESPACE}:${name}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const b64url = (data) => Buffer.from(data).toString('base64url');

/** The user's token for switchboard (and for this app's own API). */
function mintToken(user) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = { sub: user.id, name: user.name, email: user.email, iat: now, exp: now + TOKEN_TTL_S };
  const body = `${header}.${b64url(JSON.stringify(claims))}`;
  const signature = createHmac('sha256', config.jwtSecret).update(body).digest('base64url');
  return { token: `${body}.${signature}`, expiresAt: new Date((now + TOKEN_TTL_S) * 1000).toISOString() };
}

/** The signed-in user of a request (a token this app minted, not expired), or null. */
function userOf(req) {
  const match = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
  const parts = match?.[1].split('.');
  if (parts?.length !== 3) return null;
  const expected = createHmac('sha256', config.jwtSecret).update(`${parts[0]}.${parts[1]}`).digest();
  if (!safeEqual(expected, Buffer.from(parts[2], 'base64url'))) return null;
  let claims;
  try {
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return null;
  }
  if (!(claims.exp > Date.now() / 1000)) return null;
  return state.users[claims.sub] ?? null;
}

function safeEqual(a, b) {
  return a.length === b.length && timingSafeEqual(a, b);
}

// --- Switchboard's admin API ------------------------------------------------------------------

async function admin(method, path, body) {
  const res = await fetch(`${config.switchboardUrl}${path}`, {
    method,
    headers: { Authorization: `Bearer ${config.adminToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const answer = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`switchboard ${method} ${path}: ${res.status} ${JSON.stringify(answer)}`);
  return answer;
}

/** The user and the conversation, as switchboard must know them before a call. */
async function provision(user) {
  await admin('PUT', `/api/admin/users/${user.id}`, { name: user.name, email: user.email });
  const memberIds = Object.keys(state.users);
  await admin('PUT', `/api/admin/conversations/${GENERAL}`, { name: 'General', memberIds });
}

// --- Webhooks ---------------------------------------------------------------------------------

/**
 * Checks a webhook: the timestamp within 5 minutes, one `v1=` signature (of several, when the
 * secret is being rotated) equal to HMAC-SHA256(secret, "<timestamp>.<raw body>").
 * @returns {string | null} why it is refused, or null.
 */
function verifyWebhook(headers, raw) {
  const timestamp = headers['x-switchboard-timestamp'] ?? '';
  if (!/^\d{1,12}$/.test(timestamp)) return 'no timestamp';
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > WEBHOOK_TOLERANCE_S) return 'timestamp too old';
  const expected = createHmac('sha256', config.webhookSecret)
    .update(`${timestamp}.`)
    .update(raw)
    .digest();
  const signatures = (headers['x-switchboard-signature'] ?? '')
    .split(/[,\s]+/)
    .filter((s) => s.startsWith('v1='))
    .map((s) => Buffer.from(s.slice(3), 'hex'));
  return signatures.some((s) => safeEqual(s, expected)) ? null : 'bad signature';
}

/** `m:ss` (or `h:mm:ss`) of a number of seconds. */
function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const [h, m] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60)];
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

const nameOf = (id) => state.users[id]?.name ?? 'Someone';

/** The conversation line an event makes, or null (README.md's "Webhooks" lists the fields). */
function lineFor(event) {
  switch (event.type) {
    case 'call.missed': {
      const caller = state.users[event.initiatedBy]?.name;
      return caller ? `Missed call from ${caller}` : 'Missed call';
    }
    case 'call.rejected':
      return `${nameOf(event.userId)} declined the call`;
    case 'call.ended':
      // A call never answered (missed, declined, cancelled) has its own line already.
      return event.startedAt && Number.isFinite(event.duration) ? `Call ended (${clock(event.duration)})` : null;
    default:
      return null;
  }
}

function addMessage(conversationId, message) {
  const list = (state.messages[conversationId] ??= []);
  list.push({ id: randomUUID(), at: new Date().toISOString(), ...message });
}

function receiveWebhook(req, raw) {
  const refused = verifyWebhook(req.headers, raw);
  if (refused) return [401, { error: { code: 'invalid_signature', message: refused } }];
  let event;
  try {
    event = JSON.parse(raw.toString('utf8'));
  } catch {
    return [400, { error: { code: 'invalid_body', message: 'not JSON' } }];
  }
  if (typeof event?.id !== 'string' || typeof event.type !== 'string') {
    return [400, { error: { code: 'invalid_body', message: 'no id or type' } }];
  }
  // At-least-once delivery: an event seen before is acknowledged again and changes nothing.
  // Ids are kept for longer than switchboard retries one (webhooks.max_age is at most 7 days).
  const keepSince = Date.now() - KEEP_WEBHOOKS_MS;
  state.webhooks = state.webhooks.filter((w) => Date.parse(w.receivedAt) >= keepSince);
  if (state.webhooks.some((w) => w.id === event.id)) return [200, { received: true, duplicate: true }];
  state.webhooks.push({
    id: event.id,
    type: event.type,
    callId: event.callId ?? null,
    receivedAt: new Date().toISOString(),
    timestamp: req.headers['x-switchboard-timestamp'],
    signature: req.headers['x-switchboard-signature'],
    eventIdHeader: req.headers['x-switchboard-event-id'] ?? null,
    body: raw.toString('utf8'),
  });
  const text = lineFor(event);
  if (text && event.conversationId) addMessage(event.conversationId, { kind: 'call', text, callId: event.callId });
  save(); // on disk before the 2xx that tells switchboard it is delivered
  return [200, { received: true }];
}

// --- HTTP -------------------------------------------------------------------------------------

const STATIC = {
  '/': ['public/index.html', 'text/html; charset=utf-8'],
  '/app.js': ['public/app.js', 'text/javascript; charset=utf-8'],
  '/vendor/socket.io.esm.min.js': ['node_modules/socket.io-client/dist/socket.io.esm.min.js', 'text/javascript; charset=utf-8'],
  '/vendor/socket.io.esm.min.js.map': ['node_modules/socket.io-client/dist/socket.io.esm.min.js.map', 'application/json'],
};

function send(res, status, body, type = 'application/json') {
  const data = type === 'application/json' ? JSON.stringify(body) : body;
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function json(raw) {
  try {
    return JSON.parse(raw.toString('utf8') || '{}');
  } catch {
    return null;
  }
}

async function route(req, res) {
  const url = new URL(req.url, 'http://app');
  const path = url.pathname;
  const method = req.method;

  if (method === 'GET' && STATIC[path]) {
    const [file, type] = STATIC[path];
    return send(res, 200, readFileSync(join(HERE, file)), type);
  }
  if (method === 'GET' && path === '/api/config') {
    return send(res, 200, { switchboardUrl: config.switchboardUrl });
  }
  if (method === 'POST' && path === '/api/sign-in') {
    const name = String(json(await readBody(req))?.name ?? '').trim();
    if (!name || name.length > 100) return send(res, 400, { error: { code: 'invalid_name', message: 'a name, 1 to 100 characters' } });
    const id = stableId(`user:${name.toLowerCase()}`);
    const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '.') || 'user';
    const user = (state.users[id] ??= { id, name, email: `${slug}@chat.example` });
    save();
    await provision(user);
    return send(res, 200, { ...mintToken(user), user, conversationId: GENERAL });
  }
  if (method === 'POST' && path === '/webhooks/switchboard') {
    const [status, body] = receiveWebhook(req, await readBody(req));
    return send(res, status, body);
  }
  if (method === 'GET' && path === '/api/webhooks') {
    // For the tests and the operator: what was accepted, with the signatures as received.
    // The bodies name users and their calls: only with the admin token.
    const given = Buffer.from(req.headers.authorization ?? '');
    if (!safeEqual(given, Buffer.from(`Bearer ${config.adminToken}`))) {
      return send(res, 401, { error: { code: 'unauthorized', message: 'the admin token is needed' } });
    }
    return send(res, 200, { webhooks: state.webhooks });
  }

  const conversation = /^\/api\/conversations\/([0-9a-f-]{36})(\/messages)?$/.exec(path);
  if (conversation) {
    const user = userOf(req);
    if (!user) return send(res, 401, { error: { code: 'unauthorized', message: 'sign in again' } });
    const id = conversation[1];
    if (id !== GENERAL) return send(res, 404, { error: { code: 'not_found', message: 'no such conversation' } });
    if (!conversation[2] && method === 'GET') {
      const members = Object.values(state.users).map(({ id: uid, name }) => ({ id: uid, name }));
      return send(res, 200, { conversation: { id, name: 'General', members } });
    }
    if (conversation[2] && method === 'GET') return send(res, 200, { messages: state.messages[id] ?? [] });
    if (conversation[2] && method === 'POST') {
      const text = String(json(await readBody(req))?.text ?? '').trim().slice(0, 2000);
      if (!text) return send(res, 400, { error: { code: 'invalid_text', message: 'empty message' } });
      addMessage(id, { kind: 'text', from: user.id, fromName: user.name, text });
      save();
      return send(res, 201, { ok: true });
    }
  }
  send(res, 404, { error: { code: 'not_found', message: `${method} ${path}` } });
}

const server = createServer((req, res) => {
  route(req, res).catch((err) => {
    console.error('chat-app:', err.message);
    if (!res.headersSent) send(res, err.status ?? 502, { error: { code: 'failed', message: err.message } });
  });
});
server.listen(config.port, config.host, () => {
  const { port } = server.address();
  console.log(`chat-app listening on http://${config.host}:${port} (switchboard: ${config.switchboardUrl})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
