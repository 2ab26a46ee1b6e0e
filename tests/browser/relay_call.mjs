#!/usr/bin/env node
// A relay-only WebRTC call in headless Chromium, through one TURN server.
//
// Two RTCPeerConnections in one page, both with `iceTransportPolicy: 'relay'` and the given TURN
// server, exchange offer, answer and candidates in-page and send each other the fake camera and
// microphone (real RTP: VP8/Opus over SRTP). It then checks, with getStats, that:
//   - each side's selected candidate pair is relay <-> relay,
//   - each side's local relay candidate reached the TURN server over the expected transport
//     (`relayProtocol`: udp or tcp),
//   - inbound-rtp bytesReceived grows on both sides over about two seconds.
//
// Prints one JSON line on stdout ({"ok":true,...} or {"ok":false,"error":...}) and exits 0 on
// success, 1 when the call fails a check, 2 on bad usage, 124 when the overall time limit
// passes. Every wait is bounded by that limit.
//
// Usage (flags, or the environment variables in brackets):
//   node relay_call.mjs --url turn:127.0.0.1:3478?transport=udp [TURN_URL]
//                       --username U [TURN_USERNAME] --credential P [TURN_CREDENTIAL]
//                       --expect-relay-protocol udp|tcp [EXPECT_RELAY_PROTOCOL, default: the
//                         URL's transport, else udp]
//                       --timeout-ms 60000 [TIMEOUT_MS]
//                       --chromium /usr/bin/chromium [CHROMIUM]
//
// It uses the system Chromium (Debian package `chromium`) through playwright-core and never
// downloads a browser; tests/run.sh installs both.

import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CHROMIUM_ARGS } from './chromium_args.mjs';

const started = Date.now();

// --- Result reporting -------------------------------------------------------------------------

let finished = false;
let step = 'start'; // What we are doing, for the timeout message.

function finish(code, result) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify({ ...result, elapsed_ms: Date.now() - started }) + '\n');
  if (code !== 0) process.stderr.write(`relay_call: FAILED: ${result.error}\n`);
  // Exiting kills the browser (playwright-core's exit handler) and removes the profile (ours,
  // registered after it); see launch() below.
  process.exit(code);
}

/** A failed check or step: carries what we saw, for the JSON line. */
class CallFailure extends Error {
  constructor(message, diagnostics) {
    super(message);
    this.diagnostics = diagnostics;
  }
}

// --- Arguments --------------------------------------------------------------------------------

function usage(message) {
  finish(2, { ok: false, error: `usage: ${message} (see the header of relay_call.mjs)` });
}

let opts;
try {
  opts = parseArgs({
    options: {
      url: { type: 'string', default: process.env.TURN_URL },
      username: { type: 'string', default: process.env.TURN_USERNAME },
      credential: { type: 'string', default: process.env.TURN_CREDENTIAL },
      'expect-relay-protocol': { type: 'string', default: process.env.EXPECT_RELAY_PROTOCOL },
      'timeout-ms': { type: 'string', default: process.env.TIMEOUT_MS ?? '60000' },
      chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    },
    strict: true,
  }).values;
} catch (e) {
  usage(e.message);
}

const turnUrl = opts.url;
if (!turnUrl || !/^turns?:/.test(turnUrl)) usage(`--url must be a turn: URL, got ${turnUrl}`);
if (!opts.username || !opts.credential) usage('--username and --credential are required');
const urlTransport = /[?&]transport=(udp|tcp)\b/.exec(turnUrl)?.[1];
const expectProtocol = opts['expect-relay-protocol'] ?? urlTransport ?? 'udp';
if (!['udp', 'tcp'].includes(expectProtocol)) usage(`--expect-relay-protocol must be udp or tcp`);
const timeoutMs = Number(opts['timeout-ms']);
if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage('--timeout-ms must be a positive number');
if (!existsSync(opts.chromium)) {
  finish(1, { ok: false, error: `no Chromium at ${opts.chromium}: run tests/run.sh (it installs Debian's chromium)` });
}

