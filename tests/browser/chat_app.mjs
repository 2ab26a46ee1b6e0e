#!/usr/bin/env node
// The worked host-app example (examples/chat-app) end to end in headless Chromium: two browser
// contexts open the example app's page on its own origin (switchboard is another origin), sign
// in as Alice and Bob, and Alice video-calls Bob, who answers, relay-only (`?relay`). The page
// calls switchboard directly: REST with the token the app minted, socket.io-client from the
// app's own node_modules, WebRTCManager imported from switchboard's /webrtc.js. Then:
//   - while Bob is being rung, no offer reaches him (the example offers at once, as the spec's
//     clients do; the client holds it until he answers): his camera-less page gets none of
//     Alice's media before he consents, and Alice's side holds no connection to him;
//   - both sides: the selected candidate pair is relay <-> relay and inbound video bytes grow;
//   - both sockets ended up on the websocket transport (the upgrade was let through);
//   - Alice hangs up: Bob's page receives `call:ended` and leaves the call;
//   - no page logged an error or a warning (a CORS refusal is one), threw, had a request fail
//     or got an HTTP error.
// Prints one JSON line ({"ok":true,"callId",...} or {"ok":false,"error",...}); exit 0 on
// success, 1 on a failed check, 2 on bad usage, 124 when --timeout-ms passes.
//
// Usage: node chat_app.mjs --app http://127.0.0.1:3000/ [--timeout-ms 90000] [--chromium PATH]

import {
  at, check, expectRelayedVideo, finish, left, pageStats, runInChromium, start, until,
} from './script_lib.mjs';

/** What each page said, and the requests that failed: reported, and a failure if not empty. */
const problems = [];

const opts = start({
  options: { app: { type: 'string' } },
  usage: 'chat_app.mjs --app URL [--timeout-ms N] [--chromium PATH]',
  valid: (o) => o.app,
  report: () => ({ problems }),
});

// --- The script -------------------------------------------------------------------------------

async function person(browser, name) {
  at(`${name}: open the page`);
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const note = (what) => problems.push(`[${name}] ${what}`);
  // The call:offer frames its sockets received, with when.
  const offers = [];
  page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => {
    if (String(payload).includes('"call:offer"')) offers.push(Date.now());
  }));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') note(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => note(`page error: ${e.message}`));
  page.on('requestfailed', (r) => note(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => r.status() >= 400 && note(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`));
  const url = new URL(opts.app);
  url.searchParams.set('relay', '');
  await page.goto(url.href, { timeout: left() });
  at(`${name}: sign in`);
  await page.fill('#name', name);
  await page.click('#sign-in button[type=submit]');
  await page.waitForSelector('#chat:not([hidden])', { timeout: Math.min(15000, left()) });
  await until(`${name}: socket connected`, () => page.evaluate(() => window.chatApp.socket?.connected));
  const id = await page.evaluate(() => window.chatApp.session.user.id);
  return { name, page, id, offers };
}

/** Where the page's socket.io client ended up: `websocket` once the upgrade went through. */
const transportOf = (p) => p.page.evaluate(() => window.chatApp.socket.io.engine?.transport?.name);

runInChromium(async (browser) => {
  const alice = await person(browser, 'Alice');
  const bob = await person(browser, 'Bob');

  // Alice sees Bob among the conversation's members and video-calls him.
  const bobRow = `#members li[data-user-id="${bob.id}"]`;
  await until('Alice sees Bob in the conversation', () => alice.page.$(bobRow));
  await alice.page.click(`${bobRow} button[data-call=video]`);
  at('Bob is rung');
  await bob.page.waitForSelector('#incoming:not([hidden])', { timeout: Math.min(20000, left()) });
  const from = await bob.page.textContent('#incoming-from');
  check(from === 'Alice', `Bob's page says the call is from ${from}`);
  // Alice's page asked for an offer to Bob right after the call was made: time for it to come.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const aliceConnections = await alice.page.evaluate(() => window.chatApp.call.webrtcManager.peers.size);
  check(bob.offers.length === 0, `Bob received ${bob.offers.length} offer(s) while being rung`);
  check(aliceConnections === 0, `Alice holds ${aliceConnections} connection(s) before Bob answered`);
  const answeredAt = Date.now();
  await bob.page.click('#answer');
  const callId = await until('Alice has the call id', () => alice.page.evaluate(() => window.chatApp.call?.id));

  // Both ways: relay <-> relay, and video arriving.
  const stats = (me, other) =>
    me.page.evaluate(pageStats, { app: 'chatApp', manager: 'webrtcManager', peerId: other.id });
  const { selected, bytes } = await expectRelayedVideo([[alice, bob], [bob, alice]], stats);
  check(bob.offers.length > 0 && bob.offers[0] >= answeredAt, 'the offer reached Bob after he answered');
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
});
