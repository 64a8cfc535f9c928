/*! consent-record × vanilla-cookieconsent 3 | 1.0.2 | served at /client/1.0.2/consent-cookieconsent.js
 *
 * Runs vanilla-cookieconsent v3 (load its cookieconsent.umd.js first) from the property's consent
 * schema and records every decision through the consent-record client (load consent.js first):
 *
 *   ConsentCookieConsent.run({api: 'https://consent.example.com', property: 'itsailor'});
 *
 * The whole cookieconsent configuration comes from the schema: one category per schema category
 * (required ones read-only), one preferences section per category with its cookie table (every
 * schema string escaped: cookieconsent inserts them as HTML, except the toggle's label, which it
 * sets as text and which is put back to the plain label here), `revision` = the last material
 * version, the expiry = `consent_ttl_days`, `autoClear` for the category's first-party cookies
 * only (`__Host-`/`__Secure-` ones are cleared here: cookieconsent cannot delete them).
 *
 * The event recorded is what the person did (docs/banner.md, "Which event a click records"):
 * the button pressed, not the set of categories it produced. "Accept all" is accept-all, "Reject
 * all" is reject-all, "Save" is save-selection even when it turns every category on; turning
 * off every optional category while a decision that allowed one stands (no new question
 * pending) is a withdraw.
 * A change the page makes itself (CookieConsent.acceptCategory) is recorded by what it produced.
 *
 * The client's stored decision is the truth; cookieconsent's own state is set from it before
 * cookieconsent runs, so its acceptedCategory() always agrees with the record. While a privacy
 * signal the policy honours is present (GPC, DNT), a click is recorded as made but only the
 * required categories are accepted, so no optional script ever runs; the preferences' toggles
 * show the person's standing decision meanwhile (the signal note says why those categories are
 * off), so a Save that changes nothing records that decision again, never a withdrawal.
 */
