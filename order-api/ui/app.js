// The console: a small single-page app over the same /v1 API every client uses. The API
// token is kept in this tab's sessionStorage only (never in a URL or a cookie) and sent as
// `Authorization: Bearer`; what a token may see is the API's decision, not the console's.
// Views: sign-in, the orders table (#/orders), a form to order servers (#/new), an order's
// page (#/orders/<id>) with its
// timeline followed live through the order's event stream, the vendors and the hosts serving
// them (#/vendors), and for the operator the orphan sweep's findings (#/orphans), what reached
// the dead-letter queue (#/dead-letters) and a dashboard of order-api's /metrics drawn as
// charts (#/dashboard).

const TOKEN_KEY = 'provisioner-console-token';
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const STATUSES = ['pending', 'queued', 'provisioning', 'active', 'partially_active', 'failed',
  'cancelling', 'cancelled', 'deleting', 'deleted'];
const SETTLED = ['active', 'partially_active', 'failed', 'cancelled', 'deleted'];
const CANCELLABLE = ['pending', 'queued', 'provisioning'];
const DELETABLE = ['active', 'partially_active'];
const STREAM_RETRY_MS = 5000;

// Whom the token speaks for (`GET /v1/me`), once signed in.
let caller = null;

// The view being shown stops its timers and streams through this when it is left.
let leaving = new AbortController();

/** An element with attributes and children (strings become text, never HTML). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** `items` flattened, without the absent ones (for `append` and `replaceChildren`). */
function nodes(items) {
  return items.flat(Infinity).filter((item) => item !== null && item !== undefined && item !== false);
}

/** Replaces the main region's content and moves focus there, for screen readers. */
function show(title, ...content) {
  document.title = `${title} · Provisioner console`;
  main.replaceChildren(...nodes(content));
  main.focus();
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `the API answered ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Calls the API with the session's token; a refused token signs out. */
async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Accept: 'application/json', Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`, ...options.headers },
  });
  if (response.status === 401) {
    signOut('The token was refused: sign in again.');
    throw new ApiError(401, null);
  }
  const body = (response.headers.get('content-type') || '').includes('json')
    ? await response.json() : null;
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function alertBox(error) {
  return el('p', { class: 'alert', role: 'alert' }, error.message);
}

function statusBadge(status) {
  return el('span', { class: `status status-${status}` }, status.replace('_', ' '));
}

/** "3 min ago", with the exact time in a title and a machine-readable datetime. */
function age(at) {
  const seconds = Math.max(0, (Date.now() - Date.parse(at)) / 1000);
  const text = seconds < 60 ? `${Math.floor(seconds)} s ago`
    : seconds < 3600 ? `${Math.floor(seconds / 60)} min ago`
      : seconds < 86400 ? `${Math.floor(seconds / 3600)} h ago`
        : `${Math.floor(seconds / 86400)} d ago`;
  return el('time', { datetime: at, title: new Date(at).toLocaleString() }, text);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  caller = null;
  nav.hidden = true;
  signInView(message);
}

function signInView(message) {
  leaving.abort();
  const input = el('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true });
  const form = el('form', { class: 'signin', onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await whoAmI();
      if (!location.hash.startsWith('#/orders')) location.hash = '#/orders';
      else route();
    } catch (error) {
      if (error.status !== 401) form.prepend(alertBox(error));
    }
  } },
  el('label', { for: 'token' }, 'API token', input),
  el('button', { class: 'primary', type: 'submit' }, 'Sign in'));
  main.setAttribute('aria-busy', 'false');
  show('Sign in',
    el('h1', {}, 'Sign in'),
    message ? el('p', { class: 'alert', role: 'alert' }, message) : null,
    el('p', { class: 'note' }, 'The token stays in this tab only, until you sign out or close it.'),
    form);
  input.focus();
}

