#!/usr/bin/env node
// The demo page end to end in headless Chromium: two to five browser contexts, one per
// person, load the page the daemon serves at `/`, sign in as Alice and Bob (and Carol, Dave,
// Erin), tick "Relay only" and the TURN transport (`any`: every URL the daemon serves), and Alice video-calls the others, who answer. Everything goes through the page's own
// code: the REST calls, the signaling over /ws, WebRTCManager with credentials from
// /api/calls/turn-credentials. Then, on both sides:
//   - getStats: the selected candidate pair is relay <-> relay, the local relay candidate
//     reached the relay over the expected transport (`relayProtocol`), and inbound-rtp video
//     bytes grow over about two seconds;
//   - the page shows the path as relayed, and every call title names the others ("Call with
//     Bob, Carol" on the caller's page too, once they joined);
//   - Alice mutes: the others' pages show her muted (call:media-state-changed), and unmuting
//     clears it;
//   - a screenshot of each side is saved in --out;
//   - they hang up one by one: while two remain the call goes on (the others see the leaver's
//     tile go); the second to last hang-up ends it on the last page.
// Prints one JSON line ({"ok":true,"callId",...} or {"ok":false,"error",...}); exit 0 on
// success, 1 on a failed check, 2 on bad usage, 124 when --timeout-ms passes.
//
// Usage: node demo_call.mjs --base http://127.0.0.1:8080 --transport udp|tcp|any --out DIR
//                           [--people 2-5] [--timeout-ms 90000] [--chromium /usr/bin/chromium]

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
    people: { type: 'string', default: '2' },
    out: { type: 'string' },
    'timeout-ms': { type: 'string', default: '90000' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});
