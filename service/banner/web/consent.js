/*! consent-record client 1.0.3 | served by the consent record service at /client/1.0.3/consent.js
 *
 * A dependency-free browser client for the consent record service (docs/banner.md). No build step:
 * load it with a <script> tag and call `ConsentRecord.create({api, property})`. It
 * - reads the property's consent schema on every page view, revalidated with its ETag (so a new
 *   version is seen within the service's own cache lag, whatever max-age says), and keeps the last
 *   copy for the next page view's first moments;
 * - creates and keeps the subject id, and the person's latest decision, in localStorage;
 * - records decisions with a client-chosen event_id, keeps what could not be sent (503, offline,
 *   page closed) in an outbox and sends it again, with the same id, on later page views for
 *   RETRY_DAYS; sends what is left as a JSON beacon when the page is hidden;
 * - applies GPC and DNT exactly as the service does: where the current schema version honours a
 *   signal that is present, every optional category is off while it is present; the decision
 *   itself is kept, and applies again when the signal stops;
 * - says whether the banner must ask again (no decision, expired, schema changed), and records
 *   `re-prompt` once when a banner shows itself again; until the person answers, only the
 *   required categories apply (the decision is kept, and its status with it);
 * - applies Google Consent Mode v2 from the schema's `google_consent_mode` when gtag is present.
 */
