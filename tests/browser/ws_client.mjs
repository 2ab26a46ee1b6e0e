// The page's own JS clients under node (no browser needed for these): web/signaling.js's
// SignalingSocket over /ws (acks of relayed events, as socket.io's; its `id` named in a REST
// answer's X-Socket-Id) and web/webrtc.js's setTurnCredentials (a clear error for what the
// spec's snippet passes, the response body or its credentials accepted). Run by
// tests/hub/hub_ws.rs with `node --experimental-websocket --experimental-detect-module`:
//   node ws_client.mjs '{"base": "http://127.0.0.1:PORT", "conversation": UUID,
//                        "alice": {"id", "name", "token"}, "bob": {...}}'
import { cfg, expect, expectSame, fail, rest, run, sleep, step, QUIET, WAIT } from "./sio_lib.mjs";
import { SignalingSocket } from "../../web/signaling.js";
import WebRTCManager from "../../web/webrtc.js";

const wsUrl = cfg.base.replace(/^http/, "ws") + "/ws";

/// A SignalingSocket of `who`, recording every event in `got`, once connected.
async function open(who) {
  const s = new SignalingSocket(wsUrl, who.token);
  s.got = [];
  for (const e of ["call:incoming", "call:answered-elsewhere", "call:ice-candidate", "call:offer", "call:ended"]) {
    s.on(e, (data) => s.got.push({ event: e, data }));
  }
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${who.name}: no connect`)), WAIT);
    s.once("connect", () => (clearTimeout(t), resolve()));
  });
  // The upgrade's answer comes before the socket is the hub's: a round trip makes sure.
  await s.emitWithAck("probe", {}).catch(() => {});
  return s;
}

/// The first `event` in `s.got` from `from` on, within WAIT.
async function next(s, event, from = 0) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const m = s.got.slice(from).find((g) => g.event === event);
    if (m) return m.data;
    if (Date.now() > deadline) fail(`no ${event}: ${JSON.stringify(s.got)}`);
    await sleep(5);
  }
}

async function rejects(promise, check, what) {
  try {
    await promise;
  } catch (e) {
    return expect(check(e), `${what}: ${e.message}`);
  }
  fail(`${what}: not refused`);
}

await run(async () => {
  const { alice, bob } = cfg;

  // setTurnCredentials: what the spec's snippet passes is refused, saying what to pass.
  const noSocket = { on() {}, off() {}, emit() {} };
  const manager = new WebRTCManager(noSocket, { statsIntervalMs: 0 });
  const response = await fetch(`${cfg.base}/api/calls/turn-credentials`, {
    headers: { authorization: `Bearer ${alice.token}` },
  });
  const explains = (e) => e instanceof TypeError && e.message.includes("GET /api/calls/turn-credentials");
  // The spec: `turnCreds = await fetch(...)`, then `setTurnCredentials(turnCreds.credentials)`.
  await rejects(manager.setTurnCredentials(response.credentials), (e) => explains(e) && e.message.includes("undefined"),
    "the spec's snippet (undefined) throws a clear error");
  await rejects(manager.setTurnCredentials(response), (e) => explains(e) && e.message.includes("Response"),
    "a fetch Response throws a clear error");
  await rejects(manager.setTurnCredentials({ username: "u", credential: "c" }), explains,
    "credentials without urls throw");
  await rejects(manager.setTurnCredentials(null), explains, "null throws");
  const body = await response.json();
  const fromBody = await manager.setTurnCredentials(body);
  expect(fromBody.length === 1 && fromBody[0].urls.length > 0 && fromBody[0].username === body.credentials.username,
    "the whole response body is accepted");
  const fromCredentials = await manager.setTurnCredentials(body.credentials);
  expectSame(fromCredentials, fromBody, "its credentials are accepted");

  // SignalingSocket: relayed events are acked as socket.io acks them.
  const a = await open(alice);
  const phone = await open({ ...bob, name: "Bob's phone" });
  const laptop = await open({ ...bob, name: "Bob's laptop" });
  expect(typeof phone.id === "string" && phone.id !== laptop.id, "each SignalingSocket has its own id");
  const r = await rest("POST", "/api/calls/initiate", alice.token,
    { conversationId: cfg.conversation, participantIds: [bob.id] });
  if (r.status !== 201) fail(`initiate: ${JSON.stringify(r.body)}`);
  const callId = r.body.callId;
  await next(phone, "call:incoming");
  await next(laptop, "call:incoming");

  const acked = await new Promise((resolve) =>
    a.emit("call:ice-candidate", { callId, targetUserId: bob.id, candidate: null }, resolve));
  expectSame(acked, { success: true }, "emit with a callback: a relayed null candidate acked");
  expectSame(await next(phone, "call:ice-candidate"), { callId, fromUserId: alice.id, candidate: null },
    "the null candidate relayed");
  const offer = { type: "offer", sdp: "v=0\r\n" };
  expectSame(await a.emitWithAck("call:offer", { callId, targetUserId: bob.id, offer }), { success: true },
    "emitWithAck of a relayed offer resolves");
  await rejects(a.emitWithAck("call:offer", { callId, targetUserId: alice.id, offer }),
    (e) => e.code === "not_a_participant", "emitWithAck of a refused relay rejects with its code");

  // A REST answer naming the phone's socket: the laptop is told, the phone is not.
  const phoneMark = phone.got.length;
  const answered = await fetch(`${cfg.base}/api/calls/${callId}/answer`, {
    method: "POST",
    headers: { authorization: `Bearer ${bob.token}`, "x-socket-id": phone.id },
  });
  expect(answered.status === 200, "bob answered over REST from his phone");
  expectSame(await next(laptop, "call:answered-elsewhere"), { callId, userId: bob.id },
    "the laptop got call:answered-elsewhere");
  await sleep(QUIET);
  const told = phone.got.slice(phoneMark).filter((m) => m.event === "call:answered-elsewhere");
  expect(told.length === 0, "the phone, named by X-Socket-Id, was not told");

  for (const s of [a, phone, laptop]) s.close();
  step("closed");
});
