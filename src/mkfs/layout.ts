/**
 * Where a new filesystem's chunks and tree blocks go, on its one device.
 *
 *   physical  [0, 1 MiB)   never allocated: boot loaders and partition tools live
 *                          here, and the primary superblock sits at 64 KiB
 *             SYSTEM       DUP: 2 copies of 8 MiB      single: 4 MiB
 *             METADATA     DUP: 2 copies of M          single: 8 MiB
 *             DATA         single: 8 MiB
 *   logical   the same three chunks in the same order, from 1 MiB up
 *
 * The sizes are the ones mkfs.btrfs 6.2 ends up with. For DUP metadata M is
 * 256 MiB (1 GiB on devices over 50 GiB); when that is more than a tenth of the
 * device, the tenth is shared by the two copies (rounded down to the 64 KiB
 * stripe length), but a copy is never smaller than 32 MiB. The kernel adds
 * chunks as the filesystem fills, so small initial DATA and single-profile
 * chunks cost nothing.
 *
 * Superblock mirrors may fall inside a chunk (64 MiB usually does, in the
 * second METADATA copy): the kernel then never allocates the 64 KiB stripe
 * holding the mirror, and neither does TreeBlockAllocator.
 */
import { BtrfsError } from '../util/errors.js';
import { BLOCK_GROUP, SUPER_INFO_SIZE, SUPER_MIRROR_OFFSETS } from '../format/constants.js';

export type MetadataProfile = 'single' | 'dup';

const KiB = 1024n;
const MiB = 1024n * KiB;
const GiB = 1024n * MiB;

/** Stripe length of every chunk mkfs makes; also the span excluded around a superblock mirror. */
export const STRIPE_LEN = 64n * KiB;
/** The device bytes before the first chunk. */
export const RESERVED_BYTES = 1n * MiB;

export interface ChunkPlan {
  /** BLOCK_GROUP type bit, plus DUP when mirrored */
  type: bigint;
  logical: bigint;
  length: bigint;
  /** physical offset of each copy on device 1 (one for single, two for DUP) */
  stripes: bigint[];
}

export interface Layout {
  totalBytes: bigint;
  system: ChunkPlan;
  metadata: ChunkPlan;
  data: ChunkPlan;
  /** all three, in logical (and physical) order */
  chunks: ChunkPlan[];
  /** device bytes covered by chunk stripes: the dev item's bytes_used */
  devBytesUsed: bigint;
}

/** One copy of the METADATA chunk with DUP, by mkfs.btrfs 6.2's rule (see the top of this file). */
export function dupMetadataStripeBytes(totalBytes: bigint): bigint {
  const wanted = totalBytes > 50n * GiB ? GiB : 256n * MiB;
  const tenth = totalBytes / 10n;
  const size = wanted > tenth ? (tenth / 2n / STRIPE_LEN) * STRIPE_LEN : wanted;
  return size < 32n * MiB ? 32n * MiB : size;
}

function chunkSizes(totalBytes: bigint, profile: MetadataProfile): { system: bigint; metadata: bigint; data: bigint } {
  return profile === 'dup'
    ? { system: 8n * MiB, metadata: dupMetadataStripeBytes(totalBytes), data: 8n * MiB }
    : { system: 4n * MiB, metadata: 8n * MiB, data: 8n * MiB };
}

/** The smallest device the layout fits on (a multiple of 1 MiB). */
export function minDeviceBytes(profile: MetadataProfile): bigint {
  // the metadata copy size only grows with the device, so its floor decides
  const s = chunkSizes(0n, profile);
  const copies = profile === 'dup' ? 2n : 1n;
  return RESERVED_BYTES + copies * (s.system + s.metadata) + s.data;
}

/**
 * The chunks for a device of `totalBytes` (already a multiple of the sector
 * size). Throws EINVAL when they do not fit.
 */
export function planLayout(totalBytes: bigint, profile: MetadataProfile): Layout {
  const min = minDeviceBytes(profile);
  if (totalBytes < min) {
    throw new BtrfsError('EINVAL',
      `device too small: ${totalBytes} bytes, a filesystem with ${profile === 'dup' ? 'DUP' : 'single'} metadata needs at least ` +
      `${min} bytes (${min / MiB} MiB); mkfs.btrfs would need --mixed for smaller devices, and mixed block groups are not supported`);
  }
  const sizes = chunkSizes(totalBytes, profile);
  const dup = profile === 'dup';
  let physical = RESERVED_BYTES;
  let logical = RESERVED_BYTES;
  const place = (type: bigint, length: bigint, copies: number): ChunkPlan => {
    const stripes: bigint[] = [];
    for (let i = 0; i < copies; i++) {
      stripes.push(physical);
      physical += length;
    }
    const c: ChunkPlan = { type: copies > 1 ? type | BLOCK_GROUP.DUP : type, logical, length, stripes };
    logical += length;
    return c;
  };
  const system = place(BLOCK_GROUP.SYSTEM, sizes.system, dup ? 2 : 1);
  const metadata = place(BLOCK_GROUP.METADATA, sizes.metadata, dup ? 2 : 1);
  const data = place(BLOCK_GROUP.DATA, sizes.data, 1);
  // the rule above guarantees this; a failure here is a bug in it, not a user error
  if (physical > totalBytes) throw new Error(`mkfs layout overruns the device: ${physical} > ${totalBytes}`);
  return { totalBytes, system, metadata, data, chunks: [system, metadata, data], devBytesUsed: physical - RESERVED_BYTES };
}

/**
 * Superblock copies on a filesystem of `totalBytes`: each mirror that ends
 * before the filesystem does (the kernel's rule, strict, both when writing
 * them and when reading them back).
 */
export function superblockOffsets(totalBytes: bigint): number[] {
  return SUPER_MIRROR_OFFSETS.filter((off) => BigInt(off + SUPER_INFO_SIZE) < totalBytes);
}

/**
 * Hands out tree blocks of one chunk in ascending order, skipping any block
 * one of whose copies would touch the 64 KiB stripe at a superblock mirror
 * (whether or not the device is large enough for that mirror: the kernel
 * excludes all three).
 */
export class TreeBlockAllocator {
  private next: bigint;

  constructor(readonly chunk: ChunkPlan, readonly nodesize: number) {
    this.next = chunk.logical;
  }

  alloc(): bigint {
    const size = BigInt(this.nodesize);
    const end = this.chunk.logical + this.chunk.length;
    while (this.next + size <= end) {
      const bytenr = this.next;
      this.next += size;
      if (!this.touchesMirror(bytenr, size)) return bytenr;
    }
    throw new BtrfsError('ENOSPC', `no room for another tree block in the chunk at ${this.chunk.logical}`);
  }

  private touchesMirror(bytenr: bigint, size: bigint): boolean {
    const rel = bytenr - this.chunk.logical;
    return this.chunk.stripes.some((stripe) => SUPER_MIRROR_OFFSETS.some((m) => {
      const mirror = BigInt(m);
      return stripe + rel < mirror + STRIPE_LEN && mirror < stripe + rel + size;
    }));
  }
}
