// WHIP (RFC 9725) with a client nobody here wrote: medooze's whip-whep (npm; by an author
// of the RFC) in a Chromium page publishes its fake camera and microphone into a room with
// a join token, another page on the demo page decodes both, and the client's DELETE removes
// it. Its WHEP client views a room's speaker from another page. The endpoint's refusals
// take the RFC's status codes.
//
// Debian 12's simple-whip-client cannot run here: it links libsoup2 and GStreamer's
// webrtcbin loads libnice, which links libsoup3, and GLib aborts the process.
//
// Run it with ./run.sh (a fresh network namespace where only `lo` exists).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MIN_FRAMES,
  daemon,
  joinToken,
  Participant,
  receivesFrom,
  sfuctl,
  track,
  waitFor,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

/** A stand-in for an offer that is no SDP at all. */
const NOT_SDP = 'this is not a session description\r\n';

/** Loads whip-whep's `client` ('WHIPClient' from whip.js, 'WHEPClient' from whep.js) into `page`. */
async function loadClient(page, client = 'WHIPClient') {
  const file = client === 'WHIPClient' ? 'whip.js' : 'whep.js';
  const source = await readFile(path.join(here, 'node_modules/whip-whep', file), 'utf8');
  await page.addScriptTag({ type: 'module', content: `${source}\nwindow.${client} = ${client};` });
  await page.waitForFunction((c) => typeof window[c] === 'function', client);
}

describe('WHIP: a WHIP client publishes into a room', () => {
  const room = `whip-${process.pid}`;
  const viewer = new Participant('viewer', { role: 'listener' });
  const encoder = new Participant('obs');
  before(track(async () => {
    await viewer.open(room);
    await encoder.openPlain();
    await loadClient(encoder.page);
  }));
  after(() => Promise.all([viewer.close(), encoder.close()]));

  it('a page decodes its video and audio, rooms show lists it, and its DELETE removes it', { timeout: 90_000 }, track(async () => {
    const token = joinToken({ room, name: 'obs', role: 'speaker' });
    const url = `${daemon.url}/whip/${room}`;
    // The demo page tells its people where to publish from.
    await waitFor(10_000, async () => (await viewer.page.textContent('#whip-url')) === url,
      async () => `the demo page does not show ${url}: ${await viewer.page.textContent('#whip-note')}`);
    const location = await encoder.page.evaluate(async ({ url, token }) => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
      for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
      window.whip = new window.WHIPClient();
      await window.whip.publish(pc, url, token);
      return window.whip.resourceURL.pathname;
    }, { url, token });
    assert.match(location, new RegExp(`^/whip/${room}/[0-9a-f]{32}$`));

    let snap = {};
    const report = () => `viewer: ${JSON.stringify(snap)}\nencoder console:\n${encoder.console.join('\n')}\n${daemon.output()}`;
    await waitFor(30_000, async () => {
      snap = await viewer.snapshot();
      return receivesFrom(snap, 'obs');
    }, () => `the page did not decode the WHIP publisher's video and audio within 30 s:\n${report()}`);

    const shown = JSON.parse(await sfuctl('--json', 'rooms', 'show', room));
    const obs = shown.members.find((m) => m.name === 'obs');
    assert.ok(obs, `rooms show lists the publisher: ${JSON.stringify(shown.members)}`);
    assert.equal(obs.role, 'speaker');
    assert.deepEqual(obs.tracks.map((t) => t.kind).sort(), ['audio', 'video']);
    assert.equal(obs.subscribe, null, 'a WHIP publisher receives nothing');

    // The client's stop() sends DELETE to its session.
    await encoder.page.evaluate(() => window.whip.stop());
    await waitFor(10_000, async () => {
      const members = JSON.parse(await sfuctl('--json', 'rooms', 'show', room)).members;
      snap = await viewer.snapshot();
      return !members.some((m) => m.name === 'obs') && !Object.values(snap.peers ?? {}).some((p) => p.name === 'obs');
    }, () => `the publisher was still in the room 10 s after its DELETE:\n${report()}`);
    const again = await fetch(`${daemon.url}${location}`, { method: 'DELETE' });
    assert.equal(again.status, 404, 'its session is gone');
  }));
});

