// A logged-in session as the management service lists it: who, from where, and what was negotiated.
import type { Session } from './session.js';
import type { Session as SessionInfo } from '../../protocol/management/management-codec.js';

export function sessionInfo(session: Session): SessionInfo {
  const p = session.params;
  const yesNo = (b: boolean): string => (b ? 'Yes' : 'No');
  return {
    initiatorName: session.initiatorName,
    isid: session.isid.toString(16).padStart(12, '0'),
    tsih: session.tsih,
    connections: [{
      address: session.transport.remoteAddress ?? '',
      cid: session.transport.cid,
      headerDigest: p.headerDigest === 'CRC32C',
      dataDigest: p.dataDigest === 'CRC32C',
    }],
    parameters: {
      HeaderDigest: p.headerDigest,
      DataDigest: p.dataDigest,
      MaxConnections: String(p.maxConnections),
      InitialR2T: yesNo(p.initialR2T),
      ImmediateData: yesNo(p.immediateData),
      MaxBurstLength: String(p.maxBurstLength),
      FirstBurstLength: String(p.firstBurstLength),
      MaxRecvDataSegmentLength: String(p.maxRecvDataSegmentLength),
      MaxXmitDataSegmentLength: String(p.maxXmitDataSegmentLength),
      MaxOutstandingR2T: String(p.maxOutstandingR2T),
      ErrorRecoveryLevel: String(p.errorRecoveryLevel),
      DefaultTime2Wait: String(p.defaultTime2Wait),
      DefaultTime2Retain: String(p.defaultTime2Retain),
    },
  };
}
