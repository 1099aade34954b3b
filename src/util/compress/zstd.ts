/**
 * zstd extents (RFC 8878 frames, as fs/btrfs/zstd.c writes and reads them).
 *
 * Hand-written rather than fzstd: fzstd trusts the sequence bitstream, so an
 * 18-byte hostile frame keeps it copying for over a minute (measured 94 s),
 * and without an output buffer it allocates the window a header claims (up
 * to 2 GiB). This decoder checks every length against the block and output
 * limits, so its work is linear in input plus output.
 *
 * Kernel rules kept: one frame is decoded and whatever follows it (sector
 * padding) is ignored; the window may not exceed 128 KiB
 * (ZSTD_BTRFS_MAX_WINDOWLOG); no dictionaries; decoding stops once ram_bytes
 * are produced; a frame that ends early leaves a zero tail.
 */
import { BtrfsError } from '../errors.js';
import { finishOutput, type DecompressOptions } from './common.js';

const MAGIC = 0xfd2fb528;
const MAX_WINDOW = 1 << 17;
const BLOCK_MAX = 128 * 1024;

class ZstdError extends Error {}
const fail = (why: string): never => { throw new ZstdError(why); };

// ---- bit readers ---------------------------------------------------------

/** Reads a forward little-endian bitstream (FSE table headers). */
class ForwardBits {
  private bit = 0;
  constructor(private readonly buf: Uint8Array, private readonly start: number, private readonly end: number) {}
  /** n <= 24; bits past the end read as zero (callers check `bytesUsed`). */
  peek(n: number): number {
    const pos = this.start * 8 + this.bit;
    const i = pos >>> 3;
    const b = this.buf;
    const e = this.end;
    const v = ((i < e ? b[i]! : 0) | ((i + 1 < e ? b[i + 1]! : 0) << 8) | ((i + 2 < e ? b[i + 2]! : 0) << 16) | ((i + 3 < e ? b[i + 3]! : 0) << 24)) >>> 0;
    return (v >>> (pos & 7)) & ((1 << n) - 1);
  }
  skip(n: number): void { this.bit += n; }
  read(n: number): number { const v = this.peek(n); this.bit += n; return v; }
  get bytesUsed(): number { return (this.bit + 7) >>> 3; }
}

/**
 * Reads a backward bitstream (Huffman and FSE payloads): the last byte's
 * highest set bit marks the end, and fields are read from there towards the
 * first byte, most significant first. Reads past the first byte yield zeros
 * and leave `pos` negative, which callers treat as corruption or end.
 */
class BackwardBits {
  pos: number;
  constructor(private readonly buf: Uint8Array, private readonly start: number, end: number) {
    if (end <= start) fail('empty bitstream');
    const last = buf[end - 1]!;
    if (last === 0) fail('bitstream lacks its end marker');
    this.pos = (end - start) * 8 - (Math.clz32(last) - 24) - 1;
  }
  private bitsBelow(hi: number, n: number): number {
    // n <= 24 bits ending (exclusively) at bit `hi` of the stream, hi >= n.
    const lo = hi - n;
    const i = this.start + (lo >>> 3);
    const b = this.buf;
    const v = (b[i]! | ((b[i + 1] ?? 0) << 8) | ((b[i + 2] ?? 0) << 16) | ((b[i + 3] ?? 0) << 24)) >>> 0;
    return (v >>> (lo & 7)) & ((1 << n) - 1);
  }
  peek(n: number): number {
    if (n === 0) return 0;
    const hi = this.pos;
    if (hi >= n) return this.bitsBelow(hi, n);
    if (hi <= 0) return 0;
    return this.bitsBelow(hi, hi) << (n - hi);
  }
  read(n: number): number {
    if (n <= 24) {
      const v = this.peek(n);
      this.pos -= n;
      return v;
    }
    const high = this.read(n - 16);
    return high * 65536 + this.read(16);
  }
}

// ---- FSE -----------------------------------------------------------------

