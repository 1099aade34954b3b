/**
 * The EXTENT_DATA items of one inode, as the write side edits them (the
 * kernel's btrfs_drop_extents, insert_reserved_file_extent and hole
 * insertion). Items never overlap; each covers [key.offset, key.offset +
 * num_bytes) of the file, except an inline item, which holds the file's
 * first bytes and occupies the whole first sector.
 *
 * Reference accounting follows the kernel: a regular or prealloc item
 * references its extent by (root, ino, key.offset - offset). Trimming an
 * item or moving its start keeps that value, so a split leaves two items
 * under one EXTENT_DATA_REF whose count goes up by one.
 *
 * nbytes is counted the kernel's way: num_bytes of every regular, prealloc
 * and compressed item (sector multiples), ram_bytes of an inline item,
 * nothing for holes.
 */
import { BtrfsError } from '../util/errors.js';
import { decompressExtent } from '../util/compress/index.js';
import { KEY, FILE_EXTENT, COMPRESS } from '../format/constants.js';
import { key, KEY_MAX, type Key } from '../format/key.js';
import {
  decodeFileExtentItem, encodeFileExtentItem, isInlineExtent,
  type FileExtentItem, type FileExtentInline, type FileExtentRegular,
} from '../format/items/file-extent-item.js';
import type { InodeItem } from '../format/items/inode-item.js';
import type { Transaction, DataRef } from '../transaction/transaction.js';

/** One inode being written in a running transaction. */
export interface FileCtx {
  txn: Transaction;
  /** the fs tree (subvolume) objectid */
  subvol: bigint;
  ino: bigint;
  /** the inode's item: the write side changes size and nbytes only; the caller writes it back */
  item: InodeItem;
  /** the filesystem has NO_HOLES: gaps need no hole items */
  noHoles: boolean;
}

/** An EXTENT_DATA item with the file range it covers. */
export interface ExtentEntry {
  key: Key;
  fe: FileExtentItem;
  /** file offset of its first byte */
  start: number;
  /** file offset past its last byte (an inline item: past its data) */
  end: number;
}

/** A regular item with disk_bytenr 0: a hole the filesystem stores. */
export function isHoleItem(fe: FileExtentItem): boolean {
  return !isInlineExtent(fe) && fe.type === FILE_EXTENT.REG && fe.disk_bytenr === 0n;
}

/** Bytes of nbytes an item accounts for. */
function itemBytes(fe: FileExtentItem): bigint {
  if (isInlineExtent(fe)) return fe.ram_bytes;
  return isHoleItem(fe) ? 0n : fe.num_bytes;
}

export function sectorOf(ctx: FileCtx): number {
  return ctx.txn.sectorsize;
}

export function roundUp(n: number, sec: number): number {
  return Math.ceil(n / sec) * sec;
}

export function roundDown(n: number, sec: number): number {
  return Math.floor(n / sec) * sec;
}

function edKey(ctx: FileCtx, off: number | bigint): Key {
  return key(ctx.ino, KEY.EXTENT_DATA, BigInt(off));
}

function entryOf(k: Key, data: Buffer): ExtentEntry {
  const fe = decodeFileExtentItem(data);
  const start = Number(k.offset);
  const end = isInlineExtent(fe) ? start + Number(fe.ram_bytes) : start + Number(fe.num_bytes);
  return { key: k, fe, start, end };
}

/**
 * Items that cover any byte of [start, end) (end may be Infinity), in file
 * order. An inline item counts as covering the whole first sector.
 */
export async function extentsIn(ctx: FileCtx, start: number, end: number): Promise<ExtentEntry[]> {
  const { txn, subvol } = ctx;
  const out: ExtentEntry[] = [];
  const sec = sectorOf(ctx);
  const prev = await txn.last(subvol, edKey(ctx, 0), edKey(ctx, start));
  if (prev) {
    const e = entryOf(prev.key, prev.data);
    const reach = isInlineExtent(e.fe) ? Math.max(e.end, sec) : e.end;
    if (reach > start) out.push(e);
  }
  if (end <= start + 1) return out;
  const max = end === Infinity ? key(ctx.ino, KEY.EXTENT_DATA, KEY_MAX.offset) : edKey(ctx, end - 1);
  for await (const it of txn.iter(subvol, edKey(ctx, start + 1), max)) out.push(entryOf(it.key, it.data));
  return out;
}

