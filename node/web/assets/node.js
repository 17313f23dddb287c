// The node's page: its PN pushed by server-sent events (/web/events), and the node's API
// (/v1/…) called with the session cookie.
import { api, apiText, bytes, el, fill, localTime, mermaidLabel, renderMermaid, say, short, tabs } from '/web/assets/common.js';

const $ = (id) => document.getElementById(id);
let status = null;
let shown = 'pn';

function statusCell(s, reason) {
  return el('td', {}, el('span', { class: `status ${s}` }, s), reason ? ` (${reason})` : '');
}

function renderStatus(s) {
  status = s;
  $('title').textContent = `CPNS node ${s.device}`;
  $('mode').textContent = s.mode;
  $('pn').textContent = s.pn_id || '-';
  $('gateway').textContent = s.gateway ? short(s.gateway) : '-';
  $('epoch').textContent = s.epoch ?? '-';
  $('own-status').textContent = s.status;
  const rows = s.members.map((m) => el('tr', { dataset: { peer: m.peer_id } },
    el('td', {}, m.device, m.peer_id === s.peer_id ? el('span', { class: 'badge' }, 'this node') : null,
      m.peer_id === s.gateway ? el('span', { class: 'badge' }, 'gateway') : null),
    el('td', {}, m.user),
    el('td', {}, m.mode),
    statusCell(m.status, m.reason),
    el('td', { class: 'mono' }, m.peer_id)));
  fill($('members').tBodies[0], rows.length ? rows : el('tr', {}, el('td', { colspan: 5 }, 'not in a PN')));
  const facts = [
    ['PeerId', s.peer_id], ['user', s.user || '-'], ['enrolled', s.enrolled ? 'yes' : 'no'],
    ['credential', s.credential ? `serial ${s.credential.serial}, valid until ${localTime(s.credential.expires)}${s.credential.renewal_due ? ' (renewal due)' : ''}` : '-'],
    ['auth server', s.auth_server ? `${short(s.auth_server.peer_id)} ${s.auth_server.connected ? 'reachable' : 'not connected'}` : '-'],
    ['DHT', `${s.dht_mode}, ${s.routing_table} in routing table, ${s.connected_peers} connected`],
    ['listens on', s.listen_addrs.join(' ')], ['version', s.version],
  ];
  fill($('device'), facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { class: k === 'PeerId' ? 'mono' : '' }, v)]));
  if (shown === 'pn') drawTopology();
  if (shown === 'trace') drawTrace();
}

