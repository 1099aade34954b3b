/**
 * Writing file data in a running transaction, as the Linux kernel leaves it
 * on disk (checked against kernel-made files with dump-tree and btrfs check):
 *
 * - Copy-on-write always: a write gets new extents (at most 128 MiB each)
 *   and replaces the items over its sector-rounded range; partial sectors at
 *   the edges are read, merged and rewritten. Whatever was there — inline,
 *   regular, compressed, prealloc, a hole — is only read, never written.
 * - A file whose whole content fits in min(max_inline 2048, sectorsize - 1)
 *   bytes and has no extent but a hole is stored inline; growing past that
 *   turns the inline extent into a regular one (kernel: the page under the
 *   old i_size is written back as a regular extent).
 * - Growing a file (write past its end, truncate up) rewrites the sector
 *   holding the old i_size with zeros past it, as the kernel's
 *   btrfs_truncate_block does, so bytes a truncate left behind never come
 *   back. Truncating down only drops and trims items; that tail is zeroed
 *   then, when the file grows again.
 * - Without NO_HOLES, gaps the file grows over get hole items, up to the
 *   new i_size rounded up to a sector.
 *
 * Callers: the POSIX layer (writable.ts) and importers. They own the inode
 * item: these functions change its size and nbytes only; the caller writes
 * the item back with its times and transid. On any error other than
 * EINVAL/ENOSPC thrown before a change, abort the transaction: a file may be
 * left partly written.
 */
import { BtrfsError } from '../util/errors.js';
import { FILE_EXTENT, INODE_FLAG } from '../format/constants.js';
import { maxItemSize } from '../format/tree-block-encode.js';
import { FILE_EXTENT_INLINE_DATA_START, isInlineExtent } from '../format/items/file-extent-item.js';
import { MAX_DATA_EXTENT } from '../transaction/transaction.js';
import {
  type FileCtx, extentsIn, allExtents, readRange, dropRange, insertRegular, insertInline, fillHoles,
  isHoleItem, sectorOf, roundUp, roundDown,
} from './file-extents.js';

export type { FileCtx } from './file-extents.js';

/** The kernel's default max_inline mount option. */
export const MAX_INLINE = 2048;
/** PATH_MAX less the terminating NUL: the longest symlink target Linux takes. */
export const MAX_SYMLINK = 4095;
/** Bytes handed to one writeData call (bounds the memory of composed pieces). */
const WRITE_PIECE = 8 * 1024 * 1024;
/** The streaming writer's buffer, and the size below which a stream is one write. */
const STREAM_STAGE = 1024 * 1024;

function inlineLimit(ctx: FileCtx): number {
  return Math.min(MAX_INLINE, sectorOf(ctx) - 1);
}

function checkOffset(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new BtrfsError('EINVAL', `${what} ${n} is not a file offset`);
}

/** Write options for the inode's data: NODATASUM (chattr +C) files get no checksums, as from the kernel. */
function dataOpts(ctx: FileCtx): { csum: boolean } {
  return { csum: (ctx.item.flags & INODE_FLAG.NODATASUM) === 0n };
}

async function needRoom(ctx: FileCtx, bytes: number): Promise<void> {
  if (bytes <= 0) return;
  const room = await ctx.txn.dataRoom();
  if (room < BigInt(bytes)) throw new BtrfsError('ENOSPC', `no space for ${bytes} bytes of file data (${room} free)`, { tree: ctx.subvol });
}

/** True when the inode has nothing but an inline item and hole items (so its data may stay inline). */
async function inlineOnly(ctx: FileCtx): Promise<boolean> {
  for (const e of await allExtents(ctx)) {
    if (!isInlineExtent(e.fe) && !isHoleItem(e.fe)) return false;
  }
  return true;
}

async function hasInline(ctx: FileCtx): Promise<boolean> {
  const first = (await extentsIn(ctx, 0, 1))[0];
  return first !== undefined && isInlineExtent(first.fe);
}

/** Replaces every item of an inline-only file with one inline item of `content`. */
async function rewriteInline(ctx: FileCtx, content: Buffer): Promise<void> {
  await dropRange(ctx, 0, Infinity);
  if (content.length > 0) await insertInline(ctx, content);
}

/**
 * Writes [a, b) of the file (sector aligned) into new extents and puts them
 * in place of what covered that range. `source(off, len)` gives the bytes
 * of [off, off + len); every read of the old content happens before the
 * first item changes.
 */
