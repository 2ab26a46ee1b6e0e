// Writes the seed corpus of signaling/fuzz (seeds/<target>/) from real traffic with a real
// switchboard daemon, which this script starts itself (loopback only, port 0, a temporary
// directory, killed at the end):
//
//   node signaling/fuzz/capture-seeds.mjs [--switchboard PATH] [--out DIR]
//
// PATH defaults to $SWITCHBOARD or /var/tmp/switchboard-target/debug/switchboard (build it with
// `cargo build`); DIR to signaling/fuzz/seeds. It uses the stock npm socket.io-client and ws
// installed in tests/browser (`cd tests/browser && npm ci` if node_modules is missing).
//
// - sio_packet: what socket.io-client sends and receives through /socket.io/ during a group
//   call (Alice: polling upgraded to websocket; Bob: websocket only; Carol: polling only),
//   captured inside engine.io-client (each transport's doWrite and onData): every WebSocket
//   message and every polling payload (0x1e-separated packets), both directions; distinct
//   ones, client to server first, at most 40.
// - ws_frame: the frames tests/hub/hub_ws.rs sends (JSON with sorted keys, as serde_json writes
//   them), sent to the daemon's /ws here too.
// - rest_bodies: the spec's example bodies (shared/spec/phase4-calls.md) and the bodies of
//   tests/calls/calls_api.rs, sent to their endpoints here too.
//
// The fuzz harness's fixed ids are used for the users and the conversation (fuzz/src/lib.rs);
// every call id the daemon makes is written as the placeholder the harness replaces with its
// live call's id, and the JWTs as "redacted". Every wait is bounded; the whole script is
// killed after LIMIT ms.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const LIMIT = 60_000;
const WAIT = 5_000;
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const require = createRequire(path.join(root, "tests/browser/package.json"));
const { io } = require("socket.io-client");
const eio = require("engine.io-client");
const WebSocket = require("ws");

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const BIN = arg("--switchboard", process.env.SWITCHBOARD || "/var/tmp/switchboard-target/debug/switchboard");
const OUT = path.resolve(arg("--out", path.join(here, "seeds")));

// The harness's fixtures (signaling/fuzz/src/lib.rs).
const ALICE = "a11ce000-0000-4000-8000-000000000001";
const BOB = "b0b00000-0000-4000-8000-000000000002";
const CAROL = "ca401000-0000-4000-8000-000000000003";
const DAVE = "da7e0000-0000-4000-8000-000000000004";
const CONVERSATION = "c0c00000-0000-4000-8000-000000000001";
const ADMIN_CONVERSATION = "c0c00000-0000-4000-8000-000000000002";
const PLACEHOLDER = "ca11ca11-0000-4000-8000-000000000001";
const JWT_SECRET = "capture-jwt-secret";
const ADMIN_TOKEN = "capture-admin-token";

let daemon = null;
let dir = null;
const cleanup = () => {
  if (daemon && daemon.exitCode === null) daemon.kill("SIGKILL");
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
};
const fail = (why) => {
  console.error(`FAIL ${why}`);
  cleanup();
  process.exit(1);
};
setTimeout(() => fail(`not done within ${LIMIT} ms`), LIMIT);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const within = (p, what) =>
  Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer within ${WAIT} ms`)), WAIT))]);

// ---------------------------------------------------------------------------------------------
// The capture, inside engine.io-client.

const captured = []; // {dir: "c2s" | "s2c", transport, text}
function hook(cls, transport) {
  const doWrite = cls.prototype.doWrite;
  const onData = cls.prototype.onData;
  cls.prototype.doWrite = function (...args) {
    // polling: doWrite(payload, fn); websocket: doWrite(packet, data).
    const data = transport === "polling" ? args[0] : args[1];
    if (typeof data === "string") captured.push({ dir: "c2s", transport, text: data });
    return doWrite.apply(this, args);
  };
  cls.prototype.onData = function (data) {
    if (typeof data === "string") captured.push({ dir: "s2c", transport, text: data });
    return onData.call(this, data);
  };
}
hook(eio.transports.polling, "polling");
hook(eio.transports.websocket, "websocket");

// ---------------------------------------------------------------------------------------------
// The daemon.

function b64url(s) {
  return Buffer.from(s).toString("base64url");
}

function mint(id, name) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: id, name, email: `${name.toLowerCase()}@example.com`, iat: now, exp: now + 3600 };
  const head = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}`;
  return `${head}.${createHmac("sha256", JWT_SECRET).update(head).digest("base64url")}`;
}