/** Who the token speaks for (`GET /v1/me`), shown in the bar. */
async function whoAmI() {
  const me = await api('/v1/me');
  caller = me;
  document.getElementById('nav-orphans').hidden = !me.admin;
  document.getElementById('nav-dead-letters').hidden = !me.admin;
  document.getElementById('nav-dashboard').hidden = !me.admin;
  who.textContent = me.admin ? 'Signed in as the operator' : `Signed in as tenant ${me.tenant}`;
  nav.hidden = false;
  return me;
}

async function ordersView(params) {
  const query = new URLSearchParams();
  for (const name of ['status', 'vendor', 'cursor']) {
    if (params.get(name)) query.set(name, params.get(name));
  }
  query.set('limit', '50');
  const status = el('select', { id: 'filter-status', name: 'status' },
    el('option', { value: '' }, 'any'),
    STATUSES.map((s) => el('option', { value: s, selected: params.get('status') === s }, s.replace('_', ' '))));
  const vendor = el('input', { id: 'filter-vendor', name: 'vendor', value: params.get('vendor') || '', size: 14 });
  const filters = el('form', { class: 'inline', onsubmit: (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (status.value) next.set('status', status.value);
    if (vendor.value.trim()) next.set('vendor', vendor.value.trim());
    location.hash = `#/orders?${next}`;
  } },
  el('label', { for: 'filter-status' }, 'Status', status),
  el('label', { for: 'filter-vendor' }, 'Vendor', vendor),
  el('button', { type: 'submit' }, 'Filter'));
  const table = el('div', { class: 'table-wrap', 'aria-live': 'polite' });
  const more = el('p');
  show('Orders', el('h1', {}, 'Orders'), filters, table, more);

  const signal = leaving.signal;
  let drawn;
  const firstDrawn = new Promise((resolve) => { drawn = resolve; });
  // The orders shown, updated in place by the stream of the caller's orders.
  let shown = [];
  // What the stream said of each order since the last list read: a list answer older than
  // it (the read was under way when the change came) does not undo it.
  const heard = new Map();
  const newer = (a, b) => Date.parse(a.updated_at) >= Date.parse(b.updated_at);
  // Each list read has a number; only the latest one's answer is drawn.
  let reads = 0;
  const draw = () => table.replaceChildren(ordersTable(shown));
  const refresh = async () => {
    const read = ++reads;
    let page;
    try {
      page = await api(`/v1/orders?${query}`);
    } catch (error) {
      if (read === reads) table.replaceChildren(alertBox(error));
      drawn();
      return;
    }
    if (read !== reads) return;
    shown = page.orders.map((order) => {
      const latest = heard.get(order.id);
      return latest && newer(latest, order) ? latest : order;
    });
    heard.clear();
    draw();
    drawn();
    more.replaceChildren();
    if (page.next_cursor) {
      const next = new URLSearchParams(query);
      next.set('cursor', page.next_cursor);
      next.delete('limit');
      more.append(el('a', { href: `#/orders?${next}` }, 'Older orders'));
    }
  };
  // A changed order is redrawn where it is; an order not shown joins the first page when it
  // matches the filters and is newer than the page's last (ids sort by creation time), in
  // its place.
  const changed = (order) => {
    if (heard.size < 1000) heard.set(order.id, order);
    const at = shown.findIndex((o) => o.id === order.id);
    if (at >= 0) {
      if (!newer(order, shown[at])) return;
      shown[at] = order;
    } else if (!query.get('cursor') && (!query.get('status') || query.get('status') === order.status)
      && (!query.get('vendor') || query.get('vendor') === order.vendor)
      && (shown.length < 50 || order.id > shown[shown.length - 1].id)) {
      shown = [...shown, order].sort((a, b) => (a.id < b.id ? 1 : -1)).slice(0, 50);
    } else return;
    draw();
  };
  // The page follows the caller's orders through `GET /v1/events`: it lists them once the
  // stream is open (`ready`), applies each change, and lists again when news was missed. A
  // stream that ends or is refused is opened again after a pause, listing meanwhile.
  const follow = async () => {
    try {
      while (!signal.aborted) {
        try {
          await readEvents('/v1/events', {}, signal, (kind, data) => {
            if (kind === 'ready' || kind === 'resync') refresh();
            else if (kind === 'order') changed(JSON.parse(data));
          });
        } catch (error) {
          if (signal.aborted || error.status === 401) return;
        }
        await new Promise((resolve) => setTimeout(resolve, STREAM_RETRY_MS));
        if (!signal.aborted) await refresh();
      }
    } finally {
      // However the stream ended, the view does not stay busy.
      drawn();
    }
  };
  follow();
  await firstDrawn;
}

