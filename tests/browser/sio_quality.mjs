// `call:stats` through /socket.io/, with the stock npm socket.io-client, in a call Alice made
// and Bob answered (cfg.callId, set up by the test over REST): reports graded and pushed to
// the other participant as `call:quality`, at most one per second, bad figures and strangers
// refused; then Alice hangs up. Run by tests/hub/hub_sio.rs, which then checks the store:
//   node sio_quality.mjs '{"base", "conversation", "callId", "alice", "bob", "eve"}'
import {
  ack, cfg, connect, connected, expect, expectSame, next, run, since, sleep, step,
} from "./sio_lib.mjs";

await run(async () => {
  const { alice, bob, eve, callId } = cfg;
  const [a, b, e] = [alice, bob, eve].map((p) => connect(p, { transports: ["websocket"] }));
  await Promise.all([a, b, e].map(connected));

  // A report: acked with its grade; the other participant hears it.
  const good = { rtt: 40, jitter: 5, packetLoss: 0.2, bitrate: 1500000, relayed: true };
  const heard = next(b, "call:quality");
  expectSame(await ack(a, "call:stats", { callId, ...good }), { success: true, quality: "excellent" },
    "alice's report acked excellent");
  expectSame(await heard, { callId, userId: alice.id, quality: "excellent", stats: good },
    "bob got call:quality for alice");

  // Refusals: too soon, bad figures, a stranger; none reaches anyone.
  const marks = [a.got.length, b.got.length];
  const refused = async (who, data, code, what) => {
    const r = await ack(who, "call:stats", data);
    expect(r.error && r.error.code === code && r.error.message,
      `${what}: ${code} (${JSON.stringify(r)})`);
  };
  await refused(a, { callId, rtt: 41 }, "rate_limited", "a second report within a second");
  await refused(b, { callId, packetLoss: 150 }, "invalid_field", "packetLoss over 100");
  await refused(b, { callId, rtt: -1 }, "invalid_field", "a negative rtt");
  await refused(b, { callId, rtt: "fast" }, "invalid_field", "an rtt that is not a number");
  await refused(b, { callId, rtt: 10, mos: 4.2 }, "invalid_field", "an unknown field");
  await refused(b, { callId }, "invalid_field", "no figures");
  await refused(b, { rtt: 10 }, "invalid_field", "no callId");
  await refused(e, { callId, rtt: 10 }, "not_a_participant", "eve, not in the call");
  expectSame(await since(a, marks[0]), [], "alice got nothing from the refusals");
  expectSame(await since(b, marks[1]), [], "bob got nothing from the refusals");

  // Bob's bad connection: poor, and Alice hears it.
  const toAlice = next(a, "call:quality");
  const poor = { rtt: 800, packetLoss: 12 };
  expectSame(await ack(b, "call:stats", { callId, ...poor }), { success: true, quality: "poor" },
    "bob's report acked poor");
  expectSame(await toAlice, { callId, userId: bob.id, quality: "poor", stats: poor },
    "alice got call:quality poor for bob");

  // A second later Alice may report again; without an ack it is just as good.
  await sleep(1100);
  const second = next(b, "call:quality");
  a.emit("call:stats", { callId, rtt: 200, jitter: 10, packetLoss: 1 });
  expectSame(await second, { callId, userId: alice.id, quality: "good", stats: { rtt: 200, jitter: 10, packetLoss: 1 } },
    "alice's second report (no ack): bob got call:quality good");

  // Alice hangs up; reports are refused after the end.
  const ended = next(b, "call:ended");
  const end = await ack(a, "call:end", { callId });
  expect(end.status === "ended", `alice's end acked: ${JSON.stringify(end)}`);
  await ended;
  await refused(b, { callId, rtt: 10 }, "invalid_transition", "a report after the end");
  step("quality done");
});