const timeoutMs = Number(opts['timeout-ms']);
const NAMES = ['Alice', 'Bob', 'Carol', 'Dave', 'Erin'];
opts.people = Number(opts.people);
if (!opts.base || !opts.out || !['udp', 'tcp', 'any'].includes(opts.transport) || !(timeoutMs > 0)
    || !(opts.people >= 2 && opts.people <= NAMES.length)) {
  console.error('usage: demo_call.mjs --base URL --transport udp|tcp|any --out DIR [--people 2-5] [--timeout-ms N]');
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
  // `any`: every TURN URL the daemon serves, one allocation per URL and peer connection.
  await page.selectOption('#transport', opts.transport === 'any' ? '' : opts.transport);
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
    const people = [];
    for (const name of NAMES.slice(0, opts.people)) people.push(await person(browser, name));
    const [alice, ...callees] = people;

    // Alice sees the others online, selects them and calls.
    for (const p of callees) {
      const row = `#people li.online[data-user-id="${p.id}"]`;
      await until(`Alice sees ${p.name} online`, () => alice.page.$(row));
      await alice.page.check(`${row} input[type=checkbox]`);
    }
    await alice.page.click('#call-video');
    for (const p of callees) {
      step = `${p.name} is rung`;
      await p.page.waitForSelector('#incoming:not([hidden])', { timeout: Math.min(20000, left()) });
      const from = await p.page.textContent('#incoming-from');
      check(from === 'Alice', `${p.name}'s page says the call is from ${from}`);
      await p.page.click('#answer');
    }
    const callId = await alice.page.evaluate(() => window.switchboardDemo.call?.id);
    check(callId, 'Alice has no call id');

    // Every pair: media flows relay <-> relay, both ways, over the chosen transport.
    const pairs = people.flatMap((me) => people.filter((o) => o !== me).map((other) => [me, other]));
    const key = (me, other) => `${me.name}->${other.name}`;
    const selected = {};
    for (const [me, other] of pairs) {
      const s = await until(`${key(me, other)}: connected relay <-> relay`, async () => {
        const st = await me.page.evaluate(pageStats, other.id);
        return st?.state === 'connected' && st.local?.candidateType ? st : null;
      }, 30000);
      check(s.local.candidateType === 'relay' && s.remote.candidateType === 'relay',
        `${key(me, other)}: the selected pair is ${s.local.candidateType} <-> ${s.remote.candidateType}`);
      check(opts.transport === 'any' ? ['udp', 'tcp', 'tls'].includes(s.local.relayProtocol)
        : s.local.relayProtocol === opts.transport,
        `${key(me, other)}: the relay candidate was allocated over ${s.local.relayProtocol}`);
      selected[key(me, other)] = s;
    }
    const bytes = {};
    for (const [me, other] of pairs) {
      const before = (await me.page.evaluate(pageStats, other.id)).bytes;
      const after = await until(`${key(me, other)}: video bytes growing`, async () => {
        const now = (await me.page.evaluate(pageStats, other.id)).bytes;
        return now > before + 10000 ? now : null;
      }, 10000);
      bytes[key(me, other)] = [before, after];
    }
    for (const [me, other] of pairs) {
      await until(`${key(me, other)}: the page shows the path relayed`, async () => {
        const text = await me.page.textContent(`.tile.remote[data-user-id="${other.id}"] .path`);
        // With every URL, the selected pair (and the transport shown) may change mid-call.
        const shown = opts.transport === 'any' ? 'relayed · ' : `relayed · ${opts.transport}`;
        return text?.startsWith(shown) ? text : null;
      }, 15000);
    }

    // Every title names the others, the caller's too ("Calling …" is over once they joined).
    const titles = {};
    for (const me of people) {
      const others = people.filter((o) => o !== me).map((o) => o.name);
      titles[me.name] = await until(`${me.name}'s title names the others`, async () => {
        const title = await me.page.textContent('#call-title');
        const named = title.startsWith('Call with ') && others.every((n) => title.includes(n));
        return named ? title : null;
      }, 10000);
    }
    check(titles.Alice === `Call with ${callees.map((p) => p.name).join(', ')}`,
      `Alice's title reads ${JSON.stringify(titles.Alice)}`);

    // Mute, seen by everyone else.
    const mutedBadge = `.tile.remote[data-user-id="${alice.id}"] [data-kind="audio"]`;
    await alice.page.click('#mute');
    for (const p of callees) {
      await until(`${p.name} sees Alice muted`, async () =>
        (await p.page.textContent(mutedBadge).catch(() => null)) === 'muted', 10000);
    }
    await alice.page.click('#mute');
    for (const p of callees) {
      await until(`${p.name} sees Alice unmuted`, async () => !(await p.page.$(mutedBadge)), 10000);
    }

    // Pictures of every side, mid-call.
    step = 'screenshots';
    const shots = [];
    const suffix = people.length > 2 ? `-group${people.length}` : '';
    for (const p of people) {
      const path = join(opts.out, `${p.name.toLowerCase()}-${opts.transport}${suffix}.png`);
      await p.page.screenshot({ path, timeout: left() });
      shots.push(path);
    }

    // Hang-ups, last to first but one: a group call goes on while two remain (the others see
    // the leaver's tile go), and the second to last hang-up ends it for the last.
    const ended = async (p) =>
      (await p.page.$('#call[hidden]')) && (await p.page.textContent('#notice')).includes('Call ended');
    const staying = [...people];
    while (staying.length > 1) {
      const leaver = staying.shift();
      await leaver.page.click('#hang-up');
      if (staying.length > 1) {
        for (const p of staying) {
          await until(`${p.name} sees ${leaver.name} leave`, async () =>
            !(await p.page.$(`.tile.remote[data-user-id="${leaver.id}"]`)) && !(await p.page.$('#call[hidden]')),
          10000);
        }
      } else {
        await until(`${staying[0].name}'s page ends the call`, () => ended(staying[0]), 10000);
      }
    }
    finish(0, { ok: true, callId, transport: opts.transport, selected, bytes, titles, screenshots: shots });
  } finally {
    await browser.close().catch(() => {});
  }
}

main().catch((e) => {
  const error = e instanceof CheckFailed ? e.message : `${step}: ${e.stack || e}`;
  finish(1, { ok: false, error, step });
});
