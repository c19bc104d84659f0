// Adaptive media with headless Chromium through the real sfud daemon: a publisher's
// ramp to HD, simulcast layers chosen per listener, a listener's downlink shaped with tc
// on `lo`, tiles that ask for their size, and the spotlight on a narrow link. One daemon
// and one browser serve this file (harness.mjs); every participant has its own browser
// context. Run it with ./run.sh, as call.test.mjs.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  sleep,
  waitFor,
  sfuctl,
  roomShown,
  Participant,
  track,
  inRoom,
  publishStats,
  subscribeVideo,
  spotlight,
  ShapedPort,
  metric,
  ssrcSimulcast,
  blackholeFrom,
} from './harness.mjs';

describe('publisher feedback: a 1280x720 publisher ramps like peer to peer', () => {
  // The slow ramp was intermittent (3 runs in 7): each run is a new publisher, and
  // every one must reach 1.5 Mbps. Its cause was sfud's arrival times: stamped when the
  // media loop read a datagram rather than when the kernel received it, a loop busy
  // negotiating at the start of a call bunched some of Chromium's first probes and
  // stretched others, so Chromium believed none and ramped additively from 300 kbps.
  const RUNS = 3;
  const estimates = [];
  after(() => {
    if (estimates.length === RUNS) {
      assert.ok(estimates.every((kbps) => kbps >= 1500),
        `the publishers estimated ${estimates.join(', ')} kbps 20 s after joining (want >= 1500 in every run)`);
    }
  });
  for (let run = 1; run <= RUNS; run++) {
    it(`run ${run}/${RUNS}: estimate 20 s after joining recorded, at most one keyframe request in 10 s`, { timeout: 60_000 }, track(async () => {
      const roomName = `ramp-${run}-${process.pid}`;
      const pub = new Participant(`ramp-pub-${run}`, { simulcast: '0' });
      const lis = new Participant(`ramp-lis-${run}`, { role: 'listener' });
      try {
        await Promise.all([pub.open(roomName), lis.open(roomName)]);
        let last;
        await waitFor(10_000, async () => {
          last = await pub.snapshot();
          return last.pcs.publish === 'connected';
        }, () => `the publisher did not connect within 10 s: ${JSON.stringify(last)}`);
        const joined = Date.now();
        await sleep(10_000);
        const before = await publishStats(pub);
        await sleep(Math.max(0, joined + 20_000 - Date.now()));
        const after = await publishStats(pub);
        const seen = await subscribeVideo(lis);
        assert.ok(seen.framesDecoded > 0, `the listener decodes the publisher: ${JSON.stringify(seen)}`);
        estimates.push(Math.round(after.availableOutgoingBitrate / 1000));
        // Negative: a retransmission arrived after its original.
        assert.ok(seen.packetsLost <= 0, `nothing is lost on loopback (${seen.packetsLost})`);
        assert.ok(after.pliCount - before.pliCount <= 1,
          `the publisher got ${after.pliCount - before.pliCount} keyframe requests between 10 s and 20 s with nothing lost`);
      } finally {
        await Promise.all([pub.close(), lis.close()]);
      }
    }));
  }
});

