// Headless Chromium pages hold calls through the real sfud daemon and its demo page:
// three speakers in an SFU room, the same spread over two media workers and with UDP
// blocked (ICE-TCP; a daemon of their own each), publishers of three codecs, three speakers in a mesh room, one speaker with two
// listeners, and join tokens. One daemon and one browser serve the rest of this file
// (harness.mjs); every participant has its own browser context.
//
// Run it with ./run.sh (a fresh network namespace where only `lo` exists), or
// `node --test` here with SFUD_BIN pointing at the daemon and CHROMIUM at the browser.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  MIN_FRAMES,
  Daemon,
  ShapedPort,
  freePort,
  sfuctlAt,
  joinToken,
  waitFor,
  daemon,
  sfuctl,
  Participant,
  idOf,
  receivesFrom,
  track,
  inRoom,
  TEST_TLS,
} from './harness.mjs';

// A page script: every connection of the demo page is told to use relays alone.
const relayOnly = () => {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = function RelayOnly(config = {}, ...rest) {
    return new Native({ ...config, iceTransportPolicy: 'relay' }, ...rest);
  };
  window.RTCPeerConnection.prototype = Native.prototype;
};

/**
 * Drops, on `lo`, every datagram to or from `ports` except between the TURN relay ports
 * (0xA000-0xA3FF) and sfud's `media`.
 */
function blockAllButRelays(media, ports) {
  const tc = ShapedPort.tc;
  tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '10');
  tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '10gbit');
  tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:30', 'htb', 'rate', '10gbit');
  tc('qdisc', 'add', 'dev', 'lo', 'parent', '1:30', 'handle', '30:', 'pfifo', 'limit', '0');
  for (const [relay, sfud] of [['sport', 'dport'], ['dport', 'sport']]) {
    tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
      'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', relay, '40960', '0xfc00',
      'match', 'ip', sfud, String(media), '0xffff', 'flowid', '1:10');
  }
  for (const port of ports) {
    for (const dir of ['sport', 'dport']) {
      tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '2', 'u32',
        'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', dir, String(port), '0xffff', 'flowid', '1:30');
    }
  }
}

/** The local candidate of each connection's selected pair on `p`'s page. */
async function selectedLocals(p) {
  return p.page.evaluate(async () => {
    const out = [];
    for (const pc of Object.values(window.sfud.pcs).filter(Boolean)) {
      const stats = await pc.getStats();
      stats.forEach((r) => {
        if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
        const local = stats.get(stats.get(r.selectedCandidatePairId).localCandidateId);
        out.push({ type: local.candidateType, relayProtocol: local.relayProtocol });
      });
    }
    return out;
  });
}

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

describe('SFU room spread over two media workers: three speakers', () => {
  // Every participant after the first goes to the least-loaded worker: alice's
  // tracks are piped to the other worker, bob's back to hers, all simulcast.
  const spread = new Daemon([], ['workers = 2', 'room_spread_peers = 1']);
  const names = ['alice', 'bob', 'carol'];
  const people = names.map((n) => new Participant(n));
  const room = `spread-${process.pid}`;
  before(track(async () => {
    await spread.start();
    for (const p of people) await p.open(room, spread);
  }));
  after(async () => {
    await Promise.all(people.map((p) => p.close()));
    await spread.stop();
  });

  it('each page decodes every other page across the workers', { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await Promise.all(people.map((p) => p.snapshot()));
      return last.every((snap, i) => names.filter((n) => n !== names[i]).every((other) => receivesFrom(snap, other)));
    }, () => `not every page got ${MIN_FRAMES} decoded frames and audio from both others within 30 s:\n${last.map((s, i) => `${names[i]}: ${JSON.stringify(s)}`).join('\n')}\n${spread.output()}`);
    const show = JSON.parse(await sfuctlAt(spread, '--json', 'rooms', 'show', room));
    const workers = show.members.map((m) => m.worker);
    assert.deepEqual([...new Set(workers)].sort(), [0, 1], `participants on both workers: ${workers}`);
    const metrics = await (await fetch(`${spread.url}/metrics`)).text();
    for (const w of [0, 1]) {
      const piped = Number(metrics.match(new RegExp(`^sfud_media_worker_rtp_piped_total\\{worker="${w}"\\} (\\d+)$`, 'm'))?.[1] ?? 0);
      assert.ok(piped > 0, `worker ${w} received no piped packets`);
    }
  }));
});

