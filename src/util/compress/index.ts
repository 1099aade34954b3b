/**
 * Decompression of btrfs compressed file extents (BTRFS_COMPRESS_ZLIB = 1,
 * LZO = 2, ZSTD = 3), reproducing what the kernel accepts and returns.
 */
import { BtrfsError } from '../errors.js';
import { MAX_UNCOMPRESSED, type DecompressOptions } from './common.js';
import { zlibDecompress } from './zlib.js';
import { lzoDecompress } from './lzo.js';
import { zstdDecompress } from './zstd.js';

export { zlibDecompress } from './zlib.js';
export { lzoDecompress } from './lzo.js';
export { zstdDecompress } from './zstd.js';
export { lzo1xDecompress, lzo1xWorstCompress, LzoError } from './lzo1x.js';
export { MAX_COMPRESSED, MAX_UNCOMPRESSED, type DecompressOptions } from './common.js';

export const COMPRESSION = { NONE: 0, ZLIB: 1, LZO: 2, ZSTD: 3 } as const;

/**
 * The plaintext of one compressed extent, exactly `outLen` bytes.
 *
 * `data` is the extent as stored: disk_num_bytes read at disk_bytenr (sector
 * padding included), or an inline item's payload. `outLen` is ram_bytes.
 * A stream that ends cleanly but short is zero-filled, as the kernel does for
 * regular extents (pass `{ inline: true }` for the kernel's stricter inline
 * rules); plaintext past `outLen` is dropped. Undecodable data is EIO.
 */
export function decompressExtent(type: number, data: Uint8Array, outLen: number, sectorsize: number, opts: DecompressOptions = {}): Buffer {
  if (!Number.isSafeInteger(sectorsize) || sectorsize < 512 || sectorsize > 65536 || (sectorsize & (sectorsize - 1)) !== 0) {
    throw new BtrfsError('EINVAL', `invalid sectorsize ${sectorsize}`);
  }
  if (!Number.isSafeInteger(outLen) || outLen < 0) throw new BtrfsError('EINVAL', `invalid decompressed length ${outLen}`);
  // ram_bytes comes from the image; bounding it bounds the allocation. The
  // kernel never compresses more than 128 KiB into one extent, nor inlines
  // more than a sector.
  const limit = opts.inline ? sectorsize : MAX_UNCOMPRESSED;
  if (outLen > limit) {
    throw new BtrfsError('EIO', `${opts.inline ? 'inline' : 'compressed'} extent claims ${outLen} bytes of plaintext, more than the ${limit} btrfs allows`);
  }
  switch (type) {
    case COMPRESSION.ZLIB: return zlibDecompress(data, outLen, opts);
    case COMPRESSION.LZO: return lzoDecompress(data, outLen, sectorsize, opts);
    case COMPRESSION.ZSTD: return zstdDecompress(data, outLen, opts);
    default: throw new BtrfsError('EIO', `unknown compression type ${type}`);
  }
}
