/**
 * zlib extents, decoded the way fs/btrfs/zlib.c does:
 * - the 2-byte zlib header is checked and skipped, and the deflate data is
 *   inflated raw, so the trailing adler32 is never verified;
 * - decoding stops as soon as the extent's plaintext is complete, so bytes
 *   after that point (sector padding, or anything else) are never looked at;
 * - a stream that ends cleanly before ram_bytes leaves a zero tail; one that
 *   runs out of input without its end-of-stream block is EIO.
 */
import zlib from 'node:zlib';
import { BtrfsError } from '../errors.js';
import { finishOutput, type DecompressOptions } from './common.js';

const Z_DEFLATED = 8;
const PRESET_DICT = 0x20;
// One more input byte adds at most a few KiB of output (a handful of
// 258-byte matches, or a stored byte), so a prefix that first reaches
// ram_bytes overshoots it by far less than this.
const PREFIX_SLACK = 64 * 1024;

interface ZlibFailure { code?: string; message?: string }

function inflate(raw: Uint8Array, windowBits: number, flush: number, limit: number): Buffer {
  return zlib.inflateRawSync(raw, { windowBits, finishFlush: flush, maxOutputLength: Math.max(1, limit) });
}

function eio(detail: string, cause?: unknown): BtrfsError {
  return new BtrfsError('EIO', `zlib: ${detail}`, cause === undefined ? {} : { cause });
}

export function zlibDecompress(data: Uint8Array, outLen: number, opts: DecompressOptions = {}): Buffer {
  const inline = opts.inline === true;
  if (data.length <= 2) throw eio(`compressed data of ${data.length} bytes holds no stream`);
  const cmf = data[0]!;
  const flg = data[1]!;
  if ((cmf & 0x0f) !== Z_DEFLATED || ((cmf << 8) | flg) % 31 !== 0) {
    throw eio(`bad stream header ${cmf.toString(16).padStart(2, '0')}${flg.toString(16).padStart(2, '0')}`);
  }
  if (flg & PRESET_DICT) throw eio('stream needs a preset dictionary');
  const windowBits = (cmf >> 4) + 8;
  if (windowBits > 15) throw eio(`window of 2^${windowBits} bytes is larger than zlib allows`);
  const raw = data.subarray(2);
  const out = Buffer.alloc(outLen);
  if (outLen === 0) return out;

  const { Z_FINISH, Z_SYNC_FLUSH } = zlib.constants;
  let plain: Buffer;
  try {
    plain = inflate(raw, windowBits, Z_FINISH, outLen);
  } catch (e) {
    const code = (e as ZlibFailure).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') {
      plain = overlong(raw, windowBits, outLen);
    } else if (code === 'Z_BUF_ERROR') {
      // Out of input before the final block. The kernel still succeeds if
      // what was decoded already fills the extent.
      try {
        plain = inflate(raw, windowBits, Z_SYNC_FLUSH, outLen);
      } catch (e2) {
        if ((e2 as ZlibFailure).code !== 'ERR_BUFFER_TOO_LARGE') throw eio(`corrupt stream: ${(e2 as ZlibFailure).message}`, e2);
        plain = overlong(raw, windowBits, outLen);
      }
      if (plain.length < outLen) throw eio(`stream truncated after ${plain.length} of ${outLen} bytes`, e);
    } else {
      throw eio(`corrupt stream: ${(e as ZlibFailure).message}`, e);
    }
  }
  const produced = Math.min(plain.length, outLen);
  plain.copy(out, 0, 0, produced);
  return finishOutput('zlib', out, produced, inline);
}

/**
 * The first outLen bytes of a stream known to decode to more than that,
 * without inflating all of it (a small extent can expand ~1000-fold): the
 * shortest input prefix whose output reaches outLen is found by bisection,
 * every attempt capped at outLen + PREFIX_SLACK bytes. A prefix's output is
 * a prefix of the whole output, so that attempt holds the answer.
 */
function overlong(raw: Uint8Array, windowBits: number, outLen: number): Buffer {
  type Attempt = Buffer | 'over' | { error: unknown };
  const attempt = (k: number): Attempt => {
    try {
      return inflate(raw.subarray(0, k), windowBits, zlib.constants.Z_SYNC_FLUSH, outLen + PREFIX_SLACK);
    } catch (e) {
      return (e as ZlibFailure).code === 'ERR_BUFFER_TOO_LARGE' ? 'over' : { error: e };
    }
  };
  // Invariant: prefix lo gives fewer than outLen bytes; prefix hi gives
  // enough, too many, or an error (so any corruption lies before hi).
  let lo = 0;
  let hi = raw.length;
  let best: Attempt = attempt(hi);
  if (Buffer.isBuffer(best) && best.length >= outLen) return best;
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    const r = attempt(mid);
    if (Buffer.isBuffer(r) && r.length < outLen) lo = mid;
    else { hi = mid; best = r; }
  }
  if (Buffer.isBuffer(best)) return best;
  if (best === 'over') throw eio(`${hi} bytes of stream expand to more than ${outLen + PREFIX_SLACK} bytes`);
  throw eio(`corrupt stream: ${(best.error as ZlibFailure).message}`, best.error);
}
