// Public surface of the iSCSI PDU layer.
export * from './constants.js';
export type * from './pdu-types.js';
export * from './digest.js';
export * from './errors.js';
export * from './pdu-codec.js';
export * from './pdu-reader.js';
export * from './pdu-writer.js';
export * from './serial.js';