const deadline = started + timeoutMs;
const left = () => Math.max(1, deadline - Date.now());
// The one overall bound: whatever hangs (the launch, a page call, the browser itself), we report
// it and exit, which kills the browser. The in-page waits are bounded by the time left too, so a
// call that fails normally reports what it saw before this fires.
setTimeout(
  () => finish(124, { ok: false, error: `timed out after ${timeoutMs} ms in step: ${step}` }),
  timeoutMs,
);

// --- The page's origin ------------------------------------------------------------------------

// getUserMedia needs a secure context. http://127.0.0.1 is one (a potentially trustworthy
// origin, RFC 6761 loopback), so a tiny server on loopback serves the page: an empty one, the
// call itself is evaluated into it.
async function servePage() {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!doctype html><meta charset="utf-8"><title>switchboard relay call</title>');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  server.unref(); // Never what keeps this process alive.
  return `http://127.0.0.1:${server.address().port}/`;
}

// --- In the page ------------------------------------------------------------------------------

// Runs in Chromium (serialized by playwright): sets up the call and waits, bounded, until both
// peer connections are connected. Leaves them on `window.call` for the next steps.
async function connectInPage({ turnUrl, username, credential, budgetMs }) {
  const until = Date.now() + budgetMs;
  const left = () => Math.max(0, until - Date.now());
  const log = { candidates: { a: [], b: [] }, candidateErrors: [], addCandidateErrors: [], states: [] };
  const call = { log };
  window.call = call;
  const failure = (reason) => ({ ok: false, reason, state: snapshot(), log });
  const snapshot = () =>
    Object.fromEntries(
      ['a', 'b'].map((n) => [
        n,
        call[n] && { connection: call[n].connectionState, ice: call[n].iceConnectionState, gathering: call[n].iceGatheringState },
      ]),
    );

  // The fake devices (--use-fake-device-for-media-stream): a moving test pattern and a beep,
  // encoded for real (VP8, Opus), so RTP keeps flowing for the whole call.
  let timer;
  const media = await Promise.race([
    navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } }),
    new Promise((resolve) => (timer = setTimeout(resolve, left(), null))),
  ]).finally(() => clearTimeout(timer));
  if (!media) return failure(`getUserMedia gave nothing within ${budgetMs} ms`);
  call.media = media;

  const config = {
    iceServers: [{ urls: turnUrl, username, credential }],
    iceTransportPolicy: 'relay',
  };
  const a = (call.a = new RTCPeerConnection(config));
  const b = (call.b = new RTCPeerConnection(config));
  // Trickle ICE in-page. addIceCandidate needs a remote description, so each side's candidates
  // wait until the *other* side has one: hasRemote.b gates a's candidates, and vice versa.
  const hasRemote = {};
  const remoteSet = {};
  for (const n of ['a', 'b']) hasRemote[n] = new Promise((resolve) => (remoteSet[n] = resolve));
  for (const [name, pc, otherName, other] of [['a', a, 'b', b], ['b', b, 'a', a]]) {
    pc.onicecandidate = ({ candidate: c }) => {
      if (!c) return; // End of gathering.
      log.candidates[name].push({ type: c.type, address: c.address, port: c.port, relayProtocol: c.relayProtocol, url: c.url });
      hasRemote[otherName]
        .then(() => other.addIceCandidate(c))
        .catch((err) => log.addCandidateErrors.push(`${name} -> ${otherName}: ${err}`));
    };
    // Chromium reports TURN failures here (no answer, 401, connection refused over TCP, ...).
    pc.onicecandidateerror = (e) =>
      log.candidateErrors.push({ pc: name, url: e.url, code: e.errorCode, text: e.errorText, address: e.address, port: e.port });
    pc.onconnectionstatechange = () => log.states.push(`${name}:${pc.connectionState}`);
    // Both directions carry audio and video.
    for (const track of media.getTracks()) pc.addTrack(track, media);
  }
  const offer = await a.createOffer();
  await a.setLocalDescription(offer);
  await b.setRemoteDescription(offer);
  remoteSet.b();
  const answer = await b.createAnswer();
  await b.setLocalDescription(answer);
  await a.setRemoteDescription(answer);
  remoteSet.a();

  // Connected on both sides; or a clear failure as soon as one is certain: 'failed', or
  // gathering complete on a side with no candidate at all (the TURN server refused us or never
  // answered, so waiting on could only end in the timeout).
  for (;;) {
    if (a.connectionState === 'connected' && b.connectionState === 'connected') {
      return { ok: true, state: snapshot(), log };
    }
    if (a.connectionState === 'failed' || b.connectionState === 'failed') return failure('ICE failed');
    for (const [name, pc] of [['a', a], ['b', b]]) {
      if (pc.iceGatheringState === 'complete' && log.candidates[name].length === 0) {
        return failure(`peer ${name} gathered no relay candidate from ${turnUrl}`);
      }
    }
    if (left() === 0) {
      const silent = !log.candidates.a.length && !log.candidates.b.length && !log.candidateErrors.length;
      // No candidate and no TURN error: Chromium never even tried (no usable interface).
      const hint = silent ? ' (no candidate and no TURN error: no network interface to gather on?)' : '';
      return failure(`not connected within ${budgetMs} ms${hint}`);
    }
    await new Promise((r) => setTimeout(r, Math.min(50, left())));
  }
}

