// The audit log (GET /v1/dsr/audit): newest first, paged by cursor. The endpoint takes only
// `limit` and `cursor`, so the filters apply to the entries loaded so far.

import {call, fail} from './api.js';
import {byId, clear, clearAlert, formatTime, h, nextDay} from './dom.js';

let state = null; // {limit, entries, cursor}

/** The next page of the listing `current`. False when Load newest has replaced it while the
 *  page was on its way: that page is dropped. */
async function fetchPage(current) {
  const page = await call('GET', '/v1/dsr/audit', {
    query: {limit: current.limit, cursor: current.cursor}, scope: 'audit:read',
  });
  if (current !== state) return false;
  current.entries.push(...page.items);
  current.cursor = page.next_cursor;
  return true;
}

async function loadNewest(event) {
  event.preventDefault();
  clearAlert();
  const form = byId('audit-form');
  const current = {limit: Number(form.elements.limit.value) || 100, entries: [], cursor: null};
  state = current;
  const button = event.submitter;
  if (button) button.disabled = true;
  const results = byId('audit-results');
  results.setAttribute('aria-busy', 'true');
  try {
    if (!await fetchPage(current)) return;
    render();
  } catch (error) {
    if (current !== state) return; // a newer listing is on screen
    state = null;
    clear(results);
    fail(error);
  } finally {
    results.removeAttribute('aria-busy');
    if (button) button.disabled = false;
  }
}

async function loadMore(event) {
  const button = event.currentTarget;
  button.disabled = true;
  const current = state;
  try {
    if (!await fetchPage(current)) return;
    render();
    const more = document.getElementById('audit-more');
    (more || byId('audit-count')).focus();
  } catch (error) {
    if (current !== state) return;
    button.disabled = false;
    fail(error);
  }
}

function filters() {
  const form = byId('audit-form').elements;
  return {
    action: form.action.value,
    actor: form.actor.value.trim().toLowerCase(),
    reference: form.reference.value.trim().toLowerCase(),
    identifier: form.identifier.value,
    from: form.from.value ? `${form.from.value}T00:00:00Z` : null,
    to: form.to.value ? `${nextDay(form.to.value)}T00:00:00Z` : null,
  };
}

function matches(entry, wanted) {
  if (wanted.action && entry.action !== wanted.action) return false;
  if (wanted.actor && !entry.actor.toLowerCase().includes(wanted.actor)) return false;
  if (wanted.reference && !(entry.reference || '').toLowerCase().includes(wanted.reference)) return false;
  if (wanted.identifier && entry.identifier_type !== wanted.identifier) return false;
  const at = Date.parse(entry.created_at);
  if (wanted.from && at < Date.parse(wanted.from)) return false;
  if (wanted.to && at >= Date.parse(wanted.to)) return false;
  return true;
}

function rangeText(entry) {
  if (!entry.since && !entry.until) return 'all time';
  return `${entry.since ? formatTime(entry.since) : '…'} – ${entry.until ? formatTime(entry.until) : '…'}`;
}

const COLUMNS = [
  'When (UTC)', 'Action', 'Actor', 'Identifier', 'Property and range', 'Mode', 'Reference',
  'Matched', 'Deleted', 'Anonymised', 'Request id',
];
// What each cell holds, for the tests and for anyone reading the DOM.
const FIELDS = [
  'created_at', 'action', 'actor', 'identifier', 'property', 'mode', 'reference',
  'matched', 'deleted', 'anonymised', 'request_id',
];

const NUMERIC = new Set(['Matched', 'Deleted', 'Anonymised']);

function row(entry) {
  const cells = [
    h('time', {datetime: entry.created_at, text: formatTime(entry.created_at)}),
    h('span', {class: `badge badge-action action-${entry.action}`, text: entry.action}),
    h('span', {class: 'mono', text: entry.actor}),
    entry.identifier_type
      ? h('span', {}, h('span', {text: entry.identifier_type}), h('br'),
        h('span', {class: 'mono muted', title: `keyed hash ${entry.identifier_hash} (key ${entry.hash_key_id})`, text: `${entry.identifier_hash.slice(0, 10)}…`}))
      : h('span', {class: 'muted', text: 'no one (retention purge)'}),
    h('span', {}, h('span', {text: entry.property || 'every property'}), h('br'), h('span', {class: 'muted', text: rangeText(entry)})),
    h('span', {text: entry.mode || '—'}),
    h('span', {class: 'break', text: entry.reference || '—'}),
    String(entry.matched),
    String(entry.deleted),
    String(entry.anonymised),
    h('span', {class: 'mono muted', title: entry.request_id || '', text: entry.request_id ? `${entry.request_id.slice(0, 8)}…` : '—'}),
  ];
  return h('tr', {'data-audit-id': entry.id, 'data-action': entry.action, 'data-reference': entry.reference || ''},
    cells.map((cell, index) => h('td', {'data-label': COLUMNS[index], 'data-field': FIELDS[index], class: NUMERIC.has(COLUMNS[index]) ? 'num' : null}, cell)));
}

function render() {
  if (!state) return;
  const shown = state.entries.filter((entry) => matches(entry, filters()));
  const loaded = state.entries.length;
  const results = clear(byId('audit-results'));
  results.append(h('section', {class: 'card results', 'aria-labelledby': 'audit-results-title'},
    h('div', {class: 'results-head'},
      h('h2', {id: 'audit-results-title'}, 'Entries ',
        h('span', {class: 'count', id: 'audit-count', tabindex: '-1',
          text: `${shown.length} shown of ${loaded} loaded${state.cursor ? ' (older entries not loaded yet)' : ''}`}))),
    shown.length
      ? h('table', {class: 'table reflow audit', id: 'audit-table'},
        h('caption', {class: 'visually-hidden'}, 'DSR audit entries, newest first'),
        h('thead', {}, h('tr', {}, COLUMNS.map((label) => h('th', {scope: 'col', class: NUMERIC.has(label) ? 'num' : null, text: label})))),
        h('tbody', {}, shown.map(row)))
      : h('p', {class: 'empty'}, loaded ? 'No loaded entry matches the filters.' : 'The audit log is empty.'),
    state.cursor ? h('div', {class: 'actions'}, h('button', {type: 'button', class: 'btn', id: 'audit-more', onclick: loadMore}, 'Load more')) : null));
}

export function setupAudit() {
  const form = byId('audit-form');
  form.addEventListener('submit', loadNewest);
  // Filters act on what is loaded, as they change.
  for (const name of ['action', 'actor', 'reference', 'identifier', 'from', 'to']) {
    form.elements[name].addEventListener('input', render);
  }
  byId('audit-clear').addEventListener('click', () => {
    for (const name of ['action', 'actor', 'reference', 'identifier', 'from', 'to']) form.elements[name].value = '';
    render();
  });
  // Each visit to the view shows the newest entries.
  return {show: () => form.requestSubmit()};
}
