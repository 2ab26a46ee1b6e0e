// The spec's client code as written, through /socket.io/ with the stock npm socket.io-client:
// the caller listed among participantIds (and duplicates) ignored; a REST answer naming the
// answering socket in X-Socket-Id stops the other device ringing (call:answered-elsewhere) and
// not that one; a rejection on one device (socket or REST) stops the others
// (call:rejected-elsewhere); `candidate: null` relayed and acked; an invitee switchboard has
// never seen rung once a socket of theirs connects, and named from its token. Run by
// tests/hub/hub_sio.rs:
//   node sio_tolerance.mjs '{"base": "http://127.0.0.1:PORT", "conversation": UUID,
//                            "open": UUID, "alice": {...}, "bob": {...}, "zed": {...}}'
import {
  ack, cfg, connect, connected, expect, expectSame, fail, next, rest, run, since, step,
} from "./sio_lib.mjs";

/// `POST /api/calls/initiate` as `by` in `conversation`, inviting `to` (ids): the body.
async function initiate(by, conversation, to) {
  const r = await rest("POST", "/api/calls/initiate", by.token, { conversationId: conversation, participantIds: to });
  if (r.status !== 201) fail(`initiate: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/// `POST /api/calls/{callId}/{action}` as `who`, from the socket `socketId` if given.
async function act(who, callId, action, socketId) {
  const headers = { authorization: `Bearer ${who.token}` };
  if (socketId) headers["x-socket-id"] = socketId;
  const r = await fetch(`${cfg.base}/api/calls/${callId}/${action}`, { method: "POST", headers });
  const body = await r.json();
  if (r.status !== 200) fail(`${action}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

await run(async () => {
  const { alice, bob, zed } = cfg;
  const a = connect(alice, { transports: ["websocket"] });
  const phone = connect({ ...bob, name: "Bob's phone" }, { transports: ["websocket"] });
  const laptop = connect({ ...bob, name: "Bob's laptop" }, { transports: ["polling"] });
  await Promise.all([connected(a), connected(phone), connected(laptop)]);
  const devices = [phone, laptop];

  // Alice invites every member she sees, herself included, and Bob twice: Bob is invited.
  let ringing = devices.map((d) => next(d, "call:incoming"));
  let call = await initiate(alice, cfg.conversation, [alice.id, bob.id, bob.id]);
  expectSame(call.participants.map((p) => p.userId), [bob.id], "the caller and a duplicate among participantIds ignored");
  let callId = call.callId;
  await Promise.all(ringing);

  // Bob answers over REST from his phone, naming its socket: the laptop stops ringing.
  const elsewhere = next(laptop, "call:answered-elsewhere");
  const phoneMark = phone.got.length;
  const answered = await act(bob, callId, "answer", phone.id);
  expect(answered.status === "active", "bob answered over REST with X-Socket-Id");
  expectSame(await elsewhere, { callId, userId: bob.id }, "bob's laptop got call:answered-elsewhere");
  const onPhone = (await since(phone, phoneMark)).filter((m) => m.event.endsWith("-elsewhere"));
  expect(onPhone.length === 0, `the answering phone was not told: ${JSON.stringify(onPhone)}`);

  // The end of candidates, `candidate: null`, is relayed (to both devices) and acked.
  const ends = devices.map((d) => next(d, "call:ice-candidate"));
  const relayed = await ack(a, "call:ice-candidate", { callId, targetUserId: bob.id, candidate: null });
  expectSame(relayed, { success: true }, "a null candidate acked as relayed");
  for (const got of await Promise.all(ends)) {
    expectSame(got, { callId, fromUserId: alice.id, candidate: null }, "a device of bob got the null candidate");
  }
  let ended = devices.map((d) => next(d, "call:ended"));
  await ack(a, "call:end", { callId });
  await Promise.all(ended);

  // The laptop declines over its socket: the phone stops ringing.
  ringing = devices.map((d) => next(d, "call:incoming"));
  callId = (await initiate(alice, cfg.conversation, [bob.id])).callId;
  await Promise.all(ringing);
  let rejectedElsewhere = next(phone, "call:rejected-elsewhere");
  const rejected = await ack(laptop, "call:reject", { callId });
  expect(rejected.status === "rejected", "the laptop's reject acked");
  expectSame(await rejectedElsewhere, { callId, userId: bob.id }, "bob's phone got call:rejected-elsewhere");

  // Declined over REST without X-Socket-Id: every device of Bob's hears it.
  ringing = devices.map((d) => next(d, "call:incoming"));
  callId = (await initiate(alice, cfg.conversation, [bob.id])).callId;
  await Promise.all(ringing);
  rejectedElsewhere = devices.map((d) => next(d, "call:rejected-elsewhere"));
  await act(bob, callId, "reject");
  for (const got of await Promise.all(rejectedElsewhere)) {
    expectSame(got, { callId, userId: bob.id }, "without X-Socket-Id, a device of bob got call:rejected-elsewhere");
  }

  // Zed, whom switchboard has never seen, is called in a new conversation; his first socket
  // rings and names him.
  call = await initiate(alice, cfg.open, [zed.id]);
  expectSame(call.participants[0].userName, null, "an unseen invitee is called, unnamed");
  const z = connect(zed, { transports: ["websocket"] });
  const incoming = next(z, "call:incoming");
  await connected(z);
  expect((await incoming).callId === call.callId, "zed's first socket got call:incoming");
  const seen = await rest("GET", `/api/calls/${call.callId}`, alice.token);
  const zp = seen.body.call.participants.find((p) => p.userId === zed.id);
  expect(zp && zp.userName === zed.name, `zed named by his socket's token: ${JSON.stringify(zp)}`);
  const zAccepted = await ack(z, "call:accept", { callId: call.callId });
  expect(zAccepted.status === "active", "zed answered");

  for (const s of [a, phone, laptop, z]) s.close();
  console.log(`done ${call.callId}`);
});