describe('simulcast: a three-layer 1280x720 publisher', () => {
  const pub = new Participant('sim-pub');
  const lis = new Participant('sim-lis', { role: 'listener' });
  const roomName = `simulcast-${process.pid}`;
  const room = inRoom(roomName, [pub, lis]);

  it('sends three layers, and an unconstrained listener decodes the best one sent at full rate', { timeout: 60_000 }, track(async () => {
    // A tile as big as the page: the top layer is what it needs.
    await spotlight(lis, pub);
    let sent;
    await waitFor(20_000, async () => {
      sent = await publishStats(pub);
      return Object.keys(sent.layers).sort().join() === 'f,h,q';
    }, () => `the publisher does not send layers q, h and f: ${JSON.stringify(sent)}`);
    // The listener gets the best layer the publisher sends: f (1280x720) once Chromium's
    // estimate covers all three layers. That estimate is Chromium's own: on loopback its
    // initial probe settles at 1.4 to 5.6 Mbps, peer to peer as through sfud, and below
    // about 2 Mbps it leaves f off for the whole call (it grows no further while the
    // encoder sends less than the estimate). Then h is the best layer.
    let seen;
    let best;
    await waitFor(20_000, async () => {
      seen = await subscribeVideo(lis);
      sent = await publishStats(pub);
      best = ['f', 'h'].find((rid) => sent.layers[rid]?.framesSent > 0 && sent.layers[rid]?.width > 0);
      return best && seen.frameWidth === sent.layers[best].width;
    }, async () => `the listener is not on the 1280x720 layer within 20 s: ${JSON.stringify(seen)}\n`
      + `the publisher sends ${JSON.stringify(await publishStats(pub))}\n`
      + `sfud shows ${await sfuctl('--json', 'rooms', 'show', roomName)}`);
    // Every frame the publisher sends of that layer is decoded. Chromium's fake camera
    // captures 20 frames a second; a publisher short of CPU or bandwidth sends fewer (the
    // top layer at 14-15 frames/s in a full run of this suite on 2 cores).
    const [first, firstSent] = [await subscribeVideo(lis), await publishStats(pub)];
    await sleep(5_000);
    const [second, secondSent] = [await subscribeVideo(lis), await publishStats(pub)];
    const fps = (second.framesDecoded - first.framesDecoded) / 5;
    const sentFps = ((secondSent.layers[best]?.framesSent ?? 0) - (firstSent.layers[best]?.framesSent ?? 0)) / 5;
    assert.ok(fps >= 0.9 * sentFps && fps >= 10,
      `the listener decodes ${fps} frames/s of layer ${best}, of which the publisher sends ${sentFps}`);
    // The best layer the publisher sent all along (Chromium drops f now and then when its
    // CPU or its estimate falls short, and sfud follows within 1.5 s).
    const sentOver = (rid) => (secondSent.layers[rid]?.framesSent ?? 0) - (firstSent.layers[rid]?.framesSent ?? 0);
    const steady = ['f', 'h'].find((rid) => sentOver(rid) >= 0.9 * sentOver('q'));
    const now = ['f', 'h'].find((rid) => secondSent.layers[rid]?.width === second.frameWidth);
    assert.ok(now === steady || now === 'f',
      `on the best layer sent all along (${steady}): ${second.frameWidth} px wide, ${JSON.stringify(secondSent.layers)}`);
    best = now;
    if (best === 'f') assert.equal(second.frameWidth, 1280, 'the top layer is 1280x720');
    // The operator sees the layers and which one the listener gets.
    const shown = JSON.parse(await sfuctl('--json', 'rooms', 'show', roomName));
    const video = shown.members.find((m) => m.name === 'sim-pub').tracks.find((t) => t.kind === 'video');
    assert.deepEqual(video.layers.map((l) => l.rid), ['q', 'h', 'f'], `sfuctl shows the three layers: ${JSON.stringify(video)}`);
    assert.deepEqual(video.layers.map((l) => l.active), ['q', 'h', 'f'].map((rid) => rid === 'q' || rid === 'h' || best === 'f'),
      `sfuctl shows which layers are sent: ${JSON.stringify(video)}`);
    const got = shown.members.find((m) => m.name === 'sim-lis').receiving;
    assert.deepEqual(got.map(({ track, layer, target, paused }) => ({ track, layer, target, paused })),
      [{ track: video.id, layer: best, target: null, paused: false }], `sfuctl shows the listener on ${best}: ${JSON.stringify(got)}`);
    assert.ok(got[0].max_width >= 1000, `sfuctl shows the size the listener asked for: ${JSON.stringify(got)}`);
    assert.ok(second.packetsLost <= 0, `no layer mixing: nothing looks lost (${second.packetsLost})`);
  }));
});


