// What the browser tests share: the sfud daemon they start (with its sfuctl), one
// headless Chromium, participants on the demo page (each its own browser context), the
// page's WebRTC statistics, and tc shaping on `lo`. Importing it registers the hooks that
// start and stop the daemon and the browser around a test file, and print every
// participant's console and the daemon's log when a test failed.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, createHmac, X509Certificate } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SFUD_BIN = process.env.SFUD_BIN
  ? path.resolve(process.env.SFUD_BIN)
  : path.resolve(here, '../../target/debug/sfud');
// sfuctl from the same build as sfud, for the operator's side of the tests.
export const SFUCTL_BIN = process.env.SFUCTL_BIN
  ? path.resolve(process.env.SFUCTL_BIN)
  : path.join(path.dirname(SFUD_BIN), 'sfuctl');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// A self-signed certificate for 127.0.0.1 (TURN over TLS), made once per test file;
// Chromium trusts it and no other (by its public key's hash).
export const TEST_TLS = (() => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sfud-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', key, '-out', cert], { stdio: ['ignore', 'ignore', 'pipe'] });
  const spki = new X509Certificate(readFileSync(cert)).publicKey.export({ type: 'spki', format: 'der' });
  return { cert, key, spki: createHash('sha256').update(spki).digest('base64') };
})();
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--allow-loopback-in-peer-connection',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  `--ignore-certificate-errors-spki-list=${TEST_TLS.spki}`,
];
export const MIN_FRAMES = 30;
// Media addresses of the daemon: loopback, and any a test file adds (SFUD_BIND_IPS, set
// before its first test starts the daemon).
const bindIps = () => (process.env.SFUD_BIND_IPS ?? '127.0.0.1').split(',');
// The daemon accepts join tokens signed with this key (auth stays open: tokens are optional).
export const TOKEN_KEY = { id: 'browser-test', secret: 'browser-test-secret-of-at-least-32-bytes' };

/** A join token (HS256 JWT) for `claims`, valid for `ttl` seconds (negative: expired). */
export function joinToken(claims, { ttl = 3600, secret = TOKEN_KEY.secret } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT', kid: TOKEN_KEY.id })}.${part({ ...claims, iat: now, exp: now + ttl })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** A free TCP port on 127.0.0.1 (listen on 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Calls `probe` until it returns a truthy value or `ms` pass; `describeFailure()` explains a timeout. */
export async function waitFor(ms, probe, describeFailure) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(await describeFailure());
    await sleep(250);
  }
}

/** The sfud binary on an ephemeral HTTP port and any free UDP port, media on loopback only. */
export class Daemon {
  /**
   * `extra`: more lines for its sfud.toml (e.g. a `[cluster]` section); `rtc`: more
   * lines for its `[rtc]` section (e.g. `workers = 2`).
   */
  constructor(extra = [], rtc = []) {
    this.extra = extra;
    this.rtc = rtc;
  }