async function start() {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "switchboard-capture-"));
  const config = `dev = true

[http]
listen = "127.0.0.1:0"

[turn]
listen = ["127.0.0.1:0"]
relay_ip = "127.0.0.1"
relay_ports = "40000-40999"
secret = "capture-turn-secret"

[auth]
jwt_secret = "${JWT_SECRET}"
admin_token = "${ADMIN_TOKEN}"
open_conversations = false

[store]
path = "switchboard.db"

[log]
level = "info"
format = "json"
`;
  fs.writeFileSync(path.join(dir, "switchboard.toml"), config);
  daemon = spawn(BIN, ["serve", "--config", path.join(dir, "switchboard.toml")], {
    cwd: dir,
    stdio: ["ignore", "ignore", "pipe"],
  });
  daemon.on("error", (e) => fail(`cannot run ${BIN}: ${e.message}`));
  let log = "";
  return within(
    new Promise((resolve) => {
      daemon.stderr.on("data", (chunk) => {
        log += chunk;
        for (const line of log.split("\n")) {
          if (line.includes("http listening")) {
            const m = line.match(/"addr":"(127\.0\.0\.1:\d+)"/);
            if (m) resolve(`http://${m[1]}`);
          }
        }
      });
    }),
    "the daemon's start",
  );
}

let BASE = null;

async function rest(method, p, token, body) {
  const r = await within(
    fetch(BASE + p, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body,
    }),
    `${method} ${p}`,
  );
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

// ---------------------------------------------------------------------------------------------
// Socket.IO.

const people = {
  alice: { id: ALICE, name: "Alice" },
  bob: { id: BOB, name: "Bob" },
  carol: { id: CAROL, name: "Carol" },
};

function connect(who, opts = {}) {
  const s = io(BASE, { auth: { token: who.token }, reconnection: false, timeout: WAIT, ...opts });
  s.got = [];
  s.onAny((event, data) => s.got.push({ event, data }));
  return s;
}

const connected = (s, what) =>
  within(new Promise((resolve, reject) => {
    s.once("connect", resolve);
    s.once("connect_error", reject);
  }), `${what} connect`);

const next = (s, event) => within(new Promise((resolve) => s.once(event, resolve)), event);
const ack = (s, event, data) => s.timeout(WAIT).emitWithAck(event, data);

const callIds = [];

