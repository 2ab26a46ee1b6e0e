// Several devices of one user through /socket.io/, with the stock npm socket.io-client: both
// of Bob's ring, the first to answer wins, the other hears `call:answered-elsewhere`, and
// from then on both get what is relayed to Bob. Run by tests/hub/hub_sio.rs:
//   node sio_devices.mjs '{"base": "http://127.0.0.1:PORT", "conversation": UUID,
//                          "alice": {"id", "name", "token"}, "bob": {...}}'
import {
  ack, cfg, connect, connected, expect, expectSame, initiate, next, run, since, step,
} from "./sio_lib.mjs";

await run(async () => {
  const { alice, bob } = cfg;
  const email = (p) => `${p.name.toLowerCase()}@example.com`;
  // Bob's phone on websocket, his laptop on polling only: both transports deliver.
  const a = connect(alice, { transports: ["websocket"] });
  const phone = connect({ ...bob, name: "Bob's phone" }, { transports: ["websocket"] });
  const laptop = connect({ ...bob, name: "Bob's laptop" }, { transports: ["polling"] });
  await Promise.all([connected(a), connected(phone), connected(laptop)]);
  expect(laptop.io.engine.transport.name === "polling", "bob's laptop stays on polling");

  // Both devices ring, with the same call:incoming.
  const ringing = [next(phone, "call:incoming"), next(laptop, "call:incoming")];
  const callId = await initiate(alice, [bob.id]);
  const [onPhone, onLaptop] = await Promise.all(ringing);
  expect(onPhone.callId === callId && onPhone.initiatedBy === alice.id, "bob's phone got call:incoming");
  expectSame(onLaptop, onPhone, "bob's laptop got the same call:incoming");

  // The phone answers (its ack is the REST answer body); the laptop stops ringing; Alice
  // hears Bob join.
  const elsewhere = next(laptop, "call:answered-elsewhere");
  const joined = next(a, "call:participant-joined");
  const phoneMark = phone.got.length;
  const accepted = await ack(phone, "call:accept", { callId });
  expect(accepted.callId === callId && accepted.status === "active" && typeof accepted.startedAt === "string",
    `the phone's accept acked active: ${JSON.stringify(accepted)}`);
  expectSame(await elsewhere, { callId, userId: bob.id }, "bob's laptop got call:answered-elsewhere");
  expectSame(await joined, { callId, userId: bob.id, userName: bob.name, userIdentifier: email(bob) },
    "alice got call:participant-joined");
  const onPhoneSince = await since(phone, phoneMark);
  expect(onPhoneSince.length === 0, `the answering phone got nothing more: ${JSON.stringify(onPhoneSince)}`);

  // The first answer won: the laptop cannot answer too (409, as over REST), with or without
  // an acknowledgement.
  const late = await ack(laptop, "call:accept", { callId });
  expect(late.error && late.error.code === "invalid_transition" && late.error.message,
    `a second accept refused in its ack: ${JSON.stringify(late)}`);
  const lateError = next(laptop, "error");
  laptop.emit("call:accept", { callId });
  const le = await lateError;
  expect(le.code === "invalid_transition" && le.event === "call:accept" && le.message,
    `a second accept refused with an error event: ${JSON.stringify(le)}`);

  // What is relayed to Bob reaches both devices; either device signals as Bob.
  const offer = { type: "offer", sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n" };
  const offers = [next(phone, "call:offer"), next(laptop, "call:offer")];
  a.emit("call:offer", { callId, targetUserId: bob.id, offer });
  for (const o of await Promise.all(offers)) {
    expectSame(o, { callId, fromUserId: alice.id, offer }, "a device of bob got alice's offer");
  }
  const answered = next(a, "call:answer");
  const answer = { type: "answer", sdp: "v=0\r\n" };
  const relayed = await ack(laptop, "call:answer", { callId, targetUserId: alice.id, answer });
  expectSame(relayed, { success: true }, "the laptop's answer acked as relayed");
  expectSame(await answered, { callId, fromUserId: bob.id, answer }, "alice got bob's answer from his laptop");

  // The phone goes; the laptop still gets everything.
  phone.close();
  const cand = { candidate: "candidate:1 1 udp 1 127.0.0.1 40000 typ host", sdpMid: "0" };
  const onLaptopCand = next(laptop, "call:ice-candidate");
  a.emit("call:ice-candidate", { callId, targetUserId: bob.id, candidate: cand });
  expectSame(await onLaptopCand, { callId, fromUserId: alice.id, candidate: cand },
    "with the phone gone, the laptop got the candidate");

  // Alice hangs up: the laptop hears it.
  const ended = next(laptop, "call:ended");
  const end = await ack(a, "call:end", { callId });
  expect(end.status === "ended" && end.endReason === "ended-by-user", "alice's end acked");
  expectSame(await ended, { callId, reason: "ended-by-user", endedBy: alice.id }, "bob's laptop got call:ended");

  for (const s of [a, laptop]) s.close();
  console.log(`done ${callId}`);
});
