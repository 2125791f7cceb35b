// End-to-end test of the web chat page: the real `chatctl dev` server, real headless Chromium.
//
//   cargo build -p chatctl
//   (cd tests/browser && npm ci)
//   node --test tests/browser/
//
// Environment:
//   CHATCTL_BIN     the server binary (default: <repo>/target/debug/chatctl)
//   CHROMIUM_BIN    the browser (default: /usr/bin/chromium)
//
// Screenshots go to tests/browser/artifacts/.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const ARTIFACTS = path.join(HERE, 'artifacts');
const CHATCTL_BIN = process.env.CHATCTL_BIN || path.join(REPO, 'target', 'debug', 'chatctl');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const SERVER_START_MS = 30_000;
const WAIT_MS = 15_000; // any single wait in a page
const TEST_MS = 120_000; // any single test

// ---- the server ---------------------------------------------------------------------------

/** Start `chatctl dev` on a free port with a fresh data dir; resolves once its first stdout line
 * (a JSON object with pageUrl and websocketUrl) has been read. */
async function startServer(extraArgs = []) {
  if (!existsSync(CHATCTL_BIN)) {
    throw new Error(
      `chatctl binary not found at ${CHATCTL_BIN}: run \`cargo build -p chatctl\` first, ` +
        'or point CHATCTL_BIN at the binary',
    );
  }
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'chatctl-browser-'));
  const args = ['dev', '--allow-anonymous', '--port', '0', '--data-dir', dataDir, '--output', 'json', ...extraArgs];
  const child = spawn(CHATCTL_BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  const log = [];
  const remember = (stream, line) => {
    log.push(`[${stream}] ${line}`);
    if (log.length > 200) log.shift();
  };
  readline.createInterface({ input: child.stderr }).on('line', (line) => remember('stderr', line));
  const stdout = readline.createInterface({ input: child.stdout });

  const info = await new Promise((resolve, reject) => {
    let first = true;
    const timer = setTimeout(() => {
      reject(new Error(`chatctl dev printed no first line within ${SERVER_START_MS} ms\n${log.join('\n')}`));
    }, SERVER_START_MS);
    stdout.on('line', (line) => {
      if (!first) {
        remember('stdout', line);
        return;
      }
      first = false;
      clearTimeout(timer);
      try {
        const parsed = JSON.parse(line);
        if (!parsed || typeof parsed.pageUrl !== 'string' || typeof parsed.websocketUrl !== 'string') {
          throw new Error('missing pageUrl or websocketUrl');
        }
        resolve(parsed);
      } catch (err) {
        reject(new Error(`chatctl dev's first stdout line is not the expected JSON (${err.message}): ${line}`));
      }
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`could not start ${CHATCTL_BIN}: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`chatctl dev exited early (code ${code}, signal ${signal})\n${log.join('\n')}`));
    });
  });
  return { child, info, dataDir, log };
}

async function stopServer(server) {
  if (!server) return;
  const { child } = server;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
  await rm(server.dataDir, { recursive: true, force: true }).catch(() => {});
}

// ---- helpers ------------------------------------------------------------------------------

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rows of confirmed messages (those with an id), in page order. */
function rows(page) {
  return page.$$eval('[data-testid="messages"] [data-testid="message"][data-id]', (els) =>
    els.map((row) => {
      const text = row.querySelector('[data-testid="message-text"]');
      const time = row.querySelector('[data-testid="message-time"]');
      const user = row.querySelector('[data-testid="message-user"]');
      return {
        id: row.dataset.id,
        user: row.dataset.user,
        shownUser: user ? user.textContent : null,
        text: text ? text.textContent : null,
        time: time ? time.textContent : null,
        tombstone: !!row.querySelector('[data-testid="tombstone"]'),
        rowText: row.textContent,
        recallButton: !!row.querySelector('[data-testid="recall"]'),
        own: row.classList.contains('own'),
      };
    }),
  );
}

/** Wait until a confirmed message from `user` with exactly `text` is shown; returns its row. */
async function waitForMessage(page, user, text) {
  await page.waitForFunction(
    ([u, t]) =>
      [...document.querySelectorAll('[data-testid="messages"] [data-testid="message"][data-id]')].some(
        (row) =>
          row.dataset.user === u &&
          row.querySelector('[data-testid="message-text"]')?.textContent === t,
      ),
    [user, text],
    { timeout: WAIT_MS },
  );
  const all = await rows(page);
  return all.find((r) => r.user === user && r.text === text);
}

async function waitForMembers(page, users) {
  await page.waitForFunction(
    (want) => {
      const shown = new Map(
        [...document.querySelectorAll('[data-testid="member"]')].map((m) => [m.dataset.user, m.dataset.state]),
      );
      return want.every((u) => shown.get(u) === 'online');
    },
    users,
    { timeout: WAIT_MS },
  );
}

async function waitForMembersGone(page, users) {
  await page.waitForFunction(
    (gone) => {
      const shown = new Set([...document.querySelectorAll('[data-testid="member"]')].map((m) => m.dataset.user));
      return gone.every((u) => !shown.has(u));
    },
    users,
    { timeout: WAIT_MS },
  );
}

/** Open `users` extra connections to `room` from inside `page` (Node 20 has no WebSocket), all at
 * once — a join storm inside one presence window. They stay open until the page closes. */
async function storm(page, websocketUrl, room, users) {
  await page.evaluate(
    ([url, r, names]) =>
      Promise.all(
        names.map(
          (name) =>
            new Promise((resolve, reject) => {
              const u = new URL(url);
              u.searchParams.set('room', r);
              u.searchParams.set('user', name);
              const ws = new WebSocket(u.toString());
              (window.__storm = window.__storm || []).push(ws);
              ws.onopen = () => resolve();
              ws.onerror = () => reject(new Error(`storm connection for ${name} failed`));
            }),
        ),
      ),
    [websocketUrl, room, users],
  );
}

/** Record the type of every frame the page's sockets receive (installed before the app runs). */
async function recordFrames(page) {
  await page.addInitScript(() => {
    const Real = window.WebSocket;
    window.__frameTypes = [];
    window.WebSocket = new Proxy(Real, {
      construct(target, args) {
        const ws = new target(...args);
        ws.addEventListener('message', (ev) => {
          try {
            window.__frameTypes.push(JSON.parse(ev.data).type);
          } catch (_) {
            // not JSON: nothing to record
          }
        });
        return ws;
      },
    });
  });
}

/** The WebSocket URL a page on `pageUrl` can reach (a server bound to 0.0.0.0 reports that). */
function reachable(websocketUrl, pageUrl) {
  const url = new URL(websocketUrl);
  if (['0.0.0.0', '[::]', '::'].includes(url.hostname)) url.hostname = new URL(pageUrl).hostname;
  return url.toString();
}

function memberNames(page) {
  return page.$$eval('[data-testid="member"]', (els) => els.map((m) => m.dataset.user));
}

async function openPage(browser, errors) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  context.setDefaultTimeout(WAIT_MS);
  context.setDefaultNavigationTimeout(WAIT_MS);
  const page = await context.newPage();
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('dialog', (dialog) => {
    errors.push(`dialog opened: ${dialog.type()} ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  return { context, page };
}

async function join(page, pageUrl, { name, room, token }) {
  await page.goto(pageUrl, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('html[data-ready="true"]', { timeout: WAIT_MS });
  await page.getByTestId('join-name').fill(name ?? '');
  await page.getByTestId('join-room').fill(room);
  if (token !== undefined) await page.getByTestId('join-token').fill(token);
  await page.getByTestId('join-submit').click();
}

async function joinAndWait(page, pageUrl, who) {
  await join(page, pageUrl, who);
  await page.waitForSelector('[data-testid="status"][data-state="connected"]', { timeout: WAIT_MS });
  await waitForMembers(page, [who.name]);
}

async function send(page, text) {
  await page.getByTestId('composer-input').fill(text);
  await page.getByTestId('composer-send').click();
}

// ---- the tests ----------------------------------------------------------------------------

describe('web chat page against chatctl dev', () => {
  let server;
  let browser;
  const contexts = [];
  const errors = [];

  before(async () => {
    server = await startServer();
    browser = await withTimeout(
      chromium.launch({
        executablePath: CHROMIUM_BIN,
        headless: true,
        args: CHROMIUM_ARGS,
        timeout: 30_000,
      }),
      40_000,
      'launching Chromium',
    );
  });

  after(async () => {
    for (const context of contexts) {
      await withTimeout(context.close(), 10_000, 'closing a browser context').catch(() => {});
    }
    if (browser) await withTimeout(browser.close(), 15_000, 'closing Chromium').catch(() => {});
    await stopServer(server);
  });

  /** Run a test body; on failure print what helps to debug it (the server's last log lines and
   * the pages' errors) before failing. */
  function guarded(body) {
    return async (t) => {
      try {
        await body(t);
      } catch (err) {
        console.log(`--- page errors:\n${errors.join('\n') || '(none)'}`);
        console.log(`--- last server output:\n${server ? server.log.slice(-40).join('\n') : '(no server)'}`);
        throw err;
      }
    };
  }

  async function session(name) {
    const { context, page } = await openPage(browser, errors);
    contexts.push(context);
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(`${name} console: ${msg.text()}`);
    });
    return page;
  }

  test('two people chat, see each other, recall, and HTML stays text', { timeout: TEST_MS }, guarded(async () => {
    const { pageUrl } = server.info;
    const alice = await session('alice');
    const bob = await session('bob');

    await joinAndWait(alice, pageUrl, { name: 'alice', room: 'lobby' });
    await joinAndWait(bob, pageUrl, { name: 'bob', room: 'lobby' });

    // Both see both in the online members list.
    await waitForMembers(alice, ['alice', 'bob']);
    await waitForMembers(bob, ['alice', 'bob']);

    // alice → bob, with sender name and time.
    const hello = 'Hello Bob, this is Alice 👋';
    await send(alice, hello);
    const seenByBob = await waitForMessage(bob, 'alice', hello);
    assert.equal(seenByBob.shownUser, 'alice');
    assert.match(seenByBob.time, /\d{1,2}:\d{2}/, 'the message shows its time');
    assert.equal(seenByBob.own, false);
    assert.equal(seenByBob.recallButton, false, "bob may not recall alice's message");
    const ownAtAlice = await waitForMessage(alice, 'alice', hello);
    assert.equal(ownAtAlice.own, true, "alice's own message is marked as hers");
    assert.equal(ownAtAlice.id, seenByBob.id, 'both pages show the same message id');

    // bob → alice, and both pages keep the order.
    const reply = 'Hi Alice! Bob here.';
    await send(bob, reply);
    await waitForMessage(alice, 'bob', reply);
    await waitForMessage(bob, 'bob', reply);
    for (const page of [alice, bob]) {
      const shown = await rows(page);
      assert.deepEqual(
        shown.map((r) => r.text),
        [hello, reply],
        'messages are shown once each, in order',
      );
      assert.ok(shown[0].id < shown[1].id, 'rows are sorted by id');
    }
    // No pending (unacknowledged) rows remain.
    for (const page of [alice, bob]) {
      await page.waitForFunction(
        () => document.querySelectorAll('[data-testid="message"][data-pending]').length === 0,
        null,
        { timeout: WAIT_MS },
      );
    }

    // HTML in a message is shown as text, never parsed.
    const html = '<img src=x onerror=alert(1)><b>bold</b>';
    await send(alice, html);
    for (const page of [alice, bob]) {
      const row = await waitForMessage(page, 'alice', html);
      assert.equal(row.text, html);
      assert.equal(await page.locator('[data-testid="messages"] b').count(), 0, 'no <b> element was created');
      assert.equal(await page.locator('[data-testid="messages"] img').count(), 0, 'no <img> element was created');
      const visible = await page.getByText(html, { exact: true }).isVisible();
      assert.ok(visible, 'the literal HTML text is visible');
    }

    // alice recalls her first message: both pages show a tombstone.
    const helloRow = alice.locator(`[data-testid="message"][data-id="${ownAtAlice.id}"]`);
    await helloRow.getByTestId('recall').click();
    for (const page of [alice, bob]) {
      const row = page.locator(`[data-testid="message"][data-id="${ownAtAlice.id}"]`);
      await row.getByTestId('tombstone').waitFor({ timeout: WAIT_MS });
      assert.equal(await row.getByTestId('message-text').count(), 0, 'the recalled text is gone');
      assert.equal(await row.getByTestId('recall').count(), 0, 'no recall button on a tombstone');
      const text = await row.textContent();
      assert.match(text, /recalled/i);
      assert.ok(!text.includes(hello), 'the recalled text is not shown anywhere in the row');
    }
    // The other messages are untouched.
    assert.deepEqual(
      (await rows(bob)).map((r) => (r.tombstone ? '(recalled)' : r.text)),
      ['(recalled)', reply, html],
    );

    const status = await alice.getByTestId('status').textContent();
    assert.match(status, /connected/i);

    await mkdir(ARTIFACTS, { recursive: true });
    const alicePng = path.join(ARTIFACTS, 'chat-alice.png');
    const bobPng = path.join(ARTIFACTS, 'chat-bob.png');
    await alice.screenshot({ path: alicePng, timeout: WAIT_MS });
    await bob.screenshot({ path: bobPng, timeout: WAIT_MS });
    console.log(`screenshots: ${alicePng} ${bobPng}`);

    assert.deepEqual(errors, [], 'no page errors, console errors or dialogs');
  }));

  test('a newcomer sees the latest 50 messages and can load earlier ones', { timeout: TEST_MS }, guarded(async () => {
    const { pageUrl } = server.info;
    const room = 'archive';
    const total = 55;
    const carol = await session('carol');
    await joinAndWait(carol, pageUrl, { name: 'carol', room });
    const texts = Array.from({ length: total }, (_, i) => `archive message ${String(i + 1).padStart(2, '0')}`);
    // The server allows 10 frames/s (burst 40): stay under it.
    for (const text of texts) {
      await send(carol, text);
      await sleep(110);
    }
    await carol.waitForFunction(
      (n) =>
        document.querySelectorAll('[data-testid="messages"] [data-testid="message"][data-id]').length === n &&
        document.querySelectorAll('[data-testid="message"][data-pending]').length === 0,
      total,
      { timeout: 30_000 },
    );
    assert.deepEqual((await rows(carol)).map((r) => r.text), texts, 'the sender sees all, in order');

    const dave = await session('dave');
    await joinAndWait(dave, pageUrl, { name: 'dave', room });
    await dave.waitForFunction(
      () => document.querySelectorAll('[data-testid="messages"] [data-testid="message"][data-id]').length >= 50,
      null,
      { timeout: WAIT_MS },
    );
    let shown = await rows(dave);
    assert.deepEqual(shown.map((r) => r.text), texts.slice(total - 50), 'the latest 50, oldest first');
    const loadEarlier = dave.getByTestId('load-earlier');
    await loadEarlier.waitFor({ state: 'visible', timeout: WAIT_MS });

    await loadEarlier.click();
    await dave.waitForFunction(
      (n) => document.querySelectorAll('[data-testid="messages"] [data-testid="message"][data-id]').length === n,
      total,
      { timeout: WAIT_MS },
    );
    shown = await rows(dave);
    assert.deepEqual(shown.map((r) => r.text), texts, 'all messages, oldest first, no duplicates');
    const ids = shown.map((r) => r.id);
    assert.deepEqual([...ids].sort(), ids, 'rows are sorted by id');
    await loadEarlier.waitFor({ state: 'hidden', timeout: WAIT_MS });

    // dave's arrival was announced to carol.
    await waitForMembers(carol, ['carol', 'dave']);
    assert.deepEqual(errors, [], 'no page errors, console errors or dialogs');
  }));

  test('a reconnect fills a gap longer than one page exactly', { timeout: TEST_MS }, guarded(async () => {
    const { pageUrl } = server.info;
    const room = 'gap';
    const missed = 120; // more than one `history after` page (100)
    const alice = await session('alice-gap');
    const bob = await session('bob-gap');
    await joinAndWait(alice, pageUrl, { name: 'alice', room });
    await joinAndWait(bob, pageUrl, { name: 'bob', room });
    // Record what bob's page sends, and let the test keep it offline: while `__offline` is set,
    // its reconnects go to a port nobody listens on (they fail the way a dead network does).
    await bob.evaluate(() => {
      const Real = window.WebSocket;
      window.__sent = [];
      window.__offline = false;
      window.WebSocket = new Proxy(Real, {
        construct(target, args) {
          const ws = new target(window.__offline ? 'ws://127.0.0.1:9/' : args[0], ...args.slice(1));
          const send = ws.send.bind(ws);
          ws.send = (data) => {
            window.__sent.push(String(data));
            return send(data);
          };
          return ws;
        },
      });
    });
    // bob's socket is the one opened before the proxy: the next one (after the drop) is recorded.

    const before = ['before the gap 1', 'before the gap 2'];
    for (const text of before) await send(alice, text);
    for (const text of before) await waitForMessage(bob, 'alice', text);

    // Drop bob's connection and keep it down.
    await bob.evaluate(() => {
      window.__offline = true;
      window.chatctl.session.ws.close(4001, 'test: network gone');
    });
    await bob.waitForSelector('[data-testid="status"][data-state="offline"]', { timeout: WAIT_MS });
    await waitForMembersGone(alice, ['bob']);
    // bob writes while offline: the send stays pending and goes out after the reconnect.
    const offlineText = 'written by bob while offline';
    await send(bob, offlineText);
    await bob.waitForSelector('[data-testid="message"][data-pending]', { timeout: WAIT_MS });

    const texts = Array.from({ length: missed }, (_, i) => `missed ${String(i + 1).padStart(3, '0')}`);
    for (const text of texts) {
      await send(alice, text);
      await sleep(105); // under the server's 10 frames/s
    }
    await alice.waitForFunction(
      (n) =>
        document.querySelectorAll('[data-testid="messages"] [data-testid="message"][data-id]').length === n &&
        document.querySelectorAll('[data-testid="message"][data-pending]').length === 0,
      before.length + missed,
      { timeout: 30_000 },
    );

    // The network is back: the page reconnects now (its `online` handler) and catches up.
    // A failed attempt may be in flight when the flag flips (the handler then does nothing, and
    // the backoff has grown to seconds): nudge until connected.
    await bob.evaluate(() => {
      window.__offline = false;
    });
    await withTimeout((async () => {
      while (!(await bob.$('[data-testid="status"][data-state="connected"]'))) {
        await bob.evaluate(() => window.dispatchEvent(new Event('online')));
        await sleep(200);
      }
    })(), WAIT_MS, 'reconnecting bob');
    const want = [...before, ...texts, offlineText];
    await bob.waitForFunction(
      (n) =>
        document.querySelectorAll('[data-testid="messages"] [data-testid="message"][data-id]').length >= n &&
        document.querySelectorAll('[data-testid="message"][data-pending]').length === 0,
      want.length,
      { timeout: 30_000 },
    ).catch(async (err) => {
      const shown = await rows(bob);
      throw new Error(`bob shows ${shown.length} of ${want.length} messages: ${err.message}`);
    });
    const shown = await rows(bob);
    assert.deepEqual(shown.map((r) => r.text), want, 'every message exactly once, in order');
    const ids = shown.map((r) => r.id);
    assert.deepEqual([...ids].sort(), ids, 'rows are sorted by id');
    assert.equal(new Set(ids).size, ids.length, 'no id is shown twice');
    await waitForMessage(alice, 'bob', offlineText);
    assert.deepEqual((await rows(alice)).map((r) => r.id), ids, 'both pages show the same ids');

    // The gap was filled by walking forward: `after` the last message seen before the drop,
    // then `after` the last id of the first page.
    const history = (await bob.evaluate(() => window.__sent))
      .map((raw) => JSON.parse(raw))
      .filter((f) => f.action === 'history');
    assert.ok(history.length >= 2, `two history pages at least: ${JSON.stringify(history)}`);
    assert.equal(history[0].after, ids[before.length - 1], 'the first page starts after the last message seen');
    assert.equal(history[0].before, undefined);
    assert.equal(history[1].after, ids[before.length + 99], 'the second page starts after the first page');
    assert.ok(history.every((f) => f.after !== undefined), 'no latest page was asked for');
    const resent = (await bob.evaluate(() => window.__sent))
      .map((raw) => JSON.parse(raw))
      .filter((f) => f.action === 'send');
    assert.deepEqual(resent.map((f) => f.text), [offlineText], 'the pending send went out again');

    await mkdir(ARTIFACTS, { recursive: true });
    const png = path.join(ARTIFACTS, 'chat-reconnected.png');
    await bob.screenshot({ path: png, timeout: WAIT_MS });
    console.log(`screenshot: ${png}`);
    // Chromium logs each refused attempt to the dead port as a console error: those were meant.
    for (let i = errors.length - 1; i >= 0; i--) if (errors[i].includes('ws://127.0.0.1:9/')) errors.splice(i, 1);
    assert.deepEqual(errors, [], 'no page errors, console errors or dialogs');
  }));

  test('a socket that drops before its first history page gets the latest page on reconnect', { timeout: TEST_MS }, guarded(async () => {
    const { pageUrl } = server.info;
    const room = 'early-drop';
    const alice = await session('alice-early');
    await joinAndWait(alice, pageUrl, { name: 'alice', room });
    const older = ['said before bob came 1', 'said before bob came 2'];
    for (const text of older) {
      await send(alice, text);
      await waitForMessage(alice, 'alice', text);
    }
    const bob = await session('bob-early');
    // While `__holdHistory` is set, bob's page never gets a history page (its requests are
    // swallowed): the socket drops before the first page arrives, but after a live message.
    await bob.addInitScript(() => {
      const Real = window.WebSocket;
      window.__holdHistory = true;
      window.__sent = [];
      window.WebSocket = new Proxy(Real, {
        construct(target, args) {
          const ws = new target(...args);
          const send = ws.send.bind(ws);
          ws.send = (data) => {
            const text = String(data);
            if (window.__holdHistory && JSON.parse(text).action === 'history') return undefined;
            window.__sent.push(text);
            return send(data);
          };
          return ws;
        },
      });
    });
    await joinAndWait(bob, pageUrl, { name: 'bob', room });
    const live = 'seen live before any history page';
    await send(alice, live);
    await waitForMessage(bob, 'alice', live);
    assert.deepEqual((await rows(bob)).map((r) => r.text), [live], 'only the live message so far');

    await bob.evaluate(() => {
      window.__holdHistory = false;
      window.__dropped = window.chatctl.session.ws;
      window.__dropped.close(4001, 'test: dropped before the first history page');
    });
    await withTimeout((async () => {
      for (;;) {
        const back = await bob.evaluate(
          () =>
            window.chatctl.session.ws !== window.__dropped &&
            document.querySelector('[data-testid="status"]')?.dataset.state === 'connected',
        );
        if (back) break;
        await bob.evaluate(() => window.dispatchEvent(new Event('online')));
        await sleep(200);
      }
    })(), WAIT_MS, 'reconnecting bob');
    const want = [...older, live];
    await bob.waitForFunction(
      (n) => document.querySelectorAll('[data-testid="messages"] [data-testid="message"][data-id]').length >= n,
      want.length,
      { timeout: WAIT_MS },
    ).catch(async (err) => {
      const shown = (await rows(bob)).map((r) => r.text);
      throw new Error(`bob shows ${JSON.stringify(shown)}, wanted ${JSON.stringify(want)}: ${err.message}`);
    });
    assert.deepEqual((await rows(bob)).map((r) => r.text), want, 'the messages from before the live one are there');
    // Walking forward from the live message would have skipped the older ones: the latest page.
    const history = (await bob.evaluate(() => window.__sent))
      .map((raw) => JSON.parse(raw))
      .filter((f) => f.action === 'history');
    assert.equal(history.length, 1, JSON.stringify(history));
    assert.equal(history[0].after, undefined, 'the latest page, not a walk forward from the live message');
    assert.deepEqual(errors, [], 'no page errors, console errors or dialogs');
  }));

  test('a join storm arrives as one presence_batch and the list shows everyone', { timeout: TEST_MS }, guarded(async () => {
    const { pageUrl, websocketUrl } = server.info;
    const room = 'storm';
    const watcher = await session('watcher');
    await recordFrames(watcher);
    await joinAndWait(watcher, pageUrl, { name: 'watcher', room });
    const joiners = ['s1', 's2', 's3', 's4'];
    const bots = await session('bots');
    await bots.goto(pageUrl, { waitUntil: 'domcontentloaded' });
    await storm(bots, reachable(websocketUrl, pageUrl), room, joiners);
    await waitForMembers(watcher, ['watcher', ...joiners]);
    assert.deepEqual((await memberNames(watcher)).sort(), ['s1', 's2', 's3', 's4', 'watcher']);
    assert.equal(await watcher.getByTestId('member-count').textContent(), '5');
    const types = await watcher.evaluate(() => window.__frameTypes);
    assert.ok(types.includes('presence_batch'), `a presence_batch arrived: ${types.join(' ')}`);
    assert.ok(await watcher.getByTestId('member-note').isHidden(), 'a small room needs no note');

    // The storm leaves together (closing the page closes its sockets): the list is the watcher again.
    await bots.close();
    await watcher.waitForFunction(
      () => [...document.querySelectorAll('[data-testid="member"]')].map((m) => m.dataset.user).join() === 'watcher',
      null,
      { timeout: WAIT_MS },
    );
    assert.equal(await watcher.getByTestId('member-count').textContent(), '1');
    assert.deepEqual(errors, [], 'no page errors, console errors or dialogs');
  }));

  test('a room above the detail limit shows a count from occupancy frames', { timeout: TEST_MS }, guarded(async () => {
    // A server of its own, whose rooms stop naming joiners above 3 members.
    const big = await startServer(['--presence-detail-limit', '3']);
    try {
      const { pageUrl, websocketUrl } = big.info;
      const room = 'hall';
      const watcher = await session('hall-watcher');
      await recordFrames(watcher);
      await joinAndWait(watcher, pageUrl, { name: 'watcher', room });
      const bots = await session('hall-bots');
      await bots.goto(pageUrl, { waitUntil: 'domcontentloaded' });
      await storm(bots, reachable(websocketUrl, pageUrl), room, ['h1', 'h2', 'h3', 'h4', 'h5']);
      // 6 members: the watcher hears counts, not names, and says so.
      await watcher.waitForFunction(
        () => document.querySelector('[data-testid="member-count"]')?.textContent === '6',
        null,
        { timeout: WAIT_MS },
      );
      const types = await watcher.evaluate(() => window.__frameTypes);
      assert.ok(types.includes('occupancy'), `an occupancy frame arrived: ${types.join(' ')}`);
      const note = watcher.getByTestId('member-note');
      await note.waitFor({ state: 'visible', timeout: WAIT_MS });
      assert.match(await note.textContent(), /^6 members/);
      // The list holds who the watcher was told about by name (itself, and any joiner of a window
      // while the room was still small) until the periodic refresh: marked as partial.
      assert.match(await note.textContent(), /showing [1-5] of 6/);
      assert.equal(await watcher.locator('[data-testid="members"].partial').count(), 1);

      await mkdir(ARTIFACTS, { recursive: true });
      const png = path.join(ARTIFACTS, 'chat-occupancy.png');
      await watcher.screenshot({ path: png, timeout: WAIT_MS });
      console.log(`screenshot: ${png}`);
      await bots.close();
      await watcher.close();
      assert.deepEqual(errors, [], 'no page errors, console errors or dialogs');
    } finally {
      await stopServer(big);
    }
  }));

  test('the join form validates before connecting', { timeout: TEST_MS }, guarded(async () => {
    const page = await session('eve');
    await page.goto(server.info.pageUrl, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('html[data-ready="true"]', { timeout: WAIT_MS });
    await page.getByTestId('join-name').fill('eve');
    await page.getByTestId('join-room').fill('no spaces allowed');
    await page.getByTestId('join-submit').click();
    const error = page.getByTestId('join-error');
    await error.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.match(await error.textContent(), /room/i);
    assert.ok(await page.getByTestId('join-submit').isVisible(), 'still on the join form');
  }));

  test('a refused connection says so', { timeout: TEST_MS }, guarded(async () => {
    const page = await session('mallory');
    // A token this server cannot have signed: the upgrade is refused (401/403).
    await join(page, server.info.pageUrl, { name: 'mallory', room: 'lobby', token: 'v1.bm90LWEtdG9rZW4.c2ln' });
    await page.waitForFunction(
      () => /connection refused/i.test(document.querySelector('[data-testid="status"]')?.textContent ?? ''),
      null,
      { timeout: WAIT_MS },
    );
    const error = page.getByTestId('join-error');
    await error.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.match(await error.textContent(), /check name\/room\/token/);
  }));
});
