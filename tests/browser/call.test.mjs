// Headless Chromium pages hold calls through the real sfud daemon and its demo page:
// three speakers in an SFU room, three speakers in a mesh room, and one speaker with two
// listeners in an SFU room. One daemon and one browser serve all of them; every participant
// has its own browser context.
//
// Run it with ./run.sh (a fresh network namespace where only `lo` exists), or
// `node --test` here with SFUD_BIN pointing at the daemon and CHROMIUM at the browser.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const SFUD_BIN = process.env.SFUD_BIN
  ? path.resolve(process.env.SFUD_BIN)
  : path.resolve(here, '../../target/debug/sfud');
// sfuctl from the same build as sfud, for the operator's side of the tests.
const SFUCTL_BIN = process.env.SFUCTL_BIN
  ? path.resolve(process.env.SFUCTL_BIN)
  : path.join(path.dirname(SFUD_BIN), 'sfuctl');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--allow-loopback-in-peer-connection',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];
const MIN_FRAMES = 30;
// The daemon accepts join tokens signed with this key (auth stays open: tokens are optional).
const TOKEN_KEY = { id: 'browser-test', secret: 'browser-test-secret-of-at-least-32-bytes' };

/** A join token (HS256 JWT) for `claims`, valid for `ttl` seconds (negative: expired). */
function joinToken(claims, { ttl = 3600, secret = TOKEN_KEY.secret } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT', kid: TOKEN_KEY.id })}.${part({ ...claims, iat: now, exp: now + ttl })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** A free TCP port on 127.0.0.1 (listen on 0, read it, close). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Calls `probe` until it returns a truthy value or `ms` pass; `describeFailure()` explains a timeout. */
async function waitFor(ms, probe, describeFailure) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(await describeFailure());
    await sleep(250);
  }
}

