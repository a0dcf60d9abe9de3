// Drives the live dashboard in headless Chromium, for a test on the other end of stdin/stdout.
//
//   node tests/browser/live.mjs <base-url>
//
// Opens <base-url> in /usr/bin/chromium (through playwright-core; no browser is downloaded),
// waits until the page is hydrated ([data-hydrated="true"]) and its update stream is open
// ([data-stream="open"]), then prints READY. After that it reads commands from stdin, one per
// line, in order:
//
//   EXPECT <text>      wait (at most 15 s, without reloading) until <text> appears in the page's
//                      aggregates table, then print "SEEN <text> <ms>" (ms = time waited)
//   SCREENSHOT <path>  save a full-page PNG, then print "SAVED <path>"
//   VIEWPORT <w> <h>   resize the page (CSS pixels), then print "RESIZED <w> <h>"
//   NOALERT            print "NOALERT" if the page shows no health warning banner now
//                      ([data-health-warning]), else fail
//   ALERT <kind>       wait (at most 15 s, without reloading) for the health warning banner
//                      ([role="alert"][data-health-warning~="<kind>"], kind = gap | behind),
//                      then print "ALERTED <kind> <ms> <banner text>"
//   HEALTH <key> <text>  wait (at most 15 s) until the health strip's item <key> (shards,
//                      behind, events, quarantined, gaps, errors) reads <text>, then print
//                      "HEALTHY <key> <text>"
//   STAMP <text>       wait (at most 15 s, without reloading, checking every animation frame)
//                      until <text> appears in the aggregates table, then print
//                      "STAMPED <text> <epoch ms>" (the wall-clock time it was first seen)
//   GOTO <path>        open <base-url><path>, wait until it is hydrated and its stream open,
//                      then print "AT <path>"
//   WAITTEXT <css>|<text>  wait (at most 15 s, without reloading) until an element matching
//                      <css> shows <text> (its innerText, whitespace squeezed), then print
//                      "FOUND <ms>"
//   TEXT <css>         print "TEXT <json>": the first match's innerText (squeezed), or null
//   SELECT <css>|<value>  choose <value> in the <select> matching <css>, print "SELECTED"
//   FILL <css>|<value> type <value> into the input matching <css>, print "FILLED"
//   WAITCSS <css>      wait (at most 15 s, without reloading) until an element matches <css>,
//                      then print "MATCHED <ms>"
//   SUBMIT <css>       click <css> (a submit button), wait for the new page to load, hydrate
//                      and open its stream, then print "SUBMITTED <path and query>"
//
// On stdin EOF it prints OK and exits 0 if the page logged no console errors, no page errors,
// no hydration warnings and no failed requests; otherwise it prints "ERROR <what>" lines and
// exits 1. Any timeout or unknown command prints "FAIL <reason>" and exits 1. Diagnostics go to
// stderr.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const WAIT_MS = 15_000;
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const baseUrl = process.argv[2];
if (!baseUrl) {
  process.stderr.write('usage: node tests/browser/live.mjs <base-url>\n');
  process.exit(2);
}

const problems = [];
let browser;

// Playwright messages carry a call log and terminal colours: keep the first line, plain.
function oneLine(text) {
  return String(text).replace(/\x1b\[[0-9;]*m/g, '').split('\n')[0].trim();
}

function say(line) {
  return new Promise((resolve) => process.stdout.write(`${line}\n`, resolve));
}

async function finish(code, line) {
  if (line) await say(line);
  if (browser) await browser.close().catch(() => {});
  process.exit(code);
}

async function fail(reason) {
  for (const p of problems) process.stderr.write(`live.mjs: page problem so far: ${p}\n`);
  await finish(1, `FAIL ${oneLine(reason)}`);
}

process.on('unhandledRejection', (e) => fail(`internal error: ${e && e.message ? e.message : e}`));

try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
} catch (e) {
  await fail(`could not launch ${CHROMIUM}: ${e.message}`);
}

