// CHAP (RFC 1994) as used by iSCSI (RFC 7143 12.1.3), MD5 only (CHAP_A=5).
// Secrets live only in #private fields and never appear in messages.
import { createHash, randomBytes as nodeRandomBytes, timingSafeEqual } from 'node:crypto';
import { LoginStatus, type LoginStatusValue } from './constants.js';

export const CHAP_MD5 = 5;
const MD5_LENGTH = 16;
export const DEFAULT_CHALLENGE_LENGTH = 16;
/** RFC 7143 12.1.3 / RFC 3720 8.2.1: secrets shorter than 96 bits are too weak. */
export const MIN_CHAP_SECRET_BYTES = 12;
/** Common initiator limit (open-iscsi, Windows accept at most 255/256). */
export const MAX_CHAP_SECRET_BYTES = 255;
const MAX_CHAP_BINARY_BYTES = 1024;

const HEX_RE = /^[0-9a-fA-F]+$/;
const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Decode an RFC 7143 5.1 binary value: 0x/0X hex (an odd digit count means an implied
 * leading zero) or 0b/0B base64. Returns undefined for anything else or an empty value.
 */
export function parseChapBinary(value: string): Buffer | undefined {
  if (value.length < 3 || value[0] !== '0') return undefined;
  const prefix = value[1];
  const body = value.substring(2);
  if (prefix === 'x' || prefix === 'X') {
    if (!HEX_RE.test(body)) return undefined;
    return Buffer.from(body.length % 2 === 1 ? `0${body}` : body, 'hex');
  }
  if (prefix === 'b' || prefix === 'B') {
    if (body.length % 4 !== 0 || !BASE64_RE.test(body)) return undefined;
    const out = Buffer.from(body, 'base64');
    return out.length > 0 ? out : undefined;
  }
  return undefined;
}

/** Encode as 0x + lowercase hex. */
export function formatChapBinary(buf: Buffer): string {
  return `0x${buf.toString('hex')}`;
}

/** CHAP_I is a numerical value 0..255 (decimal or hex). */
function parseChapId(value: string): number | undefined {
  let n: number;
  if (/^0[xX][0-9a-fA-F]+$/.test(value)) n = Number.parseInt(value.substring(2), 16);
  else if (/^[0-9]+$/.test(value)) n = Number.parseInt(value, 10);
  else return undefined;
  return n >= 0 && n <= 255 ? n : undefined;
}

/** RFC 1994: MD5(identifier byte || secret || challenge). */
export function chapResponse(id: number, secret: Buffer, challenge: Buffer): Buffer {
  return createHash('md5').update(Buffer.of(id & 0xff)).update(secret).update(challenge).digest();
}

/** Config-time check of a secret; returns an error message or undefined when acceptable. */
export function validateChapSecret(secret: string): string | undefined {
  const n = Buffer.byteLength(secret);
  if (n < MIN_CHAP_SECRET_BYTES) return `CHAP secret must be at least ${MIN_CHAP_SECRET_BYTES} bytes (got ${n})`;
  if (n > MAX_CHAP_SECRET_BYTES) return `CHAP secret must be at most ${MAX_CHAP_SECRET_BYTES} bytes (got ${n})`;
  return undefined;
}

export interface ChapCredentials {
  readonly user: string;
  readonly secret: string;
}

export interface TargetChapOptions {
  /** Credentials the initiator must prove (target authenticates initiator). */
  readonly user: string;
  readonly secret: string;
  /** Credentials the target proves when the initiator asks (mutual CHAP). */
  readonly mutual?: ChapCredentials;
  readonly randomBytes?: (n: number) => Buffer;
  /** Target challenge length in bytes, 16..1024 (default 16). */
  readonly challengeLength?: number;
}

/** Whole-config check (both secrets, and that directions use different secrets). */
export function validateChapConfig(opts: Pick<TargetChapOptions, 'user' | 'secret' | 'mutual'>): string | undefined {
  if (opts.user.length === 0) return 'CHAP user name must not be empty';
  const e1 = validateChapSecret(opts.secret);
  if (e1 !== undefined) return e1;
  if (opts.mutual !== undefined) {
    if (opts.mutual.user.length === 0) return 'mutual CHAP user name must not be empty';
    const e2 = validateChapSecret(opts.mutual.secret);
    if (e2 !== undefined) return `mutual: ${e2}`;
    // Same secret both ways lets a reflected challenge authenticate (RFC 7143 12.1.3).
    if (opts.mutual.secret === opts.secret) return 'mutual CHAP secret must differ from the initiator secret';
  }
  return undefined;
}

