/**
 * Little-endian access to on-disk bytes. Every u64 is a bigint: btrfs
 * objectids, offsets and generations use the full 64 bits (e.g. -1 as
 * (u64)-1 for "last key"), which a JS number cannot hold.
 */
import { BtrfsError, corrupt } from './errors.js';

export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Throws EUCLEAN unless [off, off+len) lies inside buf. */
export function needBytes(buf: Uint8Array, off: number, len: number, what: string): void {
  if (!(off >= 0 && len >= 0 && off + len <= buf.length)) {
    throw corrupt(`${what}: needs ${len} bytes at offset ${off}, only ${buf.length} available`);
  }
}

export function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

export function u8(b: Buffer, off: number): number { return b.readUInt8(off); }
export function u16(b: Buffer, off: number): number { return b.readUInt16LE(off); }
export function u32(b: Buffer, off: number): number { return b.readUInt32LE(off); }
export function u64(b: Buffer, off: number): bigint { return b.readBigUInt64LE(off); }
export function s64(b: Buffer, off: number): bigint { return b.readBigInt64LE(off); }

export function putU8(b: Buffer, off: number, v: number): void { b.writeUInt8(v, off); }
export function putU16(b: Buffer, off: number, v: number): void { b.writeUInt16LE(v, off); }
export function putU32(b: Buffer, off: number, v: number): void { b.writeUInt32LE(v >>> 0, off); }
export function putU64(b: Buffer, off: number, v: bigint): void { b.writeBigUInt64LE(BigInt.asUintN(64, v), off); }

/** A bigint that must fit a JS number (sizes, offsets inside a device we can address). */
export function toNumber(v: bigint, what = 'value'): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < 0n) throw corrupt(`${what} ${v} out of range`);
  return Number(v);
}

export function uuidToString(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

export function uuidFromString(s: string): Buffer {
  const h = s.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(h)) throw new BtrfsError('EINVAL', `not a uuid: ${s}`);
  return Buffer.from(h, 'hex');
}

export function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

export function alignUp(v: number, a: number): number { return Math.ceil(v / a) * a; }
export function alignDown(v: number, a: number): number { return Math.floor(v / a) * a; }
