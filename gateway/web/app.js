// gbgw operator console: hash-routed pages over the gateway's JSON API.
// No dependencies and no build step. Rules kept throughout:
// - API data reaches the page only through textContent/attributes (never innerHTML);
// - nothing survives a logout or a new login (the API filters by the token's zones, so a cached
//   tree from another token could leak a channel);
// - the current page is polled every POLL_MS while the tab is visible.

const POLL_MS = 5000;
const STATS_MS = 1000;
const ICE_WAIT_MS = 2000;
const SESSION_KEY = 'gbgw.session';

// ---------------------------------------------------------------- state

const state = {
  session: null, // {token: string|null}; null = logged out
  gen: 0, // bumped on every navigation; late answers for an older page are dropped
  page: null, // the current page object
  timer: null, // poll timer
  lastJson: '', // what the region shows now, to skip re-renders that change nothing
  cached: undefined, // the current page's last data (dropped on every navigation)
  tree: null, // last /api/tree answer (this login only)
  expanded: new Set(), // tree nodes the user opened
  treeFilter: '',
  deviceFilter: '',
  deviceState: 'all',
  auditWho: '',
  afterLogin: '#/devices',
  loginMessage: '', // shown on the login page after a logout or a rejected token
};

function resetData() {
  state.tree = null;
  state.expanded = new Set();
  state.treeFilter = '';
  state.deviceFilter = '';
  state.deviceState = 'all';
  state.auditWho = '';
  state.lastJson = '';
}

// ---------------------------------------------------------------- DOM helpers

const SVG_NS = 'http://www.w3.org/2000/svg';

// h('a', {href: '#/x', class: 'c', onclick: fn}, 'text', child...) -> element. Attributes
// that are null, undefined or false are left out; true gives an empty (boolean) attribute.
function h(tag, attrs = {}, ...kids) {
  return fill(document.createElement(tag), attrs, kids);
}

// The same for SVG elements (the KPI charts).
function svg(tag, attrs = {}, ...kids) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, kids);
}

function fill(el, attrs, kids) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid !== null && kid !== undefined && kid !== false) {
      el.append(kid instanceof Node ? kid : String(kid)); // text nodes: never parsed as HTML
    }
  }
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);

function announce(text) {
  // The aria-live region: for events worth hearing (page loaded, errors), not for every poll.
  const el = $('#status');
  el.textContent = text;
}

// A data table in a horizontally scrollable box (wide tables never widen the page).
function table(caption, headers, rows, attrs = {}) {
  const empty = h('tr', {}, h('td', { colspan: headers.length }, 'None.'));
  return h(
    'div',
    { class: 'table-box' },
    h(
      'table',
      attrs,
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.length ? rows : empty),
    ),
  );
}

// ---------------------------------------------------------------- formatting

const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

// ISO 8601 strings (the API's datetimes) or epoch seconds/milliseconds -> Date, or null.
function toDate(v) {
  if (v === null || v === undefined || v === '') return null;
  if (typeof v === 'number') return new Date(v < 1e12 ? v * 1000 : v);
  let s = String(v);
  // A datetime without an offset is UTC on this API; JS would read it as local time.
  if (/T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(s)) s += 'Z';
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

function timeCell(v) {
  const d = toDate(v);
  if (!d) return h('td', {}, '—');
  return h('td', {}, h('time', { datetime: d.toISOString() }, timeFmt.format(d)));
}

const pct = (v) => (v === null || v === undefined ? '—' : `${(v * 100).toFixed(1)}%`);
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const dash = (v) => (v === null || v === undefined || v === '' ? '—' : String(v));

function onlineBadge(online) {
  return h('span', { class: online ? 'badge ok' : 'badge bad' }, online ? '● online' : '○ offline');
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders(extra = {}) {
  const token = state.session && state.session.token;
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

// The error text of a non-2xx answer: FastAPI's {"detail": ...} or the plain body.
async function errorText(r) {
  const text = await r.text();
  try {
    const d = JSON.parse(text).detail;
    if (typeof d === 'string') return d;
    if (d !== undefined) return JSON.stringify(d);
  } catch {
    // not JSON: fall through
  }
  return text || r.statusText;
}

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: authHeaders(opts.headers) });
  if (r.status === 401 && state.session) {
    logout('The gateway did not accept the token (401). Log in again.');
    throw new ApiError(401, 'unauthorized');
  }
  return r;
}

async function getJson(path) {
  const r = await api(path);
  if (!r.ok) throw new ApiError(r.status, `${r.status}: ${await errorText(r)}`);
  return r.json();
}

// ---------------------------------------------------------------- session

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    return s && typeof s === 'object' ? { token: s.token || null } : null;
  } catch {
    return null;
  }
}