describe('simulcast: SSRC simulcast (a=ssrc-group:SIM), as Chromium sends it from a munged offer', () => {
  const pub = new Participant('ssrc-pub', { simulcast: '0' }, { initScript: ssrcSimulcast });
  const lis = new Participant('ssrc-lis', { role: 'listener' });
  const roomName = `ssrc-simulcast-${process.pid}`;
  inRoom(roomName, [pub, lis]);
  const video = async () => (await roomShown(roomName))?.members.find((m) => m.name === 'ssrc-pub')
    ?.tracks.find((t) => t.kind === 'video');
  const received = async () => (await roomShown(roomName))?.members.find((m) => m.name === 'ssrc-lis')?.receiving?.[0];

  it('each SSRC is a layer of one track: a grid tile gets a small one, the unused top layer pauses, the spotlight brings it back, nothing mixed', { timeout: 180_000 }, track(async () => {
    let sent;
    await waitFor(20_000, async () => {
      sent = await publishStats(pub);
      return ['0', '1', '2'].every((i) => sent.layers[i]?.framesSent > 0);
    }, () => `the publisher does not send three SSRCs: ${JSON.stringify(sent)}`);
    assert.deepEqual(['0', '1', '2'].map((i) => sent.layers[i].width), [320, 640, 1280],
      `the three encodings are a quarter, half and all of the camera: ${JSON.stringify(sent.layers)}`);
    let shown;
    await waitFor(10_000, async () => (shown = await video())?.layers.length === 3,
      async () => `sfuctl does not show one video track of three layers: ${await sfuctl('--json', 'rooms', 'show', roomName)}`);
    assert.deepEqual(shown.layers.map((l) => l.rid), ['0', '1', '2'], `layers named by index: ${JSON.stringify(shown)}`);

    // On a narrow page the grid tile (280x210 at least) needs layer 1 (640x360): a layer
    // `rtc` does not bind (it binds the group's last SSRC), decoded at its size.
    await lis.page.setViewportSize({ width: 240, height: 1000 });
    let got;
    let seen;
    await waitFor(30_000, async () => {
      got = await received();
      seen = await subscribeVideo(lis);
      return got?.layer === '1' && seen.frameWidth === 640;
    }, () => `the small grid tile does not get layer 1: sfud shows ${JSON.stringify(got)}, the listener decodes ${JSON.stringify(seen)}`);
    const small = got.layer;

    // An outage of the publisher's path: what the listener's layer lost is asked for again
    // and resent, so the outage leaves the listener missing nothing more than before it.
    const member = (await roomShown(roomName)).members.find((m) => m.name === 'ssrc-pub');
    const before = await subscribeVideo(lis);
    await blackholeFrom(Number(member.publish.remote.split(':').pop()), 300);
    let after;
    await waitFor(10_000, async () => {
      after = await subscribeVideo(lis);
      return after.framesDecoded > before.framesDecoded + 20 && after.packetsLost <= before.packetsLost;
    }, () => `after a 300 ms outage of the publisher's path the listener on layer ${small} misses packets: `
      + `${JSON.stringify(before)} -> ${JSON.stringify(after)}`);

    // Nobody receives layer 2: 10 s later sfud asks the publisher to stop encoding it,
    // naming it by its index.
    await waitFor(30_000, async () => {
      shown = await video();
      sent = await publishStats(pub);
      return shown?.layers[2]?.paused && sent.layers['2']?.active === false;
    }, () => `layer 2 is not paused at the publisher: sfud shows ${JSON.stringify(shown?.layers)}, the publisher ${JSON.stringify(sent.layers)}`);

    // Spotlit on a big page: layer 2 is asked for again, and the listener gets the best
    // layer sent (2, unless Chromium's estimate leaves it off: then it stays on 1), at
    // full rate.
    await lis.page.setViewportSize({ width: 1280, height: 1400 });
    await spotlight(lis, pub);
    await waitFor(10_000, async () => (sent = await publishStats(pub)).layers['2']?.active === true,
      () => `layer 2 is not resumed at the publisher: ${JSON.stringify(sent.layers)}`);
    let best;
    await waitFor(30_000, async () => {
      got = await received();
      seen = await subscribeVideo(lis);
      sent = await publishStats(pub);
      best = ['2', '1'].find((i) => sent.layers[i]?.framesSent > 0 && sent.layers[i]?.width > 0);
      return got?.layer === best && seen.frameWidth === sent.layers[best].width;
    }, () => `the spotlit tile is not on the best layer: sfud shows ${JSON.stringify(got)}, the listener decodes ${JSON.stringify(seen)}, the publisher sends ${JSON.stringify(sent.layers)}`);
    const [first, firstSent] = [seen, sent];
    await sleep(5_000);
    const [second, secondSent] = [await subscribeVideo(lis), await publishStats(pub)];
    const fps = (second.framesDecoded - first.framesDecoded) / 5;
    const sentFps = ((secondSent.layers[best]?.framesSent ?? 0) - (firstSent.layers[best]?.framesSent ?? 0)) / 5;
    assert.ok(fps >= 0.9 * sentFps && fps >= 10, `the listener decodes ${fps} frames/s of layer ${best}, of which the publisher sends ${sentFps}`);
    assert.ok(second.packetsLost <= first.packetsLost,
      `no layer mixing: nothing looks lost on the best layer (${first.packetsLost} -> ${second.packetsLost})`);
    console.log(`# SSRC simulcast: ${second.packetsLost} packets lost in all; `
      + `grid tile on layer ${small}, spotlight on ${best} (${second.frameWidth} px) at ${fps} frames/s`);
  }));
});