async function cowRange(ctx: FileCtx, a: number, b: number, cuts: number[], source: (off: number, len: number) => Promise<Buffer>): Promise<void> {
  const { txn } = ctx;
  const written: { off: number; bytenr: bigint; len: number }[] = [];
  let off = a;
  while (off < b) {
    const ext = await txn.allocData(Math.min(MAX_DATA_EXTENT, b - off));
    const extEnd = off + ext.len;
    for (let p = off; p < extEnd;) {
      let q = Math.min(extEnd, p + WRITE_PIECE);
      for (const c of cuts) if (c > p && c < q) q = c;
      await txn.writeData(ext.bytenr + BigInt(p - off), await source(p, q - p), dataOpts(ctx));
      p = q;
    }
    written.push({ off, bytenr: ext.bytenr, len: ext.len });
    off = extEnd;
  }
  for (const w of written) {
    await dropRange(ctx, w.off, w.off + w.len);
    await insertRegular(ctx, w.off, w.bytenr, w.len);
  }
}

/** True when growing from `oldSize` must rewrite the sector holding it (see zeroTail). */
async function tailNeedsZero(ctx: FileCtx, oldSize: number): Promise<boolean> {
  const sec = sectorOf(ctx);
  const t = roundDown(oldSize, sec);
  if (oldSize % sec === 0) return false;
  return (await extentsIn(ctx, t, t + sec)).some((e) => isInlineExtent(e.fe) || (e.fe.type === FILE_EXTENT.REG && !isHoleItem(e.fe)));
}

/**
 * The sector holding the old i_size, rewritten with zeros past it: data a
 * truncate left there must not reappear, and an inline extent becomes a
 * regular one. Prealloc and holes already read as zeros.
 */
async function zeroTail(ctx: FileCtx, oldSize: number): Promise<void> {
  const sec = sectorOf(ctx);
  const t = roundDown(oldSize, sec);
  await cowRange(ctx, t, t + sec, [], (off, len) => readRange(ctx, off, len, oldSize));
}

/**
 * pwrite(2): puts `data` at file offset `pos`, growing the file if it ends
 * past i_size. ENOSPC before any change when the data cannot fit.
 */
export async function writeFileData(ctx: FileCtx, pos: number, data: Buffer): Promise<void> {
  checkOffset('write position', pos);
  if (data.length === 0) return;
  checkOffset('write end', pos + data.length);
  const sec = sectorOf(ctx);
  const oldSize = Number(ctx.item.size);
  const end = pos + data.length;
  const newSize = Math.max(oldSize, end);
  if (newSize <= inlineLimit(ctx) && await inlineOnly(ctx)) {
    const content = await readRange(ctx, 0, newSize, oldSize);
    data.copy(content, pos);
    await rewriteInline(ctx, content);
    ctx.item.size = BigInt(newSize);
    return;
  }
  let a = roundDown(pos, sec);
  const b = roundUp(end, sec);
  const tail = roundDown(oldSize, sec);
  const zero = newSize > oldSize && (tail < a || tail >= b) && await tailNeedsZero(ctx, oldSize);
  await needRoom(ctx, b - a + (zero ? sec : 0));
  // the partial sectors at either edge are pieces of their own, so only
  // they are read back and composed; the rest comes straight from `data`
  const cuts = [a, a + sec, b - sec];
  // a tail sector right before the write joins its extent, as the kernel's
  // writeback does with adjacent dirty pages
  if (zero && tail + sec === a) a = tail;
  else if (zero) await zeroTail(ctx, oldSize);
  await cowRange(ctx, a, b, cuts, async (off, len) => {
    if (off >= pos && off + len <= end) return data.subarray(off - pos, off - pos + len);
    const buf = await readRange(ctx, off, len, oldSize);
    const lo = Math.max(off, pos);
    const hi = Math.min(off + len, end);
    if (hi > lo) data.copy(buf, lo - off, lo - pos, hi - pos);
    return buf;
  });
  if (newSize > oldSize) await fillHoles(ctx, roundUp(oldSize, sec), roundUp(newSize, sec));
  ctx.item.size = BigInt(newSize);
}

/**
 * truncate(2) to `newSize`, either way. Down: items past the new end go,
 * the one across it is trimmed to the sector boundary (an inline extent to
 * the byte). Up: zeros, as holes (hole items without NO_HOLES).
 */