function setSession(session) {
  stopPage();
  resetData();
  state.session = session;
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
  $('#nav').hidden = !session;
  $('#session').hidden = !session;
  $('#session-who').textContent = session
    ? session.token
      ? 'Logged in with a token'
      : 'No token (local gateway)'
    : '';
}

function logout(message = 'Logged out.') {
  setSession(null);
  state.loginMessage = message;
  if (location.hash === '#/login') route();
  else location.hash = '#/login';
}

// Try a token (or none) against the API; true when the gateway accepts it.
async function tryLogin(token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const r = await fetch('/api/devices', { headers });
  if (r.status === 401) return false;
  if (!r.ok) throw new ApiError(r.status, `${r.status}: ${await errorText(r)}`);
  return true;
}

// ---------------------------------------------------------------- router

const PAGES = {
  devices: () => devicesPage,
  tree: () => treePage,
  live: (arg) => livePage(arg),
  streams: () => streamsPage,
  kpi: () => kpiPage,
  audit: () => auditPage,
  upstreams: () => upstreamsPage,
};

function stopPage() {
  clearTimeout(state.timer);
  state.timer = null;
  if (state.page && state.page.leave) state.page.leave();
  state.page = null;
  state.cached = undefined;
  state.lastJson = '';
  state.gen += 1;
}

function route() {
  const hash = location.hash || '#/';
  if (!hash.startsWith('#/')) return; // e.g. the skip link's #main: not a page
  const [name, ...rest] = hash.slice(2).split('/');
  stopPage();
  if (name === 'login' || !state.session) {
    if (name !== 'login' && name) state.afterLogin = hash;
    showLogin();
    return;
  }
  const make = PAGES[name];
  if (!make) {
    location.replace('#/devices');
    return;
  }
  const arg = rest.length ? decodeURIComponent(rest.join('/')) : '';
  showPage(make(arg));
}

function markNav() {
  const current = (location.hash.split('/')[1] || '').replace('live', 'tree');
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#/${current}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

// A page: {title, controls?() -> Node, load?() -> data, render?(data) -> Node, enter?(),
// leave?()}. Pages with load() are polled; their region is redrawn when the data changes.
function showPage(page) {
  state.page = page;
  markNav();
  const main = $('#main');
  const heading = h('h1', { tabindex: '-1', id: 'page-title' }, page.title);
  const region = h('div', { id: 'region' }, page.load ? h('p', { class: 'muted' }, 'Loading…') : '');
  main.replaceChildren(heading, page.controls ? page.controls() : '', region);
  document.title = `${page.title} · gbgw`;
  $('#updated').textContent = '';
  heading.focus();
  if (page.enter) page.enter();
  if (page.load) refresh(true);
}

// Load the page's data and redraw its region when the data changed, then poll again.
async function refresh(first = false) {
  const page = state.page;
  const gen = state.gen;
  clearTimeout(state.timer);
  if (!page || !page.load) return;
  let data;
  let error = null;
  try {
    data = await page.load();
  } catch (e) {
    error = e;
  }
  if (gen !== state.gen) return; // navigated away meanwhile
  if (error) {
    if (error.status === 401) return; // logout() took over
    const msg = error.message || String(error);
    if (state.cached === undefined) {
      renderRegion(() => h('p', { class: 'error', role: 'alert' }, msg), `error:${msg}`);
    } else {
      // keep showing the last good data; say that it is getting old
      $('#updated').textContent = `Update failed at ${new Date().toLocaleTimeString()}: ${msg}`;
    }
    if (first) announce(`${page.title}: ${msg}`);
  } else {
    state.cached = data;
    renderRegion(() => page.render(data), JSON.stringify(data));
    if (first) announce(`${page.title} loaded.`);
    $('#updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }
  schedule();
}

function schedule() {
  clearTimeout(state.timer);
  if (state.page && state.page.load && !document.hidden) {
    state.timer = setTimeout(() => refresh(), POLL_MS);
  }
}

// Replace the region's content with build() when `key` (the data) changed, or always when
// key is null; keyboard focus stays on the element with the same data-key as before.
function renderRegion(build, key = null) {
  if (key !== null) {
    if (key === state.lastJson) return;
    state.lastJson = key;
  }
  const region = $('#region');
  if (!region) return;
  const active = document.activeElement;
  const focusKey = active && region.contains(active) ? active.dataset.key : null;
  region.replaceChildren(build());
  if (focusKey) {
    const again = region.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
}

// Redraw the region from the data already loaded (after a filter or an expand/collapse).
function redraw() {
  const page = state.page;
  if (page && state.cached !== undefined) renderRegion(() => page.render(state.cached));
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) clearTimeout(state.timer);
  else if (state.page) refresh();
});

// ---------------------------------------------------------------- login

function showLogin() {
  markNav();
  $('#updated').textContent = '';
  document.title = 'Log in · gbgw';
  const message = state.loginMessage || '';
  state.loginMessage = '';
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert' }, message);
  const input = h('input', {
    id: 'token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-describedby': 'token-help login-error',
  });
  const busy = (on) => {
    for (const b of form.querySelectorAll('button')) b.disabled = on;
  };
  const attempt = async (token) => {
    busy(true);
    error.textContent = '';
    try {
      if (await tryLogin(token)) {
        setSession({ token });
        announce(token ? 'Logged in.' : 'Continuing without a token.');
        const target = state.afterLogin && state.afterLogin !== '#/login' ? state.afterLogin : '#/devices';
        state.afterLogin = '#/devices';
        if (location.hash === target) route(); // no hashchange event would come
        else location.hash = target;
      } else {
        error.textContent = token
          ? 'The gateway did not accept this token.'
          : 'This gateway requires a token.';
        input.focus();
      }
    } catch (e) {
      error.textContent = `Cannot reach the API: ${e.message || e}`;
    } finally {
      busy(false);
    }
  };
  const form = h(
    'form',
    {
      class: 'login',
      id: 'login-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        const token = input.value.trim();
        if (!token) {
          error.textContent = 'Enter a token, or continue without one.';
          input.focus();
          return;
        }
        attempt(token);
      },
    },
    h('h1', { tabindex: '-1', id: 'page-title' }, 'Log in'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h(
      'p',
      { id: 'token-help', class: 'muted' },
      'The bearer token from the gateway configuration (http.token or a [[token]] secret). ' +
        'It is kept for this browser tab only.',
    ),
    error,
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'submit', id: 'login-submit' }, 'Log in'),
      h(
        'button',
        { type: 'button', id: 'login-anonymous', onclick: () => attempt(null) },
        'Continue without token',
      ),
    ),
  );
  $('#main').replaceChildren(form);
  announce(''); // the message is in the form's alert, once
  input.focus();
}