/** The sfud binary on an ephemeral HTTP port and any free UDP port, media on loopback only. */
class Daemon {
  async start() {
    this.dir = await mkdtemp(path.join(os.tmpdir(), 'sfud-browser-'));
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    const config = path.join(this.dir, 'sfud.toml');
    this.socket = path.join(this.dir, 'sfud.sock');
    await writeFile(config, [
      '[http]', `listen = "127.0.0.1:${this.port}"`, '',
      '[rtc]', 'udp_port = 0', 'bind_ips = ["127.0.0.1"]', '',
      // Its own control socket, so that it runs beside any other sfud.
      '[control]', `socket = "${this.socket}"`, '',
      // Every page joins from 127.0.0.1.
      '[limits]', 'joins_per_second = 100', '',
      '[auth]', 'mode = "open"', '[[auth.keys]]', `id = "${TOKEN_KEY.id}"`, `secret = "${TOKEN_KEY.secret}"`, '',
    ].join('\n'));
    this.log = [];
    this.exited = null;
    this.proc = spawn(SFUD_BIN, ['--config', config], {
      env: { RUST_LOG: 'info', ...process.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.on('error', (err) => { this.exited = `could not start ${SFUD_BIN}: ${err.message}`; });
    this.proc.on('exit', (code, signal) => { this.exited ??= `exited with ${signal ?? `code ${code}`}`; });
    // SFUD_LOG=FILE keeps the daemon's whole output (the report shows its last lines).
    const keep = process.env.SFUD_LOG ? createWriteStream(process.env.SFUD_LOG) : null;
    for (const out of [this.proc.stdout, this.proc.stderr]) {
      out.on('data', (d) => {
        this.log.push(d.toString());
        keep?.write(d);
      });
    }

    await waitFor(15_000, async () => {
      if (this.exited) assert.fail(`sfud ${this.exited} before serving HTTP:\n${this.output()}`);
      try {
        return (await fetch(`${this.url}/`)).ok;
      } catch {
        return false;
      }
    }, () => `sfud did not answer ${this.url}/ within 15 s:\n${this.output()}`);
  }

  output() {
    return this.log.join('').split('\n').slice(-300).join('\n');
  }

  async stop() {
    if (this.proc && this.exited === null) {
      const gone = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(timer);
    }
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

const daemon = new Daemon();

/** Runs sfuctl against the test's daemon; resolves with what it printed. */
function sfuctl(...args) {
  return new Promise((resolve, reject) => {
    execFile(SFUCTL_BIN, ['--socket', daemon.socket, ...args], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`sfuctl ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** A room as `sfuctl rooms show` has it, or null while nobody has joined it yet. */
async function roomShown(name) {
  try {
    return JSON.parse(await sfuctl('--json', 'rooms', 'show', name));
  } catch (err) {
    if (err.message.includes(`no room named`)) return null;
    throw err;
  }
}

let browser = null;
let failed = false;
const everyone = [];   // every participant opened, for the failure report

/** One participant: its own browser context and one page on the demo page. */
class Participant {
  /** `params` are extra URL parameters of the demo page (`role`, `mode`, `token`). */
  constructor(name, params = {}) {
    this.name = name;
    this.params = params;
    this.console = [];
    everyone.push(this);
  }

  async open(room) {
    this.context = await browser.newContext();
    this.page = await this.context.newPage();
    this.page.on('console', (m) => this.console.push(`[${m.type()}] ${m.text()}`));
    this.page.on('pageerror', (e) => this.console.push(`[pageerror] ${e.message}`));
    // A token names the room and the participant itself.
    const query = new URLSearchParams({ ...(this.params.token ? {} : { room, name: this.name }), ...this.params });
    await this.page.goto(`${daemon.url}/?${query}`);
  }

  /** What the page knows: its id, role, peers, connections and per-peer inbound stats. */
  snapshot() {
    return this.page.evaluate(async () => {
      const s = window.sfud;
      // Bytes received on the subscribe connection whoever they are from (null: no such connection).
      let subscribeBytes = null;
      // Streams the server sent sender reports about (Chromium's remote-outbound-rtp).
      let senderReported = 0;
      if (s.pcs.subscribe) {
        subscribeBytes = 0;
        (await s.pcs.subscribe.getStats()).forEach((r) => {
          if (r.type === 'inbound-rtp') subscribeBytes += r.bytesReceived ?? 0;
          if (r.type === 'remote-outbound-rtp' && r.packetsSent > 0) senderReported += 1;
        });
      }
      return {
        state: s.state,
        peerId: s.peerId,
        room: s.room,
        mode: s.mode,
        role: s.role,
        peers: s.peers,
        pcs: { publish: s.pcs.publish?.connectionState, subscribe: s.pcs.subscribe?.connectionState },
        mesh: Object.fromEntries(Object.entries(s.mesh).map(([id, pc]) => [id, pc.connectionState])),
        subscribeBytes,
        senderReported,
        tiles: Object.fromEntries([...document.querySelectorAll('.tile')]
          .map((t) => [t.dataset.peerId, t.querySelector('.role').textContent])),
        error: document.getElementById('error').textContent,
        inbound: await s.inboundByPeer(),
      };
    });
  }

  async close() {
    await this.context?.close().catch(() => {});
  }
}

/** Peer id of `name` as `snap`'s page knows it. */
const idOf = (snap, name) => Object.keys(snap.peers ?? {}).find((id) => snap.peers[id].name === name);

/** Whether `snap`'s page decoded MIN_FRAMES video frames and got audio from `name`. */
function receivesFrom(snap, name) {
  const got = snap.inbound?.[idOf(snap, name)];
  return Boolean(got && got.videoFramesDecoded >= MIN_FRAMES && (got.audioBytes > 0 || got.audioSamples > 0));
}

/** Marks the run failed when `fn` throws, so that the consoles and the daemon's log get printed. */
const track = (fn) => async () => {
  try {
    await fn();
  } catch (err) {
    failed = true;
    throw err;
  }
};

/** Opens `people` in `room` (all at once) before the suite's tests, closes them after. */
function inRoom(room, people) {
  before(track(() => Promise.all(people.map((p) => p.open(room)))));
  after(() => Promise.all(people.map((p) => p.close())));
  return {
    snapshots: () => Promise.all(people.map((p) => p.snapshot().catch((e) => ({ error: e.message })))),
    report: (snaps) => snaps.map((s, i) => `${people[i].name}: ${JSON.stringify(s)}`).join('\n'),
  };
}

before(async () => {
  try {
    await daemon.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  } catch (err) {
    failed = true;
    throw err;
  }
});

after(async () => {
  if (failed) {
    for (const p of everyone) console.error(`--- ${p.name}'s console ---\n${p.console.join('\n')}`);
    console.error(`--- sfud output (last 300 lines) ---\n${daemon.output()}`);
  }
  await browser?.close();
  await daemon.stop();
});

describe('SFU room: three speakers', () => {
  const names = ['alice', 'bob', 'carol'];
  const people = names.map((n) => new Participant(n));
  const room = inRoom(`sfu-${process.pid}`, people);

  it(`each page decodes ${MIN_FRAMES} video frames and receives audio from each other page`, { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await room.snapshots();
      return last.every((snap, i) => names.filter((n) => n !== names[i]).every((other) => receivesFrom(snap, other)));
    }, () => `not every page got ${MIN_FRAMES} decoded frames and audio from both others within 30 s:\n${room.report(last)}`);
    for (const snap of last) {
      assert.equal(snap.mode, 'sfu');
      assert.equal(snap.role, 'speaker');
    }
    // sfud protects and sends forwarded media itself on every subscribe connection.
    const metrics = await (await fetch(`${daemon.url}/metrics`)).text();
    assert.match(metrics, /^sfud_fast_path_connections 3$/m, 'all three subscribe connections on the fast path');
    // ...and gives every forwarded stream sender reports of its own (lip sync).
    await waitFor(15_000, async () => {
      last = await room.snapshots();
      return last.every((snap) => snap.senderReported >= 4);
    }, () => `not every page got sender reports about its four streams within 15 s:\n${room.report(last)}`);
  }));

  it('a participant who clicks Leave disappears from the other pages within 5 s', { timeout: 30_000 }, track(async () => {
    const [alice, bob, carol] = people;
    const carolId = (await carol.snapshot()).peerId;
    assert.ok(carolId, 'carol has a peer id');
    await carol.page.click('#leave');
    let last = [];
    await waitFor(5_000, async () => {
      last = await Promise.all([alice.snapshot(), bob.snapshot()]);
      return last.every((s) => !(carolId in s.tiles) && !(carolId in s.peers) && !(carolId in s.inbound));
    }, () => `carol (${carolId}) is still shown 5 s after Leave:\n${last.map((s) => JSON.stringify(s)).join('\n')}`);
    assert.equal((await carol.snapshot()).state, 'left');

    // The renegotiated call between the remaining two carries on.
    const before = last.map((s, i) => s.inbound[idOf(s, [bob, alice][i].name)]?.videoFramesDecoded ?? 0);
    await waitFor(10_000, async () => {
      last = await Promise.all([alice.snapshot(), bob.snapshot()]);
      return last.every((s, i) => (s.inbound[idOf(s, [bob, alice][i].name)]?.videoFramesDecoded ?? 0) >= before[i] + MIN_FRAMES);
    }, () => `alice and bob stopped decoding each other's video after carol left:\n${last.map((s) => JSON.stringify(s)).join('\n')}`);
  }));
});

describe('SFU room: H264, VP9 and VP8 publishers', () => {
  const people = [new Participant('hana', { codec: 'H264' }), new Participant('vic', { codec: 'VP9' }), new Participant('otto')];
  const codecs = { hana: 'video/H264', vic: 'video/VP9', otto: 'video/VP8' };
  const room = inRoom(`codecs-${process.pid}`, people);

  it('each page decodes the others\' video in the codec they published', { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await room.snapshots();
      return last.every((snap, i) => people.filter((_, j) => j !== i).every((o) => receivesFrom(snap, o.name)));
    }, () => `not every page got ${MIN_FRAMES} decoded frames and audio from both others within 30 s:\n${room.report(last)}`);
    for (const [i, snap] of last.entries()) {
      for (const other of people.filter((_, j) => j !== i)) {
        assert.equal(snap.inbound[idOf(snap, other.name)].videoCodec, codecs[other.name],
          `${people[i].name} decodes ${other.name}'s video as ${codecs[other.name]}`);
      }
    }
  }));
});