describe('simulcast: a listener whose downlink is shaped with tc', () => {
  const pub = new Participant('shaped-pub');
  const lis = new Participant('shaped-lis', { role: 'listener' });
  const roomName = `shaped-${process.pid}`;
  const room = inRoom(roomName, [pub, lis]);
  let shaped = null;
  after(() => shaped?.remove());

  /** The listener as sfuctl shows it: its subscribe connection and the layer it gets. */
  const shown = async () => {
    const r = await roomShown(roomName);
    return r?.members.find((m) => m.name === 'shaped-lis');
  };
  /** The best layer the publisher sends now (f once Chromium's own estimate allows it). */
  const bestSent = async () => {
    const { layers } = await publishStats(pub);
    return ['f', 'h', 'q'].find((rid) => layers[rid]?.framesSent > 0 && layers[rid]?.width > 0);
  };

  it('under h\'s rate it gets the lowest layer without freezing, back on the best within 15 s of the limit lifting, down within 5 s of it returning', { timeout: 300_000 }, track(async () => {
    await spotlight(lis, pub);
    // Chromium's encoder and two pages share 2 cores with sfud here, and a tc-shaped
    // link near a layer's rate leaves little slack: the scenario must hold in one of two
    // attempts (both printed).
    for (let attempt = 1; ; attempt++) {
      try {
        await shapedScenario();
        return;
      } catch (err) {
        if (attempt === 2) throw err;
        console.log(`# shaped listener, attempt 1 failed: ${err.message.split('\n')[0]}`);
        shaped?.remove();
        shaped = null;
      }
    }
  }));

  async function shapedScenario() {
    let me;
    await waitFor(20_000, async () => {
      me = await shown();
      return me?.subscribe?.state === 'connected' && me.receiving.length === 1;
    }, async () => `the listener's subscribe connection is not up within 20 s: ${JSON.stringify(await roomShown(roomName))}`);
    // q is the right answer only once h does not fit: Chromium starts every layer
    // low and ramps, so wait until sfud sees h at 300 kbit/s or more, and limit the
    // link to 400 kbit/s or h's payload rate if less (audio and headers come on top).
    let layers;
    let h = 0;
    await waitFor(30_000, async () => {
      const r = await roomShown(roomName);
      layers = r?.members.find((m) => m.name === 'shaped-pub')?.tracks.find((t) => t.kind === 'video')?.layers;
      h = layers?.find((l) => l.rid === 'h')?.bitrate_bps ?? 0;
      return h >= 300_000;
    }, () => `the publisher's h layer is not at 300 kbit/s within 30 s: ${JSON.stringify(layers)}`);
    const limit = Math.min(400, Math.floor(h / 1000));
    shaped = new ShapedPort(Number(me.subscribe.remote.split(':').pop()));
    shaped.limit(limit);

    // Limited: the lowest layer, at the camera's rate, no freeze.
    await waitFor(20_000, async () => {
      me = await shown();
      return me.receiving[0].layer === 'q' && (await subscribeVideo(lis)).frameWidth === 320;
    }, async () => `at ${limit} kbit/s the listener is not on q within 20 s: ${JSON.stringify(me)} ${JSON.stringify(await subscribeVideo(lis))}`);
    const [a, aSent] = [await subscribeVideo(lis), await publishStats(pub)];
    await sleep(6_000);
    const [b, bSent] = [await subscribeVideo(lis), await publishStats(pub)];
    const fps = (b.framesDecoded - a.framesDecoded) / 6;
    // 15 frames/s, or nearly all the publisher sends of q when its CPU holds it below that.
    const qFps = ((bSent.layers.q?.framesSent ?? 0) - (aSent.layers.q?.framesSent ?? 0)) / 6;
    assert.ok(fps >= Math.min(15, 0.9 * qFps), `at ${limit} kbit/s the listener decodes ${fps} frames/s; the publisher sends q at ${qFps}`);
    assert.equal(b.freezes - a.freezes, 0, `at ${limit} kbit/s the listener's video froze: ${JSON.stringify([a, b])}`);
    assert.equal((await shown()).receiving[0].layer, 'q', 'still on q');

    // Lifted: back on the best layer sent within 15 s, then no switch on the steady link.
    shaped.limit(0);
    const lifted = Date.now();
    let best;
    await waitFor(15_000, async () => {
      me = await shown();
      best = await bestSent();
      return me.receiving[0].layer === best && best !== 'q';
    }, () => `15 s after the limit lifted the listener is on ${JSON.stringify(me?.receiving)}, the publisher's best is ${best}`);
    const upAfter = (Date.now() - lifted) / 1000;
    if (best === 'f') {
      await waitFor(5_000, async () => (await subscribeVideo(lis)).frameWidth === 1280,
        async () => `on f but not decoding 1280 px: ${JSON.stringify(await subscribeVideo(lis))}`);
    }
    // A steady link and a steady publisher: Chromium pauses f now and then (CPU), and
    // sfud rightly follows it; only a publisher that kept sending its layers counts.
    const switchesBefore = await metric('sfud_layer_switches_total');
    const sentBefore = await publishStats(pub);
    await sleep(8_000);
    const sentAfter = await publishStats(pub);
    const sentOver = (rid) => (sentAfter.layers[rid]?.framesSent ?? 0) - (sentBefore.layers[rid]?.framesSent ?? 0);
    const switches = (await metric('sfud_layer_switches_total')) - switchesBefore;
    // Steady: each layer sent all along or not at all (a layer coming back is worth a switch up).
    if (['h', 'f'].every((rid) => sentOver(rid) === 0 || sentOver(rid) >= 0.9 * sentOver('q'))) {
      assert.equal(switches, 0, `layer switches on a steady link once settled (publisher sent ${JSON.stringify(['q', 'h', 'f'].map(sentOver))})`);
    } else {
      console.log(`# the publisher paused a layer meanwhile (${JSON.stringify(['q', 'h', 'f'].map(sentOver))} frames): ${switches} switches not judged`);
    }

    // Down again: a lower layer within 5 s, frozen for under a second.
    const c = await subscribeVideo(lis);
    const from = (await shown()).receiving[0].layer;
    shaped.limit(limit);
    const dropped = Date.now();
    await waitFor(5_000, async () => {
      me = await shown();
      const order = ['q', 'h', 'f'];
      return order.indexOf(me.receiving[0].layer) >= 0 && order.indexOf(me.receiving[0].layer) < order.indexOf(from);
    }, () => `5 s after the link dropped to ${limit} kbit/s the listener is still on ${JSON.stringify(me?.receiving)}`);
    const downAfter = (Date.now() - dropped) / 1000;
    await sleep(5_000);
    const d = await subscribeVideo(lis);
    // Under 1 s, as the issue asks. A queue that grows fast is congestion within about
    // 0.4 s and the layer the link cannot carry stops at once (sfud_layer_drops_total),
    // so the lower layer's key frame crosses a short queue: 0.00 s in five runs.
    const frozen = d.freezeSeconds - c.freezeSeconds;
    assert.ok(frozen < 1, `the drop froze the listener's video for ${frozen.toFixed(2)} s`);
    // At least 5 frames a second over the drop and the 5 s after it (20 when all goes well).
    assert.ok(d.framesDecoded > c.framesDecoded + 25, `the listener kept decoding: ${JSON.stringify([c, d])}`);
    console.log(`# shaped listener at ${limit} kbit/s: up ${upAfter.toFixed(1)} s after the limit lifted (to ${best}), down ${downAfter.toFixed(1)} s after it returned, frozen ${frozen.toFixed(2)} s`);
  }
});