// ---------------------------------------------------------------- devices

const MAX_ROWS = 500; // rows drawn at once; the filters narrow a large fleet

const devicesPage = {
  title: 'Devices',
  controls() {
    const text = h('input', {
      id: 'device-filter',
      type: 'search',
      value: state.deviceFilter,
      autocomplete: 'off',
    });
    const which = h(
      'select',
      { id: 'device-state' },
      ['all', 'online', 'offline'].map((v) =>
        h('option', { value: v, selected: v === state.deviceState }, v),
      ),
    );
    const update = () => {
      state.deviceFilter = text.value.trim().toLowerCase();
      state.deviceState = which.value;
      redraw();
    };
    text.addEventListener('input', update);
    which.addEventListener('change', update);
    return h(
      'div',
      { class: 'controls' },
      h('label', { for: 'device-filter' }, 'Find a device (ID or name)'),
      text,
      h('label', { for: 'device-state' }, 'State'),
      which,
    );
  },
  load: () => getJson('/api/devices'),
  render(devices) {
    const online = devices.filter((d) => d.online).length;
    const q = state.deviceFilter;
    const shown = devices.filter(
      (d) =>
        (state.deviceState === 'all' || d.online === (state.deviceState === 'online')) &&
        (!q || d.device_id.includes(q) || (d.name || '').toLowerCase().includes(q)),
    );
    return h(
      'div',
      {},
      h('p', { class: 'summary' }, `${online} of ${devices.length} devices online.`),
      shown.length > MAX_ROWS
        ? h('p', {}, `Showing the first ${MAX_ROWS} of ${shown.length}; use the filters to narrow.`)
        : null,
      table(
        'Registered devices',
        [
          'Device',
          'Name',
          'State',
          'Last seen',
          'Registered',
          'Expires',
          'Transport',
          'Address',
          'Model',
          'Channels',
        ],
        shown.slice(0, MAX_ROWS).map((d) =>
          h(
            'tr',
            { 'data-testid': `device-${d.device_id}` },
            h('th', { scope: 'row' }, h('code', {}, d.device_id)),
            h('td', {}, dash(d.name)),
            h('td', {}, onlineBadge(d.online)),
            timeCell(d.last_seen),
            timeCell(d.registered_at),
            timeCell(d.expires_at),
            h('td', {}, dash(d.transport)),
            h('td', {}, dash(d.address)),
            h('td', {}, [d.manufacturer, d.model, d.firmware].filter(Boolean).join(' ') || '—'),
            h('td', { class: 'num' }, d.channel_count),
          ),
        ),
      ),
    );
  },
};

// ---------------------------------------------------------------- tree

// Visible channels of a node's subtree.
function channelCount(node) {
  if (node.kind === 'channel') return 1;
  return (node.children || []).reduce((n, c) => n + channelCount(c), 0);
}