async function socketIo() {
  const { alice, bob, carol } = people;
  const a = connect(alice);
  const b = connect(bob, { transports: ["websocket"] });
  const c = connect(carol, { transports: ["polling"] });
  await Promise.all([connected(a, "alice"), connected(b, "bob"), connected(c, "carol")]);
  if (a.io.engine.transport.name !== "websocket") {
    await within(new Promise((r) => a.io.engine.once("upgrade", r)), "alice's upgrade");
  }
  const incoming = next(b, "call:incoming");
  const init = await rest("POST", "/api/calls/initiate", alice.token,
    JSON.stringify({ conversationId: CONVERSATION, type: "video", participantIds: [BOB, CAROL] }));
  if (init.status !== 201) fail(`initiate: ${init.status} ${JSON.stringify(init.body)}`);
  const callId = init.body.callId;
  callIds.push(callId);
  await incoming;
  const joined = next(a, "call:participant-joined");
  const accepted = await ack(b, "call:accept", { callId });
  if (accepted.status !== "active") fail(`accept: ${JSON.stringify(accepted)}`);
  await joined;

  const offer = { type: "offer", sdp: "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" };
  const gotOffer = next(b, "call:offer");
  a.emit("call:offer", { callId, targetUserId: BOB, offer });
  await gotOffer;
  const gotAnswer = next(a, "call:answer");
  const relayed = await ack(b, "call:answer", {
    callId, targetUserId: ALICE, answer: { type: "answer", sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" },
  });
  if (relayed.success !== true) fail(`answer: ${JSON.stringify(relayed)}`);
  await gotAnswer;
  for (let i = 1; i <= 3; i++) {
    a.emit("call:ice-candidate", {
      callId, targetUserId: BOB,
      candidate: { candidate: `candidate:${i} 1 udp 2122260223 192.0.2.${i} ${50000 + i} typ host`, sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "abcd" },
    });
    b.emit("call:ice-candidate", {
      callId, targetUserId: ALICE,
      candidate: { candidate: `candidate:${10 + i} 1 udp 1686052607 198.51.100.${i} ${40000 + i} typ srflx raddr 0.0.0.0 rport 0`, sdpMid: "0", sdpMLineIndex: 0 },
    });
  }
  // Carol, over polling, signals to Alice before answering: several packets in one payload.
  for (let i = 1; i <= 3; i++) {
    c.emit("call:ice-candidate", { callId, targetUserId: ALICE, candidate: { candidate: `candidate:${20 + i} 1 udp 2122260223 192.0.2.${20 + i} ${51000 + i} typ host`, sdpMid: "0" } });
  }
  const carolMedia = ack(c, "call:media", { callId, videoEnabled: false });
  const carolMissing = ack(c, "call:end", { callId: "not-a-uuid" });
  await Promise.all([carolMedia, carolMissing]).catch(() => {});
  await sleep(200);
  await ack(b, "call:media", { callId, audioEnabled: false, videoEnabled: true, screenSharing: false });
  await ack(b, "call:stats", { callId, rtt: 120.5, jitter: 4.2, packetLoss: 0.5, bitrate: 1200000, relayed: false });
  // Refusals: an unknown event (error event), data that is not an object (in the ack),
  // binary attachments (over websocket and over polling), a stranger's target.
  const error = next(a, "error");
  a.emit("call:dance", { callId });
  await error;
  await ack(a, "call:offer", [callId, BOB, offer]);
  await ack(a, "call:offer", { callId, targetUserId: DAVE, offer });
  const binaryError = next(a, "error");
  a.emit("call:offer", { callId, targetUserId: BOB, offer: Buffer.from("v=0\r\n") });
  await binaryError;
  await ack(c, "call:ice-candidate", { callId, targetUserId: ALICE, candidate: Buffer.from([1, 2, 3]) });
  await ack(c, "call:reject", { callId });
  const ended = next(b, "call:ended");
  const end = await ack(a, "call:end", { callId });
  if (end.status !== "ended") fail(`end: ${JSON.stringify(end)}`);
  await ended;
  for (const s of [a, b, c]) s.close();
  await sleep(100);
}

// ---------------------------------------------------------------------------------------------
// /ws.

/// JSON with sorted keys, as serde_json's `json!` writes it.
function sorted(v) {
  if (Array.isArray(v)) return v.map(sorted);
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])]));
  return v;
}

