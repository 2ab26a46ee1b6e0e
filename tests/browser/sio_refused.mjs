// Forbidden messages through /socket.io/, with the stock npm socket.io-client. Each one is
// sent twice: with an acknowledgement callback (the ack must be exactly
// `{error: {code, message}}`) and without (an `error` event `{code, message, event}` must
// come); none may deliver anything to any other socket. Run by tests/hub/hub_sio.rs:
//   node sio_refused.mjs '{"base": "http://127.0.0.1:PORT", "conversation": UUID,
//                          "alice": {"id", "name", "token"}, "bob", "eve", "mallory": {...},
//                          "part": "refusals" | "oversized" | "arrays"}'
// Alice calls Bob, who answers; Eve is a member of the conversation who is not in the call,
// Mallory a user who is not even a member of the conversation.
import {
  ack, cfg, connect, connected, expect, expectSame, fail, initiate, next, rest, run, since, sleep,
  step, QUIET, WAIT,
} from "./sio_lib.mjs";

const show = (v) => JSON.stringify(v);
const keys = (o) => (o && typeof o === "object" ? Object.keys(o).sort().join(",") : `(${show(o)})`);
/// Stands for "no data at all": `emit(event)`.
const NOTHING = Symbol("no data");
const args = (data) => (data === NOTHING ? [] : [data]);

/// `socket` sends `event` with `data`, with an ack and then without: refused both times with
/// one of `codes` (a code, or a list of the acceptable ones). Counts the `error` events the
/// socket is owed in `socket.owed`.
async function refused(socket, event, data, codes, what) {
  const ok = (code) => (Array.isArray(codes) ? codes.includes(code) : code === codes);
  const label = `${socket.who}: ${what} (${event} ${data === NOTHING ? "without data" : show(data)})`;
  const a = await ack(socket, event, ...args(data)).catch((e) => fail(`${label}: no ack: ${e.message}`));
  if (!(keys(a) === "error" && keys(a.error) === "code,message" && ok(a.error.code)
        && typeof a.error.message === "string" && a.error.message.length > 0)) {
    fail(`${label}: ack ${show(a)}, expected {error: {code: ${show(codes)}, message}}`);
  }
  const error = next(socket, "error");
  socket.emit(event, ...args(data));
  const e = await error.catch((err) => fail(`${label}: ${err.message}`));
  if (!(keys(e) === "code,event,message" && ok(e.code) && e.event === event && e.message)) {
    fail(`${label}: error event ${show(e)}, expected {code: ${show(codes)}, message, event: ${event}}`);
  }
  socket.owed = (socket.owed || 0) + 1;
  step(`${label} refused: ${a.error.code}`);
}

/// Since `marks`, each socket got nothing but the `error` events it was owed.
async function nothingDelivered(sockets, marks, what) {
  await sleep(QUIET);
  for (const [i, s] of sockets.entries()) {
    const got = s.got.slice(marks[i]);
    const errors = got.filter((m) => m.event === "error").length;
    const others = got.filter((m) => m.event !== "error");
    expect(others.length === 0 && errors === (s.owed || 0),
      `${what}: ${s.who} got only its ${s.owed || 0} error events (${errors} errors, other events ${show(others)})`);
    s.owed = 0;
  }
}

/// Alice calls Bob, who answers over his socket: the call id.
async function liveCall(alice, bob) {
  const incoming = next(bob, "call:incoming");
  const callId = await initiate(cfg.alice, [cfg.bob.id]);
  await incoming;
  const joined = next(alice, "call:participant-joined");
  const accepted = await ack(bob, "call:accept", { callId });
  if (accepted.status !== "active") fail(`bob's accept: ${show(accepted)}`);
  await joined;
  step("a live call between alice and bob");
  return callId;
}