// Runs in Chromium: each side's selected candidate pair with its two candidates, and the
// inbound-rtp counters.
async function statsInPage() {
  const side = async (pc) => {
    const report = await pc.getStats();
    const all = [...report.values()];
    const byId = (id) => (id ? report.get(id) : undefined);
    // The spec's way: the transport names its selected pair. Fallback (older engines): the
    // nominated pair that succeeded.
    const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair =
      byId(transport?.selectedCandidatePairId) ??
      all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    const cand = (c) =>
      c && {
        candidateType: c.candidateType,
        protocol: c.protocol,
        relayProtocol: c.relayProtocol,
        address: c.address,
        port: c.port,
        url: c.url,
      };
    const inbound = all.filter((s) => s.type === 'inbound-rtp');
    return {
      pair: pair && {
        id: pair.id,
        state: pair.state,
        nominated: pair.nominated,
        bytesSent: pair.bytesSent,
        bytesReceived: pair.bytesReceived,
        local: cand(byId(pair.localCandidateId)),
        remote: cand(byId(pair.remoteCandidateId)),
      },
      inbound: Object.fromEntries(inbound.map((s) => [s.kind, { bytesReceived: s.bytesReceived ?? 0, packetsReceived: s.packetsReceived ?? 0, framesDecoded: s.framesDecoded }])),
      bytesReceived: inbound.reduce((sum, s) => sum + (s.bytesReceived ?? 0), 0),
    };
  };
  return { a: await side(window.call.a), b: await side(window.call.b) };
}

function closeInPage() {
  window.call?.a?.close();
  window.call?.b?.close();
  window.call?.media?.getTracks().forEach((t) => t.stop());
}

// --- Main -------------------------------------------------------------------------------------

// Launches Chromium with a fresh profile that is removed however this process ends.
async function launch(chromium) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'switchboard-chromium-'));
  const removeProfile = () => rmSync(userDataDir, { recursive: true, force: true });
  // Exit listeners run in the order they were added. This one covers a failed launch; the one
  // added after launching runs after playwright-core's own, which kills the browser first, so
  // the profile is not removed under a running browser.
  process.on('exit', removeProfile);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: left(),
    permissions: ['camera', 'microphone'],
  });
  process.on('exit', removeProfile);
  return context;
}

