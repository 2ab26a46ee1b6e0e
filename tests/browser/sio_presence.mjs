// The reconnect grace through /socket.io/, with the stock npm socket.io-client. The daemon runs
// with `calls.reconnect_grace` = cfg.graceMs. Run by tests/hub/hub_sio.rs:
//   node sio_presence.mjs '{"base", "conversation", "graceMs", "alice", "bob", "eve"}'
// - 1:1: Bob drops and reconnects within the grace: nobody hears anything and signaling goes
//   on; then he drops for good: Alice gets call:ended (connection-lost, endedBy Bob) once the
//   grace has passed, not before.
// - group (Alice, Bob, Eve): Eve drops for good: the others get call:participant-left
//   (disconnected), and the call goes on between Alice and Bob.
// Prints "done1 <call>" and "done2 <call>" for the test to check the store.
import {
  ack, cfg, connect, connected, expect, expectSame, initiate, next, run, since, sleep, step,
} from "./sio_lib.mjs";

// Under the scripts' WAIT (5 s), so that "past the grace" is within every wait.
const grace = cfg.graceMs;

/// Connected sockets of `people`.
async function online(...people) {
  const sockets = people.map((p) => connect(p, { transports: ["websocket"] }));
  await Promise.all(sockets.map(connected));
  return sockets;
}

/// `caller` (a socket) calls `invitees` (sockets), who all accept: the call id, once the
/// caller has heard each of them join.
async function callAndAccept(caller, invitees) {
  const rung = invitees.map((s) => next(s, "call:incoming"));
  const callId = await initiate(caller.person, invitees.map((s) => s.person.id));
  await Promise.all(rung);
  for (const s of invitees) {
    const joined = next(caller, "call:participant-joined");
    const r = await ack(s, "call:accept", { callId });
    expect(r.status === "active", `${s.who} accepted: ${JSON.stringify(r)}`);
    expect((await joined).userId === s.person.id, `${caller.who} heard ${s.who} join`);
  }
  return callId;
}

function candidate(n) {
  return { candidate: `candidate:${n} 1 udp 2122260223 10.0.0.1 ${50000 + n} typ host`, sdpMid: "0", sdpMLineIndex: 0 };
}

await run(async () => {
  const { alice, bob, eve } = cfg;

  // A client's emits made before it is connected go out the moment it is: each must be
  // performed and acked, never dropped for want of a handler (20 fresh sockets).
  for (let i = 0; i < 20; i++) {
    const early = connect(eve, { transports: ["websocket"] });
    const acked = ack(early, "call:ice-candidate",
      { callId: "00000000-0000-4000-8000-000000000000", targetUserId: alice.id, candidate: candidate(i) });
    const r = await acked;
    if (!(r.error && r.error.code === "not_in_call")) fail(`an early emit (${i}): ${JSON.stringify(r)}`);
    early.close();
  }
  step("emits made before the connection are all acked");

  // ---- 1:1
  let [a, b] = await online(alice, bob);
  a.person = alice;
  b.person = bob;
  const call1 = await callAndAccept(a, [b]);

  // Bob drops and is back well within the grace.
  const mark = a.got.length;
  b.disconnect();
  await sleep(grace / 4);
  [b] = await online(bob);
  b.person = bob;
  await sleep(grace);
  const heard = await since(a, mark);
  expectSame(heard, [], "a reconnect within the grace: alice heard nothing");
  const relayed = next(a, "call:ice-candidate");
  b.emit("call:ice-candidate", { callId: call1, targetUserId: alice.id, candidate: candidate(1) });
  expectSame(await relayed, { callId: call1, fromUserId: bob.id, candidate: candidate(1) },
    "the call goes on: bob's new socket signals alice");

  // Bob drops for good: the call ends once the grace has passed, not before.
  const dropped = Date.now();
  const ended = next(a, "call:ended");
  b.disconnect();
  const end = await ended;
  const after = Date.now() - dropped;
  expectSame(end, { callId: call1, reason: "connection-lost", endedBy: bob.id },
    "bob gone past the grace: alice got call:ended (connection-lost)");
  expect(after >= grace, `not before the grace (${after} ms >= ${grace} ms)`);
  console.log(`done1 ${call1}`);

  // ---- group
  let e;
  [b, e] = await online(bob, eve);
  b.person = bob;
  e.person = eve;
  const call2 = await callAndAccept(a, [b, e]);
  const leftA = next(a, "call:participant-left");
  const leftB = next(b, "call:participant-left");
  e.disconnect();
  expectSame(await leftA, { callId: call2, userId: eve.id, reason: "disconnected" },
    "eve gone past the grace: alice got call:participant-left (disconnected)");
  expectSame(await leftB, { callId: call2, userId: eve.id, reason: "disconnected" },
    "bob got it too");
  const toBob = next(b, "call:ice-candidate");
  a.emit("call:ice-candidate", { callId: call2, targetUserId: bob.id, candidate: candidate(2) });
  expectSame(await toBob, { callId: call2, fromUserId: alice.id, candidate: candidate(2) },
    "the group call goes on between alice and bob");
  const refused = await ack(a, "call:ice-candidate", { callId: call2, targetUserId: eve.id, candidate: candidate(3) });
  expect(refused.error && refused.error.code === "not_a_participant",
    `eve is out of it: ${JSON.stringify(refused)}`);
  console.log(`done2 ${call2}`);
  step("presence done");
});
