// The documented HTTP API, same origin, with the key the user pasted (this tab's sessionStorage).

import {h, showAlert} from './dom.js';

const KEY = 'consent-console:key';

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function storeKey(secret) {
  sessionStorage.setItem(KEY, secret);
}

/** Sign-out: everything the console kept in this tab goes (the key, the last property). */
export function forgetEverything() {
  sessionStorage.clear();
}

// What the shell does once the service has refused the key (set by app.js).
let onKeyRefused = () => {};

/** `handler` runs when a call's key is refused (401), after the key has been forgotten. */
export function whenKeyRefused(handler) {
  onKeyRefused = handler;
}

/** An error answer of the API (RFC 9457 problem), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, problem, scope) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem;
    this.scope = scope;
  }
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== '') params.set(name, String(value));
  }
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}

async function problemOf(response) {
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try {
      const body = await response.json();
      if (body && typeof body === 'object') return body;
    } catch {
      // not JSON after all: described by its status below
    }
  }
  return {title: `HTTP ${response.status}`, detail: response.statusText || ''};
}

/**
 * One API call. `scope` names the scope the route needs (said in a 403's message); `raw` returns
 * the Response (a download) instead of its JSON. Throws ApiError.
 */
export async function call(method, path, {body, query, scope, raw} = {}) {
  const headers = {Accept: 'application/json, application/problem+json'};
  const key = storedKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (error) {
    throw new ApiError(0, {title: 'The service could not be reached', detail: String(error.message || error)}, scope);
  }
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response), scope);
    // A key refused mid-session (revoked) is forgotten at once and never sent again: each failed
    // key check counts toward the client address's 429 (docs/architecture.md, "Limits").
    if (response.status === 401 && key && storedKey() === key) {
      forgetEverything();
      onKeyRefused();
    }
    throw error;
  }
  return raw ? response : response.json();
}

/** `text` as a sentence: its own full stop, so the next one does not run into it. */
function sentence(text) {
  const trimmed = text.trim();
  return !trimmed || /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

/** What to tell the user about a failed call: title, detail and the invalid fields. */
export function describe(error) {
  if (!(error instanceof ApiError)) {
    return {title: 'Something went wrong in the console', detail: String(error && error.message || error), items: []};
  }
  const {status, problem} = error;
  const detail = sentence(typeof problem.detail === 'string' ? problem.detail : '');
  // One invalid field is already the detail; several are listed under it.
  const items = Array.isArray(problem.errors) && problem.errors.length > 1
    ? problem.errors.map((item) => `${item.pointer}: ${item.detail}`)
    : [];
  if (status === 401) {
    return {
      title: 'The API key is missing or invalid (401).',
      detail: `${detail} Sign in again with a valid key.`.trim(),
      items,
    };
  }
  if (status === 403 && problem.type && String(problem.type).endsWith('/forbidden')) {
    const named = /'([a-z]+:[a-z]+)'/.exec(detail);
    const scope = named ? named[1] : error.scope;
    return {
      title: `This API key lacks the scope ${scope || 'this action needs'} (403).`,
      detail: `${detail} Ask for a key with the ${scope} scope.`.trim(),
      items,
    };
  }
  const title = problem.title || `HTTP ${status}`;
  // The id the message asks to quote: the problem's `instance` (urn:request:…).
  const id = typeof problem.instance === 'string' ? problem.instance.replace(/^urn:request:/, '') : '';
  const quoted = status >= 500 && id ? `${detail} Request id: ${id}.`.trim() : detail;
  return {title: status ? `${title} (${status}).` : `${title}.`, detail: quoted, items};
}

/** Show a failed call in the alert area. */
export function fail(error) {
  const {title, detail, items} = describe(error);
  showAlert(title, detail, items);
}

/** Save a Blob as a file: an object URL and a click on an <a download>. */
export function saveBlob(blob, filename) {
  const href = URL.createObjectURL(blob);
  const link = h('a', {href, download: filename, class: 'visually-hidden'}, filename);
  document.body.append(link);
  link.click();
  link.remove();
  // The click has started the download; the URL may go once the browser has read it.
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}
