// A stock socket.io-client past its token's `exp` (signaling/src/socket/lease.rs), tokens of
// `cfg.ttl` seconds minted here. Bob's socket is warned (`auth:expiring`), has a refresh with
// a bad token and one with Alice's refused (the term stays), does not refresh, and is told
// `token_expired` and disconnected by the server at `exp`. He connects again with a fresh
// token within the reconnect grace: still in his call with Alice, relayed to. Run by
// tests/hub/hub_sio.rs:
//   node sio_expiry.mjs '{"base", "conversation", "jwtSecret", "ttl", "alice": {...}, "bob": {...}}'
import { ack, cfg, connect, connected, expect, expectSame, initiate, mint, next, run, sleep, step } from "./sio_lib.mjs";

await run(async () => {
  const { alice, bob } = cfg;
  const a = connect(alice);
  const b = connect({ ...bob, token: mint(bob) });
  const exp = Math.floor(Date.now() / 1000) + cfg.ttl;
  await Promise.all([connected(a), connected(b)]);
  const rung = next(b, "call:incoming");
  const call = await initiate(alice, [bob.id]);
  await rung;
  const answered = await ack(b, "call:accept", { callId: call });
  expect(answered.status === "active", "Bob answered");

  // Warned ahead of `exp`, at least two seconds.
  const warned = new Promise((resolve) => b.once("auth:expiring", resolve));
  const warning = await Promise.race([warned, sleep(cfg.ttl * 1000).then(() => null)]);
  expect(warning && Date.parse(warning.expiresAt) - Date.now() >= 2000, `warned: ${JSON.stringify(warning)}`);
  const bad = await ack(b, "auth:refresh", { token: "x.y.z" });
  expectSame(bad.error?.code, "invalid_token", "a bad token is refused");
  const alices = await ack(b, "auth:refresh", { token: mint(alice) });
  expectSame(alices.error?.code, "wrong_user", "another user's token is refused");

  // Not refreshed: told why and disconnected at `exp`.
  const gone = new Promise((resolve) => b.once("disconnect", (reason) => resolve(reason)));
  const reason = await Promise.race([gone, sleep((cfg.ttl + 3) * 1000).then(() => "still connected")]);
  const late = Date.now() - exp * 1000;
  expectSame(reason, "io server disconnect", "disconnected by the server");
  expect(late > -300 && late < 2000, `at exp (${late} ms after it)`);
  expect(b.got.some((m) => m.event === "error" && m.data?.code === "token_expired"), "told token_expired");

  // Back with a fresh token, within the grace: still in the call.
  b.auth = { token: mint(bob) };
  b.connect();
  await connected(b);
  const candidate = { candidate: "candidate:1 1 udp 2122260223 192.0.2.1 50001 typ host", sdpMid: "0", sdpMLineIndex: 0 };
  const heard = next(b, "call:ice-candidate");
  const relayed = await ack(a, "call:ice-candidate", { callId: call, targetUserId: bob.id, candidate });
  expectSame(relayed, { success: true }, "Alice signals Bob after he is back");
  await heard;
  step("Bob is still in the call");
  const ended = await ack(b, "call:end", { callId: call });
  expectSame(ended.callStatus, "ended", "Bob ends the call");
  a.close();
  b.close();
});