async function refusals() {
  const alice = connect(cfg.alice);
  const bob = connect(cfg.bob);
  const eve = connect(cfg.eve, { transports: ["websocket"] });
  const mallory = connect(cfg.mallory, { transports: ["polling"] });
  const all = [alice, bob, eve, mallory];
  await Promise.all(all.map(connected));
  const callId = await liveCall(alice, bob);
  let marks = all.map((s) => s.got.length);
  const { alice: A, bob: B, eve: E, mallory: M } = cfg;
  const offer = { type: "offer", sdp: "v=0\r\n" };
  const candidate = { candidate: "candidate:1 1 udp 1 127.0.0.1 40000 typ host", sdpMid: "0" };
  const signal = (target, extra = {}) => ({ callId, targetUserId: target, offer, ...extra });
  const ghost = crypto.randomUUID();

  // Signaling in a call one is not in, or to someone who is not in it.
  await refused(eve, "call:offer", signal(B.id), "not_in_call", "a member not in the call signals into it");
  await refused(eve, "call:ice-candidate", { callId, targetUserId: A.id, candidate }, "not_in_call",
    "a member not in the call sends a candidate");
  await refused(mallory, "call:offer", signal(B.id), "not_in_call", "a non-member signals into the call");
  await refused(alice, "call:offer", signal(E.id), "not_a_participant", "to a member not in the call");
  await refused(alice, "call:offer", signal(M.id), "not_a_participant", "to a non-member");
  await refused(alice, "call:offer", signal(ghost), "not_a_participant", "to an unknown user");
  await refused(alice, "call:offer", signal(A.id), "not_a_participant", "to oneself");
  await refused(alice, "call:answer", { callId: ghost, targetUserId: B.id, answer: offer }, "not_in_call",
    "in an unknown call");

  // Invalid UUIDs, missing fields, wrong types.
  await refused(alice, "call:offer", signal(B.id, { callId: "not-a-uuid" }), "invalid_field", "an invalid call id");
  await refused(alice, "call:offer", signal("1234"), "invalid_field", "an invalid target id");
  await refused(alice, "call:offer", signal(42), "invalid_field", "a target id of the wrong type");
  await refused(alice, "call:offer", { callId, targetUserId: B.id }, "invalid_field", "no offer");
  await refused(alice, "call:ice-candidate", signal(B.id), "invalid_field", "a candidate without `candidate`");
  await refused(alice, "call:offer", { targetUserId: B.id, offer }, "invalid_field", "no call id");
  await refused(alice, "call:offer", null, "invalid_field", "null data");
  await refused(alice, "call:offer", "call", "invalid_field", "a string for data");
  await refused(alice, "call:offer", 5, "invalid_field", "a number for data");
  await refused(alice, "call:offer", NOTHING, ["invalid_field", "invalid_frame"], "no data");
  await refused(alice, "call:accept", { callId: 123 }, "invalid_field", "a call id of the wrong type");
  await refused(alice, "call:end", { callId: "nope" }, "invalid_field", "an invalid call id");
  await refused(alice, "call:end", {}, "invalid_field", "no call id");
  await refused(alice, "call:end", { callId, reason: "bye" }, "invalid_field", "an unknown field");
  await refused(alice, "call:media", { callId, audioEnabled: "no" }, "invalid_field", "a flag of the wrong type");
  await refused(alice, "call:media", { callId }, "invalid_field", "no flag");
  await refused(alice, "call:reject", NOTHING, ["invalid_field", "invalid_frame"], "no data");

  // Unknown events.
  await refused(alice, "call:dance", { callId }, "unknown_event", "an unknown event");
  await refused(bob, "message", { text: "hi" }, "unknown_event", "an event that is not the hub's");

  // The actions of a stranger: 403 for a member of the conversation, 404 for anyone else
  // (the call does not exist for them), and 404 for an unknown call.
  await refused(eve, "call:accept", { callId }, "not_invited", "a member not invited accepts");
  await refused(eve, "call:reject", { callId }, "not_invited", "a member not invited rejects");
  await refused(eve, "call:end", { callId }, "not_a_participant", "a member not in the call ends it");
  await refused(eve, "call:media", { callId, audioEnabled: false }, "not_a_participant",
    "a member not in the call changes media");
  for (const action of ["call:accept", "call:reject", "call:end"]) {
    await refused(mallory, action, { callId }, "call_not_found", "a non-member acts on the call");
  }
  await refused(mallory, "call:media", { callId, videoEnabled: false }, "call_not_found",
    "a non-member changes media");
  await refused(alice, "call:end", { callId: ghost }, "call_not_found", "an unknown call");
  await refused(alice, "call:reject", { callId }, "not_invited", "the caller rejects her own call");

  // Transitions that do not apply now (409).
  await refused(bob, "call:accept", { callId }, "invalid_transition", "accepting a call one has joined");
  await refused(bob, "call:reject", { callId }, "invalid_transition", "rejecting a call one has joined");

  await nothingDelivered(all, marks, "refused in a live call");

  // The sockets still work, and the call is intact.
  const got = next(bob, "call:offer");
  alice.emit("call:offer", signal(B.id));
  expectSame(await got, { callId, fromUserId: A.id, offer }, "after all that, alice's offer reaches bob");
  const call = await rest("GET", `/api/calls/${callId}`, A.token);
  expect(call.status === 200 && call.body.call.status === "active"
    && call.body.call.participants.every((p) => p.mediaState.audioEnabled && p.mediaState.videoEnabled),
  `the call is still active, its media unchanged: ${show(call.body.call && call.body.call.participants)}`);

  // Bob ends it; then answering, ending, changing media and signaling are refused.
  const ended = next(alice, "call:ended");
  const end = await ack(bob, "call:end", { callId });
  expect(end.status === "ended", `bob's end acked: ${show(end)}`);
  await ended;
  await sleep(QUIET);
  marks = all.map((s) => s.got.length);
  await refused(bob, "call:accept", { callId }, "invalid_transition", "answering an ended call");
  await refused(bob, "call:end", { callId }, "invalid_transition", "ending an ended call");
  await refused(alice, "call:media", { callId, screenSharing: true }, "invalid_transition",
    "media in an ended call");
  await refused(alice, "call:offer", signal(B.id), "not_in_call", "signaling in an ended call");
  await refused(bob, "call:ice-candidate", { callId, targetUserId: A.id, candidate }, "not_in_call",
    "a candidate in an ended call");
  await nothingDelivered(all, marks, "refused after the end");

  for (const s of all) s.close();
  console.log(`done ${callId}`);
}