describe('mesh room: three speakers, media peer to peer', () => {
  const names = ['dave', 'erin', 'frank'];
  const people = names.map((n) => new Participant(n, { mode: 'mesh' }));
  const roomName = `mesh-${process.pid}`;
  const room = inRoom(roomName, people);

  it(`each page decodes ${MIN_FRAMES} video frames and receives audio from each other page`, { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await room.snapshots();
      return last.every((snap, i) => names.filter((n) => n !== names[i]).every((other) => receivesFrom(snap, other)));
    }, () => `not every page got ${MIN_FRAMES} decoded frames and audio from both others within 30 s:\n${room.report(last)}`);
    for (const snap of last) {
      assert.equal(snap.mode, 'mesh');
      assert.deepEqual(snap.pcs, { publish: undefined, subscribe: undefined }, 'no connection with the server');
      assert.deepEqual(Object.values(snap.mesh), ['connected', 'connected'], 'one connection per other page');
    }
  }));

  it('a join asking for SFU mode is refused with wrong_mode and shown', { timeout: 30_000 }, track(async () => {
    const gina = new Participant('gina', { mode: 'sfu' });
    try {
      await gina.open(roomName);
      let last;
      await waitFor(5_000, async () => {
        last = await gina.snapshot();
        return last.error.includes('wrong_mode');
      }, () => `gina's page does not show wrong_mode within 5 s: ${JSON.stringify(last)}`);
      assert.equal(last.peerId, null);
      assert.equal(await gina.page.isDisabled('#join'), false, 'the form can be used again');
    } finally {
      await gina.close();
    }
  }));

  it('a participant who clicks Leave disappears and their connections close', { timeout: 30_000 }, track(async () => {
    const [dave, erin, frank] = people;
    const frankId = (await frank.snapshot()).peerId;
    await frank.page.click('#leave');
    let last = [];
    await waitFor(5_000, async () => {
      last = await Promise.all([dave.snapshot(), erin.snapshot()]);
      return last.every((s) => !(frankId in s.tiles) && !(frankId in s.peers) && !(frankId in s.mesh)
        && !(frankId in s.inbound) && Object.keys(s.mesh).length === 1);
    }, () => `frank (${frankId}) is still shown 5 s after Leave:\n${last.map((s) => JSON.stringify(s)).join('\n')}`);
  }));
});

