// cpns-auth's operator page: the admin API (/v1/…) called with the session cookie.
import { api, bytes, el, fill, localTime, say, short, tabs } from '/web/assets/common.js';

const $ = (id) => document.getElementById(id);
const rows = (id, list, row, empty) => fill($(id).tBodies[0], list.length ? list.map(row)
  : el('tr', {}, el('td', { colspan: $(id).tHead.rows[0].cells.length, class: 'msg' }, empty)));

async function status() {
  try {
    const s = await api('/v1/status');
    $('server').textContent = short(s.peer_id);
    $('ca').textContent = s.ca_fingerprint.slice(0, 16);
    $('revocation').textContent = `version ${s.revocation_version}`;
    $('counts').textContent = `${s.users} users, ${s.entities} entities, ${s.pns} PNs, ${s.groups} groups, ${s.sessions} sessions`;
    $('live').textContent = 'connected';
    $('live').className = 'on';
  } catch (e) { $('live').textContent = e.message; $('live').className = 'off'; }
}

async function users() {
  const list = await api('/v1/users');
  rows('user-list', list, (u) => el('tr', { dataset: { user: u.name } }, el('td', {}, u.name), el('td', {}, localTime(u.created)),
    el('td', {}, u.entities), el('td', {}, el('button', { class: 'act quiet', type: 'button', onclick: async () => {
      if (!confirm(`Delete ${u.name} and revoke its devices?`)) return;
      try { await api(`/v1/users/${encodeURIComponent(u.name)}`, { method: 'DELETE' }); users(); status(); } catch (e) { say($('user-msg'), e.message, true); }
    } }, 'Delete'))), 'no users yet');
}

async function codes() {
  const list = await api('/v1/codes');
  rows('code-list', list, (c) => el('tr', {}, el('td', { class: 'mono' }, c.code_id), el('td', {}, c.user), el('td', {}, c.modes),
    el('td', {}, localTime(c.expires)), el('td', {}, c.uses), el('td', { class: 'mono' }, c.used_by.map(short).join(' '))), 'no codes');
}

async function entities() {
  const list = await api('/v1/entities');
  rows('entity-list', list, (e) => el('tr', { dataset: { entity: e.peer_id } }, el('td', {}, e.device), el('td', {}, e.user),
    el('td', {}, e.mode || '-'), el('td', {}, el('span', { class: `status ${e.online ? 'online' : 'offline'}` }, e.online ? 'online' : 'offline')),
    el('td', {}, e.serial), el('td', {}, localTime(e.expires)), el('td', { class: 'mono' }, e.pns.join(' ')),
    el('td', { class: 'mono' }, e.peer_id),
    el('td', {}, e.revoked ? 'revoked' : el('button', { class: 'act quiet', type: 'button', onclick: async () => {
      if (!confirm(`Revoke ${e.device} (${e.peer_id})?`)) return;
      try {
        const o = await api(`/v1/entities/${encodeURIComponent(e.peer_id)}/revoke`, { method: 'POST', body: {} });
        say($('entity-msg'), `revoked ${o.entity}: serials ${o.serials.join(', ')}, revocation list version ${o.revocation_version}`);
        entities(); status();
      } catch (err) { say($('entity-msg'), err.message, true); }
    } }, 'Revoke'))), 'no entities enrolled');
  const revoked = list.filter((e) => e.revoked);
  rows('revoked-list', revoked, (e) => el('tr', {}, el('td', {}, e.device), el('td', {}, e.user), el('td', {}, e.serials.join(', ')),
    el('td', {}, localTime(e.revoked)), el('td', { class: 'mono' }, e.peer_id)), 'nothing revoked');
}

async function pns() {
  const list = await api('/v1/pns');
  rows('pn-list', list, (p) => el('tr', {}, el('td', { class: 'mono' }, p.pn_id), el('td', {}, p.owner), el('td', { class: 'mono' }, short(p.gateway)),
    el('td', {}, p.members.length), el('td', {}, p.epoch), el('td', {}, localTime(p.updated))), 'no PNs');
}

async function groups() {
  const list = await api('/v1/groups');
  rows('group-list', list, (g) => el('tr', {}, el('td', { class: 'mono' }, g.group), el('td', {}, g.name), el('td', { class: 'mono' }, short(g.owner)),
    el('td', {}, g.members.length), el('td', {}, g.invited.length), el('td', {}, g.epoch)), 'no Service Groups');
}

async function usage() {
  const list = await api('/v1/usage?format=json');
  rows('usage-list', list.slice(-500).reverse(), (r) => el('tr', {}, el('td', {}, localTime(r.received)), el('td', {}, r.user), el('td', {}, r.device),
    el('td', {}, r.service_name), el('td', {}, bytes(r.bytes)), el('td', {}, `${r.duration_ms} ms`), el('td', {}, r.status)), 'no usage reported');
}

async function createCode(ev) {
  ev.preventDefault();
  const f = ev.target.elements;
  const body = { user: f.user.value, reusable: f.reusable.value === 'yes' };
  if (f.modes.value) body.modes = f.modes.value;
  if (f.ttl.value) body.ttl = f.ttl.value;
  try {
    const c = await api('/v1/codes', { method: 'POST', body });
    say($('code-msg'), `code for ${c.user}, valid until ${localTime(c.expires)}`);
    const resp = await fetch('/v1/codes/qr', { method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ code: c.code }) });
    const qr = el('div', { class: 'qr' });
    if (resp.ok) qr.innerHTML = await resp.text();
    fill($('new-code'), qr, el('p', { class: 'mono', id: 'code-text' }, c.code));
    codes();
  } catch (e) { say($('code-msg'), e.message, true); }
}

async function createUser(ev) {
  ev.preventDefault();
  try {
    const u = await api('/v1/users', { method: 'POST', body: { name: ev.target.elements.name.value } });
    say($('user-msg'), `created ${u.name}`);
    ev.target.reset();
    users(); status();
  } catch (e) { say($('user-msg'), e.message, true); }
}

const loaders = { users, codes, entities, pns, groups, revocations: entities, usage };
$('user-form').addEventListener('submit', createUser);
$('code-form').addEventListener('submit', createCode);
tabs((name) => { (loaders[name] || (() => {}))().catch((e) => say($('live'), e.message, true)); });
status();
