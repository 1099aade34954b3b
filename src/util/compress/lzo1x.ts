// Hand-written: npm has no maintained pure-JS LZO1X decoder (`lzo` is a native binding, `lzo-wasm` an FFmpeg browser build).
/**
 * LZO1X decompression with the acceptance rules of the kernel's
 * lzo1x_decompress_safe(): every literal run and match is bounds-checked
 * against both buffers, a match may not reach before the start of the output,
 * the stream must end with the 3-byte end marker and consume the input
 * exactly. The LZO-RLE extension (bitstream version 1) is accepted because
 * the kernel's decoder accepts it, although btrfs never writes it.
 */
import { BtrfsError } from '../errors.js';

export class LzoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LzoError';
  }
}

const M2_MAX_OFFSET = 0x0800;
const M4_BASE = 0x4000;

/**
 * Decompresses one LZO1X stream from `src` into `dst`, returning the number
 * of bytes written. The output must fit `dst`: overrun is an error, as in the
 * kernel, so `dst.length` is the caller's bound on memory and work.
 */
export function lzo1xDecompress(src: Uint8Array, dst: Uint8Array): number {
  const inEnd = src.length;
  const outEnd = dst.length;
  let ip = 0;
  let op = 0;

  const fail = (why: string): never => { throw new LzoError(`${why} (input offset ${ip}, output offset ${op})`); };
  const needIn = (n: number): void => { if (inEnd - ip < n) fail('input overrun'); };
  const needOut = (n: number): void => { if (outEnd - op < n) fail('output overrun'); };

  // A length whose short field was zero continues in the following bytes:
  // each zero byte adds 255, the first non-zero byte ends it. Reading is
  // bounded by the input, so the result is at most 255 * src.length.
  const extendedLength = (base: number): number => {
    let n = 0;
    for (;;) {
      needIn(1);
      const b = src[ip++]!;
      if (b !== 0) return base + n + b;
      n += 255;
    }
  };

  const copyLiterals = (n: number): void => {
    needIn(n);
    needOut(n);
    dst.set(src.subarray(ip, ip + n), op);
    ip += n;
    op += n;
  };

  const copyMatch = (distance: number, len: number): void => {
    if (distance > op) fail(`match distance ${distance} reaches before the start of the output`);
    needOut(len);
    let from = op - distance;
    // Byte by byte: overlapping copies (distance < len) repeat the pattern.
    for (let i = 0; i < len; i++) dst[op++] = dst[from++]!;
  };

  let version = 0;
  if (inEnd >= 5 && src[0] === 17) {
    version = src[1]!;
    ip = 2;
    if (version > 1) fail(`unknown LZO bitstream version ${version}`);
  }
  needIn(1);

  // How many literals followed the previous instruction: 0, 1..3, or 4 for a
  // literal run. It changes what instructions 0..15 mean.
  let state = 0;
  if (src[ip]! > 17) {
    const t = src[ip++]! - 17;
    copyLiterals(t);
    state = t < 4 ? t : 4;
  }

  for (;;) {
    needIn(1);
    const t = src[ip++]!;
    let trailing: number;
    if (t < 16) {
      if (state === 0) {
        const len = (t === 0 ? extendedLength(15) : t) + 3;
        copyLiterals(len);
        state = 4;
        continue;
      }
      needIn(1);
      const h = src[ip++]!;
      if (state === 4) copyMatch((h << 2) + ((t >> 2) & 3) + M2_MAX_OFFSET + 1, 3);
      else copyMatch((h << 2) + ((t >> 2) & 3) + 1, 2);
      trailing = t & 3;
    } else if (t >= 64) {
      needIn(1);
      const h = src[ip++]!;
      const distance = (h << 3) + ((t >> 2) & 7) + 1;
      const len = t >= 128 ? ((t >> 5) & 3) + 5 : ((t >> 5) & 1) + 3;
      copyMatch(distance, len);
      trailing = t & 3;
    } else if (t >= 32) {
      const len = (t & 31 ? t & 31 : extendedLength(31)) + 2;
      needIn(2);
      const d = src[ip]! | (src[ip + 1]! << 8);
      ip += 2;
      copyMatch((d >> 2) + 1, len);
      trailing = d & 3;
    } else {
      // 0001HLLL: far match, the end marker, or (version 1) a run of zeros.
      const high = (t & 8) << 11;
      if (version === 1 && high !== 0 && inEnd - ip >= 3 && (src[ip]! & 0xfc) === 0xfc && src[ip + 1] === 0xff) {
        const d = src[ip]!;
        const len = ((t & 7) | (src[ip + 2]! << 3)) + 4;
        ip += 3;
        needOut(len);
        dst.fill(0, op, op + len);
        op += len;
        trailing = d & 3;
      } else {
        const len = (t & 7 ? t & 7 : extendedLength(7)) + 2;
        needIn(2);
        const d = src[ip]! | (src[ip + 1]! << 8);
        ip += 2;
        const distance = M4_BASE + high + (d >> 2);
        if (distance === M4_BASE) {
          if (len !== 3) fail('malformed end-of-stream marker');
          if (ip !== inEnd) fail(`${inEnd - ip} bytes of input after the end of the stream`);
          return op;
        }
        copyMatch(distance, len);
        trailing = d & 3;
      }
    }
    copyLiterals(trailing);
    state = trailing;
  }
}

/** lzo1xDecompress, with failures as the kernel reports them to readers: EIO. */
export function lzo1xDecompressOrEIO(src: Uint8Array, dst: Uint8Array, what: string): number {
  try {
    return lzo1xDecompress(src, dst);
  } catch (e) {
    if (e instanceof LzoError) throw new BtrfsError('EIO', `lzo: ${what}: ${e.message}`, { cause: e });
    throw e;
  }
}

/** lzo1x_worst_compress(): the largest segment a sector can compress to, and the kernel's segment buffer size. */
export function lzo1xWorstCompress(n: number): number {
  return n + Math.floor(n / 16) + 64 + 3;
}
