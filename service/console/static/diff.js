// What changed between two versions' content, computed here from the two JSON documents:
// categories and cookies added, removed or changed, and every other field that changed.

import {h} from './dom.js';

/** JSON with sorted keys: two values are equal when these are. */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(',')}}`;
  }
  return JSON.stringify(value === undefined ? null : value);
}

function show(value) {
  if (value === undefined || value === null) return '(none)';
  return typeof value === 'string' ? value : canonical(value);
}

/** [{field, before, after}] for the keys of `a` and `b` (objects are followed one level in). */
function fieldChanges(a, b, skip = [], prefix = '') {
  const changes = [];
  const keys = [...new Set([...Object.keys(a || {}), ...Object.keys(b || {})])].filter((key) => !skip.includes(key));
  for (const key of keys) {
    const before = a ? a[key] : undefined;
    const after = b ? b[key] : undefined;
    if (canonical(before) === canonical(after)) continue;
    const nested = [before, after].every((value) => value && typeof value === 'object' && !Array.isArray(value));
    if (nested && !prefix) changes.push(...fieldChanges(before, after, [], `${key}.`));
    else changes.push({field: prefix + key, before: show(before), after: show(after)});
  }
  return changes;
}

function byKey(items, key) {
  return new Map(items.map((item) => [item[key], item]));
}

/** The differences from content `a` to content `b`. */
export function computeDiff(a, b) {
  const before = byKey(a.categories, 'key');
  const after = byKey(b.categories, 'key');
  const categories = {added: [], removed: [], changed: []};
  for (const [key, category] of after) if (!before.has(key)) categories.added.push(category);
  for (const [key, category] of before) if (!after.has(key)) categories.removed.push(category);
  for (const [key, category] of after) {
    if (!before.has(key)) continue;
    const changes = fieldChanges(before.get(key), category, ['cookies']);
    if (changes.length) categories.changed.push({key, label: category.label, changes});
  }
  // A cookie is known by its category and name.
  const cookiesOf = (content) => new Map(content.categories.flatMap((category) =>
    category.cookies.map((cookie) => [`${category.key}\u0000${cookie.name}`, {category: category.key, cookie}])));
  const oldCookies = cookiesOf(a);
  const newCookies = cookiesOf(b);
  const cookies = {added: [], removed: [], changed: []};
  for (const [id, entry] of newCookies) if (!oldCookies.has(id)) cookies.added.push(entry);
  for (const [id, entry] of oldCookies) if (!newCookies.has(id)) cookies.removed.push(entry);
  for (const [id, entry] of newCookies) {
    if (!oldCookies.has(id)) continue;
    const changes = fieldChanges(oldCookies.get(id).cookie, entry.cookie);
    if (changes.length) cookies.changed.push({...entry, changes});
  }
  const order = (content) => content.categories.map((category) => category.key).join(',');
  const other = fieldChanges(a, b, ['categories']);
  const commonBefore = a.categories.map((c) => c.key).filter((key) => after.has(key)).join(',');
  const commonAfter = b.categories.map((c) => c.key).filter((key) => before.has(key)).join(',');
  if (commonBefore !== commonAfter) {
    other.push({field: 'categories (order)', before: order(a), after: order(b)});
  }
  return {categories, cookies, other};
}

function changeList(changes) {
  return h('ul', {class: 'changes'}, changes.map((change) => h('li', {'data-field': change.field},
    h('code', {text: change.field}), ': ',
    h('del', {text: change.before}), ' → ', h('ins', {text: change.after}))));
}

function group(title, kind, items, render) {
  return h('section', {class: 'diff-group', 'data-diff': kind},
    h('h4', {}, `${title} `, h('span', {class: 'count', text: `(${items.length})`})),
    items.length ? h('ul', {class: 'diff-list'}, items.map(render)) : h('p', {class: 'muted'}, 'None.'));
}

/** The diff as a page section; `from` and `to` are the version numbers. */
export function renderDiff(diff, from, to) {
  const {categories, cookies, other} = diff;
  const total = categories.added.length + categories.removed.length + categories.changed.length +
    cookies.added.length + cookies.removed.length + cookies.changed.length + other.length;
  const cookieName = (entry) => [h('code', {text: entry.cookie.name}), ` in ${entry.category}`];
  return h('div', {class: 'diff', id: 'diff-result', tabindex: '-1'},
    h('p', {class: 'diff-summary'}, total
      ? `${total} difference${total === 1 ? '' : 's'} from version ${from} to version ${to}.`
      : `Versions ${from} and ${to} have the same content.`),
    h('div', {class: 'diff-grid'},
      group('Categories added', 'category-added', categories.added, (category) =>
        h('li', {'data-key': category.key, class: 'diff-added'}, h('code', {text: category.key}), ` ${category.label}`,
          ` (${category.required ? 'required' : 'optional'}, ${category.cookies.length} cookies)`)),
      group('Categories removed', 'category-removed', categories.removed, (category) =>
        h('li', {'data-key': category.key, class: 'diff-removed'}, h('code', {text: category.key}), ` ${category.label}`)),
      group('Categories changed', 'category-changed', categories.changed, (change) =>
        h('li', {'data-key': change.key}, h('code', {text: change.key}), changeList(change.changes))),
      group('Cookies added', 'cookie-added', cookies.added, (entry) =>
        h('li', {'data-key': entry.cookie.name, class: 'diff-added'}, cookieName(entry))),
      group('Cookies removed', 'cookie-removed', cookies.removed, (entry) =>
        h('li', {'data-key': entry.cookie.name, class: 'diff-removed'}, cookieName(entry))),
      group('Cookies changed', 'cookie-changed', cookies.changed, (entry) =>
        h('li', {'data-key': entry.cookie.name}, cookieName(entry), changeList(entry.changes))),
      group('Other fields changed', 'other', other, (change) =>
        h('li', {'data-key': change.field}, h('code', {text: change.field}), ': ',
          h('del', {text: change.before}), ' → ', h('ins', {text: change.after})))));
}
