/**
 * The built-in dashboard (/ui/) in headless Chromium against a running
 * `sluice run` (issue 9, "Must show"): while a rate-limited download from
 * the client namespace runs through sluice, the page opened at
 * /ui/?token=SECRET lists the flow (its destination and sniffed name), its
 * counters grow, rules, outbounds and counters are filled, GLOBAL's
 * selector changes the member through PUT /proxies/GLOBAL, a `select`
 * group's selector does too (PUT /proxies/choose) and new flows follow it
 * (choose -> spare, a live microsocks) while the running one stays, the
 * explain box says what decided the route and what was sniffed after, and a mouse
 * click on the flow's close button ends it: curl fails at once and the
 * API no longer lists the flow. Without the token the page shows its login
 * box, and the secret typed there works. A screenshot of the live page is
 * written (to docs/dashboard.png when SLUICE_SCREENSHOT names that file).
 *
 * Chromium runs in the gateway namespace, where the API listens on
 * loopback, and is driven over CDP through a pipe (test/fixtures/chromium.ts).
 *
 * Needs root, /dev/net/tun, ip, nft, curl, nginx (nginx-light), chromium, microsocks.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { requireRoot } from '../harness/netns.js';
import { CLIENT_V4, SERVER_V4 } from '../harness/topology.js';
import { requireCommands } from '../fixtures/engine/lab.js';
import { Browser, type Page } from '../fixtures/chromium.js';
import { API, apiGet, controlLab, startDownload, within, WEB_NAME } from '../fixtures/control-lab.js';

interface Snapshot {
  connections: Array<{ id: string; download: number; metadata: { destinationIP: string; destinationPort: string } }> | null;
}

const DEST = `${SERVER_V4}:80`;

/** A real mouse click at the centre of the element `selector` matches. */
async function click(page: Page, selector: string): Promise<void> {
  const box = await page.evaluate<{ x: number; y: number } | null>(`(() => {
    const e = document.querySelector(${JSON.stringify(selector)});
    if (!e) return null;
    e.scrollIntoView({ block: 'center' });
    const r = e.getBoundingClientRect();
    return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
  })()`);
  if (box === null) throw new Error(`no element matches ${selector}`);
  for (const type of ['mouseMoved', 'mousePressed', 'mouseReleased']) {
    await page.send('Input.dispatchMouseEvent', { type, x: box.x, y: box.y, button: 'left', clickCount: 1 });
  }
}

/** The flows table's rows as the page shows them. */
const ROWS = `[...document.querySelectorAll('#flows tbody tr')].map((tr) => ({ id: tr.dataset.id, cells: [...tr.cells].map((c) => c.textContent) }))`;

