// Chromium through a cluster of two sfud nodes sharing a Redis of this test's own: two
// pages on one node hold a call in a room the other node serves (their sessions relayed
// there, their media straight to it), and when that node is killed the pages join again by
// themselves and the call resumes on the live node.
//
// Run it with ./run.sh (a fresh network namespace where only `lo` exists).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import {
  Daemon,
  Participant,
  freePort,
  receivesFrom,
  sfuctlAt,
  track,
  waitFor,
} from './harness.mjs';

const SECRET = 'browser-test-cluster-secret-0123456789';

/** A redis-server of this file's own on a free loopback port. */
async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  await waitFor(10_000, () => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  }), () => `redis-server did not listen on ${port} (scripts/setup --tests installs it)`);
  return { url: `redis://127.0.0.1:${port}`, stop: () => proc.kill('SIGKILL') };
}

const clusterConfig = (redis, nodeId) => [
  '[cluster]', `redis_url = "${redis.url}"`, `node_id = "${nodeId}"`, `secret = "${SECRET}"`,
];

describe('a cluster of two nodes', () => {
  let redis;
  let nodeA;
  let nodeB;
  const room = `cluster-${process.pid}`;
  const people = [new Participant('alice'), new Participant('bob')];
  let failed = false;

  before(async () => {
    redis = await startRedis();
    nodeA = new Daemon(clusterConfig(redis, 'node-a'));
    nodeB = new Daemon(clusterConfig(redis, 'node-b'));
    await Promise.all([nodeA.start(), nodeB.start()]);
    await waitFor(10_000, async () => {
      const status = JSON.parse(await sfuctlAt(nodeB, '--json', 'cluster', 'status'));
      return status.nodes.length === 2;
    }, () => 'the two nodes did not list each other within 10 s');
  });

  after(async () => {
    if (failed) {
      for (const [name, node] of [['node-a', nodeA], ['node-b', nodeB]]) {
        console.error(`--- ${name}'s output ---\n${node?.output()}`);
      }
    }
    await Promise.all(people.map((p) => p.close()));
    await Promise.all([nodeA?.stop(), nodeB?.stop()]);
    redis?.stop();
  });

  const tracked = (fn) => track(async () => {
    try {
      await fn();
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  it('two pages on node-b hold a call in the room node-a serves', { timeout: 60_000 }, tracked(async () => {
    // The operator opens the room on node-a; both pages reach node-b.
    await sfuctlAt(nodeA, 'rooms', 'create', room);
    await Promise.all(people.map((p) => p.open(room, nodeB)));
    let last = [];
    await waitFor(30_000, async () => {
      last = await Promise.all(people.map((p) => p.snapshot()));
      return receivesFrom(last[0], 'bob') && receivesFrom(last[1], 'alice');
    }, () => `the pages did not receive each other within 30 s:\n${JSON.stringify(last)}`);
    const shown = JSON.parse(await sfuctlAt(nodeA, '--json', 'rooms', 'show', room));
    assert.equal(shown.members.length, 2, 'node-a serves both pages');
  }));

  it('when node-a is killed the pages join again by themselves and the call resumes on node-b', { timeout: 90_000 }, tracked(async () => {
    const before = await Promise.all(people.map((p) => p.snapshot()));
    await nodeA.kill();
    const killed = Date.now();
    let last = [];
    await waitFor(40_000, async () => {
      last = await Promise.all(people.map((p) => p.snapshot()));
      return last.every((s, i) => s.state === 'joined' && s.peerId && s.peerId !== before[i].peerId)
        && receivesFrom(last[0], 'bob') && receivesFrom(last[1], 'alice');
    }, () => `the call did not resume within 40 s of the kill:\n${JSON.stringify(last)}`);
    const resumed = (Date.now() - killed) / 1000;
    console.log(`call resumed on node-b ${resumed.toFixed(1)} s after node-a was killed`);
    const shown = JSON.parse(await sfuctlAt(nodeB, '--json', 'rooms', 'show', room));
    assert.equal(shown.members.length, 2, 'node-b serves both pages now');
    assert.equal(last.every((s) => s.error === ''), true, `an error stayed on a page: ${last.map((s) => s.error)}`);
  }));
});