function ordersTable(orders) {
  if (orders.length === 0) return el('p', {}, 'No orders here.');
  return el('table', {},
    el('caption', {}, `${orders.length} orders, newest first`),
    el('thead', {}, el('tr', {},
      el('th', { scope: 'col' }, 'Name'),
      caller?.admin ? el('th', { scope: 'col' }, 'Tenant') : null,
      el('th', { scope: 'col' }, 'Status'),
      el('th', { scope: 'col' }, 'Vendor'), el('th', { scope: 'col' }, 'Region'),
      el('th', { scope: 'col', class: 'optional' }, 'Servers'), el('th', { scope: 'col' }, 'Age'))),
    el('tbody', {}, orders.map((order) => el('tr', { 'data-order': order.id },
      el('td', {}, el('a', { href: `#/orders/${order.id}` }, order.name)),
      caller?.admin ? el('td', {}, order.tenant) : null,
      el('td', {}, statusBadge(order.status)),
      el('td', {}, order.vendor), el('td', {}, order.region),
      el('td', { class: 'optional' }, order.count ?? 1),
      el('td', {}, age(order.created_at))))));
}

async function orderView(id) {
  let order;
  try {
    order = await api(`/v1/orders/${encodeURIComponent(id)}`);
  } catch (error) {
    show('Order', el('h1', {}, 'Order'), alertBox(error), el('p', {}, el('a', { href: '#/orders' }, 'All orders')));
    return;
  }
  const heading = el('h1', {}, order.name);
  const facts = el('dl', { class: 'facts' });
  const servers = el('div');
  const actions = el('div', { class: 'actions' });
  const timeline = el('ol', { class: 'timeline', 'aria-live': 'polite', 'aria-label': 'What happened' });
  show(order.name, heading, facts, actions, servers, el('h2', {}, 'Timeline'), timeline);

  const render = (current) => {
    order = { ...order, ...current };
    const server = order.server;
    facts.replaceChildren(...nodes([
      el('dt', {}, 'Status'), el('dd', { id: 'order-status' }, statusBadge(order.status)),
      el('dt', {}, 'Order id'), el('dd', {}, order.id),
      el('dt', {}, 'Vendor and region'), el('dd', {}, `${order.vendor} ${order.region}`),
      el('dt', {}, 'Size and image'), el('dd', {}, `${order.size}, ${order.image}`),
      server ? [el('dt', {}, 'Addresses'), el('dd', { id: 'order-addresses' },
        [server.ipv4, server.ipv6].filter(Boolean).join(', ') || 'not assigned yet')] : null,
      order.fault ? [el('dt', {}, 'Fault'), el('dd', { class: 'alert' },
        `${order.fault.message} (${order.fault.code}; ${order.fault.retryable
          ? 'ordering it again may work' : 'ordering the same again will fail the same way'})`)] : null,
      el('dt', {}, 'Ordered'), el('dd', {}, age(order.created_at))]));
    servers.replaceChildren();
    if (order.servers) {
      servers.append(el('h2', {}, 'Servers'), el('div', { class: 'table-wrap' }, el('table', {},
        el('thead', {}, el('tr', {}, ['Name', 'Status', 'Candidate', 'Vendor and region', 'Addresses']
          .map((title) => el('th', { scope: 'col' }, title)))),
        el('tbody', {}, order.servers.map((s) => el('tr', {},
          el('td', {}, s.name), el('td', {}, statusBadge(s.status)), el('td', {}, s.candidate),
          el('td', {}, `${s.vendor} ${s.region}`),
          el('td', {}, s.server ? [s.server.ipv4, s.server.ipv6].filter(Boolean).join(', ') : '')))))));
    }
    actions.replaceChildren();
    if (CANCELLABLE.includes(order.status)) {
      actions.append(el('button', { class: 'danger', type: 'button', onclick: () => act('cancel') }, 'Cancel the order'));
    }
    if (DELETABLE.includes(order.status)) {
      actions.append(el('button', { class: 'danger', type: 'button', onclick: () => act('delete') }, 'Delete the servers'));
    }
  };
  const act = async (what) => {
    const question = what === 'cancel'
      ? `Cancel order ${order.name}? Any server it made is deleted.`
      : `Delete the servers of order ${order.name}? This cannot be undone.`;
    if (!window.confirm(question)) return;
    try {
      const answer = what === 'cancel'
        ? await api(`/v1/orders/${order.id}/cancel`, { method: 'POST' })
        : await api(`/v1/orders/${order.id}`, { method: 'DELETE' });
      render(answer);
      follow();
    } catch (error) {
      actions.append(alertBox(error));
    }
  };
  const seen = new Set();
  const addEvent = (event) => {
    if (event.seq !== undefined) {
      if (seen.has(event.seq)) return;
      seen.add(event.seq);
    }
    timeline.append(el('li', {}, el('time', { datetime: event.at }, new Date(event.at).toLocaleTimeString()),
      statusBadge(event.status), ' ', event.message));
  };
  render(order);
  (order.events || []).forEach((event, index) => addEvent({ seq: index + 1, ...event }));

  // The order's event stream, read with fetch so the token goes in a header, not the URL.
  let following = false;
  const follow = async () => {
    if (following) return;
    following = true;
    const signal = leaving.signal;
    try {
      await readEvents(`/v1/orders/${order.id}/events`, { 'Last-Event-ID': String(seen.size) }, signal,
        (kind, data) => {
          if (kind === 'order-event') {
            const event = JSON.parse(data);
            addEvent(event);
            render({ status: event.status });
          } else if (kind === 'end') {
            render(JSON.parse(data));
          }
        });
      // The stream ends once the order settled: read it whole once more, for its servers.
      if (!signal.aborted) render(await api(`/v1/orders/${order.id}`));
    } catch (error) {
      if (!signal.aborted) timeline.after(alertBox(error));
    } finally {
      following = false;
    }
  };
  if (!SETTLED.includes(order.status)) follow();
}

