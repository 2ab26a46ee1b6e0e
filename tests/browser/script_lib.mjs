// What the scripts that drive pages in headless Chromium share (demo_call.mjs, chat_app.mjs):
// their options, the step being done (a failure names it), one JSON line and an exit code at the
// end (0 success, 1 a failed check, 2 bad usage, 124 when --timeout-ms passes), bounded polls,
// the browser, and the relay <-> relay checks of a call's peer connections.

import { parseArgs } from 'node:util';
import { CHROMIUM_ARGS } from './chromium_args.mjs';

const started = Date.now();
let step = 'start';
let finished = false;
let deadline = Infinity;
let chromiumPath = '/usr/bin/chromium';
let extra = () => ({});

/** Names what the script does now, for a failure's message and the timeout's. */
export function at(what) {
  step = what;
}

/** Prints the one JSON line (`result` and the `extra` given to `start`) and exits with `code`. */
export function finish(code, result) {
  if (finished) return;
  finished = true;
  console.log(JSON.stringify({ ...result, ...extra(result) }));
  process.exit(code);
}

/**
 * Parses the script's `options` and the common `--timeout-ms` (default 90000) and `--chromium`;
 * exits 2 printing `usage: ${usage}` unless they parse, the timeout is positive and `valid(opts)`
 * holds. Then arms the overall time limit. `report(result)` adds to the JSON line. Returns the options.
 */
export function start({ options, usage, valid, report }) {
  let opts;
  try {
    opts = parseArgs({
      options: {
        ...options,
        'timeout-ms': { type: 'string', default: '90000' },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
      },
    }).values;
  } catch {
    opts = null;
  }
  if (report) extra = report;
  const timeoutMs = Number(opts?.['timeout-ms']);
  if (!opts || !(timeoutMs > 0) || !valid(opts)) {
    console.error(`usage: ${usage}`);
    finish(2, { ok: false, error: 'bad usage' });
  }
  deadline = started + timeoutMs;
  chromiumPath = opts.chromium;
  setTimeout(() => finish(124, { ok: false, error: `timed out during: ${step}` }), timeoutMs).unref();
  return opts;
}

/** The time left before --timeout-ms, but at least a second: a bound for every wait. */
export const left = () => Math.max(1000, deadline - Date.now());

class CheckFailed extends Error {}
/** Fails the script with `message` unless `cond` holds. */
export function check(cond, message) {
  if (!cond) throw new CheckFailed(message);
}

/** Polls `fn` (async, returning a truthy value when done) every 200 ms for at most `ms`. */
export async function until(what, fn, ms = 20000) {
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

/**
 * Launches headless Chromium with CHROMIUM_ARGS (and `extraArgs`) and runs `main(browser)`,
 * which ends the script with `finish(0, ...)`; a failed check or any error ends it with exit 1
 * and the step it was in.
 */
export function runInChromium(main, extraArgs = []) {
  (async () => {
    step = 'load playwright-core';
    const { chromium } = await import('playwright-core');
    step = 'launch chromium';
    const browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: [...CHROMIUM_ARGS, ...extraArgs],
      timeout: left(),
    });
    process.on('exit', () => browser.close().catch(() => {}));
    try {
      await main(browser);
    } finally {
      await browser.close().catch(() => {});
    }
  })().catch((e) => {
    const error = e instanceof CheckFailed ? e.message : `${step}: ${e.stack || e}`;
    finish(1, { ok: false, error, step });
  });
}

// --- The call's peer connections --------------------------------------------------------------

/**
 * In the page (so self-contained): the selected candidate pair and the video bytes received from
 * `peerId`, of the peer connection in the WebRTCManager at `window[app].call[manager]`.
 */
