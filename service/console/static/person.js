// Find a person: their consent timeline (POST /v1/dsr/history, paged), an export as a download
// (POST /v1/dsr/exports) and an erasure behind a confirmation (POST /v1/dsr/erasures).

import {call, fail, saveBlob} from './api.js';
import {
  byId, clear, clearAlert, facts, formatTime, h, localInputAsUtc, openDialog, showStatus, utcDay,
} from './dom.js';
import {showVersion} from './schema.js';
import {openWithdraw, withdrawable} from './withdraw.js';

const KINDS = {subject_id: 'Consent id (subject_id)', ip: 'IP address', user_id: 'Account id (user_id)'};

// The look-up on screen: its query (identifier, property, range) and what has been loaded.
let state = null;
// An erasure on its way: its button stays off whatever the form does meanwhile.
let erasing = false;

// A consent id as the API takes it (lowercase 8-4-4-4-12, as crypto.randomUUID writes it), from
// the ways a person may paste one: upper case, in braces, as a urn:uuid: or as 32 bare hex digits.
// Anything that is not a UUID is sent as typed, and the API's 422 says what it expects.
function canonicalSubjectId(text) {
  const bare = text.replace(/^urn:uuid:/i, '').replace(/^\{(.*)\}$/, '$1');
  const hex = /^[0-9a-f]{32}$/i.test(bare) ? bare
    : /^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/i.test(bare) ? bare.replaceAll('-', '') : null;
  if (hex === null) return text;
  const digits = hex.toLowerCase();
  return [digits.slice(0, 8), digits.slice(8, 12), digits.slice(12, 16), digits.slice(16, 20), digits.slice(20)].join('-');
}

function queryFromForm() {
  const form = byId('person-form');
  const kind = form.elements.kind.value;
  let value = form.elements.value.value.trim();
  if (kind === 'subject_id') {
    value = canonicalSubjectId(value);
    form.elements.value.value = value;  // the id searched for, as the timeline will show it
  }
  const query = {[kind]: value};
  const property = form.elements.property.value.trim();
  if (property) query.property = property;
  const since = localInputAsUtc(form.elements.since.value);
  const until = localInputAsUtc(form.elements.until.value);
  if (since) query.since = since;
  if (until) query.until = until;
  return {kind, query, limit: Number(form.elements.limit.value) || 100};
}

/** The next page of the look-up `current`. False when a newer search has replaced it while the
 *  page was on its way: that page is another person's and is dropped. */
async function fetchPage(current) {
  const body = {...current.query, limit: current.limit};
  if (current.cursor) body.cursor = current.cursor;
  const page = await call('POST', '/v1/dsr/history', {body, scope: 'dsr:read'});
  if (current !== state) return false;
  current.events.push(...page.items);
  current.cursor = page.next_cursor;
  return true;
}

/** The timeline's buttons off until it is drawn again (renderResults sets them anew). */
function holdTimelineButtons() {
  for (const control of byId('person-results').querySelectorAll('.toolbar button, #person-more')) {
    control.disabled = true;
  }
}

async function search(event) {
  event.preventDefault();
  clearAlert();
  showStatus('');
  clear(byId('person-receipt'));
  const {kind, query, limit} = queryFromForm();
  const current = {kind, query, limit, events: [], cursor: null};
  state = current;
  // The timeline on screen is the last search's until this one's arrives: its buttons would act
  // on this one's query (an export or erasure of someone else than the person shown).
  holdTimelineButtons();
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    if (!await fetchPage(current)) return;
    renderResults();
    byId('person-results-title').focus();
  } catch (error) {
    if (current !== state) return; // a newer search is on screen
    state = null;
    clear(byId('person-results'));
    fail(error);
  } finally {
    if (button) button.disabled = false;
  }
}

async function loadMore(event) {
  const button = event.currentTarget;
  button.disabled = true;
  const current = state;
  try {
    const before = current.events.length;
    if (!await fetchPage(current)) return;
    renderResults();
    const next = byId('person-results').querySelectorAll('.event')[before];
    if (next) next.focus();
  } catch (error) {
    if (current !== state) return;
    button.disabled = false;
    fail(error);
  }
}

