// Building the page from data without innerHTML: every text from the API goes in as textContent.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(element, props) {
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'text') element.textContent = String(value);
    else if (name === 'class') element.setAttribute('class', value);
    else if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, String(value));
  }
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h('p', {class: 'note'}, 'text', h('strong', {}, 'bold')). */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  apply(element, props);
  append(element, children);
  return element;
}

/** An SVG element, the same way. */
export function s(tag, props = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  apply(element, props);
  append(element, children);
  return element;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element;
}

// --- times: always UTC, always marked -----------------------------------------------------------

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** "2026-01-15 09:30:12 UTC" from an RFC 3339 time, or "—". */
export function formatTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** "12 Jan 2026" from "2026-01-12". */
export function formatDay(day, withYear = true) {
  const [year, month, date] = day.split('-').map(Number);
  return withYear ? `${date} ${MONTHS[month - 1]} ${year}` : `${date} ${MONTHS[month - 1]}`;
}

/** Today's UTC date as "YYYY-MM-DD", moved by `offsetDays`. */
export function utcDay(offsetDays = 0, from = new Date()) {
  const date = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate()));
  date.setUTCDate(date.getUTCDate() + offsetDays);
  return date.toISOString().slice(0, 10);
}

/** The day after "YYYY-MM-DD". */
export function nextDay(day) {
  const date = new Date(`${day}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + 1);
  return date.toISOString().slice(0, 10);
}

/** A datetime-local value read as UTC ("2026-01-15T09:30" → "2026-01-15T09:30:00Z"), or null. */
export function localInputAsUtc(value) {
  if (!value) return null;
  return value.length === 16 ? `${value}:00Z` : `${value}Z`;
}

// --- messages ------------------------------------------------------------------------------------

/** The one alert area: a problem's title and detail (and the invalid fields, if any). */
export function showAlert(title, detail, items = []) {
  const area = byId('alert');
  clear(area).append(
    h('div', {class: 'alert-text'},
      h('strong', {class: 'alert-title', text: title}),
      detail ? h('span', {class: 'alert-detail', text: ` ${detail}`}) : null,
      items.length ? h('ul', {class: 'alert-items'}, items.map((item) => h('li', {text: item}))) : null),
    h('button', {type: 'button', class: 'btn btn-quiet btn-small', onclick: clearAlert}, 'Dismiss'),
  );
  area.classList.add('is-shown');
}

export function clearAlert() {
  const area = byId('alert');
  clear(area);
  area.classList.remove('is-shown');
}

/** A short, polite confirmation ("Export downloaded"). */
export function showStatus(text) {
  byId('status').textContent = text;
}

// --- dialogs -------------------------------------------------------------------------------------

const FOCUSABLE = 'input:not([disabled]), select:not([disabled]), textarea:not([disabled]), ' +
  'button:not([disabled]), a[href], [tabindex="0"]';

/** Open a modal <dialog>, focus `first` (or its first control); Escape closes it (the browser's
 *  own `cancel`), and focus goes back where it was, or to `returnTo` (the opener drawn again). */
export function openDialog(dialog, first = null, returnTo = null) {
  const opener = returnTo || document.activeElement;
  dialog.addEventListener('close', () => {
    if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
  }, {once: true});
  dialog.showModal();
  const target = first || dialog.querySelector(FOCUSABLE);
  if (target) target.focus();
}

/** A definition list from [label, value] pairs; a value may be a Node. */
export function facts(pairs, className = 'facts') {
  return h('dl', {class: className}, pairs.map(([label, value, field]) => [
    h('dt', {text: label}),
    h('dd', {'data-field': field || null}, value instanceof Node ? value : String(value ?? '—')),
  ]));
}

export function yesNo(value) {
  return value ? 'yes' : 'no';
}
