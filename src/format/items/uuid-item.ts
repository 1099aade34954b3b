/**
 * UUID_KEY_SUBVOL / UUID_KEY_RECEIVED_SUBVOL (uuid tree, key (uuid[0..8] TYPE uuid[8..16]),
 * both halves read little-endian): the subvolume ids having that (received) uuid,
 * an array of u64.
 */
import { corrupt } from '../../util/errors.js';
import type { Key } from '../key.js';

export function decodeUuidItem(b: Buffer): bigint[] {
  if (b.length % 8 !== 0) throw corrupt(`uuid item of ${b.length} bytes is not a multiple of 8`);
  const out: bigint[] = [];
  for (let off = 0; off < b.length; off += 8) out.push(b.readBigUInt64LE(off));
  return out;
}

export function encodeUuidItem(ids: bigint[]): Buffer {
  const out = Buffer.alloc(ids.length * 8);
  ids.forEach((id, i) => out.writeBigUInt64LE(BigInt.asUintN(64, id), i * 8));
  return out;
}

/** The key (objectid, offset) halves of a uuid. */
export function uuidKeyParts(uuid: Buffer): { objectid: bigint; offset: bigint } {
  return { objectid: uuid.readBigUInt64LE(0), offset: uuid.readBigUInt64LE(8) };
}

/** The uuid a UUID_KEY_* key stands for. */
export function uuidFromKey(k: Key): Buffer {
  const out = Buffer.alloc(16);
  out.writeBigUInt64LE(k.objectid, 0);
  out.writeBigUInt64LE(k.offset, 8);
  return out;
}
