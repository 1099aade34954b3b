/**
 * Every checksum and hash btrfs puts on disk or in a send stream.
 *
 * crc32c is computed by `@node-rs/crc32` (the CPU's crc32 instructions,
 * about six times the speed of a table in JavaScript: it bounds send,
 * receive and data checks), or by `crc-32/crc32c` where that native
 * package cannot load. Both take and return the standard form (seed and
 * result inverted); btrfs also needs two raw variants, derived from it
 * instead of a second table:
 *   raw(seed, data) = ~crc(data, ~seed)
 * because crc() starts from ~argument and returns ~state.
 */
import CRC32C from 'crc-32/crc32c.js';
import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import { blake2b } from '@noble/hashes/blake2.js';
import xxhashInit from 'xxhash-wasm';
import { BtrfsError } from './errors.js';
import { asBuffer } from './bytes.js';

type Crc = (data: Uint8Array, seed: number) => number;

function loadCrc(): Crc {
  try {
    const native = (createRequire(import.meta.url)('@node-rs/crc32') as { crc32c: (b: Buffer, s: number) => number }).crc32c;
    const crc: Crc = (d, s) => native(asBuffer(d), s >>> 0);
    // trust it only if it computes what the table does
    const probe = Buffer.from('123456789');
    if (crc(probe, 0) >>> 0 !== 0xe3069283 || crc(probe.subarray(4), crc(probe.subarray(0, 4), 0)) >>> 0 !== 0xe3069283) return CRC32C.buf;
    return crc;
  } catch {
    return CRC32C.buf;
  }
}

const crcBuf: Crc = loadCrc();

/** Standard crc32c (seed ~0, final inversion), as an unsigned 32-bit number. */
export function crc32c(data: Uint8Array): number {
  return crcBuf(data, 0) >>> 0;
}

/** crc32c state update from `seed`, without the standard inversions. */
export function crc32cRaw(seed: number, data: Uint8Array): number {
  return ~crcBuf(data, ~seed) >>> 0;
}

/** The directory name hash: the key offset of DIR_ITEM and XATTR_ITEM. */
export function nameHash(name: Uint8Array): bigint {
  return BigInt(crc32cRaw(0xfffffffe, name));
}

// crc32c (Castagnoli, reflected) one byte at a time, for inputs as short as names: a call into
// native code costs more than the whole loop for 20 bytes (about 90 ns against 20).
const CRC32C_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/**
 * nameHash of the bytes d[at, end), as a number, without a view or a bigint
 * per name: for readers that hash every name of a filesystem.
 */
export function nameHashAt(d: Uint8Array, at: number, end: number): number {
  let c = 0xfffffffe | 0;
  for (let i = at; i < end; i++) c = CRC32C_TABLE[(c ^ d[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/**
 * The key offset of an INODE_EXTREF item: crc32c of the name seeded with the
 * parent inode number (the low 32 bits of it, as the kernel's u32 seed).
 */
export function extrefHash(parent: bigint, name: Uint8Array): bigint {
  return BigInt(crc32cRaw(Number(parent & 0xffffffffn), name));
}

/** Send-stream command crc: raw crc32c from 0. */
export function sendCrc(data: Uint8Array): number {
  return crc32cRaw(0, data);
}

export const CSUM_TYPE = { CRC32: 0, XXHASH: 1, SHA256: 2, BLAKE2: 3 } as const;
export type CsumType = typeof CSUM_TYPE[keyof typeof CSUM_TYPE];

const CSUM_SIZES: Record<number, number> = { 0: 4, 1: 8, 2: 32, 3: 32 };
const CSUM_NAMES: Record<number, string> = { 0: 'crc32c', 1: 'xxhash64', 2: 'sha256', 3: 'blake2b' };

export function csumSize(type: number): number {
  const s = CSUM_SIZES[type];
  if (s === undefined) throw new BtrfsError('ENOTSUP', `unknown checksum type ${type}`);
  return s;
}

export function csumName(type: number): string {
  return CSUM_NAMES[type] ?? `unknown(${type})`;
}

let xxh64: ((data: Uint8Array, seed?: bigint) => bigint) | undefined;

/**
 * xxhash64 is a wasm module that loads asynchronously; call this once before
 * using checksum type 1 (Filesystem.open does it when the image needs it).
 */
export async function initChecksums(): Promise<void> {
  if (!xxh64) {
    const api = await xxhashInit();
    xxh64 = (data, seed = 0n) => api.h64Raw(data, seed);
  }
}

/**
 * The checksum of `data` in the image's algorithm, as the bytes stored on disk
 * (little-endian for crc32c and xxhash64, digest order for the others).
 */
export function checksum(type: number, data: Uint8Array): Buffer {
  switch (type) {
    case 0: {
      const out = Buffer.alloc(4);
      out.writeUInt32LE(crc32c(data));
      return out;
    }
    case 1: {
      if (!xxh64) throw new BtrfsError('EINVAL', 'xxhash64 not initialised: await initChecksums() first');
      const out = Buffer.alloc(8);
      out.writeBigUInt64LE(xxh64(data));
      return out;
    }
    case 2:
      return createHash('sha256').update(data).digest();
    case 3:
      return Buffer.from(blake2b(data, { dkLen: 32 }));
    default:
      throw new BtrfsError('ENOTSUP', `unknown checksum type ${type}`);
  }
}