/** Every EXTENT_DATA item of the inode. */
export function allExtents(ctx: FileCtx): Promise<ExtentEntry[]> {
  return extentsIn(ctx, 0, Infinity);
}

function refOf(ctx: FileCtx, fileOffset: bigint, fe: FileExtentRegular): DataRef {
  return {
    bytenr: fe.disk_bytenr, numBytes: fe.disk_num_bytes, root: ctx.subvol, ino: ctx.ino,
    offset: BigInt.asUintN(64, fileOffset - fe.offset),
  };
}

/** The inline item's plain bytes (decompressed when the kernel compressed it). */
export function inlineBytes(ctx: FileCtx, fe: FileExtentInline): Buffer {
  if (fe.encryption !== 0 || fe.other_encoding !== 0) throw new BtrfsError('ENOTSUP', 'encrypted or encoded inline extent', { tree: ctx.subvol });
  if (fe.compression === COMPRESS.NONE) return fe.data;
  return decompressExtent(fe.compression, fe.data, Number(fe.ram_bytes), sectorOf(ctx), { inline: true });
}

/**
 * [start, start + len) of the file's current content as a new buffer; bytes
 * at or past `clip` (the size the file had) read as zeros, whatever an
 * extent still holds there after an earlier truncate.
 */
export async function readRange(ctx: FileCtx, start: number, len: number, clip: number): Promise<Buffer> {
  const out = Buffer.alloc(len);
  const end = Math.min(start + len, clip);
  if (end <= start) return out;
  for (const e of await extentsIn(ctx, start, end)) {
    const lo = Math.max(start, e.start);
    const hi = Math.min(end, e.end);
    if (hi <= lo) continue;
    const fe = e.fe;
    if (isInlineExtent(fe)) {
      inlineBytes(ctx, fe).copy(out, lo - start, lo - e.start, hi - e.start);
      continue;
    }
    if (fe.type !== FILE_EXTENT.REG || fe.disk_bytenr === 0n) continue;
    if (fe.encryption !== 0 || fe.other_encoding !== 0) throw new BtrfsError('ENOTSUP', 'encrypted or encoded file extent', { tree: ctx.subvol, key: e.key });
    const inExtent = Number(fe.offset) + (lo - e.start);
    if (fe.compression === COMPRESS.NONE) {
      (await ctx.txn.readData(fe.disk_bytenr + BigInt(inExtent), hi - lo)).copy(out, lo - start);
    } else {
      const raw = await ctx.txn.readData(fe.disk_bytenr, Number(fe.disk_num_bytes));
      const plain = decompressExtent(fe.compression, raw, Number(fe.ram_bytes), sectorOf(ctx));
      plain.copy(out, lo - start, inExtent, inExtent + (hi - lo));
    }
  }
  return out;
}

/**
 * Removes [start, end) from the inode's items (sector aligned; end may be
 * Infinity): items inside go, items across an edge are trimmed or split,
 * references and nbytes follow. Leaves a gap for the caller to fill.
 */