describe('adaptive video: tiles ask for what they show, unused layers pause at the publisher', () => {
  const pub = new Participant('tile-pub');
  const lis = new Participant('tile-lis', { role: 'listener' });
  const roomName = `tiles-${process.pid}`;
  inRoom(roomName, [pub, lis]);
  const received = async () => (await roomShown(roomName))?.members.find((m) => m.name === 'tile-lis')?.receiving?.[0];
  const layersShown = async () => (await roomShown(roomName))?.members.find((m) => m.name === 'tile-pub')
    ?.tracks.find((t) => t.kind === 'video')?.layers;
  /** The size of the publisher's tile on the listener's page, in device pixels. */
  const tileSize = (id) => lis.page.evaluate((peer) => {
    const tile = document.querySelector(`.tile[data-peer-id="${peer}"]`);
    return { width: Math.round(tile.clientWidth * devicePixelRatio), height: Math.round(tile.clientHeight * devicePixelRatio) };
  }, id);
  const setTileShown = (id, shown) => lis.page.evaluate(([peer, on]) => {
    document.querySelector(`.tile[data-peer-id="${peer}"]`).style.display = on ? '' : 'none';
  }, [id, shown]);

  it('a grid tile gets the smallest layer that covers it, f pauses at the publisher, a spotlit tile brings it back, a hidden tile gets nothing', { timeout: 150_000 }, track(async () => {
    const pubId = await waitFor(20_000, async () => (await pub.snapshot()).peerId,
      () => 'the publisher did not join within 20 s');
    // In the grid (4 tiles a row at 1280 px) the tile needs much less than 1280x720.
    let got;
    let sent;
    let want;
    let small;
    await waitFor(30_000, async () => {
      got = await received();
      sent = await publishStats(pub);
      small = await subscribeVideo(lis);
      const tile = await tileSize(pubId);
      // The smallest layer at least as big as the tile; sfud learns the sizes from key frames.
      want = ['q', 'h', 'f'].find((rid) => sent.layers[rid]?.width >= tile.width && sent.layers[rid]?.height >= tile.height) ?? 'f';
      return got?.max_width === tile.width && got.max_height === tile.height && got.layer === want
        && small.frameWidth > 0 && small.frameWidth === sent.layers[want]?.width;
    }, () => `the listener's grid tile does not get the layer that covers it within 30 s: sfud shows ${JSON.stringify(got)}, `
      + `want ${want} of ${JSON.stringify(sent?.layers)}, the listener decodes ${JSON.stringify(small)}`);
    assert.notEqual(want, 'f', 'a grid tile is smaller than the top layer');

    // Nobody receives f: 10 s later sfud asks the publisher to stop encoding it.
    let layers;
    await waitFor(25_000, async () => {
      sent = await publishStats(pub);
      layers = await layersShown();
      return sent.layers.f?.active === false && layers?.find((l) => l.rid === 'f')?.paused === true;
    }, () => `f is not paused at the publisher within 25 s: sfud shows ${JSON.stringify(layers)}, the publisher ${JSON.stringify(sent?.layers)}`);
    const pausedAt = await publishStats(pub);
    await sleep(2_000);
    const stillPaused = await publishStats(pub);
    assert.ok(stillPaused.layers.f.framesSent - pausedAt.layers.f.framesSent <= 1,
      `a paused layer is not encoded: ${JSON.stringify([pausedAt.layers.f, stillPaused.layers.f])}`);

    // Spotlit, the tile needs f: sfud asks for it again and switches the listener to it.
    await spotlight(lis, pub);
    const spotlit = Date.now();
    let seen;
    await waitFor(20_000, async () => {
      got = await received();
      seen = await subscribeVideo(lis);
      sent = await publishStats(pub);
      return got?.layer === 'f' && seen.frameWidth === sent.layers.f?.width && sent.layers.f?.active === true;
    }, () => `20 s after the spotlight the listener is not on f: sfud shows ${JSON.stringify(got)}, it decodes ${JSON.stringify(seen)}, the publisher ${JSON.stringify(sent?.layers)}`);
    const backAfter = (Date.now() - spotlit) / 1000;

    // Hidden, the tile gets nothing; shown again, video comes back.
    await setTileShown(pubId, false);
    await waitFor(5_000, async () => {
      got = await received();
      return got?.paused === true && got.layer === null;
    }, () => `5 s after the tile was hidden sfud still forwards: ${JSON.stringify(got)}`);
    const hidden = await subscribeVideo(lis);
    await sleep(2_000);
    const stillHidden = await subscribeVideo(lis);
    assert.ok(stillHidden.framesDecoded - hidden.framesDecoded <= 1,
      `a hidden tile decodes nothing: ${JSON.stringify([hidden, stillHidden])}`);
    await setTileShown(pubId, true);
    const shownAgain = Date.now();
    await waitFor(5_000, async () => (await subscribeVideo(lis)).framesDecoded > stillHidden.framesDecoded + 10,
      async () => `5 s after the tile was shown again the listener decodes nothing new: ${JSON.stringify(await subscribeVideo(lis))}`);
    console.log(`# adaptive tiles: grid tile on ${want}, f back ${backAfter.toFixed(1)} s after the spotlight, video back ${((Date.now() - shownAgain) / 1000).toFixed(1)} s after the tile showed`);
  }));
});

