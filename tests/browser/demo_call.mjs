#!/usr/bin/env node
// The demo page end to end in headless Chromium: two browser contexts (two people) load the
// page the daemon serves at `/`, sign in as Alice and Bob, tick "Relay only" and the TURN
// transport, and Alice video-calls Bob, who answers. Everything goes through the page's own
// code: the REST calls, the signaling over /ws, WebRTCManager with credentials from
// /api/calls/turn-credentials. Then, on both sides:
//   - getStats: the selected candidate pair is relay <-> relay, the local relay candidate
//     reached the relay over the expected transport (`relayProtocol`), and inbound-rtp video
//     bytes grow over about two seconds;
//   - the page shows the path as relayed;
//   - Alice mutes: Bob's page shows her muted (call:media-state-changed), and unmuting clears it;
//   - a screenshot of each side is saved in --out;
//   - Alice hangs up: Bob's page leaves the call, saying it ended.
// Prints one JSON line ({"ok":true,"callId",...} or {"ok":false,"error",...}); exit 0 on
// success, 1 on a failed check, 2 on bad usage, 124 when --timeout-ms passes.
//
// Usage: node demo_call.mjs --base http://127.0.0.1:8080 --transport udp|tcp --out DIR
//                           [--timeout-ms 90000] [--chromium /usr/bin/chromium]

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CHROMIUM_ARGS } from './chromium_args.mjs';

const started = Date.now();
let step = 'start';
let finished = false;

function finish(code, result) {
  if (finished) return;
  finished = true;
  console.log(JSON.stringify(result));
  process.exit(code);
}

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' },
    transport: { type: 'string', default: 'udp' },
    out: { type: 'string' },
    'timeout-ms': { type: 'string', default: '90000' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});
const timeoutMs = Number(opts['timeout-ms']);
if (!opts.base || !opts.out || !['udp', 'tcp'].includes(opts.transport) || !(timeoutMs > 0)) {
  console.error('usage: demo_call.mjs --base URL --transport udp|tcp --out DIR [--timeout-ms N]');
  finish(2, { ok: false, error: 'bad usage' });
}
setTimeout(() => finish(124, { ok: false, error: `timed out during: ${step}` }), timeoutMs).unref();
const left = () => Math.max(1000, timeoutMs - (Date.now() - started));

class CheckFailed extends Error {}
function check(cond, message) {
  if (!cond) throw new CheckFailed(message);
}

/** Polls `fn` (async, returning a truthy value when done) every 200 ms for at most `ms`. */
async function until(what, fn, ms = 20000) {
  step = what;
  const end = Date.now() + Math.min(ms, left());
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new CheckFailed(`${what}: not within ${ms} ms (last: ${JSON.stringify(last)})`);
}

// --- In the page ------------------------------------------------------------------------------

/** The selected candidate pair and the video bytes received, from the call's peer connection. */
async function pageStats(peerId) {
  const demo = window.switchboardDemo;
  const pc = demo.call?.manager?.peers.get(peerId)?.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  let bytes = 0;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    if (s.type === 'inbound-rtp' && s.kind === 'video') bytes += s.bytesReceived || 0;
  });
  if (!pair) return { state: pc.connectionState, bytes };
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {
    state: pc.connectionState,
    bytes,
    local: { candidateType: local?.candidateType, relayProtocol: local?.relayProtocol },
    remote: { candidateType: remote?.candidateType },
  };
}

// --- Main -------------------------------------------------------------------------------------

async function person(browser, name) {
  step = `${name}: open the page`;
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.error(`[${name}] ${m.text()}`);
  });
  page.on('pageerror', (e) => console.error(`[${name}] page error: ${e.message}`));
  await page.goto(opts.base, { timeout: left() });
  step = `${name}: sign in`;
  await page.fill('#name', name);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForSelector('#lobby:not([hidden])', { timeout: left() });
  // The network choices, under "Network".
  await page.click('#lobby details summary');
  await page.check('#relay-only');
  await page.selectOption('#transport', opts.transport);
  const id = await page.evaluate(() => window.switchboardDemo.session.user.id);
  return { name, page, id };
}

