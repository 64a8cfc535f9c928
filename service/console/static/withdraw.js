// A withdrawal a person sent in writing (an email, a letter): POST /v1/dsr/withdrawals records a
// `withdraw` (source `dsr`, the key as actor) for every consent id and property with a decision
// (docs/console.md, docs/policies.md "Withdrawal in writing").

import {call, fail} from './api.js';
import {byId, clear, facts, openDialog} from './dom.js';

// The look-up the dialog was opened for, and what to do with the answer.
let asked = null;
// A withdrawal on its way: its button stays off whatever the form does meanwhile.
let withdrawing = false;

/** By consent id or account id, over all time: what the API takes (an address is shared). */
export function withdrawable(query) {
  return (query.subject_id !== undefined || query.user_id !== undefined) && !query.since && !query.until;
}

export function openWithdraw(query, described, done) {
  asked = {query, done};
  byId('withdraw-form').reset();
  clear(byId('withdraw-summary')).append(facts(described));
  renderConfirm();
  openDialog(byId('withdraw-dialog'), byId('withdraw-reference'), byId('withdraw-open'));
}

function renderConfirm() {
  byId('withdraw-confirm').disabled = withdrawing || !byId('withdraw-reference').value.trim();
  // Not closed while the withdrawal is on its way: its answer is shown when it comes.
  byId('withdraw-dialog').querySelector('[data-close]').disabled = withdrawing;
}

async function confirmWithdraw(event) {
  event.preventDefault();
  const reference = byId('withdraw-reference').value.trim();
  if (!reference || withdrawing || !asked) return;
  const {query, done} = asked;
  const body = {reference};
  for (const name of ['subject_id', 'user_id', 'property']) {
    if (query[name] !== undefined) body[name] = query[name];
  }
  withdrawing = true;
  renderConfirm();
  let result;
  try {
    result = await call('POST', '/v1/dsr/withdrawals', {body, scope: 'dsr:withdraw'});
  } catch (error) {
    fail(error);
    return;
  } finally {
    withdrawing = false;
    renderConfirm();
    byId('withdraw-dialog').close();
  }
  await done(result, reference);  // recorded: its receipt is shown whatever follows
}

export function setupWithdraw() {
  const form = byId('withdraw-form');
  form.addEventListener('submit', confirmWithdraw);
  form.addEventListener('input', renderConfirm);
  byId('withdraw-dialog').addEventListener('cancel', (event) => {
    if (withdrawing) event.preventDefault(); // Escape waits for the answer
  });
}