interface FseTable {
  log: number;
  symbol: Uint8Array;
  bits: Uint8Array;
  base: Uint16Array;
}

function highBit(v: number): number { return 31 - Math.clz32(v); }

function buildFse(counts: ArrayLike<number>, nSymbols: number, log: number): FseTable {
  const size = 1 << log;
  const symbol = new Uint8Array(size);
  const bits = new Uint8Array(size);
  const base = new Uint16Array(size);
  const next = new Uint16Array(nSymbols);
  let high = size - 1;
  for (let s = 0; s < nSymbols; s++) {
    if (counts[s] === -1) {
      symbol[high--] = s;
      next[s] = 1;
    } else {
      next[s] = counts[s]!;
    }
  }
  const step = (size >> 1) + (size >> 3) + 3;
  const mask = size - 1;
  let p = 0;
  for (let s = 0; s < nSymbols; s++) {
    for (let i = 0; i < counts[s]!; i++) {
      symbol[p] = s;
      do p = (p + step) & mask; while (p > high);
    }
  }
  if (p !== 0) fail('FSE distribution does not spread evenly');
  for (let u = 0; u < size; u++) {
    const s = symbol[u]!;
    const n = next[s]++;
    const nb = log - highBit(n);
    bits[u] = nb;
    base[u] = (n << nb) - size;
  }
  return { log, symbol, bits, base };
}

/** Reads an FSE table description; returns the table and bytes consumed. */
function readFse(buf: Uint8Array, start: number, end: number, maxLog: number, maxSymbol: number): [FseTable, number] {
  const r = new ForwardBits(buf, start, end);
  const log = r.read(4) + 5;
  if (log > maxLog) fail(`FSE accuracy log ${log} exceeds ${maxLog}`);
  const counts: number[] = [];
  let remaining = (1 << log) + 1;
  let threshold = 1 << log;
  let nbBits = log + 1;
  while (remaining > 1) {
    if (counts.length > maxSymbol) fail('FSE distribution has too many symbols');
    const max = 2 * threshold - 1 - remaining;
    let value: number;
    const low = r.peek(nbBits - 1);
    if (low < max) {
      value = low;
      r.skip(nbBits - 1);
    } else {
      value = r.peek(nbBits);
      if (value >= threshold) value -= max;
      r.skip(nbBits);
    }
    const count = value - 1;
    remaining -= count < 0 ? -count : count;
    counts.push(count);
    if (count === 0) {
      for (;;) {
        const rep = r.read(2);
        for (let i = 0; i < rep; i++) counts.push(0);
        if (rep !== 3) break;
        if (counts.length > maxSymbol + 1) fail('FSE distribution has too many symbols');
      }
    }
    while (remaining < threshold && threshold > 1) {
      nbBits--;
      threshold >>= 1;
    }
  }
  if (remaining !== 1 || counts.length > maxSymbol + 1) fail('FSE distribution does not add up');
  if (start + r.bytesUsed > end) fail('FSE table description runs past its block');
  return [buildFse(counts, counts.length, log), r.bytesUsed];
}

function rleFse(sym: number): FseTable {
  return { log: 0, symbol: Uint8Array.of(sym), bits: Uint8Array.of(0), base: Uint16Array.of(0) };
}

// Default distributions (RFC 8878 3.1.1.3.2.2).
const LL_DEFAULT = buildFse([4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1], 36, 6);
const ML_DEFAULT = buildFse([1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1], 53, 6);
const OF_DEFAULT = buildFse([1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1], 29, 5);

