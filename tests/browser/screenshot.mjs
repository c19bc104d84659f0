// Takes the screenshot in docs/: a three-person call on the demo page, one person sharing a
// screen, one talking, a line of chat. Not part of the test suite (run.sh runs *.test.mjs):
//
//   cd tests/browser && unshare -n sh -c 'ip link set lo up && node --test screenshot.mjs'
//
// SCREENSHOT=FILE chooses where the PNG goes (default ../../docs/demo-call.png).

import { it } from 'node:test';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor, Participant, receivesFrom, track } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.env.SCREENSHOT ?? path.resolve(here, '../../docs/demo-call.png');

// "The screen": a slide drawn on a canvas (headless Chromium has no screen to capture).
const slides = () => {
  navigator.mediaDevices.getDisplayMedia = async () => {
    const canvas = Object.assign(document.createElement('canvas'), { width: 1280, height: 720 });
    const g = canvas.getContext('2d');
    setInterval(() => {
      g.fillStyle = '#1e3a8a';
      g.fillRect(0, 0, 1280, 720);
      g.fillStyle = '#fff';
      g.font = 'bold 64px sans-serif';
      g.fillText('Quarterly review', 80, 160);
      g.font = '40px sans-serif';
      ['Latency down 40%', 'Rooms on every core', 'Screen sharing and chat'].forEach((t, i) => g.fillText(`• ${t}`, 100, 300 + i * 80));
    }, 100);
    return canvas.captureStream(10);
  };
};

it('a three-person call with a shared screen', { timeout: 120_000 }, track(async () => {
  const room = `shot-${process.pid}`;
  const people = [
    new Participant('Ana', {}, { initScript: slides }),
    new Participant('Ben'),
    new Participant('Chloé'),
  ];
  for (const p of people) await p.open(room);
  const [ana, ben] = people;
  const names = people.map((p) => p.name);
  await waitFor(60_000, async () => {
    const last = await Promise.all(people.map((p) => p.snapshot()));
    return last.every((snap, i) => names.filter((n) => n !== names[i]).every((o) => receivesFrom(snap, o)));
  }, () => 'the call did not start');
  await ana.page.click('#share');
  await ben.page.setViewportSize({ width: 1280, height: 1080 });
  await ben.page.fill('#chat-text', 'Can you go back one slide?');
  await ben.page.click('#chat-form button');
  await waitFor(30_000, async () => ben.page.evaluate(() => {
    const v = document.querySelector('.tile.screen video');
    return v && v.videoWidth > 0 && !document.getElementById('chat').hidden;
  }), () => 'the screen did not show');
  await ben.page.screenshot({ path: out });
  await Promise.all(people.map((p) => p.close()));
}));