  async start() {
    this.dir = await mkdtemp(path.join(os.tmpdir(), 'sfud-browser-'));
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    const config = path.join(this.dir, 'sfud.toml');
    this.socket = path.join(this.dir, 'sfud.sock');
    await writeFile(config, [
      '[http]', `listen = "127.0.0.1:${this.port}"`, '',
      '[rtc]', ...(this.rtc.some((l) => l.startsWith('udp_port')) ? [] : ['udp_port = 0']),
      `bind_ips = [${bindIps().map((ip) => `"${ip}"`).join(', ')}]`, ...this.rtc, '',
      // Its own control socket, so that it runs beside any other sfud.
      '[control]', `socket = "${this.socket}"`, '',
      // Every page joins from 127.0.0.1.
      '[limits]', 'joins_per_second = 100', '',
      '[auth]', 'mode = "open"', '[[auth.keys]]', `id = "${TOKEN_KEY.id}"`, `secret = "${TOKEN_KEY.secret}"`, '',
      ...this.extra, '',
    ].join('\n'));
    this.log = [];
    this.exited = null;
    this.proc = spawn(SFUD_BIN, ['--config', config], {
      env: { RUST_LOG: 'info', ...process.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.on('error', (err) => { this.exited = `could not start ${SFUD_BIN}: ${err.message}`; });
    this.proc.on('exit', (code, signal) => { this.exited ??= `exited with ${signal ?? `code ${code}`}`; });
    // SFUD_LOG=FILE keeps the daemon's whole output (the report shows its last lines); a
    // file's second daemon writes FILE.2, and so on.
    Daemon.started = (Daemon.started ?? 0) + 1;
    const logFile = process.env.SFUD_LOG && (Daemon.started === 1 ? process.env.SFUD_LOG : `${process.env.SFUD_LOG}.${Daemon.started}`);
    const keep = logFile ? createWriteStream(logFile) : null;
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

  /** SIGKILL: the daemon dies with no goodbye, as a crashed machine does. */
  async kill() {
    if (this.proc && this.exited === null) {
      const gone = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGKILL');
      await gone;
    }
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

export const daemon = new Daemon();

/** Runs sfuctl against the test's daemon; resolves with what it printed. */
export function sfuctl(...args) {
  return sfuctlAt(daemon, ...args);
}

/** Runs sfuctl against `target` (a Daemon); resolves with what it printed. */
export function sfuctlAt(target, ...args) {
  return new Promise((resolve, reject) => {
    execFile(SFUCTL_BIN, ['--socket', target.socket, ...args], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`sfuctl ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** A room as `sfuctl rooms show` has it, or null while nobody has joined it yet. */
export async function roomShown(name) {
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
export class Participant {
  /**
   * `params` are extra URL parameters of the demo page (`role`, `mode`, `token`);
   * `initScript` runs in the page before the demo page's own code (a client's quirks): a
   * function, or `[function, argument]`.
   */
  constructor(name, params = {}, { initScript } = {}) {
    this.name = name;
    this.params = params;
    this.initScript = initScript;
    this.console = [];
    everyone.push(this);
  }

  /** Opens the demo page of `at` (a Daemon; default the test's daemon) for `room`. */
  async open(room, at = daemon) {
    this.context = await browser.newContext();
    if (this.initScript) await this.context.addInitScript(...[].concat(this.initScript));
    this.page = await this.context.newPage();
    this.page.on('console', (m) => this.console.push(`[${m.type()}] ${m.text()}`));
    this.page.on('pageerror', (e) => this.console.push(`[pageerror] ${e.message}`));
    // A token names the room and the participant itself.
    const query = new URLSearchParams({ ...(this.params.token ? {} : { room, name: this.name }), ...this.params });
    await this.page.goto(`${at.url}/?${query}`);
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
        // Tracks the publish connection sends (a listener's carries the chat alone).
        publishing: s.pcs.publish?.getSenders().filter((x) => x.track).length ?? 0,
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

  /**
   * Opens a page of `at` that is not the demo page (`path`, default /healthz): an origin
   * of the daemon's for a client of the test's own making, with the fake camera.
   */
  async openPlain(at = daemon, path = '/healthz') {
    this.context = await browser.newContext();
    this.page = await this.context.newPage();
    this.page.on('console', (m) => this.console.push(`[${m.type()}] ${m.text()}`));
    this.page.on('pageerror', (e) => this.console.push(`[pageerror] ${e.message}`));
    await this.page.goto(`${at.url}${path}`);
  }

  async close() {
    await this.context?.close().catch(() => {});
  }
}

/** Peer id of `name` as `snap`'s page knows it. */
export const idOf = (snap, name) => Object.keys(snap.peers ?? {}).find((id) => snap.peers[id].name === name);

/** Whether `snap`'s page decoded MIN_FRAMES video frames and got audio from `name`. */
export function receivesFrom(snap, name) {
  const got = snap.inbound?.[idOf(snap, name)];
  return Boolean(got && got.videoFramesDecoded >= MIN_FRAMES && (got.audioBytes > 0 || got.audioSamples > 0));
}

/** Marks the run failed when `fn` throws, so that the consoles and the daemon's log get printed. */
export const track = (fn) => async () => {
  try {
    await fn();
  } catch (err) {
    failed = true;
    throw err;
  }
};

/** Opens `people` in `room` (all at once) before the suite's tests, closes them after. */
export function inRoom(room, people) {
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
  await rm(path.dirname(TEST_TLS.cert), { recursive: true, force: true });
});


/**
 * A page script that makes Chromium publish SSRC simulcast, as clients that munge their
 * offer do: the video section's one SSRC (and its RTX SSRC) becomes three, grouped by
 * `a=ssrc-group:SIM` lowest first, and once the offer is set the three encodings get the
 * sizes and bitrates of the demo page's RID layers (a quarter, half and all of the camera).
 */
export function ssrcSimulcast() {
  const createOffer = RTCPeerConnection.prototype.createOffer;
  RTCPeerConnection.prototype.createOffer = async function (...args) {
    const offer = await createOffer.apply(this, args);
    const lines = offer.sdp.split('\r\n');
    const start = lines.findIndex((l) => l.startsWith('m=video'));
    if (start < 0) return offer;
    let end = lines.findIndex((l, i) => i > start && l.startsWith('m='));
    if (end < 0) end = lines.length - (lines[lines.length - 1] === '' ? 1 : 0);
    const section = lines.slice(start, end);
    const first = section.find((l) => l.startsWith('a=ssrc:'));
    if (!first || section.some((l) => l.startsWith('a=ssrc-group:SIM'))) return offer;
    const fid = section.find((l) => l.startsWith('a=ssrc-group:FID'));
    const [media, rtx] = fid ? fid.split(' ').slice(1) : [first.split(' ')[0].slice('a=ssrc:'.length)];
    const attrs = section.filter((l) => l.startsWith(`a=ssrc:${media} `)).map((l) => l.slice(`a=ssrc:${media} `.length));
    const fresh = () => String(1 + Math.floor(Math.random() * 4e9));
    const extra = [];
    const sim = [media];
    for (let i = 0; i < 2; i += 1) {
      const [s, r] = [fresh(), fresh()];
      sim.push(s);
      extra.push(...attrs.map((a) => `a=ssrc:${s} ${a}`));
      if (rtx) extra.push(...attrs.map((a) => `a=ssrc:${r} ${a}`), `a=ssrc-group:FID ${s} ${r}`);
    }
    extra.push(`a=ssrc-group:SIM ${sim.join(' ')}`);
    lines.splice(end, 0, ...extra);
    return { type: offer.type, sdp: lines.join('\r\n') };
  };
  const setLocalDescription = RTCPeerConnection.prototype.setLocalDescription;
  RTCPeerConnection.prototype.setLocalDescription = async function (...args) {
    await setLocalDescription.apply(this, args);
    for (const sender of this.getSenders()) {
      if (sender.track?.kind !== 'video') continue;
      const parameters = sender.getParameters();
      if (parameters.encodings?.length !== 3 || parameters.encodings[0].scaleResolutionDownBy === 4) continue;
      parameters.encodings.forEach((e, i) => {
        e.scaleResolutionDownBy = [4, 2, 1][i];
        e.maxBitrate = [150_000, 500_000, 2_500_000][i];
      });
      await sender.setParameters(parameters);
    }
  };
}

/** What the page's publish connection reports: the estimate, keyframe requests, layers sent. */
export function publishStats(participant) {
  return participant.page.evaluate(async () => {
    const pc = window.sfud.pcs.publish;
    const out = { availableOutgoingBitrate: 0, pliCount: 0, layers: {} };
    if (!pc) return out;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated) out.availableOutgoingBitrate = r.availableOutgoingBitrate ?? 0;
      // The camera's (not the screen's transceiver, which waits for a screen to share).
      if (r.type === 'outbound-rtp' && r.kind === 'video' && r.mid !== window.sfud.screenMid) {
        out.pliCount += r.pliCount ?? 0;
        // By RID, or for SSRC simulcast by the encoding's index (0 the lowest).
        out.layers[r.rid ?? (r.encodingIndex !== undefined ? String(r.encodingIndex) : '-')] = {
          width: r.frameWidth ?? 0, height: r.frameHeight ?? 0, framesSent: r.framesSent ?? 0,
          limit: r.qualityLimitationReason, active: r.active,
        };
      }
    });
    return out;
  });
}

/** The video the page's subscribe connection decodes: frames, size, losses. */
export function subscribeVideo(participant) {
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
export async function spotlight(viewer, subject) {
  // A participant, or the peer id of one the harness does not drive.
  const id = typeof subject === 'string' ? subject : await waitFor(20_000, async () => (await subject.snapshot()).peerId,
    () => `${subject.name} has not joined within 20 s`);
  const tile = `.tile.has-video[data-peer-id="${id}"]`;
  await viewer.page.waitForSelector(tile, { timeout: 20_000 });
  await viewer.page.click(tile);
  await viewer.page.waitForSelector(`${tile}.spotlight`, { timeout: 5_000 });
}

/**
 * Shapes UDP to one port on `lo` (this test's own network namespace) with tc: htb, `kbit` or
 * unlimited. The link's queue is `lo`'s (1000 packets) unless `queue` packets are given.
 */
export class ShapedPort {
  constructor(port, { queue } = {}) {
    this.port = port;
    this.queue = queue;
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
      if (this.queue) ShapedPort.tc('qdisc', 'add', 'dev', 'lo', 'parent', '1:20', 'pfifo', 'limit', String(this.queue));
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

/** Drops every UDP datagram sent from `port` on `lo` for `ms`: an outage of that sender's path. */
export async function blackholeFrom(port, ms) {
  const tc = ShapedPort.tc;
  tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '10');
  try {
    tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '10gbit');
    tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:30', 'htb', 'rate', '10gbit');
    tc('qdisc', 'add', 'dev', 'lo', 'parent', '1:30', 'handle', '30:', 'pfifo', 'limit', '0');
    tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
      'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', 'sport', String(port), '0xffff', 'flowid', '1:30');
    await sleep(ms);
  } finally {
    tc('qdisc', 'del', 'dev', 'lo', 'root');
  }
}

/** The value of an unlabelled counter in sfud's /metrics. */
export async function metric(name) {
  const text = await (await fetch(`${daemon.url}/metrics`)).text();
  return Number(text.match(new RegExp(`^${name} (\\d+)`, 'm'))?.[1] ?? NaN);
}
