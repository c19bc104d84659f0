// The call as people expect it, in Chromium on the demo page through the real sfud: who is
// speaking (the server's audio-level detector and dominant speaker).
//
// Run it with ./run.sh (a fresh network namespace where only `lo` exists), or
// `node --test` here with SFUD_BIN pointing at the daemon and CHROMIUM at the browser.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor, Participant, receivesFrom, track, idOf, sfuctl } from './harness.mjs';

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

describe('mute: by the participant and by an operator', () => {
  const names = ['alice', 'bob', 'carol'];
  const people = names.map((n) => new Participant(n));
  const room = `mute-${process.pid}`;
  before(track(async () => {
    for (const p of people) await p.open(room);
  }));
  after(async () => {
    await Promise.all(people.map((p) => p.close()));
  });

  // What `p` has received from `from` so far: decoded frames and audio bytes.
  const received = async (p, from) => {
    const snap = await p.snapshot();
    const got = snap.inbound[idOf(snap, from)] ?? {};
    return { frames: got.videoFramesDecoded ?? 0, audio: got.audioBytes ?? 0 };
  };
  // How much more `p` receives from `from` over `ms` (a window to show that nothing comes).
  const growth = async (p, from, ms) => {
    const a = await received(p, from);
    await new Promise((r) => setTimeout(r, ms));
    const b = await received(p, from);
    return { frames: b.frames - a.frames, audio: b.audio - a.audio };
  };
  const tileMuted = (p, id) => p.page.evaluate((id) =>
    document.querySelector(`.tile[data-peer-id="${id}"]`)?.dataset.muted ?? null, id);

  it('a participant mutes and unmutes: the others stop and start receiving, and see it', { timeout: 90_000 }, track(async () => {
    const [alice, bob, carol] = people;
    let last = [];
    await waitFor(30_000, async () => {
      last = await Promise.all(people.map((p) => p.snapshot()));
      return last.every((snap, i) => names.filter((n) => n !== names[i]).every((other) => receivesFrom(snap, other)));
    }, () => `the call did not start:\n${last.map((s, i) => `${names[i]}: ${JSON.stringify(s)}`).join('\n')}`);
    const aliceId = last[0].peerId;
    await alice.page.click('#mic');
    await alice.page.click('#cam');
    await waitFor(10_000, async () => (await Promise.all([bob, carol].map((p) => tileMuted(p, aliceId))))
      .every((m) => m === 'audio,video'), () => 'the others never showed alice muted');
    assert.equal(await alice.page.getAttribute('#mic', 'aria-pressed'), 'true');
    const shown = JSON.parse(await sfuctl('--json', 'rooms', 'show', room));
    assert.deepEqual(shown.members.find((m) => m.id === aliceId)?.muted, ['audio', 'video'], JSON.stringify(shown));
    // Whatever was in flight has arrived: from now on nothing of alice's comes.
    await new Promise((r) => setTimeout(r, 1_000));
    for (const p of [bob, carol]) {
      const g = await growth(p, 'alice', 3_000);
      assert.equal(g.frames, 0, `${p.name} decoded video of a muted camera: ${JSON.stringify(g)}`);
      assert.equal(g.audio, 0, `${p.name} received audio of a muted microphone: ${JSON.stringify(g)}`);
    }
    // Unmuted: both come back, and the tiles say so.
    await alice.page.click('#mic');
    await alice.page.click('#cam');
    await waitFor(15_000, async () => {
      const [g] = await Promise.all([growth(bob, 'alice', 1_000)]);
      return g.frames >= 5 && g.audio > 0 && (await tileMuted(bob, aliceId)) === '';
    }, () => 'bob never received alice again after she unmuted');
  }));

  it('an operator mutes a microphone: the page obeys and the others stop hearing it', { timeout: 60_000 }, track(async () => {
    const [alice, bob] = people;
    const bobId = (await bob.snapshot()).peerId;
    const out = await sfuctl('peers', 'mute', room, bobId, 'audio');
    assert.match(out, /muted the audio/);
    await waitFor(10_000, async () => {
      const page = await bob.page.evaluate(() => ({
        muted: window.sfud.muted.audio,
        pressed: document.getElementById('mic').getAttribute('aria-pressed'),
        enabled: document.querySelector('.tile.local video').srcObject?.getAudioTracks().every((t) => !t.enabled),
        error: document.getElementById('error').textContent,
      }));
      return page.muted && page.pressed === 'true' && page.enabled && page.error.includes('operator muted');
    }, () => 'bob\'s page did not obey the operator');
    await waitFor(10_000, async () => (await tileMuted(alice, bobId)) === 'audio', () => 'alice never saw bob muted');
    await new Promise((r) => setTimeout(r, 1_000));
    const g = await growth(alice, 'bob', 3_000);
    assert.equal(g.audio, 0, `alice still hears bob: ${JSON.stringify(g)}`);
    assert.ok(g.frames > 0, `bob's camera is not muted: ${JSON.stringify(g)}`);
    // A listener has nothing to mute; an unknown participant is refused.
    await assert.rejects(sfuctl('peers', 'mute', room, '0000000000000000', 'video'), /no participant/);
  }));
});
