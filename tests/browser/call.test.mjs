// Three headless Chromium pages hold a call through the real sfud daemon and its demo page.
//
// Run it with ./run.sh (a fresh network namespace where only `lo` exists), or
// `node --test` here with SFUD_BIN pointing at the daemon and CHROMIUM at the browser.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
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
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--allow-loopback-in-peer-connection',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];
const NAMES = ['alice', 'bob', 'carol'];
const MIN_FRAMES = 30;

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

/** Calls `probe` until it returns a truthy value or `ms` pass; `describe()` explains a timeout. */
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
    await writeFile(config, [
      '[http]', `listen = "127.0.0.1:${this.port}"`, '',
      '[rtc]', 'udp_port = 0', 'bind_ips = ["127.0.0.1"]', '',
    ].join('\n'));
    this.log = [];
    this.exited = null;
    this.proc = spawn(SFUD_BIN, ['--config', config], {
      env: { RUST_LOG: 'info', ...process.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.on('error', (err) => { this.exited = `could not start ${SFUD_BIN}: ${err.message}`; });
    this.proc.on('exit', (code, signal) => { this.exited ??= `exited with ${signal ?? `code ${code}`}`; });
    this.proc.stdout.on('data', (d) => this.log.push(d.toString()));
    this.proc.stderr.on('data', (d) => this.log.push(d.toString()));

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

/** One participant: its own browser profile and one page on the demo page. */
class Participant {
  constructor(name) {
    this.name = name;
    this.console = [];
  }

  async open(baseUrl, room) {
    this.dir = await mkdtemp(path.join(os.tmpdir(), `sfud-chromium-${this.name}-`));
    this.context = await chromium.launchPersistentContext(this.dir, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS,
    });
    this.page = this.context.pages()[0] ?? await this.context.newPage();
    this.page.on('console', (m) => this.console.push(`[${m.type()}] ${m.text()}`));
    this.page.on('pageerror', (e) => this.console.push(`[pageerror] ${e.message}`));
    await this.page.goto(`${baseUrl}/?room=${encodeURIComponent(room)}&name=${this.name}`);
  }

  /** What the page knows: its id, its peers, connection states and per-peer inbound stats. */
  snapshot() {
    return this.page.evaluate(async () => {
      const s = window.sfud;
      return {
        state: s.state,
        peerId: s.peerId,
        peers: s.peers,
        pcs: { publish: s.pcs.publish?.connectionState, subscribe: s.pcs.subscribe?.connectionState },
        tiles: [...document.querySelectorAll('.tile')].map((t) => t.dataset.peerId),
        error: document.getElementById('error').textContent,
        inbound: await s.inboundByPeer(),
      };
    });
  }

  async close() {
    await this.context?.close().catch(() => {});
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** Peer id of `name` as `snap`'s page knows it. */
const idOf = (snap, name) => Object.keys(snap.peers).find((id) => snap.peers[id].name === name);

describe('three Chromium pages in one room', () => {
  const daemon = new Daemon();
  const people = NAMES.map((n) => new Participant(n));
  const room = `room-${process.pid}`;
  let failed = false;
  const track = (fn) => async () => {
    try {
      await fn();
    } catch (err) {
      failed = true;
      throw err;
    }
  };
  const snapshots = () => Promise.all(people.map((p) => p.snapshot().catch((e) => ({ error: e.message }))));
  const report = (snaps) => snaps.map((s, i) => `${NAMES[i]}: ${JSON.stringify(s)}`).join('\n');

  before(track(async () => {
    await daemon.start();
    for (const p of people) await p.open(daemon.url, room);
  }));

  after(async () => {
    if (failed) {
      for (const p of people) console.error(`--- ${p.name}'s console ---\n${p.console.join('\n')}`);
      console.error(`--- sfud output (last 300 lines) ---\n${daemon.output()}`);
    }
    await Promise.all(people.map((p) => p.close()));
    await daemon.stop();
  });

  it(`each page decodes ${MIN_FRAMES} video frames and receives audio from each other page`, { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await snapshots();
      return last.every((snap, i) => NAMES.filter((n) => n !== NAMES[i]).every((other) => {
        const got = snap.inbound?.[idOf(snap, other)];
        return got && got.videoFramesDecoded >= MIN_FRAMES && (got.audioBytes > 0 || got.audioSamples > 0);
      }));
    }, () => `not every page got ${MIN_FRAMES} decoded frames and audio from both others within 30 s:\n${report(last)}`);
  }));

  it('a participant who clicks Leave disappears from the other pages within 5 s', { timeout: 30_000 }, track(async () => {
    const [alice, bob, carol] = people;
    const carolId = (await carol.snapshot()).peerId;
    assert.ok(carolId, 'carol has a peer id');
    await carol.page.click('#leave');
    let last = [];
    await waitFor(5_000, async () => {
      last = await Promise.all([alice.snapshot(), bob.snapshot()]);
      return last.every((s) => !s.tiles.includes(carolId) && !(carolId in s.peers));
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
