// The node's web view in a real browser: Debian's chromium, headless, driven by playwright-core.
// Run by tests/web.rs against a real 3-node PN; it prints `PUBLISHED <id>` for the Rust side,
// which then finds that service with another node's CLI. Every wait is bounded.
//
// Environment: CPNS_WEB_URL (the one-time URL from `cpns web`), CPNS_MEMBERS (PeerIds, comma
// separated), CPNS_BUSY_API / CPNS_BUSY_TOKEN (the local API of the member to make busy),
// CPNS_BUSY_PEER, CPNS_KEYWORD, CPNS_FETCH_KEYWORD / CPNS_FETCH_BYTES (a file-backed service of
// another member), CPNS_SCREENSHOTS (a directory), CHROMIUM (the executable).
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const url = env('CPNS_WEB_URL');
const members = env('CPNS_MEMBERS').split(',');
const busyPeer = env('CPNS_BUSY_PEER');
const keyword = env('CPNS_KEYWORD');
const shots = env('CPNS_SCREENSHOTS');
const origin = new URL(url).origin;
const WAIT = 20000;
mkdirSync(shots, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
// The page may talk to its own origin only: any other request fails the test.
const foreign = [];
context.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) foreign.push(r.url()); });
const page = await context.newPage();
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));

try {
  // 1. Without the one-time link the page is refused.
  let resp = await page.goto(`${origin}/web/`);
  check(resp.status() === 401, 'the page without the link is refused (401)');
  resp = await page.goto(`${origin}/web/assets/node.js`);
  check(resp.status() === 401, 'an asset without the cookie is refused (401)');

  // 2. The one-time link logs in (cookie) and lands on the page, which lists the members.
  resp = await page.goto(url);
  check(resp.ok() && new URL(page.url()).pathname === '/web/', 'the one-time link opens /web/');
  const cookies = await context.cookies();
  check(cookies.length === 1 && cookies[0].httpOnly && cookies[0].sameSite === 'Strict', 'an HttpOnly SameSite=Strict session cookie');
  check(!page.url().includes('token='), 'the token left the address bar');
  await page.locator('#live.on').waitFor({ timeout: WAIT });
  for (const m of members) {
    await page.locator(`#members tr[data-peer="${m}"]`).waitFor({ timeout: WAIT });
  }
  check(await page.locator('#members tbody tr').count() === members.length, `the ${members.length} members are listed`);
  await page.locator('#topology svg').waitFor({ timeout: WAIT });
  check(true, 'the topology is drawn as SVG');
  await page.screenshot({ path: `${shots}/pn.png`, fullPage: true });

  // A second use of the link is refused.
  const again = await browser.newContext();
  const second = await (await again.newPage()).goto(url);
  check(second.status() === 401, 'the link works only once');
  await again.close();

  // 3. A member goes Busy (through its own API); the page shows it without a reload.
  const loads = [];
  page.on('load', () => loads.push(Date.now()));
  const set = await fetch(`${env('CPNS_BUSY_API')}/v1/status/set`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env('CPNS_BUSY_TOKEN')}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ status: 'busy', reason: 'in a call' }),
  });
  check(set.ok, 'the member set itself busy');
  await page.locator(`#members tr[data-peer="${busyPeer}"] .status.busy`).waitFor({ timeout: WAIT });
  check(loads.length === 0, 'the member shows as busy without a reload');
  await page.screenshot({ path: `${shots}/busy.png`, fullPage: true });

  // 4. The trace renders as an SVG sequence diagram (B.1).
  await page.click('nav button[data-tab="trace"]');
  await page.selectOption('#trace-form select[name="flow"]', 'B.1');
  await page.locator('#trace-diagram svg').waitFor({ timeout: WAIT });
  const arrows = await page.locator('#trace-diagram svg .messageText').count();
  check(arrows > 0, `the B.1 trace is an SVG sequence diagram (${arrows} messages)`);
  await page.screenshot({ path: `${shots}/trace.png`, fullPage: true });

  // 5. Publish a service from the page; the Rust side finds it with another node's CLI.
  await page.click('nav button[data-tab="services"]');
  await page.fill('#publish-form input[name="name"]', 'Web printer');
  await page.fill('#publish-form input[name="keywords"]', keyword);
  await page.fill('#publish-form input[name="offers"]', 'published from the browser');
  await page.click('#publish-form button[type="submit"]');
  const msg = page.locator('#publish-msg[data-service]');
  await msg.waitFor({ timeout: WAIT });
  const id = await msg.getAttribute('data-service');
  check(/^svc-/.test(id), `published ${id} from the page`);
  await page.locator(`#own tr[data-service="${id}"]`).waitFor({ timeout: WAIT });
  await page.screenshot({ path: `${shots}/services.png`, fullPage: true });
  // 6. Find another member's file-backed service and fetch it, with progress up to its size.
  const fetchKeyword = env('CPNS_FETCH_KEYWORD');
  const fetchBytes = Number(env('CPNS_FETCH_BYTES'));
  await page.fill('#find-form input[name="keywords"]', fetchKeyword);
  await page.click('#find-form button[type="submit"]');
  const row = page.locator('#found tbody tr').first();
  await row.locator('button').waitFor({ timeout: WAIT });
  await row.locator('button').click();
  await page.locator('#fetch-msg', { hasText: 'fetched' }).waitFor({ timeout: WAIT });
  const bar = row.locator('progress');
  const [value, max] = [Number(await bar.getAttribute('value')), Number(await bar.getAttribute('max'))];
  check(max === fetchBytes && value === max, `fetched from the page: the progress bar counted to ${max} of ${fetchBytes} bytes`);
  await page.screenshot({ path: `${shots}/fetch.png`, fullPage: true });

  check(errors.length === 0, `no script errors (${errors.join('; ')})`);
  check(foreign.length === 0, `no request left the node's origin (${foreign.join(', ')})`);
  console.log(`PUBLISHED ${id}`);
} catch (e) {
  await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  console.error(`FAILED: ${e.message}`);
  if (errors.length) console.error(`page errors: ${errors.join('; ')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