function describeQuery(query) {
  const kind = Object.keys(KINDS).find((name) => query[name] !== undefined);
  const range = query.since || query.until
    ? `${query.since ? formatTime(query.since) : 'the beginning'} to ${query.until ? formatTime(query.until) : 'now'}`
    : 'all time';
  return [
    ['Identifier', `${KINDS[kind]}: ${query[kind]}`, 'identifier'],
    ['Property', query.property || 'every property', 'property'],
    ['Time range', range, 'range'],
  ];
}

function choiceList(choices) {
  const entries = Object.entries(choices || {});
  if (!entries.length) return h('span', {class: 'muted'}, 'none');
  return h('ul', {class: 'chips'}, entries.map(([category, on]) => h('li', {
    class: `chip ${on ? 'chip-on' : 'chip-off'}`, 'data-category': category, 'data-on': String(on),
  }, h('span', {class: 'chip-mark', 'aria-hidden': 'true', text: on ? '✓' : '✕'}), `${category}: ${on ? 'on' : 'off'}`)));
}

function signalsText(signals) {
  const parts = [`GPC ${signals.gpc ? 'yes' : 'no'}`, `DNT ${signals.dnt ? 'yes' : 'no'}`];
  const applied = signals.applied && signals.applied.length
    ? `applied: ${signals.applied.join(', ').toUpperCase()}` : 'none applied';
  return `${parts.join(' · ')} (${applied})`;
}

function evidenceCell(event, name) {
  const value = event[name];
  return value ? h('span', {class: 'break', text: value}) : h('span', {class: 'muted'}, 'not recorded');
}

function eventCard(event) {
  const status = event.status
    ? `${event.status}${event.expires_at ? `, lapses ${formatTime(event.expires_at)}` : ''}`
    : 'decides nothing';
  return h('li', {class: 'event', tabindex: '-1', 'data-event-id': event.event_id, 'data-event-type': event.event_type},
    h('div', {class: 'event-head'},
      h('time', {datetime: event.recorded_at, class: 'event-time', text: formatTime(event.recorded_at)}),
      h('span', {class: `badge badge-type type-${event.event_type}`, text: event.event_type}),
      event.signals.gpc ? h('span', {class: 'badge badge-signal', text: 'GPC'}) : null,
      event.signals.dnt ? h('span', {class: 'badge badge-signal', text: 'DNT'}) : null,
      h('button', {
        type: 'button', class: 'btn btn-small version-button', 'data-version': event.schema_version,
        'aria-label': `Open ${event.property} schema version ${event.schema_version}`,
        onclick: () => showVersion(event.property, event.schema_version),
      }, `${event.property} · v${event.schema_version}`)),
    facts([
      ['Choices', choiceList(event.choices), 'choices'],
      ['Effective', choiceList(event.effective), 'effective'],
      ['Signals', signalsText(event.signals), 'signals'],
      ['Source', event.source, 'source'],
      ['Status', status, 'status'],
      ['Page URL', evidenceCell(event, 'page_url'), 'page_url'],
      ['User agent', evidenceCell(event, 'user_agent'), 'user_agent'],
      ['Event id', h('span', {class: 'mono break', text: event.event_id}), 'event_id'],
      ['Consent id', h('span', {class: 'mono break', text: event.subject_id || 'anonymised'}), 'subject_id'],
    ], 'facts event-facts'));
}

