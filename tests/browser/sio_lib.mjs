// Helpers the sio_*.mjs scripts share: a bounded wait for everything, one line per step
// ("ok ..."), exit 1 at the first failed expectation ("FAIL ..."), and a record of every event
// each socket receives, so that a script can show nothing reached a socket.
import { createHmac } from "node:crypto";
import { io } from "socket.io-client";

// The configuration the Rust test passes as the first argument (JSON).
export const cfg = JSON.parse(process.argv[2]);
// How long something that must come may take.
export const WAIT = 5000;
// How long a socket must stay silent for "nothing was delivered".
export const QUIET = 300;

export const step = (s) => console.log(`ok ${s}`);
export const fail = (s) => {
  console.log(`FAIL ${s}`);
  process.exit(1);
};
export const expect = (cond, what) => (cond ? step(what) : fail(what));
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const show = (v) => JSON.stringify(v);

/// Deep equality of JSON values (object key order ignored).
export function same(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && same(a[k], b[k]));
}

/// `actual` equals `expected`, or the script fails saying how.
export function expectSame(actual, expected, what) {
  expect(same(actual, expected), same(actual, expected) ? what : `${what}: got ${show(actual)}, expected ${show(expected)}`);
}

/// A socket of `who` (`{name, token}`), recording every event it receives in `socket.got`.
export function connect(who, opts = {}) {
  const s = io(cfg.base, { auth: { token: who.token }, reconnection: false, timeout: WAIT, ...opts });
  s.who = who.name;
  s.got = [];
  s.onAny((event, data) => s.got.push({ event, data }));
  return s;
}

export function connected(socket) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${socket.who}: no connect`)), WAIT);
    socket.once("connect", () => (clearTimeout(t), resolve()));
    socket.once("connect_error", (e) => (clearTimeout(t), reject(e)));
  });
}

/// The next `event` on `socket` after this call, within WAIT: its data.
export function next(socket, event) {
  const from = socket.got.length;
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + WAIT;
    const poll = () => {
      const i = socket.got.findIndex((m, j) => j >= from && m.event === event);
      if (i >= 0) return resolve(socket.got[i].data);
      if (Date.now() > deadline) {
        return reject(new Error(`${socket.who}: no ${event} within ${WAIT} ms (got ${show(socket.got.slice(from))})`));
      }
      setTimeout(poll, 5);
    };
    poll();
  });
}

/// Emits `event` with `args` and an acknowledgement callback: the acknowledgement (or a
/// timeout error after WAIT).
export function ack(socket, event, ...args) {
  return socket.timeout(WAIT).emitWithAck(event, ...args);
}

/// Waits QUIET, then the events `socket` got since `mark` (an index into `socket.got`).
export async function since(socket, mark) {
  await sleep(QUIET);
  return socket.got.slice(mark);
}

export async function rest(method, path, token, body) {
  const r = await fetch(cfg.base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

/// `POST /api/calls/initiate` as `by`, inviting `to` (ids): the call id.
export async function initiate(by, to) {
  const r = await rest("POST", "/api/calls/initiate", by.token, {
    conversationId: cfg.conversation,
    type: "video",
    participantIds: to,
  });
  if (r.status !== 201) fail(`initiate: ${r.status} ${show(r.body)}`);
  return r.body.callId;
}

/// Runs `main`, failing on any exception; exits 0 when it returns.
export async function run(main) {
  try {
    await main();
    process.exit(0);
  } catch (e) {
    fail(`${e && e.stack ? e.stack : e}`);
  }
}

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");

/// A token of `who` expiring `cfg.ttl` seconds from now, as the host application mints them
/// (HS256 with `cfg.jwtSecret`).
export function mint(who) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: who.id, name: who.name, iat: now, exp: now + cfg.ttl };
  const signed = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${signed}.${createHmac("sha256", cfg.jwtSecret).update(signed).digest("base64url")}`;
}