describe('UDP blocked: three speakers over ICE-TCP', () => {
  // sfud's one media port, UDP and TCP; every UDP datagram to or from it is dropped on lo.
  let port;
  let tcpOnly;
  const names = ['alice', 'bob', 'carol'];
  const people = names.map((n) => new Participant(n));
  const room = `tcp-${process.pid}`;
  before(track(async () => {
    port = await freePort();
    tcpOnly = new Daemon([], [`udp_port = ${port}`, 'workers = 1']);
    await tcpOnly.start();
    const tc = ShapedPort.tc;
    tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '10');
    tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '10gbit');
    tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:30', 'htb', 'rate', '10gbit');
    tc('qdisc', 'add', 'dev', 'lo', 'parent', '1:30', 'handle', '30:', 'pfifo', 'limit', '0');
    for (const dir of ['sport', 'dport']) {
      tc('filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
        'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', dir, String(port), '0xffff', 'flowid', '1:30');
    }
    for (const p of people) await p.open(room, tcpOnly);
  }));
  after(async () => {
    await Promise.all(people.map((p) => p.close()));
    try { ShapedPort.tc('qdisc', 'del', 'dev', 'lo', 'root'); } catch { /* never installed */ }
    await tcpOnly?.stop();
  });

  it('each page decodes every other page, over TCP', { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await Promise.all(people.map((p) => p.snapshot()));
      return last.every((snap, i) => names.filter((n) => n !== names[i]).every((other) => receivesFrom(snap, other)));
    }, () => `not every page got ${MIN_FRAMES} decoded frames and audio from both others within 30 s with UDP blocked:\n${last.map((s, i) => `${names[i]}: ${JSON.stringify(s)}`).join('\n')}\n${tcpOnly.output()}`);
    // What each page's connections selected: a TCP candidate pair to sfud's port.
    for (const p of people) {
      const pairs = await p.page.evaluate(async () => {
        const out = [];
        for (const pc of Object.values(window.sfud.pcs).filter(Boolean)) {
          const stats = await pc.getStats();
          stats.forEach((r) => {
            if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
            const pair = stats.get(r.selectedCandidatePairId);
            const local = stats.get(pair.localCandidateId);
            const remote = stats.get(pair.remoteCandidateId);
            out.push({ protocol: local.protocol, remotePort: remote.port, tcpType: remote.tcpType });
          });
        }
        return out;
      });
      assert.equal(pairs.length, 2, `${p.name}: publish and subscribe connections: ${JSON.stringify(pairs)}`);
      for (const pair of pairs) {
        assert.equal(pair.protocol, 'tcp', `${p.name}: ${JSON.stringify(pair)}`);
        assert.equal(pair.remotePort, port, `${p.name}: ${JSON.stringify(pair)}`);
      }
    }
  }));
});