function wsFrames(call) {
  const candidate = (n) => ({
    candidate: `candidate:${n} 1 udp 2122260223 192.0.2.${n} ${50000 + n} typ host`,
    sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "abcd",
  });
  const offer = { type: "offer", sdp: "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" };
  const answer = { type: "answer", sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" };
  const j = (v) => JSON.stringify(sorted(v));
  return [
    // relayed signals (signals_are_relayed..., hub_ws.rs)
    ["offer", j({ event: "call:offer", id: "o1", data: { callId: call, targetUserId: BOB, offer } })],
    ["answer", j({ event: "call:answer", data: { callId: call, targetUserId: ALICE, answer } })],
    ["ice-candidate", j({ event: "call:ice-candidate", data: { callId: call, targetUserId: BOB, candidate: candidate(1) } })],
    ["ice-candidate-spoofed", j({ event: "call:ice-candidate", data: { callId: call, targetUserId: ALICE, candidate: candidate(11), fromUserId: CAROL } })],
    // transitions
    ["accept", j({ event: "call:accept", data: { callId: call }, id: 7 })],
    ["reject", j({ event: "call:reject", data: { callId: call }, id: 8 })],
    ["end", j({ event: "call:end", data: { callId: call }, id: 9 })],
    ["media", j({ event: "call:media", data: { callId: call, videoEnabled: false }, id: 10 })],
    ["stats", j({ event: "call:stats", data: { callId: call, rtt: 120.5, jitter: 4.2, packetLoss: 0.5, bitrate: 1200000, relayed: true }, id: "s" })],
    ["unknown-event", j({ event: "call:dance", data: { callId: call }, id: "u" })],
    ["probe", j({ event: "probe", data: {}, id: 1 })],
    // malformed frames (answered invalid_frame)
    ["not-json", "not json"],
    ["array", "[1, 2]"],
    ["no-event", '{"data": {}, "id": 1}'],
    ["event-number", '{"event": 5, "data": {}}'],
    ["extra-field", '{"event": "call:offer", "data": {}, "id": 1, "extra": true}'],
    ["truncated", '{"event": "call:end", "data": {"callId": '],
    // fields of the wrong type or missing (invalid_field)
    ["offer-bad-uuid", j({ event: "call:offer", id: 20, data: { callId: "not-a-uuid", targetUserId: BOB, offer } })],
    ["offer-no-payload", j({ event: "call:offer", id: 22, data: { callId: call, targetUserId: BOB } })],
    ["media-wrong-type", j({ event: "call:media", id: 27, data: { callId: call, audioEnabled: "no" } })],
    ["end-extra-field", j({ event: "call:end", id: 26, data: { callId: call, reason: "bye" } })],
    // data that is an array (data_that_is_an_array_is_refused)
    ["offer-array-data", j({ event: "call:offer", id: 1, data: [call, BOB, offer, null, null] })],
    ["media-array-data", j({ event: "call:media", id: 3, data: [call, false, null, null] })],
  ];
}

async function wsRun(token, frames) {
  const ws = new WebSocket(`${BASE.replace("http", "ws")}/ws?token=${encodeURIComponent(token)}`);
  await within(new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  }), "/ws open");
  let answers = 0;
  ws.on("message", () => answers++);
  for (const [, text] of frames) ws.send(text);
  await sleep(300);
  ws.close();
  return answers;
}

// ---------------------------------------------------------------------------------------------
// REST bodies: [name, method, path (CALL: the call), token, body].