/// Sends an offer with an SDP of `size` bytes from `from` to Bob, with an ack when `withAck`:
/// what came of it, `{ack}`, `{error}` (an error event), `{disconnected}` or `{nothing}`.
async function sendSized(from, callId, size, withAck) {
  const offer = { type: "offer", sdp: "a".repeat(size) };
  const data = { callId, targetUserId: cfg.bob.id, offer };
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve({ nothing: true }), WAIT);
    const done = (r) => (clearTimeout(t), resolve(r));
    from.once("disconnect", (reason) => done({ disconnected: reason }));
    if (withAck) {
      from.timeout(WAIT).emitWithAck("call:offer", data).then((a) => done({ ack: a }), () => {});
    } else {
      from.once("error", (e) => done({ error: e }));
      from.emit("call:offer", data);
      // Accepted and relayed, a message without an ack is answered with nothing.
      setTimeout(() => done({ nothing: true }), 1000);
    }
  });
}

async function oversized() {
  const bob = connect(cfg.bob);
  const alice = connect(cfg.alice, { transports: ["websocket"] });
  await Promise.all([connected(bob), connected(alice)]);
  const callId = await liveCall(alice, bob);
  // The bound of a connected socket is 256 KiB a message (signaling/src/socket/limits.rs
  // MAX_AUTHENTICATED_FRAME), past the 64 KiB of sio's maxPayload (which holds before the
  // CONNECT): a 150 KB offer (an SFU offer of a room of twenty with screens shared) goes whole.
  const UNDER = 150_000;
  const OVER = 300_000;

  // Under the bound: relayed whole, on either transport.
  for (const transport of ["polling", "websocket"]) {
    const s = connect({ ...cfg.alice, name: `alice (${transport})` }, { transports: [transport] });
    await connected(s);
    const got = next(bob, "call:offer");
    const r = await sendSized(s, callId, UNDER, true);
    expectSame(r, { ack: { success: true } }, `${transport}: a ${UNDER}-byte offer acked as relayed`);
    const o = await got;
    expect(o.fromUserId === cfg.alice.id && o.offer.sdp.length === UNDER,
      `${transport}: bob got the ${UNDER}-byte offer whole`);
    s.close();
  }

  // Over the bound: refused (the connection may be ended for it, as /ws does), never relayed.
  for (const [transport, withAck] of [["polling", true], ["polling", false], ["websocket", true], ["websocket", false]]) {
    const how = `${transport}, ${withAck ? "with" : "without"} an ack`;
    const s = connect({ ...cfg.alice, name: `alice (${how})` }, { transports: [transport] });
    await connected(s);
    const mark = bob.got.length;
    const r = await sendSized(s, callId, OVER, withAck);
    const onBob = await since(bob, mark);
    const relayed = onBob.filter((m) => m.event === "call:offer").map((m) => m.data.offer.sdp.length);
    if (relayed.length > 0) {
      fail(`${how}: a ${OVER}-byte offer was relayed to bob (sdp of ${relayed} bytes; the sender got ${show(r)}): `
        + `messages over 256 KiB are not refused on this transport`);
    }
    const refusedHow = r.disconnected !== undefined
      || (r.ack && r.ack.error && r.ack.error.code)
      || (r.error && r.error.code);
    expect(refusedHow, `${how}: a ${OVER}-byte offer refused (${show(r)}), nothing relayed`);
    s.close();
  }

  // A new socket of Alice's still signals.
  const again = connect(cfg.alice);
  await connected(again);
  const got = next(bob, "call:offer");
  const r = await sendSized(again, callId, 10, true);
  expectSame(r, { ack: { success: true } }, "a new socket's offer acked");
  expect((await got).fromUserId === cfg.alice.id, "bob got the new socket's offer");
  for (const s of [alice, bob, again]) s.close();
  console.log(`done ${callId}`);
}

async function arrays() {
  const alice = connect(cfg.alice);
  const bob = connect(cfg.bob);
  await Promise.all([connected(alice), connected(bob)]);
  const callId = await liveCall(alice, bob);
  const marks = [alice, bob].map((s) => s.got.length);
  const offer = { type: "offer", sdp: "v=0\r\n" };
  // The spec's data are objects; serde would take a struct from an array, field by field.
  await refused(alice, "call:offer", [callId, cfg.bob.id, offer, null, null], "invalid_field",
    "an offer's fields as an array");
  await refused(alice, "call:media", [callId, false, null, null], "invalid_field",
    "media flags as an array");
  await refused(alice, "call:end", [callId], "invalid_field", "a call id in an array");
  await nothingDelivered([alice, bob], marks, "data as arrays");
  const call = await rest("GET", `/api/calls/${callId}`, cfg.alice.token);
  expect(call.body.call.status === "active", `the call is still active: ${call.body.call.status}`);
  for (const s of [alice, bob]) s.close();
  console.log(`done ${callId}`);
}

await run(async () => {
  switch (cfg.part) {
    case "refusals": return refusals();
    case "oversized": return oversized();
    case "arrays": return arrays();
    default: return fail(`unknown part ${show(cfg.part)}`);
  }
});
