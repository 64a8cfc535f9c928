// A schema version's content as the banner showed it: categories, cookies, policy and signals.

import {call, fail} from './api.js';
import {byId, clear, facts, formatTime, h, openDialog, yesNo} from './dom.js';

const versions = new Map(); // "property/version" → the version (immutable, so kept)

/** GET /v1/properties/{property}/schema/versions/{version}, once per version. */
export async function fetchVersion(property, version) {
  const key = `${property}/${version}`;
  if (!versions.has(key)) {
    const path = `/v1/properties/${encodeURIComponent(property)}/schema/versions/${encodeURIComponent(version)}`;
    versions.set(key, await call('GET', path));
  }
  return versions.get(key);
}

function signalText(value) {
  if (value === true || value === 'apply') return 'apply (optional categories off while present)';
  if (value === 'record') return 'record (a refusal, recorded once as the decision)';
  return 'ignored';
}

function externalLink(address) {
  // Only http(s) addresses become links; anything else is shown as text.
  try {
    const parsed = new URL(address);
    if (parsed.protocol === 'https:' || parsed.protocol === 'http:') {
      return h('a', {href: parsed.href, rel: 'noopener noreferrer', target: '_blank'}, address);
    }
  } catch {
    // not a URL: text
  }
  return h('span', {text: address});
}

const COOKIE_COLUMNS = [
  ['name', 'Name'], ['provider', 'Provider'], ['purpose', 'Purpose'],
  ['duration', 'Duration'], ['party', 'Party'], ['storage', 'Storage'],
];

function cookieTable(cookies) {
  if (!cookies.length) return h('p', {class: 'muted'}, 'No cookies or storage listed.');
  return h('table', {class: 'table reflow cookies'},
    h('thead', {}, h('tr', {}, COOKIE_COLUMNS.map(([, label]) => h('th', {scope: 'col', text: label})))),
    h('tbody', {}, cookies.map((cookie) => h('tr', {'data-cookie': cookie.name},
      COOKIE_COLUMNS.map(([name, label]) => h('td', {'data-label': label, class: name === 'name' ? 'mono break' : null, text: cookie[name]}))))));
}

/** The content of one version, as the banner showed it. */
export function renderContent(version) {
  const content = version.content;
  const mapping = content.google_consent_mode
    ? Object.entries(content.google_consent_mode).map(([type, category]) => `${type} ← ${category}`).join(', ')
    : 'not used';
  return h('div', {class: 'schema-content stack'},
    facts([
      ['Property', version.property],
      ['Version', version.version],
      ['Material', yesNo(version.material), 'material'],
      ['Published', formatTime(version.published_at)],
      ['Takes effect', formatTime(version.effective_at)],
      ['Last material version', version.last_material_version],
      ['Content hash', h('span', {class: 'mono break', text: version.content_hash})],
      ['Policy', externalLink(content.policy_url)],
      ['Decision valid for', `${content.consent_ttl_days} days`],
      ['GPC', signalText(content.signals.gpc)],
      ['DNT', signalText(content.signals.dnt)],
      ['Google Consent Mode', mapping],
    ], 'facts facts-compact'),
    h('h3', {}, `Categories (${content.categories.length})`),
    content.categories.map((category) => h('section', {class: 'category', 'data-category': category.key},
      h('h4', {},
        h('span', {text: category.label}), ' ',
        h('code', {text: category.key}), ' ',
        h('span', {class: `badge ${category.required ? 'badge-required' : 'badge-optional'}`,
          text: category.required ? 'required' : 'optional'})),
      h('p', {text: category.description}),
      cookieTable(category.cookies))));
}

/** Open the version dialog for property/version. */
export async function showVersion(property, version) {
  const dialog = byId('version-dialog');
  const body = byId('version-dialog-body');
  byId('version-dialog-title').textContent = `${property} · schema version ${version}`;
  clear(body).append(h('p', {class: 'muted'}, 'Loading…'));
  openDialog(dialog, dialog.querySelector('[data-close]'));
  try {
    const found = await fetchVersion(property, version);
    clear(body).append(renderContent(found));
  } catch (error) {
    dialog.close();
    fail(error);
  }
}
