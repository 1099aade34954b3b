/**
 * btrfs' framing of LZO data (fs/btrfs/lzo.c):
 *
 *   le32 total length (this header included, padding included)
 *   repeated: le32 segment length, then that many bytes of one LZO1X stream
 *             holding at most one sector of plaintext
 *
 * A segment header never straddles a sector boundary: when fewer than 4 bytes
 * are left in the sector after a segment, the writer pads them with zeros and
 * the next header starts on the next sector. Segment data itself may cross
 * sectors. Each segment is an independent LZO1X stream (no shared window).
 */
import { BtrfsError } from '../errors.js';
import { lzo1xDecompressOrEIO, lzo1xWorstCompress } from './lzo1x.js';
import { finishOutput, type DecompressOptions, MAX_COMPRESSED } from './common.js';

const LZO_LEN = 4;

function le32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

export function lzoDecompress(data: Uint8Array, outLen: number, sectorsize: number, opts: DecompressOptions = {}): Buffer {
  return opts.inline ? lzoInline(data, outLen, sectorsize) : lzoRegular(data, outLen, sectorsize);
}

function lzoRegular(data: Uint8Array, outLen: number, sectorsize: number): Buffer {
  if (data.length < LZO_LEN) throw new BtrfsError('EIO', `lzo: compressed extent of ${data.length} bytes has no header`);
  const total = le32(data, 0);
  // The kernel refuses (EUCLEAN) a total longer than the extent or than
  // btrfs ever compresses, and one that leaves whole sectors unused.
  if (total > Math.min(MAX_COMPRESSED, data.length) || Math.ceil(total / sectorsize) * sectorsize < data.length) {
    throw new BtrfsError('EIO', `lzo: header length ${total} does not fit a compressed extent of ${data.length} bytes`);
  }
  const out = Buffer.alloc(outLen);
  const segMax = lzo1xWorstCompress(sectorsize);
  const seg = new Uint8Array(segMax);
  let cur = LZO_LEN;
  let produced = 0;
  while (cur < total && produced < outLen) {
    if (cur + LZO_LEN > data.length) throw new BtrfsError('EIO', `lzo: segment header at ${cur} runs past the extent`);
    const segLen = le32(data, cur);
    cur += LZO_LEN;
    if (segLen > segMax) throw new BtrfsError('EIO', `lzo: segment at ${cur - LZO_LEN} is ${segLen} bytes, more than ${segMax}`);
    if (cur + segLen > data.length) throw new BtrfsError('EIO', `lzo: segment at ${cur - LZO_LEN} (${segLen} bytes) runs past the extent`);
    const n = lzo1xDecompressOrEIO(data.subarray(cur, cur + segLen), seg, `segment at ${cur - LZO_LEN}`);
    cur += segLen;
    // Output beyond outLen is dropped, as the kernel stops once the read is filled.
    const take = Math.min(n, outLen - produced);
    out.set(seg.subarray(0, take), produced);
    produced += take;
    const left = sectorsize - (cur % sectorsize);
    if (left < LZO_LEN) cur += left;
  }
  return finishOutput('lzo', out, produced, false);
}

/**
 * Inline extents hold exactly one segment, and the kernel checks the framing
 * strictly: both lengths must match the item, and the plaintext must fill
 * ram_bytes (a short one is EIO there, after zero-filling the page).
 */
function lzoInline(data: Uint8Array, outLen: number, sectorsize: number): Buffer {
  if (data.length < LZO_LEN * 2 || data.length > lzo1xWorstCompress(sectorsize) + LZO_LEN * 2) {
    throw new BtrfsError('EIO', `lzo: inline extent of ${data.length} bytes cannot hold one segment`);
  }
  if (le32(data, 0) !== data.length) throw new BtrfsError('EIO', `lzo: inline header length ${le32(data, 0)}, item holds ${data.length}`);
  const segLen = le32(data, LZO_LEN);
  if (segLen !== data.length - LZO_LEN * 2) throw new BtrfsError('EIO', `lzo: inline segment length ${segLen}, item holds ${data.length - LZO_LEN * 2}`);
  const seg = new Uint8Array(sectorsize);
  const n = lzo1xDecompressOrEIO(data.subarray(LZO_LEN * 2), seg, 'inline segment');
  const out = Buffer.alloc(outLen);
  const take = Math.min(n, outLen);
  out.set(seg.subarray(0, take), 0);
  return finishOutput('lzo', out, take, true);
}
