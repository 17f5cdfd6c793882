// Target-side login/text key negotiation (RFC 7143 sections 6.2, 12, 13). Pure: no I/O.
import { LoginStatus, type LoginStatusValue } from './constants.js';

export type KeyType = 'boolean-and' | 'boolean-or' | 'numerical-min' | 'numerical-max' | 'list' | 'declarative' | 'string';
/** SW = session-wide, CO = connection-only. */
export type KeyScope = 'SW' | 'CO';
/** LO leading-only, IO initialize-only (login), FFPO full-feature only, ALL anywhere, IALL login + FFP. */
export type KeyUse = 'LO' | 'IO' | 'FFPO' | 'ALL' | 'IALL';
/** Who may send the key as an offer/declaration. */
export type KeySenders = 'Initiator' | 'Target' | 'Both';
/** security: only in the security stage; login: names allowed in any login stage; operational: operational stage (and FFP if use allows). */
export type KeyStage = 'security' | 'login' | 'operational';

export interface KeySpec {
  readonly type: KeyType;
  readonly scope: KeyScope;
  readonly use: KeyUse;
  readonly senders: KeySenders;
  readonly stage: KeyStage;
  /** Numerical range (inclusive). */
  readonly min?: number;
  readonly max?: number;
  /** Values defined for list / enumerated keys. */
  readonly values?: readonly string[];
  readonly default?: string;
  /** RFC "Irrelevant when: SessionType=Discovery". */
  readonly discoveryIrrelevant?: boolean;
  /** Obsoleted by RFC 7143 13.26 (markers). */
  readonly obsolete?: boolean;
}

const MAX_24 = 16_777_215;