export async function pageStats({ app, manager, peerId }) {
  const pc = window[app].call?.[manager]?.peers.get(peerId)?.pc;
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

/** `Alice->Bob`: the key of a pair of people (`{name}`) in the results. */
export const pairKey = (me, other) => `${me.name}->${other.name}`;

/**
 * Every `[me, other]` of `pairs`: `stats(me, other)` (pageStats of me's page for other) shows the
 * peer connection connected relay <-> relay, its relay candidate allocated over one of
 * `relayProtocols` when given, and then over 10 kB more video received. Returns `{selected,
 * bytes}`: each pair's stats, and its bytes before and after, by pairKey.
 */
export async function expectRelayedVideo(pairs, stats, relayProtocols = null) {
  const selected = {};
  for (const [me, other] of pairs) {
    const key = pairKey(me, other);
    const s = await until(`${key}: connected relay <-> relay`, async () => {
      const st = await stats(me, other);
      return st?.state === 'connected' && st.local?.candidateType ? st : null;
    }, 30000);
    check(s.local.candidateType === 'relay' && s.remote.candidateType === 'relay',
      `${key}: the selected pair is ${s.local.candidateType} <-> ${s.remote.candidateType}`);
    check(!relayProtocols || relayProtocols.includes(s.local.relayProtocol),
      `${key}: the relay candidate was allocated over ${s.local.relayProtocol}`);
    selected[key] = s;
  }
  const bytes = {};
  for (const [me, other] of pairs) {
    const before = (await stats(me, other)).bytes;
    const after = await until(`${pairKey(me, other)}: video bytes growing`, async () => {
      const now = (await stats(me, other)).bytes;
      return now > before + 10000 ? now : null;
    }, 10000);
    bytes[pairKey(me, other)] = [before, after];
  }
  return { selected, bytes };
}

// --- The demo page ----------------------------------------------------------------------------

/**
 * Opens the demo page at `base` in a new browser context as `name` and signs in. `note(line)`
 * gets what the page saw: its console, its sockets opening and closing, the call events (not
 * the candidates, quality and stats). Returns `{name, page, id}` (the user's id).
 */
export async function openDemoPage(browser, base, name, note) {
  at(`${name}: open the page`);
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.error(`[${name}] ${m.text()}`);
    note(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => console.error(`[${name}] page error: ${e.message}`));
  page.on('websocket', (ws) => {
    note(`socket open ${ws.url()}`);
    ws.on('close', () => note(`socket closed ${ws.url()}`));
    for (const [dir, event] of [['in', 'framereceived'], ['out', 'framesent']]) {
      ws.on(event, ({ payload }) => {
        const text = String(payload);
        if (!/"call:(?!ice-candidate|quality|stats|nope)/.test(text)) return;
        note(`${dir} ${text.slice(0, 200)}`);
        // The SFU's offers: whose each m-line is (cut above), for a failure's story.
        const tracks = /"call:sfu-offer"/.test(text) && /"tracks":(\[[^\]]*\])/.exec(text)?.[1];
        if (tracks) {
          const owners = JSON.parse(tracks).map((t) => `${t.mid}=${String(t.userId).slice(0, 4)}/${t.kind?.[0]}`);
          note(`${dir} call:sfu-offer tracks ${owners.join(' ')}`);
        }
      });
    }
  });
  await page.goto(base, { timeout: left() });
  at(`${name}: sign in`);
  await page.fill('#name', name);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForSelector('#lobby:not([hidden])', { timeout: left() });
  const id = await page.evaluate(() => window.switchboardDemo.session.user.id);
  return { name, page, id };
}

/** `caller` (of openDemoPage) selects `callees` on the demo page and video-calls them; each
 * is rung by the caller and answers. Returns the call's id. */
export async function placeDemoCall(caller, callees, answering = callees) {
  for (const p of callees) {
    const row = `#people li.online[data-user-id="${p.id}"]`;
    await until(`${caller.name} sees ${p.name} online`, () => caller.page.$(row));
    await caller.page.check(`${row} input[type=checkbox]`);
  }
  await caller.page.click('#call-video');
  for (const p of callees) {
    at(`${p.name} is rung`);
    await p.page.waitForSelector('#incoming:not([hidden])', { timeout: Math.min(20000, left()) });
    const from = await p.page.textContent('#incoming-from');
    check(from === caller.name, `${p.name}'s page says the call is from ${from}`);
    if (answering.includes(p)) await p.page.click('#answer');
  }
  const callId = await caller.page.evaluate(() => window.switchboardDemo.call?.id);
  check(callId, `${caller.name} has no call id`);
  return callId;
}

/** Keeps the last `limit` lines each person's page saw (`seen`: name → lines), timed from `t0`. */
export function noter(seen, name, t0, limit = 40) {
  return (line) => {
    const lines = seen.get(name) ?? [];
    lines.push(`${((Date.now() - t0) / 1000).toFixed(2)} ${line}`);
    seen.set(name, lines.slice(-limit));
  };
}