describe('adaptive video: on a narrow link the spotlit tile goes up first', () => {
  const [a, b] = [new Participant('prio-a'), new Participant('prio-b')];
  const lis = new Participant('prio-lis', { role: 'listener' });
  const roomName = `prio-${process.pid}`;
  inRoom(roomName, [a, b, lis]);
  let shaped = null;
  after(() => shaped?.remove());

  it('the listener gets a better layer of whoever it spotlights, the other stays on q', { timeout: 150_000 }, track(async () => {
    // Both publishers ramped: sfud sees their layers' rates.
    let room;
    const member = (name) => room?.members.find((m) => m.name === name);
    const layers = (name) => member(name)?.tracks.find((t) => t.kind === 'video')?.layers ?? [];
    const rate = (name, rid) => layers(name).find((l) => l.rid === rid)?.bitrate_bps ?? 0;
    // Chromium ramps its layers for a while: the link is sized once h has settled (two
    // readings at least 2 s apart within 10%), or the h it allows for may not fit later.
    const samples = [];
    await waitFor(45_000, async () => {
      room = await roomShown(roomName);
      const ready = member('prio-lis')?.subscribe?.state === 'connected' && member('prio-lis').receiving.length === 2
        && ['prio-a', 'prio-b'].every((n) => rate(n, 'h') >= 250_000 && rate(n, 'q') > 0);
      if (!ready) return false;
      const now = { at: Date.now(), h: ['prio-a', 'prio-b'].map((n) => rate(n, 'h')) };
      samples.push(now);
      const earlier = samples.findLast((s) => now.at - s.at >= 2_000);
      return earlier && now.h.every((h, i) => Math.abs(h - earlier.h[i]) <= 0.1 * earlier.h[i]);
    }, () => `the publishers' h does not settle at 250 kbit/s or more, or the listener does not receive both, within 45 s: ${JSON.stringify(room)}`);
    // A link with room for both q and one h, not two (payload rates plus headers and two
    // audio tracks, filled to 85%).
    const kbps = (bps) => bps / 1000;
    const q = Math.max(kbps(rate('prio-a', 'q')), kbps(rate('prio-b', 'q')));
    const h = Math.max(kbps(rate('prio-a', 'h')), kbps(rate('prio-b', 'h')));
    const oneUp = 1.1 * (h + q) + 90;
    const twoUp = 1.1 * 2 * h + 90;
    const limit = Math.round((oneUp + twoUp) / 2 / 0.85);
    shaped = new ShapedPort(Number(member('prio-lis').subscribe.remote.split(':').pop()));
    shaped.limit(limit);

    // Tall enough that the other tiles stay on screen below a spotlit one (off screen,
    // the page pauses them).
    await lis.page.setViewportSize({ width: 1280, height: 1400 });
    const trackOf = (name) => member(name).tracks.find((t) => t.kind === 'video').id;
    const layerOf = (name) => member('prio-lis').receiving.find((r) => r.track === trackOf(name))?.layer;
    for (const [big, small] of [[a, b], [b, a]]) {
      await spotlight(lis, big);
      await waitFor(30_000, async () => {
        room = await roomShown(roomName);
        return ['h', 'f'].includes(layerOf(big.name)) && layerOf(small.name) === 'q';
      }, () => `at ${limit} kbit/s with ${big.name} spotlit the listener gets ${big.name} on ${layerOf(big.name)} and ${small.name} on ${layerOf(small.name)}: ${JSON.stringify(member('prio-lis'))}`);
    }
    console.log(`# spotlight priority at ${limit} kbit/s (q ${q.toFixed(0)}, h ${h.toFixed(0)} kbit/s)`);
  }));
});