function restBodies() {
  const conv = CONVERSATION;
  return [
    // the spec's examples (phase4-calls.md), with the fixtures' ids
    ["initiate-spec", "POST", "/api/calls/initiate", "alice", { conversationId: conv, type: "video", participantIds: [BOB, CAROL] }],
    ["media-spec", "PATCH", "/api/calls/CALL/media", "alice", { audioEnabled: true, videoEnabled: false, screenSharing: false }],
    // tests/calls/calls_api.rs
    ["initiate-audio", "POST", "/api/calls/initiate", "alice", { conversationId: conv, type: "audio", participantIds: [BOB] }],
    ["initiate-untyped", "POST", "/api/calls/initiate", "alice", { conversationId: conv, participantIds: [BOB] }],
    ["initiate-screen", "POST", "/api/calls/initiate", "alice", { conversationId: conv, type: "screen", participantIds: [] }],
    ["initiate-bad-uuid", "POST", "/api/calls/initiate", "alice", { conversationId: conv, type: "audio", participantIds: ["not-a-uuid"] }],
    ["initiate-number-id", "POST", "/api/calls/initiate", "alice", { conversationId: conv, type: "audio", participantIds: [BOB, 7] }],
    ["initiate-conversation-name", "POST", "/api/calls/initiate", "alice", { conversationId: "general", type: "audio", participantIds: [BOB] }],
    ["initiate-hologram", "POST", "/api/calls/initiate", "alice", { conversationId: conv, type: "hologram", participantIds: [BOB] }],
    ["initiate-extra-field", "POST", "/api/calls/initiate", "alice", { conversationId: conv, participantIds: [BOB], video: true }],
    ["initiate-self", "POST", "/api/calls/initiate", "alice", { conversationId: conv, type: "audio", participantIds: [BOB, ALICE] }],
    ["initiate-admin-conversation", "POST", "/api/calls/initiate", "alice", { conversationId: ADMIN_CONVERSATION, type: "video", participantIds: [DAVE] }],
    ["initiate-trailing", "POST", "/api/calls/initiate", "alice", '{"a": 1} trailing'],
    ["media-one", "PATCH", "/api/calls/CALL/media", "alice", { audioEnabled: false }],
    ["media-wrong-type", "PATCH", "/api/calls/CALL/media", "alice", { audioEnabled: "no" }],
    ["media-unknown-field", "PATCH", "/api/calls/CALL/media", "alice", { audioEnabled: true, mute: true }],
    ["media-empty", "PATCH", "/api/calls/CALL/media", "alice", {}],
    ["admin-user", "PUT", `/api/admin/users/${DAVE}`, "admin", { name: "Caroline", email: "carol@example.com" }],
    ["admin-user-name-only", "PUT", `/api/admin/users/${DAVE}`, "admin", { name: "Dave" }],
    ["admin-conversation", "PUT", `/api/admin/conversations/${ADMIN_CONVERSATION}`, "admin", { name: "Team", memberIds: [ALICE, BOB] }],
    ["admin-conversation-bad-member", "PUT", `/api/admin/conversations/${ADMIN_CONVERSATION}`, "admin", { memberIds: [ALICE, "nope"] }],
    ["admin-conversation-nil-member", "PUT", `/api/admin/conversations/${ADMIN_CONVERSATION}`, "admin", { memberIds: [ALICE, "00000000-0000-0000-0000-000000000000"] }],
    ["admin-conversation-truncated", "PUT", `/api/admin/conversations/${ADMIN_CONVERSATION}`, "admin", '{"memberIds": ['],
  ];
}

// ---------------------------------------------------------------------------------------------

function clean(text) {
  let t = text;
  for (const id of callIds) t = t.split(id).join(PLACEHOLDER);
  for (const p of Object.values(people)) t = t.split(p.token).join("redacted");
  return t;
}

function writeSeeds(target, seeds) {
  const d = path.join(OUT, target);
  fs.mkdirSync(d, { recursive: true });
  for (const f of fs.readdirSync(d)) {
    if (!f.startsWith("crash-")) fs.rmSync(path.join(d, f));
  }
  for (const [name, text] of seeds) fs.writeFileSync(path.join(d, name), text);
  console.log(`${target}: ${seeds.length} seeds in ${d}`);
}

const slug = (s) => s.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, "").slice(0, 40).toLowerCase();

/// A short name for an Engine.IO packet or payload.
function describe(text) {
  const first = text.split("\x1e");
  if (first.length > 1) return `payload-${first.length}`;
  const m = text.match(/^4[25]\d*-?\d*\["([^"]+)"/);
  if (m) return slug(m[1]);
  const kinds = { 0: "open", 1: "close", 2: "ping", 3: "pong", 4: "message", 5: "upgrade", 6: "noop" };
  const sio = { 0: "connect", 1: "disconnect", 2: "event", 3: "ack", 4: "connect-error", 5: "binary-event", 6: "binary-ack" };
  if (text[0] === "4" && sio[text[1]]) return sio[text[1]];
  if (text.startsWith("b")) return "base64";
  return kinds[text[0]] ?? "other";
}

