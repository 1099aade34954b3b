/**
 * btrfs_disk_key: objectid (le64), type (u8), offset (le64) = 17 bytes.
 * Keys sort by objectid, then type, then offset, all unsigned.
 */
import { needBytes } from '../util/bytes.js';
import { KEY_NAMES } from './constants.js';

export interface Key {
  objectid: bigint;
  type: number;
  offset: bigint;
}

export const KEY_MIN: Key = Object.freeze({ objectid: 0n, type: 0, offset: 0n });
export const KEY_MAX: Key = Object.freeze({ objectid: 0xffff_ffff_ffff_ffffn, type: 255, offset: 0xffff_ffff_ffff_ffffn });

export function key(objectid: bigint | number, type: number, offset: bigint | number = 0n): Key {
  return { objectid: BigInt(objectid), type, offset: BigInt(offset) };
}

export function decodeKey(b: Buffer, off: number): Key {
  needBytes(b, off, 17, 'disk key');
  return { objectid: b.readBigUInt64LE(off), type: b[off + 8]!, offset: b.readBigUInt64LE(off + 9) };
}

export function encodeKey(k: Key, b: Buffer, off: number): void {
  b.writeBigUInt64LE(k.objectid, off);
  b[off + 8] = k.type;
  b.writeBigUInt64LE(k.offset, off + 9);
}

export function compareKeys(a: Key, b: Key): number {
  if (a.objectid !== b.objectid) return a.objectid < b.objectid ? -1 : 1;
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  if (a.offset !== b.offset) return a.offset < b.offset ? -1 : 1;
  return 0;
}

export function keyEquals(a: Key, b: Key): boolean {
  return a.objectid === b.objectid && a.type === b.type && a.offset === b.offset;
}

/** The smallest key greater than k (for resuming an iteration after k). */
export function keyNext(k: Key): Key {
  if (k.offset < KEY_MAX.offset) return { objectid: k.objectid, type: k.type, offset: k.offset + 1n };
  if (k.type < 255) return { objectid: k.objectid, type: k.type + 1, offset: 0n };
  return { objectid: k.objectid + 1n, type: 0, offset: 0n };
}

export function keyTypeName(type: number): string {
  return KEY_NAMES[type] ?? `UNKNOWN.${type}`;
}

/** (objectid type offset) with numbers, for messages. */
export function formatKey(k: Key): string {
  return `(${k.objectid} ${keyTypeName(k.type)} ${k.offset})`;
}

/**
 * Binary search over `n` sorted keys: the slot of the last key <= k, or -1
 * if every key is greater; `exact` tells whether that slot's key equals k.
 */
export function searchSlot(n: number, keyAt: (slot: number) => Key, k: Key): { slot: number; exact: boolean } {
  let lo = 0;
  let hi = n - 1;
  let best = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const c = compareKeys(keyAt(mid), k);
    if (c === 0) return { slot: mid, exact: true };
    if (c < 0) { best = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return { slot: best, exact: false };
}