export async function truncateFileData(ctx: FileCtx, newSize: number): Promise<void> {
  checkOffset('size', newSize);
  const sec = sectorOf(ctx);
  const oldSize = Number(ctx.item.size);
  if (newSize === oldSize) return;
  if (newSize < oldSize) {
    if (newSize < sec && await hasInline(ctx)) {
      // an inline extent cannot keep stale bytes: it is cut to the byte
      const content = await readRange(ctx, 0, newSize, oldSize);
      await dropRange(ctx, 0, Infinity);
      if (content.length > 0) await insertInline(ctx, content);
    } else {
      await dropRange(ctx, roundUp(newSize, sec), Infinity);
    }
    ctx.item.size = BigInt(newSize);
    return;
  }
  if (newSize <= inlineLimit(ctx) && await hasInline(ctx) && await inlineOnly(ctx)) {
    await rewriteInline(ctx, await readRange(ctx, 0, newSize, oldSize));
    ctx.item.size = BigInt(newSize);
    return;
  }
  const zero = await tailNeedsZero(ctx, oldSize);
  if (zero) {
    await needRoom(ctx, sec);
    await zeroTail(ctx, oldSize);
  }
  await fillHoles(ctx, roundUp(oldSize, sec), roundUp(newSize, sec));
  ctx.item.size = BigInt(newSize);
}

/**
 * Deletes every EXTENT_DATA item of the inode and drops each reference
 * (the last unlink; extents nobody else references are freed at commit).
 * nbytes becomes 0; size is left for the caller.
 */
export async function dropFileData(ctx: FileCtx): Promise<void> {
  await dropRange(ctx, 0, Infinity);
  ctx.item.nbytes = 0n;
}

/**
 * A symlink's target, stored as the kernel does: one inline extent,
 * uncompressed, whatever max_inline says; size and nbytes are its length.
 */
export async function writeSymlinkTarget(ctx: FileCtx, target: Buffer): Promise<void> {
  if (target.length === 0) throw new BtrfsError('ENOENT', 'empty symlink target');
  const max = Math.min(MAX_SYMLINK, maxItemSize(ctx.txn.nodesize) - FILE_EXTENT_INLINE_DATA_START);
  if (target.length > max) throw new BtrfsError('ENAMETOOLONG', `symlink target of ${target.length} bytes (at most ${max})`);
  await dropRange(ctx, 0, Infinity);
  await insertInline(ctx, Buffer.from(target));
  ctx.item.size = BigInt(target.length);
  ctx.item.nbytes = BigInt(target.length);
}

/** A sequential writer from fileWriter(). Call write() and end() one at a time, awaiting each. */
export interface FileDataWriter {
  write(chunk: Buffer): Promise<void>;
  end(): Promise<void>;
}

/**
 * Sequential writes from `pos` on (an importer's stream). Data goes into
 * extents of at most 128 MiB allocated ahead — sized by `sizeHint`, the
 * number of bytes the caller expects to write, else 128 MiB trimmed at the
 * end — and written a buffer (1 MiB) at a time, so memory stays bounded
 * whatever the length. A stream shorter than that buffer is one
 * writeFileData (inline if small enough). With a hint, ENOSPC comes before
 * any change when the hinted bytes cannot fit; without one it may come
 * mid-stream, and the transaction must be aborted.
 */
export function fileWriter(ctx: FileCtx, pos: number, sizeHint?: number): FileDataWriter {
  checkOffset('write position', pos);
  if (sizeHint !== undefined) checkOffset('size hint', sizeHint);
  return new ExtentStream(ctx, pos, sizeHint);
}

interface OpenExtent { bytenr: bigint; len: number; fileStart: number; written: number }

class ExtentStream implements FileDataWriter {
  private readonly sec: number;
  private readonly oldSize: number;
  /** chunks held before the stream is known to be big */
  private early: Buffer[] = [];
  private total = 0;
  private stage: Buffer | undefined;
  /** bytes in stage; stage[0] is file offset `stageStart` */
  private fill = 0;
  private stageStart = 0;
  private ext: OpenExtent | undefined;
  private ended = false;