/**
 * Reads the Server-Sent Events of `path` until the stream ends, calling `onEvent(kind, data)`
 * for each. Read with fetch, so the token goes in a header, never in the URL. Throws an
 * ApiError when the API refuses the stream.
 */
async function readEvents(path, headers, signal, onEvent) {
  const response = await fetch(path, {
    headers: { Accept: 'text/event-stream', Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`, ...headers },
    signal,
  });
  if (response.status === 401) {
    signOut('The token was refused: sign in again.');
    throw new ApiError(401, null);
  }
  if (!response.ok || !response.body) {
    const body = (response.headers.get('content-type') || '').includes('json') ? await response.json() : null;
    throw new ApiError(response.status, body);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const kind = /^event: ?(.*)$/m.exec(frame)?.[1];
      const data = frame.split('\n').filter((line) => line.startsWith('data:'))
        .map((line) => line.replace(/^data: ?/, '')).join('\n');
      if (data) onEvent(kind, data);
    }
  }
}

/** A table with a caption, its column titles and its rows (arrays of cells). */
function table(caption, titles, rows) {
  return el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, titles.map((title) => el('th', { scope: 'col' }, title)))),
    el('tbody', {}, rows.map((cells) => el('tr', {}, cells.map((cell) => el('td', {}, cell)))))));
}

async function vendorsView() {
  let answer;
  try {
    answer = await api('/v1/vendors');
  } catch (error) {
    show('Vendors', el('h1', {}, 'Vendors'), alertBox(error));
    return;
  }
  const rows = answer.vendors.flatMap((vendor) => vendor.hosts.map((host) => [
    vendor.vendor, vendor.display_name, host.host_id, host.plugin_version,
    age(host.first_seen), age(host.last_seen)]));
  show('Vendors',
    el('h1', {}, 'Vendors'),
    answer.vendors.length === 0 ? el('p', {}, 'No host serves a vendor now: orders are refused.')
      : table(`${answer.vendors.length} vendors served, each by the hosts that announced it`,
        ['Vendor', 'Name', 'Host', 'Plugin version', 'Serving since', 'Last announced'], rows),
    answer.unavailable?.length ? [
      el('h2', {}, 'Plugins not serving'),
      table('Vendors a host has a plugin for but does not serve, and why',
        ['Vendor', 'Host', 'Why'],
        answer.unavailable.map((u) => [u.vendor, u.host_id, u.reason])),
    ] : null);
}

async function orphansView() {
  const status = el('p', { role: 'status' });
  const content = el('div');
  const sweep = el('button', { class: 'primary', type: 'button', onclick: async () => {
    try {
      await api('/v1/orphans/sweep', { method: 'POST' });
      status.textContent = 'A sweep of every vendor was asked for; this page follows it.';
      await refresh();
    } catch (error) {
      status.replaceChildren(alertBox(error));
    }
  } }, 'Sweep now');
  show('Orphans',
    el('h1', {}, 'Orphans'),
    el('p', { class: 'note' }, 'Servers at a vendor that carry our key but that no order owns, as the orphan sweep found them.'),
    el('div', { class: 'actions' }, sweep), status, content);
  const refresh = async () => {
    let report;
    try {
      report = await api('/v1/orphans');
    } catch (error) {
      content.replaceChildren(alertBox(error));
      return;
    }
    content.replaceChildren(...nodes([
      el('h2', {}, 'Latest sweep of each vendor'),
      report.sweeps.length === 0 ? el('p', {}, 'No sweep yet.')
        : table(`${report.sweeps.length} vendors swept`,
          ['Vendor', 'Asked', 'Outcome', 'Servers with our key', 'Orphans', 'Host'],
          report.sweeps.map((s) => [s.vendor, age(s.requested_at), s.outcome ?? 'running',
            s.listed ?? '', s.orphans ?? '', s.host_id ?? ''])),
      el('h2', {}, 'Orphans found'),
      report.orphans.length === 0 ? el('p', {}, 'None.')
        : table(`${report.orphans.length} orphans, those still at the vendor first`,
          ['Vendor', 'Server', 'Key', 'Why', 'State', 'Last seen'],
          report.orphans.map((o) => [o.vendor, o.server.vendor_id, o.idempotency_key,
            o.reason, o.state, age(o.last_seen_at)])),
    ]));
  };
  await refresh();
  const timer = setInterval(refresh, 2000);
  leaving.signal.addEventListener('abort', () => clearInterval(timer));
}

async function deadLettersView() {
  const status = el('p', { role: 'status' });
  const content = el('div');
  // Read on demand, not on a timer: a body being read stays open.
  const reread = el('button', { type: 'button', onclick: async () => {
    status.textContent = '';
    await refresh();
  } }, 'Read again');
  show('Dead letters',
    el('h1', {}, 'Dead letters'),
    el('p', { class: 'note' }, 'Messages that reached the dead-letter queue, with why. Dismiss one once it is dealt with.'),
    el('div', { class: 'actions' }, reread), status, content);
  const refresh = async () => {
    let page;
    try {
      page = await api('/v1/dead-letters?limit=100');
    } catch (error) {
      content.replaceChildren(alertBox(error));
      return;
    }
    const dismiss = (letter) => el('button', { type: 'button', onclick: async () => {
      if (!confirm(`Dismiss the dead letter from ${letter.queue ?? 'an unknown queue'}?`)) return;
      try {
        await api(`/v1/dead-letters/${letter.id}`, { method: 'DELETE' });
        status.textContent = 'Dismissed.';
        await refresh();
      } catch (error) {
        status.replaceChildren(alertBox(error));
      }
    } }, 'Dismiss');
    const body = (letter) => el('details', {},
      el('summary', {}, `${letter.body_bytes} bytes`),
      el('pre', {}, letter.body ?? `base64: ${letter.body_base64}`),
      letter.body_truncated ? el('p', { class: 'note' }, `The first 16 KiB; GET /v1/dead-letters/${letter.id} has it whole.`) : null);
    content.replaceChildren(page.dead_letters.length === 0 ? el('p', {}, 'None: nothing was dead-lettered.')
      : table(`${page.total} dead letter${page.total === 1 ? '' : 's'}, newest first${page.next_cursor ? ' (the newest 100 shown)' : ''}`,
        ['Recorded', 'Queue', 'Why', 'Routing key', 'Order', 'Body', ''],
        page.dead_letters.map((letter) => [age(letter.recorded_at), letter.queue ?? 'unknown',
          letter.reason, letter.routing_key,
          letter.order_id ? el('a', { href: `#/orders/${letter.order_id}` }, letter.order_id.slice(0, 8)) : '',
          body(letter), dismiss(letter)])));
  };
  await refresh();
}