// The subtree keeping only channels that match `q` (name or ID); null when nothing matches.
function filterTree(node, q) {
  if (node.kind === 'channel') {
    return (node.name || '').toLowerCase().includes(q) || node.id.includes(q) ? node : null;
  }
  const children = (node.children || []).map((c) => filterTree(c, q)).filter(Boolean);
  return children.length ? { ...node, children } : null;
}

// Channel ID -> civil-tree entry (has zone and class), for the business-group view.
function channelIndex(nodes, out = new Map()) {
  for (const n of nodes) {
    if (n.kind === 'channel') out.set(n.id, n);
    else channelIndex(n.children || [], out);
  }
  return out;
}

const KIND_LABEL = {
  province: 'province',
  city: 'city',
  county: 'county',
  grassroots: 'grassroots',
  region: 'region',
  business_group: 'business group',
  virtual_org: 'virtual organisation',
};

function treeNode(node, scope, index, filtering) {
  if (node.kind === 'channel') {
    const info = index.get(node.id) || node;
    const facts = [
      node.id,
      info.zone !== undefined ? `zone ${info.zone}` : null,
      info.class !== undefined ? `class ${info.class}` : null,
      node.status || null,
    ].filter(Boolean);
    return h(
      'li',
      { class: 'leaf' },
      h(
        'a',
        {
          href: `#/live/${encodeURIComponent(node.id)}`,
          'data-tree-item': true,
          'data-key': `c:${scope}:${node.id}`,
          'data-testid': scope === 'civil' ? `tree-channel-${node.id}` : `tree-${scope}-channel-${node.id}`,
        },
        node.name || node.id,
      ),
      ' ',
      h('span', { class: node.status === 'ON' ? 'facts' : 'facts off' }, facts.join(' · ')),
    );
  }
  const key = `n:${scope}:${node.id}`;
  const open = filtering || state.expanded.has(key);
  const label = node.name && node.name !== node.id ? `${node.name} (${node.id})` : node.id;
  const count = channelCount(node);
  return h(
    'li',
    {},
    h(
      'button',
      {
        type: 'button',
        class: 'toggle',
        'aria-expanded': open ? 'true' : 'false',
        'data-tree-item': true,
        'data-key': key,
        onclick: () => {
          if (filtering) return;
          if (state.expanded.has(key)) state.expanded.delete(key);
          else state.expanded.add(key);
          redraw();
        },
      },
      label,
      h('span', { class: 'facts' }, ` ${KIND_LABEL[node.kind] || node.kind} · ${plural(count, 'channel')}`),
    ),
    open ? h('ul', {}, node.children.map((c) => treeNode(c, scope, index, filtering))) : null,
  );
}

// Arrow keys in a tree: Up/Down move, Right opens (or enters), Left closes (or goes up).
function treeKeys(ev) {
  const items = [...ev.currentTarget.querySelectorAll('[data-tree-item]')];
  const i = items.indexOf(document.activeElement);
  if (i < 0) return;
  const el = items[i];
  const move = (j) => items[Math.max(0, Math.min(items.length - 1, j))].focus();
  const expanded = el.getAttribute('aria-expanded');
  switch (ev.key) {
    case 'ArrowDown':
      move(i + 1);
      break;
    case 'ArrowUp':
      move(i - 1);
      break;
    case 'Home':
      move(0);
      break;
    case 'End':
      move(items.length - 1);
      break;
    case 'ArrowRight':
      if (expanded === 'false') el.click();
      else if (expanded === 'true') move(i + 1);
      else return;
      break;
    case 'ArrowLeft': {
      if (expanded === 'true') {
        el.click();
        break;
      }
      const parent = el.closest('ul').closest('li');
      const toggle = parent && parent.querySelector(':scope > [data-tree-item]');
      if (toggle) toggle.focus();
      break;
    }
    default:
      return;
  }
  ev.preventDefault();
}

const treePage = {
  title: 'Channels',
  controls() {
    const input = h('input', {
      id: 'tree-filter',
      type: 'search',
      value: state.treeFilter,
      autocomplete: 'off',
      oninput: () => {
        state.treeFilter = input.value.trim().toLowerCase();
        redraw();
      },
    });
    return h(
      'div',
      { class: 'controls' },
      h('label', { for: 'tree-filter' }, 'Find a channel (name or ID)'),
      input,
      h(
        'p',
        { class: 'muted' },
        'Open a region with Enter; arrow keys move through the tree. Select a channel to watch it live.',
      ),
    );
  },
  async load() {
    state.tree = await getJson('/api/tree');
    return state.tree;
  },
  render(tree) {
    const q = state.treeFilter;
    const index = channelIndex(tree.civil || []);
    const section = (title, scope, nodes) => {
      const shown = q ? nodes.map((n) => filterTree(n, q)).filter(Boolean) : nodes;
      return h(
        'section',
        { 'aria-labelledby': `tree-${scope}` },
        h('h2', { id: `tree-${scope}` }, title),
        shown.length
          ? h(
              'ul',
              { class: 'tree', onkeydown: treeKeys, 'aria-labelledby': `tree-${scope}` },
              shown.map((n) => treeNode(n, scope, index, Boolean(q))),
            )
          : h('p', { class: 'muted' }, q ? 'No channel matches.' : 'No channels.'),
      );
    };
    return h(
      'div',
      {},
      h('p', { class: 'summary' }, `${plural(index.size, 'channel')} visible to this token.`),
      section('Civil-code tree', 'civil', tree.civil || []),
      section('Business groups', 'group', tree.business_groups || []),
    );
  },
};

