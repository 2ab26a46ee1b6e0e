#!/usr/bin/env node
// The worked host-app example (examples/chat-app) end to end in headless Chromium: two browser
// contexts open the example app's page on its own origin (switchboard is another origin), sign
// in as Alice and Bob, and Alice video-calls Bob, who answers, relay-only (`?relay`). The page
// calls switchboard directly: REST with the token the app minted, socket.io-client from the
// app's own node_modules, WebRTCManager imported from switchboard's /webrtc.js. Then:
//   - both sides: the selected candidate pair is relay <-> relay and inbound video bytes grow;
//   - both sockets ended up on the websocket transport (the upgrade was let through);
//   - Alice hangs up: Bob's page receives `call:ended` and leaves the call;
//   - no page logged an error or a warning (a CORS refusal is one), threw, had a request fail
//     or got an HTTP error.
// Prints one JSON line ({"ok":true,"callId",...} or {"ok":false,"error",...}); exit 0 on
// success, 1 on a failed check, 2 on bad usage, 124 when --timeout-ms passes.
//
// Usage: node chat_app.mjs --app http://127.0.0.1:3000/ [--timeout-ms 90000] [--chromium PATH]

import { parseArgs } from 'node:util';
import { CHROMIUM_ARGS } from './chromium_args.mjs';

const started = Date.now();
let step = 'start';
let finished = false;
/** What each page said, and the requests that failed: reported, and a failure if not empty. */
const problems = [];

function finish(code, result) {
  if (finished) return;
  finished = true;
  console.log(JSON.stringify({ ...result, problems }));
  process.exit(code);
}

const { values: opts } = parseArgs({
  options: {
    app: { type: 'string' },
    'timeout-ms': { type: 'string', default: '90000' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});
const timeoutMs = Number(opts['timeout-ms']);
if (!opts.app || !(timeoutMs > 0)) {
  console.error('usage: chat_app.mjs --app URL [--timeout-ms N] [--chromium PATH]');
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

/** The selected candidate pair and the video bytes received from `peerId`. */
async function pageStats(peerId) {
  const pc = window.chatApp.call?.webrtcManager?.peers.get(peerId)?.pc;
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
  const note = (what) => problems.push(`[${name}] ${what}`);
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') note(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => note(`page error: ${e.message}`));
  page.on('requestfailed', (r) => note(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => r.status() >= 400 && note(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`));
  const url = new URL(opts.app);
  url.searchParams.set('relay', '');
  await page.goto(url.href, { timeout: left() });
  step = `${name}: sign in`;
  await page.fill('#name', name);
  await page.click('#sign-in button[type=submit]');
  await page.waitForSelector('#chat:not([hidden])', { timeout: Math.min(15000, left()) });
  await until(`${name}: socket connected`, () => page.evaluate(() => window.chatApp.socket?.connected));
  const id = await page.evaluate(() => window.chatApp.session.user.id);
  return { name, page, id };
}

/** Where the page's socket.io client ended up: `websocket` once the upgrade went through. */
const transportOf = (p) => p.page.evaluate(() => window.chatApp.socket.io.engine?.transport?.name);

async function main() {
  step = 'load playwright-core';
  const { chromium } = await import('playwright-core');
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

    // Alice sees Bob among the conversation's members and video-calls him.
    const bobRow = `#members li[data-user-id="${bob.id}"]`;
    await until('Alice sees Bob in the conversation', () => alice.page.$(bobRow));
    await alice.page.click(`${bobRow} button[data-call=video]`);
    step = 'Bob is rung';
    await bob.page.waitForSelector('#incoming:not([hidden])', { timeout: Math.min(20000, left()) });
    const from = await bob.page.textContent('#incoming-from');
    check(from === 'Alice', `Bob's page says the call is from ${from}`);
    await bob.page.click('#answer');
    const callId = await until('Alice has the call id', () => alice.page.evaluate(() => window.chatApp.call?.id));

    // Both ways: relay <-> relay, and video arriving.
    const pairs = [[alice, bob], [bob, alice]];
    const key = (me, other) => `${me.name}->${other.name}`;
    const selected = {};
    const bytes = {};
    for (const [me, other] of pairs) {
      const s = await until(`${key(me, other)}: connected relay <-> relay`, async () => {
        const st = await me.page.evaluate(pageStats, other.id);
        return st?.state === 'connected' && st.local?.candidateType ? st : null;
      }, 30000);
      check(s.local.candidateType === 'relay' && s.remote.candidateType === 'relay',
        `${key(me, other)}: the selected pair is ${s.local.candidateType} <-> ${s.remote.candidateType}`);
      selected[key(me, other)] = s;
    }
    for (const [me, other] of pairs) {
      const before = (await me.page.evaluate(pageStats, other.id)).bytes;
      const after = await until(`${key(me, other)}: video bytes growing`, async () => {
        const now = (await me.page.evaluate(pageStats, other.id)).bytes;
        return now > before + 10000 ? now : null;
      }, 10000);
      bytes[key(me, other)] = [before, after];
    }
    const transports = { Alice: await transportOf(alice), Bob: await transportOf(bob) };
    check(transports.Alice === 'websocket' && transports.Bob === 'websocket',
      `the sockets are not on websocket: ${JSON.stringify(transports)}`);
    const title = await alice.page.textContent('#call-title');

    // Alice hangs up; Bob's page is told and leaves the call.
    await alice.page.click('#hang-up');
    const bobEnded = await until('Bob receives call:ended', () =>
      bob.page.evaluate((id) => window.chatApp.events.find(([e, d]) => e === 'call:ended' && d.callId === id)?.[1], callId),
    10000);
    await until("Bob's page leaves the call", () => bob.page.$('#call[hidden]'), 10000);
    const bobEvents = await bob.page.evaluate(() => window.chatApp.events.map(([e]) => e));

    check(problems.length === 0, `the pages reported problems: ${problems.join(' | ')}`);
    finish(0, {
      ok: true,
      callId,
      alice: alice.id,
      bob: bob.id,
      selected,
      bytes,
      transports,
      title,
      bobEnded,
      bobEvents,
    });
  } finally {
    await browser.close().catch(() => {});
  }
}

main().catch((e) => {
  const error = e instanceof CheckFailed ? e.message : `${step}: ${e.stack || e}`;
  finish(1, { ok: false, error, step });
});