/** The samples of an OpenMetrics text: `{name, labels, value}` each. */
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

const SVG = 'http://www.w3.org/2000/svg';

/** A bar `fraction` of the full width (drawn, not styled inline: the policy allows no inline style). */
function bar(fraction) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 100 10');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const rect = document.createElementNS(SVG, 'rect');
  rect.setAttribute('width', String(Math.max(0.5, Math.min(1, fraction) * 100)));
  rect.setAttribute('height', '10');
  svg.append(rect);
  return svg;
}

/** A bar chart as a table: a row per entry with its label, its bar and its value in words. */
function barChart(title, entries, describe = (value) => String(value)) {
  const max = Math.max(1e-9, ...entries.map((entry) => entry.value));
  return el('figure', { class: 'chart' },
    el('figcaption', {}, title),
    entries.length === 0 ? el('p', { class: 'note' }, 'Nothing yet.')
      : el('table', { class: 'bars' }, el('tbody', {}, entries.map((entry) => el('tr', {},
        el('th', { scope: 'row' }, entry.label),
        el('td', { class: 'bar-cell' }, bar(entry.value / max)),
        el('td', { class: 'num' }, describe(entry.value)))))));
}

/** The `q` quantile of a cumulative histogram's buckets (`[{le, count}]`), interpolated. */
function quantile(buckets, q) {
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return lower;
      return lower + (le - lower) * ((rank - below) / Math.max(1, count - below));
    }
    lower = le;
    below = count;
  }
  return lower;
}

