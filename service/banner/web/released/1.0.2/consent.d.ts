// Types of the consent-record browser client 1.0.2 (consent.js) and its vanilla-cookieconsent
// integration (consent-cookieconsent.js). Served at /client/1.0.2/consent.d.ts.

export type EventType = 'accept-all' | 'reject-all' | 'save-selection' | 'withdraw' | 're-prompt';
export type Decision = Exclude<EventType, 're-prompt'>;
export type Signal = 'gpc' | 'dnt';
export type Source = 'banner' | 'signal' | 'dsr';
/** false: ignored; true / 'apply': optional categories off while present; 'record': recorded once as a reject-all. */
export type SignalHandling = boolean | 'apply' | 'record';
export type Status = 'given' | 'partially-given' | 'refused' | 'withdrawn' | 'expired' | 'none';
export type RepromptReason = 'no-decision' | 'expired' | 'schema-changed';
export type GoogleConsentType =
  | 'ad_storage' | 'ad_user_data' | 'ad_personalization' | 'analytics_storage'
  | 'functionality_storage' | 'personalization_storage' | 'security_storage';

export interface CookieEntry {
  name: string;
  provider: string;
  purpose: string;
  duration: string;
  party: 'first' | 'third';
  storage: 'cookie' | 'localStorage' | 'sessionStorage' | 'other';
}

export interface Category {
  key: string;
  label: string;
  description: string;
  required: boolean;
  cookies: CookieEntry[];
}

/** `GET /v1/properties/{property}/schema` */
export interface SchemaVersion {
  property: string;
  version: number;
  material: boolean;
  published_at: string;
  content_hash: string;
  last_material_version: number;
  content: {
    property: string;
    policy_url: string;
    consent_ttl_days: number;
    signals: Record<Signal, SignalHandling>;
    categories: Category[];
    google_consent_mode?: Partial<Record<GoogleConsentType, string>>;
  };
}

/** The stored record the service answers with (201, or 200 for a retry). */
export interface ConsentRecord {
  event_id: string;
  subject_id: string;
  property: string;
  event_type: EventType;
  schema_version: number;
  recorded_at: string;
  choices: Record<string, boolean>;
  effective: Record<string, boolean>;
  signals: { gpc: boolean; dnt: boolean; applied: Signal[] };
  source: Source;
  status: Status | null;
  expires_at: string | null;
}

/** The subject's state, as the client derives it (same shape as the state endpoint). */
export interface ConsentState {
  property: string;
  subject_id: string;
  status: Status;
  event_type?: Decision | null;
  source?: Source | null;
  choices: Record<string, boolean> | null;
  effective: Record<string, boolean>;
  signals_applied: Signal[];
  schema_version: number | null;
  current_version: number | null;
  last_material_version: number | null;
  decided_at: string | null;
  expires_at: string | null;
  needs_reprompt: boolean;
  reprompt_reasons: RepromptReason[];
}

export interface StoredDecision {
  /** null for a decision learnt from the service (a withdrawal the DSR team entered). */
  event_id: string | null;
  event_type: Decision;
  schema_version: number;
  choices: Record<string, boolean>;
  decided_at: string;
  expires_at: string;
  acknowledged?: boolean;
  source?: Source;
  /** The signals present when it was made. */
  signals?: Signal[];
}

export interface ClientOptions {
  /** The service's base URL, e.g. `https://consent.example.com`. */
  api: string;
  property: string;
  /** An account id: the service stores only its keyed hash. */
  userId?: string;
  /** localStorage key of the subject id and decision (default `consent-record:<property>`). */
  storageKey?: string;
  /** Days an unsent event is kept and sent again (default 7). */
  retryDays?: number;
  onChange?: (state: ConsentState) => void;
}

export interface ConsentClient {
  readonly version: string;
  readonly api: string;
  readonly property: string;
  readonly subjectId: string;
  /** Resolves once the schema is loaded (fresh, or the last copy when offline). */
  readonly ready: Promise<ConsentClient>;
  readonly schema: SchemaVersion | null;
  state(): ConsentState;
  /** Per category of the current version: the decision's choices, signals applied; only the
   * required categories while the banner must ask again (none, expired, schema changed). */
  effective(): Record<string, boolean>;
  accepted(category: string): boolean;
  decision(): StoredDecision | null;
  signals(): { gpc: boolean; dnt: boolean; applied: Signal[]; recorded: Signal[] };
  needsPrompt(): { ask: boolean; reasons: RepromptReason[] };
  optionalKeys(): string[];
  categories(): Category[];
  /** Record a decision; resolves with the stored record, or null when it is queued for later. */
  record(eventType: Decision, categories?: Record<string, boolean>): Promise<ConsentRecord | null>;
  acceptAll(): Promise<ConsentRecord | null>;
  rejectAll(): Promise<ConsentRecord | null>;
  save(categories: Record<string, boolean>): Promise<ConsentRecord | null>;
  withdraw(): Promise<ConsentRecord | null>;
  /** Record `re-prompt` once when a banner shows itself again (expired, schema changed). */
  reprompt(): Promise<ConsentRecord | null>;
  /** Send the unsent events; resolves with how many still wait. */
  flush(): Promise<number>;
  /** The service's state of this subject, with this page's signals applied. */
  serverState(): Promise<ConsentState>;
  onChange(listener: (state: ConsentState) => void): () => void;
}

export interface ConsentRecordGlobal {
  readonly version: string;
  readonly retryDays: number;
  create(options: ClientOptions): ConsentClient;
}

export interface CookieConsentOptions extends ClientOptions {
  language?: string;
  /** Texts of the banner (HTML, trusted); schema strings are always escaped. */
  texts?: Partial<Record<
    | 'consentTitle' | 'consentDescription' | 'acceptAll' | 'rejectAll' | 'customize'
    | 'preferencesTitle' | 'preferencesIntro' | 'save' | 'close' | 'policyLink' | 'signalNote'
    | 'revisionMessage' | 'name' | 'provider' | 'purpose' | 'duration', string>>;
  /** cookieconsent's own localStorage key (default `cc-<property>`). */
  storageName?: string;
  /** Extra cookieconsent configuration, merged over the built one. Its `onFirstConsent`,
   * `onChange`, `onModalShow` and `onModalReady` run after the integration's own (which record
   * the choice, the re-prompt, and set the toggles' labels as plain text), never instead. */
  cookieconsent?: Record<string, unknown>;
}

export interface ConsentCookieConsentGlobal {
  readonly version: string;
  run(options: CookieConsentOptions): Promise<ConsentClient>;
  buildConfig(client: ConsentClient, options: CookieConsentOptions): Record<string, unknown>;
  readonly client: ConsentClient | null;
}

declare global {
  interface Window {
    ConsentRecord: ConsentRecordGlobal;
    ConsentCookieConsent: ConsentCookieConsentGlobal;
  }
}