export type ChapStepResult =
  | { readonly ok: true; readonly response: Array<[string, string]>; readonly done: boolean }
  | { readonly ok: false; readonly status: LoginStatusValue; readonly message: string };

type ChapState = 'start' | 'challenged' | 'done' | 'failed';

/**
 * Target side of one CHAP exchange. Feed the CHAP_* keys of each security-stage Login
 * Request (an empty map is a no-op). `done` turns true once the initiator is verified
 * (and, if asked, the target has answered the mutual challenge).
 */
export class TargetChap {
  readonly #user: string;
  readonly #secret: Buffer;
  readonly #mutualUser: string | undefined;
  readonly #mutualSecret: Buffer | undefined;
  readonly #random: (n: number) => Buffer;
  readonly #challengeLength: number;
  #state: ChapState = 'start';
  #id = 0;
  #challenge: Buffer = Buffer.alloc(0);
  #mutualUsed = false;

  constructor(opts: TargetChapOptions) {
    this.#user = opts.user;
    this.#secret = Buffer.from(opts.secret, 'utf8');
    this.#mutualUser = opts.mutual?.user;
    this.#mutualSecret = opts.mutual === undefined ? undefined : Buffer.from(opts.mutual.secret, 'utf8');
    this.#random = opts.randomBytes ?? nodeRandomBytes;
    const len = opts.challengeLength ?? DEFAULT_CHALLENGE_LENGTH;
    if (!Number.isInteger(len) || len < 16 || len > MAX_CHAP_BINARY_BYTES) throw new RangeError('challengeLength must be 16..1024');
    this.#challengeLength = len;
  }

  get done(): boolean {
    return this.#state === 'done';
  }

  /** Whether the initiator requested (and got) mutual authentication. */
  get mutual(): boolean {
    return this.#mutualUsed;
  }