// ---------------------------------------------------------------- live view (WHEP)

// Resolve once ICE gathering completes, or after `ms` (then the offer has what was found).
function iceGathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

function findChannel(id) {
  return state.tree ? channelIndex(state.tree.civil || []).get(id) || null : null;
}

function livePage(channelId) {
  // pc: the RTCPeerConnection; location: the WHEP session URL; stats: the stats timer
  const session = { pc: null, location: null, stats: null, snapshotUrl: null };
  const video = h('video', {
    id: 'live-video',
    'data-testid': 'live-video',
    autoplay: true,
    muted: true,
    playsinline: true,
    'aria-label': `Live video of channel ${channelId}`,
  });
  video.muted = true; // the attribute alone does not mute a script-created element
  const error = h('p', { id: 'live-error', class: 'error', role: 'alert' });
  const stateText = h('span', { id: 'live-state' }, 'idle');
  const stats = h('dl', { class: 'stats', id: 'live-stats' });
  const info = h('p', { id: 'live-info', class: 'summary' });
  const snapshot = h('img', { id: 'live-snapshot', alt: `Snapshot of channel ${channelId}`, hidden: true });
  const startBtn = h('button', { type: 'button', id: 'live-start', onclick: () => start() }, 'Play');
  const stopBtn = h('button', { type: 'button', id: 'live-stop', onclick: () => stop('stopped') }, 'Stop');
  const snapBtn = h('button', { type: 'button', id: 'live-snapshot-btn', onclick: takeSnapshot }, 'Snapshot');

  const setState = (s) => {
    stateText.textContent = s;
  };

  function describe() {
    const c = findChannel(channelId);
    info.textContent = c
      ? `${c.name} · ${channelId} · zone ${c.zone} · class ${c.class} · ${c.status}`
      : `Channel ${channelId}`;
  }

  async function start() {
    stop(null);
    error.textContent = '';
    setState('connecting');
    const pc = new RTCPeerConnection({ iceServers: [] });
    session.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const media = new MediaStream();
    pc.addEventListener('track', (ev) => {
      media.addTrack(ev.track);
      if (video.srcObject !== media) video.srcObject = media;
    });
    pc.addEventListener('connectionstatechange', () => {
      if (session.pc !== pc) return;
      setState(pc.connectionState);
      if (pc.connectionState === 'connected') announce('Live view connected.');
      if (pc.connectionState === 'failed') {
        error.textContent = 'The WebRTC connection failed (ICE).';
        announce(`Live view: ${error.textContent}`);
      }
    });
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc, ICE_WAIT_MS);
      if (session.pc !== pc) return;
      const r = await api(`/whep/${encodeURIComponent(channelId)}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp' },
        body: pc.localDescription.sdp,
      });
      if (r.status !== 201) throw new ApiError(r.status, `${r.status}: ${await errorText(r)}`);
      const where = r.headers.get('Location');
      const answer = await r.text();
      if (session.pc !== pc) {
        // stopped while the POST was under way: end the session it created
        if (where) {
          fetch(where, { method: 'DELETE', headers: authHeaders(), keepalive: true }).catch(() => {});
        }
        return;
      }
      session.location = where ? new URL(where, location.href).pathname : null;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      session.stats = setInterval(showStats, STATS_MS);
      showStats();
    } catch (e) {
      if (session.pc !== pc) return;
      stop('error');
      if (e.status !== 401) {
        error.textContent = e.message || String(e);
        announce(`Live view: ${error.textContent}`);
      }
    }
  }

  // End the WHEP session, then close the peer connection. DELETE goes first: a closed peer
  // connection may end the session on the gateway before the DELETE arrives (then a 404).
  // keepalive lets the DELETE out even when the tab is closing.
  function stop(why) {
    clearInterval(session.stats);
    session.stats = null;
    const pc = session.pc;
    session.pc = null;
    if (session.location) {
      const ended = fetch(session.location, { method: 'DELETE', headers: authHeaders(), keepalive: true });
      ended.catch(() => {}).finally(() => pc && pc.close());
    } else if (pc) {
      pc.close();
    }
    session.location = null;
    video.srcObject = null;
    if (why) setState(why);
  }

  async function showStats() {
    const pc = session.pc;
    if (!pc) return;
    const rows = [];
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return; // closed meanwhile
    }
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        rows.push(['Frames decoded', s.framesDecoded]);
        rows.push(['Frame size', s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : '—']);
        rows.push(['Frames per second', s.framesPerSecond ?? '—']);
        rows.push(['Packets lost', s.packetsLost ?? 0]);
        rows.push(['Received', `${Math.round((s.bytesReceived || 0) / 1024)} KiB`]);
      }
    });
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    if (q) rows.push(['Frames shown', q.totalVideoFrames]);
    rows.push(['Playing for', `${video.currentTime.toFixed(1)} s`]);
    stats.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
  }

  async function takeSnapshot() {
    try {
      const r = await api(`/api/channels/${encodeURIComponent(channelId)}/snapshot.jpg`);
      if (!r.ok) throw new ApiError(r.status, `${r.status}: ${await errorText(r)}`);
      if (session.snapshotUrl) URL.revokeObjectURL(session.snapshotUrl);
      session.snapshotUrl = URL.createObjectURL(await r.blob());
      snapshot.src = session.snapshotUrl;
      snapshot.hidden = false;
    } catch (e) {
      if (e.status !== 401) error.textContent = `Snapshot: ${e.message || e}`;
    }
  }

  const onHide = () => stop('stopped');
  return {
    title: 'Live view',
    controls() {
      describe();
      return h(
        'div',
        { class: 'live' },
        info,
        h('div', { class: 'actions' }, startBtn, stopBtn, snapBtn, h('a', { href: '#/tree' }, 'All channels')),
        error,
        h('p', {}, 'State: ', stateText),
        h(
          'div',
          { class: 'live-body' },
          h('div', { class: 'player' }, video),
          h(
            'section',
            { 'aria-labelledby': 'live-stats-title' },
            h('h2', { id: 'live-stats-title' }, 'Stream statistics'),
            stats,
          ),
        ),
        snapshot,
      );
    },
    enter() {
      window.addEventListener('pagehide', onHide);
      if (!state.tree) {
        // channel name, zone and class come from the tree (this login's, as everywhere)
        getJson('/api/tree')
          .then((t) => {
            state.tree = t;
            describe();
          })
          .catch(() => {});
      }
      start();
    },
    leave() {
      window.removeEventListener('pagehide', onHide);
      stop(null);
      if (session.snapshotUrl) URL.revokeObjectURL(session.snapshotUrl);
    },
  };
}

// ---------------------------------------------------------------- streams

function webrtcTable(sessions) {
  return table(
    'WebRTC viewers',
    ['Session', 'Channel', 'Stream', 'Consumer', 'Peer', 'Started', 'Codec', 'State'],
    sessions.map((w) =>
      h(
        'tr',
        { 'data-testid': `webrtc-${w.session_id}` },
        h('th', { scope: 'row' }, h('code', {}, w.session_id)),
        h('td', {}, h('a', { href: `#/live/${encodeURIComponent(w.channel_id)}` }, w.channel_id)),
        h('td', {}, w.stream_id),
        h('td', {}, w.consumer),
        h('td', {}, dash(w.peer)),
        timeCell(w.started_at),
        h('td', {}, [w.codec, w.audio_codec].filter(Boolean).join(' + ') || '—'),
        h('td', {}, w.state),
      ),
    ),
  );
}

