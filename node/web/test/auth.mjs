// cpns-auth's operator page in a real browser (Debian's chromium via playwright-core), run by
// tests/web.rs. Environment: CPNS_WEB_URL (from `cpns-auth web`), CPNS_USER (an existing
// user), CPNS_ENTITIES (enrolled PeerIds, comma separated), CPNS_SCREENSHOTS, CHROMIUM.
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const url = env('CPNS_WEB_URL');
const user = env('CPNS_USER');
const entities = env('CPNS_ENTITIES').split(',');
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
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const foreign = [];
context.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) foreign.push(r.url()); });
const page = await context.newPage();
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
try {
  let resp = await page.goto(`${origin}/web/`);
  check(resp.status() === 401, 'the operator page without the link is refused (401)');
  resp = await page.goto(`${origin}/v1/users`);
  check(resp.status() === 401, 'the admin API without token or cookie is refused (401)');
  resp = await page.goto(url);
  check(resp.ok() && new URL(page.url()).pathname === '/web/', 'the one-time link opens /web/');
  await page.locator('#live.on').waitFor({ timeout: WAIT });
  await page.locator(`#user-list tr[data-user="${user}"]`).waitFor({ timeout: WAIT });
  check(true, `user ${user} is listed`);

  await page.click('nav button[data-tab="codes"]');
  await page.fill('#code-form input[name="user"]', user);
  await page.click('#code-form button[type="submit"]');
  await page.locator('#new-code .qr svg').waitFor({ timeout: WAIT });
  const code = await page.locator('#code-text').textContent();
  check(code.startsWith('cpns1-'), 'a new enrolment code is shown with its QR code');
  await page.screenshot({ path: `${shots}/auth-code.png`, fullPage: true });

  await page.click('nav button[data-tab="entities"]');
  for (const e of entities) await page.locator(`#entity-list tr[data-entity="${e}"]`).waitFor({ timeout: WAIT });
  check(true, `the ${entities.length} enrolled entities are listed`);
  await page.screenshot({ path: `${shots}/auth-entities.png`, fullPage: true });
  for (const tab of ['pns', 'groups', 'revocations', 'usage']) {
    await page.click(`nav button[data-tab="${tab}"]`);
    await page.locator(`section#${tab}.active tbody tr`).first().waitFor({ timeout: WAIT });
  }
  check(errors.length === 0, `no script errors (${errors.join('; ')})`);
  check(foreign.length === 0, `no request left the server's origin (${foreign.join(', ')})`);
  console.log(`CODE ${code}`);
} catch (e) {
  await page.screenshot({ path: `${shots}/auth-failure.png`, fullPage: true }).catch(() => {});
  console.error(`FAILED: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
