// The page's JS clients past their tokens' `exp` (signaling/src/socket/lease.rs), under node
// with tokens of `cfg.ttl` seconds: a call held through several expiries. Alice is a
// SignalingSocket (/ws) given an async token provider; Bob a stock socket.io-client given
// `authOf` and `keepTokenFresh`; both refresh on every `auth:expiring` and are never
// disconnected. Carol's provider fails the first refresh: her socket is closed at `exp` (1008
// `token expired`), reconnects at once with a fresh token, and is still in the call. Run by
// tests/hub/hub_ws.rs with `node --experimental-websocket --experimental-detect-module`:
//   node token_refresh.mjs '{"base", "conversation", "jwtSecret", "ttl", "hold",
//                            "alice": {"id", "name", "token"}, "bob": {...}, "carol": {...}}'
import { io } from "socket.io-client";
import { ack, cfg, connected, expect, fail, initiate, mint, next, run, sleep, step, WAIT } from "./sio_lib.mjs";
import { SignalingSocket, authOf, keepTokenFresh } from "../../web/signaling.js";

/// A provider of fresh tokens of `who`, asynchronous as a host application's fetch is, counting
/// what it is asked (`provider.asked`); `failing(n)` makes its n-th answer a failure.
function provider(who, failing = () => false) {
  const p = async () => {
    p.asked += 1;
    await sleep(20);
    if (failing(p.asked)) throw new Error(`${who.name}'s provider is down`);
    return mint(who);
  };
  p.asked = 0;
  return p;
}

/// Records on `s` its events (`s.got`), connections (`s.connects`) and disconnects (`s.lost`).
function record(s, who) {
  s.who = who.name;
  s.got = [];
  s.lost = [];
  const events = ["call:incoming", "call:ice-candidate", "auth:expiring", "call:ended"];
  for (const e of events) s.on(e, (data) => s.got.push({ event: e, data }));
  s.on("disconnect", (reason, details) => s.lost.push({ reason, details }));
  s.connects = 0;
  s.on("connect", () => (s.connects += 1));
  return s;
}

const wsUrl = cfg.base.replace(/^http/, "ws") + "/ws";

await run(async () => {
  const { alice, bob, carol } = cfg;
  const aliceTokens = provider(alice);
  const bobTokens = provider(bob);
  const carolTokens = provider(carol, (n) => n === 2);
  const failures = [];
  const a = record(new SignalingSocket(wsUrl, aliceTokens), alice);
  const b = record(io(cfg.base, { auth: authOf(bobTokens), reconnection: false, timeout: WAIT }), bob);
  keepTokenFresh(b, bobTokens, (e) => failures.push(e));
  const c = record(new SignalingSocket(wsUrl, carolTokens, { onTokenError: (e) => failures.push(e) }), carol);
  await Promise.all([connected(a), connected(b), connected(c)]);
  // A round trip each: the sockets are the hub's.
  for (const s of [a, c]) await s.emitWithAck("probe", {}).catch(() => {});
  step("connected with providers' tokens");
  const started = Date.now();

  const rung = [next(b, "call:incoming"), next(c, "call:incoming")];
  const call = await initiate(alice, [bob.id, carol.id]);
  await Promise.all(rung);
  const accepted = await ack(b, "call:accept", { callId: call });
  expect(!accepted.error, `Bob answered: ${JSON.stringify(accepted)}`);
  await c.emitWithAck("call:accept", { callId: call });
  step("Bob and Carol answered");

  // Carol's first refresh fails: closed for expiry, back at once with a fresh token.
  const closedBy = Date.now() + (cfg.ttl + 3) * 1000;
  while (c.lost.length === 0 && Date.now() < closedBy) await sleep(50);
  const [lost] = c.lost;
  expect(lost?.details?.code === 1008 && lost.details.reason === "token expired", `Carol closed for expiry: ${JSON.stringify(lost)}`);
  const backBy = Date.now() + WAIT;
  while (c.connects < 2 && Date.now() < backBy) await sleep(20);
  if (c.connects < 2) fail("Carol did not reconnect");
  await c.emitWithAck("probe", {}).catch(() => {});
  expect(carolTokens.asked === 3, `Carol reconnected with a fresh token (provider asked ${carolTokens.asked} times)`);
  const candidate = { candidate: "candidate:1 1 udp 2122260223 192.0.2.1 50001 typ host", sdpMid: "0", sdpMLineIndex: 0 };
  const heard = next(c, "call:ice-candidate");
  await a.emitWithAck("call:ice-candidate", { callId: call, targetUserId: carol.id, candidate });
  expect((await heard).callId === call, "Carol is still in the call, relayed to");

  // Held past several expiries; then relayed to, and left.
  while (Date.now() - started < cfg.hold * 1000) await sleep(100);
  const toBob = await a.emitWithAck("call:ice-candidate", { callId: call, targetUserId: bob.id, candidate });
  expect(toBob.success === true, "Alice signals Bob past the expiries");
  const relayed = b.got.filter((m) => m.event === "call:ice-candidate");
  if (relayed.length === 0) await next(b, "call:ice-candidate");
  step("Bob got it");
  const left = await a.emitWithAck("call:end", { callId: call });
  expect(left.status === "left" && left.callStatus === "active", `Alice leaves the call, which goes on: ${JSON.stringify(left)}`);

  const expiring = (s) => s.got.filter((m) => m.event === "auth:expiring").length;
  const expiries = Math.floor(cfg.hold / cfg.ttl);
  expect(expiring(a) >= expiries && aliceTokens.asked >= expiries + 1,
    `Alice refreshed on each warning (${expiring(a)} warnings, provider asked ${aliceTokens.asked} times)`);
  expect(expiring(b) >= expiries && bobTokens.asked >= expiries + 1,
    `Bob refreshed on each warning (${expiring(b)} warnings, provider asked ${bobTokens.asked} times)`);
  expect(a.lost.length === 0 && b.lost.length === 0 && b.connected,
    `Alice and Bob were never disconnected (${JSON.stringify([a.lost, b.lost])})`);
  expect(failures.length === 1, `only Carol's failed refresh was reported: ${failures.map((e) => e.message)}`);
  if (c.lost.length !== 1) fail(`Carol was closed again: ${JSON.stringify(c.lost)}`);
  console.log(`held ${Date.now() - started} ms`);
  for (const s of [a, b, c]) s.close();
});
