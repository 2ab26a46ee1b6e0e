#!/usr/bin/env node
// Crossed offers ("glare") in web/webrtc.js, made to happen every time. One page of the daemon's
// holds two WebRTCManagers, "a" and "b", relay-only through the daemon's TURN (credentials from
// its REST API after a demo sign-in). Their sockets are one in-page exchange that holds every
// message until both sides have sent an offer, then delivers both: each offer reaches a side
// that has one of its own out. Twice:
//   1. first offers (each manager is told the other joined, as a newcomer who saw someone join
//      before answering is): exactly one side drops its offer and answers the other's on a new
//      connection, and the two connect;
//   2. both renegotiate the connection at once (initiateCallToUser again): again one side
//      yields, the connection stays up and video keeps flowing both ways.
// Prints one JSON line; exit 0 on success, 1 on a failed check, 2 on bad usage, 124 on timeout.
//
// Usage: node glare.mjs --base http://127.0.0.1:8080 [--timeout-ms 90000] [--chromium PATH]

import { at, check, finish, left, runInChromium, start, until } from './script_lib.mjs';

const opts = start({
  options: { base: { type: 'string' } },
  usage: 'glare.mjs --base URL [--timeout-ms N] [--chromium PATH]',
  valid: (o) => Boolean(o.base),
});

/** In the page: sets up the two managers and the exchange (see the header). */
async function setUp() {
  const { default: WebRTCManager } = await import('/webrtc.js');
  const json = async (res) => {
    if (!res.ok) throw new Error(`${res.url}: HTTP ${res.status}`);
    return res.json();
  };
  const session = await json(await fetch('/api/demo/sign-in', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Glare' }),
  }));
  const { credentials } = await json(await fetch('/api/calls/turn-credentials', {
    headers: { Authorization: `Bearer ${session.token}` },
  }));

  // The exchange: held messages go out once an offer from each side is among them.
  const ex = { held: [], holding: false, sockets: {}, log: [] };
  ex.flushIfCrossed = () => {
    const offerers = new Set(ex.held.filter((m) => m.event === 'call:offer').map((m) => m.from));
    if (!ex.holding || offerers.size < 2) return;
    ex.holding = false;
    for (const m of ex.held.splice(0)) ex.sockets[m.to].deliver(m.event, m.data);
  };
  const socketOf = (me, other) => {
    const handlers = new Map();
    const socket = {
      on: (event, fn) => handlers.set(event, [...(handlers.get(event) ?? []), fn]),
      off: (event, fn) => handlers.set(event, (handlers.get(event) ?? []).filter((f) => f !== fn)),
      emit: (event, data, ack) => {
        // A call of two is not on the SFU: the daemon refuses the manager's probe so.
        if (event === 'call:sfu-offer') return ack?.({ error: { code: 'not_on_sfu', message: 'a 1:1 call' } });
        ack?.({ ok: true });
        if (!['call:offer', 'call:answer', 'call:ice-candidate'].includes(event)) return;
        const { targetUserId, ...rest } = data;
        const m = { event, from: me, to: targetUserId, data: { ...rest, fromUserId: me } };
        if (targetUserId !== other) throw new Error(`${me} sent ${event} to ${targetUserId}`);
        if (ex.holding) {
          ex.held.push(m);
          ex.flushIfCrossed();
        } else {
          queueMicrotask(() => socket.deliver(m.event, m.data, m.to));
        }
      },
      deliver: (event, data, to = me) => {
        for (const fn of ex.sockets[to].handlers.get(event) ?? []) fn(data);
      },
      handlers,
    };
    ex.sockets[me] = socket;
    return socket;
  };

  const callId = crypto.randomUUID();
  const managers = {};
  for (const [me, other] of [['a', 'b'], ['b', 'a']]) {
    const m = new WebRTCManager(socketOf(me, other), {
      iceTransportPolicy: 'relay',
      log: (...args) => ex.log.push(`${me}: ${args.join(' ')}`),
    });
    await m.setTurnCredentials(credentials);
    await m.initializeLocalStream(true, true);
    m.currentCallId = callId;
    managers[me] = m;
  }
  window.glare = { ex, managers, callId };
}

/** In the page: both sides offer at once (told the other joined, or renegotiating). */
function crossOffers(how) {
  const { ex, managers, callId } = window.glare;
  ex.holding = true;
  for (const [me, other] of [['a', 'b'], ['b', 'a']]) {
    if (how === 'joined') ex.sockets[me].deliver('call:participant-joined', { callId, userId: other });
    else managers[me].initiateCallToUser(other);
  }
}

/** In the page: each side's connection state, selected pair and video bytes received. */
async function sides() {
  const out = {};
  for (const [me, other] of [['a', 'b'], ['b', 'a']]) {
    const pc = window.glare.managers[me].peers.get(other)?.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let bytes = 0;
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') bytes += s.bytesReceived || 0;
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    out[me] = {
      state: pc.connectionState,
      signaling: pc.signalingState,
      bytes,
      local: stats.get(pair?.localCandidateId)?.candidateType ?? null,
      remote: stats.get(pair?.remoteCandidateId)?.candidateType ?? null,
    };
  }
  return out;
}

const yields = (page) => page.evaluate(() => window.glare.ex.log.filter((l) => /offer collision/.test(l)));
const logOf = (page) => page.evaluate(() => window.glare.ex.log);

runInChromium(async (browser) => {
  at('open the page');
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(opts.base, { timeout: left() });
  at('set up the two managers');
  await page.evaluate(setUp);
  const result = { ok: true, rounds: [] };
  for (const how of ['joined', 'renegotiate']) {
    const before = (await yields(page)).length;
    const bytesBefore = (await page.evaluate(sides)) ?? { a: { bytes: 0 }, b: { bytes: 0 } };
    at(`${how}: both offer`);
    await page.evaluate(crossOffers, how);
    await until(`${how}: both offers crossed`, () => page.evaluate(() => !window.glare.ex.holding), 10000);
    let s;
    let last = null;
    try {
      s = await until(`${how}: both sides connected relay <-> relay, stable, video growing`, async () => {
        const now = await page.evaluate(sides);
        last = now;
        const up = now && ['a', 'b'].every((me) => now[me].state === 'connected'
          && now[me].signaling === 'stable' && now[me].local === 'relay' && now[me].remote === 'relay'
          && now[me].bytes > bytesBefore[me].bytes + 10000);
        return up ? now : null;
      }, 30000);
    } catch (e) {
      check(false, `${e.message}; last seen ${JSON.stringify(last)} (before: ${JSON.stringify(bytesBefore)}); `
        + `the managers' log: ${JSON.stringify(await logOf(page))}`);
      throw e;
    }
    const collisions = (await yields(page)).slice(before);
    // One side kept its offer ("ours goes on"); the other rolled back without saying so, or,
    // for crossed first offers, dropped its connection and answered on a new one.
    check(collisions.length === 1, `${how}: ${collisions.length} sides kept their offer: ${JSON.stringify(collisions)}`);
    const renewed = (await logOf(page)).filter((l) => /on a new connection/.test(l));
    check(renewed.length === 1, `${how}: ${renewed.length} sides answered on a new connection: ${JSON.stringify(renewed)}`);
    result.rounds.push({ how, kept: collisions[0].slice(0, 1), sides: s });
  }
  // The side whose first offer won is the offerer after: it wins the later collision too.
  check(result.rounds[0].kept === result.rounds[1].kept,
    `the first collision was won by ${result.rounds[0].kept}, the second by ${result.rounds[1].kept}`);
  finish(0, result);
});
