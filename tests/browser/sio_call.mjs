// A 1:1 call signaled through switchboard's /socket.io/ by the stock npm socket.io-client,
// as the spec's clients do it. Run by tests/hub/hub_sio.rs:
//   node sio_call.mjs '{"base": "http://127.0.0.1:PORT", "conversation": UUID,
//                       "alice": {"id", "token"}, "bob": {...}, "eve": {...}}'
// Prints one line per step; exits 1 at the first failed expectation (every wait is bounded).
import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2]);
const WAIT = 5000;
const step = (s) => console.log(`ok ${s}`);
const fail = (s) => {
  console.log(`FAIL ${s}`);
  process.exit(1);
};
const expect = (cond, what) => (cond ? step(what) : fail(what));

function connect(auth, opts = {}) {
  return io(cfg.base, { auth, reconnection: false, timeout: WAIT, ...opts });
}

function once(socket, event) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} within ${WAIT} ms`)), WAIT);
    socket.once(event, (data) => {
      clearTimeout(t);
      resolve(data);
    });
  });
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no connect")), WAIT);
    socket.once("connect", () => (clearTimeout(t), resolve()));
    socket.once("connect_error", (e) => (clearTimeout(t), reject(e)));
  });
}

function ack(socket, event, data) {
  return socket.timeout(WAIT).emitWithAck(event, data);
}

async function rest(method, path, token, body) {
  const r = await fetch(cfg.base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

try {
  // A bad token is a connect_error saying why, not a silent socket.
  const bad = connect({ token: "not-a-token" });
  const err = await new Promise((resolve) => {
    bad.once("connect_error", resolve);
    bad.once("connect", () => resolve(null));
  });
  expect(err && /invalid_token/.test(err.message), `bad token refused: ${err && err.message}`);
  bad.close();
  const none = connect({});
  const err2 = await new Promise((resolve) => {
    none.once("connect_error", resolve);
    none.once("connect", () => resolve(null));
  });
  expect(err2 && /missing_token/.test(err2.message), `no token refused: ${err2 && err2.message}`);
  none.close();

  // Alice over the default transports (polling, then the websocket upgrade); Bob with the
  // token in the query string; Eve websocket only.
  const alice = connect({ token: cfg.alice.token });
  const bob = io(`${cfg.base}?token=${encodeURIComponent(cfg.bob.token)}`, {
    reconnection: false,
    timeout: WAIT,
  });
  const eve = connect({ token: cfg.eve.token }, { transports: ["websocket"] });
  await Promise.all([connected(alice), connected(bob), connected(eve)]);
  step("three sockets connected");
  // Wait for Alice's upgrade to websocket (polling works too; this shows both do).
  if (alice.io.engine.transport.name !== "websocket") {
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no upgrade")), WAIT);
      alice.io.engine.once("upgrade", () => (clearTimeout(t), resolve()));
    });
  }
  expect(alice.io.engine.transport.name === "websocket", "alice upgraded from polling to websocket");

  const incoming = once(bob, "call:incoming");
  const init = await rest("POST", "/api/calls/initiate", cfg.alice.token, {
    conversationId: cfg.conversation,
    type: "video",
    participantIds: [cfg.bob.id],
  });
  expect(init.status === 201, `initiate 201 (${init.status})`);
  const callId = init.body.callId;
  const inc = await incoming;
  expect(inc.callId === callId && inc.initiatedBy === cfg.alice.id && inc.type === "video",
    "bob got call:incoming");

  const joined = once(alice, "call:participant-joined");
  const accepted = await ack(bob, "call:accept", { callId });
  expect(accepted.status === "active" && accepted.startedAt, "bob's accept acked active");
  const j = await joined;
  expect(j.userId === cfg.bob.id && j.callId === callId, "alice got call:participant-joined");

  const offer = { type: "offer", sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n" };
  const gotOffer = once(bob, "call:offer");
  alice.emit("call:offer", { callId, targetUserId: cfg.bob.id, offer, fromUserId: cfg.eve.id });
  const o = await gotOffer;
  expect(o.fromUserId === cfg.alice.id && o.offer.sdp === offer.sdp, "bob got the offer from alice (not the spoofed sender)");

  const gotAnswer = once(alice, "call:answer");
  const relayed = await ack(bob, "call:answer", {
    callId, targetUserId: cfg.alice.id, answer: { type: "answer", sdp: "v=0\r\n" },
  });
  expect(relayed.success === true, "bob's answer acked as relayed");
  const a = await gotAnswer;
  expect(a.fromUserId === cfg.bob.id && a.answer.type === "answer", "alice got the answer");

  const candidates = [];
  bob.on("call:ice-candidate", (c) => candidates.push(c));
  for (let i = 0; i < 5; i++) {
    alice.emit("call:ice-candidate", {
      callId, targetUserId: cfg.bob.id,
      candidate: { candidate: `candidate:${i} 1 udp 1 127.0.0.1 ${40000 + i} typ relay`, sdpMid: "0" },
    });
  }
  await new Promise((r) => setTimeout(r, 300));
  expect(candidates.length === 5 && candidates.every((c, i) => c.candidate.candidate.startsWith(`candidate:${i} `)),
    `bob got 5 candidates in order (${candidates.length})`);

  const media = once(alice, "call:media-state-changed");
  const m = await ack(bob, "call:media", { callId, audioEnabled: false });
  expect(m.success === true && m.mediaState.audioEnabled === false, "bob's media change acked");
  const mc = await media;
  expect(mc.userId === cfg.bob.id && mc.mediaState.audioEnabled === false, "alice got call:media-state-changed");

  // Eve is not in the call: refused, with an error event (no ack) or in the ack.
  const error = once(eve, "error");
  eve.emit("call:offer", { callId, targetUserId: cfg.bob.id, offer });
  const e = await error;
  expect(e.code === "not_in_call" && e.event === "call:offer", `eve's offer refused: ${e.code}`);
  const refusedAck = await ack(eve, "call:accept", { callId });
  expect(refusedAck.error && refusedAck.error.code === "call_not_found", `eve's accept refused: ${JSON.stringify(refusedAck)}`);

  const ended = once(bob, "call:ended");
  const end = await ack(alice, "call:end", { callId });
  expect(end.status === "ended" && end.endReason === "ended-by-user", "alice's end acked");
  const en = await ended;
  expect(en.callId === callId && en.reason === "ended-by-user" && en.endedBy === cfg.alice.id, "bob got call:ended");

  for (const s of [alice, bob, eve]) s.close();
  console.log(`done ${callId}`);
  process.exit(0);
} catch (e) {
  fail(`${e && e.message}`);
}
