#!/usr/bin/env node
// A group call on the daemon's SFU, on the demo page in headless Chromium: six browser contexts
// (Alice, Bob, Carol, Dave, Erin, Frank) sign in, Alice video-calls the five others; four answer
// at once and the last (Frank) once their media flows, a join mid-call that renegotiates everyone.
// The page's own code does it all (REST, /ws, WebRTCManager, which finds the call on the SFU by
// itself). Then, on every page, from getStats of its one connection with the SFU:
//   - exactly one outbound video: the camera, in three simulcast layers (rids l, m, h) of one
//     m-line, each sending;
//   - one inbound video per other participant (the m-line's owner, the stream id, is the user
//     it shows) decoding frames, the frame counts growing, and their audio received;
//   - a screenshot of Alice's grid is saved in --out;
//   - everyone but Carol mutes: every page outlines Carol's tile as the active speaker
//     (call:active-speaker, from the audio level of her packets);
//   - Alice turns Bob's video off (setVideoQuality): his frames stop; then asks for his low
//     layer: they come again, 160 pixels wide;
//   - Bob shares his screen (the page's Share button; the capture is a canvas stand-in, see
//     standInForTheScreen): his page sends it on a second video m-line beside the camera's
//     three layers, every other page gets it as a second video of Bob's (onRemoteScreen) and
//     decodes it, frames growing; he stops: their screen of his goes, his m-line is inactive;
//   - Frank hangs up: the five left are offered the end of his m-lines, his tile goes, and each
//     still decodes the four others' videos.
// With --relayed NAME:TRANSPORT, that person is behind a strict firewall: the page's "Relay
// only" is ticked with that TURN transport (udp, tcp or tls), so its one connection reaches the
// SFU through the daemon's relay (handed over inside the process); the selected candidate pair
// of its connection is checked (relay, over that transport) and reported as `relayed`.
// Prints one JSON line ({"ok":true,"callId",...} or {"ok":false,"error",...}); exit 0 on
// success, 1 on a failed check, 2 on bad usage, 124 when --timeout-ms passes.
//
// Usage: node sfu_call.mjs --base http://127.0.0.1:8080 --out DIR [--people 3-6]
//                          [--relayed NAME:udp|tcp|tls]
//                          [--timeout-ms 120000] [--chromium /usr/bin/chromium]

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  at, check, finish, left, noter, openDemoPage, placeDemoCall, runInChromium, start, until,
} from './script_lib.mjs';

const NAMES = ['Alice', 'Bob', 'Carol', 'Dave', 'Erin', 'Frank'];
const seen = new Map();
/** Everyone signed in (the scripts' people, in order). */
const everyone = [];
const t0 = Date.now();
/** When each step was done, seconds from the start: where the time goes on a small box. */
const timings = {};
const mark = (what) => (timings[what] = Number(((Date.now() - t0) / 1000).toFixed(1)));

const opts = start({
  options: {
    base: { type: 'string' },
    people: { type: 'string', default: '6' },
    out: { type: 'string' },
    relayed: { type: 'string' },
  },
  usage: 'sfu_call.mjs --base URL --out DIR [--people 3-6] [--relayed NAME:udp|tcp|tls] [--timeout-ms N]',
  valid: (o) => o.base && o.out && Number(o.people) >= 3 && Number(o.people) <= NAMES.length
    && (!o.relayed || /^[A-Z][a-z]+:(udp|tcp|tls)$/.test(o.relayed)),
  report: (result) => (result.ok ? { timings } : { timings, seen: Object.fromEntries(seen) }),
});
opts.people = Number(opts.people);
const [relayedName, relayedTransport] = opts.relayed ? opts.relayed.split(':') : [];

/**
 * In the page (so self-contained): what its connection with the SFU sends and receives.
 * `outbound`: the video RTP streams sent (`{mid, rid, packetsSent, frameWidth}`); `inbound`:
 * per remote user of the manager's peers, `{video: framesDecoded, audio: packetsReceived}` of
 * the tracks of the stream it was given for them.
 */