describe('a video sent once (no simulcast) that a listener\'s link cannot carry', () => {
  const pub = new Participant('once-pub', { simulcast: '0' });
  const lis = new Participant('once-lis', { role: 'listener' });
  const roomName = `once-${process.pid}`;
  inRoom(roomName, [pub, lis]);
  let shaped = null;
  after(() => shaped?.remove());
  const shown = async () => (await roomShown(roomName))?.members.find((m) => m.name === 'once-lis');
  /** The audio the listener's subscribe connection receives, and the video packets. */
  const audio = () => lis.page.evaluate(async () => {
    const out = { packetsReceived: 0, packetsLost: 0, videoPackets: 0 };
    (await window.sfud.pcs.subscribe?.getStats())?.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        out.packetsReceived += r.packetsReceived ?? 0;
        out.packetsLost += r.packetsLost ?? 0;
      }
      if (r.type === 'inbound-rtp' && r.kind === 'video') out.videoPackets += r.packetsReceived ?? 0;
    });
    return out;
  });

  it('is paused for that listener, whose audio goes on clean, and resumes when the link allows', { timeout: 240_000 }, track(async () => {
    // The publisher ramps past what the link will carry.
    let me;
    let video;
    await waitFor(45_000, async () => {
      const r = await roomShown(roomName);
      me = r?.members.find((m) => m.name === 'once-lis');
      video = r?.members.find((m) => m.name === 'once-pub')?.tracks.find((t) => t.kind === 'video');
      return me?.subscribe?.state === 'connected' && video?.bitrate_bps >= 400_000
        && (await subscribeVideo(lis)).framesDecoded >= 30;
    }, () => `the listener does not decode the publisher's video at 400 kbit/s or more within 45 s: ${JSON.stringify({ me, video })}`);

    // 200 kbit/s carries the audio (Opus at about 40 kbit/s and its headers) and not the
    // video; a queue of 30 packets (about a second of this link), as a home router's.
    const limit = 200;
    shaped = new ShapedPort(Number(me.subscribe.remote.split(':').pop()), { queue: 30 });
    shaped.limit(limit);
    await waitFor(20_000, async () => (me = await shown())?.receiving.some((r) => r.track === video.id && r.starved),
      () => `at ${limit} kbit/s sfud does not pause the video for the listener within 20 s: ${JSON.stringify(me)}`);
    // Paused: the audio arrives whole and on time. sfud tries the video again after a
    // calm while (5 s, then twice as long after each try the link could not carry), and
    // a try fills the link's queue for a moment: judged over 6 s that begin 2 s into a
    // pause (the queue has drained, and losses before it have been counted) during
    // which it stayed paused.
    const paused = Date.now();
    const starved = async () => (me = await shown())?.receiving.some((r) => r.track === video.id && r.starved);
    let a;
    let b;
    let va;
    let vb;
    let tries = 0;
    await waitFor(90_000, async () => {
      tries += 1;
      if (!(await starved())) return false;
      const before = await audio();
      await sleep(2_000);
      [a, va] = [await audio(), await subscribeVideo(lis)];
      await sleep(6_000);
      [b, vb] = [await audio(), await subscribeVideo(lis)];
      const got = b.packetsReceived - a.packetsReceived;
      // Paused throughout: no video packet came (a try to resume sends some).
      return (await starved()) && b.videoPackets - before.videoPackets <= 5 && got >= 270 && got <= 330;
    }, () => `no 6 s window within 90 s of the pause with the video paused and the audio at its 50 packets a second: `
      + `${JSON.stringify({ a, b, va, vb, me })}`);
    const received = b.packetsReceived - a.packetsReceived;
    const lost = b.packetsLost - a.packetsLost;
    assert.ok(lost <= 0.02 * received, `the listener's audio is clean while the video is paused: ${lost} of ${received} packets lost`);
    const drained = (Date.now() - paused) / 1000;

    // Lifted: the video comes back once sfud tries it again, after its current wait
    // (nothing probes for a track that sends nothing).
    shaped.limit(0);
    const lifted = Date.now();
    await waitFor(70_000, async () => {
      me = await shown();
      return !me.receiving.some((r) => r.track === video.id) && (await subscribeVideo(lis)).framesDecoded > vb.framesDecoded + 30;
    }, async () => `70 s after the limit lifted the video has not resumed: ${JSON.stringify(me)} ${JSON.stringify(await subscribeVideo(lis))}`);
    console.log(`# video sent once at ${limit} kbit/s: paused, audio clean ${drained.toFixed(0)} s later (window ${tries}),  ${received} packets in 6 s with ${lost} lost; `
      + `resumed ${((Date.now() - lifted) / 1000).toFixed(1)} s after the limit lifted`);
  }));
});