async function stopStream(id) {
  if (!window.confirm(`End stream ${id} for every viewer?`)) return;
  try {
    const r = await api(`/api/streams/${encodeURIComponent(id)}`, { method: 'DELETE' });
    announce(r.ok ? `Stream ${id} ended.` : `Could not end stream ${id}: ${await errorText(r)}`);
  } catch (e) {
    if (e.status !== 401) announce(`Could not end stream ${id}: ${e.message || e}`);
  }
  refresh();
}

const streamsPage = {
  title: 'Streams',
  async load() {
    const streams = await getJson('/api/streams');
    let webrtc = null;
    try {
      webrtc = await getJson('/api/webrtc');
    } catch (e) {
      if (e.status === 401) throw e; // 404: this gateway has no WebRTC listing
    }
    return { streams, webrtc };
  },
  render({ streams, webrtc }) {
    const sessions = Array.isArray(webrtc) ? webrtc : null;
    const consumers = streams.reduce((n, s) => n + (s.consumers || 0), 0);
    return h(
      'div',
      {},
      h('p', { class: 'summary' }, `${plural(streams.length, 'live stream')}, ${plural(consumers, 'consumer')}.`),
      table(
        'Live streams',
        [
          'Stream',
          'Channel',
          'Device',
          'State',
          'Started',
          'Consumers',
          'Video',
          'Packets (lost)',
          'Bitrate',
          'Action',
        ],
        streams.map((s) =>
          h(
            'tr',
            { 'data-testid': `stream-${s.stream_id}` },
            h('th', { scope: 'row' }, s.stream_id),
            h('td', {}, h('a', { href: `#/live/${encodeURIComponent(s.channel_id)}` }, s.channel_id)),
            h('td', {}, h('code', {}, s.device_id)),
            h('td', {}, s.state),
            timeCell(s.started_at),
            h('td', { class: 'num' }, s.consumers),
            h('td', {}, [s.codec, s.resolution, s.fps && `${s.fps} fps`].filter(Boolean).join(' ') || '—'),
            h('td', { class: 'num' }, `${s.packets} (${s.lost})`),
            h('td', { class: 'num' }, s.bitrate ? `${Math.round(s.bitrate / 1000)} kbit/s` : '—'),
            h(
              'td',
              {},
              h(
                'button',
                {
                  type: 'button',
                  'data-key': `stop:${s.stream_id}`,
                  'aria-label': `End stream ${s.stream_id}`,
                  onclick: () => stopStream(s.stream_id),
                },
                'End',
              ),
            ),
          ),
        ),
      ),
      sessions ? webrtcTable(sessions) : null,
    );
  },
};