t.test('the dashboard shows a live flow and closes it', { timeout: 240_000 }, async (t) => {
  if (!requireRoot(t) || !requireCommands(t, ['ip', 'nft', 'curl', 'nginx', 'chromium', 'microsocks'])) return;
  // A select group `choose` [direct, spare] routes port 80; spare is a live microsocks.
  const lab = await controlLab(t, 'dashuiab', 'rules:\n  - { port: [80], network: tcp, outbound: choose }\nfinal: direct\n', {
    outbounds: '  - { name: choose, type: select, outbounds: [direct, spare], default: direct }',
    socks: true,
  });
  const secret = lab.secret();
  t.ok(secret.length >= 16, 'sluice generated a secret into api.secretFile');
  const download = startDownload(t, lab.client);

  // The flow is in the registry before the browser looks.
  const deadline = Date.now() + 20_000;
  let id: string | null = null;
  while (id === null && Date.now() < deadline) {
    const snap = (await apiGet(lab.gateway, secret, '/connections')) as Snapshot;
    id = snap.connections?.find((c) => `${c.metadata.destinationIP}:${c.metadata.destinationPort}` === DEST)?.id ?? null;
    if (id === null) await new Promise((r) => setTimeout(r, 200));
  }
  t.ok(id !== null, `the download is in GET /connections (id ${id})`);
  if (id === null) return;

  const browser = await Browser.launch(t, lab.gateway, lab.dir);
  const page = await browser.open(`http://${API}/ui/?token=${encodeURIComponent(secret)}`);
  t.teardown(async () => {
    const problems = page.problems();
    if (problems.length > 0) t.comment(`page problems:\n${problems.join('\n')}`);
    if (!t.passing()) t.comment(`page at failure: ${await page.evaluate<string>('location.href + "\\n" + document.body.innerText.slice(0, 3000)').catch((e: Error) => e.message)}`);
  });

  const row = await page.waitFor<{ id: string; cells: string[] }>(`${ROWS}.find((r) => r.cells[1] === ${JSON.stringify(DEST)})`, 30_000, `a row for ${DEST}`);
  t.equal(row.id, id, 'the row carries the flow id the API gives');
  t.match(row.cells[0], /^192\.0\.2\.2:\d+$/, `client column: ${row.cells[0]}`);
  t.equal(row.cells[2], WEB_NAME, 'name column: the sniffed HTTP Host');
  t.match(row.cells[3], /^tcp/, `protocol column: ${row.cells[3]}`);
  t.match(row.cells[5], /direct/, `outbound column: ${row.cells[5]}`);
  t.equal(await page.evaluate<string | null>(`new URL(location.href).searchParams.get('token')`), null, 'the token is dropped from the address bar');
  t.equal(await page.evaluate<string>(`document.querySelector('#link').textContent`), 'live', 'the streams are connected');

  // Counters move: the row's down column changes, the rate is non-zero, the chart got samples.
  const firstDown = row.cells[9];
  const moving = await page.waitFor<string[]>(`(() => { const r = ${ROWS}.find((r) => r.id === ${JSON.stringify(id)}); return r && r.cells[9] !== ${JSON.stringify(firstDown)} && r.cells[7] !== '0 B' ? r.cells : null; })()`, 20_000, 'the row\'s counters to move');
  t.pass(`down total ${firstDown} -> ${moving[9]}, down rate ${moving[7]}/s`);
  await page.waitFor(`document.querySelector('#rates').textContent.includes('↓')`, 10_000, 'a /traffic sample');
  await page.waitFor(`document.querySelectorAll('#rules tbody tr').length > 0`, 15_000, 'the rules table');
  const outbounds = await page.waitFor<string[]>(`(() => { const n = [...document.querySelectorAll('#proxies tbody tr')].map((tr) => tr.cells[0].textContent); return n.length > 0 ? n : null; })()`, 15_000, 'the outbounds table');
  t.ok(outbounds.includes('direct'), `outbounds listed: ${outbounds.join(', ')}`);
  // GLOBAL's selector: choosing a member in the page sends PUT /proxies/GLOBAL.
  await page.waitFor(`document.querySelector('#proxies select[data-group="GLOBAL"]')`, 10_000, "GLOBAL's selector");
  await page.evaluate(`(() => { const s = document.querySelector('#proxies select[data-group="GLOBAL"]'); s.value = 'spare'; s.dispatchEvent(new Event('change', { bubbles: true })); })()`);
  let now = '';
  for (let i = 0; i < 50 && now !== 'spare'; i++) {
    now = ((await apiGet(lab.gateway, secret, '/proxies/GLOBAL')) as { now?: string }).now ?? '';
    if (now !== 'spare') await new Promise((r) => setTimeout(r, 200));
  }
  t.equal(now, 'spare', 'the selector chose GLOBAL\'s member through the API');
  await page.waitFor(`document.querySelector('#proxies select[data-group="GLOBAL"]').value === 'spare'`, 10_000, 'the selector to show the choice after the reload of /proxies');

  // The select group: in /proxies as a Selector, with its own selector in the page; choosing
  // spare there sends PUT /proxies/choose, and new flows go choose -> spare while the running
  // download stays on direct.
  const group = (await apiGet(lab.gateway, secret, '/proxies/choose')) as { type?: string; now?: string; all?: string[] };
  t.match(group, { type: 'Selector', now: 'direct', all: ['direct', 'spare'] }, 'GET /proxies/choose: the select group, on its default');
  t.ok(outbounds.includes('choose'), 'the group is in the outbounds table');
  await page.waitFor(`document.querySelector('#proxies select[data-group="choose"]')?.value === 'direct'`, 10_000, "the group's selector on direct");
  const beforePick = await lab.client.exec(['curl', '-sS', '-o', '/dev/null', '--max-time', '10', '--local-port', '47001', '-H', `Host: ${WEB_NAME}`, `http://${SERVER_V4}/missing`], { allowFail: true });
  t.equal(beforePick.code, 0, `a request before the pick (${beforePick.stderr.trim()})`);
  t.same((await lab.sluice.waitForFlow({ src: `${CLIENT_V4}:47001` }, 10_000)).chain, ['choose', 'direct'], 'before: the flow went choose -> direct');
  await page.evaluate(`(() => { const s = document.querySelector('#proxies select[data-group="choose"]'); s.value = 'spare'; s.dispatchEvent(new Event('change', { bubbles: true })); })()`);
  let picked = '';
  for (let i = 0; i < 50 && picked !== 'spare'; i++) {
    picked = ((await apiGet(lab.gateway, secret, '/proxies/choose')) as { now?: string }).now ?? '';
    if (picked !== 'spare') await new Promise((r) => setTimeout(r, 200));
  }
  t.equal(picked, 'spare', "the page's selector chose the group's member through PUT /proxies/choose");
  const afterPick = await lab.client.exec(['curl', '-sS', '-o', '/dev/null', '--max-time', '10', '--local-port', '47002', '-H', `Host: ${WEB_NAME}`, `http://${SERVER_V4}/missing`], { allowFail: true });
  t.equal(afterPick.code, 0, `a request after the pick (${afterPick.stderr.trim()})`);
  t.same((await lab.sluice.waitForFlow({ src: `${CLIENT_V4}:47002` }, 10_000)).chain, ['choose', 'spare'], 'after: new flows go choose -> spare (through microsocks)');
  const running = ((await apiGet(lab.gateway, secret, '/connections')) as { connections: Array<{ id: string; chains: string[] }> }).connections.find((c) => c.id === id);
  t.same(running?.chains, ['direct', 'choose'], 'the running download stays on the member it started with');
  await page.waitFor(`document.querySelector('#proxies select[data-group="choose"]').value === 'spare'`, 10_000, 'the group selector to show the choice');

  const counters = await page.waitFor<number>(`document.querySelectorAll('#counters tbody tr').length`, 15_000, 'the stack counters');
  t.ok(counters > 0, `${counters} stack/classifier counters shown`);

  // A short request too (a flow line in the log stream, a second rule hit), and
  // a chart with some history, for the screenshot.
  await lab.client.exec(['curl', '-sS', '-o', '/dev/null', '--max-time', '10', '-H', 'Host: www.example.test', `http://${SERVER_V4}/missing`], { allowFail: true });
  const logLine = await page.waitFor<string>(`[...document.querySelectorAll('#logs li')].map((li) => li.textContent).find((l) => l.includes('/missing') || l.includes('www.example.test'))`, 20_000, 'the short flow in the log stream');
  t.pass(`log stream: ${logLine.slice(0, 160)}`);
  await new Promise((r) => setTimeout(r, 15_000));

  // The explain text of the flow, when the route exists (observe helper), then the screenshot.
  await click(page, `#flows tbody tr[data-id="${id}"] td:nth-child(2)`);
  const explain = await page.waitFor<string>(`!document.querySelector('#explain').hidden && document.querySelector('#explain').textContent`, 10_000, 'the explain box');
  t.comment(`explain box: ${explain.slice(0, 400)}`);
  // No rule needs a name, so the route was chosen at the SYN; the Host and HTTP were sniffed after (the name column shows them).
  t.match(explain, `name: none when routed (${WEB_NAME} sniffed after the route was chosen, for the log and /connections only)`, 'explain: the sniffed name, said apart from the routing inputs');
  t.match(explain, 'protocol: none when routed (http sniffed after the route was chosen', 'explain: the sniffed protocol likewise');
  t.match(explain, 'decided by: rule 0 port [80] network [tcp]\noutbound: choose -> direct (select)', 'explain: the rule and the group -> member path the flow took');
  const shotTarget = process.env.SLUICE_SCREENSHOT ?? path.join(lab.dir, 'dashboard.png');
  const size = await page.screenshot(shotTarget);
  const png = readFileSync(shotTarget);
  t.ok(size > 20_000 && png.subarray(1, 4).toString() === 'PNG', `screenshot ${shotTarget}: ${size} bytes of PNG`);

  // Close it from the page with a mouse click.
  const clickedAt = Date.now();
  await click(page, `#flows tbody tr[data-id="${id}"] button.close`);
  const ended = await within(download.ended, 10_000);
  t.ok(ended !== null, `curl ended ${ended === null ? 'not within 10 s' : `${ended.at - clickedAt} ms after the click`}`);
  if (ended !== null) t.not(ended.code, 0, `curl failed (exit ${ended.code}: ${ended.stderr.trim()})`);
  const after = (await apiGet(lab.gateway, secret, '/connections')) as Snapshot;
  t.notOk(after.connections?.some((c) => c.id === id), 'GET /connections no longer lists the flow');
  await page.waitFor(`!${ROWS}.some((r) => r.id === ${JSON.stringify(id)})`, 10_000, 'the row to leave the table');
  t.pass('the row left the table');
  const flowLine = await lab.sluice.waitForFlow({ src: row.cells[0] }, 10_000);
  t.match(flowLine.close, /API/i, `the flow line says who closed it: close "${flowLine.close}", ${flowLine.bytesDown} bytes down`);
  t.same(page.problems(), [], 'no uncaught exceptions or console errors in the page');
});