async function sfuStats() {
  const manager = window.switchboardDemo.call?.manager;
  const pc = manager?.sfuPeerConnection;
  if (!pc) return { mode: manager?.mode ?? null };
  const report = await pc.getStats();
  const outbound = [];
  const byTrack = new Map();
  const sending = new Set(pc.getTransceivers().filter((t) => /^send/.test(t.currentDirection ?? '')).map((t) => t.mid));
  report.forEach((s) => {
    // The video sent now (a stopped screen's stream keeps its figures).
    if (s.type === 'outbound-rtp' && s.kind === 'video' && sending.has(s.mid)) {
      outbound.push({
        mid: s.mid, rid: s.rid, packetsSent: s.packetsSent, frameWidth: s.frameWidth,
        fps: s.framesPerSecond, limit: s.qualityLimitationReason, plis: s.pliCount, nacks: s.nackCount,
      });
    }
    if (s.type === 'inbound-rtp') byTrack.set(s.trackIdentifier, s);
  });
  const inbound = {};
  for (const [userId, peer] of manager.peers) {
    const video = peer.stream?.getVideoTracks()[0];
    const audio = peer.stream?.getAudioTracks()[0];
    const v = byTrack.get(video?.id);
    inbound[userId] = {
      video: v?.framesDecoded ?? 0,
      audio: byTrack.get(audio?.id)?.packetsReceived ?? 0,
      // For a failure's message: how the video came in.
      why: v && {
        width: v.frameWidth, received: v.framesReceived, dropped: v.framesDropped, lost: v.packetsLost,
        keyFrames: v.keyFramesDecoded, plis: v.pliCount, nacks: v.nackCount, freezes: v.freezeCount,
      },
    };
  }
  // Its m-lines as negotiated: the sending ones are its camera's and microphone's, and its
  // screen's while it shares.
  const lines = pc.getTransceivers().map((t) => ({ mid: t.mid, direction: t.currentDirection }));
  return { mode: manager.mode, state: pc.connectionState, outbound, inbound, lines };
}

/** In the page: the local candidate of its SFU connection's selected pair (null before one). */
async function selectedLocal() {
  const pc = window.switchboardDemo.call?.manager?.sfuPeerConnection;
  if (!pc) return null;
  const report = await pc.getStats();
  let local = null;
  report.forEach((s) => {
    if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
    const c = report.get(report.get(s.selectedCandidatePairId)?.localCandidateId);
    if (c) local = { candidateType: c.candidateType, relayProtocol: c.relayProtocol ?? null };
  });
  return local;
}

/**
 * In the sharer's page, before its Share button is clicked: headless Chromium here never
 * settles getDisplayMedia (its picker waits for a person; --auto-accept-this-tab-capture and
 * --auto-select-desktop-capture-source did not change that), so the page's getDisplayMedia is
 * replaced by a stand-in for a screen: a canvas's captureStream, 320x180, a moving picture at
 * 15 fps. Everything after the capture is the page's own: its button, startScreenShare, the
 * SFU's negotiation and forwarding, the viewers' pages.
 */
function standInForTheScreen() {
  navigator.mediaDevices.getDisplayMedia = async () => {
    const canvas = Object.assign(document.createElement('canvas'), { width: 320, height: 180 });
    const g = canvas.getContext('2d');
    let n = 0;
    const draw = () => {
      n += 1;
      g.fillStyle = `hsl(${(n * 7) % 360} 60% 50%)`;
      g.fillRect(0, 0, 320, 180);
      g.fillStyle = '#fff';
      g.fillText(`screen ${n}`, 10 + (n % 200), 90);
    };
    draw();
    const stream = canvas.captureStream(15);
    const timer = setInterval(draw, 1000 / 15);
    stream.getVideoTracks()[0].addEventListener('ended', () => clearInterval(timer));
    return stream;
  };
}

/** In a viewer's page: `userId`'s screen as the manager gives it, and its frames decoded
 * (null before it comes or while none is decoded). */
async function screenOf(userId) {
  const manager = window.switchboardDemo.call?.manager;
  const track = manager?.peers.get(userId)?.screen?.getVideoTracks()[0];
  if (!track) return null;
  let got = null;
  (await manager.sfuPeerConnection.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.trackIdentifier === track.id) got = s;
  });
  if (!got?.framesDecoded) return null;
  return { frames: got.framesDecoded, width: got.frameWidth, height: got.frameHeight };
}

/** On `p`'s page: one outbound video of three sending layers, and every one of `others`
 * decoding video (more frames than `before` had) and heard. Returns the stats. */
async function expectMedia(p, others, before = null) {
  const ids = others.map((o) => o.id).sort();
  let last = null;
  const what = `${p.name} sends three layers and decodes ${others.map((o) => o.name).join(', ')}`;
  return until(what, async () => {
    const s = await p.page.evaluate(sfuStats);
    last = s;
    if (s.mode !== 'sfu' || s.state !== 'connected') return null;
    const mids = new Set(s.outbound.map((o) => o.mid));
    const rids = s.outbound.map((o) => o.rid).sort().join(',');
    if (mids.size !== 1 || rids !== 'h,l,m' || !s.outbound.every((o) => o.packetsSent > 0)) return null;
    if (Object.keys(s.inbound).sort().join() !== ids.join()) return null;
    const flowing = ids.every((id) => s.inbound[id].video > (before?.inbound[id]?.video ?? 0)
      && s.inbound[id].audio > 0);
    return flowing ? s : null;
  }, 30000).catch((e) => {
    check(false, `${e.message}; last seen: ${JSON.stringify({ ...last, inbound: renamed(last?.inbound ?? {}, everyone) })}`);
  });
}