describe('UDP blocked: three speakers through the embedded TURN server, relay only', () => {
  // The browser reaches neither sfud's media port nor its TURN port over UDP: TURN over
  // TCP, relayed over UDP from the relay ports (0xA000-0xA3FF, let through) to sfud.
  let media;
  let turnPort;
  let relayed;
  const names = ['alice', 'bob', 'carol'];
  const people = names.map((n) => new Participant(n, {}, { initScript: relayOnly }));
  const stranger = new Participant('stranger');
  const room = `turn-${process.pid}`;
  before(track(async () => {
    media = await freePort();
    turnPort = await freePort();
    relayed = new Daemon(
      ['[turn]', 'enabled = true', `port = ${turnPort}`, 'relay_min_port = 40960', 'relay_max_port = 41983'],
      [`udp_port = ${media}`, 'workers = 1', 'ice_tcp = false'],
    );
    await relayed.start();
    // Relay to sfud and back passes; nothing else to or from either port does.
    blockAllButRelays(media, [media, turnPort]);
    for (const p of people) await p.open(room, relayed);
    await stranger.openPlain(relayed);
  }));
  after(async () => {
    await Promise.all([...people, stranger].map((p) => p.close()));
    try { ShapedPort.tc('qdisc', 'del', 'dev', 'lo', 'root'); } catch { /* never installed */ }
    await relayed?.stop();
  });

  it('each page decodes every other page through relays', { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await Promise.all(people.map((p) => p.snapshot()));
      return last.every((snap, i) => names.filter((n) => n !== names[i]).every((other) => receivesFrom(snap, other)));
    }, () => `not every page got ${MIN_FRAMES} decoded frames and audio from both others within 30 s through TURN:\n${last.map((s, i) => `${names[i]}: ${JSON.stringify(s)}`).join('\n')}\n${relayed.output()}`);
    for (const p of people) {
      const locals = await selectedLocals(p);
      assert.equal(locals.length, 2, `${p.name}: ${JSON.stringify(locals)}`);
      for (const l of locals) assert.deepEqual(l, { type: 'relay', relayProtocol: 'tcp' }, p.name);
    }
  }));

  it('wrong and expired credentials get no relay, valid ones relay only to sfud and only so often', { timeout: 90_000 }, track(async () => {
    const result = await stranger.page.evaluate(async ({ turnPort, room }) => {
      const url = `turn:127.0.0.1:${turnPort}?transport=tcp`;
      // Gathers relay candidates with `iceServers`; the errors ICE reported.
      const gather = async (iceServers, within = 15_000) => {
        const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
        const relays = [];
        const errors = [];
        pc.onicecandidate = (e) => { if (e.candidate) relays.push(e.candidate.candidate); };
        pc.onicecandidateerror = (e) => errors.push(e.errorCode);
        pc.createDataChannel('x');
        await pc.setLocalDescription(await pc.createOffer());
        await new Promise((resolve) => {
          if (pc.iceGatheringState === 'complete') resolve();
          pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
          setTimeout(resolve, within);
        });
        pc.close();
        return { relays: relays.length, errors };
      };
      const now = Math.floor(Date.now() / 1000);
      const wrong = await gather([{ urls: url, username: `${now + 600}:nobody`, credential: 'not-the-password' }]);
      const expired = await gather([{ urls: url, username: `${now - 60}:nobody`, credential: 'not-the-password' }]);
      // Real credentials, from a join of this page's own.
      const ws = new WebSocket(`ws://${location.host}/ws`);
      const joined = await new Promise((resolve, reject) => {
        ws.onopen = () => ws.send(JSON.stringify({ type: 'join', room, name: 'stranger', role: 'listener' }));
        ws.onmessage = (m) => { const msg = JSON.parse(m.data); if (msg.type === 'joined') resolve(msg); };
        ws.onerror = reject;
      });
      // UDP to the TURN port is blocked: TCP alone, so that a gathering ends
      // as soon as its one allocation does.
      const iceServers = joined.ice_servers.map((s) => ({ ...s, urls: s.urls.filter((u) => u.endsWith('transport=tcp')) }));
      const valid = await gather(iceServers);
      // Two connections of this page through the relay to each other, not to sfud:
      // their permissions name an address of sfud's, their channels a port that is not.
      const a = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
      const b = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
      a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
      b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
      a.createDataChannel('x');
      await a.setLocalDescription(await a.createOffer());
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription(await b.createAnswer());
      await a.setRemoteDescription(b.localDescription);
      await new Promise((r) => setTimeout(r, 5_000));
      const between = a.iceConnectionState;
      a.close();
      b.close();
      // One join's credentials make at most 16 allocation requests (one per
      // gathering here); then they get 486 and no relay (Chromium does not
      // report that error).
      const quota = [];
      for (let i = 0; i < 20 && quota.at(-1) !== 0; i++) quota.push((await gather(iceServers, 3_000)).relays);
      ws.close();
      return { wrong, expired, valid, between, quota, servers: iceServers.length };
    }, { turnPort, room: `${room}-stranger` });
    assert.equal(result.wrong.relays, 0, JSON.stringify(result));
    assert.ok(result.wrong.errors.includes(401), JSON.stringify(result));
    assert.equal(result.expired.relays, 0, JSON.stringify(result));
    assert.ok(result.expired.errors.includes(401), JSON.stringify(result));
    assert.equal(result.servers, 1, 'a join is handed the TURN server');
    assert.ok(result.valid.relays > 0, `a join's credentials get a relay: ${JSON.stringify(result)}`);
    assert.notEqual(result.between, 'connected', `a relay to an address that is not sfud's: ${JSON.stringify(result)}`);
    assert.notEqual(result.between, 'completed', JSON.stringify(result));
    assert.ok(result.quota[0] > 0 && result.quota.at(-1) === 0, `allocations past the quota: ${JSON.stringify(result)}`);
  }));
});

