// The console's shell: sign-in and sign-out, the navigation (hash routes hold no data), the views.

import {ApiError, call, fail, forgetEverything, storedKey, storeKey, whenKeyRefused} from './api.js';
import {setupAudit} from './audit.js';
import {byId, clear, clearAlert, showStatus} from './dom.js';
import {setupPerson} from './person.js';
import {setupProperties} from './properties.js';
import {setupWithdraw} from './withdraw.js';

const ROUTES = {person: 'view-person', audit: 'view-audit', properties: 'view-properties'};
const DEFAULT_ROUTE = 'person';
const views = {}; // route → {show()} of the views that act when shown
let shown = null;

function routeName() {
  const name = location.hash.replace(/^#\/?/, '');
  return Object.hasOwn(ROUTES, name) ? name : DEFAULT_ROUTE;
}

function showView(id) {
  for (const view of document.querySelectorAll('.view')) view.hidden = view.id !== id;
}

function render() {
  const signedIn = Boolean(storedKey());
  byId('nav').hidden = !signedIn;
  byId('sign-out').hidden = !signedIn;
  if (!signedIn) {
    showView('view-signin');
    document.title = 'Sign in · Consent console';
    return;
  }
  const route = routeName();
  showView(ROUTES[route]);
  if (route !== shown) {
    shown = route;
    if (views[route] && views[route].show) views[route].show();
  }
  for (const link of byId('nav').querySelectorAll('a')) {
    if (link.dataset.route === route) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const heading = byId(ROUTES[route]).querySelector('h1');
  document.title = `${heading ? heading.textContent : 'Console'} · Consent console`;
}

async function signIn(event) {
  event.preventDefault();
  const input = byId('signin-key');
  const secret = input.value.trim().replace(/^Bearer\s+/i, '');
  if (!secret) return;
  storeKey(secret);
  clearAlert();
  // A key the service does not know is refused here, not at the first search. (The audit log
  // answers 403 to a valid key without audit:read: that key is fine.)
  try {
    await call('GET', '/v1/dsr/audit', {query: {limit: 1}, scope: 'audit:read'});
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 403) {
      forgetEverything();
      fail(error);
      input.focus();
      return;
    }
  }
  input.value = '';
  if (!location.hash) history.replaceState(null, '', `#/${DEFAULT_ROUTE}`);
  render();
  const heading = byId(ROUTES[routeName()]).querySelector('h1');
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

// What a view has shown: emptied when the service refuses the key, as a sign-out would.
const RESULTS = ['person-receipt', 'person-results', 'audit-results', 'property-versions', 'property-stats'];

/** The service refused the key mid-session (revoked): api.js has forgotten it; the sign-in form
 *  is back, and the failed call's alert says why. */
function keyRefused() {
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  for (const id of RESULTS) clear(byId(id));
  showStatus('');
  shown = null; // the view signed in to next acts as on a first visit
  render();
  byId('signin-key').focus();
}

function signOut() {
  forgetEverything();
  // A fresh page: nothing of what was shown (a person's events, the audit trail) stays in memory.
  location.replace(location.pathname);
}

function start() {
  byId('signin-form').addEventListener('submit', signIn);
  byId('sign-out').addEventListener('click', signOut);
  window.addEventListener('hashchange', () => {
    clearAlert();
    showStatus('');
    render();
  });
  for (const dialog of document.querySelectorAll('dialog')) {
    for (const button of dialog.querySelectorAll('[data-close]')) {
      button.addEventListener('click', () => dialog.close());
    }
  }
  whenKeyRefused(keyRefused);
  setupPerson();
  setupWithdraw();
  views.audit = setupAudit();
  views.properties = setupProperties();
  render();
  if (!storedKey()) byId('signin-key').focus();
}

start();