function renderResults() {
  const {events, cursor} = state;
  const count = `${events.length} event${events.length === 1 ? '' : 's'}${cursor ? ' so far (more to load)' : ''}`;
  const results = clear(byId('person-results'));
  results.append(h('section', {class: 'card results', 'aria-labelledby': 'person-results-title'},
    h('div', {class: 'results-head'},
      h('h2', {id: 'person-results-title', tabindex: '-1'}, 'Timeline ', h('span', {class: 'count', id: 'person-count', text: count})),
      h('div', {class: 'toolbar'},
        h('button', {type: 'button', class: 'btn', id: 'export-json', disabled: !events.length, onclick: () => exportAs('json')}, 'Export JSON'),
        h('button', {type: 'button', class: 'btn', id: 'export-csv', disabled: !events.length, onclick: () => exportAs('csv')}, 'Export CSV'),
        h('button', {type: 'button', class: 'btn', id: 'export-dpv', disabled: !events.length, title: 'W3C DPV consent records (JSON-LD)', onclick: () => exportAs('dpv')}, 'Export DPV'),
        h('button', {type: 'button', class: 'btn', id: 'withdraw-open', disabled: !events.length || !withdrawable(state.query), title: 'By consent id or account id, over all time', onclick: openWithdrawal}, 'Withdraw…'),
        h('button', {type: 'button', class: 'btn btn-danger-outline', id: 'erase-open', disabled: !events.length, onclick: openErase}, 'Erase…'))),
    facts(describeQuery(state.query), 'facts facts-inline'),
    events.length
      ? h('ol', {class: 'timeline', id: 'timeline'}, events.map(eventCard))
      : h('p', {class: 'empty'}, 'No events match.'),
    cursor ? h('div', {class: 'actions'}, h('button', {type: 'button', class: 'btn', id: 'person-more', onclick: loadMore}, 'Load more')) : null));
}

// --- export --------------------------------------------------------------------------------------

async function exportAs(format) {
  clearAlert();
  const {query} = state;
  try {
    const response = await call('POST', '/v1/dsr/exports', {body: {...query, format}, scope: 'dsr:read', raw: true});
    const blob = await response.blob();
    const scope = query.property || 'all-properties';
    const extension = format === 'dpv' ? 'jsonld' : format;
    saveBlob(blob, `dsr-export-${scope}-${utcDay()}.${extension}`);
    const count = response.headers.get('X-Event-Count');
    showStatus(`Export (${format.toUpperCase()}${count ? `, ${count} events` : ''}) downloaded.`);
  } catch (error) {
    fail(error);
  }
}

// --- withdrawal in writing -----------------------------------------------------------------------

function openWithdrawal() {
  clearAlert();
  const {kind, query, limit} = state;
  openWithdraw(query, describeQuery(query), async (result, reference) => {
    const panel = h('section', {class: 'card receipt', id: 'withdrawal-receipt', 'aria-labelledby': 'withdrawal-title', tabindex: '-1'},
      h('h2', {id: 'withdrawal-title'}, 'Withdrawal recorded'),
      facts([
        ['Withdrawal id', h('span', {class: 'mono break', text: result.withdrawal_id}), 'withdrawal_id'],
        ['Withdrawn', `${result.withdrawn} consent id and property pair${result.withdrawn === 1 ? '' : 's'}`, 'withdrawn'],
        ['Of', h('ul', {}, result.items.map((item) => h('li', {class: 'mono break', text: `${item.property} · ${item.subject_id}`}))), 'items'],
        ['Reference', reference, 'reference'],
      ], 'facts'));
    clear(byId('person-receipt')).append(panel);
    panel.focus();
    showStatus(`Withdrawal ${result.withdrawal_id} recorded: ${result.withdrawn} withdrawn.`);
    // The timeline again, with the withdrawals it now holds (unless another search came first).
    const current = {kind, query, limit, events: [], cursor: null};
    state = current;
    try {
      if (await fetchPage(current)) renderResults();
    } catch (error) {
      if (current !== state) return;
      state = null;
      clear(byId('person-results'));
      fail(error);
    }
  });
}

// --- erasure -------------------------------------------------------------------------------------

function eraseMode() {
  return byId('erase-form').elements.mode.value;
}

function plural(count) {
  return `${count} event${count === 1 ? '' : 's'}`;
}