function milliseconds(seconds) {
  return seconds === null ? 'no orders yet' : `${(seconds * 1000).toFixed(1)} ms`;
}

async function dashboardView() {
  const charts = el('div', { class: 'charts', 'aria-live': 'polite' });
  const stamp = el('p', { class: 'note' });
  show('Dashboard', el('h1', {}, 'Dashboard'),
    el('p', { class: 'note' }, "This order-api's /metrics, read every 5 s."), stamp, charts);
  const refresh = async () => {
    let samples;
    try {
      const response = await fetch('/metrics', { signal: leaving.signal });
      if (!response.ok) throw new ApiError(response.status, null);
      samples = parseMetrics(await response.text());
    } catch (error) {
      if (!leaving.signal.aborted) charts.replaceChildren(alertBox(error));
      return;
    }
    const named = (name) => samples.filter((sample) => sample.name === name);
    const orders = named('provisioner_orders');
    const count = (status) => orders.find((s) => s.labels.status === status)?.value ?? 0;
    const buckets = named('provisioner_accept_seconds_bucket')
      .map((s) => ({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), count: s.value }))
      .sort((a, b) => a.le - b.le);
    const perBucket = buckets.map((b, i) => ({
      label: Number.isFinite(b.le) ? `≤ ${milliseconds(b.le)}` : 'longer',
      value: b.count - (i > 0 ? buckets[i - 1].count : 0),
    })).filter((b) => b.value > 0);
    charts.replaceChildren(
      barChart('Orders by status', orders.filter((s) => s.value > 0)
        .map((s) => ({ label: s.labels.status.replace('_', ' '), value: s.value }))),
      barChart(`Accept latency (POST to 202): p50 ${milliseconds(quantile(buckets, 0.5))}, p99 ${milliseconds(quantile(buckets, 0.99))}`,
        perBucket, (n) => (n === 1 ? '1 order' : `${n} orders`)),
      barChart('Creations in flight', [
        { label: 'pending', value: count('pending') },
        { label: 'queued', value: count('queued') },
        { label: 'provisioning', value: count('provisioning') },
        ...named('provisioner_queue_messages').map((s) => ({ label: `waiting in ${s.labels.queue}`, value: s.value })),
      ]),
      barChart('Faults in the last hour, by code', named('provisioner_faults_last_hour')
        .map((s) => ({ label: s.labels.code, value: s.value })).sort((a, b) => b.value - a.value)));
    stamp.textContent = `Read at ${new Date().toLocaleTimeString()}.`;
  };
  await refresh();
  const timer = setInterval(refresh, 5000);
  leaving.signal.addEventListener('abort', () => clearInterval(timer));
}

