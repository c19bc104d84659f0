// Firefox publishing through the real sfud daemon, watched by a Chromium listener: RID
// simulcast as Firefox sends it (its offer also lists an SSRC and an RTX SSRC for each
// layer, and names its tracks in `a=msid` by ids that are not the tracks' own). Firefox
// runs as a plain headless process with fake devices (Playwright drives only its own
// patched Firefox), so what it sends is read from sfud (sfuctl), and its console from
// its standard output. Run it with ./run.sh, as the other files.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  daemon,
  sleep,
  waitFor,
  sfuctl,
  roomShown,
  Participant,
  track,
  inRoom,
  subscribeVideo,
  spotlight,
} from './harness.mjs';

const FIREFOX = process.env.FIREFOX ?? 'firefox-esr';

// Firefox gathers candidates only on the interface of the default route, never on
// loopback: this namespace gets a veth pair with a default route through it, and sfud
// also listens on its address. Done here, before the harness starts sfud.
const VETH = 'sfud-ff0';
const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
try { ip('link', 'del', VETH); } catch { /* none left from an earlier run */ }
ip('link', 'add', VETH, 'type', 'veth', 'peer', 'name', 'sfud-ff1');
ip('addr', 'add', '10.99.0.1/24', 'dev', VETH);
ip('addr', 'add', '10.99.0.2/24', 'dev', 'sfud-ff1');
ip('link', 'set', VETH, 'up');
ip('link', 'set', 'sfud-ff1', 'up');
ip('route', 'add', 'default', 'via', '10.99.0.2', 'dev', VETH);
process.env.SFUD_BIND_IPS = '127.0.0.1,10.99.0.1';
after(() => ip('link', 'del', VETH));

/** A headless Firefox on the demo page, with fake devices and its console on stdout. */
class Firefox {
  open(query) {
    this.profile = mkdtempSync(path.join(os.tmpdir(), 'sfud-firefox-'));
    writeFileSync(path.join(this.profile, 'user.js'), [
      ['media.navigator.streams.fake', true],
      ['media.navigator.permission.disabled', true],
      ['media.autoplay.default', 0],
      ['media.peerconnection.ice.obfuscate_host_addresses', false],
      ['devtools.console.stdout.content', true],
      ['browser.shell.checkDefaultBrowser', false],
      ['datareporting.policy.dataSubmissionEnabled', false],
    ].map(([k, v]) => `user_pref("${k}", ${JSON.stringify(v)});`).join('\n'));
    this.output = [];
    this.proc = spawn(FIREFOX, ['--headless', '--no-remote', '--profile', this.profile,
      `${daemon.url}/?${new URLSearchParams(query)}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.on('error', (err) => this.output.push(`could not start ${FIREFOX}: ${err.message}`));
    for (const out of [this.proc.stdout, this.proc.stderr]) out.on('data', (d) => this.output.push(d.toString()));
  }

  close() {
    this.proc?.kill('SIGKILL');
    if (this.profile) rmSync(this.profile, { recursive: true, force: true });
  }
}

describe('Firefox: a publisher sending RID simulcast as Firefox does', () => {
  const fox = new Firefox();
  const lis = new Participant('ff-lis', { role: 'listener' });
  const roomName = `firefox-${process.pid}`;
  inRoom(roomName, [lis]);
  after(() => fox.close());
  const member = async (name) => (await roomShown(roomName))?.members.find((m) => m.name === name);
  const layers = async () => (await member('fox'))?.tracks.find((t) => t.kind === 'video')?.layers ?? [];
  const rate = (all, rid) => all.find((l) => l.rid === rid)?.bitrate_bps ?? 0;

  it('three layers arrive; a grid tile gets h, the unused f pauses in Firefox, the spotlight brings it back', { timeout: 180_000 }, track(async () => {
    await lis.page.setViewportSize({ width: 240, height: 1000 });
    fox.open({ room: roomName, name: 'fox' });
    try {
      let shown;
      await waitFor(40_000, async () => {
        shown = await layers();
        return ['q', 'h', 'f'].every((rid) => rate(shown, rid) > 0);
      },
        async () => `sfud does not get three layers from Firefox: ${JSON.stringify(shown)}; `
          + `the room: ${await sfuctl('--json', 'rooms', 'show', roomName).catch((e) => e.message)}`);

      // On a narrow page the grid tile needs the h layer (640x360).
      let got;
      let seen;
      await waitFor(30_000, async () => {
        got = (await member('ff-lis'))?.receiving?.[0];
        seen = await subscribeVideo(lis);
        return got?.layer === 'h' && seen.frameWidth === 640;
      }, () => `the small grid tile does not get layer h: sfud shows ${JSON.stringify(got)}, the listener decodes ${JSON.stringify(seen)}`);

      // Nobody receives f: 10 s later sfud asks Firefox to stop it, and Firefox does
      // (the page finds the sender by the mid of the section Firefox's `a=msid` names).
      await waitFor(40_000, async () => {
        shown = await layers();
        return shown.find((l) => l.rid === 'f')?.paused && rate(shown, 'f') === 0 && rate(shown, 'h') > 0;
      }, () => `Firefox does not stop sending layer f: sfud shows ${JSON.stringify(shown)}`);

      // Spotlit on a big page: f is asked for again, and the listener gets it.
      await lis.page.setViewportSize({ width: 1280, height: 1400 });
      await spotlight(lis, (await member('fox')).id);
      await waitFor(40_000, async () => {
        shown = await layers();
        got = (await member('ff-lis'))?.receiving?.[0];
        seen = await subscribeVideo(lis);
        return rate(shown, 'f') > 0 && got?.layer === 'f' && seen.frameWidth > 640;
      }, () => `the spotlit tile does not get layer f: sfud shows ${JSON.stringify(shown)} and ${JSON.stringify(got)}, `
        + `the listener decodes ${JSON.stringify(seen)}`);
      const first = seen;
      await sleep(5_000);
      const second = await subscribeVideo(lis);
      const fps = (second.framesDecoded - first.framesDecoded) / 5;
      assert.ok(fps >= 15, `the listener decodes ${fps} frames/s of layer f`);
      assert.ok(second.packetsLost <= first.packetsLost,
        `no layer mixing: nothing looks lost on layer f (${first.packetsLost} -> ${second.packetsLost})`);
      console.log(`# Firefox RID simulcast: grid tile on h (640 px), spotlight on f (${second.frameWidth} px) at ${fps} frames/s`);
    } catch (err) {
      console.error(`--- Firefox's output ---\n${fox.output.join('').split('\n').slice(-100).join('\n')}`);
      throw err;
    }
  }));
});
