// The Skiff dashboard. Everything it shows is read from the API with the
// token its user signed in with, so it shows and offers only what that
// token may see and do; the API decides, the page only leaves out what
// would be refused. Text from the cluster (names, annotations, Event
// messages, logs) is tenants' to choose: it enters the page only as text
// nodes, never as markup.

const API = '/apis/skiff.dev/v1/';
// Per tab, gone when the tab closes; never in a URL or a cookie.
const TOKEN_KEY = 'skiff.token';
// Watches re-list after an error, waiting longer each time up to this.
const MAX_BACKOFF_MS = 10000;
// Usage and request rates are sampled (the nodes do not stream them).
const METRICS_PERIOD_MS = 5000;
const CHART_SAMPLES = 60;
const LOG_CHARS_KEPT = 1 << 20;

const KINDS = [
  {kind: 'Node', plural: 'nodes', title: 'Nodes', namespaced: false},
  {kind: 'Pod', plural: 'pods', title: 'Pods', namespaced: true},
  {kind: 'Deployment', plural: 'deployments', title: 'Deployments', namespaced: true},
  {kind: 'Service', plural: 'services', title: 'Services', namespaced: true},
  {kind: 'Route', plural: 'routes', title: 'Routes', namespaced: true},
  {kind: 'ConfigMap', plural: 'configmaps', title: 'ConfigMaps', namespaced: true},
  {kind: 'Secret', plural: 'secrets', title: 'Secrets', namespaced: true},
  {kind: 'ServiceAccount', plural: 'serviceaccounts', title: 'ServiceAccounts', namespaced: true},
  {kind: 'ResourceQuota', plural: 'resourcequotas', title: 'ResourceQuotas', namespaced: true},
  {kind: 'Event', plural: 'events', title: 'Events', namespaced: true},
  {kind: 'Namespace', plural: 'namespaces', title: 'Namespaces', namespaced: false},
];
const BY_PLURAL = new Map(KINDS.map((k) => [k.plural, k]));
const BY_KIND = new Map(KINDS.map((k) => [k.kind, k]));

const session = {token: null, who: null};

// ---- DOM: elements from text only -----------------------------------------

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.className = value;
    } else if (name === 'href') {
      // Links go to the page's own views only: a name of a tenant's
      // choosing never becomes a `javascript:` or foreign URL.
      if (!String(value).startsWith('#/')) throw new Error('a link outside the dashboard');
      el.setAttribute('href', value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  return el;
}

// ---- API -----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra) {
  return Object.assign({Authorization: 'Bearer ' + session.token, Accept: 'application/json'}, extra);
}

async function errorOf(response) {
  const text = await response.text();
  try {
    const status = JSON.parse(text);
    if (status && typeof status.message === 'string') return new ApiError(response.status, status.message);
  } catch (_) {
    // Not a Status: the text itself says what went wrong.
  }
  return new ApiError(response.status, text.trim() || response.statusText);
}