describe('SFU room: one speaker, two listeners', () => {
  const speaker = new Participant('sam');
  const listeners = ['lee', 'liz'].map((n) => new Participant(n, { role: 'listener' }));
  const people = [speaker, ...listeners];
  const roomName = `roles-${process.pid}`;
  const room = inRoom(roomName, people);

  it(`each listener decodes ${MIN_FRAMES} frames and receives audio from the speaker, and publishes nothing`, { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await room.snapshots();
      return last.slice(1).every((snap) => receivesFrom(snap, 'sam'));
    }, () => `not every listener got ${MIN_FRAMES} decoded frames and audio from sam within 30 s:\n${room.report(last)}`);
    // By now the listeners have been in the room as long as it took sam's video to reach them.
    last = await room.snapshots();
    const [sam, ...rest] = last;
    assert.equal(sam.role, 'speaker');
    assert.ok(sam.subscribeBytes === null || sam.subscribeBytes === 0,
      `sam, the only speaker, receives something:\n${room.report(last)}`);
    assert.deepEqual(sam.inbound, {});
    for (const [i, snap] of rest.entries()) {
      assert.equal(snap.role, 'listener');
      assert.equal(snap.pcs.publish, undefined, `${listeners[i].name} has a publish connection`);
      assert.deepEqual(Object.keys(snap.inbound), [idOf(snap, 'sam')], `${listeners[i].name} receives only sam`);
      assert.equal(snap.tiles[snap.peerId], 'listener', 'the page shows its own role');
      assert.equal(snap.tiles[idOf(snap, 'sam')], 'speaker');
    }
    for (const l of listeners) assert.equal(sam.tiles[idOf(sam, l.name)], 'listener');
  }));

  it('an operator promotes a listener with sfuctl and the others decode her; demoted, she stops publishing', { timeout: 90_000 }, track(async () => {
    const leeId = (await listeners[0].snapshot()).peerId;
    assert.ok(leeId, 'lee has a peer id');
    await sfuctl('peers', 'role', roomName, leeId, 'speaker');
    let last = [];
    await waitFor(30_000, async () => {
      last = await room.snapshots();
      const [sam, lee, liz] = last;
      return lee.role === 'speaker' && lee.pcs.publish === 'connected'
        && receivesFrom(sam, 'lee') && receivesFrom(liz, 'lee');
    }, () => `lee, promoted, did not reach sam and liz within 30 s:\n${room.report(last)}`);
    for (const snap of last) assert.equal(snap.tiles[leeId], 'speaker', 'every page shows lee as a speaker');

    await sfuctl('peers', 'role', roomName, leeId, 'listener');
    let shown = null;
    await waitFor(15_000, async () => {
      last = await room.snapshots();
      shown = JSON.parse(await sfuctl('--json', 'rooms', 'show', roomName));
      const member = shown.members.find((m) => m.id === leeId);
      return last[1].role === 'listener' && last[1].pcs.publish === undefined
        && last.every((snap) => snap.tiles[leeId] === 'listener')
        && member?.role === 'listener' && member.publish === null && member.tracks.length === 0;
    }, () => `lee, demoted, still publishes 15 s later:\n${room.report(last)}\n${JSON.stringify(shown)}`);
  }));
});

