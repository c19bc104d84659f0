// The call as people expect it, in Chromium on the demo page through the real sfud: who is
// speaking (the server's audio-level detector and dominant speaker).
//
// Run it with ./run.sh (a fresh network namespace where only `lo` exists), or
// `node --test` here with SFUD_BIN pointing at the daemon and CHROMIUM at the browser.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor, Participant, receivesFrom, track, idOf } from './harness.mjs';

/**
 * A page script: the microphone is replaced by a synthetic one, so that a test knows what
 * each participant "says". Room noise at about -65 dBov always; with `talk`, a 300 Hz tone
 * at about -9 dBov for 750 ms of every second on top (speech-like bursts).
 */
const microphone = (talk) => {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await original(constraints);
    if (!constraints?.audio) return stream;
    const ctx = new AudioContext();
    const out = ctx.createMediaStreamDestination();
    const noise = ctx.createBufferSource();
    const buffer = ctx.createBuffer(1, ctx.sampleRate, ctx.sampleRate);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) samples[i] = (Math.random() * 2 - 1) * 0.001;
    noise.buffer = buffer;
    noise.loop = true;
    noise.connect(out);
    noise.start();
    if (talk) {
      const tone = ctx.createOscillator();
      tone.frequency.value = 300;
      const amp = ctx.createGain();
      amp.gain.value = 0;
      tone.connect(amp).connect(out);
      tone.start();
      const schedule = () => {
        const t = ctx.currentTime;
        for (let s = 0; s < 4; s++) {
          amp.gain.setValueAtTime(0.5, t + s);
          amp.gain.setValueAtTime(0, t + s + 0.75);
        }
      };
      schedule();
      setInterval(schedule, 4000);
    }
    for (const t of stream.getAudioTracks()) { stream.removeTrack(t); t.stop(); }
    stream.addTrack(out.stream.getAudioTracks()[0]);
    return stream;
  };
};

describe('who is speaking: one talker, two quiet microphones', () => {
  const names = ['alice', 'bob', 'carol'];
  const people = [
    new Participant('alice', {}, { initScript: [microphone, true] }),
    new Participant('bob', {}, { initScript: [microphone, false] }),
    new Participant('carol', {}, { initScript: [microphone, false] }),
  ];
  before(track(async () => {
    for (const p of people) await p.open(`speakers-${process.pid}`);
  }));
  after(async () => {
    await Promise.all(people.map((p) => p.close()));
  });

  it('every page shows the talker speaking and dominant, never the quiet ones', { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await Promise.all(people.map((p) => p.snapshot()));
      return last.every((snap, i) => names.filter((n) => n !== names[i]).every((other) => receivesFrom(snap, other)));
    }, () => `the call did not start:\n${last.map((s, i) => `${names[i]}: ${JSON.stringify(s)}`).join('\n')}`);
    const ids = Object.fromEntries(names.map((n, i) => [n, last[i].peerId]));
    assert.equal(idOf(last[1], 'alice'), ids.alice);
    const quiet = [ids.bob, ids.carol];
    // What each page shows: the server's view, and the tiles' classes.
    const shown = () => Promise.all(people.map((p) => p.page.evaluate(() => ({
      ...window.sfud.speakers,
      speakingTiles: [...document.querySelectorAll('.tile.speaking')].map((t) => t.dataset.peerId),
      dominantTiles: [...document.querySelectorAll('.tile.dominant')].map((t) => t.dataset.peerId),
    }))));
    let views = [];
    const seen = [];
    await waitFor(20_000, async () => {
      views = await shown();
      seen.push(...views);
      return views.every((v) => v.dominant === ids.alice && v.speaking.includes(ids.alice)
        && v.dominantTiles.length === 1 && v.dominantTiles[0] === ids.alice
        && v.speakingTiles.includes(ids.alice));
    }, () => `alice was not shown speaking and dominant within 20 s: ${JSON.stringify(views)} (ids ${JSON.stringify(ids)})`);
    // A few more seconds of the call: the quiet microphones never speak or dominate.
    const until = Date.now() + 4_000;
    while (Date.now() < until) {
      seen.push(...await shown());
      await new Promise((r) => setTimeout(r, 250));
    }
    for (const v of seen) {
      assert.ok(!quiet.some((q) => v.speaking.includes(q)), `a quiet microphone shown speaking: ${JSON.stringify(v)}`);
      assert.ok(!quiet.includes(v.dominant), `a quiet microphone shown dominant: ${JSON.stringify(v)}`);
    }
  }));
});