t.test('without a token the dashboard asks for the secret', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t) || !requireCommands(t, ['ip', 'nft', 'curl', 'nginx', 'chromium'])) return;
  const lab = await controlLab(t, 'dashuicd');
  const browser = await Browser.launch(t, lab.gateway, lab.dir);
  const page = await browser.open(`http://${API}/ui/`);
  await page.waitFor(`!document.querySelector('#login').hidden`, 20_000, 'the login box');
  t.ok(await page.evaluate<boolean>(`document.querySelector('#app').hidden`), 'nothing else is shown');
  // A wrong secret is refused and the box stays.
  await page.evaluate(`(() => { document.querySelector('#secret').value = 'not-the-secret'; document.querySelector('#login').requestSubmit(); })()`);
  const error = await page.waitFor<string>(`document.querySelector('#login-error').textContent`, 10_000, 'the refusal');
  t.match(error, /refused/, `a wrong secret: "${error}"`);
  await page.evaluate(`(() => { document.querySelector('#secret').value = ${JSON.stringify(lab.secret())}; document.querySelector('#login').requestSubmit(); })()`);
  await page.waitFor(`!document.querySelector('#app').hidden && document.querySelector('#link').textContent === 'live'`, 20_000, 'the dashboard after the right secret');
  t.match(await page.evaluate<string>(`document.querySelector('#version').textContent`), /sluice/, 'the version is shown');
  t.ok(await page.evaluate<boolean>(`sessionStorage.getItem('sluice.token') !== null`), 'the secret is kept in session storage');
});