describe('UDP blocked: two speakers through TURN over TLS, relay only', () => {
  // The pages keep only the turns: URL of what sfud hands them (a certificate Chromium
  // is told to trust); the relays reach sfud over UDP as before. (TCP to the TURN port
  // cannot be dropped here: sfud's TLS end hands each connection to it over loopback.)
  let media;
  let tlsd;
  const names = ['alice', 'bob'];
  const tlsOnly = () => {
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = function TlsRelayOnly(config = {}, ...rest) {
      const iceServers = (config.iceServers ?? []).map((s) => ({
        ...s, urls: [].concat(s.urls).filter((u) => u.startsWith('turns:')),
      })).filter((s) => s.urls.length > 0);
      return new Native({ ...config, iceServers, iceTransportPolicy: 'relay' }, ...rest);
    };
    window.RTCPeerConnection.prototype = Native.prototype;
  };
  const people = names.map((n) => new Participant(n, {}, { initScript: tlsOnly }));
  before(track(async () => {
    media = await freePort();
    const turnPort = await freePort();
    const tlsPort = await freePort();
    tlsd = new Daemon(
      ['[turn]', 'enabled = true', `port = ${turnPort}`, 'relay_min_port = 40960', 'relay_max_port = 41983',
        `tls_port = ${tlsPort}`, `tls_cert = "${TEST_TLS.cert}"`, `tls_key = "${TEST_TLS.key}"`],
      [`udp_port = ${media}`, 'workers = 1', 'ice_tcp = false'],
    );
    await tlsd.start();
    blockAllButRelays(media, [media, turnPort]);
    for (const p of people) await p.open(`turns-${process.pid}`, tlsd);
  }));
  after(async () => {
    await Promise.all(people.map((p) => p.close()));
    try { ShapedPort.tc('qdisc', 'del', 'dev', 'lo', 'root'); } catch { /* never installed */ }
    await tlsd?.stop();
  });

  it('each page decodes the other through TLS relays', { timeout: 60_000 }, track(async () => {
    let last = [];
    await waitFor(30_000, async () => {
      last = await Promise.all(people.map((p) => p.snapshot()));
      return last.every((snap, i) => receivesFrom(snap, names[1 - i]));
    }, () => `not every page got ${MIN_FRAMES} decoded frames and audio from the other within 30 s through TURN over TLS:\n${last.map((s, i) => `${names[i]}: ${JSON.stringify(s)}`).join('\n')}\n${tlsd.output()}`);
    for (const p of people) {
      const locals = await selectedLocals(p);
      assert.equal(locals.length, 2, `${p.name}: ${JSON.stringify(locals)}`);
      for (const l of locals) assert.deepEqual(l, { type: 'relay', relayProtocol: 'tls' }, p.name);
    }
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
      assert.equal(snap.publishing, 0, `${listeners[i].name} publishes media`);
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
      return last[1].role === 'listener' && last[1].publishing === 0
        && last.every((snap) => snap.tiles[leeId] === 'listener')
        && member?.role === 'listener' && member.tracks.length === 0;
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
      assert.equal(last.publishing, 0, 'a listener does not publish');
      // The host's page hears of her by its own `peer_joined`, which may
      // come a moment after her page's `joined`.
      let hal;
      await waitFor(10_000, async () => {
        [hal] = await room.snapshots();
        return hal.peers[last.peerId] !== undefined;
      }, () => `the host's page never listed tina: ${JSON.stringify(hal?.peers)}`);
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