describe('WHEP: a WHEP client views a room\'s speaker', () => {
  const room = `whep-${process.pid}`;
  const speaker = new Participant('ann');
  const second = new Participant('bea');
  const player = new Participant('player');
  before(track(async () => {
    await speaker.open(room);
    await player.openPlain();
    await loadClient(player.page, 'WHEPClient');
  }));
  after(() => Promise.all([speaker.close(), second.close(), player.close()]));

  it('it decodes the speaker\'s video and audio, is listed as a listener, and its DELETE removes it', { timeout: 90_000 }, track(async () => {
    // The speaker publishes first: the viewer gets the room's first speaker.
    await waitFor(20_000, async () => {
      const shown = JSON.parse(await sfuctl('--json', 'rooms', 'show', room));
      return shown.members.some((m) => m.name === 'ann' && m.tracks.length === 2);
    }, () => 'the speaker did not publish within 20 s');
    const token = joinToken({ room, name: 'player', role: 'listener' });
    const location = await player.page.evaluate(async ({ url, token }) => {
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const video = document.createElement('video');
      video.muted = true;
      video.autoplay = true;
      document.body.append(video);
      pc.ontrack = (e) => { video.srcObject = e.streams[0] ?? new MediaStream([e.track]); };
      window.pc = pc;
      window.whep = new window.WHEPClient();
      await window.whep.view(pc, url, token);
      return window.whep.resourceURL.pathname;
    }, { url: `${daemon.url}/whep/${room}`, token });
    assert.match(location, new RegExp(`^/whep/${room}/[0-9a-f]{32}$`));

    const received = () => player.page.evaluate(async () => {
      let frames = 0;
      let audio = 0;
      (await window.pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
        if (r.type === 'inbound-rtp' && r.kind === 'audio') audio += r.bytesReceived ?? 0;
      });
      return { frames, audio };
    });
    let got = {};
    await waitFor(30_000, async () => {
      got = await received();
      return got.frames >= MIN_FRAMES && got.audio > 0;
    }, () => `the WHEP viewer decoded ${JSON.stringify(got)} within 30 s\n${player.console.join('\n')}\n${daemon.output()}`);

    const shown = JSON.parse(await sfuctl('--json', 'rooms', 'show', room));
    const viewer = shown.members.find((m) => m.name === 'player');
    assert.equal(viewer?.role, 'listener', JSON.stringify(shown.members));
    assert.equal(viewer.subscribe?.state, 'connected');

    // Another speaker joins and publishes: the room renegotiates with its
    // other participants, not with the viewer, which goes on decoding.
    await second.open(room);
    await waitFor(20_000, async () => {
      const members = JSON.parse(await sfuctl('--json', 'rooms', 'show', room)).members;
      return members.some((m) => m.name === 'bea' && m.tracks.length === 2);
    }, () => 'the second speaker did not publish within 20 s');
    const before = got.frames;
    await waitFor(15_000, async () => {
      got = await received();
      return got.frames >= before + MIN_FRAMES;
    }, () => `the viewer stopped decoding after another speaker joined: ${JSON.stringify(got)}\n${daemon.output()}`);

    await player.page.evaluate(() => window.whep.stop());
    await waitFor(10_000, async () => {
      const members = JSON.parse(await sfuctl('--json', 'rooms', 'show', room)).members;
      return !members.some((m) => m.name === 'player');
    }, () => 'the viewer was still in the room 10 s after its DELETE');
  }));

  it('a room nobody publishes in has nothing to view: 404', { timeout: 20_000 }, track(async () => {
    const empty = `whep-empty-${process.pid}`;
    const response = await player.page.evaluate(async (url) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      const offer = await pc.createOffer();
      const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: offer.sdp });
      return { status: r.status, body: await r.text() };
    }, `${daemon.url}/whep/${empty}`);
    assert.equal(response.status, 404, JSON.stringify(response));
    assert.match(response.body, /^unknown_track: /);
  }));
});

describe('WHIP: refusals', () => {
  const room = `whip-bad-${process.pid}`;
  const post = (body, headers = {}) => fetch(`${daemon.url}/whip/${room}`, {
    method: 'POST',
    headers: { 'content-type': 'application/sdp', ...headers },
    body,
  });

  it('bad SDP, bad tokens, unknown sessions and wrong media types get the RFC\'s codes', { timeout: 30_000 }, track(async () => {
    const bearer = (claims, opts) => ({ authorization: `Bearer ${joinToken(claims, opts)}` });
    const cases = [
      ['not an SDP offer', await post(NOT_SDP), 400],
      ['a token that does not verify', await post(NOT_SDP, { authorization: 'Bearer not.a.token' }), 401],
      ['an expired token', await post(NOT_SDP, bearer({ room, name: 'x', role: 'speaker' }, { ttl: -60 })), 401],
      ['a token for another room', await post(NOT_SDP, bearer({ room: 'elsewhere', name: 'x', role: 'speaker' })), 403],
      ['a listener\'s token', await post(NOT_SDP, bearer({ room, name: 'x', role: 'listener' })), 403],
      ['an offer that is not application/sdp', await post(NOT_SDP, { 'content-type': 'text/plain' }), 415],
      ['DELETE of an unknown session', await fetch(`${daemon.url}/whip/${room}/0123`, { method: 'DELETE' }), 404],
      ['PATCH of an unknown session', await fetch(`${daemon.url}/whip/${room}/0123`, {
        method: 'PATCH',
        headers: { 'content-type': 'application/trickle-ice-sdpfrag', 'if-match': '"x"' },
        body: 'a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n',
      }), 404],
    ];
    for (const [what, response, status] of cases) {
      assert.equal(response.status, status, `${what}: ${response.status} ${await response.text()}`);
    }
    const unauthorized = await post(NOT_SDP, { authorization: 'Bearer not.a.token' });
    assert.equal(unauthorized.headers.get('www-authenticate'), 'Bearer');
    const options = await fetch(`${daemon.url}/whip/${room}`, { method: 'OPTIONS' });
    assert.equal(options.status, 204);
    assert.equal(options.headers.get('accept-post'), 'application/sdp');
    // Nothing of these stayed in the room.
    const list = JSON.parse(await sfuctl('--json', 'rooms', 'list'));
    const rooms = Array.isArray(list) ? list : list.rooms;
    assert.ok(!rooms.some((r) => r.name === room && r.peers > 0), JSON.stringify(list));
  }));
});
