import { BtrfsError } from '../errors.js';

/** BTRFS_MAX_COMPRESSED: the kernel never stores a compressed extent longer than this. */
export const MAX_COMPRESSED = 128 * 1024;
/** BTRFS_MAX_UNCOMPRESSED: nor one that expands to more than this. */
export const MAX_UNCOMPRESSED = 128 * 1024;

export interface DecompressOptions {
  /**
   * The data is an inline extent's item payload. The kernel decodes those
   * with separate, stricter code: a plaintext shorter than ram_bytes is EIO
   * there (regular extents are zero-filled and read fine), and LZO's framing
   * must match the item size exactly.
   */
  inline?: boolean;
}

/**
 * Applies the kernel's rule for a stream that ended before filling the
 * extent: `out` was allocated zeroed, so regular extents keep the zero tail
 * (zero_fill_bio() after a clean end of stream); inline extents fail.
 */
export function finishOutput(algo: string, out: Buffer, produced: number, inline: boolean): Buffer {
  if (produced < out.length && inline) {
    throw new BtrfsError('EIO', `${algo}: inline extent decompressed to ${produced} bytes, expected ${out.length}`);
  }
  return out;
}