  #fail(message: string): ChapStepResult {
    this.#state = 'failed';
    return { ok: false, status: LoginStatus.AuthenticationFailure, message };
  }

  step(keys: ReadonlyMap<string, string>): ChapStepResult {
    let any = false;
    for (const k of keys.keys()) if (k.startsWith('CHAP_')) any = true;
    switch (this.#state) {
      case 'failed':
        return { ok: false, status: LoginStatus.AuthenticationFailure, message: 'CHAP already failed' };
      case 'done':
        if (any) return this.#fail('CHAP keys after CHAP completed');
        return { ok: true, response: [], done: true };
      case 'start':
        if (!any) return { ok: true, response: [], done: false };
        return this.#algorithm(keys);
      case 'challenged':
        if (!any) return { ok: true, response: [], done: false };
        return this.#verify(keys);
    }
  }

  #algorithm(keys: ReadonlyMap<string, string>): ChapStepResult {
    const a = keys.get('CHAP_A');
    if (a === undefined) return this.#fail('expected CHAP_A');
    for (const k of keys.keys()) if (k.startsWith('CHAP_') && k !== 'CHAP_A') return this.#fail(`unexpected ${k} before challenge`);
    const offered = a.split(',');
    // Only MD5 is supported; RFC 7143 12.1.3: no acceptable algorithm → CHAP_A=Reject and fail.
    if (!offered.some((v) => parseChapId(v) === CHAP_MD5)) return this.#fail('no supported CHAP algorithm offered (need 5=MD5)');
    this.#id = (this.#random(1)[0] ?? 0) & 0xff;
    this.#challenge = Buffer.from(this.#random(this.#challengeLength));
    this.#state = 'challenged';
    return {
      ok: true,
      done: false,
      response: [
        ['CHAP_A', String(CHAP_MD5)],
        ['CHAP_I', String(this.#id)],
        ['CHAP_C', formatChapBinary(this.#challenge)],
      ],
    };
  }

  #verify(keys: ReadonlyMap<string, string>): ChapStepResult {
    for (const k of keys.keys()) {
      if (k.startsWith('CHAP_') && k !== 'CHAP_N' && k !== 'CHAP_R' && k !== 'CHAP_I' && k !== 'CHAP_C') {
        return this.#fail(`unexpected ${k} in CHAP response`);
      }
    }
    const name = keys.get('CHAP_N');
    const resp = keys.get('CHAP_R');
    if (name === undefined || resp === undefined) return this.#fail('CHAP_N and CHAP_R required');
    const r = parseChapBinary(resp);
    if (r === undefined) return this.#fail('malformed CHAP_R');
    const expected = chapResponse(this.#id, this.#secret, this.#challenge);
    // Compare name and response together so timing does not reveal which one was wrong.
    const nameOk = name === this.#user;
    const respOk = r.length === expected.length && timingSafeEqual(r, expected);
    if (!(nameOk && respOk)) return this.#fail('CHAP authentication failed');

    const mi = keys.get('CHAP_I');
    const mc = keys.get('CHAP_C');
    if (mi === undefined && mc === undefined) {
      // The target cannot force mutual authentication; the initiator chose one-way.
      this.#state = 'done';
      return { ok: true, response: [], done: true };
    }
    if (mi === undefined || mc === undefined) return this.#fail('mutual CHAP needs both CHAP_I and CHAP_C');
    if (this.#mutualUser === undefined || this.#mutualSecret === undefined) return this.#fail('mutual CHAP requested but not configured');
    const id = parseChapId(mi);
    if (id === undefined) return this.#fail('malformed CHAP_I');
    const challenge = parseChapBinary(mc);
    if (challenge === undefined || challenge.length > MAX_CHAP_BINARY_BYTES) return this.#fail('malformed CHAP_C');
    // Reflection attack: the initiator replays our own challenge to get us to answer it.
    if (challenge.equals(this.#challenge)) return this.#fail('initiator challenge equals target challenge');
    this.#mutualUsed = true;
    this.#state = 'done';
    return {
      ok: true,
      done: true,
      response: [
        ['CHAP_N', this.#mutualUser],
        ['CHAP_R', formatChapBinary(chapResponse(id, this.#mutualSecret, challenge))],
      ],
    };
  }
}

/**
 * Initiator side, for tests and tools: given the target's CHAP_I/CHAP_C, produce
 * CHAP_N/CHAP_R, plus CHAP_I/CHAP_C when a mutual challenge is supplied.
 */
export function initiatorChapResponse(
  targetKeys: ReadonlyMap<string, string>,
  creds: ChapCredentials,
  mutualChallenge?: { readonly id: number; readonly challenge: Buffer },
): Array<[string, string]> {
  const idText = targetKeys.get('CHAP_I');
  const cText = targetKeys.get('CHAP_C');
  const id = idText === undefined ? undefined : parseChapId(idText);
  const challenge = cText === undefined ? undefined : parseChapBinary(cText);
  if (id === undefined || challenge === undefined) throw new Error('target CHAP_I/CHAP_C missing or malformed');
  const out: Array<[string, string]> = [
    ['CHAP_N', creds.user],
    ['CHAP_R', formatChapBinary(chapResponse(id, Buffer.from(creds.secret, 'utf8'), challenge))],
  ];
  if (mutualChallenge !== undefined) {
    out.push(['CHAP_I', String(mutualChallenge.id)], ['CHAP_C', formatChapBinary(mutualChallenge.challenge)]);
  }
  return out;
}

/** Initiator side check of the target's mutual answer. */
export function verifyTargetChapResponse(
  targetKeys: ReadonlyMap<string, string>,
  creds: ChapCredentials,
  mutualChallenge: { readonly id: number; readonly challenge: Buffer },
): boolean {
  const r = targetKeys.get('CHAP_R');
  const buf = r === undefined ? undefined : parseChapBinary(r);
  if (buf === undefined || targetKeys.get('CHAP_N') !== creds.user) return false;
  const expected = chapResponse(mutualChallenge.id, Buffer.from(creds.secret, 'utf8'), mutualChallenge.challenge);
  return buf.length === expected.length && timingSafeEqual(buf, expected);
}

export { MD5_LENGTH as CHAP_MD5_LENGTH };