/** A random UUID (v4), from `getRandomValues`, which works without HTTPS too. */
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function newOrderView() {
  let vendors = [];
  try {
    vendors = (await api('/v1/vendors')).vendors;
  } catch (error) {
    show('Order servers', el('h1', {}, 'Order servers'), alertBox(error));
    return;
  }
  if (vendors.length === 0) {
    show('Order servers', el('h1', {}, 'Order servers'),
      el('p', { class: 'alert', role: 'alert' }, 'No host serves a vendor now: orders would be refused.'));
    return;
  }
  // One key per body sent: a double click, or a retry after a lost answer, makes one order;
  // a corrected form after a refusal is a new order, with a new key.
  let key = newKey();
  let sent = null;
  const field = (id, label, attributes = {}) => {
    const input = el('input', { id, name: id, ...attributes });
    return { input, label: el('label', { for: id }, label, input) };
  };
  const name = field('name', 'Name', { required: true, maxlength: 63, pattern: '[a-z0-9]([a-z0-9-]*[a-z0-9])?', autocomplete: 'off' });
  const vendor = el('select', { id: 'vendor', name: 'vendor', required: true, onchange: () => offer() },
    vendors.map((v) => el('option', { value: v.vendor }, `${v.display_name} (${v.vendor})`)));
  const region = choice('region', 'Region');
  const size = choice('size', 'Size');
  const image = choice('image', 'Image');
  // The choices are what the vendor's plugin accepts (`GET /v1/vendors/{vendor}/catalogue`);
  // a field it does not list stays free text, checked by the plugin when the order is sent.
  let offers = 0;
  const offer = async () => {
    const asked = ++offers;
    let catalogue = {};
    try {
      catalogue = await api(`/v1/vendors/${encodeURIComponent(vendor.value)}/catalogue`);
      if (asked === offers) problems.replaceChildren();
    } catch (error) {
      if (asked === offers) problems.replaceChildren(alertBox(error));
    }
    // Only the vendor chosen last sets the choices.
    if (asked !== offers) return;
    region.offer(catalogue.regions);
    size.offer(catalogue.sizes);
    image.offer(catalogue.images);
  };
  const count = field('count', 'How many servers', { type: 'number', min: 1, max: 100, value: 1, required: true });
  const sshKey = el('textarea', { id: 'ssh-key', name: 'ssh-key', rows: 2, cols: 40 });
  const problems = el('div', { 'aria-live': 'assertive' });
  const submit = el('button', { class: 'primary', type: 'submit' }, 'Order');
  const form = el('form', { class: 'order-form', onsubmit: async (event) => {
    event.preventDefault();
    submit.disabled = true;
    problems.replaceChildren();
    const body = {
      name: name.input.value.trim(), vendor: vendor.value, region: region.value(),
      size: size.value(), image: image.value(),
    };
    if (Number(count.input.value) > 1) body.count = Number(count.input.value);
    if (sshKey.value.trim()) body.ssh_keys = [sshKey.value.trim()];
    const text = JSON.stringify(body);
    if (sent !== null && sent !== text) key = newKey();
    sent = text;
    try {
      const order = await api('/v1/orders', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
        body: text,
      });
      location.hash = `#/orders/${order.id}`;
    } catch (error) {
      const fields = error.problem?.errors ?? [];
      problems.replaceChildren(el('div', { class: 'alert', role: 'alert' },
        el('p', {}, error.message),
        fields.length ? el('ul', {}, fields.map((f) => el('li', {}, `${f.field}: ${f.message}`))) : null));
      submit.disabled = false;
    }
  } },
  name.label,
  el('label', { for: 'vendor' }, 'Vendor', vendor),
  region.label, size.label, image.label, count.label,
  el('label', { for: 'ssh-key' }, 'SSH public key (optional)', sshKey),
  problems, submit);
  show('Order servers', el('h1', {}, 'Order servers'),
    el('p', { class: 'note' }, "The choices are those the vendor's plugin accepts; it checks the order again before it is accepted."),
    form);
  await offer();
}

