/**
 * The quota tree. Qgroup ids are (level << 48) | subvolid, printed "level/subvolid".
 *   QGROUP_STATUS   key (0 QGROUP_STATUS 0):
 *       0 version u64 | 8 generation u64 | 16 flags u64 | 24 rescan u64 (progress objectid)
 *      32 enable_gen u64 (only with simple quotas)                          = 32 or 40
 *   QGROUP_INFO     key (0 QGROUP_INFO qgroupid):
 *       0 generation | 8 rfer | 16 rfer_cmpr | 24 excl | 32 excl_cmpr (u64)  = 40
 *   QGROUP_LIMIT    key (0 QGROUP_LIMIT qgroupid):
 *       0 flags | 8 max_rfer | 16 max_excl | 24 rsv_rfer | 32 rsv_excl (u64)  = 40
 *   QGROUP_RELATION key (child QGROUP_RELATION parent) and the reverse: no body
 */
import { corrupt } from '../../util/errors.js';
import { struct, u64 } from '../layout.js';

export interface QgroupStatus {
  version: bigint;
  generation: bigint;
  flags: bigint;
  rescan: bigint;
  /** present when the item is 40 bytes (simple quota mode) */
  enable_gen?: bigint;
}

export interface QgroupInfo {
  generation: bigint;
  rfer: bigint;
  rfer_cmpr: bigint;
  excl: bigint;
  excl_cmpr: bigint;
}

export interface QgroupLimit {
  flags: bigint;
  max_rfer: bigint;
  max_excl: bigint;
  rsv_rfer: bigint;
  rsv_excl: bigint;
}

const statusCodec = struct<QgroupStatus>('qgroup_status', [u64('version'), u64('generation'), u64('flags'), u64('rescan')]);
export const qgroupInfoCodec = struct<QgroupInfo>('qgroup_info', [u64('generation'), u64('rfer'), u64('rfer_cmpr'), u64('excl'), u64('excl_cmpr')]);
export const qgroupLimitCodec = struct<QgroupLimit>('qgroup_limit', [u64('flags'), u64('max_rfer'), u64('max_excl'), u64('rsv_rfer'), u64('rsv_excl')]);

export const QGROUP_STATUS_SIZE = statusCodec.size;
export const QGROUP_STATUS_SIZE_SIMPLE = statusCodec.size + 8;
export const QGROUP_LEVEL_SHIFT = 48n;

export function decodeQgroupStatus(b: Buffer): QgroupStatus {
  const s = statusCodec.decode(b, 0);
  if (b.length >= QGROUP_STATUS_SIZE_SIMPLE) s.enable_gen = b.readBigUInt64LE(QGROUP_STATUS_SIZE);
  else if (b.length !== QGROUP_STATUS_SIZE) throw corrupt(`qgroup_status: ${b.length} bytes`);
  return s;
}

export function encodeQgroupStatus(s: QgroupStatus): Buffer {
  const out = Buffer.alloc(s.enable_gen === undefined ? QGROUP_STATUS_SIZE : QGROUP_STATUS_SIZE_SIMPLE);
  statusCodec.encode(s, out, 0);
  if (s.enable_gen !== undefined) out.writeBigUInt64LE(s.enable_gen, QGROUP_STATUS_SIZE);
  return out;
}

export function decodeQgroupInfo(b: Buffer): QgroupInfo { return qgroupInfoCodec.decode(b, 0); }
export function encodeQgroupInfo(v: QgroupInfo): Buffer { return qgroupInfoCodec.toBuffer(v); }
export function decodeQgroupLimit(b: Buffer): QgroupLimit { return qgroupLimitCodec.decode(b, 0); }
export function encodeQgroupLimit(v: QgroupLimit): Buffer { return qgroupLimitCodec.toBuffer(v); }

export function qgroupLevel(id: bigint): number { return Number(id >> QGROUP_LEVEL_SHIFT); }
export function qgroupSubvolid(id: bigint): bigint { return id & ((1n << QGROUP_LEVEL_SHIFT) - 1n); }
export function qgroupId(level: number, subvolid: bigint): bigint { return (BigInt(level) << QGROUP_LEVEL_SHIFT) | subvolid; }
