// The login phase of one connection (RFC 7143 6 and 11.12/11.13): security stage (AuthMethod None or
// CHAP, one-way or mutual), operational negotiation, then the move to full-feature phase with a new
// or reinstated session. Every failure ends in a Login Response with the status class that names it,
// after which the connection closes.

import type { LoginRequest, LoginResponse } from '../../protocol/iscsi/pdu-types.js';
import { LoginStage, LoginStatus, type LoginStatusValue } from '../../protocol/iscsi/constants.js';
import { LoginNegotiator, type NegotiatedParams, type AuthMethodName } from '../../protocol/iscsi/negotiation.js';
import { TextAccumulator, encodeTextPairs, parseTextData } from '../../protocol/iscsi/text.js';
import { TargetChap } from '../../protocol/iscsi/chap.js';
import type { Logger } from '../../shared/logger.js';
import type { TargetNode } from './target-node.js';
import { Session, type SessionTransport } from './session.js';

/** Login text larger than this (across C-bit PDUs) fails the login. */
const MAX_LOGIN_TEXT = 64 * 1024;

export interface LoginTransport extends SessionTransport {
  sendLogin(pdu: LoginResponse): void;
  /** Called once the final Login Response has been queued: digests and limits switch now. */
  enterFullFeature(session: Session): void;
  readonly remoteAddress: string;
}

class LoginFailure extends Error {
  readonly status: LoginStatusValue;
  constructor(status: LoginStatusValue, message: string) {
    super(message);
    this.status = status;
  }
}

export class LoginHandler {
  readonly #node: TargetNode;
  readonly #transport: LoginTransport;
  readonly #logger: Logger;
  #negotiatorInstance: LoginNegotiator | undefined;
  #first = true;
  #stage: number = LoginStage.Security;
  #isid = 0n;
  #tsih = 0;
  #cid = 0;
  #chap: TargetChap | undefined;
  #authDone = false;
  #accumulator: TextAccumulator | undefined;
  #failed = false;
  #busy = false;

  constructor(node: TargetNode, transport: LoginTransport, logger: Logger) {
    this.#node = node;
    this.#transport = transport;
    this.#logger = logger;
  }

  get #negotiator(): LoginNegotiator {
    if (!this.#negotiatorInstance) throw new Error('login negotiator used before the first request');
    return this.#negotiatorInstance;
  }