runInChromium(async (browser) => {
  mkdirSync(opts.out, { recursive: true });
  const people = everyone;
  for (const name of NAMES.slice(0, opts.people)) {
    const p = await openDemoPage(browser, opts.base, name, noter(seen, name, t0));
    if (name === relayedName) {
      // The network choices, under "Network".
      await p.page.click('#lobby details summary');
      await p.page.check('#relay-only');
      await p.page.selectOption('#transport', relayedTransport);
    }
    people.push(p);
  }
  check(!relayedName || people.some((p) => p.name === relayedName), `--relayed: no ${relayedName} in the call`);
  mark('signed in');
  const [alice, ...callees] = people;
  // The last one is rung with the others but answers once their media flows: a join mid-call.
  const late = callees[callees.length - 1];
  const callId = await placeDemoCall(alice, callees, callees.slice(0, -1));
  mark('answered');

  // Everyone sends once and receives everyone else, twice over to see the frames grow.
  const others = (me, among) => among.filter((o) => o !== me);
  const early = people.filter((p) => p !== late);
  for (const p of early) await expectMedia(p, others(p, early));
  mark('media flowing');
  // The late one answers: the SFU offers the others its tracks and it everyone's.
  at(`${late.name} answers mid-call`);
  await late.page.click('#answer', { timeout: left() });
  const first = new Map();
  for (const p of people) first.set(p, await expectMedia(p, others(p, people)));
  mark('joined mid-call');
  const media = {};
  for (const p of people) {
    const s = await expectMedia(p, others(p, people), first.get(p));
    media[p.name] = { outbound: s.outbound, inbound: renamed(s.inbound, people) };
  }
  mark('frames growing');

  // The relayed page's connection with the SFU runs through the relay, over its transport.
  let relayed = null;
  const behind = people.find((p) => p.name === relayedName);
  if (behind) {
    const local = await behind.page.evaluate(selectedLocal);
    relayed = { name: behind.name, ...local };
    check(local?.candidateType === 'relay' && local?.relayProtocol === relayedTransport,
      `${behind.name}'s connection with the SFU is relayed over ${relayedTransport}: ${JSON.stringify(local)}`);
  }

  // Every tile of Alice's grid has its picture.
  at('screenshot');
  await until('Alice shows every tile playing', () => alice.page.evaluate((n) => {
    const videos = [...document.querySelectorAll('#videos video')];
    return videos.length === n && videos.every((v) => v.videoWidth > 0 && !v.paused);
  }, people.length), 10000);
  const screenshot = join(opts.out, `alice-sfu${people.length}.png`);
  await alice.page.screenshot({ path: screenshot, timeout: left() });

  // Everyone but Carol mutes (the page's Mute button), and Carol speaks: a steady tone in
  // place of her microphone's track (Chromium's fake microphone beeps too briefly to count as
  // speech: the SFU smooths levels over ~200 ms). The SFU names her the active speaker from
  // her packets' audio level (call:active-speaker), and every page outlines her tile (her own
  // page its local one).
  const speaker = people[2];
  for (const p of people.filter((p) => p !== speaker)) {
    at(`${p.name} mutes`);
    await p.page.click('#mute', { timeout: left() });
  }
  at(`${speaker.name} speaks`);
  await speaker.page.evaluate(async () => {
    const ctx = new AudioContext();
    await ctx.resume();
    const tone = ctx.createOscillator();
    const gain = ctx.createGain();
    const out = ctx.createMediaStreamDestination();
    tone.frequency.value = 440;
    gain.gain.value = 0.3;
    tone.connect(gain).connect(out);
    tone.start();
    const pc = window.switchboardDemo.call.manager.sfuPeerConnection;
    const sender = pc.getSenders().find((s) => s.track?.kind === 'audio');
    await sender.replaceTrack(out.stream.getAudioTracks()[0]);
  });
  const speaking = {};
  for (const p of people) {
    speaking[p.name] = await until(`${p.name} shows ${speaker.name} speaking`, () => p.page.evaluate((id) => {
      const t = [...document.querySelectorAll('.tile.speaking')];
      if (t.length !== 1) return null;
      const shown = t[0].classList.contains('local') ? 'self' : t[0].dataset.userId;
      return shown === id || (shown === 'self' && window.switchboardDemo.session.user.id === id) ? shown : null;
    }, speaker.id), 20000);
  }
  for (const p of people.filter((p) => p !== speaker)) await p.page.click('#mute', { timeout: left() });
  mark('active speaker');

  // Alice turns Bob's video off, then asks for his thumbnail (setVideoQuality, call:sfu-layer):
  // his frames stop coming, then come again from his low layer, a quarter of his camera's 640
  // pixels wide (a loaded box's browsers may send only that layer anyway: hence the off
  // first, which no publisher's state can fake); then back to the best he sends.
  const bob = people[1];
  const quality = (q) => alice.page.evaluate(
    ([id, to]) => window.switchboardDemo.call.manager.setVideoQuality(id, to),
    [bob.id, q],
  );
  const bobOnAlice = async () => (await alice.page.evaluate(sfuStats)).inbound[bob.id];
  at("Alice turns Bob's video off");
  check(await quality('off'), 'setVideoQuality(off) was not sent');
  let previous = -1;
  const paused = await until("Alice's frames of Bob stop", async () => {
    await new Promise((r) => setTimeout(r, 800));
    const now = (await bobOnAlice()).video;
    const still = now === previous;
    previous = now;
    return still ? { frames: now } : null;
  }, 15000);
  check(await quality('low'), 'setVideoQuality(low) was not sent');
  const low = await until("Alice decodes Bob's low layer", async () => {
    const got = await bobOnAlice();
    return got.video > paused.frames && got.why?.width === 160 ? got : null;
  }, 15000);
  check(await quality('high'), 'setVideoQuality(high) was not sent');
  const lowLayer = { paused, low };
  mark('layers');

  // Bob shares his screen: his page sends it on a second video m-line of its own (the camera's
  // three layers go on), and every other page receives it as a second video from Bob.
  const sharer = bob;
  const viewers = people.filter((p) => p !== sharer);
  at(`${sharer.name} shares the screen`);
  await sharer.page.evaluate(standInForTheScreen);
  await sharer.page.click('#share');
  const sent = await until(`${sharer.name} sends the screen beside the camera`, async () => {
    const s = await sharer.page.evaluate(sfuStats);
    const screen = s.outbound.filter((o) => !o.rid);
    const camera = s.outbound.filter((o) => o.rid);
    const ok = screen.length === 1 && screen[0].packetsSent > 0 && camera.length === 3
      && !camera.some((o) => o.mid === screen[0].mid);
    return ok ? s.outbound : null;
  }, 15000);
  const screens = {};
  for (const p of viewers) {
    const first = await until(`${p.name} decodes ${sharer.name}'s screen`, () => p.page.evaluate(screenOf, sharer.id), 20000);
    screens[p.name] = await until(`${p.name}'s frames of ${sharer.name}'s screen grow`, async () => {
      const now = await p.page.evaluate(screenOf, sharer.id);
      return now && now.frames > first.frames ? now : null;
    }, 10000);
  }
  mark('screen shared');
  await sharer.page.click('#share');
  for (const p of viewers) {
    await until(`${p.name} sees ${sharer.name}'s screen stop`, () => p.page.evaluate(
      (id) => !window.switchboardDemo.call.manager.peers.get(id)?.screen,
      sharer.id,
    ), 15000);
  }
  const screenMid = sent.find((o) => !o.rid).mid;
  const stopped = await until(`${sharer.name} sends the camera alone again`, async () => {
    const s = await sharer.page.evaluate(sfuStats);
    const line = s.lines.find((l) => l.mid === screenMid);
    const ok = line?.direction === 'inactive' && s.outbound.every((o) => o.mid !== screenMid);
    return ok ? s.lines : null;
  }, 15000);
  mark('screen stopped');
  const screenShare = { sharer: sharer.name, sent, screens, stopped };

  // The last one hangs up: the others renegotiate (the SFU stops the leaver's m-lines).
  const leaver = people[people.length - 1];
  const staying = people.slice(0, -1);
  await leaver.page.click('#hang-up');
  const afterLeave = {};
  for (const p of staying) {
    await until(`${p.name} sees ${leaver.name}'s tile go`, async () =>
      !(await p.page.$(`.tile.remote[data-user-id="${leaver.id}"]`)), 10000);
    const base = await expectMedia(p, others(p, staying));
    const s = await expectMedia(p, others(p, staying), base);
    afterLeave[p.name] = renamed(s.inbound, people);
    const lines = await p.page.evaluate(() => window.switchboardDemo.call.manager.sfuPeerConnection
      .getTransceivers().filter((t) => t.receiver.track.kind === 'video' && t.currentDirection === 'recvonly')
      .length);
    check(lines === staying.length - 1,
      `${p.name} still receives ${lines} videos after ${leaver.name} left`);
  }
  mark('left');
  finish(0, {
    ok: true, callId, media, relayed, speakerId: speaker.id, speaking, lowLayer, screenShare, afterLeave, screenshot,
  });
}, [
  // Three simulcast layers from the fake camera's 640x480 (Chromium sends fewer below 960x540).
  '--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/',
]);

/** `{userId: x}` → `{name: x}`. */
function renamed(byUser, people) {
  return Object.fromEntries(Object.entries(byUser).map(([id, x]) => [people.find((p) => p.id === id)?.name ?? id, x]));
}