  constructor(private readonly ctx: FileCtx, private readonly pos: number, private readonly sizeHint: number | undefined) {
    this.sec = sectorOf(ctx);
    this.oldSize = Number(ctx.item.size);
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.ended) throw new BtrfsError('EINVAL', 'write after end');
    if (chunk.length === 0) return;
    checkOffset('write end', this.pos + this.total + chunk.length);
    this.total += chunk.length;
    if (!this.stage) {
      this.early.push(Buffer.from(chunk));
      if (this.total < STREAM_STAGE) return;
      await this.start();
      const early = this.early;
      this.early = [];
      for (const c of early) await this.push(c);
      return;
    }
    await this.push(chunk);
  }

  /** The stream is big: read the head sector, zero the old tail, check space. */
  private async start(): Promise<void> {
    const { ctx, sec, oldSize, pos } = this;
    let a = roundDown(pos, sec);
    const tail = roundDown(oldSize, sec);
    const zero = pos > oldSize && tail < a && await tailNeedsZero(ctx, oldSize);
    const expected = this.sizeHint !== undefined ? Math.max(this.sizeHint, this.total) : this.total;
    await needRoom(ctx, roundUp(pos + expected, sec) - a + (zero ? sec : 0));
    // an adjacent old tail sector starts the first extent (see writeFileData)
    if (zero && tail + sec === a) a = tail;
    else if (zero) await zeroTail(ctx, oldSize);
    const stage = Buffer.alloc(STREAM_STAGE);
    if (pos > a) (await readRange(ctx, a, pos - a, oldSize)).copy(stage);
    this.stage = stage;
    this.fill = pos - a;
    this.stageStart = a;
  }

  private async push(chunk: Buffer): Promise<void> {
    const stage = this.stage!;
    for (let i = 0; i < chunk.length;) {
      const n = chunk.copy(stage, this.fill, i, Math.min(chunk.length, i + stage.length - this.fill));
      this.fill += n;
      i += n;
      if (this.fill === stage.length) await this.flush();
    }
  }

  /** Writes the whole sectors of the stage into extents; a partial last sector stays. */
  private async flush(): Promise<void> {
    const stage = this.stage!;
    const whole = roundDown(this.fill, this.sec);
    let done = 0;
    while (done < whole) {
      this.ext ??= await this.allocate(this.stageStart + done);
      const ext = this.ext;
      const n = Math.min(whole - done, ext.len - ext.written);
      await this.ctx.txn.writeData(ext.bytenr + BigInt(ext.written), stage.subarray(done, done + n), dataOpts(this.ctx));
      ext.written += n;
      done += n;
      if (ext.written === ext.len) await this.close();
    }
    stage.copy(stage, 0, whole, this.fill);
    this.fill -= whole;
    this.stageStart += whole;
  }

  /** A new extent for file data from `fileStart` on. */
  private async allocate(fileStart: number): Promise<OpenExtent> {
    const { ctx, sec } = this;
    let want = MAX_DATA_EXTENT;
    if (this.sizeHint !== undefined) {
      // past the hint the stream is longer than announced: as without one
      const left = roundUp(this.pos + this.sizeHint, sec) - fileStart;
      if (left >= sec) want = Math.min(want, left);
    }
    const room = await ctx.txn.dataRoom();
    const fit = room > BigInt(want) ? want : roundDown(Number(room), sec);
    if (fit < sec) throw new BtrfsError('ENOSPC', 'no space left for file data', { tree: ctx.subvol });
    const got = await ctx.txn.allocData(fit);
    return { bytenr: got.bytenr, len: got.len, fileStart, written: 0 };
  }

  /** The open extent is done: trimmed to what was written and put in place. */
  private async close(): Promise<void> {
    const ext = this.ext!;
    this.ext = undefined;
    if (ext.written === 0) return; // unreferenced: freed at commit
    if (ext.written < ext.len) this.ctx.txn.trimData(ext.bytenr, ext.len, ext.written);
    await dropRange(this.ctx, ext.fileStart, ext.fileStart + ext.written);
    await insertRegular(this.ctx, ext.fileStart, ext.bytenr, ext.written);
  }

  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    const { ctx, sec, oldSize } = this;
    if (!this.stage) {
      const data = Buffer.concat(this.early);
      this.early = [];
      await writeFileData(ctx, this.pos, data);
      return;
    }
    const endPos = this.pos + this.total;
    const partial = roundUp(endPos, sec) - endPos;
    if (partial > 0) {
      (await readRange(ctx, endPos, partial, oldSize)).copy(this.stage, this.fill);
      this.fill += partial;
    }
    await this.flush();
    if (this.ext) await this.close();
    this.stage = undefined;
    const newSize = Math.max(oldSize, endPos);
    if (newSize > oldSize) await fillHoles(ctx, roundUp(oldSize, sec), roundUp(newSize, sec));
    ctx.item.size = BigInt(newSize);
  }
}