export async function dropRange(ctx: FileCtx, start: number, end: number): Promise<void> {
  const { txn, subvol } = ctx;
  const deletes: Key[] = [];
  const updates: { key: Key; fe: FileExtentItem }[] = [];
  const inserts: { key: Key; data: Buffer }[] = [];
  let freed = 0n;
  for (const e of await extentsIn(ctx, start, end)) {
    const fe = e.fe;
    if (isInlineExtent(fe)) {
      // only ever at offset 0, and ranges start on sector boundaries
      if (start === 0) {
        deletes.push(e.key);
        freed += fe.ram_bytes;
      }
      continue;
    }
    if (e.end <= start || e.start >= end) continue;
    const keepHead = e.start < start;
    const keepTail = e.end > end;
    const hole = isHoleItem(fe);
    const ref = hole ? undefined : refOf(ctx, e.key.offset, fe);
    const cutFrom = Math.max(start, e.start);
    const cutTo = Math.min(end, e.end);
    if (!hole) freed += BigInt(cutTo - cutFrom);
    if (keepHead) updates.push({ key: e.key, fe: { ...fe, num_bytes: BigInt(start - e.start) } });
    else deletes.push(e.key);
    if (keepTail) {
      const moved = BigInt(end - e.start);
      inserts.push({
        key: edKey(ctx, end),
        data: encodeFileExtentItem({ ...fe, offset: fe.offset + moved, num_bytes: fe.num_bytes - moved }),
      });
    }
    if (ref) {
      // the tail keeps (key.offset - offset), so it shares the item's reference
      if (keepHead && keepTail) txn.addDataRef(ref);
      else if (!keepHead && !keepTail) txn.dropDataRef(ref);
    }
  }
  if (deletes.length) await txn.deleteItems(subvol, deletes);
  for (const u of updates) await txn.update(subvol, u.key, encodeFileExtentItem(u.fe));
  if (inserts.length) await txn.insertItems(subvol, inserts);
  ctx.item.nbytes -= freed;
}

/** A regular item for a whole new extent written at `fileOffset`, with its reference. */
export async function insertRegular(ctx: FileCtx, fileOffset: number, bytenr: bigint, len: number): Promise<void> {
  const { txn } = ctx;
  const fe: FileExtentRegular = {
    generation: txn.generation, ram_bytes: BigInt(len), compression: COMPRESS.NONE, encryption: 0, other_encoding: 0,
    type: FILE_EXTENT.REG, disk_bytenr: bytenr, disk_num_bytes: BigInt(len), offset: 0n, num_bytes: BigInt(len),
  };
  await txn.insert(ctx.subvol, edKey(ctx, fileOffset), encodeFileExtentItem(fe));
  txn.addDataRef(refOf(ctx, BigInt(fileOffset), fe));
  ctx.item.nbytes += BigInt(len);
}

/** An inline item at offset 0 holding `data` uncompressed (the range must be free). */
export async function insertInline(ctx: FileCtx, data: Buffer): Promise<void> {
  const fe: FileExtentInline = {
    generation: ctx.txn.generation, ram_bytes: BigInt(data.length), compression: COMPRESS.NONE, encryption: 0,
    other_encoding: 0, type: FILE_EXTENT.INLINE, data,
  };
  await ctx.txn.insert(ctx.subvol, edKey(ctx, 0), encodeFileExtentItem(fe));
  ctx.item.nbytes += BigInt(data.length);
}

/**
 * Without NO_HOLES, gives every gap in [start, end) (sector aligned) a hole
 * item, as the kernel does when a file grows past its end; extents already
 * there (prealloc past i_size) stay.
 */
export async function fillHoles(ctx: FileCtx, start: number, end: number): Promise<void> {
  if (ctx.noHoles || end <= start) return;
  const sec = sectorOf(ctx);
  const gaps: [number, number][] = [];
  let pos = start;
  for (const e of await extentsIn(ctx, start, end)) {
    const eEnd = isInlineExtent(e.fe) ? Math.max(e.end, sec) : e.end;
    if (e.start > pos) gaps.push([pos, e.start]);
    pos = Math.max(pos, eEnd);
  }
  if (pos < end) gaps.push([pos, end]);
  if (!gaps.length) return;
  await ctx.txn.insertItems(ctx.subvol, gaps.map(([s, e]) => ({
    key: edKey(ctx, s),
    data: encodeFileExtentItem({
      generation: ctx.txn.generation, ram_bytes: BigInt(e - s), compression: COMPRESS.NONE, encryption: 0, other_encoding: 0,
      type: FILE_EXTENT.REG, disk_bytenr: 0n, disk_num_bytes: 0n, offset: 0n, num_bytes: BigInt(e - s),
    }),
  })));
}