const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.on('console', (msg) => {
  const text = msg.text();
  if (msg.type() === 'error') {
    problems.push(`console error: ${text}`);
  } else if (msg.type() === 'warning' && /hydrat/i.test(text)) {
    problems.push(`hydration warning: ${text}`);
  }
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('requestfailed', (req) => {
  // Leaving a page (GOTO, SUBMIT) aborts its open update stream: that is not a failure.
  if (req.failure()?.errorText === 'net::ERR_ABORTED' && new URL(req.url()).pathname === '/api/stream') {
    return;
  }
  problems.push(`request failed: ${req.method()} ${req.url()} (${req.failure()?.errorText ?? 'unknown'})`);
});

// Waits until the page is hydrated and its update stream open, then marks it: a reload would
// drop the marker, and the commands that promise "without reloading" check it.
async function settled(url) {
  try {
    await page.waitForSelector('[data-hydrated="true"]', { state: 'attached', timeout: WAIT_MS });
  } catch {
    await fail(`${url} did not hydrate within ${WAIT_MS} ms (no [data-hydrated="true"])`);
  }
  try {
    await page.waitForSelector('[data-stream="open"]', { state: 'attached', timeout: WAIT_MS });
  } catch {
    await fail(`the update stream of ${url} did not open within ${WAIT_MS} ms (no [data-stream="open"])`);
  }
  await page.evaluate(() => {
    window.__streamlensNoReload = true;
  });
}

async function open(url) {
  try {
    await page.goto(url, { waitUntil: 'load', timeout: WAIT_MS });
  } catch (e) {
    await fail(`could not open ${url}: ${e.message}`);
  }
  await settled(url);
}

function squeeze(text) {
  return String(text).replace(/\s+/g, ' ').trim();
}

await open(baseUrl);
await say('READY');

async function stillSamePage(what) {
  const same = await page.evaluate(() => window.__streamlensNoReload === true);
  if (!same) await fail(`the page was reloaded while waiting for ${what}`);
}

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const raw of input) {
  const line = raw.trim();
  if (line === '') continue;
  const space = line.indexOf(' ');
  const command = space < 0 ? line : line.slice(0, space);
  const arg = space < 0 ? '' : line.slice(space + 1);
  if (command === 'EXPECT' && arg !== '') {
    const started = Date.now();
    try {
      await page.waitForFunction(
        (text) => {
          // the aggregates, not the per-shard health table
          const table = document.querySelector('#dashboard section.table table');
          // innerText separates cells, so a text never matches across two of them
          return table !== null && table.innerText.includes(text);
        },
        arg,
        { timeout: WAIT_MS, polling: 50 },
      );
    } catch {
      await fail(`"${arg}" did not appear in the table within ${WAIT_MS} ms`);
    }
    await say(`SEEN ${arg} ${Date.now() - started}`);
  } else if (command === 'NOALERT' && arg === '') {
    const banner = await page.$('[data-health-warning]');
    if (banner !== null) {
      await fail(`unexpected health warning: ${await banner.innerText()}`);
    }
    await say('NOALERT');
  } else if (command === 'ALERT' && arg !== '') {
    const started = Date.now();
    const selector = `[role="alert"][data-health-warning~="${arg}"]`;
    let banner;
    try {
      banner = await page.waitForSelector(selector, { state: 'visible', timeout: WAIT_MS });
    } catch {
      await fail(`no visible ${selector} within ${WAIT_MS} ms`);
    }
    await stillSamePage(selector);
    const text = (await banner.innerText()).replace(/\s+/g, ' ').trim();
    await say(`ALERTED ${arg} ${Date.now() - started} ${text}`);
  } else if (command === 'HEALTH' && arg.includes(' ')) {
    const key = arg.slice(0, arg.indexOf(' '));
    const want = arg.slice(arg.indexOf(' ') + 1);
    try {
      await page.waitForFunction(
        ([key, want]) => {
          const dd = document.querySelector(`[data-health="${key}"] dd`);
          return dd !== null && dd.innerText.trim() === want;
        },
        [key, want],
        { timeout: WAIT_MS, polling: 50 },
      );
    } catch {
      const now = await page
        .$eval(`[data-health="${key}"] dd`, (dd) => dd.innerText)
        .catch(() => '(missing)');
      await fail(`health "${key}" did not read "${want}" within ${WAIT_MS} ms (it reads "${now}")`);
    }
    await stillSamePage(`health ${key}`);
    await say(`HEALTHY ${key} ${want}`);
  } else if (command === 'VIEWPORT' && /^\d+ \d+$/.test(arg)) {
    const [width, height] = arg.split(' ').map(Number);
    await page.setViewportSize({ width, height });
    await say(`RESIZED ${width} ${height}`);
  } else if (command === 'SCREENSHOT' && arg !== '') {
    await page.screenshot({ path: arg, fullPage: true });
    await say(`SAVED ${arg}`);
  } else if (command === 'STAMP' && arg !== '') {
    let seenAt;
    try {
      const handle = await page.waitForFunction(
        (text) => {
          const table = document.querySelector('#dashboard section.table table');
          return table !== null && table.innerText.includes(text) ? Date.now() : false;
        },
        arg,
        { timeout: WAIT_MS, polling: 'raf' },
      );
      seenAt = await handle.jsonValue();
    } catch {
      await fail(`"${arg}" did not appear in the table within ${WAIT_MS} ms`);
    }
    await stillSamePage(arg);
    await say(`STAMPED ${arg} ${seenAt}`);
  } else if (command === 'GOTO' && arg.startsWith('/')) {
    await open(baseUrl + arg);
    await say(`AT ${arg}`);
  } else if (command === 'WAITTEXT' && arg.includes('|')) {
    const selector = arg.slice(0, arg.indexOf('|'));
    const want = arg.slice(arg.indexOf('|') + 1);
    const started = Date.now();
    try {
      await page.waitForFunction(
        ([selector, want]) =>
          [...document.querySelectorAll(selector)].some((el) =>
            // SVG elements have no innerText
            (el.innerText ?? el.textContent).replace(/\s+/g, ' ').includes(want),
          ),
        [selector, want],
        { timeout: WAIT_MS, polling: 50 },
      );
    } catch {
      await fail(`no ${selector} showed "${want}" within ${WAIT_MS} ms`);
    }
    await stillSamePage(`${selector} ${want}`);
    await say(`FOUND ${Date.now() - started}`);
  } else if (command === 'TEXT' && arg !== '') {
    const text = await page.$eval(arg, (el) => el.innerText ?? el.textContent).catch(() => null);
    await say(`TEXT ${JSON.stringify(text === null ? null : squeeze(text))}`);
  } else if (command === 'SELECT' && arg.includes('|')) {
    const selector = arg.slice(0, arg.indexOf('|'));
    await page.selectOption(selector, arg.slice(arg.indexOf('|') + 1)).catch((e) => fail(e.message));
    await say('SELECTED');
  } else if (command === 'FILL' && arg.includes('|')) {
    const selector = arg.slice(0, arg.indexOf('|'));
    await page.fill(selector, arg.slice(arg.indexOf('|') + 1)).catch((e) => fail(e.message));
    await say('FILLED');
  } else if (command === 'CLICK' && arg !== '') {
    await page.click(arg, { timeout: WAIT_MS }).catch((e) => fail(`clicking ${arg}: ${e.message}`));
    await say('CLICKED');
  } else if (command === 'WAITCSS' && arg !== '') {
    const started = Date.now();
    try {
      await page.waitForSelector(arg, { state: 'attached', timeout: WAIT_MS });
    } catch {
      await fail(`nothing matched ${arg} within ${WAIT_MS} ms`);
    }
    await stillSamePage(arg);
    await say(`MATCHED ${Date.now() - started}`);
  } else if (command === 'SUBMIT' && arg !== '') {
    try {
      await Promise.all([
        page.waitForNavigation({ waitUntil: 'load', timeout: WAIT_MS }),
        page.click(arg),
      ]);
    } catch (e) {
      await fail(`submitting with ${arg}: ${e.message}`);
    }
    await settled(page.url());
    const url = new URL(page.url());
    await say(`SUBMITTED ${url.pathname}${url.search}`);
  } else {
    await fail(`unknown command: ${line}`);
  }
}

if (problems.length === 0) {
  await finish(0, 'OK');
}
for (const p of problems) await say(`ERROR ${oneLine(p)}`);
await finish(1);
