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
//     clears it; a mute refused for her socket's rate (a flood just before) is sent again;
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
import {
  at, check, expectRelayedVideo, finish, left, noter, openDemoPage, pageStats, pairKey, placeDemoCall,
  runInChromium, start, until,
} from './script_lib.mjs';

const NAMES = ['Alice', 'Bob', 'Carol', 'Dave', 'Erin'];
/** The last lines each person's page saw, for a failure's report. */
const seen = new Map();
const SEEN_LINES = 40;
const t0 = Date.now();

const opts = start({
  options: {
    base: { type: 'string' },
    transport: { type: 'string', default: 'udp' },
    people: { type: 'string', default: '2' },
    out: { type: 'string' },
  },
  usage: 'demo_call.mjs --base URL --transport udp|tcp|any --out DIR [--people 2-5] [--timeout-ms N]',
  valid: (o) => o.base && o.out && ['udp', 'tcp', 'any'].includes(o.transport)
    && Number(o.people) >= 2 && Number(o.people) <= NAMES.length,
  // A failure says what each page saw last: its console (the client's debug lines too: a
  // refused `call:media` is one), its sockets opening and closing, and the call events.
  report: (result) => (result.ok ? {} : { seen: Object.fromEntries(seen) }),
});
opts.people = Number(opts.people);

// --- The script -------------------------------------------------------------------------------


async function person(browser, name) {
  const { page, id } = await openDemoPage(browser, opts.base, name, noter(seen, name, t0, SEEN_LINES));
  // The client's debug line for a media change refused for the socket's rate.
  const mediaRefusals = { count: 0 };
  page.on('console', (m) => {
    if (m.text().includes('call:media refused: rate_limited')) mediaRefusals.count += 1;
  });
  // The network choices, under "Network".
  await page.click('#lobby details summary');
  await page.check('#relay-only');
  // `any`: every TURN URL the daemon serves, one allocation per URL and peer connection.
  await page.selectOption('#transport', opts.transport === 'any' ? '' : opts.transport);
  return { name, page, id, mediaRefusals };
}

runInChromium(async (browser) => {
  mkdirSync(opts.out, { recursive: true });
  const people = [];
  for (const name of NAMES.slice(0, opts.people)) people.push(await person(browser, name));
  const [alice, ...callees] = people;

  // Alice sees the others online, selects them and calls.
  const callId = await placeDemoCall(alice, callees);

  // Every pair: media flows relay <-> relay, both ways, over the chosen transport.
  const pairs = people.flatMap((me) => people.filter((o) => o !== me).map((other) => [me, other]));
  const stats = (me, other) =>
    me.page.evaluate(pageStats, { app: 'switchboardDemo', manager: 'manager', peerId: other.id });
  const { selected, bytes } = await expectRelayedVideo(pairs, stats,
    opts.transport === 'any' ? ['udp', 'tcp', 'tls'] : [opts.transport]);
  for (const [me, other] of pairs) {
    await until(`${pairKey(me, other)}: the page shows the path relayed`, async () => {
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
  // Refused for the socket's rate (150 frames right before it, over the hub's burst of 100),
  // a mute is sent again: everyone sees it all the same. The bucket refills as the flood is
  // read, so a mute finds it empty only most of the time: up to five tries for one refused.
  let refused = false;
  for (let attempt = 1; attempt <= 5 && !refused; attempt++) {
    const before = alice.mediaRefusals.count;
    await alice.page.evaluate(() => {
      for (let i = 0; i < 150; i++) window.switchboardDemo.socket.emit('call:nope', {}, () => {});
      document.getElementById('mute').click();
    });
    for (const p of callees) {
      await until(`${p.name} sees Alice muted after her socket went over its rate (try ${attempt})`,
        async () => (await p.page.textContent(mutedBadge).catch(() => null)) === 'muted', 10000);
    }
    refused = alice.mediaRefusals.count > before;
    await alice.page.click('#mute');
    for (const p of callees) {
      await until(`${p.name} sees Alice unmuted again (try ${attempt})`,
        async () => !(await p.page.$(mutedBadge)), 10000);
    }
  }
  check(refused, 'no mute was refused for the rate in five floods: the resend went untried');

  // Pictures of every side, mid-call.
  at('screenshots');
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
});