describe('join tokens', () => {
  const roomName = `token-${process.pid}`;
  const host = new Participant('hal');
  const room = inRoom(roomName, [host]);

  it('a link with only a token joins the token\'s room under its name and role', { timeout: 30_000 }, track(async () => {
    const tina = new Participant('tina', { token: joinToken({ room: roomName, name: 'tina', role: 'listener' }) });
    try {
      await tina.open();
      let last;
      await waitFor(10_000, async () => {
        last = await tina.snapshot();
        return last.state === 'joined';
      }, () => `tina's page did not join within 10 s: ${JSON.stringify(last)}`);
      assert.equal(last.room, roomName);
      assert.equal(last.role, 'listener');
      assert.equal(last.pcs.publish, undefined, 'a listener does not publish');
      const [hal] = await room.snapshots();
      assert.equal(hal.peers[last.peerId]?.name, 'tina');
      assert.equal(hal.peers[last.peerId]?.role, 'listener');
    } finally {
      await tina.close();
    }
  }));

  it('an expired token and a forged one are refused readably', { timeout: 30_000 }, track(async () => {
    const claims = { room: roomName, name: 'mallory', role: 'speaker' };
    const cases = [
      [new Participant('expired', { token: joinToken(claims, { ttl: -3600 }) }), 'token_expired', 'expired'],
      [new Participant('forged', { token: joinToken(claims, { secret: 'another-secret-that-is-32-bytes-long' }) }), 'bad_token', 'not valid'],
    ];
    try {
      await Promise.all(cases.map(([p]) => p.open()));
      for (const [p, code, words] of cases) {
        let last;
        await waitFor(10_000, async () => {
          last = await p.snapshot();
          return last.error.includes(code);
        }, () => `${p.name}'s page does not show ${code} within 10 s: ${JSON.stringify(last)}`);
        assert.ok(last.error.includes(words), `${p.name}'s error explains itself: ${last.error}`);
        assert.equal(last.peerId, null);
      }
    } finally {
      await Promise.all(cases.map(([p]) => p.close()));
    }
  }));
});