(function (global) {
  'use strict';

  var TEXTS = {
    consentTitle: 'Cookies on this site',
    consentDescription: 'We use strictly necessary cookies to run this site. With your consent we ' +
      'also use the optional categories you can review under “Customize”. You can change your ' +
      'choice at any time from “Cookie preferences”.',
    acceptAll: 'Accept all',
    rejectAll: 'Reject all',
    customize: 'Customize',
    preferencesTitle: 'Cookie preferences',
    preferencesIntro: 'Choose which optional categories you allow. Strictly necessary cookies are ' +
      'always on.',
    save: 'Save my choices',
    close: 'Close',
    policyLink: 'Cookie policy',
    signalNote: 'Your browser sends a privacy signal ({signals}) that this site honours: the ' +
      'optional categories stay off while it does.',
    revisionMessage: 'Our cookie policy has changed since you last chose: please choose again.',
    name: 'Name',
    provider: 'Provider',
    purpose: 'Purpose',
    duration: 'Duration',
  };
  var SIGNAL_NAMES = { gpc: 'Global Privacy Control', dnt: 'Do Not Track' };

  function escape(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  /** Each category's label by key, as the schema spells it (plain text, not HTML). */
  function labelsOf(schema) {
    var labels = Object.create(null);
    schema.content.categories.forEach(function (category) { labels[category.key] = category.label; });
    return labels;
  }

  function isPrefixed(name) { return /^__(Host|Secure)-/.test(name); }

  /** A schema cookie name as a cookieconsent rule: exact, or a glob (`_ga_*`) as a RegExp. */
  function cookieRule(name) {
    if (name.indexOf('*') < 0) return { name: name };
    var pattern = name.split('*').map(function (part) {
      return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    }).join('.*');
    return { name: new RegExp('^' + pattern + '$') };
  }

  function matches(rule, name) {
    return typeof rule.name === 'string' ? rule.name === name : rule.name.test(name);
  }

  /** cookieconsent's configuration for the client's current schema version. */
  function buildConfig(client, options) {
    var schema = client.schema;
    var content = schema.content;
    var texts = Object.assign({}, TEXTS, options.texts || {});
    var categories = {};
    var sections = [];
    var applied = client.signals().applied;
    if (applied.length) {
      var names = applied.map(function (s) { return SIGNAL_NAMES[s]; }).join(', ');
      sections.push({ description: texts.signalNote.replace('{signals}', escape(names)) });
    }
    sections.push({
      description: texts.preferencesIntro +
        ' <a href="' + escape(content.policy_url) + '">' + texts.policyLink + '</a>',
    });
    content.categories.forEach(function (category) {
      var own = category.cookies.filter(function (c) { return c.storage === 'cookie' && c.party === 'first'; });
      var clearable = own.filter(function (c) { return !isPrefixed(c.name); });
      categories[category.key] = { enabled: false, readOnly: category.required === true };
      if (!category.required && clearable.length) {
        categories[category.key].autoClear = { cookies: clearable.map(function (c) { return cookieRule(c.name); }) };
      }
      var section = {
        title: escape(category.label),
        description: escape(category.description),
        linkedCategory: category.key,
      };
      if (category.cookies.length) {
        section.cookieTable = {
          headers: { name: texts.name, provider: texts.provider, purpose: texts.purpose, duration: texts.duration },
          body: category.cookies.map(function (c) {
            return { name: escape(c.name), provider: escape(c.provider), purpose: escape(c.purpose), duration: escape(c.duration) };
          }),
        };
      }
      sections.push(section);
    });
    var lang = options.language || 'en';
    var translations = {};
    translations[lang] = {
      consentModal: {
        title: texts.consentTitle,
        description: texts.consentDescription + ' {{revisionMessage}}' +
          ' <a href="' + escape(content.policy_url) + '">' + texts.policyLink + '</a>',
        revisionMessage: texts.revisionMessage,
        acceptAllBtn: texts.acceptAll,
        acceptNecessaryBtn: texts.rejectAll,
        showPreferencesBtn: texts.customize,
      },
      preferencesModal: {
        title: texts.preferencesTitle,
        acceptAllBtn: texts.acceptAll,
        acceptNecessaryBtn: texts.rejectAll,
        savePreferencesBtn: texts.save,
        closeIconLabel: texts.close,
        sections: sections,
      },
    };
    return {
      revision: schema.last_material_version,
      cookie: {
        name: options.storageName || 'cc-' + client.property,
        expiresAfterDays: content.consent_ttl_days,
        useLocalStorage: true, // cookieconsent's copy; the client's store is the truth
      },
      // Reject and accept equally prominent (EDPB Guidelines 05/2020).
      guiOptions: {
        consentModal: { layout: 'box', position: 'bottom right', equalWeightButtons: true },
        preferencesModal: { layout: 'box', equalWeightButtons: true },
      },
      categories: categories,
      language: { default: lang, translations: translations },
    };
  }

  function Adapter(client, cookieconsent, config) {
    this.client = client;
    this.cc = cookieconsent;
    this.config = config;
    this.labels = labelsOf(client.schema); // the version buildConfig read
    this.role = null; // the button of the click being handled: all | necessary | save
    this.quiet = false; // set while the adapter itself changes cookieconsent's state
  }

  Adapter.prototype.optional = function () { return this.client.optionalKeys(); };

  /** What the person did: the button, or (for a change the page made) what it produced. */
  Adapter.prototype.eventType = function (role, chosen) {
    var optional = this.optional();
    var on = optional.filter(function (k) { return chosen[k]; }).length;
    // A withdrawal: the person, with no new question pending, turns off everything they had
    // allowed. Refusing when the banner asks again (expiry, schema change) is a new decision.
    var prior = this.client.decision();
    var standing = prior && !this.client.needsPrompt().ask;
    var priorOn = standing && optional.some(function (k) { return prior.choices[k] === true; });
    if (priorOn && on === 0) return 'withdraw';
    if (role === 'all') return 'accept-all';
    if (role === 'necessary') return 'reject-all';
    if (role === 'save') return 'save-selection';
    return on === optional.length && optional.length ? 'accept-all' : on ? 'save-selection' : 'reject-all';
  };

  Adapter.prototype.decide = function (role, chosen) {
    var type = this.eventType(role, chosen);
    return this.client.record(type, type === 'save-selection' ? chosen : undefined);
  };

  /** cookieconsent's state follows the client's decision (and the signals), before it runs. */
  Adapter.prototype.syncStoredState = function () {
    var name = this.config.cookie.name;
    var raw = null;
    try { raw = global.localStorage.getItem(name); } catch (e) { return; }
    if (raw === null) return;
    var decision = this.client.decision();
    var expired = this.client.needsPrompt().reasons.indexOf('expired') >= 0;
    var saved = null;
    try { saved = JSON.parse(raw); } catch (e) { /* damaged: removed below */ }
    if (!decision || expired || !saved || typeof saved !== 'object') {
      global.localStorage.removeItem(name); // no decision on record: the banner asks
      return;
    }
    var effective = this.client.effective();
    saved.categories = Object.keys(effective).filter(function (k) { return effective[k]; });
    global.localStorage.setItem(name, JSON.stringify(saved));
  };

  /** Accept exactly what is effective, without recording it (it is not a decision). */
  Adapter.prototype.acceptEffective = function () {
    var effective = this.client.effective();
    this.quiet = true;
    try {
      this.cc.acceptCategory(Object.keys(effective).filter(function (k) { return effective[k]; }));
    } finally {
      this.quiet = false;
    }
  };

  Adapter.prototype.onClick = function (event) {
    var target = event.target;
    var button = target && target.closest ? target.closest('#cc-main [data-role]') : null;
    if (!button) return;
    var role = button.getAttribute('data-role');
    if (role !== 'all' && role !== 'necessary' && role !== 'save') return;
    this.role = role;
    if (!this.client.signals().applied.length) return; // cookieconsent applies it; the callbacks record it
    // A signal applies: record the click as made, accept only what is effective, so that no
    // optional script runs, not even for a moment.
    event.preventDefault();
    event.stopImmediatePropagation();
    var chosen = this.chosen(role);
    this.role = null;
    this.decide(role, chosen);
    this.acceptEffective();
    this.cc.hidePreferences();
    this.cc.hide();
  };

  /**
   * While a signal applies and a decision stands, the preferences show that decision, not what
   * applies: cookieconsent sets the toggles from its accepted categories (all optional ones off
   * meanwhile), and a Save of those would record a withdrawal the person never made
   * (docs/banner.md, "Signals"). Runs on every opening (cookieconsent resets them on closing).
   */
  Adapter.prototype.showDecision = function () {
    var d = this.client.decision();
    if (!d || !this.client.signals().applied.length || this.client.needsPrompt().ask) return;
    var optional = this.optional();
    Array.prototype.forEach.call(
      global.document.querySelectorAll('#cc-main input.section__toggle'),
      function (input) {
        if (optional.indexOf(input.value) >= 0) input.checked = d.choices[input.value] === true;
      }
    );
  };

  /** The optional categories a button chooses (Save: the preference toggles). */
  Adapter.prototype.chosen = function (role) {
    var chosen = {};
    var toggles = {};
    Array.prototype.forEach.call(
      global.document.querySelectorAll('#cc-main input.section__toggle'),
      function (input) { toggles[input.value] = input.checked; }
    );
    this.optional().forEach(function (k) {
      chosen[k] = role === 'all' ? true : role === 'necessary' ? false : toggles[k] === true;
    });
    return chosen;
  };

  /**
   * cookieconsent sets each category toggle's label with textContent from the section title,
   * which is escaped HTML here, so "A & B" would read "A &amp; B" (and a label with a tag in it
   * would lose it): put the plain label back where it reads the escaped title built here (a
   * page's own sections, from `cookieconsent.language`, are left as they are). Again whenever
   * cookieconsent rebuilds the panel's body (setLanguage), which it does without onModalReady.
   */
  Adapter.prototype.labelToggles = function (modal) {
    var labels = this.labels;
    function relabel() {
      var toggles = modal.querySelectorAll('label.section__toggle-wrapper:not(.toggle-service)');
      Array.prototype.forEach.call(toggles, function (wrapper) {
        var input = wrapper.querySelector('input.section__toggle');
        var text = wrapper.querySelector('.toggle__label');
        if (!input || !text || !(input.value in labels)) return;
        var label = labels[input.value];
        if (text.textContent === escape(label)) text.textContent = label;
      });
    }
    relabel();
    if (global.MutationObserver) new global.MutationObserver(relabel).observe(modal, { childList: true });
  };

  /** cookieconsent saved a change (first consent or a later one): record it. */
  Adapter.prototype.saved = function () {
    if (this.quiet) return;
    var accepted = this.cc.getUserPreferences().acceptedCategories;
    var chosen = {};
    this.optional().forEach(function (k) { chosen[k] = accepted.indexOf(k) >= 0; });
    var role = this.role;
    this.role = null;
    this.decide(role, chosen);
    this.clearPrefixedCookies();
  };

  /** Delete the `__Host-`/`__Secure-` cookies of the categories that are off. */
  Adapter.prototype.clearPrefixedCookies = function () {
    var effective = this.client.effective();
    var rules = [];
    this.client.categories().forEach(function (category) {
      if (category.required || effective[category.key]) return;
      category.cookies.forEach(function (c) {
        if (c.storage === 'cookie' && c.party === 'first' && isPrefixed(c.name)) rules.push(cookieRule(c.name));
      });
    });
    if (!rules.length) return;
    global.document.cookie.split(';').forEach(function (pair) {
      var name = pair.split('=')[0].trim();
      if (!rules.some(function (rule) { return matches(rule, name); })) return;
      // A prefixed cookie is only deleted as it was set: Secure, Path=/, and no Domain for __Host-.
      global.document.cookie = name + '=; Path=/; Secure; Max-Age=0';
      if (name.indexOf('__Secure-') === 0) {
        global.document.cookie = name + '=; Path=/; Secure; Max-Age=0; Domain=' + global.location.hostname;
      }
    });
  };

  /**
   * Build cookieconsent's configuration from the schema and run it. `options`: api, property,
   * and optionally userId, language, texts (HTML, trusted), storageName (cookieconsent's
   * localStorage key), cookieconsent (extra configuration merged over the built one).
   * Resolves with the consent-record client once cookieconsent runs.
   */
  function run(options) {
    var cookieconsent = global.CookieConsent;
    if (!global.ConsentRecord) return Promise.reject(new Error('load consent.js before consent-cookieconsent.js'));
    if (!cookieconsent) return Promise.reject(new Error('load cookieconsent.umd.js before consent-cookieconsent.js'));
    var client = global.ConsentRecord.create({
      api: options.api, property: options.property, userId: options.userId, storageKey: options.storageKey,
    });
    return client.ready.then(function () {
      var config = buildConfig(client, options);
      var adapter = new Adapter(client, cookieconsent, config);
      adapter.syncStoredState();
      global.document.addEventListener('click', function (event) { adapter.onClick(event); }, true);
      // The banner asks exactly when the client says a decision is due: not after a decision
      // recorded from a signal, nor after one the DSR team entered.
      config.autoShow = client.needsPrompt().ask;
      var extra = options.cookieconsent || {};
      Object.assign(config, extra);
      // What the integration does on cookieconsent's events: a saved choice is recorded, a shown
      // banner is a re-prompt, the preferences show the decision (above), the toggles' labels
      // are set as the schema writes them.
      var ours = {
        onFirstConsent: function () { adapter.saved(); },
        onChange: function () { adapter.saved(); },
        onModalShow: function (event) {
          if (event.modalName === 'consentModal') client.reprompt();
          if (event.modalName === 'preferencesModal') adapter.showDecision();
        },
        onModalReady: function (event) {
          if (event.modalName === 'preferencesModal') adapter.labelToggles(event.modal);
        },
      };
      // Chained, not replaced: a page's own callback runs after ours, so passing one can never
      // stop a decision being recorded.
      Object.keys(ours).forEach(function (name) {
        var theirs = extra[name];
        config[name] = function (event) {
          ours[name](event);
          if (typeof theirs === 'function') return theirs(event);
        };
      });
      api.client = client;
      api.adapter = adapter;
      return Promise.resolve(cookieconsent.run(config)).then(function () {
        if (!client.needsPrompt().ask && !cookieconsent.validConsent()) adapter.acceptEffective();
        adapter.clearPrefixedCookies();
        return client;
      });
    });
  }

  var api = { version: '1.0.2', run: run, buildConfig: buildConfig, client: null, adapter: null };
  global.ConsentCookieConsent = api;
})(typeof window !== 'undefined' ? window : this);