  /** Normal sessions must use CHAP when it is configured; discovery may use either. */
  #createNegotiator(pairs: ReadonlyArray<readonly [string, string]>): void {
    const discovery = pairs.some(([k, v]) => k === 'SessionType' && v === 'Discovery');
    const chap = this.#node.options.chap !== undefined;
    const methods: AuthMethodName[] = !chap ? ['None'] : discovery ? ['None', 'CHAP'] : ['CHAP'];
    this.#negotiatorInstance = new LoginNegotiator({ ...this.#node.options.negotiation, authMethods: methods });
  }

  get cid(): number { return this.#cid; }

  /** One Login Request. Resolves when its response was queued (reinstatement may wait for an old session). */
  async onLoginRequest(pdu: LoginRequest): Promise<void> {
    if (this.#failed) return;
    if (this.#busy) {
      this.#fail(pdu, LoginStatus.InitiatorError, 'Login Request before the previous one was answered');
      return;
    }
    this.#busy = true;
    try {
      await this.#handle(pdu);
    } catch (err) {
      if (err instanceof LoginFailure) {
        this.#fail(pdu, err.status, err.message);
      } else {
        this.#logger.error({ err }, 'login failed on an internal error');
        this.#fail(pdu, LoginStatus.TargetError, 'internal error');
      }
    } finally {
      this.#busy = false;
    }
  }

  async #handle(pdu: LoginRequest): Promise<void> {
    if (pdu.versionMin > 0) throw new LoginFailure(LoginStatus.UnsupportedVersion, `version ${pdu.versionMin}..${pdu.versionMax} not supported`);
    if (this.#first) {
      this.#isid = pdu.isid;
      this.#tsih = pdu.tsih;
      this.#cid = pdu.cid;
      if (pdu.csg !== LoginStage.Security && pdu.csg !== LoginStage.Operational) {
        throw new LoginFailure(LoginStatus.InitiatorError, `login cannot start in stage ${pdu.csg}`);
      }
      this.#stage = pdu.csg;
    } else if (pdu.isid !== this.#isid || pdu.tsih !== this.#tsih) {
      throw new LoginFailure(LoginStatus.InitiatorError, 'ISID or TSIH changed during login');
    }
    if (pdu.csg !== this.#stage) throw new LoginFailure(LoginStatus.InitiatorError, `CSG ${pdu.csg} while in stage ${this.#stage}`);
    if (pdu.transit && pdu.continue) throw new LoginFailure(LoginStatus.InitiatorError, 'T and C both set');
    if (pdu.transit && (pdu.nsg <= pdu.csg || pdu.nsg === 2)) {
      throw new LoginFailure(LoginStatus.InitiatorError, `invalid stage transition ${pdu.csg} → ${pdu.nsg}`);
    }

    this.#accumulator ??= new TextAccumulator(MAX_LOGIN_TEXT);
    const state = this.#accumulator.push(pdu.data, pdu.continue);
    if (state === 'overflow') throw new LoginFailure(LoginStatus.InitiatorError, 'login text too long');
    if (state === 'more') {
      this.#respond(pdu, [], false, this.#stage);
      return;
    }
    const text = this.#accumulator.take();
    this.#accumulator = undefined;
    const parsed = parseTextData(text);
    if (parsed.error) throw new LoginFailure(LoginStatus.InitiatorError, parsed.error.message);

    if (!this.#negotiatorInstance) this.#createNegotiator(parsed.pairs);
    const stageName = this.#stage === LoginStage.Security ? 'security' : 'operational';
    const negotiation = this.#negotiator.negotiate(parsed.pairs, stageName);
    if (negotiation.error) throw new LoginFailure(negotiation.error.status, negotiation.error.message);
    const response: Array<readonly [string, string]> = [...negotiation.response];

    if (this.#first) {
      this.#first = false;
      this.#checkIdentity();
      response.push(...this.#negotiator.firstResponseKeys());
    }
    const normal = this.#negotiator.sessionType === 'Normal';
    if (this.#stage === LoginStage.Operational && !this.#authDone) {
      // The initiator skipped the security stage.
      if (this.#requiresAuth(normal)) throw new LoginFailure(LoginStatus.AuthenticationFailure, 'authentication is required');
      this.#authDone = true;
    }

    if (this.#stage === LoginStage.Security) {
      const method = this.#negotiator.authMethod;
      if (method === 'CHAP') {
        const chap = this.#node.options.chap;
        if (!chap) throw new LoginFailure(LoginStatus.AuthenticationFailure, 'CHAP is not configured');
        this.#chap ??= new TargetChap({
          user: chap.user, secret: chap.secret,
          ...(this.#node.options.mutualChap ? { mutual: this.#node.options.mutualChap } : {}),
        });
        const step = this.#chap.step(negotiation.security);
        if (!step.ok) throw new LoginFailure(step.status, step.message);
        response.push(...step.response);
        this.#authDone = step.done;
      } else if (method === 'None') {
        this.#authDone = true;
      }
    }

    let transit = false;
    let nsg = this.#stage;
    if (pdu.transit) {
      transit = true;
      if (this.#stage === LoginStage.Security && !this.#authDone) {
        const method = this.#negotiator.authMethod;
        if (method === 'CHAP') transit = false; // the CHAP exchange is still under way
        else if (this.#requiresAuth(normal)) throw new LoginFailure(LoginStatus.AuthenticationFailure, 'authentication is required');
        else this.#authDone = true;
      }
      if (transit && (pdu.nsg === LoginStage.FullFeature || this.#stage === LoginStage.Operational)) {
        // Our declarations (MaxRecvDataSegmentLength) must be out before full-feature phase.
        response.push(...this.#negotiator.finalDeclarations());
        if (this.#negotiator.awaitingAnswers) transit = false;
      }
      if (transit) nsg = pdu.nsg;
    } else if (this.#stage === LoginStage.Operational) {
      response.push(...this.#negotiator.finalDeclarations());
    }

    if (transit && nsg === LoginStage.FullFeature) {
      await this.#enterFullFeature(pdu, response);
      return;
    }
    this.#respond(pdu, response, transit, nsg);
    if (transit) this.#stage = nsg;
  }

  #requiresAuth(normal: boolean): boolean {
    return normal && this.#node.options.chap !== undefined;
  }

  /** Names, target and access rules, checked once the first request's keys are known. */
  #checkIdentity(): void {
    const n = this.#negotiator;
    const initiatorName = n.initiatorName;
    if (!initiatorName) throw new LoginFailure(LoginStatus.MissingParameter, 'InitiatorName is missing');
    if (n.sessionType === 'Normal') {
      const targetName = n.targetName;
      if (!targetName) throw new LoginFailure(LoginStatus.MissingParameter, 'TargetName is missing');
      if (targetName.toLowerCase() !== this.#node.iqn.toLowerCase()) {
        throw new LoginFailure(LoginStatus.NotFound, `target ${targetName} not found`);
      }
      if (!this.#node.isAllowed(initiatorName)) {
        throw new LoginFailure(LoginStatus.AuthorizationFailure, `initiator ${initiatorName} is not allowed`);
      }
    }
    if (this.#tsih !== 0) {
      const existing = this.#node.findByTsih(this.#tsih);
      if (!existing || existing.isid !== this.#isid || existing.initiatorName.toLowerCase() !== initiatorName.toLowerCase()) {
        throw new LoginFailure(LoginStatus.SessionDoesNotExist, `session TSIH ${this.#tsih} does not exist`);
      }
      if (existing.transport.cid !== this.#cid) {
        throw new LoginFailure(LoginStatus.TooManyConnections, 'only one connection per session is supported');
      }
    } else if (this.#node.sessionCount >= this.#node.options.maxSessions
      && !this.#node.findSession(initiatorName, this.#isid)) {
      throw new LoginFailure(LoginStatus.OutOfResources, 'too many sessions');
    }
  }

  async #enterFullFeature(pdu: LoginRequest, response: Array<readonly [string, string]>): Promise<void> {
    const n = this.#negotiator;
    const initiatorName = n.initiatorName!;
    const params: NegotiatedParams = n.params();
    // Reinstatement: an existing session with this initiator port (name + ISID) ends first, tasks and all.
    const old = this.#tsih !== 0 ? this.#node.findByTsih(this.#tsih) : this.#node.findSession(initiatorName, this.#isid);
    if (old) {
      this.#logger.info({ tsih: old.tsih, isid: old.isid.toString(16) }, 'reinstating session');
      old.transport.closeAfterFlush();
      await old.close();
    }
    if (this.#failed) return;
    const tsih = this.#tsih !== 0 ? this.#tsih : this.#node.allocateTsih();
    const session = new Session({
      node: this.#node,
      isid: this.#isid,
      tsih,
      initiatorName,
      sessionType: n.sessionType,
      params,
      expCmdSN: pdu.cmdSN,
      transport: this.#transport,
      logger: this.#logger.child({ tsih }),
    });
    this.#node.register(session);
    this.#respond(pdu, response, true, LoginStage.FullFeature, tsih, session);
    this.#transport.enterFullFeature(session);
    this.#logger.info({
      initiator: initiatorName, isid: this.#isid.toString(16), sessionType: n.sessionType, tsih,
      headerDigest: params.headerDigest, dataDigest: params.dataDigest,
      maxBurstLength: params.maxBurstLength, firstBurstLength: params.firstBurstLength,
      initialR2T: params.initialR2T, immediateData: params.immediateData,
      maxXmitDataSegmentLength: params.maxXmitDataSegmentLength,
    }, 'login complete');
  }

  #respond(pdu: LoginRequest, pairs: Array<readonly [string, string]>, transit: boolean, nsg: number,
    tsih = 0, session?: Session): void {
    this.#transport.sendLogin({
      kind: 'LoginResponse',
      transit,
      continue: false,
      csg: this.#stage as 0 | 1,
      nsg: (transit ? nsg : 0) as 0 | 1 | 3,
      versionMax: 0,
      versionActive: 0,
      isid: this.#isid,
      tsih,
      itt: pdu.itt,
      status: LoginStatus.Success,
      data: encodeTextPairs(pairs),
      statSN: 0,
      expCmdSN: pdu.cmdSN,
      maxCmdSN: session ? session.maxCmdSN : pdu.cmdSN,
    });
  }

  #fail(pdu: LoginRequest, status: LoginStatusValue, message: string): void {
    if (this.#failed) return;
    this.#failed = true;
    const level = status === LoginStatus.TargetError ? 'error' : 'warn';
    this.#logger[level]({ status: `0x${status.toString(16).padStart(4, '0')}`, remote: this.#transport.remoteAddress,
      initiator: this.#negotiatorInstance?.initiatorName }, `login refused: ${message}`);
    this.#transport.sendLogin({
      kind: 'LoginResponse', transit: false, continue: false, csg: this.#stage as 0 | 1, nsg: 0,
      versionMax: 0, versionActive: 0, isid: pdu.isid, tsih: 0, itt: pdu.itt, status,
      data: Buffer.alloc(0), statSN: 0, expCmdSN: pdu.cmdSN, maxCmdSN: pdu.cmdSN,
    });
    this.#transport.closeAfterFlush();
  }
}