(function (global) {
  'use strict';

  var VERSION = '1.0.3';
  var RETRY_DAYS = 7; // how long an unsent event is kept and sent again
  var SIGNALS = ['gpc', 'dnt'];
  var GCM_TYPES = ['ad_storage', 'ad_user_data', 'ad_personalization', 'analytics_storage',
    'functionality_storage', 'personalization_storage', 'security_storage'];
  var DECISIONS = ['accept-all', 'reject-all', 'save-selection', 'withdraw'];
  // Answers after which sending the same event again cannot succeed: it is dropped (and logged).
  var FINAL = [400, 403, 404, 409, 413, 415, 422];

  function uuid4() {
    var c = global.crypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    var b = c.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join('');
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  }

  function Store(key) { this.key = key; }
  Store.prototype.read = function (suffix, fallback) {
    try {
      var raw = global.localStorage.getItem(this.key + suffix);
      return raw === null ? fallback : JSON.parse(raw);
    } catch (e) {
      return fallback; // storage disabled or a damaged value: start again
    }
  };
  Store.prototype.write = function (suffix, value) {
    try {
      global.localStorage.setItem(this.key + suffix, JSON.stringify(value));
    } catch (e) { /* storage full or disabled: this page view still works */ }
  };

  /** What the browser says about its privacy signals right now. */
  function browserSignals() {
    var nav = global.navigator || {};
    return {
      gpc: nav.globalPrivacyControl === true,
      dnt: nav.doNotTrack === '1' || global.doNotTrack === '1' || nav.msDoNotTrack === '1',
    };
  }

  function ConsentClient(options) {
    if (!options || !options.api || !options.property) {
      throw new TypeError('ConsentRecord.create needs {api, property}');
    }
    this.api = String(options.api).replace(/\/+$/, '');
    this.property = String(options.property);
    this.userId = options.userId || null;
    this.retryDays = options.retryDays || RETRY_DAYS;
    this.base = this.api + '/v1/properties/' + encodeURIComponent(this.property);
    this.store = new Store(options.storageKey || 'consent-record:' + this.property);
    this.listeners = [];
    this.beaconed = {};
    this.sentRecords = {};
    this.lastEffective = null;
    this.saved = this.store.read('', {});
    if (!this.saved.subject_id) {
      this.saved.subject_id = uuid4();
      this.store.write('', this.saved);
    }
    this.subjectId = this.saved.subject_id;
    this.schema = this.saved.schema || null; // the last copy, until the fresh one arrives
    if (typeof options.onChange === 'function') this.listeners.push(options.onChange);
    this.gtagDefaultSent = false;
    this.loaded = false; // what applies is known only once the schema is read again (below)
    this.applyGoogleConsentMode();

    var self = this;
    var hide = function () { self.sendBeacons(); };
    global.addEventListener('pagehide', hide);
    global.addEventListener('visibilitychange', function () {
      if (global.document && global.document.visibilityState === 'hidden') hide();
    });
    global.addEventListener('online', function () { self.flush(); });
    this.ready = this.loadSchema()
      .then(function () { return self.adoptServerDecision(); })
      .then(function () { return self.recordSignalDecision(); })
      .then(function () {
        self.loaded = true;
        self.changed(); // Google Consent Mode's first update
        self.flush(); // not awaited: the banner need not wait for old events
        return self;
      });
  }

  ConsentClient.prototype.version = VERSION;

  /** The current schema version, revalidated with the HTTP cache's ETag on every page view. */
  ConsentClient.prototype.loadSchema = function () {
    var self = this;
    return global.fetch(this.base + '/schema', { cache: 'no-cache', credentials: 'omit' })
      .then(function (response) {
        if (!response.ok) throw new Error('consent schema: HTTP ' + response.status);
        return response.json();
      })
      .then(function (schema) {
        self.schema = schema;
        self.saved.schema = schema;
        self.store.write('', self.saved);
        self.changed();
        return schema;
      }, function (error) {
        if (!self.schema) throw error; // nothing to show a banner from
        return self.schema; // offline: the last copy
      });
  };

  ConsentClient.prototype.categories = function () {
    return this.schema ? this.schema.content.categories : [];
  };

  ConsentClient.prototype.optionalKeys = function () {
    return this.categories().filter(function (c) { return !c.required; }).map(function (c) { return c.key; });
  };

  /**
   * The signals present now, and what the current version's policy does with them (gpc before
   * dnt): `applied` ones turn every optional category off while present (`true` / `apply`);
   * `recorded` ones are the person's refusal, recorded once as a decision (`record`).
   */
  ConsentClient.prototype.signals = function () {
    var present = browserSignals();
    var policy = this.schema ? this.schema.content.signals : {};
    return {
      gpc: present.gpc,
      dnt: present.dnt,
      applied: SIGNALS.filter(function (s) { return present[s] && (policy[s] === true || policy[s] === 'apply'); }),
      recorded: SIGNALS.filter(function (s) { return present[s] && policy[s] === 'record'; }),
    };
  };

  function presentSignals() {
    var present = browserSignals();
    return SIGNALS.filter(function (s) { return present[s]; });
  }

  /** The stored decision, or null. */
  ConsentClient.prototype.decision = function () {
    return this.saved.decision || null;
  };

  /** Whether the banner must ask: {ask, reasons} with reasons as the service names them. */
  ConsentClient.prototype.needsPrompt = function () {
    var d = this.decision();
    if (!d) return { ask: true, reasons: ['no-decision'] };
    var reasons = [];
    if (d.expires_at && Date.parse(d.expires_at) <= Date.now()) reasons.push('expired');
    if (this.schema && d.schema_version < this.schema.last_material_version) reasons.push('schema-changed');
    return { ask: reasons.length > 0, reasons: reasons };
  };

  /**
   * What applies now, per category of the current version: the decision's choices with the
   * honoured signals applied; only the required categories while the banner must ask again
   * (no decision, expired, or a material change: docs/banner.md, "Asking again").
   */
  ConsentClient.prototype.effective = function () {
    var d = this.decision();
    var valid = d && !this.needsPrompt().ask;
    var forcedOff = this.signals().applied.length > 0;
    var out = {};
    this.categories().forEach(function (c) {
      out[c.key] = c.required ? true : Boolean(valid && !forcedOff && d.choices[c.key] === true);
    });
    return out;
  };

  ConsentClient.prototype.accepted = function (key) {
    return this.effective()[key] === true;
  };

  /**
   * The status the decision establishes, with the honoured signals applied, as the service says
   * it: over the categories the decision was made on (its choices' keys; a category the current
   * version marks required is not optional), so a material change pending does not alter it.
   */
  ConsentClient.prototype.decisionStatus = function (d) {
    if (d.event_type === 'withdraw') return 'withdrawn';
    var required = {};
    this.categories().forEach(function (c) { required[c.key] = c.required; });
    var optional = Object.keys(d.choices).filter(function (k) { return required[k] !== true; });
    var forcedOff = this.signals().applied.length > 0;
    var on = optional.filter(function (k) { return !forcedOff && d.choices[k] === true; }).length;
    if (optional.length === 0) return d.event_type === 'reject-all' ? 'refused' : 'given';
    return on === optional.length ? 'given' : on ? 'partially-given' : 'refused';
  };

  /** Everything a banner needs to know, in one object. */
  ConsentClient.prototype.state = function () {
    var d = this.decision();
    var prompt = this.needsPrompt();
    var status = 'none';
    if (d) status = prompt.reasons.indexOf('expired') >= 0 ? 'expired' : this.decisionStatus(d);
    return {
      property: this.property,
      subject_id: this.subjectId,
      status: status,
      choices: d ? d.choices : null,
      effective: this.effective(),
      signals_applied: this.signals().applied,
      schema_version: d ? d.schema_version : null,
      current_version: this.schema ? this.schema.version : null,
      last_material_version: this.schema ? this.schema.last_material_version : null,
      decided_at: d ? d.decided_at : null,
      expires_at: d ? d.expires_at : null,
      needs_reprompt: prompt.ask,
      reprompt_reasons: prompt.reasons,
    };
  };

  /** The choices an event type makes, for every category of the current version. */
  ConsentClient.prototype.choicesFor = function (eventType, categories) {
    var out = {};
    this.categories().forEach(function (c) {
      if (c.required) out[c.key] = true;
      else if (eventType === 'accept-all') out[c.key] = true;
      else if (eventType === 'save-selection') out[c.key] = Boolean(categories && categories[c.key] === true);
      else out[c.key] = false;
    });
    return out;
  };

  /**
   * Record a decision: 'accept-all', 'reject-all', 'save-selection' (with {key: bool} for the
   * optional categories), 'withdraw'. The page's state changes at once; the returned promise
   * settles with the stored record, or null when the event is queued to be sent later.
   */
  ConsentClient.prototype.record = function (eventType, categories) {
    if (DECISIONS.indexOf(eventType) < 0) {
      return Promise.reject(new TypeError('not a decision: ' + eventType));
    }
    var self = this;
    return this.ready.then(function () { return self.decide(eventType, categories, 'banner'); });
  };

  ConsentClient.prototype.decide = function (eventType, categories, source) {
    var self = this;
    return Promise.resolve().then(function () {
      var schema = self.schema;
      var choices = self.choicesFor(eventType, categories);
      var body = self.eventBody(eventType, source);
      if (eventType === 'save-selection') {
        body.categories = {};
        self.optionalKeys().forEach(function (k) { body.categories[k] = choices[k]; });
      }
      var now = new Date();
      self.saved.decision = {
        event_id: body.event_id,
        event_type: eventType,
        schema_version: schema.version,
        choices: choices,
        decided_at: now.toISOString(),
        expires_at: new Date(now.getTime() + schema.content.consent_ttl_days * 86400000).toISOString(),
        source: source,
        signals: presentSignals(), // the signals it was made under
      };
      self.store.write('', self.saved);
      self.changed();
      return self.send(body);
    });
  };

  ConsentClient.prototype.acceptAll = function () { return this.record('accept-all'); };
  ConsentClient.prototype.rejectAll = function () { return this.record('reject-all'); };
  ConsentClient.prototype.save = function (categories) { return this.record('save-selection', categories); };
  ConsentClient.prototype.withdraw = function () { return this.record('withdraw'); };

  /**
   * Record that the banner was shown again because the decision expired or a material schema
   * change needs a new one; at most once per reason and decision. Resolves with the record, or
   * null when nothing was due.
   */
  ConsentClient.prototype.reprompt = function () {
    var self = this;
    return this.ready.then(function () {
      var prompt = self.needsPrompt();
      var d = self.decision();
      if (!d || !prompt.ask) return null; // a first banner is not shown *again*
      var key = prompt.reasons.join(',') + '@' + self.schema.last_material_version + '/' + d.event_id;
      if (self.saved.reprompted === key) return null;
      self.saved.reprompted = key;
      self.store.write('', self.saved);
      return self.send(self.eventBody('re-prompt'));
    });
  };

  ConsentClient.prototype.eventBody = function (eventType, source) {
    var signals = browserSignals();
    var body = {
      event_id: uuid4(),
      subject_id: this.subjectId,
      event_type: eventType,
      schema_version: this.schema.version,
      gpc: signals.gpc,
      dnt: signals.dnt,
    };
    if (source === 'signal') body.source = 'signal';
    if (global.location && /^https?:$/.test(global.location.protocol)) {
      body.page_url = global.location.origin + global.location.pathname; // the service drops the rest anyway
    }
    if (this.userId) body.user_id = String(this.userId);
    return body;
  };

  ConsentClient.prototype.outbox = function () {
    var cutoff = Date.now() - this.retryDays * 86400000;
    return this.store.read(':outbox', []).filter(function (item) { return item.queued_at >= cutoff; });
  };

  ConsentClient.prototype.send = function (body) {
    var box = this.outbox();
    box.push({ body: body, queued_at: Date.now() });
    this.store.write(':outbox', box);
    var self = this;
    return this.flush().then(function () { return self.sentRecords[body.event_id] || null; });
  };

  /**
   * Send the outbox in order (a later decision must not overtake an earlier one), stopping at the
   * first that cannot be sent now. Resolves with the number of events still waiting.
   */
  ConsentClient.prototype.flush = function () {
    var self = this;
    if (this.flushing) return this.flushing.then(function () { return self.flush(); });
    var run = function () {
      var box = self.outbox();
      if (!box.length) return Promise.resolve(0);
      var item = box[0];
      return global.fetch(self.base + '/consent-events', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(item.body),
        keepalive: true, // survives the page being closed right after a click
        credentials: 'omit',
        mode: 'cors',
      }).then(function (response) {
        if (response.ok) {
          return response.json().then(function (record) {
            self.sentRecords[record.event_id] = record;
            self.acknowledged(record);
            self.dequeue(item.body.event_id);
            return run();
          });
        }
        if (FINAL.indexOf(response.status) >= 0) {
          return response.text().then(function (detail) {
            if (global.console) global.console.warn('consent-record: event refused (' + response.status + '): ' + detail);
            self.dequeue(item.body.event_id);
            return run();
          });
        }
        return box.length; // 429, 503, …: later
      }, function () {
        return box.length; // offline or unreachable: later
      });
    };
    this.flushing = run().then(function (left) {
      self.flushing = null;
      return left;
    });
    return this.flushing;
  };

  ConsentClient.prototype.dequeue = function (eventId) {
    var box = this.store.read(':outbox', []).filter(function (item) { return item.body.event_id !== eventId; });
    this.store.write(':outbox', box);
  };

  /** The service's record of our latest decision: its time and expiry are the ones that count. */
  ConsentClient.prototype.acknowledged = function (record) {
    var d = this.saved.decision;
    if (d && d.event_id === record.event_id) {
      d.decided_at = record.recorded_at;
      d.expires_at = record.expires_at;
      d.acknowledged = true;
      this.store.write('', this.saved);
    }
  };

  /** Send whatever is unsent as JSON beacons (the page is being hidden or closed). */
  ConsentClient.prototype.sendBeacons = function () {
    var nav = global.navigator;
    var self = this;
    this.outbox().forEach(function (item) {
      var id = item.body.event_id;
      if (self.beaconed[id]) return;
      var blob = new Blob([JSON.stringify(item.body)], { type: 'application/json' });
      var sent = nav && typeof nav.sendBeacon === 'function' && nav.sendBeacon(self.base + '/consent-events', blob);
      if (!sent) {
        global.fetch(self.base + '/consent-events', {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(item.body), keepalive: true, credentials: 'omit', mode: 'cors',
        }).catch(function () { /* kept in the outbox for the next page view */ });
      }
      self.beaconed[id] = true; // still in the outbox: the next page view confirms it (200)
    });
  };

  /**
   * A decision the service holds that is newer than ours (a withdrawal the DSR team entered from
   * a letter) becomes ours. One conditional request per page view: a 304 while nothing changed.
   */
  ConsentClient.prototype.adoptServerDecision = function () {
    var self = this;
    var local = this.decision();
    if (!local || !local.acknowledged) return null; // nothing the service could know better
    return this.serverState().then(function (state) {
      if (!state.decided_at || !state.choices) return;
      if (Date.parse(state.decided_at) <= Date.parse(local.decided_at)) return;
      self.saved.decision = {
        event_id: null,
        event_type: state.event_type,
        schema_version: state.schema_version,
        choices: state.choices,
        decided_at: state.decided_at,
        expires_at: state.expires_at,
        source: state.source,
        signals: [],
        acknowledged: true,
      };
      self.store.write('', self.saved);
      self.changed();
    }, function () { /* unreachable now: the stored decision stands */ });
  };

  /**
   * Where the policy records a signal as the person's decision (`record`), the first page view
   * that sees it without a decision made under it records one reject-all from the signal;
   * nothing is recorded when the decision already refuses everything. A decision that has
   * lapsed, or that a material change asks again, counts as none: the signal answers for the
   * current version, and the banner does not ask.
   */
  ConsentClient.prototype.recordSignalDecision = function () {
    var recorded = this.signals().recorded;
    if (!recorded.length) return null;
    var d = this.decision();
    var holds = d && !this.needsPrompt().ask;
    var under = holds && d.signals ? d.signals : [];
    if (recorded.every(function (s) { return under.indexOf(s) >= 0; })) return null;
    var effective = this.effective();
    var refusing = d && !this.needsPrompt().ask &&
      this.optionalKeys().every(function (k) { return !effective[k]; });
    if (refusing) return null;
    return this.decide('reject-all', null, 'signal');
  };

  /** The service's view of this subject, with this page's signals applied (revalidated). */
  ConsentClient.prototype.serverState = function () {
    var s = browserSignals();
    var query = (s.gpc ? '?gpc=true' : '') + (s.dnt ? (s.gpc ? '&' : '?') + 'dnt=true' : '');
    return global.fetch(this.base + '/consents/' + this.subjectId + query, { credentials: 'omit', cache: 'no-cache' })
      .then(function (response) {
        if (!response.ok) throw new Error('consent state: HTTP ' + response.status);
        return response.json();
      });
  };

  /** Call `listener(state)` whenever what applies may have changed; returns the unsubscribe. */
  ConsentClient.prototype.onChange = function (listener) {
    var listeners = this.listeners;
    listeners.push(listener);
    return function () {
      var i = listeners.indexOf(listener);
      if (i >= 0) listeners.splice(i, 1);
    };
  };

  ConsentClient.prototype.changed = function () {
    this.applyGoogleConsentMode();
    var state = this.state();
    var key = JSON.stringify(state.effective) + state.status;
    if (key === this.lastEffective) return;
    this.lastEffective = key;
    this.listeners.forEach(function (listener) {
      try { listener(state); } catch (e) { if (global.console) global.console.error(e); }
    });
  };

  /**
   * gtag('consent', 'default' | 'update', …) from the schema's mapping, signals applied. The
   * default (all denied) goes at once, from the last copy of the schema; the first update waits
   * until the schema is read again and the service's decision adopted: the last copy may predate
   * a material change or a withdrawal, and must not grant anything meanwhile.
   */
  ConsentClient.prototype.applyGoogleConsentMode = function () {
    var mapping = this.schema && this.schema.content.google_consent_mode;
    if (!mapping || typeof global.gtag !== 'function') return;
    if (!this.gtagDefaultSent) {
      var defaults = {};
      GCM_TYPES.forEach(function (type) { defaults[type] = 'denied'; });
      defaults.wait_for_update = 500;
      global.gtag('consent', 'default', defaults);
      this.gtagDefaultSent = true;
    }
    if (!this.loaded) return;
    var effective = this.effective();
    var consent = {};
    GCM_TYPES.forEach(function (type) {
      consent[type] = mapping[type] && effective[mapping[type]] ? 'granted' : 'denied';
    });
    var key = JSON.stringify(consent);
    if (key === this.gtagSent) return;
    global.gtag('consent', 'update', consent);
    this.gtagSent = key;
  };

  global.ConsentRecord = {
    version: VERSION,
    retryDays: RETRY_DAYS,
    /** A client for one property: `ConsentRecord.create({api, property, userId?, onChange?})`. */
    create: function (options) { return new ConsentClient(options); },
  };
})(typeof window !== 'undefined' ? window : this);