// ---------------------------------------------------------------- audit

const auditPage = {
  title: 'Audit log',
  controls() {
    const input = h('input', { id: 'audit-who', type: 'search', value: state.auditWho, autocomplete: 'off' });
    return h(
      'form',
      {
        class: 'controls',
        onsubmit: (ev) => {
          ev.preventDefault();
          state.auditWho = input.value.trim();
          state.lastJson = '';
          refresh();
        },
      },
      h('label', { for: 'audit-who' }, 'Consumer'),
      input,
      h('button', { type: 'submit' }, 'Filter'),
    );
  },
  load() {
    const q = new URLSearchParams({ limit: '200' });
    if (state.auditWho) q.set('consumer', state.auditWho);
    return getJson(`/api/audit?${q}`);
  },
  render(entries) {
    return table(
      'Newest first (200 at most)',
      ['Time', 'Consumer', 'Action', 'Target', 'Result', 'Peer', 'Detail'],
      entries.map((e) =>
        h(
          'tr',
          {},
          timeCell(e.at),
          h('td', {}, e.consumer),
          h('td', {}, e.action),
          h('td', {}, h('code', {}, e.target)),
          h('td', {}, dash(e.result)),
          h('td', {}, dash(e.peer)),
          h('td', {}, dash(e.detail)),
        ),
      ),
    );
  },
};

// ---------------------------------------------------------------- upstreams

const upstreamsPage = {
  title: 'Upstream platforms',
  async load() {
    try {
      return await getJson('/api/upstreams');
    } catch (e) {
      if (e.status === 403) return { forbidden: e.message };
      throw e;
    }
  },
  render(ups) {
    if (!Array.isArray(ups)) {
      return h('p', { class: 'muted' }, 'Only the operator token may see upstream platforms.');
    }
    return table(
      'Platforms this gateway registers to',
      [
        'Name',
        'Platform ID',
        'Presented as',
        'Address',
        'State',
        'Registered',
        'Keepalives',
        'Streams',
        'Subscriptions',
        'Last error',
      ],
      ups.map((u) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, u.name),
          h('td', {}, h('code', {}, u.id)),
          h('td', {}, h('code', {}, u.local_id)),
          h('td', {}, `${u.host}:${u.port}/${u.transport}`),
          h(
            'td',
            {},
            u.registered
              ? h('span', { class: 'badge ok' }, '● registered')
              : h('span', { class: 'badge bad' }, '○ not registered'),
          ),
          timeCell(u.registered_at),
          h('td', { class: 'num' }, u.keepalives_ok),
          h('td', { class: 'num' }, u.streams),
          h('td', { class: 'num' }, u.subscriptions),
          h('td', {}, dash(u.last_error)),
        ),
      ),
    );
  },
};

// ---------------------------------------------------------------- KPI

// A cell carrying the raw API value (data-value) next to its readable form.
function kpiCell(group, key, field, value, text) {
  return h(
    'td',
    {
      class: 'num',
      'data-testid': `kpi-${group}-${key}-${field}`,
      // String() here: h() would drop a false and blank a true
      'data-value': value === null || value === undefined ? '' : String(value),
    },
    text,
  );
}