// Every call of the API once signed in: the token, nothing cached, no
// cookie; a 401 signs out, any other failure is thrown as an ApiError.
async function request(path, init) {
  const response = await fetch(API + path, Object.assign({cache: 'no-store', credentials: 'omit'}, init, {headers: headers(init.headers)}));
  if (response.status === 401) {
    signOut('The API no longer accepts this token: sign in again.');
    throw new ApiError(401, 'unauthorized');
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

// A call answered with JSON; `body` is sent as JSON.
async function api(path, options = {}) {
  const response = await request(path, {
    method: options.method || 'GET',
    headers: options.contentType ? {'Content-Type': options.contentType} : {},
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    signal: options.signal,
  });
  return response.json();
}

function query(params) {
  const parts = [];
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    parts.push(encodeURIComponent(name) + '=' + encodeURIComponent(value));
  }
  return parts.length ? '?' + parts.join('&') : '';
}

function collectionPath(plural, namespace) {
  const info = BY_PLURAL.get(plural);
  if (info && info.namespaced && namespace) return 'namespaces/' + encodeURIComponent(namespace) + '/' + plural;
  return plural;
}

function objectPath(plural, namespace, name) {
  return collectionPath(plural, namespace) + '/' + encodeURIComponent(name);
}

// Reads every line of a streamed answer as it arrives.
async function readLines(response, onLine) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) {
      // A last line without its newline is still a line.
      if (buffered) onLine(buffered);
      return;
    }
    buffered += value;
    let end;
    while ((end = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
      onLine(line);
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A collection kept as stored: listed, then followed by watch from the
// list's revision; listed again after any error (a compacted revision, a
// restart of the control plane). Changes are handed on at most once a
// frame, so a burst of events costs one render.
class Live {
  constructor(plural, options, onChange) {
    this.plural = plural;
    this.options = options;
    this.onChange = onChange;
    this.items = new Map();
    this.revision = null;
    this.error = null;
    this.loaded = false;
    this.changed = new Set();
    this.scheduled = false;
    this.abort = new AbortController();
    this.run();
  }

  static keyOf(object) {
    return (object.metadata.namespace || '') + '/' + object.metadata.name;
  }

  path(extra) {
    return collectionPath(this.plural, this.options.namespace) + query(Object.assign({
      labelSelector: this.options.labelSelector,
      fieldSelector: this.options.fieldSelector,
    }, extra));
  }

  async run() {
    let backoff = 500;
    while (!this.abort.signal.aborted) {
      try {
        await this.list();
        this.error = null;
        this.emit(null);
        await this.follow();
        backoff = 500;
      } catch (error) {
        if (this.abort.signal.aborted || error.status === 401) return;
        this.error = error.message;
        this.emit(null);
        // Refused: the token's roles do not change while it is signed in.
        if (error.status === 403) return;
        await sleep(backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  async list() {
    const items = new Map();
    let next = null;
    do {
      const page = await api(this.path({limit: 500, continue: next}), {signal: this.abort.signal});
      for (const object of page.items) items.set(Live.keyOf(object), object);
      this.revision = page.metadata.resourceVersion;
      next = page.metadata.continue;
    } while (next);
    this.items = items;
    this.loaded = true;
  }

  async follow() {
    const response = await request(this.path({
      watch: 'true', resourceVersion: this.revision, allowWatchBookmarks: 'true',
    }), {signal: this.abort.signal});
    await readLines(response, (line) => {
      if (line.trim()) this.apply(JSON.parse(line));
    });
  }

  apply(event) {
    const object = event.object || {};
    if (event.type === 'ERROR') throw new ApiError(object.code || 500, object.message || 'the watch ended');
    if (object.metadata && object.metadata.resourceVersion) this.revision = object.metadata.resourceVersion;
    if (event.type === 'BOOKMARK') return;
    const key = Live.keyOf(object);
    if (event.type === 'DELETED') this.items.delete(key);
    else this.items.set(key, object);
    this.emit(key);
  }

  emit(key) {
    if (key === null) this.changed = null;
    else if (this.changed) this.changed.add(key);
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      const changed = this.changed;
      this.changed = new Set();
      if (!this.abort.signal.aborted) this.onChange(changed);
    });
  }

  sorted() {
    return [...this.items.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
  }

  stop() {
    this.abort.abort();
  }
}

// ---- What the signed-in token may do -----------------------------------

function roleIn(namespace) {
  if (session.who.clusterAdmin) return 'admin';
  return session.who.namespaces[namespace] || null;
}

function mayWrite(namespace) {
  return ['edit', 'admin'].includes(roleIn(namespace));
}

function namespacesOf() {
  return Object.keys(session.who.namespaces).sort();
}

// ---- Formatting ----------------------------------------------------------

function age(timestamp) {
  if (!timestamp) return '';
  const seconds = Math.max(0, (Date.now() - Date.parse(timestamp)) / 1000);
  if (seconds < 120) return Math.floor(seconds) + 's';
  if (seconds < 7200) return Math.floor(seconds / 60) + 'm';
  if (seconds < 172800) return Math.floor(seconds / 3600) + 'h';
  return Math.floor(seconds / 86400) + 'd';
}

// Quantities as the API writes them (`64Mi`, `500m`, `2`): to a number of
// bytes or cores, for bars.
function quantity(text) {
  if (text === undefined || text === null) return null;
  const match = /^([0-9.]+)([a-zA-Z]*)$/.exec(String(text).trim());
  if (!match) return null;
  const units = {'': 1, m: 1e-3, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4};
  return match[2] in units ? Number(match[1]) * units[match[2]] : null;
}

function bytes(n) {
  if (n === null || n === undefined) return '?';
  if (n >= 1024 ** 3) return (n / 1024 ** 3).toFixed(1) + ' GiB';
  if (n >= 1024 ** 2) return (n / 1024 ** 2).toFixed(0) + ' MiB';
  return (n / 1024).toFixed(0) + ' KiB';
}

function condition(object, type) {
  const conditions = (object.status && object.status.conditions) || [];
  return conditions.find((c) => c.type === type);
}

function nodeReady(node) {
  const ready = condition(node, 'Ready');
  return ready ? ready.status === 'True' : false;
}

function rollout(deployment) {
  const spec = deployment.spec || {};
  const status = deployment.status || {};
  if (spec.paused) return 'Paused';
  const progressing = condition(deployment, 'Progressing');
  if (progressing && progressing.status === 'False') return 'Failed: ' + (progressing.reason || '');
  const want = spec.replicas ?? 1;
  if (want === 0 && (status.replicas || 0) === 0) return 'At zero';
  if ((status.updatedReplicas || 0) === want && (status.availableReplicas || 0) === want && (status.replicas || 0) === want) return 'Complete';
  return 'Progressing';
}

function badge(text, tone) {
  return h('span', {class: 'badge ' + (tone || '')}, text);
}

function phaseTone(phase) {
  return {Running: 'ok', Succeeded: 'ok', Pending: 'warn', Failed: 'bad', Unknown: 'bad'}[phase] || '';
}

function bar(label, used, total, text) {
  const share = used !== null && total ? Math.min(1, used / total) : null;
  const meter = h('div', {class: 'bar', role: 'meter', 'aria-label': label,
    'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': share === null ? 0 : Math.round(share * 100)});
  const fill = h('div', {class: 'fill' + (share !== null && share > 0.9 ? ' high' : '')});
  fill.style.width = share === null ? '0' : (share * 100).toFixed(1) + '%';
  meter.append(fill);
  return h('div', {class: 'usage'}, h('span', {class: 'usage-label'}, label), meter, h('span', {class: 'usage-text'}, text));
}

function hrefOf(plural, namespace, name) {
  return '#/object/' + plural + '/' + encodeURIComponent(namespace || '-') + '/' + encodeURIComponent(name);
}

function objectLink(plural, object) {
  return h('a', {href: hrefOf(plural, object.metadata.namespace, object.metadata.name)}, object.metadata.name);
}

// The object as YAML, for reading (the API takes JSON): double-quoted
// strings wherever a plain one could be read as something else.
function toYaml(value) {
  const lines = [];
  const isMap = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const filled = (v) => (Array.isArray(v) ? v.length > 0 : isMap(v) && Object.keys(v).length > 0);
  // Characters that are invisible or change the direction of what
  // follows are written as escapes: a tenant's text must not be able to
  // make one line read as another.
  const hidden = /[\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
  const quoted = (v) => JSON.stringify(v).replace(hidden, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  const plain = (v) => {
    if (v === null) return 'null';
    if (typeof v !== 'string') return String(v);
    if (v === '' || /^[\s\-?:,[\]{}#&*!|>'"%@`~]|[\s:]$|: | #|[\u0000-\u001f]/.test(v) || v.search(hidden) >= 0 ||
        /^(true|false|yes|no|on|off|null|[-+.]?[0-9].*)$/i.test(v)) {
      return quoted(v);
    }
    return v;
  };
  const inline = (v) => (Array.isArray(v) ? '[]' : isMap(v) ? '{}' : plain(v));
  const walk = (v, pad) => {
    if (isMap(v)) {
      for (const [key, child] of Object.entries(v)) {
        if (filled(child)) {
          lines.push(pad + plain(key) + ':');
          walk(child, Array.isArray(child) ? pad : pad + '  ');
        } else {
          lines.push(pad + plain(key) + ': ' + inline(child));
        }
      }
    } else {
      for (const child of v) {
        if (filled(child)) {
          const start = lines.length;
          walk(child, pad + '  ');
          lines[start] = pad + '- ' + lines[start].slice(pad.length + 2);
        } else {
          lines.push(pad + '- ' + inline(child));
        }
      }
    }
  };
  if (filled(value)) walk(value, '');
  else lines.push(inline(value));
  return lines.join('\n') + '\n';
}

// ---- Shell ---------------------------------------------------------------

let teardown = [];
const root = () => document.getElementById('app');

function onLeave(fn) {
  teardown.push(fn);
}

function leave() {
  for (const fn of teardown.splice(0)) {
    try {
      fn();
    } catch (_) {
      // A view that fails to stop must not keep the next from starting.
    }
  }
}

let announced = null;

function announce(message, tone) {
  const region = document.getElementById('status');
  if (!region) return;
  clear(region).append(h('div', {class: 'notice ' + (tone || '')}, message));
  region.dataset.tone = tone || '';
  // A confirmation goes after a while; a failure stays until the next.
  clearTimeout(announced);
  if (tone === 'ok') announced = setTimeout(() => clear(region), 8000);
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, search] = raw.split('?');
  const params = new URLSearchParams(search || '');
  try {
    return {parts: path.split('/').filter(Boolean).map(decodeURIComponent), params};
  } catch (_) {
    // Not an address this page made: shown as one that names nothing.
    return {parts: ['not-found'], params};
  }
}

function setParams(parts, params) {
  const search = params.toString();
  location.hash = '#/' + parts.map(encodeURIComponent).join('/') + (search ? '?' + search : '');
}

// The namespace in view: `ns` of the address, else the only (or first) one
// a namespaced token has; a cluster admin sees all by default.
function currentNamespace(params) {
  const asked = params.get('ns');
  if (session.who.clusterAdmin) return asked || '';
  const mine = namespacesOf();
  return mine.includes(asked) ? asked : mine[0] || '';
}

function signOut(message) {
  leave();
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  session.who = null;
  showSignIn(message);
}

function showSignIn(message) {
  const input = h('input', {id: 'token', name: 'token', type: 'password', autocomplete: 'off',
    spellcheck: 'false', required: true, 'aria-describedby': 'signin-help'});
  const error = h('p', {id: 'signin-error', class: 'error', role: 'alert'}, message || '');
  const form = h('form', {id: 'signin', class: 'signin', onsubmit: async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    clear(error);
    const signed = await signIn(token);
    if (!signed.ok) {
      append(error, [signed.message]);
      input.select();
    }
  }},
  h('h1', {}, 'Skiff'),
  h('label', {for: 'token'}, 'Token'),
  input,
  h('p', {id: 'signin-help', class: 'help'}, 'A token of this cluster, as wasmctl uses: it stays in this tab only.'),
  h('button', {type: 'submit', id: 'signin-button'}, 'Sign in'),
  error);
  clear(root()).append(h('main', {id: 'main'}, form));
  input.focus();
}

async function signIn(token) {
  session.token = token;
  let who;
  try {
    who = await fetch(API + 'whoami', {headers: headers(), cache: 'no-store', credentials: 'omit'});
  } catch (error) {
    session.token = null;
    return {ok: false, message: 'The control plane did not answer: ' + error.message};
  }
  if (!who.ok) {
    session.token = null;
    const error = await errorOf(who);
    return {ok: false, message: who.status === 401
      ? 'This token was refused: it is not a token of this cluster, or it was deleted.'
      : error.message};
  }
  session.who = await who.json();
  if (!session.who.clusterAdmin && namespacesOf().length === 0) {
    session.token = null;
    session.who = null;
    return {ok: false, message: 'This token holds no role in any namespace: the dashboard has nothing to show it.'};
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showShell();
  return {ok: true};
}

function showShell() {
  const who = session.who.clusterAdmin ? 'cluster admin'
    : namespacesOf().map((ns) => ns + ': ' + session.who.namespaces[ns]).join(', ');
  const nav = h('nav', {'aria-label': 'Views'},
    h('ul', {},
      h('li', {}, h('a', {href: '#/overview', 'data-view': 'overview'}, 'Overview')),
      session.who.clusterAdmin || namespacesOf().some(mayWrite)
        ? h('li', {}, h('a', {href: '#/apply', 'data-view': 'apply'}, 'Apply')) : null,
      // Secrets only for tokens that may read some (not `view`).
      KINDS.filter((k) => (k.namespaced || session.who.clusterAdmin) &&
        (k.plural !== 'secrets' || session.who.clusterAdmin || namespacesOf().some(mayWrite)))
        .map((k) => h('li', {}, h('a', {href: '#/list/' + k.plural, 'data-view': k.plural}, k.title)))));
  const skip = h('a', {class: 'skip', href: '#/skip', onclick: (event) => {
    event.preventDefault();
    document.getElementById('main').focus();
  }}, 'Skip to content');
  clear(root()).append(
    skip,
    h('header', {class: 'top'},
      h('span', {class: 'brand'}, 'Skiff'),
      h('span', {class: 'who', id: 'who'}, who),
      h('button', {type: 'button', id: 'signout', onclick: () => signOut('Signed out.')}, 'Sign out')),
    h('div', {class: 'body'}, nav, h('main', {id: 'main', tabindex: '-1'})),
    h('div', {id: 'status', role: 'status', 'aria-live': 'polite'}));
  if (!location.hash || location.hash === '#' || location.hash === '#/') location.hash = '#/overview';
  else route();
}

function route() {
  if (!session.who) return;
  leave();
  const {parts, params} = parseHash();
  const main = clear(document.getElementById('main'));
  const view = parts[0] || 'overview';
  for (const link of document.querySelectorAll('nav a')) {
    const current = link.dataset.view === (view === 'overview' || view === 'apply' ? view : parts[1]);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  clear(document.getElementById('status'));
  if (view === 'overview') return overview(main, params);
  if (view === 'apply') return applyView(main, params);
  if (view === 'list' && BY_PLURAL.has(parts[1])) return listView(main, BY_PLURAL.get(parts[1]), params);
  if (view === 'object' && BY_PLURAL.has(parts[1]) && parts.length === 4) {
    return detailView(main, BY_PLURAL.get(parts[1]), parts[2] === '-' ? '' : parts[2], parts[3]);
  }
  main.append(h('h1', {}, 'Not found'), h('p', {}, 'No view at this address. ', h('a', {href: '#/overview'}, 'Overview')));
}

// The namespace and label filters of a view, kept in its address.
function filters(parts, params, options) {
  const namespace = options.namespaces === false ? '' : currentNamespace(params);
  const controls = [];
  // Cluster-scoped kinds have no namespace to choose.
  if (options.namespaces !== false) {
    const select = h('select', {id: 'namespace', 'aria-label': 'Namespace', onchange: () => {
      if (select.value) params.set('ns', select.value);
      else params.delete('ns');
      setParams(parts, params);
    }});
    if (session.who.clusterAdmin) select.append(h('option', {value: ''}, 'All namespaces'));
    const known = new Set(namespacesOf());
    if (namespace) known.add(namespace);
    const fill = (names) => {
      for (const name of [...names].sort()) {
        if (![...select.options].some((o) => o.value === name)) select.append(h('option', {value: name}, name));
      }
      select.value = namespace;
    };
    fill(known);
    if (session.who.clusterAdmin) {
      // Read once, not watched: a browser has six connections to this
      // origin, and the view's own watches need them more.
      api('namespaces' + query({limit: 500})).then((list) => fill(list.items.map((n) => n.metadata.name)), () => {});
    }
    controls.push(h('label', {class: 'filter'}, 'Namespace ', select));
  }
  if (options.labels) {
    const labels = h('input', {id: 'labels', type: 'search', placeholder: 'app=web,tier!=db',
      value: params.get('l') || '', 'aria-label': 'Label selector', spellcheck: 'false'});
    const form = h('form', {class: 'filter', onsubmit: (event) => {
      event.preventDefault();
      if (labels.value.trim()) params.set('l', labels.value.trim());
      else params.delete('l');
      setParams(parts, params);
    }}, h('label', {for: 'labels'}, 'Labels '), labels, h('button', {type: 'submit'}, 'Filter'));
    controls.push(form);
  }
  return {namespace, labelSelector: params.get('l') || '', element: h('div', {class: 'filters'}, controls)};
}

function liveState(live) {
  if (live.error) return h('p', {class: 'error', role: 'alert'}, live.error);
  if (!live.loaded) return h('p', {class: 'muted'}, 'Loading…');
  return null;
}

// ---- Overview ------------------------------------------------------------

function overview(main, params) {
  const scope = filters(['overview'], params, {labels: false});
  const namespace = scope.namespace;
  main.append(h('h1', {}, 'Overview'), scope.element);
  const grid = h('div', {class: 'grid'});
  main.append(grid);

  const phases = ['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'];
  const podsCard = h('section', {class: 'card', id: 'pods-by-phase', 'aria-labelledby': 'pods-title'});
  const deploymentsCard = h('section', {class: 'card wide', id: 'deployments', 'aria-labelledby': 'deployments-title'});
  const eventsCard = h('section', {class: 'card wide', id: 'warnings', 'aria-labelledby': 'warnings-title'});

  if (session.who.clusterAdmin) {
    const nodesCard = h('section', {class: 'card wide', id: 'nodes', 'aria-labelledby': 'nodes-title'});
    grid.append(nodesCard);
    let usage = new Map();
    const nodes = new Live('nodes', {}, () => renderNodes());
    const renderNodes = () => {
      clear(nodesCard).append(h('h2', {id: 'nodes-title'}, 'Nodes'));
      const state = liveState(nodes);
      if (state) return nodesCard.append(state);
      const rows = nodes.sorted().map((node) => {
        const name = node.metadata.name;
        const allocatable = (node.status && node.status.allocatable) || {};
        const used = usage.get(name);
        const ready = nodeReady(node);
        return h('tr', {'data-node': name},
          h('th', {scope: 'row'}, objectLink('nodes', node)),
          h('td', {}, badge(ready ? 'Ready' : 'NotReady', ready ? 'ok' : 'bad'),
            node.spec && node.spec.unschedulable ? badge('Cordoned', 'warn') : null),
          h('td', {class: 'bars'},
            bar('Memory', used ? used.memoryBytes : null, quantity(allocatable.memory),
              used ? bytes(used.memoryBytes) + ' of ' + bytes(quantity(allocatable.memory)) : 'usage unknown'),
            bar('Instances', used ? used.instancesInUse : null, used ? used.instanceSlots : allocatable.instances,
              used ? used.instancesInUse + ' of ' + used.instanceSlots : 'usage unknown'),
            bar('CPU', used ? used.cpuCores : null, quantity(allocatable.cpu),
              used ? used.cpuCores.toFixed(2) + ' of ' + (allocatable.cpu || '?') + ' cores' : 'usage unknown')));
      });
      nodesCard.append(rows.length
        ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Node'), h('th', {scope: 'col'}, 'State'), h('th', {scope: 'col'}, 'Usage'))), h('tbody', {}, rows))
        : h('p', {class: 'muted'}, 'No nodes have joined.'));
    };
    const sample = async () => {
      try {
        const metrics = await api('nodemetrics');
        usage = new Map(metrics.items.map((item) => [item.name, item]));
        renderNodes();
      } catch (_) {
        // Usage is shown when the nodes answer; the list stands without it.
      }
    };
    sample();
    const timer = setInterval(sample, METRICS_PERIOD_MS);
    onLeave(() => {
      clearInterval(timer);
      nodes.stop();
    });
  }

  grid.append(podsCard, deploymentsCard, eventsCard);
  const pods = new Live('pods', {namespace}, () => {
    clear(podsCard).append(h('h2', {id: 'pods-title'}, 'Pods by phase'));
    const state = liveState(pods);
    if (state) return podsCard.append(state);
    const counts = Object.fromEntries(phases.map((p) => [p, 0]));
    for (const pod of pods.items.values()) {
      const phase = (pod.status && pod.status.phase) || 'Pending';
      counts[phase] = (counts[phase] || 0) + 1;
    }
    podsCard.append(h('dl', {class: 'phases'}, phases.map((phase) => [
      h('dt', {}, badge(phase, phaseTone(phase))),
      h('dd', {'data-phase': phase}, String(counts[phase])),
    ])), h('p', {}, h('a', {href: '#/list/pods' + (namespace ? '?ns=' + encodeURIComponent(namespace) : '')}, 'All ' + pods.items.size + ' pods')));
  });
  const deployments = new Live('deployments', {namespace}, () => {
    clear(deploymentsCard).append(h('h2', {id: 'deployments-title'}, 'Deployments'));
    // The revision drawn: how far behind the cluster the page is.
    deploymentsCard.dataset.revision = deployments.revision || '';
    const state = liveState(deployments);
    if (state) return deploymentsCard.append(state);
    const rows = deployments.sorted().map((d) => {
      const status = d.status || {};
      const state = rollout(d);
      return h('tr', {'data-deployment': d.metadata.namespace + '/' + d.metadata.name},
        h('th', {scope: 'row'}, objectLink('deployments', d)),
        h('td', {}, d.metadata.namespace),
        h('td', {class: 'num'}, (status.readyReplicas || 0) + '/' + (d.spec.replicas ?? 1)),
        h('td', {class: 'num'}, String(status.updatedReplicas || 0)),
        h('td', {}, badge(state, state === 'Complete' || state === 'At zero' ? 'ok' : state.startsWith('Failed') ? 'bad' : 'warn')));
    });
    deploymentsCard.append(rows.length
      ? h('table', {}, h('thead', {}, h('tr', {}, ['Deployment', 'Namespace', 'Ready', 'Up to date', 'Rollout'].map((t) => h('th', {scope: 'col'}, t)))), h('tbody', {}, rows))
      : h('p', {class: 'muted'}, 'No Deployments.'));
  });
  const warnings = new Live('events', {namespace, fieldSelector: 'type=Warning'}, () => {
    clear(eventsCard).append(h('h2', {id: 'warnings-title'}, 'Recent warnings'));
    const state = liveState(warnings);
    if (state) return eventsCard.append(state);
    const recent = [...warnings.items.values()]
      .sort((a, b) => String(b.lastTimestamp || '').localeCompare(String(a.lastTimestamp || '')))
      .slice(0, 10);
    eventsCard.append(recent.length ? eventTable(recent) : h('p', {class: 'muted'}, 'No warnings.'));
  });
  // When everything on it has been read and drawn once (User Timing, for
  // the dashboard's benchmark and the browser's own tools).
  const ready = setInterval(() => {
    const lives = [pods, deployments, warnings];
    if (lives.every((live) => live.loaded && !live.scheduled)) {
      clearInterval(ready);
      performance.mark('skiff:overview-drawn');
    }
  }, 10);
  onLeave(() => {
    clearInterval(ready);
    pods.stop();
    deployments.stop();
    warnings.stop();
  });
}

function eventTable(events) {
  return h('table', {class: 'events'},
    h('thead', {}, h('tr', {}, ['Last seen', 'Type', 'Reason', 'Object', 'Message', 'Count'].map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', {}, events.map((e) => {
      const involved = e.involvedObject || {};
      const target = BY_KIND.get(involved.kind);
      return h('tr', {},
        h('td', {}, age(e.lastTimestamp || e.metadata.creationTimestamp)),
        h('td', {}, badge(e.type || 'Normal', e.type === 'Warning' ? 'bad' : '')),
        h('td', {}, e.reason || ''),
        h('td', {}, target && involved.name
          ? h('a', {href: hrefOf(target.plural, involved.namespace, involved.name)}, (involved.kind || '').toLowerCase() + '/' + involved.name)
          : (involved.kind || '') + '/' + (involved.name || '')),
        h('td', {class: 'message'}, e.message || ''),
        h('td', {class: 'num'}, String(e.count || 1)));
    })));
}

// ---- Apply ---------------------------------------------------------------

// A manifest applied as `wasmctl apply` applies it, by the API's
// `manifests` call (which reads the YAML); previewed first with nothing
// written.
function applyView(main, params) {
  const scope = filters(['apply'], params, {labels: false});
  const text = h('textarea', {id: 'manifest', rows: 16, spellcheck: 'false', autocomplete: 'off',
    placeholder: 'apiVersion: skiff.dev/v1\nkind: Deployment\nmetadata: {name: web}\n...'});
  const preview = h('button', {type: 'button', id: 'preview'}, 'Preview (dry run)');
  const apply = h('button', {type: 'button', id: 'apply'}, 'Apply');
  const results = h('div', {id: 'apply-results', 'aria-live': 'polite'});
  append(main, [h('h1', {}, 'Apply a manifest'), scope.element,
    h('label', {for: 'manifest', class: 'block'}, 'YAML or JSON, one object or several separated by ---; objects that name no namespace go to ' +
      (scope.namespace || 'default') + '.'),
    text, h('div', {class: 'actions'}, preview, apply), results]);
  const send = async (dryRun) => {
    const response = await request('manifests' + query({dryRun: dryRun ? 'All' : '', namespace: scope.namespace || 'default'}), {
      method: 'POST', headers: {'Content-Type': 'application/yaml'}, body: text.value,
    });
    const result = await response.json();
    const failed = result.items.filter((item) => item.action === 'failed').length;
    clear(results).append(h('table', {},
      h('thead', {}, h('tr', {}, ['Object', 'Namespace', dryRun ? 'Would be' : 'Result', 'Changes'].map((t) => h('th', {scope: 'col'}, t)))),
      h('tbody', {}, result.items.map((item) => {
        const target = BY_KIND.get(item.kind);
        const label = item.kind.toLowerCase() + '/' + item.name;
        return h('tr', {'data-action': item.action, 'data-name': item.name},
          h('th', {scope: 'row'}, target && item.action !== 'failed' && !dryRun ? h('a', {href: hrefOf(target.plural, item.namespace, item.name)}, label) : label),
          h('td', {}, item.namespace || ''),
          h('td', {}, badge(item.action, item.action === 'failed' ? 'bad' : item.action === 'unchanged' ? '' : 'ok')),
          h('td', {class: 'message'}, item.action === 'failed' ? (item.code + ': ' + (item.message || '')) : (item.changes || []).join(', ')));
      }))));
    return {count: result.items.length, failed};
  };
  const run = async (button, dryRun) => {
    button.disabled = true;
    try {
      const {count, failed} = await send(dryRun);
      announce((dryRun ? 'Dry run: ' : 'Applied: ') + (count - failed) + ' of ' + count + ' objects' + (dryRun ? ' would apply' : ''), failed ? 'bad' : 'ok');
    } catch (error) {
      if (error.status !== 401) {
        clear(results).append(h('p', {class: 'error', role: 'alert'}, error.message));
      }
    } finally {
      button.disabled = false;
    }
  };
  preview.addEventListener('click', () => run(preview, true));
  apply.addEventListener('click', () => confirmThen('Apply this manifest' + (scope.namespace ? ' (default namespace ' + scope.namespace + ')' : '') + '?', 'Apply', () => run(apply, false)));
  text.focus();
}

// ---- Lists ---------------------------------------------------------------

const COLUMNS = {
  nodes: [
    ['State', (n) => [badge(nodeReady(n) ? 'Ready' : 'NotReady', nodeReady(n) ? 'ok' : 'bad'), n.spec && n.spec.unschedulable ? badge('Cordoned', 'warn') : null]],
    ['Memory', (n) => ((n.status || {}).allocatable || {}).memory || ''],
    ['Instances', (n) => String(((n.status || {}).allocatable || {}).instances ?? '')],
    ['CPU', (n) => ((n.status || {}).allocatable || {}).cpu || ''],
  ],
  pods: [
    ['Phase', (p) => badge((p.status || {}).phase || 'Pending', phaseTone((p.status || {}).phase))],
    ['Ready', (p) => { const c = condition(p, 'Ready'); return c && c.status === 'True' ? 'yes' : 'no'; }],
    ['Restarts', (p) => String((p.status || {}).restartCount || 0)],
    ['Node', (p) => (p.spec || {}).nodeName || ''],
    ['Reason', (p) => (p.status || {}).reason || ''],
  ],
  deployments: [
    ['Ready', (d) => ((d.status || {}).readyReplicas || 0) + '/' + ((d.spec || {}).replicas ?? 1)],
    ['Up to date', (d) => String((d.status || {}).updatedReplicas || 0)],
    ['Available', (d) => String((d.status || {}).availableReplicas || 0)],
    ['Rollout', (d) => rollout(d)],
  ],
  services: [
    ['Selector', (s) => Object.entries((s.spec || {}).selector || {}).map(([k, v]) => k + '=' + v).join(',')],
    ['Ports', (s) => ((s.spec || {}).ports || []).map((p) => p.port).join(', ')],
  ],
  routes: [
    ['Host', (r) => (r.spec || {}).host || ''],
  ],
  events: [
    ['Type', (e) => badge(e.type || 'Normal', e.type === 'Warning' ? 'bad' : '')],
    ['Reason', (e) => e.reason || ''],
    ['Object', (e) => ((e.involvedObject || {}).kind || '') + '/' + ((e.involvedObject || {}).name || '')],
    ['Message', (e) => e.message || ''],
  ],
};

function listView(main, info, params) {
  const scope = filters(['list', info.plural], params, {labels: true, namespaces: info.namespaced});
  const namespace = scope.namespace;
  const columns = COLUMNS[info.plural] || [];
  const showNamespace = info.namespaced && !namespace;
  const tbody = h('tbody', {});
  const state = h('div', {class: 'state'});
  const count = h('span', {class: 'count', id: 'count'});
  append(main, [h('h1', {}, info.title, ' ', count), scope.element, state,
    h('table', {class: 'list', id: 'list', 'data-kind': info.plural},
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Name'), showNamespace ? h('th', {scope: 'col'}, 'Namespace') : null,
        columns.map(([title]) => h('th', {scope: 'col'}, title)), h('th', {scope: 'col'}, 'Age'))),
      tbody)]);
  // Rows are kept by key and only the changed ones rebuilt: a list of a
  // thousand pods stays live under a stream of changes.
  const rows = new Map();
  // The rows' keys in order, to find where a new one goes.
  let order = [];
  const position = (key) => {
    let low = 0;
    let high = order.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (order[middle] < key) low = middle + 1;
      else high = middle;
    }
    return low;
  };
  const rowOf = (object) => h('tr', {'data-name': object.metadata.name, 'data-namespace': object.metadata.namespace || ''},
    h('th', {scope: 'row'}, objectLink(info.plural, object)),
    showNamespace ? h('td', {}, object.metadata.namespace) : null,
    columns.map(([, cell]) => h('td', {}, cell(object))),
    h('td', {}, age(object.metadata.creationTimestamp)));
  const live = new Live(info.plural, {namespace, labelSelector: scope.labelSelector}, (changed) => {
    clear(state);
    const problem = liveState(live);
    if (problem) state.append(problem);
    if (changed === null) {
      clear(tbody);
      rows.clear();
      order = [];
      for (const object of live.sorted()) {
        const row = rowOf(object);
        const key = Live.keyOf(object);
        rows.set(key, row);
        order.push(key);
        tbody.append(row);
      }
    } else {
      for (const key of changed) {
        const object = live.items.get(key);
        const old = rows.get(key);
        if (!object) {
          if (old) {
            old.remove();
            order.splice(position(key), 1);
          }
          rows.delete(key);
          continue;
        }
        const row = rowOf(object);
        rows.set(key, row);
        if (old) {
          old.replaceWith(row);
          continue;
        }
        // In order of key, as listed.
        const at = position(key);
        order.splice(at, 0, key);
        tbody.insertBefore(row, at + 1 < order.length ? rows.get(order[at + 1]) : null);
      }
    }
    count.textContent = live.loaded ? '(' + live.items.size + ')' : '';
    if (live.loaded && live.items.size === 0 && !live.error) state.append(h('p', {class: 'muted'}, 'None.'));
  });
  onLeave(() => live.stop());
}

// ---- Details -------------------------------------------------------------

function detailView(main, info, namespace, name) {
  const header = h('div', {class: 'detail-head'});
  const actions = h('div', {class: 'actions', id: 'actions'});
  const body = h('div', {class: 'detail'});
  main.append(header, actions, body);
  let built = false;
  const sections = {};
  const section = (id, title) => {
    const element = h('section', {class: 'card wide', id, 'aria-labelledby': id + '-title'});
    sections[id] = element;
    body.append(element);
    return (...children) => clear(element).append(h('h2', {id: id + '-title'}, title), ...children);
  };
  let summary; let conditionsOf; let ownerList; let yaml;
  const object = new Live(info.plural, {namespace, fieldSelector: 'metadata.name=' + name}, () => {
    const current = object.items.get((info.namespaced ? namespace : '') + '/' + name);
    append(clear(header), [h('h1', {}, info.kind + ' ', h('span', {class: 'name'}, name)),
      info.namespaced ? h('p', {class: 'muted'}, 'in namespace ' + namespace) : null]);
    const problem = liveState(object);
    if (problem) return header.append(problem);
    if (!current) {
      clear(actions);
      return header.append(h('p', {class: 'error', role: 'alert'}, info.kind + ' ' + name + ' does not exist (or no longer does).'));
    }
    if (!built) {
      built = true;
      summary = section('summary', 'Summary');
      if (info.plural === 'pods') podExtras(body, section, current);
      conditionsOf = section('conditions', 'Conditions');
      section('owners', 'Owner and dependents')();
      ownerList = h('div', {class: 'owner-list'});
      sections.owners.append(ownerList);
      dependents(sections.owners, info, current);
      eventsOf(section('events', 'Events'), info, current);
      yaml = section('yaml', 'YAML');
      renderActions(actions, info, current);
    }
    actions.dataset.revision = current.metadata.resourceVersion;
    updateActions(actions, info, current);
    summary(summaryOf(info, current));
    const conditions = (current.status && current.status.conditions) || [];
    conditionsOf(conditions.length
      ? h('table', {}, h('thead', {}, h('tr', {}, ['Type', 'Status', 'Reason', 'Message', 'Since'].map((t) => h('th', {scope: 'col'}, t)))),
        h('tbody', {}, conditions.map((c) => h('tr', {}, h('td', {}, c.type), h('td', {}, c.status), h('td', {}, c.reason || ''), h('td', {class: 'message'}, c.message || ''), h('td', {}, age(c.lastTransitionTime))))))
      : h('p', {class: 'muted'}, 'None.'));
    const refs = current.metadata.ownerReferences || [];
    clear(ownerList).append(h('h3', {}, 'Owned by'), refs.length
      ? h('ul', {}, refs.map((r) => {
        const target = BY_KIND.get(r.kind);
        return h('li', {}, target ? h('a', {href: hrefOf(target.plural, namespace, r.name)}, r.kind.toLowerCase() + '/' + r.name) : r.kind + '/' + r.name);
      }))
      : h('p', {class: 'muted'}, 'Nothing: nothing deletes it but a user.'));
    const shown = structuredClone(current);
    if (info.plural === 'secrets' && shown.data) {
      // Values stay out of sight until asked for, even for those who may read them.
      for (const key of Object.keys(shown.data)) shown.data[key] = '(hidden)';
    }
    yaml(h('pre', {class: 'yaml', tabindex: '0', 'aria-label': 'YAML'}, toYaml(shown)));
    if (info.plural === 'secrets') secretValues(sections.yaml, current);
  });
  onLeave(() => object.stop());
}

function summaryOf(info, object) {
  const meta = object.metadata;
  const rows = [['Created', age(meta.creationTimestamp) + ' ago (' + (meta.creationTimestamp || '') + ')'], ['UID', meta.uid || '']];
  const labels = Object.entries(meta.labels || {}).map(([k, v]) => k + '=' + v);
  rows.push(['Labels', labels.length ? labels.map((l) => h('code', {class: 'label'}, l)) : '—']);
  const annotations = Object.entries(meta.annotations || {});
  rows.push(['Annotations', annotations.length ? h('ul', {class: 'plain'}, annotations.map(([k, v]) => h('li', {}, h('code', {}, k), ': ', v))) : '—']);
  const spec = object.spec || {};
  const status = object.status || {};
  if (info.plural === 'pods') {
    const resources = spec.resources || {};
    rows.push(['Phase', badge(status.phase || 'Pending', phaseTone(status.phase))]);
    rows.push(['Node', spec.nodeName ? h('a', {href: hrefOf('nodes', '', spec.nodeName)}, spec.nodeName) : 'not yet placed']);
    rows.push(['Image', spec.image || '']);
    rows.push(['Restarts', String(status.restartCount || 0)]);
    rows.push(['Last failure', status.reason || status.message
      ? [status.reason || '', status.message ? ': ' + status.message : '', status.exitCode !== undefined ? ' (exit code ' + status.exitCode + ')' : '']
      : 'none']);
    rows.push(['Limits', h('dl', {class: 'limits'},
      [['Memory', resources.memory], ['Fuel', resources.fuel], ['Timeout', resources.timeout], ['Instances', resources.maxInstances], ['CPU', resources.cpu]]
        .filter(([, v]) => v !== undefined && v !== null)
        .map(([k, v]) => [h('dt', {}, k), h('dd', {'data-limit': k.toLowerCase()}, String(v))]))]);
  } else if (info.plural === 'deployments') {
    rows.push(['Replicas', String(spec.replicas ?? 1) + ' wanted, ' + (status.readyReplicas || 0) + ' ready, ' + (status.availableReplicas || 0) + ' available']);
    rows.push(['Rollout', rollout(object) + (status.revision ? ' (revision ' + status.revision + ')' : '')]);
    if (spec.autoscaling) {
      const a = spec.autoscaling;
      rows.push(['Autoscaling', 'from ' + (a.minReplicas ?? 0) + ' to ' + (a.maxReplicas ?? '?') + ', ' + (a.targetConcurrency ?? '?') + ' in flight a pod']);
    }
    rows.push(['Image', ((spec.template || {}).spec || {}).image || '']);
  } else if (info.plural === 'nodes') {
    rows.push(['Ready', nodeReady(object) ? 'yes' : 'no']);
    rows.push(['Schedulable', spec.unschedulable ? 'no (cordoned)' : 'yes']);
    const allocatable = status.allocatable || {};
    rows.push(['Allocatable', Object.entries(allocatable).map(([k, v]) => k + ' ' + v).join(', ')]);
  }
  return h('table', {class: 'summary'}, h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', {scope: 'row'}, k), h('td', {}, v)))));
}

function dependents(element, info, object) {
  const list = h('div', {class: 'dependents'});
  element.append(list);
  let live = null;
  let filter = () => true;
  if (info.plural === 'deployments') {
    const selector = Object.entries(((object.spec || {}).selector || {}).matchLabels || {}).map(([k, v]) => k + '=' + v).join(',');
    live = new Live('pods', {namespace: object.metadata.namespace, labelSelector: selector}, render);
    filter = (pod) => (pod.metadata.ownerReferences || []).some((r) => r.uid === object.metadata.uid);
  } else if (info.plural === 'nodes') {
    live = new Live('pods', {fieldSelector: 'spec.nodeName=' + object.metadata.name}, render);
  } else if (info.plural === 'services') {
    const selector = Object.entries((object.spec || {}).selector || {}).map(([k, v]) => k + '=' + v).join(',');
    if (selector) live = new Live('pods', {namespace: object.metadata.namespace, labelSelector: selector}, render);
  }
  function render() {
    const pods = live.sorted().filter(filter);
    const problem = liveState(live);
    clear(list).append(h('h3', {}, 'Pods'), problem || (pods.length
      ? h('table', {id: 'dependents'}, h('thead', {}, h('tr', {}, ['Pod', 'Phase', 'Node', 'Restarts'].map((t) => h('th', {scope: 'col'}, t)))),
        h('tbody', {}, pods.map((p) => h('tr', {'data-name': p.metadata.name},
          h('th', {scope: 'row'}, objectLink('pods', p)),
          h('td', {}, badge((p.status || {}).phase || 'Pending', phaseTone((p.status || {}).phase))),
          h('td', {}, (p.spec || {}).nodeName || ''),
          h('td', {class: 'num'}, String((p.status || {}).restartCount || 0))))))
      : h('p', {class: 'muted'}, 'None.')));
  }
  if (live) onLeave(() => live.stop());
  else list.append(h('h3', {}, 'Dependents'), h('p', {class: 'muted'}, 'None that the dashboard follows.'));
}

function eventsOf(fill, info, object) {
  const fields = 'involvedObject.kind=' + info.kind + ',involvedObject.name=' + object.metadata.name;
  const namespace = info.namespaced ? object.metadata.namespace : '';
  if (!info.namespaced && !session.who.clusterAdmin) return fill(h('p', {class: 'muted'}, 'Not visible to this token.'));
  const live = new Live('events', {namespace, fieldSelector: fields}, () => {
    const problem = liveState(live);
    const events = [...live.items.values()].sort((a, b) => String(b.lastTimestamp || '').localeCompare(String(a.lastTimestamp || '')));
    fill(problem || (events.length ? eventTable(events) : h('p', {class: 'muted'}, 'None.')));
  });
  onLeave(() => live.stop());
}

function secretValues(element, secret) {
  if (!mayWrite(secret.metadata.namespace)) return;
  const keys = Object.keys(secret.data || {});
  if (!keys.length || element.querySelector('#reveal')) return;
  const out = h('dl', {class: 'secret-values'});
  element.append(h('button', {type: 'button', id: 'reveal', onclick: (event) => {
    event.target.remove();
    for (const key of keys) {
      let text;
      try {
        const raw = atob(secret.data[key]);
        try {
          text = new TextDecoder('utf-8', {fatal: true}).decode(Uint8Array.from(raw, (c) => c.charCodeAt(0)));
        } catch (_) {
          text = '(' + raw.length + ' bytes, not text)';
        }
      } catch (_) {
        text = '(not base64)';
      }
      out.append(h('dt', {}, key), h('dd', {}, h('code', {}, text)));
    }
  }}, 'Reveal values'), out);
}

// ---- Pods: logs and request rate -----------------------------------------

function podExtras(body, section, pod) {
  const namespace = pod.metadata.namespace;
  const name = pod.metadata.name;
  const fillLogs = section('logs', 'Logs');
  const output = h('pre', {class: 'logs', id: 'logs', tabindex: '0', 'aria-label': 'Logs', 'aria-live': 'off'});
  const follow = h('button', {type: 'button', id: 'follow', 'aria-pressed': 'false'}, 'Follow');
  const note = h('p', {class: 'muted', id: 'logs-state'});
  fillLogs(h('div', {class: 'log-controls'}, follow, note), output);
  let stream = null;
  const stop = () => {
    if (stream) stream.abort();
    stream = null;
    follow.textContent = 'Follow';
    follow.setAttribute('aria-pressed', 'false');
  };
  const path = 'namespaces/' + encodeURIComponent(namespace) + '/pods/' + encodeURIComponent(name) + '/log';
  const start = async (following) => {
    stop();
    const controller = new AbortController();
    stream = following ? controller : null;
    if (following) {
      follow.textContent = 'Stop following';
      follow.setAttribute('aria-pressed', 'true');
    }
    clear(output);
    note.textContent = following ? 'Following…' : '';
    try {
      const response = await request(path + query({tailLines: 200, follow: following ? 'true' : ''}),
        {headers: {Accept: 'text/plain'}, signal: controller.signal});
      let lines = 0;
      // Lines are drawn once a frame, however fast a guest prints, and
      // only the latest LOG_CHARS_KEPT characters are kept.
      let pending = [];
      const draw = () => {
        if (!pending.length) return;
        const atEnd = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
        output.append(document.createTextNode(pending.join('')));
        pending = [];
        let kept = output.textContent.length;
        while (kept > LOG_CHARS_KEPT && output.firstChild) {
          kept -= output.firstChild.textContent.length;
          output.firstChild.remove();
        }
        if (atEnd) output.scrollTop = output.scrollHeight;
      };
      await readLines(response, (line) => {
        lines++;
        if (!pending.length) requestAnimationFrame(draw);
        pending.push(line + '\n');
      });
      draw();
      note.textContent = following ? 'The log ended.' : (lines ? '' : 'No output yet.');
    } catch (error) {
      if (error.name !== 'AbortError') note.textContent = error.message;
    } finally {
      if (stream === controller) stop();
    }
  };
  follow.addEventListener('click', () => (stream ? stop() : start(true)));
  start(false);
  onLeave(stop);

  const fillChart = section('requests', 'Requests');
  const rateChart = h('div', {class: 'chart', id: 'request-chart'});
  const timeChart = h('div', {class: 'chart', id: 'response-chart'});
  const caption = h('p', {class: 'muted', id: 'requests-state'});
  fillChart(h('div', {class: 'charts'}, rateChart, timeChart), caption);
  const rates = [];
  const times = [];
  const sample = async () => {
    try {
      const metrics = await api('namespaces/' + encodeURIComponent(namespace) + '/podmetrics');
      const mine = metrics.items.find((item) => item.name === name);
      rates.push(mine ? mine.requestsPerSecond : null);
      times.push(mine && typeof mine.meanResponseSeconds === 'number' ? mine.meanResponseSeconds * 1000 : null);
      if (rates.length > CHART_SAMPLES) rates.shift();
      if (times.length > CHART_SAMPLES) times.shift();
      drawChart(rateChart, rates, 'requests a second', (v) => v.toFixed(1) + '/s');
      drawChart(timeChart, times, 'mean time to answer', (v) => v.toFixed(1) + ' ms');
      caption.textContent = mine
        ? 'Sampled every ' + METRICS_PERIOD_MS / 1000 + ' s since this page opened: now ' + mine.requestsPerSecond.toFixed(1) +
          ' requests a second' + (typeof mine.meanResponseSeconds === 'number' ? ', answered in ' + (mine.meanResponseSeconds * 1000).toFixed(1) + ' ms on average.' : '.')
        : 'The pod\'s node reports no figures for it yet.';
    } catch (error) {
      caption.textContent = 'Request figures are unavailable: ' + error.message;
    }
  };
  sample();
  const timer = setInterval(sample, METRICS_PERIOD_MS);
  onLeave(() => clearInterval(timer));
}

function drawChart(element, samples, title, format) {
  const width = 600;
  const height = 120;
  const known = samples.filter((s) => s !== null);
  const top = Math.max(known.length ? 0 : 1, ...known) || 1;
  const chart = svg('svg', {viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': title + ': ' + known.map(format).join(', ')});
  chart.append(svg('line', {x1: 0, y1: height - 1, x2: width, y2: height - 1, class: 'axis'}));
  const step = width / (CHART_SAMPLES - 1);
  const points = samples.map((s, i) => s === null ? null : `${(i * step).toFixed(1)},${(height - 4 - (s / top) * (height - 20)).toFixed(1)}`).filter(Boolean);
  if (points.length) chart.append(svg('polyline', {points: points.join(' '), class: 'line'}));
  const label = svg('text', {x: 4, y: 12, class: 'label'});
  label.textContent = title + (known.length ? ', peak ' + format(Math.max(...known)) : '');
  chart.append(label);
  clear(element).append(chart);
}

// ---- Actions -------------------------------------------------------------

function renderActions(element, info, object) {
  clear(element);
  const namespace = object.metadata.namespace || '';
  const allowed = info.namespaced ? mayWrite(namespace) : session.who.clusterAdmin;
  // A token that may not write is offered nothing to press.
  if (!allowed || info.plural === 'events' || (info.plural === 'resourcequotas' && !session.who.clusterAdmin)) return;
  const run = async (button, label, work) => {
    button.disabled = true;
    try {
      await work();
      announce(label, 'ok');
    } catch (error) {
      if (error.status !== 401) announce(error.message, 'bad');
    } finally {
      button.disabled = false;
    }
  };
  const path = objectPath(info.plural, namespace, object.metadata.name);
  const patch = (body) => api(path, {method: 'PATCH', contentType: 'application/merge-patch+json', body});
  if (info.plural === 'deployments') {
    const replicas = h('input', {id: 'scale-replicas', type: 'number', min: 0, max: 10000, value: (object.spec || {}).replicas ?? 1, 'aria-label': 'Replicas'});
    const scale = h('button', {type: 'submit', id: 'scale'}, 'Scale');
    element.append(h('form', {class: 'inline', onsubmit: (event) => {
      event.preventDefault();
      const wanted = Number(replicas.value);
      if (!Number.isInteger(wanted) || wanted < 0) return announce('Replicas: a whole number from 0', 'bad');
      run(scale, 'deployment/' + object.metadata.name + ' scaled to ' + wanted, () => patch({spec: {replicas: wanted}}));
    }}, h('label', {for: 'scale-replicas'}, 'Replicas '), replicas, scale));
    const pause = h('button', {type: 'button', id: 'pause'}, 'Pause rollout');
    pause.addEventListener('click', () => {
      const paused = pause.dataset.paused !== 'true';
      run(pause, 'deployment/' + object.metadata.name + (paused ? ' paused' : ' resumed'), () => patch({spec: {paused}}));
    });
    const undo = h('button', {type: 'button', id: 'undo'}, 'Undo rollout');
    undo.addEventListener('click', async () => {
      // What it goes back to is shown first: an older template may run
      // another image, as another service account.
      let back;
      try {
        back = await previousRevision(path);
      } catch (error) {
        if (error.status !== 401) announce(error.message, 'bad');
        return;
      }
      const spec = back.revision.template.spec || {};
      confirmThen('Roll deployment ' + object.metadata.name + ' back to revision ' + back.revision.revision +
        ': image ' + (spec.image || '?') + ', service account ' + (spec.serviceAccountName || 'default') + '?', 'Roll back',
      () => run(undo, 'deployment/' + object.metadata.name + ' rolled back to revision ' + back.revision.revision,
        () => rollBackTo(path, back.revision)));
    });
    element.append(pause, undo);
  }
  if (info.plural === 'nodes') {
    const cordon = h('button', {type: 'button', id: 'cordon'}, 'Cordon');
    cordon.addEventListener('click', () => {
      const unschedulable = cordon.dataset.cordoned !== 'true';
      run(cordon, 'node/' + object.metadata.name + (unschedulable ? ' cordoned' : ' uncordoned'), () => patch({spec: {unschedulable}}));
    });
    const drain = h('button', {type: 'button', id: 'drain'}, 'Drain');
    drain.addEventListener('click', () => confirmThen('Drain node ' + object.metadata.name + '? Its pods are moved to other nodes.', 'Drain',
      () => run(drain, 'node/' + object.metadata.name + ' drained', () => drainNode(object.metadata.name))));
    element.append(cordon, drain);
  }
  if (info.plural !== 'namespaces' || session.who.clusterAdmin) {
    const remove = h('button', {type: 'button', id: 'delete', class: 'danger'}, 'Delete');
    remove.addEventListener('click', () => confirmThen('Delete ' + info.kind.toLowerCase() + ' ' + object.metadata.name + (namespace ? ' in namespace ' + namespace : '') + '?', 'Delete',
      () => run(remove, info.kind.toLowerCase() + '/' + object.metadata.name + ' deleted', () => api(path, {method: 'DELETE'}))));
    element.append(remove);
  }
}

function updateActions(element, info, object) {
  const pause = element.querySelector('#pause');
  if (pause) {
    const paused = Boolean((object.spec || {}).paused);
    pause.dataset.paused = String(paused);
    pause.textContent = paused ? 'Resume rollout' : 'Pause rollout';
  }
  const cordon = element.querySelector('#cordon');
  if (cordon) {
    const cordoned = Boolean((object.spec || {}).unschedulable);
    cordon.dataset.cordoned = String(cordoned);
    cordon.textContent = cordoned ? 'Uncordon' : 'Cordon';
  }
}

// As `wasmctl rollout undo`: the revision before the current one, and
// the Deployment as read (the write is conditional on it).
async function previousRevision(path) {
  const deployment = await api(path);
  const status = deployment.status || {};
  const revision = (status.history || [])
    .filter((r) => status.revision === undefined || r.revision < status.revision)
    .sort((a, b) => b.revision - a.revision)[0];
  if (!revision) throw new ApiError(400, 'this Deployment has no revision before the current one');
  return {deployment, revision};
}

// Writes the revision that was asked about, whole and conditional on a
// fresh read: the controllers change the Deployment's status while the
// question is open, and a write conditional on the first read would fail
// on that alone. If what the revision before the current one is has changed
// meanwhile, nothing is written: the answer was to another question.
async function rollBackTo(path, asked) {
  for (let attempt = 0; ; attempt++) {
    const now = await previousRevision(path);
    if (now.revision.revision !== asked.revision || JSON.stringify(now.revision.template) !== JSON.stringify(asked.template)) {
      throw new ApiError(409, 'the Deployment changed while the question was open: undo again to see what it goes back to now');
    }
    now.deployment.spec.template = asked.template;
    try {
      return await api(path, {method: 'PUT', contentType: 'application/json', body: now.deployment});
    } catch (error) {
      if (error.status !== 409 || attempt >= 4) throw error;
    }
  }
}

// As `wasmctl drain`: cordon, then every pod off the node: owned pods are
// deleted (their controller replaces them), bare ones recreated unbound.
async function drainNode(node) {
  await api('nodes/' + encodeURIComponent(node), {method: 'PATCH', contentType: 'application/merge-patch+json', body: {spec: {unschedulable: true}}});
  let next = null;
  const pods = [];
  do {
    const page = await api('pods' + query({fieldSelector: 'spec.nodeName=' + node, limit: 500, continue: next}));
    pods.push(...page.items);
    next = page.metadata.continue;
  } while (next);
  for (const pod of pods) {
    const path = objectPath('pods', pod.metadata.namespace, pod.metadata.name);
    await api(path, {method: 'DELETE'});
    if (!(pod.metadata.ownerReferences || []).length) {
      const copy = {apiVersion: pod.apiVersion, kind: pod.kind, metadata: {name: pod.metadata.name, namespace: pod.metadata.namespace,
        labels: pod.metadata.labels, annotations: pod.metadata.annotations}, spec: Object.assign({}, pod.spec)};
      delete copy.spec.nodeName;
      await api(collectionPath('pods', pod.metadata.namespace), {method: 'POST', contentType: 'application/json', body: copy});
    }
  }
}

// A modal question, answered from the keyboard as well (Escape cancels).
function confirmThen(question, verb, then) {
  const cancel = h('button', {type: 'button', id: 'confirm-cancel'}, 'Cancel');
  const yes = h('button', {type: 'button', id: 'confirm-yes', class: 'danger'}, verb);
  const dialog = h('dialog', {id: 'confirm', 'aria-labelledby': 'confirm-question'},
    h('p', {id: 'confirm-question'}, question), h('div', {class: 'buttons'}, cancel, yes));
  cancel.addEventListener('click', () => dialog.close('cancel'));
  yes.addEventListener('click', () => dialog.close('yes'));
  dialog.addEventListener('close', () => {
    const answer = dialog.returnValue;
    dialog.remove();
    if (answer === 'yes') then();
  });
  document.body.append(dialog);
  dialog.showModal();
  cancel.focus();
}

// ---- Start ---------------------------------------------------------------

window.addEventListener('hashchange', route);
// Leaving the page ends its watches at once: a page kept for the back
// button would otherwise hold its connections, and a browser allows six
// to one origin, which the next page then waits for.
window.addEventListener('pagehide', leave);
window.addEventListener('pageshow', (event) => {
  if (event.persisted && session.who) route();
});
document.addEventListener('keydown', (event) => {
  // `/` jumps to the label filter, as in many consoles.
  if (event.key === '/' && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
    const labels = document.getElementById('labels');
    if (labels) {
      event.preventDefault();
      labels.focus();
    }
  }
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  signIn(saved).then((signed) => {
    if (!signed.ok) signOut(signed.message);
  });
} else {
  showSignIn();
}