function renderCaps(c) {
  const st = c.static_caps;
  const d = c.dynamic;
  const facts = [
    ['device type', st.device_type || '-'], ['os', st.os || '-'], ['cpu', `${st.cpu} (${st.cpu_cores} cores)`],
    ['memory', `${bytes(st.memory_bytes)}, ${bytes(d.free_memory_bytes)} free`],
    ['screen', st.screen ? `${st.screen.width}x${st.screen.height}` : 'none'],
    ['power', `${d.power}${d.battery_percent != null ? `, battery ${d.battery_percent} %` : ''}`],
    ['networks', d.networks.map((n) => n.name).join(', ') || '-'], ['WAN', d.wan ? 'yes' : 'no'],
    ['gateway preference', c.gateway_preference], ['revision', c.revision],
  ];
  fill($('caps'), facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function addNotification(n) {
  const body = $('notes').tBodies[0];
  body.prepend(el('tr', {}, el('td', {}, localTime(n.time)), el('td', { class: 'mono' }, short(n.target)),
    statusCell(n.status, n.reason), el('td', {}, n.trigger)));
  while (body.rows.length > 50) body.deleteRow(-1);
}

/** The UPnP/DLNA devices this gateway's Non-CPNS proxy speaks for (5.6.10), refreshed at most
 * every 5 s while the PN tab is drawn; a PNE has none (only its gateway proxies). */
let proxied = [];
let proxiedAt = 0;
async function refreshProxied() {
  if (!status || status.gateway !== status.peer_id || Date.now() - proxiedAt < 5000) return;
  proxiedAt = Date.now();
  let list = [];
  try { list = await api('/v1/proxy/devices'); } catch { list = []; }
  if (JSON.stringify(list) !== JSON.stringify(proxied)) {
    proxied = list;
    drawTopology();
  }
}

/** Gateway, members, the devices the gateway proxies, and the links between them, as a
 * Mermaid flowchart. */
function drawTopology() {
  if (!status) return;
  const s = status;
  if (!s.pn_id) { fill($('topology'), el('p', { class: 'msg' }, 'not in a PN')); return; }
  const id = (peer) => `n${peer.slice(-8).replace(/[^A-Za-z0-9]/g, '_')}`;
  const lines = ['flowchart TB'];
  const gw = s.members.find((m) => m.peer_id === s.gateway);
  const gwId = s.gateway ? id(s.gateway) : 'gw';
  lines.push(`  ${gwId}(["gateway: ${mermaidLabel(gw ? gw.device : short(s.gateway))}"])`);
  if (s.auth_server) lines.push(`  auth[("cpns-auth")]`, `  ${gwId} -.- auth`);
  for (const m of s.members) {
    if (m.peer_id === s.gateway) continue;
    lines.push(`  ${id(m.peer_id)}["${mermaidLabel(m.device)} (${m.mode}): ${m.status}"]`, `  ${gwId} --- ${id(m.peer_id)}`);
    if (m.status !== 'online') lines.push(`  class ${id(m.peer_id)} ${m.status}`);
  }
  for (const d of proxied) {
    const pid = `p${d.id.replace(/[^A-Za-z0-9]/g, '_')}`;
    lines.push(`  ${pid}[/"proxied: ${mermaidLabel(d.name)} (${mermaidLabel(d.functions.join(', ') || 'no CPNS function')})"/]`,
      `  ${gwId} -. UPnP .- ${pid}`, `  class ${pid} proxied`);
  }
  lines.push('  classDef busy fill:#fde9cf,stroke:#b25e00', '  classDef offline fill:#eee,stroke:#8a8f99',
    '  classDef proxied fill:#e8f1fb,stroke:#2b6cb0');
  renderMermaid($('topology'), lines.join('\n'));
  refreshProxied();
}

let traceBusy = false;
async function drawTrace() {
  if (traceBusy) return;
  traceBusy = true;
  try {
    const flow = $('trace-form').elements.flow.value;
    const steps = await api(`/v1/trace?flow=${encodeURIComponent(flow)}`);
    if (!steps.length) { fill($('trace-diagram'), el('p', { class: 'msg' }, `no ${flow} steps on this node yet`)); return; }
    const text = await apiText(`/v1/trace/mermaid?flow=${encodeURIComponent(flow)}`);
    await renderMermaid($('trace-diagram'), text);
  } catch (e) {
    fill($('trace-diagram'), el('p', { class: 'msg err' }, e.message));
  } finally { traceBusy = false; }
}

function serviceRow(d, extra) {
  return el('tr', { dataset: { service: d.id } }, el('td', {}, d.name), el('td', { class: 'mono' }, d.id),
    el('td', {}, d.keywords.join(', ')), el('td', {}, d.visibility), extra);
}

async function fetchService(d, cell) {
  const total = Number(d.metadata && d.metadata.size) || 0;
  const bar = el('progress', total ? { max: total, value: 0 } : {});
  const label = el('span', {}, ' starting…');
  fill(cell, bar, label);
  const poll = setInterval(async () => {
    try {
      const p = await api(`/v1/content/progress/${encodeURIComponent(d.id)}`);
      if (p.active) {
        if (total) bar.value = p.bytes;
        label.textContent = ` ${bytes(p.bytes)}${total ? ` of ${bytes(total)}` : ''}`;
      }
    } catch { /* the answer of the fetch itself says what went wrong */ }
  }, 200);
  try {
    const o = await api('/v1/content/fetch', { method: 'POST', body: { service_id: d.id } });
    bar.max = o.bytes || 1;
    bar.value = o.bytes || 1;
    label.textContent = ` ${bytes(o.bytes)} in ${o.duration_ms.toFixed(1)} ms (${o.decision}, usage ${o.usage})`;
    say($('fetch-msg'), `fetched ${d.name}: ${o.path}, sha256 ${o.sha256}`);
  } catch (e) {
    label.textContent = ' failed';
    say($('fetch-msg'), `fetch ${d.name}: ${e.message}`, true);
  } finally { clearInterval(poll); }
}

async function find(ev) {
  ev.preventDefault();
  const f = ev.target.elements;
  const q = f.keywords.value.split(/[\s,]+/).filter(Boolean).map((k) => `keyword=${encodeURIComponent(k)}`);
  if (f.scope.value) q.push(`scope=${encodeURIComponent(f.scope.value)}`);
  say($('find-msg'), 'searching…');
  try {
    const d = await api(`/v1/services/find?${q.join('&')}`);
    const rows = d.services.map(({ description: s }) => {
      const cell = el('td', {});
      cell.append(el('button', { class: 'act quiet', type: 'button', onclick: () => fetchService(s, cell) }, 'Fetch'));
      return serviceRow(s, [el('td', { class: 'mono' }, short(s.publisher)), cell]);
    });
    fill($('found').tBodies[0], rows);
    say($('find-msg'), `${d.services.length} found in ${(d.figures.duration_us / 1000).toFixed(2)} ms: ${d.figures.requests} requests, ${d.figures.peers_contacted} peers contacted`);
  } catch (e) { say($('find-msg'), e.message, true); }
}

async function publish(ev) {
  ev.preventDefault();
  const f = ev.target.elements;
  const body = {
    name: f.name.value, offers: f.offers.value, visibility: f.visibility.value,
    keywords: f.keywords.value.split(/[\s,]+/).filter(Boolean),
  };
  say($('publish-msg'), 'publishing…');
  try {
    const d = await api('/v1/services', { method: 'POST', body });
    say($('publish-msg'), `published ${d.name} as ${d.id}, visible to ${d.visibility}`);
    $('publish-msg').dataset.service = d.id;
    loadOwn();
  } catch (e) { say($('publish-msg'), e.message, true); }
}

async function loadOwn() {
  try {
    const list = await api('/v1/services');
    fill($('own').tBodies[0], list.map((d) => serviceRow(d, [el('td', {}, localTime(d.expires)),
      el('td', {}, el('button', { class: 'act quiet', type: 'button', onclick: async () => { await api(`/v1/services/${encodeURIComponent(d.id)}`, { method: 'DELETE' }); loadOwn(); } }, 'Unpublish'))])));
  } catch (e) { say($('publish-msg'), e.message, true); }
}

async function loadGroups() {
  try {
    const list = await api('/v1/groups');
    fill($('group-list').tBodies[0], list.map((g) => el('tr', {}, el('td', {}, g.name), el('td', { class: 'mono' }, g.group),
      el('td', { class: 'mono' }, short(g.owner)), el('td', {}, g.members.length), el('td', {}, g.invited.length), el('td', {}, g.epoch))));
    say($('group-msg'), list.length ? '' : 'this node is in no Service Group');
  } catch (e) { say($('group-msg'), e.message, true); }
}

async function createGroup(ev) {
  ev.preventDefault();
  try {
    const g = await api('/v1/groups', { method: 'POST', body: { name: ev.target.elements.name.value } });
    say($('group-msg'), `created ${g.group}`);
    loadGroups();
  } catch (e) { say($('group-msg'), e.message, true); }
}

function connect() {
  const live = $('live');
  const source = new EventSource('/web/events');
  source.addEventListener('open', () => { live.textContent = 'live'; live.className = 'on'; });
  source.addEventListener('error', () => { live.textContent = 'reconnecting…'; live.className = 'off'; });
  source.addEventListener('status', (e) => renderStatus(JSON.parse(e.data)));
  source.addEventListener('capabilities', (e) => renderCaps(JSON.parse(e.data)));
  source.addEventListener('notification', (e) => addNotification(JSON.parse(e.data)));
}

$('find-form').addEventListener('submit', find);
$('publish-form').addEventListener('submit', publish);
$('group-form').addEventListener('submit', createGroup);
$('trace-form').addEventListener('submit', (ev) => { ev.preventDefault(); drawTrace(); });
$('trace-form').elements.flow.addEventListener('change', drawTrace);
tabs((name) => {
  shown = name;
  if (name === 'pn') drawTopology();
  if (name === 'services') loadOwn();
  if (name === 'groups') loadGroups();
  if (name === 'trace') drawTrace();
});
api('/v1/status/notifications').then((list) => list.forEach(addNotification)).catch(() => {});
connect();