const LL_BASE = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
const LL_BITS = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const ML_BASE: number[] = [];
const ML_BITS: number[] = [];
for (let c = 0; c < 32; c++) { ML_BASE.push(c + 3); ML_BITS.push(0); }
ML_BASE.push(35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051, 4099, 8195, 16387, 32771, 65539);
ML_BITS.push(1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
const OF_MAX_CODE = 31;

// ---- Huffman -------------------------------------------------------------

interface HufTable {
  maxBits: number;
  symbol: Uint8Array;
  bits: Uint8Array;
}

/** Reads a Huffman tree description; returns the table and bytes consumed. */
function readHuffman(buf: Uint8Array, start: number, end: number): [HufTable, number] {
  if (start >= end) fail('missing Huffman tree description');
  const header = buf[start]!;
  const weights: number[] = [];
  let used: number;
  if (header >= 128) {
    const n = header - 127;
    used = 1 + ((n + 1) >> 1);
    if (start + used > end) fail('Huffman weights run past the block');
    for (let i = 0; i < n; i++) {
      const b = buf[start + 1 + (i >> 1)]!;
      weights.push(i & 1 ? b & 15 : b >> 4);
    }
  } else {
    used = 1 + header;
    if (header === 0 || start + used > end) fail('bad compressed Huffman weights size');
    const [fse, tl] = readFse(buf, start + 1, start + used, 6, 255);
    const r = new BackwardBits(buf, start + 1 + tl, start + used);
    let s1 = r.read(fse.log);
    let s2 = r.read(fse.log);
    for (;;) {
      if (weights.length >= 255) fail('too many Huffman weights');
      weights.push(fse.symbol[s1]!);
      s1 = fse.base[s1]! + r.read(fse.bits[s1]!);
      if (r.pos < 0) { weights.push(fse.symbol[s2]!); break; }
      if (weights.length >= 255) fail('too many Huffman weights');
      weights.push(fse.symbol[s2]!);
      s2 = fse.base[s2]! + r.read(fse.bits[s2]!);
      if (r.pos < 0) { weights.push(fse.symbol[s1]!); break; }
    }
  }
  let sum = 0;
  for (const w of weights) {
    if (w > 11) fail(`Huffman weight ${w} is too large`);
    if (w > 0) sum += 1 << (w - 1);
  }
  if (sum === 0) fail('Huffman weights are all zero');
  const maxBits = highBit(sum) + 1;
  if (maxBits > 11) fail('Huffman code longer than 11 bits');
  const rest = (1 << maxBits) - sum;
  if (rest & (rest - 1)) fail('Huffman weights do not form a prefix code');
  weights.push(highBit(rest) + 1);
  if (weights.length > 256) fail('too many Huffman symbols');

  const size = 1 << maxBits;
  const symbol = new Uint8Array(size);
  const bits = new Uint8Array(size);
  let p = 0;
  for (let w = 1; w <= maxBits; w++) {
    const span = 1 << (w - 1);
    for (let s = 0; s < weights.length; s++) {
      if (weights[s] !== w) continue;
      symbol.fill(s, p, p + span);
      bits.fill(maxBits + 1 - w, p, p + span);
      p += span;
    }
  }
  if (p !== size) fail('Huffman table does not fill');
  return [{ maxBits, symbol, bits }, used];
}

function decodeHuffStream(t: HufTable, buf: Uint8Array, start: number, end: number, dst: Uint8Array, from: number, to: number): void {
  const r = new BackwardBits(buf, start, end);
  for (let i = from; i < to; i++) {
    const k = r.peek(t.maxBits);
    dst[i] = t.symbol[k]!;
    r.pos -= t.bits[k]!;
    if (r.pos < 0) fail('Huffman stream overrun');
  }
  if (r.pos !== 0) fail('Huffman stream not fully consumed');
}

// ---- frame decoding ------------------------------------------------------

interface FrameState {
  out: Uint8Array;
  produced: number;
  window: number;
  blockMax: number;
  rep: [number, number, number];
  huf?: HufTable;
  ll?: FseTable;
  of?: FseTable;
  ml?: FseTable;
  lits: Uint8Array;
}

/** Signals that the output is full: the kernel stops reading there. */
class OutputFull extends Error {}

function decodeLiterals(st: FrameState, b: Uint8Array, p: number, end: number): [Uint8Array, number] {
  if (p >= end) fail('empty compressed block');
  const b0 = b[p]!;
  const type = b0 & 3;
  const fmt = (b0 >> 2) & 3;
  if (type <= 1) {
    let size: number;
    let hdr: number;
    if ((fmt & 1) === 0) { size = b0 >> 3; hdr = 1; }
    else if (fmt === 1) { if (p + 2 > end) fail('truncated literals header'); size = (b0 >> 4) | (b[p + 1]! << 4); hdr = 2; }
    else { if (p + 3 > end) fail('truncated literals header'); size = (b0 >> 4) | (b[p + 1]! << 4) | (b[p + 2]! << 12); hdr = 3; }
    if (size > BLOCK_MAX) fail('literals larger than a block');
    p += hdr;
    if (type === 0) {
      if (p + size > end) fail('raw literals run past the block');
      return [b.subarray(p, p + size), p + size];
    }
    if (p + 1 > end) fail('RLE literals run past the block');
    st.lits.fill(b[p]!, 0, size);
    return [st.lits.subarray(0, size), p + 1];
  }
  let regen: number;
  let comp: number;
  let hdr: number;
  const streams = fmt === 0 ? 1 : 4;
  if (fmt <= 1) {
    if (p + 3 > end) fail('truncated literals header');
    const v = b0 | (b[p + 1]! << 8) | (b[p + 2]! << 16);
    regen = (v >> 4) & 0x3ff; comp = (v >> 14) & 0x3ff; hdr = 3;
  } else if (fmt === 2) {
    if (p + 4 > end) fail('truncated literals header');
    const v = (b0 | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
    regen = (v >>> 4) & 0x3fff; comp = (v >>> 18) & 0x3fff; hdr = 4;
  } else {
    if (p + 5 > end) fail('truncated literals header');
    const v = (b0 | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
    regen = (v >>> 4) & 0x3ffff; comp = (v >>> 22) | (b[p + 4]! << 10); hdr = 5;
  }
  if (regen > BLOCK_MAX) fail('literals larger than a block');
  p += hdr;
  const cend = p + comp;
  if (cend > end) fail('compressed literals run past the block');
  if (type === 2) {
    const [t, used] = readHuffman(b, p, cend);
    st.huf = t;
    p += used;
  } else if (!st.huf) {
    fail('treeless literals without an earlier Huffman table');
  }
  const huf = st.huf!;
  const lits = st.lits;
  if (streams === 1) {
    decodeHuffStream(huf, b, p, cend, lits, 0, regen);
  } else {
    if (p + 6 > cend) fail('truncated Huffman jump table');
    const s1 = b[p]! | (b[p + 1]! << 8);
    const s2 = b[p + 2]! | (b[p + 3]! << 8);
    const s3 = b[p + 4]! | (b[p + 5]! << 8);
    const q = p + 6;
    if (q + s1 + s2 + s3 > cend) fail('Huffman jump table runs past the literals');
    const seg = Math.floor((regen + 3) / 4);
    if (seg * 3 > regen) fail('too few literals for four streams');
    decodeHuffStream(huf, b, q, q + s1, lits, 0, seg);
    decodeHuffStream(huf, b, q + s1, q + s1 + s2, lits, seg, 2 * seg);
    decodeHuffStream(huf, b, q + s1 + s2, q + s1 + s2 + s3, lits, 2 * seg, 3 * seg);
    decodeHuffStream(huf, b, q + s1 + s2 + s3, cend, lits, 3 * seg, regen);
  }
  return [lits.subarray(0, regen), cend];
}

function seqTable(st: FrameState, which: 'll' | 'of' | 'ml', mode: number, b: Uint8Array, p: number, end: number): number {
  const maxSym = which === 'll' ? 35 : which === 'ml' ? 52 : OF_MAX_CODE;
  const maxLog = which === 'of' ? 8 : 9;
  switch (mode) {
    case 0:
      st[which] = which === 'll' ? LL_DEFAULT : which === 'ml' ? ML_DEFAULT : OF_DEFAULT;
      return p;
    case 1: {
      if (p >= end) fail('truncated RLE sequence table');
      const s = b[p]!;
      if (s > maxSym) fail(`RLE ${which} code ${s} out of range`);
      st[which] = rleFse(s);
      return p + 1;
    }
    case 2: {
      const [t, used] = readFse(b, p, end, maxLog, maxSym);
      st[which] = t;
      return p + used;
    }
    default:
      if (!st[which]) fail(`repeat ${which} table without an earlier one`);
      return p;
  }
}

function decodeCompressedBlock(st: FrameState, b: Uint8Array, p: number, end: number): void {
  const blockStart = st.produced;
  const [lits, afterLits] = decodeLiterals(st, b, p, end);
  p = afterLits;
  if (p >= end) fail('missing sequences section');
  let nSeq = b[p++]!;
  if (nSeq >= 128) {
    if (nSeq === 255) {
      if (p + 2 > end) fail('truncated sequence count');
      nSeq = b[p]! + (b[p + 1]! << 8) + 0x7f00;
      p += 2;
    } else {
      if (p + 1 > end) fail('truncated sequence count');
      nSeq = ((nSeq - 128) << 8) + b[p++]!;
    }
  }
  let litPos = 0;
  const out = st.out;
  const cap = out.length;
  const emit = (n: number, src: number | null): void => {
    // Lengths are checked before any copying, so hostile counts cost nothing.
    if (st.produced + n > blockStart + st.blockMax) fail(`block decompresses to more than ${st.blockMax} bytes`);
    const take = Math.min(n, cap - st.produced);
    if (src === null) {
      if (litPos + n > lits.length) fail('sequence uses more literals than decoded');
      out.set(lits.subarray(litPos, litPos + take), st.produced);
      litPos += n;
      st.produced += take;
    } else {
      let from = src;
      for (let i = 0; i < take; i++) out[st.produced++] = out[from++]!;
    }
    if (take < n) throw new OutputFull();
  };
  if (nSeq === 0) {
    if (p !== end) fail('bytes after an empty sequences section');
    if (lits.length) emit(lits.length, null);
    return;
  }
  if (p >= end) fail('missing sequence compression modes');
  const modes = b[p++]!;
  if (modes & 3) fail('reserved sequence mode bits set');
  p = seqTable(st, 'll', modes >> 6, b, p, end);
  p = seqTable(st, 'of', (modes >> 4) & 3, b, p, end);
  p = seqTable(st, 'ml', (modes >> 2) & 3, b, p, end);
  const ll = st.ll!, of = st.of!, ml = st.ml!;
  const r = new BackwardBits(b, p, end);
  let sLL = r.read(ll.log);
  let sOF = r.read(of.log);
  let sML = r.read(ml.log);
  const rep = st.rep;
  for (let i = 0; i < nSeq; i++) {
    const llCode = ll.symbol[sLL]!;
    const ofCode = of.symbol[sOF]!;
    const mlCode = ml.symbol[sML]!;
    if (llCode > 35 || mlCode > 52 || ofCode > OF_MAX_CODE) fail('sequence code out of range');
    const ofValue = 2 ** ofCode + r.read(ofCode);
    const mLen = ML_BASE[mlCode]! + r.read(ML_BITS[mlCode]!);
    const lLen = LL_BASE[llCode]! + r.read(LL_BITS[llCode]!);
    if (r.pos < 0) fail('sequence bitstream overrun');
    let offset: number;
    if (ofValue > 3) {
      offset = ofValue - 3;
      rep[2] = rep[1]; rep[1] = rep[0]; rep[0] = offset;
    } else {
      const idx = ofValue - 1 + (lLen === 0 ? 1 : 0);
      if (idx === 0) {
        offset = rep[0];
      } else if (idx === 3) {
        offset = rep[0] - 1 || 1;
        rep[2] = rep[1]; rep[1] = rep[0]; rep[0] = offset;
      } else {
        offset = rep[idx]!;
        if (idx === 2) rep[2] = rep[1];
        rep[1] = rep[0];
        rep[0] = offset;
      }
    }
    if (i + 1 < nSeq) {
      sLL = ll.base[sLL]! + r.read(ll.bits[sLL]!);
      sML = ml.base[sML]! + r.read(ml.bits[sML]!);
      sOF = of.base[sOF]! + r.read(of.bits[sOF]!);
      if (r.pos < 0) fail('sequence bitstream overrun');
    }
    if (lLen) emit(lLen, null);
    const back = st.produced - offset;
    if (back < 0 || offset > st.window) fail(`match offset ${offset} reaches before the start of the frame`);
    emit(mLen, back);
  }
  if (r.pos !== 0) fail('sequence bitstream not fully consumed');
  if (litPos < lits.length) emit(lits.length - litPos, null);
}

/** A little-endian size field. Eight-byte values past 2^53 round, but such sizes fail every limit anyway. */
function readSize(b: Uint8Array, p: number, n: number): number {
  let v = 0;
  for (let i = n - 1; i >= 0; i--) v = v * 256 + b[p + i]!;
  return v;
}

function decodeFrame(data: Uint8Array, out: Uint8Array): number {
  const end = data.length;
  if (end < 4) fail('too short for a frame');
  const magic = (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
  if ((magic & 0xfffffff0) === 0x184d2a50) fail('skippable frame where btrfs writes a zstd frame');
  if (magic !== MAGIC) fail(`bad magic ${magic.toString(16)}`);
  let p = 4;
  if (p >= end) fail('truncated frame header');
  const fhd = data[p++]!;
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  if (fhd & 8) fail('reserved frame header bit set');
  let window = 0;
  if (!single) {
    if (p >= end) fail('truncated frame header');
    const wd = data[p++]!;
    const base = 2 ** (10 + (wd >> 3));
    window = base + (base / 8) * (wd & 7);
  }
  const dictBytes = [0, 1, 2, 4][dictFlag]!;
  const fcsBytes = [single ? 1 : 0, 2, 4, 8][fcsFlag]!;
  if (p + dictBytes + fcsBytes > end) fail('truncated frame header');
  if (readSize(data, p, dictBytes) !== 0) fail('frame needs a dictionary');
  p += dictBytes;
  let contentSize = -1;
  if (fcsBytes) {
    contentSize = readSize(data, p, fcsBytes) + (fcsBytes === 2 ? 256 : 0);
    p += fcsBytes;
  }
  if (single) window = contentSize;
  if (window > MAX_WINDOW) fail(`window of ${window} bytes exceeds btrfs' 128 KiB`);
  // As libzstd: a window (or single-segment content size) under 1 KiB still
  // allows 1 KiB blocks and offsets.
  window = Math.max(window, 1024);
  const blockMax = Math.min(BLOCK_MAX, window);
  const st: FrameState = { out, produced: 0, window, blockMax, rep: [1, 4, 8], lits: new Uint8Array(BLOCK_MAX) };
  try {
    for (;;) {
      if (p + 3 > end) fail('truncated block header');
      const h = data[p]! | (data[p + 1]! << 8) | (data[p + 2]! << 16);
      p += 3;
      const last = h & 1;
      const type = (h >> 1) & 3;
      const size = h >>> 3;
      if (size > blockMax) fail(`block of ${size} bytes exceeds the ${blockMax}-byte limit`);
      if (type === 0) {
        if (p + size > end) fail('raw block runs past the data');
        const take = Math.min(size, out.length - st.produced);
        out.set(data.subarray(p, p + take), st.produced);
        st.produced += take;
        p += size;
        if (take < size) return st.produced;
      } else if (type === 1) {
        if (p + 1 > end) fail('RLE block runs past the data');
        const take = Math.min(size, out.length - st.produced);
        out.fill(data[p]!, st.produced, st.produced + take);
        st.produced += take;
        p += 1;
        if (take < size) return st.produced;
      } else if (type === 2) {
        if (p + size > end) fail('compressed block runs past the data');
        decodeCompressedBlock(st, data, p, p + size);
        p += size;
      } else {
        fail('reserved block type');
      }
      if (last) break;
      // The kernel stops reading once the extent is filled; a last block
      // still gets the end-of-frame checks, which libzstd does in the same
      // call that decodes it.
      if (st.produced >= out.length) return st.produced;
    }
  } catch (e) {
    if (e instanceof OutputFull) return st.produced;
    throw e;
  }
  if (contentSize >= 0 && st.produced !== contentSize) fail(`frame holds ${st.produced} bytes, header says ${contentSize}`);
  if (checksum) {
    if (p + 4 > end) fail('truncated content checksum');
    const want = (data[p]! | (data[p + 1]! << 8) | (data[p + 2]! << 16) | (data[p + 3]! << 24)) >>> 0;
    const got = Number(xxh64(out.subarray(0, st.produced)) & 0xffffffffn);
    if (want !== got) fail('content checksum mismatch');
  }
  return st.produced;
}

// ---- xxhash64 (only for frames that carry a content checksum) -------------

const M64 = (1n << 64n) - 1n;
const P1 = 11400714785074694791n, P2 = 14029467366897019727n, P3 = 1609587929392839161n;
const P4 = 9650029242287828579n, P5 = 2870177450012600261n;
const rotl = (v: bigint, r: bigint): bigint => ((v << r) | (v >> (64n - r))) & M64;
const round = (acc: bigint, lane: bigint): bigint => (rotl((acc + lane * P2) & M64, 31n) * P1) & M64;
const merge = (acc: bigint, v: bigint): bigint => (((acc ^ round(0n, v)) * P1) + P4) & M64;

function xxh64(d: Uint8Array): bigint {
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const n = d.length;
  let p = 0;
  let h: bigint;
  if (n >= 32) {
    let v1 = (P1 + P2) & M64, v2 = P2, v3 = 0n, v4 = (M64 + 1n - P1) & M64;
    for (; p + 32 <= n; p += 32) {
      v1 = round(v1, dv.getBigUint64(p, true));
      v2 = round(v2, dv.getBigUint64(p + 8, true));
      v3 = round(v3, dv.getBigUint64(p + 16, true));
      v4 = round(v4, dv.getBigUint64(p + 24, true));
    }
    h = (rotl(v1, 1n) + rotl(v2, 7n) + rotl(v3, 12n) + rotl(v4, 18n)) & M64;
    h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4);
  } else {
    h = P5;
  }
  h = (h + BigInt(n)) & M64;
  for (; p + 8 <= n; p += 8) h = (rotl(h ^ round(0n, dv.getBigUint64(p, true)), 27n) * P1 + P4) & M64;
  if (p + 4 <= n) { h = (rotl(h ^ ((BigInt(dv.getUint32(p, true)) * P1) & M64), 23n) * P2 + P3) & M64; p += 4; }
  for (; p < n; p++) h = (rotl(h ^ ((BigInt(d[p]!) * P5) & M64), 11n) * P1) & M64;
  h ^= h >> 33n; h = (h * P2) & M64;
  h ^= h >> 29n; h = (h * P3) & M64;
  h ^= h >> 32n;
  return h;
}

export function zstdDecompress(data: Uint8Array, outLen: number, opts: DecompressOptions = {}): Buffer {
  const out = Buffer.alloc(outLen);
  let produced: number;
  try {
    produced = decodeFrame(data, out);
  } catch (e) {
    if (e instanceof ZstdError) throw new BtrfsError('EIO', `zstd: ${e.message}`, { cause: e });
    throw e;
  }
  return finishOutput('zstd', out, produced, opts.inline === true);
}

/** @internal for tests */
export const _xxh64 = xxh64;