// The call; returns the result object or throws a CallFailure.
async function call(context, pageUrl) {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(left());
  const consoleLines = [];
  const keep = (line) => consoleLines.length < 50 && consoleLines.push(line);
  page.on('console', (m) => keep(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => keep(`pageerror: ${e.message}`));

  step = 'load the page';
  await page.goto(pageUrl, { timeout: left() });
  const browser = await page.evaluate(() => navigator.userAgent);

  step = 'connect';
  // The page's waits get the time left, less a margin for the measurement that follows.
  const connected = await page.evaluate(connectInPage, {
    turnUrl,
    username: opts.username,
    credential: opts.credential,
    budgetMs: Math.max(1000, deadline - Date.now() - 5000),
  });
  if (!connected.ok) {
    // The first TURN error usually says it all (701: the server could not be reached over
    // that transport; 401: the credentials were refused).
    const e = connected.log.candidateErrors[0];
    const hint = e ? ` (first TURN error: ${e.code} ${e.text})` : '';
    throw new CallFailure(`call did not connect: ${connected.reason}${hint}`, {
      state: connected.state,
      log: connected.log,
      console: consoleLines,
      browser,
    });
  }

  // ~2 s of media between two readings of the counters: they must grow on both sides. The
  // wait is the measurement window itself, not a guess at readiness.
  step = 'measure';
  const windowMs = 2000;
  const first = await page.evaluate(statsInPage);
  await new Promise((r) => setTimeout(r, windowMs));
  const second = await page.evaluate(statsInPage);

  step = 'close the call';
  // Closing deallocates (Refresh, lifetime 0) before the browser goes away.
  await page.evaluate(closeInPage);

  const result = {
    turn_url: turnUrl,
    expected_relay_protocol: expectProtocol,
    browser,
    selected: {
      a: { local: second.a.pair?.local, remote: second.a.pair?.remote },
      b: { local: second.b.pair?.local, remote: second.b.pair?.remote },
    },
    relay_protocols: [second.a.pair?.local?.relayProtocol, second.b.pair?.local?.relayProtocol],
    bytes_received: {
      a: [first.a.bytesReceived, second.a.bytesReceived],
      b: [first.b.bytesReceived, second.b.bytesReceived],
    },
    inbound: { a: second.a.inbound, b: second.b.inbound },
    gathered: connected.log.candidates,
    candidate_errors: connected.log.candidateErrors,
  };

  step = 'checks';
  const problems = [];
  for (const name of ['a', 'b']) {
    const pair = second[name].pair;
    if (!pair) {
      problems.push(`${name}: no selected candidate pair`);
      continue;
    }
    for (const end of ['local', 'remote']) {
      const type = pair[end]?.candidateType;
      if (type !== 'relay') problems.push(`${name}: ${end} candidate of the selected pair is ${type}, not relay`);
    }
    // relayProtocol belongs to a side's own relay candidate (how it reaches the TURN server);
    // the remote candidate here is the other side's local one, checked in its own turn.
    const protocol = pair.local?.relayProtocol;
    if (protocol !== expectProtocol) {
      problems.push(`${name}: local relay candidate's relayProtocol is ${protocol}, expected ${expectProtocol}`);
    }
    const [before, after] = result.bytes_received[name];
    if (!(after > before)) {
      problems.push(`${name}: inbound-rtp bytesReceived did not grow over ${windowMs} ms (${before} -> ${after})`);
    }
  }
  if (problems.length) throw new CallFailure(problems.join('; '), result);
  return result;
}

async function main() {
  step = 'load playwright-core';
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new CallFailure(`cannot load playwright-core (${e.message}): run tests/run.sh (it runs npm ci in tests/browser)`);
  }
  step = 'serve the page';
  const pageUrl = await servePage();
  step = 'launch chromium';
  const context = await launch(chromium);
  let result;
  try {
    result = await call(context, pageUrl);
  } finally {
    step = 'close chromium';
    await context.close().catch(() => {});
  }
  return result;
}

main().then(
  (result) => finish(0, { ok: true, ...result }),
  (e) =>
    e instanceof CallFailure
      ? finish(1, { ok: false, error: e.message, ...(e.diagnostics ? { diagnostics: e.diagnostics } : {}) })
      : finish(1, { ok: false, error: `in step "${step}": ${e?.stack ?? e}` }),
);
