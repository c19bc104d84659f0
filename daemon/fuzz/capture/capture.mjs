// Captures a browser's publish offers for the fuzz corpus: serves
// offer.html on loopback, opens it in BROWSER (a command that takes the URL
// last, e.g. "firefox-esr --headless --profile /tmp/p"), and writes the two
// offers it posts to ../corpus/NAME-offer.sdp and
// ../corpus/NAME-simulcast-offer.sdp.
//
//   node capture.mjs firefox "firefox-esr --headless --profile $(mktemp -d)"
import { createServer } from 'node:http';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const [name, browser] = process.argv.slice(2);
if (!name || !browser) {
  console.error('usage: node capture.mjs NAME "BROWSER COMMAND"');
  process.exit(2);
}
const page = readFileSync(new URL('offer.html', import.meta.url));
const corpus = new URL('../corpus/', import.meta.url);
let written = 0;
let child;
const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (req.method === 'POST' && url.pathname === '/offer') {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      const simulcast = url.searchParams.get('simulcast') === '1' ? '-simulcast' : '';
      const file = new URL(`${name}${simulcast}-offer.sdp`, corpus);
      writeFileSync(file, body);
      console.log(`wrote ${file.pathname}`);
      res.end();
      if (++written === 2) {
        child.kill();
        server.close();
      }
    });
    return;
  }
  res.setHeader('content-type', 'text/html');
  res.end(page);
});
server.listen(0, '127.0.0.1', () => {
  const [command, ...args] = browser.split(' ');
  args.push(`http://127.0.0.1:${server.address().port}/`);
  child = spawn(command, args, { stdio: 'ignore' });
});
setTimeout(() => {
  console.error('no offers within 60 s');
  process.exit(1);
}, 60_000).unref();