function renderEraseSummary() {
  // What the erasure will take, counted by the service (POST /v1/dsr/erasures/preview): with an
  // IP or account id, other events of the consent ids whose latest decision it matches go too.
  const {matched, earlier_decisions: earlier, consent_ids_with_earlier_decisions: ids, total} = state.preview;
  clear(byId('erase-summary')).append(facts([
    ...describeQuery(state.query),
    ['Events found', String(matched), 'count'],
    ...(earlier ? [[
      'With them, earlier decisions',
      `${plural(earlier)} of ${ids} consent id${ids === 1 ? '' : 's'} whose latest decision this matches`,
      'earlier',
    ]] : []),
    ['Mode', eraseMode() === 'delete' ? 'delete (remove the events)' : 'anonymise (keep them without identifiers)', 'mode'],
  ]));
  const confirm = byId('erase-confirm');
  confirm.textContent = `${eraseMode() === 'delete' ? 'Delete' : 'Anonymise'} ${plural(total)}`;
  confirm.disabled = erasing || !byId('erase-reference').value.trim();
  // Not closed while the erasure is on its way: its receipt is shown when it comes.
  byId('erase-dialog').querySelector('[data-close]').disabled = erasing;
}

async function openErase() {
  const current = state;
  clearAlert();
  // The toolbar and Load more wait for the count (Load more would draw an Erase… to click twice).
  holdTimelineButtons();
  try {
    // One count by the service, audited as one look-up (loading every page to count them was a
    // look-up a page).
    current.preview = await call('POST', '/v1/dsr/erasures/preview', {body: current.query, scope: 'dsr:erase'});
  } catch (error) {
    if (current === state) {
      renderResults();
      fail(error);
    }
    return;
  }
  if (current !== state) return;
  renderResults();
  const form = byId('erase-form');
  form.reset();
  renderEraseSummary();
  openDialog(byId('erase-dialog'), byId('erase-reference'), byId('erase-open'));
}

async function confirmErase(event) {
  event.preventDefault();
  const reference = byId('erase-reference').value.trim();
  if (!reference || erasing) return;
  const mode = eraseMode();
  const {query} = state;
  erasing = true;
  renderEraseSummary();
  try {
    const receipt = await call('POST', '/v1/dsr/erasures', {body: {...query, mode, reference}, scope: 'dsr:erase'});
    byId('erase-dialog').close();
    showReceipt(receipt, reference, query);
  } catch (error) {
    byId('erase-dialog').close();
    fail(error);
  } finally {
    erasing = false;
  }
}

function showReceipt(receipt, reference, erased) {
  state = null;
  clear(byId('person-results'));
  const panel = h('section', {class: 'card receipt', id: 'erasure-receipt', 'aria-labelledby': 'receipt-title', tabindex: '-1'},
    h('h2', {id: 'receipt-title'}, 'Erasure receipt'),
    h('p', {}, 'The service erased what matched and recorded it in the audit log. Keep this receipt with the request.'),
    facts([
      ['Erasure id', h('span', {class: 'mono break', text: receipt.erasure_id}), 'erasure_id'],
      ['Mode', receipt.mode, 'mode'],
      ['Matched', String(receipt.matched), 'matched'],
      ['Deleted', String(receipt.deleted), 'deleted'],
      ['Anonymised', String(receipt.anonymised), 'anonymised'],
      ...(receipt.earlier_decisions.length ? [[
        'With it, earlier decisions',
        h('span', {class: 'mono break', text: receipt.earlier_decisions.join(', ')}),
        'earlier_decisions',
      ]] : []),
      ['Reference', reference, 'reference'],
      ...describeQuery(erased),
    ], 'facts'));
  clear(byId('person-receipt')).append(panel);
  panel.focus();
  showStatus(`Erasure ${receipt.erasure_id} done: ${receipt.matched} matched.`);
}

export function setupPerson() {
  byId('person-form').addEventListener('submit', search);
  byId('erase-dialog').addEventListener('cancel', (event) => {
    if (erasing) event.preventDefault(); // Escape waits for the answer
  });
  const form = byId('erase-form');
  form.addEventListener('submit', confirmErase);
  form.addEventListener('input', renderEraseSummary);
  form.addEventListener('change', renderEraseSummary);
}
