// The anchor of bench/hub.sh: a Node socket.io server doing the hub's relay of call:offer,
// call:answer and call:ice-candidate, driven by the same load generator as switchboard
// (`loadgen hub`, bench/loadgen) over the same wire protocol.
//
// What it does, as switchboard does:
// - the handshake's auth {token} is a JWT checked here: HS256 over JWT_SECRET (node:crypto,
//   compared in constant time), `exp` in the future, `sub` a UUID; a bad one is a
//   connect_error;
// - each socket joins a room named after its user, and a relayed message goes to the target's
//   room (every socket of the user), with fromUserId set by the server;
// - call rosters, callId -> Set of users, made by a REST-shaped setup on the same port
//   (POST /api/calls/initiate as the caller, with {participantIds}; POST
//   /api/calls/{id}/answer; GET /api/calls answers 200, there being no users to record);
//   a message is relayed only if the sender and the target are both in the call, else the
//   sender gets an `error` event {code, message, event}.
// What it does not do (switchboard does): no store (rosters live in memory, the setup
// requests are not durable), no rate limit per socket, no bound on a slow socket's queue
// beyond socket.io's, no limit of sockets per user, no call state machine or events.
//
// Usage: JWT_SECRET=... node relay_server.mjs [--port 0] [--host 127.0.0.1]
// Prints "listening addr=HOST:PORT" once it accepts connections; SIGTERM stops it.

import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const host = opt('--host', '127.0.0.1');
const port = Number(opt('--port', '0'));
const secret = process.env.JWT_SECRET;
if (!secret) {
  console.error('relay_server: JWT_SECRET is required');
  process.exit(2);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_BODY = 64 * 1024;

// The user id of a valid token, or null.
function verify(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const mac = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  const sig = Buffer.from(parts[2], 'base64url');
  if (sig.length !== mac.length || !timingSafeEqual(sig, mac)) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    if (header.alg !== 'HS256') return null;
    if (typeof claims.exp !== 'number' || claims.exp * 1000 <= Date.now()) return null;
    const sub = typeof claims.sub === 'string' ? claims.sub.toLowerCase() : '';
    return UUID.test(sub) ? sub : null;
  } catch {
    return null;
  }
}

// callId -> Set of user ids (the caller and the invitees).
const calls = new Map();

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
const fail = (res, status, code, message) => reply(res, status, { error: { code, message } });

function api(req, res) {
  const auth = req.headers.authorization ?? '';
  const user = verify(auth.startsWith('Bearer ') ? auth.slice(7) : null);
  const url = new URL(req.url, 'http://bench');
  const answer = url.pathname.match(/^\/api\/calls\/([0-9a-f-]{36})\/answer$/);
  let size = 0;
  const chunks = [];
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) req.destroy();
    else chunks.push(c);
  });
  req.on('end', () => {
    if (!user) return fail(res, 401, 'unauthorized', 'a valid bearer token is required');
    if (req.method === 'GET' && url.pathname === '/api/calls') return reply(res, 200, { calls: [] });
    if (req.method === 'POST' && url.pathname === '/api/calls/initiate') {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString());
      } catch {
        return fail(res, 400, 'invalid_body', 'the body is not JSON');
      }
      const invitees = body?.participantIds;
      if (!Array.isArray(invitees) || invitees.length === 0 || !invitees.every((u) => UUID.test(u))) {
        return fail(res, 400, 'invalid_field', 'participantIds: a list of user ids');
      }
      const callId = randomUUID();
      calls.set(callId, new Set([user, ...invitees]));
      return reply(res, 201, { callId, status: 'initiated' });
    }
    if (req.method === 'POST' && answer) {
      const roster = calls.get(answer[1]);
      if (!roster || !roster.has(user)) return fail(res, 404, 'not_found', 'no such call');
      return reply(res, 200, { callId: answer[1], status: 'active' });
    }
    return fail(res, 404, 'not_found', 'no such endpoint');
  });
}

const http = createServer(api);
const io = new Server(http, { serveClient: false, maxHttpBufferSize: MAX_BODY });

io.use((socket, next) => {
  const user = verify(socket.handshake.auth?.token);
  if (!user) return next(new Error('unauthorized: a valid token is required'));
  socket.data.user = user;
  next();
});

io.on('connection', (socket) => {
  const user = socket.data.user;
  socket.join(user);
  const refuse = (event, code, message) => socket.emit('error', { code, message, event });
  for (const [event, field] of [
    ['call:offer', 'offer'],
    ['call:answer', 'answer'],
    ['call:ice-candidate', 'candidate'],
  ]) {
    socket.on(event, (data) => {
      if (data === null || typeof data !== 'object' || typeof data.callId !== 'string' || typeof data.targetUserId !== 'string') {
        return refuse(event, 'invalid_field', 'callId and targetUserId are required');
      }
      if (data[field] === undefined) return refuse(event, 'invalid_field', `\`${field}\` is required`);
      const roster = calls.get(data.callId);
      if (!roster || !roster.has(user)) return refuse(event, 'not_in_call', `you are not in a live call ${data.callId}`);
      if (data.targetUserId === user || !roster.has(data.targetUserId)) {
        return refuse(event, 'not_a_participant', `${data.targetUserId} is not another participant of this call`);
      }
      io.to(data.targetUserId).emit(event, { callId: data.callId, fromUserId: user, [field]: data[field] });
    });
  }
});

http.listen(port, host, () => {
  const a = http.address();
  console.log(`listening addr=${a.address}:${a.port} node=${process.version}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    io.close();
    http.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  });
}
