// chatctl web chat: plain JavaScript, no build step, no external resources.
//
// It speaks the chatctl WebSocket protocol (see the project's protocol docs): connect with
// ?room=ROOM&user=NAME (local dev, --allow-anonymous) or ?room=ROOM&token=TOKEN, then send JSON
// frames named by "action" and receive frames named by "type".
//
// Every piece of user-supplied data (names, message text, error messages) reaches the DOM through
// textContent or attributes only, never through innerHTML.
'use strict';

(function () {
  // ---- constants ---------------------------------------------------------------------------

  const DEFAULTS = Object.freeze({
    websocketUrl: '',
    allowAnonymous: null, // unknown until /config.json says
    recallWindowMs: 120000,
  });
  const MAX_TEXT_BYTES = 4096;
  const HISTORY_PAGE = 50;
  const HISTORY_GAP_PAGE = 100;
  const MAX_GAP_PAGES = 20; // only for servers without `history after` (paging back from the newest)
  const PING_EVERY_MS = 25000;
  const PRESENCE_EVERY_MS = 30000;
  const SILENCE_LIMIT_MS = 70000; // no frame at all for this long: treat the socket as dead
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const NOTICE_MS = 8000;
  const CONFIG_TIMEOUT_MS = 3000;
  const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
  // Control characters (Unicode general category Cc), as the server's `char::is_control`.
  const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
  const encoder = new TextEncoder();

  // ---- state -------------------------------------------------------------------------------

  const config = { ...DEFAULTS };
  let configLoaded = false;

  /** The current session, or null on the join form. */
  let session = null;

  function newSession(params) {
    return {
      room: params.room,
      name: params.name, // what the form said; replaced by the token's subject when there is one
      token: params.token,
      server: params.server,
      self: params.selfName, // the name the server knows us by, when known
      ws: null,
      opened: false, // the current socket reached `open`
      everOpened: false,
      closing: false, // the user left: do not reconnect
      attempt: 0,
      reconnectTimer: 0,
      pingTimer: 0,
      presenceTimer: 0,
      lastFrameAt: 0,
      historyQueue: [], // kinds of outstanding history requests, oldest first
      hasMore: false,
      historyLoaded: false,
      loadingEarlier: false,
      gap: null, // { until: id, pages: n } while paging back to a gap (servers without `after`)
      // Where catching up starts: the highest message id seen with nothing missing before it.
      // Live messages that arrive while a gap is being filled do not move it (a drop then would
      // skip the rest of the gap); they are in `newestId` until the gap is closed.
      lastId: null,
      newestId: null,
      catchUp: null, // { from, cursor, pages } while `history after` pages fill a reconnect gap
      messages: new Map(), // id -> message record
      order: [], // ids, sorted ascending, as shown
      pending: new Map(), // clientMsgId -> pending send
      ackedIds: new Map(), // clientMsgId -> id, for acks that arrived before their message
      ownClientIds: new Set(),
      recalledIds: new Set(),
      pendingRecalls: new Set(),
      members: new Map(), // user -> { state, lastSeen }
      memberTotal: 0, // members in the room as the server last counted them
      membersTruncated: false, // the last `members` answer was cut: the list is partial
      occupancy: null, // { members, joined, left, ts } while the room is too big for per-user changes
      clockOffset: 0, // server clock minus ours, in ms
      clockOffsetSet: false,
    };
  }

  // ---- DOM ---------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const el = {
    app: $('app'),
    status: $('status'),
    roomInfo: $('room-info'),
    roomName: $('room-name'),
    who: $('who'),
    leave: $('leave'),
    joinView: $('join-view'),
    joinForm: $('join-form'),
    joinName: $('join-name'),
    joinRoom: $('join-room'),
    joinToken: $('join-token'),
    joinServer: $('join-server'),
    joinError: $('join-error'),
    joinSubmit: $('join-submit'),
    advanced: $('advanced'),
    chatView: $('chat-view'),
    scroller: $('scroller'),
    loadEarlier: $('load-earlier'),
    historyStart: $('history-start'),
    empty: $('empty'),
    messages: $('messages'),
    composer: $('composer'),
    input: $('composer-input'),
    counter: $('counter'),
    send: $('composer-send'),
    members: $('members'),
    memberCount: $('member-count'),
    memberNote: $('member-note'),
  };

  function make(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === 'text') node.textContent = String(value);
        else if (key === 'className') node.className = value;
        else if (key === 'dataset') Object.assign(node.dataset, value);
        else node.setAttribute(key, value === true ? '' : String(value));
      }
    }
    if (children) for (const child of children) if (child) node.appendChild(child);
    return node;
  }

  // ---- small helpers -----------------------------------------------------------------------

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') {
      try {
        return window.crypto.randomUUID();
      } catch (_) {
        // not a secure context in some browsers: fall through
      }
    }
    const bytes = new Uint8Array(16);
    if (window.crypto && typeof window.crypto.getRandomValues === 'function') {
      window.crypto.getRandomValues(bytes);
    } else {
      for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function byteLength(text) {
    return encoder.encode(text).length;
  }

  function pad2(n) {
    return String(n).padStart(2, '0');
  }

  function formatTime(ts) {
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return '';
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return hm;
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${hm}`;
  }

  function formatFullTime(ts) {
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return '';
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
      `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function validateName(name) {
    if (name.length === 0) return 'Enter a name (or a token).';
    if ([...name].length > 64) return 'The name may be at most 64 characters.';
    if (CONTROL_RE.test(name)) return 'The name may not contain control characters.';
    if (name.trim().length === 0) return 'The name may not be only spaces.';
    return null;
  }

  function validateRoom(room) {
    if (!room) return 'Enter a room name.';
    if (room.length > 64) return 'The room name may be at most 64 characters.';
    if (!ROOM_RE.test(room)) return 'The room name may only use A–Z, a–z, 0–9, "_", "." and "-".';
    return null;
  }

  /** The user a token names (its unverified `sub` claim), or null. */
  function tokenSubject(token) {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
      let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      while (b64.length % 4) b64 += '=';
      const bin = atob(b64);
      const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return typeof claims.sub === 'string' ? claims.sub : null;
    } catch (_) {
      return null;
    }
  }

  function defaultServerUrl() {
    if (config.websocketUrl) return config.websocketUrl;
    if (location.protocol === 'http:' || location.protocol === 'https:') {
      return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/`;
    }
    return '';
  }

  /** Normalise what the user typed as the server URL; returns [url, error]. */
  function normaliseServer(raw) {
    let text = raw.trim();
    if (!text) return [null, 'Enter the server URL (Advanced), e.g. wss://abc.execute-api.eu-west-1.amazonaws.com/prod'];
    if (/^https?:\/\//i.test(text)) text = text.replace(/^http/i, 'ws');
    if (!/^wss?:\/\//i.test(text)) return [null, 'The server URL must start with ws:// or wss://'];
    try {
      const url = new URL(text);
      return [url.toString(), null];
    } catch (_) {
      return [null, 'The server URL is not a valid URL.'];
    }
  }

  function serverNow() {
    return Date.now() + (session ? session.clockOffset : 0);
  }

  function noteServerTime(ts) {
    if (!session || typeof ts !== 'number' || !Number.isFinite(ts)) return;
    const offset = ts - Date.now();
    // Smooth it a little; the first sample is taken as is.
    session.clockOffset = session.clockOffsetSet ? Math.round(session.clockOffset * 0.7 + offset * 0.3) : offset;
    session.clockOffsetSet = true;
  }

  // ---- status line -------------------------------------------------------------------------

  let connectionText = '';
  let connectionState = 'idle';
  let noticeTimer = 0;

  function setConnection(state, text) {
    connectionState = state;
    connectionText = text;
    if (!noticeTimer) renderStatus(state, text);
  }

  function notice(kind, text) {
    clearTimeout(noticeTimer);
    renderStatus(kind, text);
    noticeTimer = setTimeout(() => {
      noticeTimer = 0;
      renderStatus(connectionState, connectionText);
    }, NOTICE_MS);
  }

  function renderStatus(state, text) {
    el.status.dataset.state = state;
    el.status.textContent = text;
    el.status.title = text;
  }

  // ---- config ------------------------------------------------------------------------------

  /** A server bound to every interface reports 0.0.0.0 (or ::), which a browser cannot connect
   * to: use the host this page came from instead. */
  function reachableUrl(raw) {
    try {
      const url = new URL(raw);
      if (['0.0.0.0', '[::]', '::'].includes(url.hostname) && location.hostname) {
        url.hostname = location.hostname;
      }
      return url.toString();
    } catch (_) {
      return raw;
    }
  }

  async function loadConfig() {
    if (!(location.protocol === 'http:' || location.protocol === 'https:')) return;
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = setTimeout(() => controller && controller.abort(), CONFIG_TIMEOUT_MS);
    try {
      const res = await fetch('config.json', {
        cache: 'no-store',
        credentials: 'same-origin',
        signal: controller ? controller.signal : undefined,
      });
      if (!res.ok) return;
      const body = await res.json();
      if (!body || typeof body !== 'object') return;
      if (typeof body.websocketUrl === 'string' && /^wss?:\/\//i.test(body.websocketUrl)) {
        config.websocketUrl = reachableUrl(body.websocketUrl);
      }
      if (typeof body.allowAnonymous === 'boolean') config.allowAnonymous = body.allowAnonymous;
      if (typeof body.recallWindowMs === 'number' && body.recallWindowMs >= 0) {
        config.recallWindowMs = body.recallWindowMs;
      }
      configLoaded = true;
    } catch (_) {
      // No config (a deployed stage, a file:// page, an old server): keep the defaults.
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- join form ---------------------------------------------------------------------------

  function showJoinError(text) {
    el.joinError.textContent = text;
    el.joinError.hidden = !text;
  }

  function showView(view) {
    el.app.dataset.view = view;
    el.joinView.hidden = view !== 'join';
    el.chatView.hidden = view !== 'chat';
    el.roomInfo.hidden = view !== 'chat';
    el.leave.hidden = view !== 'chat';
  }

  function readForm() {
    const name = el.joinName.value;
    const room = el.joinRoom.value.trim();
    const token = el.joinToken.value.trim();
    const [server, serverError] = normaliseServer(el.joinServer.value || defaultServerUrl());

    const roomError = validateRoom(room);
    if (roomError) return { error: roomError, field: el.joinRoom };
    let selfName = null;
    if (token) {
      if (/\s/.test(token)) return { error: 'The token may not contain spaces.', field: el.joinToken };
      selfName = tokenSubject(token);
      if (name && validateName(name)) return { error: validateName(name), field: el.joinName };
    } else {
      const nameError = validateName(name);
      if (nameError) return { error: nameError, field: el.joinName };
      if (config.allowAnonymous === false) {
        return { error: 'This server needs a token: mint one with `chatctl token --user NAME`.', field: el.joinToken };
      }
      selfName = name;
    }
    if (serverError) {
      el.advanced.open = true;
      return { error: serverError, field: el.joinServer };
    }
    return { params: { name, room, token, server, selfName } };
  }

  function onJoinSubmit(event) {
    event.preventDefault();
    const form = readForm();
    for (const input of [el.joinName, el.joinRoom, el.joinToken, el.joinServer]) {
      input.removeAttribute('aria-invalid');
    }
    if (form.error) {
      showJoinError(form.error);
      if (form.field) {
        form.field.setAttribute('aria-invalid', 'true');
        form.field.focus();
      }
      return;
    }
    showJoinError('');
    try {
      localStorage.setItem('chatctl.name', form.params.name);
      localStorage.setItem('chatctl.room', form.params.room);
    } catch (_) {
      // storage may be unavailable; nothing to keep then
    }
    startSession(form.params);
  }

  function prefillForm() {
    const query = new URLSearchParams(location.search);
    let storedName = '';
    let storedRoom = '';
    try {
      storedName = localStorage.getItem('chatctl.name') || '';
      storedRoom = localStorage.getItem('chatctl.room') || '';
    } catch (_) {
      // ignore
    }
    // Fill only what the user has not typed into yet (the config fetch may take a moment).
    if (!el.joinName.value) el.joinName.value = query.get('user') || storedName;
    if (query.get('room') || (storedRoom && el.joinRoom.value === el.joinRoom.defaultValue)) {
      el.joinRoom.value = query.get('room') || storedRoom;
    }
    if (!el.joinToken.value) el.joinToken.value = query.get('token') || '';
    const server = query.get('server');
    if (!el.joinServer.value) el.joinServer.value = server || defaultServerUrl();
    el.joinServer.placeholder = defaultServerUrl() || 'wss://…/STAGE';
    if (server) el.advanced.open = true;
    document.documentElement.dataset.ready = 'true';
    const auto = (query.get('user') || query.get('token')) && query.get('room');
    if (auto && query.get('autojoin') !== '0') {
      el.joinForm.requestSubmit ? el.joinForm.requestSubmit() : onJoinSubmit(new Event('submit'));
    } else if (!el.joinName.value) {
      el.joinName.focus();
    }
  }

  // ---- session lifecycle -------------------------------------------------------------------

  function startSession(params) {
    stopSession();
    session = newSession(params);
    el.messages.textContent = '';
    el.members.textContent = '';
    el.memberCount.textContent = '0';
    el.memberNote.textContent = '';
    el.memberNote.hidden = true;
    el.input.value = '';
    updateComposer();
    el.roomName.textContent = `#${params.room}`;
    renderWho();
    updateHistoryBar();
    showView('chat');
    connect();
    el.input.focus();
  }

  function stopSession() {
    if (!session) return;
    const s = session;
    s.closing = true;
    clearTimers(s);
    clearTimeout(s.reconnectTimer);
    if (s.ws) {
      try {
        s.ws.close(1000, 'leaving');
      } catch (_) {
        // already closed
      }
    }
    session = null;
  }

  function leave() {
    stopSession();
    setConnection('idle', '');
    showView('join');
    el.joinName.focus();
  }

  function clearTimers(s) {
    clearInterval(s.pingTimer);
    clearInterval(s.presenceTimer);
    s.pingTimer = 0;
    s.presenceTimer = 0;
  }

  function socketUrl(s) {
    const url = new URL(s.server);
    url.searchParams.set('room', s.room);
    if (s.token) url.searchParams.set('token', s.token);
    else url.searchParams.set('user', s.name);
    return url.toString();
  }

  function connect() {
    const s = session;
    if (!s || s.closing) return;
    s.opened = false;
    s.historyQueue = [];
    setConnection('connecting', s.attempt ? `Reconnecting… (attempt ${s.attempt + 1})` : 'Connecting…');
    let ws;
    try {
      ws = new WebSocket(socketUrl(s));
    } catch (err) {
      failToJoin(`Cannot connect: ${err && err.message ? err.message : err}`);
      return;
    }
    s.ws = ws;
    ws.addEventListener('open', () => onOpen(s, ws));
    ws.addEventListener('message', (ev) => onFrame(s, ws, ev));
    ws.addEventListener('close', (ev) => onClose(s, ws, ev));
    ws.addEventListener('error', () => {
      // `close` follows with the details we can see; nothing to do here.
    });
  }

  function failToJoin(text) {
    stopSession();
    showView('join');
    showJoinError(text);
    setConnection('error', text);
  }

  function onOpen(s, ws) {
    if (session !== s || s.ws !== ws) return;
    const reconnected = s.everOpened;
    s.opened = true;
    s.everOpened = true;
    s.attempt = 0;
    s.lastFrameAt = Date.now();
    setConnection('connected', `Connected${s.self ? ` as ${s.self}` : ''} · #${s.room}`);
    s.gap = null;
    s.catchUp = null;
    if (reconnected) notice('ok', 'Reconnected.');
    // A socket that dropped before its first history page arrived may still have seen live
    // messages: `lastId` is then not contiguous with anything older, so start with the latest
    // page as on a first connect instead of walking forward from it.
    if (reconnected && s.lastId && s.historyLoaded) {
      // Fill the gap exactly: walk forward from the newest message seen, page by page. Paging
      // back from the newest (as before `after` existed) loses whatever is older than its pages.
      startCatchUp(s, s.lastId);
    } else {
      requestHistory(s, 'latest', null, HISTORY_PAGE);
    }
    requestPresence(s);
    // Sends made while offline (or lost with the old socket) go out again; the server
    // de-duplicates them by clientMsgId.
    for (const p of s.pending.values()) {
      if (!p.failed) transmit(s, p);
    }
    clearTimers(s);
    s.pingTimer = setInterval(() => heartbeat(s), PING_EVERY_MS);
    s.presenceTimer = setInterval(() => requestPresence(s), PRESENCE_EVERY_MS);
  }

  function onClose(s, ws, ev) {
    if (session !== s || s.ws !== ws) return;
    clearTimers(s);
    s.ws = null;
    const wasOpen = s.opened;
    s.opened = false;
    s.loadingEarlier = false;
    updateHistoryBar();
    if (s.closing) return;
    if (!s.everOpened) {
      // The upgrade was refused (401/403/400) or the server is unreachable: the browser does not
      // tell which, so say what usually causes it.
      failToJoin('Connection refused — check name/room/token (and the server URL under Advanced).');
      return;
    }
    s.attempt += 1;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(s.attempt - 1, 10));
    const jittered = Math.round(delay * (0.5 + Math.random() * 0.5));
    const why = wasOpen ? 'Connection lost'
      : s.attempt >= 3 ? 'Connection refused — check name/room/token, or the server is down'
        : 'Could not reconnect';
    const code = ev && ev.code && ev.code !== 1006 ? ` (code ${ev.code})` : '';
    setConnection('offline', `${why}${code}; retrying in ${Math.ceil(jittered / 1000)} s…`);
    clearTimeout(s.reconnectTimer);
    s.reconnectTimer = setTimeout(connect, jittered);
  }

  function sendFrame(s, frame) {
    if (!s || !s.ws || !s.opened || s.ws.readyState !== WebSocket.OPEN) return false;
    try {
      s.ws.send(JSON.stringify(frame));
      return true;
    } catch (_) {
      return false;
    }
  }

  function heartbeat(s) {
    if (session !== s || !s.ws) return;
    if (Date.now() - s.lastFrameAt > SILENCE_LIMIT_MS) {
      // Nothing heard (not even a pong) for too long: the socket is dead even if it looks open.
      try {
        s.ws.close(4000, 'heartbeat timeout');
      } catch (_) {
        // ignore
      }
      return;
    }
    sendFrame(s, { action: 'ping' });
  }

  function requestPresence(s) {
    sendFrame(s, { action: 'presence', room: s.room });
  }

  /** `cursor` is `before` for 'earlier'/'gap' pages and `after` for 'after' pages. */
  function requestHistory(s, kind, cursor, limit) {
    const frame = { action: 'history', room: s.room, limit };
    if (cursor && kind === 'after') frame.after = cursor;
    else if (cursor) frame.before = cursor;
    if (sendFrame(s, frame)) {
      s.historyQueue.push(kind);
      return true;
    }
    return false;
  }

  // ---- incoming frames ---------------------------------------------------------------------

  function onFrame(s, ws, ev) {
    if (session !== s || s.ws !== ws) return;
    s.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    if (frame.room !== undefined && frame.room !== s.room) return; // another room of ours
    switch (frame.type) {
      case 'ack':
        onAck(s, frame);
        break;
      case 'message':
        onMessage(s, frame);
        break;
      case 'history':
        onHistory(s, frame);
        break;
      case 'recalled':
        onRecalled(s, frame);
        break;
      case 'presence':
        onPresence(s, frame);
        break;
      case 'presence_batch':
        onPresenceBatch(s, frame);
        break;
      case 'occupancy':
        onOccupancy(s, frame);
        break;
      case 'members':
        onMembers(s, frame);
        break;
      case 'pong':
        noteServerTime(frame.ts);
        break;
      case 'error':
        onError(s, frame);
        break;
      default:
        break; // newer server, unknown frame: ignore
    }
  }

  function onAck(s, frame) {
    noteServerTime(frame.ts);
    const p = frame.clientMsgId ? s.pending.get(frame.clientMsgId) : null;
    if (!p) return;
    if (s.messages.has(frame.id)) {
      // The `message` (or a history page) came first.
      removePending(s, p);
      return;
    }
    if (s.self) {
      removePending(s, p);
      upsertMessage(s, {
        id: frame.id,
        user: s.self,
        text: p.text,
        ts: frame.ts,
        clientMsgId: frame.clientMsgId,
      }, { live: true });
    } else {
      // We do not know our own name yet (an opaque token): wait for the `message`.
      s.ackedIds.set(frame.clientMsgId, frame.id);
      p.row.classList.add('acked');
    }
  }

  function onMessage(s, frame) {
    if (typeof frame.id !== 'string') return;
    if (frame.clientMsgId && s.ownClientIds.has(frame.clientMsgId) && !s.self) {
      s.self = frame.user;
      renderWho();
      refreshOwnership(s);
      renderMembers(s);
    }
    const p = frame.clientMsgId ? s.pending.get(frame.clientMsgId) : null;
    if (p) removePending(s, p);
    upsertMessage(s, frame, { live: true });
  }

  function onHistory(s, frame) {
    const kind = s.historyQueue.shift() || 'latest';
    const items = Array.isArray(frame.messages) ? frame.messages : [];
    const more = frame.more === true;
    if (kind === 'after') {
      onCatchUpPage(s, items, more);
      return;
    }
    const keep = kind === 'earlier' ? captureScroll() : null;
    const stick = kind !== 'earlier' && (isNearBottom() || !s.historyLoaded);
    const oldest = s.order.length ? s.order[0] : null;
    for (const item of items) {
      if (!item || typeof item.id !== 'string') continue;
      const p = item.clientMsgId ? s.pending.get(item.clientMsgId) : null;
      if (p) removePending(s, p);
      upsertMessage(s, item, { live: false });
    }
    const first = items.length ? items[0].id : null;
    if (first !== null) {
      // `more` says whether anything is older than this page: it matters when this page
      // reaches at least as far back as what is shown.
      if (oldest === null || first <= oldest) s.hasMore = more;
    } else if (kind === 'earlier' || oldest === null) {
      s.hasMore = false;
    }
    if (kind === 'earlier') s.loadingEarlier = false;
    if (kind === 'latest' || kind === 'gap') fillGap(s, first, more);
    s.historyLoaded = true;
    updateHistoryBar();
    updateEmpty(s);
    if (keep) restoreScroll(keep);
    else if (stick) scrollToBottom();
  }

  function startCatchUp(s, cursor) {
    s.catchUp = { from: cursor, cursor, pages: 0 };
    if (!requestHistory(s, 'after', cursor, HISTORY_GAP_PAGE)) s.catchUp = null;
  }

  /** One `history after` page: the oldest messages after the cursor, oldest first. */
  function onCatchUpPage(s, items, more) {
    const c = s.catchUp;
    const stick = isNearBottom();
    const valid = items.filter((item) => item && typeof item.id === 'string');
    if (c && valid.length && valid[0].id <= c.cursor) {
      // A server that does not know `after` ignores it and answers the latest page: page back
      // from there instead, as before `after` existed.
      s.catchUp = null;
      s.gap = { until: c.from, pages: 0 };
      s.historyQueue.unshift('latest'); // onHistory takes this page's kind from the queue
      onHistory(s, { messages: items, more });
      return;
    }
    for (const item of valid) {
      const p = item.clientMsgId ? s.pending.get(item.clientMsgId) : null;
      if (p) removePending(s, p);
      upsertMessage(s, item, { live: false });
    }
    const last = valid.length ? valid[valid.length - 1].id : null;
    if (last !== null && (s.lastId === null || last > s.lastId)) s.lastId = last;
    if (c && more && last !== null && last > c.cursor) {
      // Ids only grow along the way, so this cannot loop; `more` also follows a page cut to fit
      // one frame, whose newest items come in the next page.
      c.cursor = last;
      c.pages += 1;
      if (!requestHistory(s, 'after', last, HISTORY_GAP_PAGE)) s.catchUp = null;
    } else {
      // The gap is closed: everything up to the newest message shown is known.
      s.catchUp = null;
      if (s.newestId !== null && (s.lastId === null || s.newestId > s.lastId)) s.lastId = s.newestId;
    }
    s.historyLoaded = true;
    updateHistoryBar();
    updateEmpty(s);
    if (stick) scrollToBottom();
  }

  /** After a reconnect to a server without `history after`, page back until the messages
   * missed while offline are all shown (at most MAX_GAP_PAGES pages). */
  function fillGap(s, first, more) {
    if (!s.gap) return;
    if (first !== null && more && first > s.gap.until && s.gap.pages < MAX_GAP_PAGES) {
      s.gap.pages += 1;
      requestHistory(s, 'gap', first, HISTORY_GAP_PAGE);
    } else {
      s.gap = null;
    }
  }

  function onRecalled(s, frame) {
    if (typeof frame.id !== 'string') return;
    s.recalledIds.add(frame.id);
    s.pendingRecalls.delete(frame.id);
    const m = s.messages.get(frame.id);
    if (!m) return;
    m.recalled = true;
    m.recalledBy = frame.by;
    m.text = undefined;
    renderMessage(s, m);
  }

  /** Apply one user's presence change to the member list; false for an unknown state. */
  function applyPresence(s, user, state, ts) {
    const known = s.members.has(user);
    switch (state) {
      case 'joined':
      case 'online':
        s.members.set(user, { state: 'online', lastSeen: ts });
        if (!known && state === 'joined') s.memberTotal += 1;
        return true;
      case 'idle': {
        const prev = s.members.get(user);
        s.members.set(user, { state: 'idle', lastSeen: prev ? prev.lastSeen : ts });
        return true;
      }
      case 'left':
        s.members.delete(user);
        s.memberTotal = Math.max(0, s.memberTotal - 1);
        return true;
      default:
        return false;
    }
  }

  /** Per-user changes arrive again after `occupancy` frames (the room shrank below the server's
   * limit): the list missed who came and went meanwhile, so ask for it afresh. */
  function leaveOccupancy(s) {
    if (!s.occupancy) return;
    s.occupancy = null;
    requestPresence(s);
  }

  function onPresence(s, frame) {
    if (typeof frame.user !== 'string') return;
    const ts = typeof frame.ts === 'number' ? frame.ts : serverNow();
    if (!applyPresence(s, frame.user, frame.state, ts)) return;
    leaveOccupancy(s);
    renderMembers(s);
  }

  /** Several changes of one presence window, coalesced per user (last state wins). */
  function onPresenceBatch(s, frame) {
    if (!Array.isArray(frame.changes)) return;
    const ts = typeof frame.ts === 'number' ? frame.ts : serverNow();
    for (const change of frame.changes) {
      if (change && typeof change.user === 'string') applyPresence(s, change.user, change.state, ts);
    }
    if (Number.isInteger(frame.members) && frame.members >= 0) s.memberTotal = frame.members;
    leaveOccupancy(s);
    renderMembers(s);
  }

  /** A room above the server's detail limit: counts instead of who came and went. The list
   * stays as the last `members` answer left it (refreshed every PRESENCE_EVERY_MS). */
  function onOccupancy(s, frame) {
    if (!Number.isInteger(frame.members) || frame.members < 0) return;
    s.occupancy = {
      members: frame.members,
      joined: Number.isInteger(frame.joined) ? frame.joined : 0,
      left: Number.isInteger(frame.left) ? frame.left : 0,
      ts: typeof frame.ts === 'number' ? frame.ts : serverNow(),
    };
    s.memberTotal = frame.members;
    renderMembers(s);
  }

  function onMembers(s, frame) {
    if (!Array.isArray(frame.members)) return;
    s.members = new Map();
    for (const m of frame.members) {
      if (!m || typeof m.user !== 'string') continue;
      s.members.set(m.user, {
        state: m.state === 'idle' ? 'idle' : 'online',
        lastSeen: typeof m.lastSeen === 'number' ? m.lastSeen : 0,
      });
    }
    s.membersTruncated = frame.truncated === true;
    // `count` is every member, also those a truncated list left out (older servers: the list).
    s.memberTotal = Number.isInteger(frame.count) && frame.count >= 0 ? frame.count : s.members.size;
    renderMembers(s);
  }

  function onError(s, frame) {
    const code = typeof frame.code === 'string' ? frame.code : 'error';
    const message = typeof frame.message === 'string' ? frame.message : '';
    const p = typeof frame.ref === 'string' ? s.pending.get(frame.ref) : null;
    if (p) {
      if (code === 'rate_limited' && p.tries < 5) {
        // Sent too fast: try again shortly, with the same clientMsgId.
        setTimeout(() => {
          if (session === s && s.pending.get(p.clientMsgId) === p && !p.failed) transmit(s, p);
        }, 700 * p.tries);
        notice('warn', 'Sending too fast; retrying…');
        return;
      }
      markFailed(s, p, `${code}: ${message}`);
    } else {
      if (s.pendingRecalls.size && (code === 'forbidden' || code === 'not_found' || code === 'internal' || code === 'rate_limited')) {
        // A recall was refused (errors about recalls carry no ref): let the user try again.
        const ids = [...s.pendingRecalls];
        s.pendingRecalls.clear();
        for (const id of ids) {
          const m = s.messages.get(id);
          if (m) renderMessage(s, m);
        }
      }
      const afterAt = s.historyQueue.lastIndexOf('after');
      if (s.catchUp && afterAt >= 0 && code === 'bad_request') {
        // A server that refuses `after`: fall back to the latest page and page back from it.
        s.historyQueue.splice(afterAt, 1);
        s.gap = { until: s.catchUp.from, pages: 0 };
        s.catchUp = null;
        requestHistory(s, 'latest', null, HISTORY_PAGE);
      }
      if (s.loadingEarlier) {
        // Errors carry no reference to a history request; assume the pending page failed so
        // that the button works again.
        const at = s.historyQueue.lastIndexOf('earlier');
        if (at >= 0) s.historyQueue.splice(at, 1);
        s.loadingEarlier = false;
        updateHistoryBar();
      }
    }
    notice('error', `${code}: ${message}`);
  }

  // ---- messages: model and rendering -------------------------------------------------------

  function bisect(order, id) {
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (order[mid] < id) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  function firstPendingRow() {
    return el.messages.querySelector(':scope > li.pending');
  }

  function upsertMessage(s, raw, { live }) {
    const id = raw.id;
    let m = s.messages.get(id);
    const recalled = raw.recalled === true || s.recalledIds.has(id);
    if (m) {
      // De-duplicate: history and live frames overlap. A recall is final.
      if (recalled && !m.recalled) {
        m.recalled = true;
        m.recalledBy = raw.recalledBy || m.recalledBy;
        m.text = undefined;
      } else if (!m.recalled && typeof raw.text === 'string') {
        m.text = raw.text;
      }
      if (typeof raw.user === 'string') m.user = raw.user;
      if (typeof raw.ts === 'number') m.ts = raw.ts;
      renderMessage(s, m);
      return m;
    }
    m = {
      id,
      user: typeof raw.user === 'string' ? raw.user : '?',
      text: recalled ? undefined : (typeof raw.text === 'string' ? raw.text : ''),
      ts: typeof raw.ts === 'number' ? raw.ts : serverNow(),
      clientMsgId: raw.clientMsgId,
      recalled,
      recalledBy: raw.recalledBy,
      row: null,
    };
    s.messages.set(id, m);
    if (s.newestId === null || id > s.newestId) s.newestId = id;
    if (!s.catchUp && (s.lastId === null || id > s.lastId)) s.lastId = id;
    const stick = live && isNearBottom();
    const index = bisect(s.order, id);
    s.order.splice(index, 0, id);
    renderMessage(s, m);
    const next = index + 1 < s.order.length ? s.messages.get(s.order[index + 1]).row : firstPendingRow();
    el.messages.insertBefore(m.row, next);
    updateEmpty(s);
    if (live && (stick || isOwn(s, m))) scrollToBottom();
    return m;
  }

  function isOwn(s, m) {
    return (s.self !== null && s.self !== undefined && m.user === s.self) ||
      (m.clientMsgId !== undefined && s.ownClientIds.has(m.clientMsgId));
  }

  function canRecall(s, m) {
    return isOwn(s, m) && !m.recalled && serverNow() - m.ts < config.recallWindowMs;
  }

  function renderMessage(s, m) {
    const own = isOwn(s, m);
    const row = make('li', {
      className: `message${own ? ' own' : ''}${m.recalled ? ' recalled' : ''}`,
      'data-testid': 'message',
      dataset: { id: m.id, user: m.user },
    });
    const head = make('div', { className: 'message-head' }, [
      make('span', { className: 'message-user', 'data-testid': 'message-user', text: m.user }),
      own ? make('span', { className: 'you-badge', text: 'you' }) : null,
      make('time', {
        className: 'message-time',
        'data-testid': 'message-time',
        datetime: new Date(m.ts).toISOString(),
        title: formatFullTime(m.ts),
        text: formatTime(m.ts),
      }),
    ]);
    row.appendChild(head);
    if (m.recalled) {
      const by = m.recalledBy && m.recalledBy !== m.user ? ` by ${m.recalledBy}` : '';
      row.appendChild(make('div', { className: 'tombstone', 'data-testid': 'tombstone' }, [
        make('em', { text: `message recalled${by}` }),
      ]));
    } else {
      row.appendChild(make('div', { className: 'message-text', 'data-testid': 'message-text', text: m.text }));
      if (canRecall(s, m)) {
        const recalling = s.pendingRecalls.has(m.id);
        const button = make('button', {
          type: 'button',
          className: 'recall',
          'data-testid': 'recall',
          title: 'Recall this message for everyone',
          disabled: recalling,
          text: recalling ? 'Recalling…' : 'Recall',
        });
        button.addEventListener('click', () => recall(s, m.id));
        row.appendChild(button);
      }
    }
    if (m.row && m.row.parentNode) m.row.replaceWith(row);
    m.row = row;
  }

  /** Re-render rows whose ownership or recall button may have changed. */
  function refreshOwnership(s) {
    for (const id of s.order) renderMessage(s, s.messages.get(id));
  }

  function refreshRecallButtons() {
    const s = session;
    if (!s) return;
    for (const button of el.messages.querySelectorAll('button.recall')) {
      const row = button.closest('li.message');
      const m = row && s.messages.get(row.dataset.id);
      if (m && !canRecall(s, m)) renderMessage(s, m);
    }
  }

  function recall(s, id) {
    const m = s.messages.get(id);
    if (!m || m.recalled) return;
    if (!sendFrame(s, { action: 'recall', id })) {
      notice('warn', 'Not connected; try again when the connection is back.');
      return;
    }
    s.pendingRecalls.add(id);
    renderMessage(s, m);
  }

  function updateEmpty(s) {
    el.empty.hidden = !(s.historyLoaded && s.order.length === 0 && s.pending.size === 0);
    updateHistoryBar();
  }

  function updateHistoryBar() {
    const s = session;
    const more = !!(s && s.hasMore && s.order.length);
    el.loadEarlier.hidden = !more;
    el.loadEarlier.disabled = !!(s && (s.loadingEarlier || !s.opened));
    el.loadEarlier.textContent = s && s.loadingEarlier ? 'Loading…' : 'Load earlier messages';
    el.historyStart.hidden = !(s && s.historyLoaded && !s.hasMore && s.order.length);
  }

  function loadEarlier() {
    const s = session;
    if (!s || s.loadingEarlier || !s.order.length) return;
    if (requestHistory(s, 'earlier', s.order[0], HISTORY_PAGE)) {
      s.loadingEarlier = true;
      updateHistoryBar();
    }
  }

  // ---- pending sends -----------------------------------------------------------------------

  function renderPending(s, p) {
    const row = make('li', {
      className: `message own pending${p.failed ? ' failed' : ''}`,
      'data-testid': 'message',
      dataset: { user: s.self || s.name || '', clientMsgId: p.clientMsgId, pending: 'true' },
    });
    row.appendChild(make('div', { className: 'message-head' }, [
      make('span', { className: 'message-user', 'data-testid': 'message-user', text: s.self || s.name || 'you' }),
      make('span', { className: 'you-badge', text: 'you' }),
      make('span', { className: 'message-time pending-label', text: p.failed ? 'not sent' : 'sending…' }),
    ]));
    row.appendChild(make('div', { className: 'message-text', 'data-testid': 'message-text', text: p.text }));
    if (p.failed) {
      row.appendChild(make('div', { className: 'send-error', 'data-testid': 'send-error', text: p.failed }));
      const retry = make('button', { type: 'button', className: 'link-button', 'data-testid': 'retry', text: 'Retry' });
      retry.addEventListener('click', () => {
        p.failed = null;
        p.tries = 0;
        renderPending(s, p);
        transmit(s, p);
      });
      const discard = make('button', { type: 'button', className: 'link-button', 'data-testid': 'discard', text: 'Discard' });
      discard.addEventListener('click', () => removePending(s, p));
      row.appendChild(make('div', { className: 'pending-actions' }, [retry, discard]));
    }
    if (p.row && p.row.parentNode) p.row.replaceWith(row);
    else el.messages.appendChild(row);
    p.row = row;
  }

  function removePending(s, p) {
    s.pending.delete(p.clientMsgId);
    if (p.row) p.row.remove();
    p.row = null;
    updateEmpty(s);
  }

  function markFailed(s, p, why) {
    p.failed = why || 'failed';
    renderPending(s, p);
  }

  function transmit(s, p) {
    p.tries += 1;
    sendFrame(s, { action: 'send', room: s.room, text: p.text, clientMsgId: p.clientMsgId });
    // Not connected: it stays pending and goes out when the socket opens.
  }

  function submitMessage(event) {
    event.preventDefault();
    const s = session;
    if (!s) return;
    const text = el.input.value;
    if (!text.trim()) return;
    const bytes = byteLength(text);
    if (bytes > MAX_TEXT_BYTES) {
      notice('error', `Message is ${bytes} bytes; the limit is ${MAX_TEXT_BYTES}.`);
      return;
    }
    const p = { clientMsgId: uuid(), text, tries: 0, failed: null, row: null };
    s.pending.set(p.clientMsgId, p);
    s.ownClientIds.add(p.clientMsgId);
    renderPending(s, p);
    updateEmpty(s);
    transmit(s, p);
    if (!s.opened) notice('warn', 'Offline: the message will be sent when the connection is back.');
    el.input.value = '';
    updateComposer();
    scrollToBottom();
    el.input.focus();
  }

  function updateComposer() {
    const text = el.input.value;
    const bytes = byteLength(text);
    const over = bytes > MAX_TEXT_BYTES;
    el.counter.hidden = bytes < MAX_TEXT_BYTES - 512;
    el.counter.textContent = `${bytes} / ${MAX_TEXT_BYTES}`;
    el.counter.classList.toggle('over', over);
    el.send.disabled = over || !text.trim();
    // Grow with the text, up to the CSS max-height.
    el.input.style.height = 'auto';
    el.input.style.height = `${el.input.scrollHeight}px`;
  }

  // ---- members -----------------------------------------------------------------------------

  function renderMembers(s) {
    const list = [...s.members.entries()].sort((a, b) => {
      if (a[1].state !== b[1].state) return a[1].state === 'online' ? -1 : 1;
      return a[0].localeCompare(b[0]);
    });
    const items = list.map(([user, info]) => {
      const self = s.self !== null && user === s.self;
      return make('li', {
        className: `member ${info.state}${self ? ' self' : ''}`,
        'data-testid': 'member',
        dataset: { user, state: info.state },
        title: info.lastSeen ? `${info.state} · last seen ${formatFullTime(info.lastSeen)}` : info.state,
      }, [
        make('span', { className: 'dot', 'aria-hidden': 'true' }),
        make('span', { className: 'member-name', text: user }),
        self ? make('span', { className: 'you-badge', text: 'you' }) : null,
        info.state === 'idle' ? make('span', { className: 'member-state', text: 'idle' }) : null,
      ]);
    });
    el.members.replaceChildren(...items);
    // The list is complete unless the server cut it or stopped sending per-user changes; then
    // the count is the server's.
    const partial = s.membersTruncated || s.occupancy !== null;
    const total = partial ? Math.max(s.memberTotal, list.length) : list.length;
    el.memberCount.textContent = String(total);
    el.members.classList.toggle('partial', partial);
    let note = '';
    if (s.occupancy) note = `${total} members`;
    if (partial && list.length < total) note += `${note ? ' · ' : ''}showing ${list.length} of ${total}`;
    el.memberNote.textContent = note;
    el.memberNote.hidden = !note;
    el.memberNote.title = s.occupancy
      ? `A large room: the server sends counts instead of each join and leave (+${s.occupancy.joined} −${s.occupancy.left} at ${formatFullTime(s.occupancy.ts)}). The list refreshes every ${PRESENCE_EVERY_MS / 1000} s.`
      : '';
  }

  function renderWho() {
    const s = session;
    el.who.textContent = s && s.self ? `as ${s.self}` : '';
  }

  // ---- scrolling ---------------------------------------------------------------------------

  function isNearBottom() {
    const sc = el.scroller;
    return sc.scrollHeight - sc.scrollTop - sc.clientHeight < 80;
  }

  function scrollToBottom() {
    el.scroller.scrollTop = el.scroller.scrollHeight;
  }

  function captureScroll() {
    return { height: el.scroller.scrollHeight, top: el.scroller.scrollTop };
  }

  function restoreScroll(keep) {
    el.scroller.scrollTop = keep.top + (el.scroller.scrollHeight - keep.height);
  }

  // ---- wiring ------------------------------------------------------------------------------

  el.joinForm.addEventListener('submit', onJoinSubmit);
  el.leave.addEventListener('click', leave);
  el.loadEarlier.addEventListener('click', loadEarlier);
  el.composer.addEventListener('submit', submitMessage);
  el.input.addEventListener('input', updateComposer);
  el.input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!el.send.disabled) el.composer.requestSubmit ? el.composer.requestSubmit() : submitMessage(event);
    }
  });
  setInterval(refreshRecallButtons, 1000);
  window.addEventListener('online', () => {
    const s = session;
    if (s && !s.ws && !s.closing) {
      clearTimeout(s.reconnectTimer);
      connect();
    }
  });

  showView('join');
  updateComposer();
  loadConfig().finally(prefillForm);

  // For debugging in the console; not an API.
  window.chatctl = {
    get session() { return session; },
    get config() { return { ...config, loaded: configLoaded }; },
  };
})();