async function main() {
  step = 'load playwright-core';
  const { chromium } = await import('playwright-core');
  mkdirSync(opts.out, { recursive: true });
  step = 'launch chromium';
  const browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: left(),
  });
  process.on('exit', () => browser.close().catch(() => {}));
  try {
    const alice = await person(browser, 'Alice');
    const bob = await person(browser, 'Bob');

    // Alice sees Bob online, selects him and calls.
    const row = `#people li.online[data-user-id="${bob.id}"]`;
    await until('Alice sees Bob online', () => alice.page.$(row));
    await alice.page.check(`${row} input[type=checkbox]`);
    await alice.page.click('#call-video');
    step = 'Bob is rung';
    await bob.page.waitForSelector('#incoming:not([hidden])', { timeout: Math.min(20000, left()) });
    const from = await bob.page.textContent('#incoming-from');
    check(from === 'Alice', `Bob's page says the call is from ${from}`);
    await bob.page.click('#answer');
    const callId = await alice.page.evaluate(() => window.switchboardDemo.call?.id);
    check(callId, 'Alice has no call id');

    // Media flows relay <-> relay both ways over the chosen transport.
    const sides = [[alice, bob], [bob, alice]];
    const selected = {};
    for (const [me, other] of sides) {
      const s = await until(`${me.name}: connected relay <-> relay`, async () => {
        const st = await me.page.evaluate(pageStats, other.id);
        return st?.state === 'connected' && st.local?.candidateType ? st : null;
      }, 30000);
      check(s.local.candidateType === 'relay' && s.remote.candidateType === 'relay',
        `${me.name}: the selected pair is ${s.local.candidateType} <-> ${s.remote.candidateType}`);
      check(s.local.relayProtocol === opts.transport,
        `${me.name}: the relay candidate was allocated over ${s.local.relayProtocol}`);
      selected[me.name] = s;
    }
    const bytes = {};
    for (const [me, other] of sides) {
      const before = (await me.page.evaluate(pageStats, other.id)).bytes;
      const after = await until(`${me.name}: video bytes growing`, async () => {
        const now = (await me.page.evaluate(pageStats, other.id)).bytes;
        return now > before + 10000 ? now : null;
      }, 10000);
      bytes[me.name] = [before, after];
    }
    for (const [me, other] of sides) {
      await until(`${me.name}: the page shows the path relayed`, async () => {
        const text = await me.page.textContent(`.tile.remote[data-user-id="${other.id}"] .path`);
        return text?.startsWith(`relayed · ${opts.transport}`) ? text : null;
      }, 15000);
    }

    // Mute, seen on the other side.
    const mutedBadge = `.tile.remote[data-user-id="${alice.id}"] [data-kind="audio"]`;
    await alice.page.click('#mute');
    await until("Bob sees Alice muted", async () =>
      (await bob.page.textContent(mutedBadge).catch(() => null)) === 'muted', 10000);
    await alice.page.click('#mute');
    await until("Bob sees Alice unmuted", async () => !(await bob.page.$(mutedBadge)), 10000);

    // Pictures of both sides, mid-call.
    step = 'screenshots';
    const shots = [];
    for (const p of [alice, bob]) {
      const path = join(opts.out, `${p.name.toLowerCase()}-${opts.transport}.png`);
      await p.page.screenshot({ path, timeout: left() });
      shots.push(path);
    }

    // Alice hangs up; Bob's page leaves the call.
    await alice.page.click('#hang-up');
    await until("Bob's page ends the call", async () =>
      (await bob.page.$('#call[hidden]')) && (await bob.page.textContent('#notice')).includes('Call ended'),
      10000);
    finish(0, { ok: true, callId, transport: opts.transport, selected, bytes, screenshots: shots });
  } finally {
    await browser.close().catch(() => {});
  }
}

main().catch((e) => {
  const error = e instanceof CheckFailed ? e.message : `${step}: ${e.stack || e}`;
  finish(1, { ok: false, error, step });
});
