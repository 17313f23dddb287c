// Helpers shared by the node's and cpns-auth's pages. Text goes into the page with
// textContent only; the one HTML we insert is Mermaid's SVG (securityLevel "strict") and a QR
// SVG the server draws.

/** A JSON request to this page's own daemon; the session cookie authenticates it. */
export async function api(path, { method = 'GET', body } = {}) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) {
    const e = new Error(data && data.error ? `${data.error.message} (${data.error.code})` : `HTTP ${resp.status}`);
    e.status = resp.status;
    throw e;
  }
  return data;
}

/** A text resource of this daemon. */
export async function apiText(path) {
  const resp = await fetch(path, { credentials: 'same-origin' });
  if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  return resp.text();
}

/** `el('td', {class: 'x', dataset: {peer: id}}, 'text', child)`. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces a container's children. */
export function fill(container, ...children) {
  container.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** A Unix time (seconds) as a local date and time. */
export function localTime(secs) {
  if (secs === null || secs === undefined) return '-';
  return new Date(secs * 1000).toLocaleString();
}

/** A byte count for people. */
export function bytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** The last characters of a PeerId. */
export function short(id) {
  return id && id.length > 10 ? `…${id.slice(-10)}` : (id || '-');
}

/** A label safe inside a Mermaid node: letters, digits and a few marks only. */
export function mermaidLabel(text) {
  return String(text).replace(/[^A-Za-z0-9 _.:+()\-…]/g, '_');
}

let mermaidReady = false;
let diagramSeq = 0;

/** Renders Mermaid text into a container as SVG; shows the error instead if it fails. */
export async function renderMermaid(container, text) {
  const m = globalThis.mermaid;
  if (!m) { fill(container, el('p', { class: 'msg err' }, 'the diagram library did not load')); return; }
  if (!mermaidReady) {
    m.initialize({ startOnLoad: false, securityLevel: 'strict', theme: 'neutral', sequence: { mirrorActors: false } });
    mermaidReady = true;
  }
  diagramSeq += 1;
  try {
    const { svg } = await m.render(`diagram-${diagramSeq}`, text);
    container.innerHTML = svg;
  } catch (e) {
    fill(container, el('p', { class: 'msg err' }, `cannot draw: ${e.message || e}`));
  }
}

/** Tabs: buttons in `nav` with data-tab, sections with the same id. Calls onShow(name). */
export function tabs(onShow) {
  const buttons = [...document.querySelectorAll('nav button[data-tab]')];
  const show = (name) => {
    for (const b of buttons) b.classList.toggle('active', b.dataset.tab === name);
    for (const s of document.querySelectorAll('section.tab')) s.classList.toggle('active', s.id === name);
    if (onShow) onShow(name);
  };
  for (const b of buttons) b.addEventListener('click', () => show(b.dataset.tab));
  show(buttons[0].dataset.tab);
  return show;
}

/** Shows a message (or an error) in an element. */
export function say(target, text, isError = false) {
  target.textContent = text;
  target.classList.toggle('err', isError);
}