/** What the page's publish connection reports: the estimate, keyframe requests, layers sent. */
function publishStats(participant) {
  return participant.page.evaluate(async () => {
    const pc = window.sfud.pcs.publish;
    const out = { availableOutgoingBitrate: 0, pliCount: 0, layers: {} };
    if (!pc) return out;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated) out.availableOutgoingBitrate = r.availableOutgoingBitrate ?? 0;
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out.pliCount += r.pliCount ?? 0;
        out.layers[r.rid ?? '-'] = {
          width: r.frameWidth ?? 0, height: r.frameHeight ?? 0, framesSent: r.framesSent ?? 0,
          limit: r.qualityLimitationReason, active: r.active,
        };
      }
    });
    return out;
  });
}

/** The video the page's subscribe connection decodes: frames, size, losses. */
function subscribeVideo(participant) {
  return participant.page.evaluate(async () => {
    const pc = window.sfud.pcs.subscribe;
    const out = { framesDecoded: 0, frameWidth: 0, frameHeight: 0, packetsLost: 0, freezes: 0, freezeSeconds: 0 };
    if (!pc) return out;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        out.framesDecoded += r.framesDecoded ?? 0;
        out.frameWidth = r.frameWidth ?? 0;
        out.frameHeight = r.frameHeight ?? 0;
        out.packetsLost += r.packetsLost ?? 0;
        out.freezes += r.freezeCount ?? 0;
        out.freezeSeconds += r.totalFreezesDuration ?? 0;
      }
    });
    return out;
  });
}

/**
 * Clicks `subject`'s tile on `viewer`'s page, as a user does to see someone big: the tile
 * spans the page and asks sfud for the video at that size.
 */
async function spotlight(viewer, subject) {
  const id = await waitFor(20_000, async () => (await subject.snapshot()).peerId,
    () => `${subject.name} has not joined within 20 s`);
  const tile = `.tile.has-video[data-peer-id="${id}"]`;
  await viewer.page.waitForSelector(tile, { timeout: 20_000 });
  await viewer.page.click(tile);
  await viewer.page.waitForSelector(`${tile}.spotlight`, { timeout: 5_000 });
}

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

/** Shapes UDP to one port on `lo` (this test's own network namespace) with tc: htb, `kbit` or unlimited. */
class ShapedPort {
  constructor(port) {
    this.port = port;
  }

  static tc(...args) {
    execFileSync('tc', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  limit(kbit) {
    const rate = kbit ? `${kbit}kbit` : '10gbit';
    if (!this.installed) {
      ShapedPort.tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '10');
      ShapedPort.tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '10gbit');
      ShapedPort.tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:20', 'htb', 'rate', rate);
      ShapedPort.tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
        'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', 'dport', String(this.port), '0xffff', 'flowid', '1:20');
      this.installed = true;
    } else {
      ShapedPort.tc('class', 'change', 'dev', 'lo', 'parent', '1:', 'classid', '1:20', 'htb', 'rate', rate);
    }
  }

  remove() {
    if (this.installed) ShapedPort.tc('qdisc', 'del', 'dev', 'lo', 'root');
    this.installed = false;
  }
}

/** The value of an unlabelled counter in sfud's /metrics. */
async function metric(name) {
  const text = await (await fetch(`${daemon.url}/metrics`)).text();
  return Number(text.match(new RegExp(`^${name} (\\d+)`, 'm'))?.[1] ?? NaN);
}

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
    }, () => `the listener's subscribe connection is not up within 20 s: ${JSON.stringify(me)}`);
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
    await waitFor(30_000, async () => {
      room = await roomShown(roomName);
      return member('prio-lis')?.subscribe?.state === 'connected' && member('prio-lis').receiving.length === 2
        && ['prio-a', 'prio-b'].every((n) => rate(n, 'h') >= 250_000 && rate(n, 'q') > 0);
    }, () => `the publishers do not send h at 250 kbit/s, or the listener does not receive both, within 30 s: ${JSON.stringify(room)}`);
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