// Horizontal bars (availability and online rate) per row, with the target as a dashed line.
function kpiChart(group, rows, target, label) {
  const rowH = 34;
  const left = 110;
  const width = 620;
  const plot = width - left - 64; // room on the right for the value labels
  const x = (v) => left + plot * Math.max(0, Math.min(1, v || 0));
  const height = rows.length * rowH + 30;
  const title = `kpi-chart-title-${group}`;
  const bars = rows.map((r, i) => {
    const y = 10 + i * rowH;
    const a = r.availability;
    const meets = a !== null && a >= target;
    return svg(
      'g',
      {},
      svg('text', { x: left - 8, y: y + 14, 'text-anchor': 'end', class: 'label' }, label(r)),
      svg('rect', { x: left, y, width: x(a) - left, height: 14, class: meets ? 'bar ok' : 'bar bad' }),
      svg('text', { x: x(a) + 4, y: y + 12, class: 'value' }, pct(a)),
      svg('rect', { x: left, y: y + 16, width: x(r.online_rate) - left, height: 8, class: 'bar online' }),
      svg('text', { x: x(r.online_rate) + 4, y: y + 24, class: 'value small' }, pct(r.online_rate)),
    );
  });
  return h(
    'figure',
    { class: 'chart' },
    svg(
      'svg',
      {
        viewBox: `0 0 ${width} ${height}`,
        role: 'img',
        'aria-labelledby': title,
        'data-testid': `kpi-chart-${group}`,
      },
      svg('title', { id: title }, `Availability and online rate by ${group}, target ${pct(target)}`),
      bars,
      svg('line', { x1: x(target), x2: x(target), y1: 4, y2: height - 22, class: 'target' }),
      svg(
        'text',
        { x: x(target), y: height - 8, 'text-anchor': 'middle', class: 'value' },
        `target ${pct(target)}`,
      ),
    ),
    h(
      'figcaption',
      {},
      'Thick bars: availability (green meets the target); thin bars: channels online now. ' +
        'The table below has the numbers.',
    ),
  );
}

const yesNo = (v) => (v === null || v === undefined ? '—' : v ? '✔ yes' : '✘ no');

function kpiSection(group, data, label) {
  const rows = data.rows || [];
  const target = data.target;
  const keyOf = (r) => String(group === 'county' ? r.county : r.class);
  return h(
    'section',
    { 'aria-labelledby': `kpi-${group}`, 'data-target': target, id: `kpi-section-${group}` },
    h('h2', { id: `kpi-${group}` }, `By ${group}`),
    rows.length ? kpiChart(group, rows, target, label) : null,
    table(
      `KPIs by ${group} (target ${pct(target)} availability)`,
      [
        group === 'county' ? 'County' : 'Class',
        'Devices online',
        'Devices',
        'Channels online',
        'Channels',
        'Online rate',
        'Planned',
        'Networking rate',
        'Availability',
        'HD rate',
        'Meets target',
      ],
      rows.map((r) => {
        const k = keyOf(r);
        return h(
          'tr',
          { 'data-testid': `kpi-${group}-${k}` },
          h('th', { scope: 'row' }, label(r)),
          kpiCell(group, k, 'devices_online', r.devices_online, r.devices_online),
          kpiCell(group, k, 'devices_known', r.devices_known, r.devices_known),
          kpiCell(group, k, 'channels_online', r.channels_online, r.channels_online),
          kpiCell(group, k, 'channels_known', r.channels_known, r.channels_known),
          kpiCell(group, k, 'online_rate', r.online_rate, pct(r.online_rate)),
          kpiCell(group, k, 'planned', r.planned, dash(r.planned)),
          kpiCell(group, k, 'networking_rate', r.networking_rate, pct(r.networking_rate)),
          kpiCell(group, k, 'availability', r.availability, pct(r.availability)),
          kpiCell(group, k, 'hd_rate', r.hd_rate, pct(r.hd_rate)),
          kpiCell(group, k, 'meets_target', r.meets_target, yesNo(r.meets_target)),
        );
      }),
    ),
  );
}

const kpiPage = {
  title: 'KPI dashboard',
  async load() {
    const [county, klass] = await Promise.all([getJson('/api/kpi?by=county'), getJson('/api/kpi?by=class')]);
    return { county, class: klass };
  },
  render(data) {
    return h(
      'div',
      {},
      h(
        'p',
        { class: 'summary' },
        `Availability target: ${pct(data.county.target)}. Only channels this token may see count.`,
      ),
      kpiSection('county', data.county, (r) => r.county),
      kpiSection('class', data.class, (r) => `class ${r.class}`),
    );
  },
};

// ---------------------------------------------------------------- start

function init() {
  $('#logout').addEventListener('click', () => logout());
  $('#skip-link').addEventListener('click', (ev) => {
    ev.preventDefault(); // keep the hash route; just move focus
    $('#main').focus();
  });
  window.addEventListener('hashchange', route);
  const saved = loadSession();
  if (saved) setSession(saved);
  route();
}

init();
