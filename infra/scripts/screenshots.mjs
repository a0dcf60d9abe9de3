// Saves a 1280×800 screenshot of every dashboard page of a running streamlens into a directory:
//
//   node infra/scripts/screenshots.mjs http://127.0.0.1:3000 docs
//
// Uses /usr/bin/chromium through playwright-core (no browser is downloaded). Each page is opened,
// hydrated and given a moment to receive live updates before the shot.
import { chromium } from 'playwright-core';

const [base, dir] = process.argv.slice(2);
if (!base || !dir) {
  process.stderr.write('usage: node infra/scripts/screenshots.mjs <base-url> <dir>\n');
  process.exit(2);
}
const pages = [
  ['overview', '/?window=1m&dimension=status&metric=sums.amount'],
  ['explore', '/explore?metric=amount&group_by=status&range=1h&live=1'],
  ['changes', '/changes?kind=MODIFY&live=1'],
  ['health', '/health'],
  // Set PAGES=replays,beside (after starting a replay into `fix`) for the replay pages.
  ['replays', '/replays'],
  ['beside', '/explore?metric=amount&group_by=status&range=all&ns=fix&beside=1'],
].filter(([name]) => (process.env.PAGES || 'overview,explore,changes,health').split(',').includes(name));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
for (const [name, path] of pages) {
  await page.goto(base + path, { waitUntil: 'load' });
  await page.waitForSelector('[data-hydrated="true"]', { state: 'attached', timeout: 15000 });
  await page.waitForTimeout(1500);
  const file = `${dir}/${name}.png`;
  await page.screenshot({ path: file });
  process.stdout.write(`saved ${file}\n`);
}
await browser.close();