/**
 * A form field that is a list to choose from when the vendor's plugin lists its values, and
 * free text when it accepts any (`offer(null)`).
 */
function choice(id, label) {
  const input = el('input', { id, name: id, required: true, autocomplete: 'off' });
  const select = el('select', { id, name: id, required: true });
  const wrapper = el('label', { for: id }, label, input);
  let current = input;
  return {
    label: wrapper,
    value: () => current.value.trim(),
    offer(values) {
      const listed = Array.isArray(values) && values.length > 0;
      const next = listed ? select : input;
      if (listed) select.replaceChildren(...values.map((v) => el('option', { value: v }, v)));
      if (next !== current) {
        current.replaceWith(next);
        current = next;
      }
    },
  };
}

/** Shows the view the location's hash names. */
async function route() {
  leaving.abort();
  leaving = new AbortController();
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    signInView();
    return;
  }
  const [path, search] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(search || '');
  const order = /^\/orders\/([0-9a-fA-F-]{36})$/.exec(path);
  // Busy until the view has drawn what it first reads (assistive technology waits for it;
  // the page-load benchmark times it).
  main.setAttribute('aria-busy', 'true');
  const mine = leaving;
  try {
    if (order) await orderView(order[1]);
    else if (path === '/vendors') await vendorsView();
    else if (path === '/new') await newOrderView();
    else if (path === '/orphans') await orphansView();
    else if (path === '/dead-letters') await deadLettersView();
    else if (path === '/dashboard') await dashboardView();
    else await ordersView(params);
  } finally {
    // A view left before it was drawn does not clear the mark of the one shown now.
    if (leaving === mine) main.setAttribute('aria-busy', 'false');
  }
}

document.getElementById('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);
// A page left for another stays in the browser's back-forward cache with whatever it had
// open: its event streams would each keep one of the six connections a browser has to a host,
// and the seventh visit would wait for a free one. Leaving closes them; coming back opens
// the view again.
window.addEventListener('pagehide', () => leaving.abort());
window.addEventListener('pageshow', (event) => {
  if (event.persisted) route();
});
if (sessionStorage.getItem(TOKEN_KEY)) {
  whoAmI().then(route, (error) => {
    // A refused token signed out already; anything else is shown, not a page left loading.
    if (error.status === 401) return;
    main.setAttribute('aria-busy', 'false');
    show('Console', el('h1', {}, 'Console'), alertBox(error),
      el('p', {}, el('a', { href: '' }, 'Try again')));
  });
} else {
  route();
}
