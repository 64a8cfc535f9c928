// Per property: its schema versions (each one's content, a diff of two) and its statistics.
// There is no endpoint that lists properties: the name is typed, the last one kept in this tab.

import {call, fail} from './api.js';
import {byId, clear, clearAlert, formatTime, h, nextDay, showAlert, utcDay} from './dom.js';
import {computeDiff, renderDiff} from './diff.js';
import {fetchVersion, showVersion} from './schema.js';
import {renderStats} from './stats.js';

const LAST_PROPERTY = 'consent-console:property';
const DEFAULT_DAYS = 30;

function statusOf(list, version) {
  if (list.cancelled_versions.includes(version)) return 'cancelled';
  if (list.pending_version === version) return 'pending';
  if (list.current_version === version) return 'current';
  return version < list.current_version ? 'superseded' : '';
}

function versionsTable(list) {
  const columns = ['Version', 'Status', 'Material', 'Published (UTC)', 'Takes effect (UTC)', 'Last material', 'Content hash', ''];
  const rows = [...list.items].sort((a, b) => b.version - a.version).map((version) => {
    const cells = [
      h('strong', {text: `v${version.version}`}),
      h('span', {class: `badge badge-status status-${statusOf(list, version.version)}`, text: statusOf(list, version.version)}),
      h('span', {class: version.material ? 'badge badge-material' : 'muted', text: version.material ? 'material' : 'not material'}),
      formatTime(version.published_at),
      formatTime(version.effective_at),
      `v${version.last_material_version}`,
      h('span', {class: 'mono', title: version.content_hash, text: `${version.content_hash.slice(0, 12)}…`}),
      h('button', {
        type: 'button', class: 'btn btn-small', 'aria-label': `Open version ${version.version}`,
        onclick: () => showVersion(list.property, version.version),
      }, 'Open'),
    ];
    return h('tr', {'data-version': version.version, 'data-material': String(version.material)},
      cells.map((cell, index) => h('td', {'data-label': columns[index] || 'Content'}, cell)));
  });
  return h('table', {class: 'table reflow versions', id: 'versions-table'},
    h('caption', {class: 'visually-hidden'}, `Schema versions of ${list.property}, newest first`),
    h('thead', {}, h('tr', {}, columns.map((label) => h('th', {scope: 'col', text: label})))),
    h('tbody', {}, rows));
}

function versionSelect(id, label, numbers, selected) {
  return h('div', {class: 'field field-narrow'},
    h('label', {for: id, text: label}),
    h('select', {id}, numbers.map((number) => {
      const option = h('option', {value: number, text: `v${number}`});
      option.selected = number === selected;
      return option;
    })));
}

async function compare(property) {
  const from = Number(byId('diff-from').value);
  const to = Number(byId('diff-to').value);
  const output = clear(byId('diff-output'));
  try {
    const [a, b] = await Promise.all([fetchVersion(property, from), fetchVersion(property, to)]);
    const result = renderDiff(computeDiff(a.content, b.content), from, to);
    output.append(result);
    result.focus();
  } catch (error) {
    fail(error);
  }
}

function renderVersions(list) {
  const numbers = list.items.map((item) => item.version).sort((a, b) => a - b);
  const to = list.current_version;
  const from = numbers.filter((number) => number < to).pop() || numbers[0];
  const container = clear(byId('property-versions'));
  container.append(h('section', {class: 'card', 'aria-labelledby': 'versions-title'},
    h('h2', {id: 'versions-title'}, `Schema versions of ${list.property}`),
    h('p', {class: 'muted'},
      `Current version v${list.current_version}; a banner holding a decision made before v${list.last_material_version} asks again.`),
    versionsTable(list),
    h('h3', {}, 'Compare two versions'),
    h('div', {class: 'fields fields-inline'},
      versionSelect('diff-from', 'From version', numbers, from),
      versionSelect('diff-to', 'To version', numbers, to),
      h('div', {class: 'field field-button'},
        h('button', {type: 'button', class: 'btn', id: 'diff-run', onclick: () => compare(list.property)}, 'Compare'))),
    h('div', {id: 'diff-output', 'aria-live': 'polite'})));
}

async function loadVersions(property) {
  try {
    const path = `/v1/properties/${encodeURIComponent(property)}/schema/versions`;
    renderVersions(await call('GET', path));
  } catch (error) {
    clear(byId('property-versions'));
    fail(error);
  }
}

async function loadStats(property, first, last) {
  const container = clear(byId('property-stats'));
  try {
    const page = await call('GET', `/v1/properties/${encodeURIComponent(property)}/stats`, {
      query: {since: `${first}T00:00:00Z`, until: `${nextDay(last)}T00:00:00Z`},
      scope: 'stats:read',
    });
    const section = h('section', {class: 'card', 'aria-labelledby': 'stats-title', id: 'stats-section'},
      h('h2', {id: 'stats-title'}, `Statistics of ${property}`));
    container.append(section);
    renderStats(section, page, first, last);
  } catch (error) {
    fail(error);
  }
}

async function show(event) {
  event.preventDefault();
  clearAlert();
  const form = byId('property-form').elements;
  const property = form.property.value.trim();
  const first = form.from.value;
  const last = form.to.value;
  if (last < first) {
    showAlert('The statistics range ends before it starts.', 'Choose a "To" day on or after the "from" day.');
    return;
  }
  sessionStorage.setItem(LAST_PROPERTY, property);
  const button = event.submitter;
  if (button) button.disabled = true;
  await Promise.all([loadVersions(property), loadStats(property, first, last)]);
  if (button) button.disabled = false;
}

export function setupProperties() {
  const form = byId('property-form');
  form.addEventListener('submit', show);
  form.elements.from.value = utcDay(-(DEFAULT_DAYS - 1));
  form.elements.to.value = utcDay(0);
  return {
    show() {
      const last = sessionStorage.getItem(LAST_PROPERTY);
      if (last && !form.elements.property.value) {
        form.elements.property.value = last;
        form.requestSubmit();
      }
    },
  };
}
