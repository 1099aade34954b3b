/**
 * EXTENT_CSUM (csum tree, key (EXTENT_CSUM EXTENT_CSUM logical)): the data
 * checksums of consecutive sectors starting at `logical`, csum_size bytes
 * each (4 crc32c, 8 xxhash64, 32 sha256/blake2b), nothing else.
 */
import { corrupt } from '../../util/errors.js';

export function decodeExtentCsums(b: Buffer, csumSize: number): Buffer[] {
  if (csumSize <= 0 || b.length % csumSize !== 0) {
    throw corrupt(`extent_csum: item of ${b.length} bytes is not a multiple of csum size ${csumSize}`);
  }
  const out: Buffer[] = [];
  for (let off = 0; off < b.length; off += csumSize) out.push(Buffer.from(b.subarray(off, off + csumSize)));
  return out;
}

export function encodeExtentCsums(csums: Buffer[]): Buffer {
  return Buffer.concat(csums);
}

/** Bytes of data an item of `itemSize` covers. */
export function csumItemCoverage(itemSize: number, csumSize: number, sectorsize: number): number {
  return Math.floor(itemSize / csumSize) * sectorsize;
}