async function main() {
  BASE = await start();
  console.log(`daemon at ${BASE}`);
  for (const p of Object.values(people)) p.token = mint(p.id, p.name);
  const admin = (p, body) => rest("PUT", p, ADMIN_TOKEN, JSON.stringify(body));
  for (const p of Object.values(people)) {
    const r = await admin(`/api/admin/users/${p.id}`, { name: p.name, email: `${p.name.toLowerCase()}@example.com` });
    if (r.status !== 200) fail(`PUT user: ${r.status}`);
  }
  const r = await admin(`/api/admin/conversations/${CONVERSATION}`, { memberIds: [ALICE, BOB, CAROL] });
  if (r.status !== 200) fail(`PUT conversation: ${r.status}`);

  await socketIo();

  // /ws, in a live call: Bob and Carol invited, Bob answers; Alice's frames.
  const init = await rest("POST", "/api/calls/initiate", people.alice.token,
    JSON.stringify({ conversationId: CONVERSATION, type: "video", participantIds: [BOB, CAROL] }));
  if (init.status !== 201) fail(`initiate: ${init.status}`);
  const call = init.body.callId;
  callIds.push(call);
  await rest("POST", `/api/calls/${call}/answer`, people.bob.token);
  const frames = wsFrames(call);
  const answers = await wsRun(people.alice.token, frames);
  console.log(`/ws: ${frames.length} frames sent, ${answers} answered`);

  // REST, in a live call again.
  const init2 = await rest("POST", "/api/calls/initiate", people.alice.token,
    JSON.stringify({ conversationId: CONVERSATION, type: "video", participantIds: [BOB] }));
  const call2 = init2.body.callId;
  callIds.push(call2);
  await rest("POST", `/api/calls/${call2}/answer`, people.bob.token);
  const bodies = [];
  for (const [name, method, p, who, body] of restBodies()) {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    const token = who === "admin" ? ADMIN_TOKEN : people[who].token;
    const res = await rest(method, p.replace("CALL", call2), token, text);
    if (res.body && res.body.callId) callIds.push(res.body.callId);
    console.log(`  ${method} ${p} ${name}: ${res.status}`);
    bodies.push([name, text]);
  }

  // The Socket.IO seeds: distinct, client to server first, then the server's, at most 38
  // (with the two probes below, 40);
  // one of each shape (direction, transport, packet types, event name, with an ack id or
  // not), so that the ten ICE candidates do not crowd out the rest.
  const seen = new Set();
  const shapes = new Set();
  const seeds = [];
  for (const dirn of ["c2s", "s2c"]) {
    for (const c of captured.filter((c) => c.dir === dirn)) {
      const text = clean(c.text);
      const acked = /^4[235](\d+-)?(\/[^,]*,)?\d+\[/.test(text);
      const shape = `${dirn} ${c.transport} ${text.slice(0, 2)} ${describe(text)} ${acked}`;
      if (seen.has(text) || shapes.has(shape) || seeds.length >= 38) continue;
      seen.add(text);
      shapes.add(shape);
      const n = String(seeds.length + 1).padStart(2, "0");
      seeds.push([`${n}-${dirn}-${c.transport}-${describe(text)}`, text]);
    }
  }
  // Probes of the size bounds, from real ones: the harness grows an input that starts with
  // its trigger (sio_packet: two noops, "6␞6␞"; the others: a space) to MAX - 8 + (the byte
  // after the trigger) % 16 bytes, so "8"/"9" and " "/"\t" land at and over the bound.
  const offer = clean(captured.find((c) => c.dir === "c2s" && /^42\["call:offer"/.test(c.text)).text);
  const wsOffer = clean(frames[0][1]);
  const initiate = JSON.stringify(restBodies()[0][4]);
  const probes = {
    sio_packet: [["bound-at-max", `6\x1e6\x1e8\x1e${offer}`], ["bound-over-max", `6\x1e6\x1e9\x1e${offer}`]],
    ws_frame: [["bound-under-max", `  ${wsOffer}`], ["bound-over-max", ` \t${wsOffer}`]],
    rest_bodies: [["bound-under-max", `  ${initiate}`], ["bound-over-max", ` \t${initiate}`]],
  };
  const numbered = (list) => list.map(([name, text], i) => [`${String(i + 1).padStart(2, "0")}-${name}`, clean(text)]);
  writeSeeds("sio_packet", [...seeds, ...probes.sio_packet]);
  writeSeeds("ws_frame", [...numbered(frames), ...probes.ws_frame]);
  writeSeeds("rest_bodies", [...numbered(bodies), ...probes.rest_bodies]);
  console.log(`captured ${captured.length} transport writes and reads (${seen.size} distinct kept)`);
  daemon.kill("SIGTERM");
  await within(new Promise((r) => daemon.once("exit", r)), "the daemon's stop").catch(() => {});
  cleanup();
  process.exit(0);
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