/** Every key defined by RFC 7143 (plus CHAP keys, which chap.ts interprets). */
export const KEY_TABLE = {
  HeaderDigest: { type: 'list', scope: 'CO', use: 'IO', senders: 'Both', stage: 'operational', values: ['CRC32C', 'None'], default: 'None' },
  DataDigest: { type: 'list', scope: 'CO', use: 'IO', senders: 'Both', stage: 'operational', values: ['CRC32C', 'None'], default: 'None' },
  MaxConnections: { type: 'numerical-min', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', min: 1, max: 65535, default: '1', discoveryIrrelevant: true },
  SendTargets: { type: 'string', scope: 'SW', use: 'FFPO', senders: 'Initiator', stage: 'operational' },
  TargetName: { type: 'declarative', scope: 'SW', use: 'IALL', senders: 'Both', stage: 'login' },
  InitiatorName: { type: 'declarative', scope: 'SW', use: 'IO', senders: 'Initiator', stage: 'login' },
  TargetAlias: { type: 'declarative', scope: 'SW', use: 'ALL', senders: 'Target', stage: 'login' },
  InitiatorAlias: { type: 'declarative', scope: 'SW', use: 'ALL', senders: 'Initiator', stage: 'login' },
  TargetAddress: { type: 'declarative', scope: 'SW', use: 'ALL', senders: 'Target', stage: 'login' },
  TargetPortalGroupTag: { type: 'declarative', scope: 'SW', use: 'IO', senders: 'Target', stage: 'login', min: 0, max: 65535 },
  InitialR2T: { type: 'boolean-or', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', default: 'Yes', discoveryIrrelevant: true },
  ImmediateData: { type: 'boolean-and', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', default: 'Yes', discoveryIrrelevant: true },
  MaxRecvDataSegmentLength: { type: 'declarative', scope: 'CO', use: 'ALL', senders: 'Both', stage: 'operational', min: 512, max: MAX_24, default: '8192' },
  MaxBurstLength: { type: 'numerical-min', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', min: 512, max: MAX_24, default: '262144', discoveryIrrelevant: true },
  FirstBurstLength: { type: 'numerical-min', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', min: 512, max: MAX_24, default: '65536', discoveryIrrelevant: true },
  DefaultTime2Wait: { type: 'numerical-max', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', min: 0, max: 3600, default: '2' },
  DefaultTime2Retain: { type: 'numerical-min', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', min: 0, max: 3600, default: '20' },
  MaxOutstandingR2T: { type: 'numerical-min', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', min: 1, max: 65535, default: '1', discoveryIrrelevant: true },
  DataPDUInOrder: { type: 'boolean-or', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', default: 'Yes', discoveryIrrelevant: true },
  DataSequenceInOrder: { type: 'boolean-or', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', default: 'Yes', discoveryIrrelevant: true },
  ErrorRecoveryLevel: { type: 'numerical-min', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', min: 0, max: 2, default: '0' },
  SessionType: { type: 'declarative', scope: 'SW', use: 'LO', senders: 'Initiator', stage: 'login', values: ['Discovery', 'Normal'], default: 'Normal' },
  AuthMethod: { type: 'list', scope: 'CO', use: 'IO', senders: 'Both', stage: 'security', values: ['KRB5', 'SRP', 'CHAP', 'None'], default: 'None' },
  OFMarker: { type: 'boolean-and', scope: 'CO', use: 'IO', senders: 'Both', stage: 'operational', default: 'No', obsolete: true },
  IFMarker: { type: 'boolean-and', scope: 'CO', use: 'IO', senders: 'Both', stage: 'operational', default: 'No', obsolete: true },
  OFMarkInt: { type: 'numerical-min', scope: 'CO', use: 'IO', senders: 'Both', stage: 'operational', min: 1, max: 65535, default: '2048', obsolete: true },
  IFMarkInt: { type: 'numerical-min', scope: 'CO', use: 'IO', senders: 'Both', stage: 'operational', min: 1, max: 65535, default: '2048', obsolete: true },
  TaskReporting: { type: 'list', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', values: ['RFC3720', 'ResponseFence', 'FastAbort'], default: 'RFC3720', discoveryIrrelevant: true },
  iSCSIProtocolLevel: { type: 'numerical-min', scope: 'SW', use: 'LO', senders: 'Both', stage: 'operational', min: 0, max: 31, default: '1', discoveryIrrelevant: true },
  CHAP_A: { type: 'string', scope: 'CO', use: 'IO', senders: 'Both', stage: 'security' },
  CHAP_I: { type: 'string', scope: 'CO', use: 'IO', senders: 'Both', stage: 'security' },
  CHAP_C: { type: 'string', scope: 'CO', use: 'IO', senders: 'Both', stage: 'security' },
  CHAP_N: { type: 'string', scope: 'CO', use: 'IO', senders: 'Both', stage: 'security' },
  CHAP_R: { type: 'string', scope: 'CO', use: 'IO', senders: 'Both', stage: 'security' },
} as const satisfies Record<string, KeySpec>;

export type KnownKey = keyof typeof KEY_TABLE;

export function keySpec(key: string): KeySpec | undefined {
  return Object.hasOwn(KEY_TABLE, key) ? (KEY_TABLE as Record<string, KeySpec>)[key] : undefined;
}

/** X- (private) and X# (IANA-registered) extension keys; we implement none of them. */
export function isExtensionKey(key: string): boolean {
  return key.startsWith('X-') || key.startsWith('X#');
}

export type DigestName = 'None' | 'CRC32C';
export type AuthMethodName = 'CHAP' | 'None';
export type SessionTypeName = 'Normal' | 'Discovery';
export type LoginNegotiationStage = 'security' | 'operational';

export interface TargetNegotiationConfig {
  /** What the target can receive per PDU; declared to the initiator. */
  readonly maxRecvDataSegmentLength: number;
  readonly maxBurstLength: number;
  readonly firstBurstLength: number;
  readonly maxOutstandingR2T: number;
  readonly immediateData: boolean;
  /** false: the target accepts unsolicited Data-Out (result is OR). */
  readonly initialR2T: boolean;
  /** false only if the target can take Data-Out PDUs out of order (result is OR). */
  readonly dataPDUInOrder: boolean;
  readonly dataSequenceInOrder: boolean;
  /** Acceptable digests; order is the target's preference when it must offer. */
  readonly headerDigest: readonly DigestName[];
  readonly dataDigest: readonly DigestName[];
  readonly maxConnections: number;
  readonly errorRecoveryLevel: number;
  readonly defaultTime2Wait: number;
  readonly defaultTime2Retain: number;
  /** Acceptable auth methods; without 'None' authentication is mandatory. */
  readonly authMethods: readonly AuthMethodName[];
  readonly targetPortalGroupTag: number;
  /** RFC 7143 = 1. */
  readonly iscsiProtocolLevel: number;
}

export const DEFAULT_TARGET_CONFIG: TargetNegotiationConfig = {
  maxRecvDataSegmentLength: 262_144,
  maxBurstLength: 1_048_576,
  firstBurstLength: 262_144,
  maxOutstandingR2T: 8,
  immediateData: true,
  initialR2T: false,
  dataPDUInOrder: true,
  dataSequenceInOrder: true,
  headerDigest: ['None', 'CRC32C'],
  dataDigest: ['None', 'CRC32C'],
  maxConnections: 1,
  errorRecoveryLevel: 0,
  defaultTime2Wait: 2,
  defaultTime2Retain: 0,
  authMethods: ['None'],
  targetPortalGroupTag: 1,
  iscsiProtocolLevel: 1,
};

/** Returns a problem with the config (out of RFC range, inconsistent) or undefined. */
export function validateTargetConfig(c: TargetNegotiationConfig): string | undefined {
  const ranges: Array<[string, number]> = [
    ['MaxRecvDataSegmentLength', c.maxRecvDataSegmentLength],
    ['MaxBurstLength', c.maxBurstLength],
    ['FirstBurstLength', c.firstBurstLength],
    ['MaxOutstandingR2T', c.maxOutstandingR2T],
    ['MaxConnections', c.maxConnections],
    ['ErrorRecoveryLevel', c.errorRecoveryLevel],
    ['DefaultTime2Wait', c.defaultTime2Wait],
    ['DefaultTime2Retain', c.defaultTime2Retain],
    ['TargetPortalGroupTag', c.targetPortalGroupTag],
    ['iSCSIProtocolLevel', c.iscsiProtocolLevel],
  ];
  for (const [key, v] of ranges) {
    const s = keySpec(key);
    if (!Number.isInteger(v) || (s?.min !== undefined && v < s.min) || (s?.max !== undefined && v > s.max)) return `${key}=${v} out of range`;
  }
  if (c.firstBurstLength > c.maxBurstLength) return 'FirstBurstLength must not exceed MaxBurstLength';
  if (c.headerDigest.length === 0 || c.dataDigest.length === 0) return 'digest lists must not be empty';
  if (c.authMethods.length === 0) return 'authMethods must not be empty';
  return undefined;
}

export interface NegotiatedParams {
  readonly headerDigest: DigestName;
  readonly dataDigest: DigestName;
  readonly maxConnections: number;
  readonly initialR2T: boolean;
  readonly immediateData: boolean;
  readonly maxBurstLength: number;
  readonly firstBurstLength: number;
  readonly defaultTime2Wait: number;
  readonly defaultTime2Retain: number;
  readonly maxOutstandingR2T: number;
  readonly dataPDUInOrder: boolean;
  readonly dataSequenceInOrder: boolean;
  readonly errorRecoveryLevel: number;
  readonly iscsiProtocolLevel: number;
  /** What the target declared it can receive (8192 if it never got to declare). */
  readonly maxRecvDataSegmentLength: number;
  /** What the initiator declared it can receive = the most the target may send (default 8192). */
  readonly maxXmitDataSegmentLength: number;
  readonly sessionType: SessionTypeName;
  readonly authMethod: AuthMethodName;
  /** Empty until declared. */
  readonly initiatorName: string;
  readonly initiatorAlias?: string;
  readonly targetName?: string;
}

export interface NegotiationError {
  readonly status: LoginStatusValue;
  readonly message: string;
}

export interface NegotiationResult {
  /** Keys to send back, in offer order. */
  readonly response: Array<[string, string]>;
  /** CHAP_* keys of this request, for TargetChap.step(). */
  readonly security: ReadonlyMap<string, string>;
  /** Set when the login must fail with this status. */
  readonly error?: NegotiationError;
}

export interface FullFeatureResult {
  readonly response: Array<[string, string]>;
  /** Params with the initiator's new MaxRecvDataSegmentLength applied. */
  readonly params: NegotiatedParams;
  /** Value of SendTargets when asked (the caller answers it). */
  readonly sendTargets?: string;
}

// ---- value parsing (RFC 7143 5.1) ------------------------------------------------------

const DEC_RE = /^[0-9]+$/;
const HEX_RE = /^0[xX][0-9a-fA-F]+$/;

/** numerical-value: decimal or 0x hex, < 2^64. Returns undefined if malformed or above 2^53. */
export function parseNumerical(value: string): number | undefined {
  if (!DEC_RE.test(value) && !HEX_RE.test(value)) return undefined;
  const n = BigInt(value);
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : undefined;
}

export function parseBoolean(value: string): boolean | undefined {
  return value === 'Yes' ? true : value === 'No' ? false : undefined;
}

const yesNo = (b: boolean): string => (b ? 'Yes' : 'No');

/** Constants that are answers, never offers. */
const RESERVED = new Set(['Reject', 'Irrelevant', 'NotUnderstood']);

function inRange(spec: KeySpec, n: number): boolean {
  return (spec.min === undefined || n >= spec.min) && (spec.max === undefined || n <= spec.max);
}

/** Acceptor side of a list key: first of the originator's values we support (RFC 7143 6.2.1). */
export function selectFromList(offer: string, supported: readonly string[]): string | undefined {
  for (const v of offer.split(',')) if (supported.includes(v)) return v;
  return undefined;
}

const MAX_NAME_BYTES = 223;

/** Light iSCSI name check (RFC 7143 4.2.7): iqn./eui./naa. prefix and ≤ 223 bytes. */
export function isIscsiName(name: string): boolean {
  return Buffer.byteLength(name) <= MAX_NAME_BYTES && /^(iqn\.|eui\.|naa\.)\S+$/i.test(name);
}

function protocolError(message: string): NegotiationError {
  return { status: LoginStatus.InitiatorError, message };
}

// Keys the target proposes itself when the RFC default would exceed what it can do.
const TARGET_OFFERABLE = ['HeaderDigest', 'DataDigest', 'ImmediateData', 'MaxBurstLength', 'FirstBurstLength'] as const;

/**
 * Negotiation state for one login (leading connection). Call negotiate() for each
 * reassembled Login Request text; the caller handles CHAP (via `security`), stage
 * transitions, and adds firstResponseKeys()/finalDeclarations() to responses.
 */
export class LoginNegotiator {
  readonly #cfg: TargetNegotiationConfig;
  /** Negotiated (result) values by key. */
  readonly #values = new Map<string, string>();
  /** Keys seen from the initiator in this login (renegotiation detection). */
  readonly #seen = new Set<string>();
  /** Keys the target offered and awaits an answer for. */
  readonly #offered = new Map<string, string>();
  #sessionType: SessionTypeName = 'Normal';
  #authMethod: AuthMethodName | undefined;
  #initiatorName = '';
  #initiatorAlias: string | undefined;
  #targetName: string | undefined;
  #declaredMrdsl = false;
  #sentTpgt = false;
  #offersMade = false;
  /** AuthMethod had no acceptable value: fail after answering (RFC 7143 12.1). */
  #authFailed = false;

  constructor(config: Partial<TargetNegotiationConfig> = {}) {
    const cfg = { ...DEFAULT_TARGET_CONFIG, ...config };
    const problem = validateTargetConfig(cfg);
    if (problem !== undefined) throw new RangeError(`invalid target negotiation config: ${problem}`);
    this.#cfg = cfg;
  }

  get config(): TargetNegotiationConfig {
    return this.#cfg;
  }
  get sessionType(): SessionTypeName {
    return this.#sessionType;
  }
  /** Chosen AuthMethod, undefined until negotiated. */
  get authMethod(): AuthMethodName | undefined {
    return this.#authMethod;
  }
  /** True when config does not allow AuthMethod=None: the login must not leave security stage without CHAP. */
  get authRequired(): boolean {
    return !this.#cfg.authMethods.includes('None');
  }
  get initiatorName(): string | undefined {
    return this.#initiatorName === '' ? undefined : this.#initiatorName;
  }
  get initiatorAlias(): string | undefined {
    return this.#initiatorAlias;
  }
  get targetName(): string | undefined {
    return this.#targetName;
  }
  /** True while a target offer awaits the initiator's answer (do not let the login finish). */
  get awaitingAnswers(): boolean {
    return this.#offered.size > 0;
  }

  /**
   * RFC 7143 6.3 / 13.4-13.5: the first Login Request must carry InitiatorName, and
   * TargetName for a Normal session. Call after negotiating the first request.
   */
  missingNames(): NegotiationError | undefined {
    if (this.#initiatorName === '') return { status: LoginStatus.MissingParameter, message: 'InitiatorName missing' };
    if (this.#sessionType === 'Normal' && this.#targetName === undefined) {
      return { status: LoginStatus.MissingParameter, message: 'TargetName missing for a Normal session' };
    }
    return undefined;
  }

  /**
   * RFC 7143 13.9: TargetPortalGroupTag goes in the first Login Response of a Normal
   * session. Returns it once (call after negotiating the first request), then [].
   */
  firstResponseKeys(): Array<[string, string]> {
    if (this.#sentTpgt || this.#sessionType !== 'Normal') return [];
    this.#sentTpgt = true;
    return [['TargetPortalGroupTag', String(this.#cfg.targetPortalGroupTag)]];
  }

  /**
   * Keys the target must still send in the operational stage (call when building an
   * operational-stage response; returns each key once): its MaxRecvDataSegmentLength
   * declaration, plus offers for LO/IO keys the initiator left at an RFC default the
   * target cannot accept (e.g. ImmediateData when configured off). Offers must then be
   * answered by the initiator (see awaitingAnswers).
   */
  finalDeclarations(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    if (!this.#declaredMrdsl) {
      this.#declaredMrdsl = true;
      out.push(['MaxRecvDataSegmentLength', String(this.#cfg.maxRecvDataSegmentLength)]);
    }
    if (this.#offersMade) return out;
    this.#offersMade = true;
    if (this.#sessionType === 'Normal') {
      for (const key of TARGET_OFFERABLE) {
        if (this.#seen.has(key)) continue;
        const offer = this.#targetOffer(key);
        if (offer === undefined) continue;
        this.#offered.set(key, offer);
        this.#seen.add(key);
        out.push([key, offer]);
      }
    } else {
      for (const key of ['HeaderDigest', 'DataDigest'] as const) {
        if (this.#seen.has(key)) continue;
        const offer = this.#targetOffer(key);
        if (offer === undefined) continue;
        this.#offered.set(key, offer);
        this.#seen.add(key);
        out.push([key, offer]);
      }
    }
    return out;
  }

  /** The target's own offer for a key whose default it cannot live with, if any. */
  #targetOffer(key: (typeof TARGET_OFFERABLE)[number]): string | undefined {
    const c = this.#cfg;
    switch (key) {
      case 'HeaderDigest':
        return c.headerDigest.includes('None') ? undefined : c.headerDigest.join(',');
      case 'DataDigest':
        return c.dataDigest.includes('None') ? undefined : c.dataDigest.join(',');
      case 'ImmediateData':
        return c.immediateData ? undefined : 'No';
      case 'MaxBurstLength':
        return c.maxBurstLength < this.#num('MaxBurstLength') ? String(c.maxBurstLength) : undefined;
      case 'FirstBurstLength': {
        if (this.#firstBurstIrrelevant()) return undefined;
        const limit = Math.min(c.firstBurstLength, this.#num('MaxBurstLength'), c.maxBurstLength);
        return limit < this.#num('FirstBurstLength') ? String(limit) : undefined;
      }
    }
  }

  #num(key: KnownKey): number {
    const v = this.#values.get(key) ?? keySpec(key)?.default ?? '0';
    return parseNumerical(v) ?? 0;
  }

  #bool(key: KnownKey): boolean {
    return (this.#values.get(key) ?? keySpec(key)?.default) === 'Yes';
  }

  #firstBurstIrrelevant(): boolean {
    return this.#bool('InitialR2T') && !this.#bool('ImmediateData');
  }

  /**
   * Answer one (reassembled) Login Request's keys. On error the login must be rejected
   * with error.status; `response` is then only informative.
   */
  negotiate(pairs: Iterable<readonly [string, string]>, stage: LoginNegotiationStage): NegotiationResult {
    const list = [...pairs];
    const response: Array<[string, string]> = [];
    const security = new Map<string, string>();
    const done = (error?: NegotiationError): NegotiationResult =>
      error === undefined ? { response, security } : { response, security, error };

    // SessionType is processed first: it decides which keys are irrelevant in this same request.
    for (const [k, v] of list) {
      if (k !== 'SessionType') continue;
      if (v !== 'Normal' && v !== 'Discovery') {
        return done({ status: LoginStatus.SessionTypeNotSupported, message: `SessionType=${v} not supported` });
      }
    }
    // FirstBurstLength last: its relevance depends on InitialR2T/ImmediateData results.
    const rank = (k: string): number => (k === 'SessionType' ? 0 : k === 'FirstBurstLength' ? 2 : 1);
    const ordered = [...list].sort((a, b) => rank(a[0]) - rank(b[0])); // stable sort keeps offer order otherwise
    const answers = new Map<string, string>();

    for (const [key, value] of ordered) {
      if (isExtensionKey(key)) {
        answers.set(key, 'NotUnderstood');
        continue;
      }
      const spec = keySpec(key);
      if (spec === undefined) {
        answers.set(key, 'NotUnderstood');
        continue;
      }
      if (key.startsWith('CHAP_')) {
        if (stage !== 'security') return done(protocolError(`${key} outside security stage`));
        security.set(key, value);
        continue;
      }
      if (spec.senders === 'Target') return done(protocolError(`${key} may only be sent by the target`));
      if (spec.use === 'FFPO') return done(protocolError(`${key} is not allowed during login`));
      if (spec.stage === 'security' && stage !== 'security') return done(protocolError(`${key} outside security stage`));
      // RFC 7143 12: only security keys and the login names may appear in the security stage.
      if (spec.stage === 'operational' && stage === 'security') return done(protocolError(`${key} not allowed in security stage`));

      const offered = this.#offered.get(key);
      if (offered !== undefined) {
        // The initiator's answer to our own offer; no reply.
        const err = this.#acceptAnswer(key, offered, value);
        if (err !== undefined) return done(err);
        continue;
      }
      if (this.#seen.has(key)) return done(protocolError(`${key} negotiated more than once`));
      this.#seen.add(key);

      const result = this.#answer(key, spec, value);
      if (typeof result === 'object') return done(result);
      if (result !== '') answers.set(key, result);
    }
    // Answer in the initiator's order.
    for (const [k] of list) {
      const a = answers.get(k);
      if (a !== undefined) response.push([k, a]);
    }
    if (this.#authFailed) return done({ status: LoginStatus.AuthenticationFailure, message: 'no acceptable AuthMethod offered' });
    return done();
  }

  /** Returns the answer ('' for none) or an error. */
  #answer(key: string, spec: KeySpec, value: string): string | NegotiationError {
    const c = this.#cfg;
    switch (key) {
      case 'SessionType':
        this.#sessionType = value as SessionTypeName;
        return '';
      case 'InitiatorName':
        if (value.length === 0 || Buffer.byteLength(value) > MAX_NAME_BYTES) return protocolError('invalid InitiatorName');
        this.#initiatorName = value;
        return '';
      case 'TargetName':
        if (value.length === 0 || Buffer.byteLength(value) > MAX_NAME_BYTES) return protocolError('invalid TargetName');
        this.#targetName = value;
        return '';
      case 'InitiatorAlias':
        this.#initiatorAlias = value;
        return '';
      case 'AuthMethod': {
        const chosen = selectFromList(value, c.authMethods);
        if (chosen === undefined) {
          this.#authFailed = true;
          return 'Reject';
        }
        this.#authMethod = chosen as AuthMethodName;
        this.#values.set(key, chosen);
        return chosen;
      }
      case 'MaxRecvDataSegmentLength': {
        const n = parseNumerical(value);
        if (n === undefined || n < 512) return protocolError(`invalid MaxRecvDataSegmentLength=${value}`);
        // Larger than the RFC maximum cannot hurt us: we just never send that much.
        this.#values.set(key, String(Math.min(n, MAX_24)));
        return '';
      }
      case 'OFMarker':
      case 'IFMarker':
        // RFC 7143 13.26: SHOULD Reject, MAY answer No, MUST NOT NotUnderstood. "No" is what
        // RFC 3720 initiators (which still send these) expect as a negotiated result.
        return 'No';
      case 'OFMarkInt':
      case 'IFMarkInt':
        return 'Reject';
    }
    if (spec.discoveryIrrelevant === true && this.#sessionType === 'Discovery') return 'Irrelevant';
    if (key === 'FirstBurstLength' && this.#firstBurstIrrelevant()) return 'Irrelevant';
    if (RESERVED.has(value)) return 'Reject';

    switch (spec.type) {
      case 'boolean-and':
      case 'boolean-or': {
        const b = parseBoolean(value);
        if (b === undefined) return 'Reject';
        const mine = this.#targetBool(key);
        const r = spec.type === 'boolean-and' ? b && mine : b || mine;
        this.#values.set(key, yesNo(r));
        return yesNo(r);
      }
      case 'numerical-min':
      case 'numerical-max': {
        const n = parseNumerical(value);
        if (n === undefined || !inRange(spec, n)) return 'Reject';
        let r = spec.type === 'numerical-min' ? Math.min(n, this.#targetNum(key)) : Math.max(n, this.#targetNum(key));
        // FirstBurstLength must not exceed MaxBurstLength (RFC 7143 13.14).
        if (key === 'FirstBurstLength') r = Math.min(r, this.#num('MaxBurstLength'));
        this.#values.set(key, String(r));
        return String(r);
      }
      case 'list': {
        const chosen = selectFromList(value, this.#targetList(key));
        if (chosen === undefined) return 'Reject';
        this.#values.set(key, chosen);
        return chosen;
      }
      case 'declarative':
      case 'string':
        return 'Reject';
    }
  }

  #targetBool(key: string): boolean {
    const c = this.#cfg;
    switch (key) {
      case 'InitialR2T':
        return c.initialR2T;
      case 'ImmediateData':
        return c.immediateData;
      case 'DataPDUInOrder':
        return c.dataPDUInOrder;
      case 'DataSequenceInOrder':
        return c.dataSequenceInOrder;
      default:
        return false;
    }
  }

  #targetNum(key: string): number {
    const c = this.#cfg;
    switch (key) {
      case 'MaxConnections':
        return c.maxConnections;
      case 'MaxBurstLength':
        return c.maxBurstLength;
      case 'FirstBurstLength':
        return c.firstBurstLength;
      case 'DefaultTime2Wait':
        return c.defaultTime2Wait;
      case 'DefaultTime2Retain':
        return c.defaultTime2Retain;
      case 'MaxOutstandingR2T':
        return c.maxOutstandingR2T;
      case 'ErrorRecoveryLevel':
        return c.errorRecoveryLevel;
      case 'iSCSIProtocolLevel':
        return c.iscsiProtocolLevel;
      default:
        return 0;
    }
  }

  #targetList(key: string): readonly string[] {
    switch (key) {
      case 'HeaderDigest':
        return this.#cfg.headerDigest;
      case 'DataDigest':
        return this.#cfg.dataDigest;
      case 'TaskReporting':
        return ['RFC3720'];
      default:
        return [];
    }
  }

  /** Validate the initiator's answer to a target offer and record it. */
  #acceptAnswer(key: string, offer: string, answer: string): NegotiationError | undefined {
    this.#offered.delete(key);
    const spec = keySpec(key);
    let ok = false;
    if (spec?.type === 'list') ok = offer.split(',').includes(answer);
    else if (spec?.type === 'boolean-and') ok = answer === 'No';
    else if (spec?.type === 'numerical-min') {
      const n = parseNumerical(answer);
      ok = n !== undefined && inRange(spec, n) && n <= Number(offer);
    }
    if (!ok) return protocolError(`unacceptable answer ${key}=${answer} to target offer ${offer}`);
    this.#values.set(key, answer);
    return undefined;
  }

  /** Final typed values (RFC defaults for keys never negotiated). */
  params(): NegotiatedParams {
    const maxBurst = this.#num('MaxBurstLength');
    const p: NegotiatedParams = {
      headerDigest: (this.#values.get('HeaderDigest') ?? 'None') as DigestName,
      dataDigest: (this.#values.get('DataDigest') ?? 'None') as DigestName,
      maxConnections: this.#num('MaxConnections'),
      initialR2T: this.#bool('InitialR2T'),
      immediateData: this.#bool('ImmediateData'),
      maxBurstLength: maxBurst,
      firstBurstLength: Math.min(this.#num('FirstBurstLength'), maxBurst),
      defaultTime2Wait: this.#num('DefaultTime2Wait'),
      defaultTime2Retain: this.#num('DefaultTime2Retain'),
      maxOutstandingR2T: this.#num('MaxOutstandingR2T'),
      dataPDUInOrder: this.#bool('DataPDUInOrder'),
      dataSequenceInOrder: this.#bool('DataSequenceInOrder'),
      errorRecoveryLevel: this.#num('ErrorRecoveryLevel'),
      iscsiProtocolLevel: this.#num('iSCSIProtocolLevel'),
      // Until the target has declared, the initiator assumes the default.
      maxRecvDataSegmentLength: this.#declaredMrdsl ? this.#cfg.maxRecvDataSegmentLength : 8192,
      maxXmitDataSegmentLength: this.#num('MaxRecvDataSegmentLength'),
      sessionType: this.#sessionType,
      authMethod: this.#authMethod ?? 'None',
      initiatorName: this.#initiatorName,
      ...(this.#initiatorAlias !== undefined ? { initiatorAlias: this.#initiatorAlias } : {}),
      ...(this.#targetName !== undefined ? { targetName: this.#targetName } : {}),
    };
    return p;
  }
}

/**
 * Text Request keys in full feature phase. Only MaxRecvDataSegmentLength (declarative),
 * SendTargets (left to the caller) and InitiatorAlias are meaningful; LO/IO keys answer
 * Reject, unknown and X- keys NotUnderstood.
 */
export function negotiateFullFeature(pairs: Iterable<readonly [string, string]>, current: NegotiatedParams): FullFeatureResult {
  const response: Array<[string, string]> = [];
  let params = current;
  let sendTargets: string | undefined;
  for (const [key, value] of pairs) {
    const spec = keySpec(key);
    if (spec === undefined || isExtensionKey(key)) {
      response.push([key, 'NotUnderstood']);
      continue;
    }
    switch (key) {
      case 'SendTargets':
        sendTargets = value;
        continue;
      case 'MaxRecvDataSegmentLength': {
        const n = parseNumerical(value);
        if (n === undefined || n < 512) response.push([key, 'Reject']);
        else params = { ...params, maxXmitDataSegmentLength: Math.min(n, MAX_24) };
        continue;
      }
      case 'InitiatorAlias':
        params = { ...params, initiatorAlias: value };
        continue;
    }
    response.push([key, 'Reject']);
  }
  return sendTargets === undefined ? { response, params } : { response, params, sendTargets };
}
