/**
 * u64 values as plain numbers where they fit. The hot loops of a check
 * handle millions of inode numbers, sizes and byte counts; as bigints each
 * would be a heap allocation. A `U64` is a number when below 2^53 and a
 * bigint otherwise, always normalized that way, so `===` between two U64s is
 * exact and relational operators work across the two representations.
 */
export type U64 = number | bigint;

const SAFE = Number.MAX_SAFE_INTEGER;
const SAFE_BIG = BigInt(SAFE);

/** The u64 at `off`, little-endian. */
export function readU64(b: Buffer, off: number): U64 {
  // Bytes by index rather than readUInt32LE (which validates its argument on every call): this
  // runs for nearly every field of every item. Below 2^53 the high word fits in 21 bits and the
  // double is exact. A read past the end yields undefined bytes, caught by the bigint read.
  const hi = (b[off + 4]! | (b[off + 5]! << 8) | (b[off + 6]! << 16)) + b[off + 7]! * 16777216;
  return hi < 0x200000 ? hi * 4294967296 + ((b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16)) + b[off + 3]! * 16777216) : b.readBigUInt64LE(off);
}

export function fromBig(v: bigint): U64 {
  return v <= SAFE_BIG ? Number(v) : v;
}

export function toBig(v: U64): bigint {
  return typeof v === 'bigint' ? v : BigInt(v);
}

/** a + b, wrapping at 2^64 as the on-disk arithmetic does. */
export function addU64(a: U64, b: U64): U64 {
  if (typeof a === 'number' && typeof b === 'number') {
    const s = a + b;
    if (s <= SAFE) return s;
  }
  return fromBig(BigInt.asUintN(64, toBig(a) + toBig(b)));
}

// Bigints are heap objects, each one the garbage collector copies while it lives. Most counts,
// flags, tree ids and offsets a check keeps are small, and a shared object serves them all.
const SMALL = 4096;
const SMALL_BIGS: bigint[] = Array.from({ length: SMALL }, (_, i) => BigInt(i));

/** The u64 at `off` as a bigint, the same object for every value below 4096. */
export function readBig(b: Buffer, off: number): bigint {
  const lo = b.readUInt32LE(off);
  return lo < SMALL && b.readUInt32LE(off + 4) === 0 ? SMALL_BIGS[lo]! : b.readBigUInt64LE(off);
}

/** `v` as a bigint, shared below 4096 (see readBig). */
export function smallBig(v: bigint | number): bigint {
  if (typeof v === 'number') return v < SMALL ? SMALL_BIGS[v]! : BigInt(v);
  return v >= 0n && v < 4096n ? SMALL_BIGS[Number(v)]! : v;
}

declare const ADDR_KEY: unique symbol;
/**
 * A byte address as a map key (see addrKey). Branded, so that a map keyed by
 * addresses cannot be handed a raw U64 by mistake.
 */
export type AddrKey = (number | bigint) & { readonly [ADDR_KEY]: true };

const KEY_UNIT = 4096;
const KEY_LIMIT = KEY_UNIT * 2 ** 30;

/**
 * The key of byte address `v` in a map: `v / 4096` when `v` is 4 KiB aligned
 * (every tree block and data extent: the sector size is at least 4 KiB) and
 * below 4 TiB, else `v` as a bigint. V8 hashes small integers fastest and
 * boxes every number above 2^31 (most addresses) in a heap object of its
 * own; a bigint key never equals a number key, so the two kinds cannot collide.
 */
export function addrKey(v: U64): AddrKey {
  if (typeof v === 'number' && v < KEY_LIMIT && v % KEY_UNIT === 0) return (v / KEY_UNIT) as AddrKey;
  return toBig(v) as AddrKey;
}

/** The address a key stands for, as a bigint (for messages). */
export function keyAddr(k: AddrKey): bigint {
  return typeof k === 'number' ? BigInt(k) * 4096n : k;
}
