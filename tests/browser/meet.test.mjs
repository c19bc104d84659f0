// The call as people expect it, in Chromium on the demo page through the real sfud: who is
// speaking (the server's audio-level detector and dominant speaker).
//
// Run it with ./run.sh (a fresh network namespace where only `lo` exists), or
// `node --test` here with SFUD_BIN pointing at the daemon and CHROMIUM at the browser.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { waitFor, Participant, receivesFrom, track, idOf, sfuctl, sfuctlAt, Daemon } from './harness.mjs';

/** Waits until every page decodes every other; their snapshots then. */
async function callStarted(people) {
  const names = people.map((p) => p.name);
  let last = [];
  await waitFor(30_000, async () => {
    last = await Promise.all(people.map((p) => p.snapshot()));
    return last.every((snap, i) => names.filter((n) => n !== names[i]).every((other) => receivesFrom(snap, other)));
  }, () => `the call did not start:\n${last.map((s, i) => `${names[i]}: ${JSON.stringify(s)}`).join('\n')}`);
  return last;
}

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
    const last = await callStarted(people);
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
  // Every video stream a page's connection sends or receives, as its browser counts them:
  // what a failure's message shows (which side stopped, and whether key frames were asked for).
  const videoStreams = (p, pc, type) => p.page.evaluate(async ({ pc, type }) => {
    const out = [];
    (await window.sfud.pcs[pc]?.getStats())?.forEach((r) => {
      if (r.type !== type || r.kind !== 'video') return;
      out.push({
        mid: r.mid, rid: r.rid, packets: r.packetsReceived ?? r.packetsSent, lost: r.packetsLost,
        frames: r.framesDecoded ?? r.framesEncoded, keys: r.keyFramesDecoded ?? r.keyFramesEncoded,
        plis: r.pliCount, nacks: r.nackCount,
      });
    });
    return out;
  }, { pc, type });
  const tileMuted = (p, id) => p.page.evaluate((id) =>
    document.querySelector(`.tile[data-peer-id="${id}"]`)?.dataset.muted ?? null, id);

  it('a participant mutes and unmutes: the others stop and start receiving, and see it', { timeout: 90_000 }, track(async () => {
    const [alice, bob, carol] = people;
    const last = await callStarted(people);
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
    let lastSeen = null;
    await waitFor(15_000, async () => {
      const g = await growth(bob, 'alice', 1_000);
      lastSeen = { ...g, tile: await tileMuted(bob, aliceId) };
      return g.frames >= 5 && g.audio > 0 && lastSeen.tile === '';
    }, async () => `bob never received alice again after she unmuted: last second ${JSON.stringify(lastSeen)}; `
      + `bob's video in: ${JSON.stringify(await videoStreams(bob, 'subscribe', 'inbound-rtp'))}; `
      + `alice's video out: ${JSON.stringify(await videoStreams(alice, 'publish', 'outbound-rtp'))}`);
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

  it('a microphone silenced and a camera stopped without a word are shown muted, until they send again', { timeout: 60_000 }, track(async () => {
    const [alice, , carol] = people;
    const carolId = (await carol.snapshot()).peerId;
    // Behind the page's back: the microphone sends digital silence, the camera nothing.
    const quiet = (off) => carol.page.evaluate(async (off) => {
      const stream = document.querySelector('.tile.local video').srcObject;
      stream.getAudioTracks().forEach((t) => { t.enabled = !off; });
      const sender = window.sfud.pcs.publish.getTransceivers()
        .find((t) => t.mid !== window.sfud.screenMid && (t.sender.track?.kind === 'video' || window.camSender === t.sender))?.sender;
      if (off) {
        window.camSender = sender;
        window.camTrack = sender.track;
        await sender.replaceTrack(null);
      } else {
        await window.camSender.replaceTrack(window.camTrack);
      }
    }, off);
    await quiet(true);
    await waitFor(10_000, async () => (await tileMuted(alice, carolId)) === 'audio,video',
      async () => `alice does not show carol's silent microphone and stopped camera: ${await tileMuted(alice, carolId)}`);
    const shown = JSON.parse(await sfuctl('--json', 'rooms', 'show', room));
    const member = shown.members.find((m) => m.id === carolId);
    assert.deepEqual(member?.silent, ['audio', 'video'], JSON.stringify(member));
    assert.deepEqual(member?.muted, [], 'not muted on purpose');
    assert.match(await sfuctl('rooms', 'show', room), /audio \(silent\),video \(silent\)/);
    await quiet(false);
    await waitFor(10_000, async () => (await tileMuted(alice, carolId)) === '',
      async () => `alice still shows carol muted after she sent again: ${await tileMuted(alice, carolId)}`);
  }));
});

/**
 * A page script: "the screen" is an animated 1280x720 canvas (headless Chromium has no
 * screen to capture), so the page's own getDisplayMedia flow runs unchanged.
 */
const canvasScreen = () => {
  navigator.mediaDevices.getDisplayMedia = async () => {
    const canvas = Object.assign(document.createElement('canvas'), { width: 1280, height: 720 });
    const g = canvas.getContext('2d');
    let n = 0;
    setInterval(() => {
      g.fillStyle = `hsl(${(n += 7) % 360} 60% 40%)`;
      g.fillRect(0, 0, 1280, 720);
      g.fillStyle = '#fff';
      g.font = '64px sans-serif';
      g.fillText(`slide ${n}`, 100, 200);
    }, 50);
    return canvas.captureStream(20);
  };
};

describe('screen sharing: a second video track beside the camera', () => {
  const names = ['alice', 'bob', 'carol'];
  const people = names.map((n) => new Participant(n, {}, { initScript: canvasScreen }));
  const room = `screen-${process.pid}`;
  before(track(async () => {
    for (const p of people) await p.open(room);
  }));
  after(async () => {
    await Promise.all(people.map((p) => p.close()));
  });

  it('the others decode the screen in a large tile of its own, and it goes when sharing stops', { timeout: 90_000 }, track(async () => {
    const [alice, bob, carol] = people;
    const last = await callStarted(people);
    const aliceId = last[0].peerId;
    const screenKey = `${aliceId}/screen`;
    await alice.page.click('#share');
    const tiles = (p) => p.page.evaluate((key) => {
      const screen = document.querySelector(`.tile[data-peer-id="${key}"]`);
      const camera = document.querySelector(`.tile[data-peer-id="${key.split('/')[0]}"]`);
      return {
        screen: screen && { large: screen.classList.contains('screen'), width: screen.clientWidth, shown: screen.querySelector('video').videoWidth },
        camera: camera && { width: camera.clientWidth },
      };
    }, screenKey);
    let seen = {};
    for (const p of [bob, carol]) {
      const start = (await p.snapshot()).inbound[screenKey]?.videoFramesDecoded ?? 0;
      await waitFor(20_000, async () => {
        const snap = await p.snapshot();
        seen = { inbound: snap.inbound[screenKey], camera: snap.inbound[aliceId], tiles: await tiles(p) };
        return (seen.inbound?.videoFramesDecoded ?? 0) >= start + 30 && seen.tiles.screen?.large
          && seen.tiles.screen.shown >= 640 && seen.camera?.videoFramesDecoded > 0;
      }, () => `${p.name} did not decode alice's screen in a tile of its own: ${JSON.stringify(seen)}`);
      assert.ok(seen.tiles.screen.width > seen.tiles.camera.width, `the screen is shown larger: ${JSON.stringify(seen.tiles)}`);
    }
    // The camera goes on beside it.
    const cam = (await bob.snapshot()).inbound[aliceId].videoFramesDecoded;
    await waitFor(10_000, async () => (await bob.snapshot()).inbound[aliceId].videoFramesDecoded >= cam + 20,
      () => 'alice\'s camera stopped while she shared her screen');
    const shown = JSON.parse(await sfuctl('--json', 'rooms', 'show', room));
    const kinds = shown.members.find((m) => m.id === aliceId).tracks.map((t) => t.kind).sort();
    assert.deepEqual(kinds, ['audio', 'screen', 'video'], JSON.stringify(shown));
    // Sharing stops: the tile goes from every page, and nothing of the screen is forwarded.
    await alice.page.click('#share');
    const hidden = (p) => p.page.evaluate((key) => {
      const tile = document.querySelector(`.tile[data-peer-id="${key}"]`);
      return !tile || getComputedStyle(tile).display === 'none';
    }, screenKey);
    await waitFor(15_000, async () => (await Promise.all([alice, bob, carol].map(hidden))).every(Boolean),
      () => 'the screen tile stayed after sharing stopped');
    // Shared again: back on every page; then an operator stops it.
    await alice.page.click('#share');
    for (const p of [bob, carol]) {
      const start = (await p.snapshot()).inbound[screenKey]?.videoFramesDecoded ?? 0;
      await waitFor(20_000, async () => !(await hidden(p))
        && ((await p.snapshot()).inbound[screenKey]?.videoFramesDecoded ?? 0) >= start + 20,
      () => `${p.name} did not see alice's screen again`);
    }
    await sfuctl('peers', 'mute', room, aliceId, 'screen');
    await waitFor(15_000, async () => (await Promise.all([alice, bob, carol].map(hidden))).every(Boolean)
      && (await alice.page.getAttribute('#share', 'aria-pressed')) === 'false',
    () => 'an operator did not stop the sharing');
  }));
});

describe('chat: a data channel to the server, relayed to the room', () => {
  const people = [new Participant('alice'), new Participant('bob'), new Participant('carol', { role: 'listener' })];
  const room = `chat-${process.pid}`;
  before(track(async () => {
    for (const p of people) await p.open(room);
  }));
  after(async () => {
    await Promise.all(people.map((p) => p.close()));
  });

  const chatOf = (p) => p.page.evaluate(() => window.sfud.chat.map(({ name, text, own }) => ({ name, text, own })));
  const say = (p, text) => p.page.evaluate((text) => {
    document.getElementById('chat-text').value = text;
    document.getElementById('chat-form').requestSubmit();
  }, text);

  it('a message reaches every other page once, listeners included, and not the sender twice', { timeout: 60_000 }, track(async () => {
    const [alice, bob, carol] = people;
    await waitFor(30_000, async () => (await Promise.all(people.map((p) => p.page.evaluate(() =>
      !document.getElementById('chat').hidden)))).every(Boolean), () => 'the chat did not open on every page');
    await say(alice, 'hello from alice');
    await say(carol, 'a listener speaks up');
    await waitFor(10_000, async () => {
      const [a, b, c] = await Promise.all([alice, bob, carol].map(chatOf));
      return b.length === 2 && c.length === 2 && a.length === 2;
    }, async () => `the messages did not arrive: ${JSON.stringify(await Promise.all(people.map(chatOf)))}`);
    const [a, b, c] = await Promise.all([alice, bob, carol].map(chatOf));
    assert.deepEqual(a.filter((m) => m.text === 'hello from alice'), [{ name: 'alice', text: 'hello from alice', own: true }]);
    assert.deepEqual(b.map((m) => m.text).sort(), ['a listener speaks up', 'hello from alice']);
    assert.deepEqual(b.find((m) => m.text === 'hello from alice'), { name: 'alice', text: 'hello from alice', own: false });
    assert.deepEqual(c.filter((m) => m.text === 'hello from alice'), [{ name: 'alice', text: 'hello from alice', own: false }]);
    assert.deepEqual(a.find((m) => m.text === 'a listener speaks up'), { name: 'carol', text: 'a listener speaks up', own: false });
  }));

  it('oversized and flooding messages are refused and the call goes on', { timeout: 60_000 }, track(async () => {
    const [alice, bob] = people;
    const before = (await chatOf(bob)).length;
    const frames = (await bob.snapshot()).inbound[(await alice.snapshot()).peerId]?.videoFramesDecoded ?? 0;
    // The page's input stops at 4096 characters: lifted, as a client of its own would.
    await alice.page.evaluate(() => {
      const send = (t) => { document.getElementById('chat-text').removeAttribute('maxlength'); document.getElementById('chat-text').value = t; document.getElementById('chat-form').requestSubmit(); };
      send('x'.repeat(5000));
    });
    await waitFor(10_000, async () => (await alice.page.evaluate(() => document.getElementById('error').textContent)).includes('too_large'),
      () => 'an oversized message was not refused');
    // Thirty at once: the burst passes, the rest are refused.
    await alice.page.evaluate(() => {
      for (let i = 0; i < 30; i++) {
        document.getElementById('chat-text').value = `flood ${i}`;
        document.getElementById('chat-form').requestSubmit();
      }
    });
    await waitFor(10_000, async () => (await alice.page.evaluate(() => document.getElementById('error').textContent)).includes('rate_limited'),
      () => 'a flood was not refused');
    await waitFor(10_000, async () => (await chatOf(bob)).length >= before + 10,
      async () => `the burst did not arrive: bob got ${(await chatOf(bob)).length - before} of the 30 sent, alice shows `
        + `"${await alice.page.evaluate(() => document.getElementById('error').textContent)}"`);
    const got = (await chatOf(bob)).slice(before);
    assert.ok(got.every((m) => m.text.startsWith('flood ')), `nothing oversized arrived: ${JSON.stringify(got.map((m) => m.text.length))}`);
    assert.ok(got.length <= 12, `the rate held: ${got.length} of 30 arrived`);
    // The call goes on.
    const aliceId = (await alice.snapshot()).peerId;
    await waitFor(15_000, async () => ((await bob.snapshot()).inbound[aliceId]?.videoFramesDecoded ?? 0) >= frames + 30,
      () => 'the call stopped');
  }));
});

describe('a recording keeps a shared screen as a file of its own', () => {
  let recorded;
  let dir;
  const alice = new Participant('alice', {}, { initScript: canvasScreen });
  const bob = new Participant('bob');
  const room = `screen-rec-${process.pid}`;
  before(track(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'sfud-rec-'));
    recorded = new Daemon(['[recording]', `dir = "${dir}"`]);
    await recorded.start();
    for (const p of [alice, bob]) await p.open(room, recorded);
  }));
  after(async () => {
    await Promise.all([alice, bob].map((p) => p.close()));
    await recorded?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the camera and microphone in one file, the screen in another', { timeout: 90_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await Promise.all([alice, bob].map((p) => p.snapshot()));
      return receivesFrom(last[0], 'bob') && receivesFrom(last[1], 'alice');
    }, () => `the call did not start: ${JSON.stringify(last)}`);
    const aliceId = last[0].peerId;
    await sfuctlAt(recorded, 'record', 'start', room);
    await alice.page.click('#share');
    const key = `${aliceId}/screen`;
    await waitFor(20_000, async () => ((await bob.snapshot()).inbound[key]?.videoFramesDecoded ?? 0) >= 60,
      () => 'bob did not decode alice\'s screen');
    const stopped = JSON.parse(await sfuctlAt(recorded, '--json', 'record', 'stop', room));
    const mine = stopped.files.filter((f) => f.peer === aliceId);
    const screen = mine.filter((f) => f.file.includes('-screen-'));
    const camera = mine.filter((f) => !f.file.includes('-screen-'));
    assert.equal(screen.length, 1, JSON.stringify(stopped));
    assert.deepEqual(screen[0].codecs, ['video/VP8'], JSON.stringify(screen[0]));
    assert.deepEqual(camera[0]?.codecs.slice().sort(), ['audio/opus', 'video/VP8'], JSON.stringify(camera));
    // The screen's file holds decodable video of the canvas's size.
    const probe = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v', '-count_frames',
      '-show_entries', 'stream=width,height,nb_read_frames', '-of', 'json', path.join(stopped.dir, screen[0].file)]).toString();
    const stream = JSON.parse(probe).streams[0];
    assert.equal(stream.width, 1280, probe);
    assert.ok(Number(stream.nb_read_frames) >= 20, probe);
  }));
});
