/**
 * Everything about one inode except its names, sent once the receiver's
 * names are final (so its path is its path in the sent snapshot): xattrs,
 * file data, size, owner, mode, times — in the kernel's order, for the
 * kernel's reasons:
 *  - xattrs before data, except security.capability, which the receiver's
 *    write and chown would clear: it comes after them;
 *  - truncate after the data (writes may grow the file past its new end);
 *  - chown before chmod (chown clears set-id bits), chmod after the data;
 *  - times last, since everything before changes them.
 *
 * Data of a new file is every extent in order; holes are simply not
 * written. Data of a changed file is only the ranges whose extent items
 * differ from the parent's; there a hole the receiver still holds data
 * for is punched (protocol 2) or written as zeros (protocol 1). Where the
 * receiver already has an extent, a CLONE is sent instead of its bytes.
 * With NO_FILE_DATA, UPDATE_EXTENT names each range instead of its bytes.
 */
import { BtrfsError } from '../util/errors.js';
import { decompressExtent } from '../util/compress/index.js';
import { KEY, FILE_EXTENT, COMPRESS, S_IFMT, S_IFREG, S_IFLNK } from '../format/constants.js';
import { key } from '../format/key.js';
import type { InodeItem } from '../format/items/inode-item.js';
import { decodeFileExtentItem, isInlineExtent, type FileExtentItem } from '../format/items/file-extent-item.js';
import { iterItems, findLastItem } from '../tree/search.js';
import type { FsInfo } from '../tree/fs-info.js';
import type { TreeView, Xattr } from './inodes.js';
import type { StreamWriter } from './stream-writer.js';
import type { CloneFinder } from './clone.js';

const CAPS = Buffer.from('security.capability');
const ACL_ACCESS = Buffer.from('system.posix_acl_access');
const ACL_DEFAULT = Buffer.from('system.posix_acl_default');
/** FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE */
const PUNCH_HOLE = 0x03;
/** Bytes read from disk at once for uncompressed extents. */
const READ_BYTES = 2 << 20;
/** Reads kept in flight for large extents. */
const READS_AHEAD = 3;

export interface ContentOptions {
  version: number;
  noData: boolean;
  /** bytes per WRITE command */
  writeSize: number;
}

/** What to send of one inode. */
export interface InodeJob {
  ino: bigint;
  path: Buffer;
  cur: InodeItem;
  /** the same inode in the parent snapshot; undefined for a new inode */
  old?: InodeItem;
  /** changed byte ranges [start, end) of a changed file (ignored for new ones) */
  ranges?: [number, number][];
  /** xattr items differ */
  xattrsChanged?: boolean;
  /** xattrs the receiver gave the new inode when it made it (see namespace.ts) */
  inherited?: Buffer[];
  /** the inode's xattrs and file extent items, when the caller already read them (a full send walks the tree once) */
  prefetched?: { xattrs: Xattr[]; extents: ExtentRef[] };
}

/** A file extent item and the file offset it starts at. */
export interface ExtentRef { offset: number; fe: FileExtentItem }

function num(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new BtrfsError('EFBIG', `send: ${what} ${v} is too large`);
  return Number(v);
}

/** Merges and sorts ranges, clipped to [0, limit). */
export function normalizeRanges(ranges: [number, number][], limit: number): [number, number][] {
  const rs = ranges.map(([a, b]) => [Math.max(0, a), Math.min(b, limit)] as [number, number]).filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const r of rs) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

/** A file extent item cut to a range: [start, end) of the file, `data` false where it reads as zeros. */
interface Piece { start: number; end: number; data: boolean; fe: FileExtentItem; itemStart: number }

interface RangeState {
  /** the file's size on the receiver as the commands so far leave it */
  rsize: number;
  wrote: boolean;
}

/** The parts of [a, b) covered by pieces for which `pred` holds (gaps between pieces count as not covered). */
function overlapWhere(pieces: Piece[], a: number, b: number, pred: (p: Piece) => boolean): [number, number][] {
  const out: [number, number][] = [];
  if (b <= a) return out;
  let pos = a;
  const push = (x: number, y: number): void => {
    const last = out[out.length - 1];
    if (last && last[1] === x) last[1] = y;
    else out.push([x, y]);
  };
  for (const p of pieces) {
    const x = Math.max(p.start, a);
    const y = Math.min(p.end, b);
    if (y <= x) continue;
    if (!pred(p)) {
      pos = Math.max(pos, y);
      continue;
    }
    push(Math.max(x, pos), y);
    pos = Math.max(pos, y);
  }
  return out;
}

/** Extent items cut to [lo, hi), as pieces. */
function* cut(extents: ExtentRef[], lo: number, hi: number): Generator<Piece> {
  for (const { offset: itemStart, fe } of extents) {
    const itemEnd = itemStart + num(isInlineExtent(fe) ? fe.ram_bytes : fe.num_bytes, 'extent length');
    const start = Math.max(itemStart, lo);
    const end = Math.min(itemEnd, hi);
    if (end <= start) continue;
    // prealloc extents and explicit holes read as zeros
    const data = isInlineExtent(fe) || (fe.type !== FILE_EXTENT.PREALLOC && fe.disk_bytenr !== 0n);
    yield { start, end, data, fe, itemStart };
  }
}

/** [a, b) without the sorted, disjoint ranges `taken`. */
function outsideOf(taken: [number, number][], a: number, b: number): [number, number][] {
  const out: [number, number][] = [];
  let pos = a;
  for (const [x, y] of taken) {
    if (x > pos) out.push([pos, Math.min(x, b)]);
    pos = Math.max(pos, y);
  }
  if (pos < b) out.push([pos, b]);
  return out;
}

export class ContentSender {
  private extentCache: { key: string; data: Buffer } | undefined;

  constructor(
    private readonly info: FsInfo,
    private readonly out: StreamWriter,
    private readonly cur: TreeView,
    private readonly old: TreeView | undefined,
    private readonly clones: CloneFinder | undefined,
    private readonly opts: ContentOptions,
  ) {}

  async send(job: InodeJob): Promise<void> {
    const { cur: item, old, path } = job;
    const type = item.mode & S_IFMT;
    const isNew = !old;
    const curX = job.prefetched?.xattrs ?? (isNew || job.xattrsChanged ? await this.cur.xattrs(job.ino) : []);
    let capsChanged = false;
    if (isNew) {
      for (const name of job.inherited ?? []) {
        if (!curX.some((x) => x.name.equals(name))) await this.out.removeXattr(path, name);
      }
      for (const x of curX) if (!x.name.equals(CAPS)) await this.out.setXattr(path, x.name, aclValue(x));
    } else if (job.xattrsChanged) {
      const oldX = await this.old!.xattrs(job.ino);
      for (const o of oldX) {
        if (!curX.some((c) => c.name.equals(o.name))) await this.out.removeXattr(path, o.name);
      }
      for (const c of curX) {
        const o = oldX.find((x) => x.name.equals(c.name));
        if (o && o.value.equals(c.value)) continue;
        if (c.name.equals(CAPS)) capsChanged = true;
        else await this.out.setXattr(path, c.name, aclValue(c));
      }
    }

    let wrote = false;
    if (type === S_IFREG) {
      const size = num(item.size, 'file size');
      const oldSize = isNew ? 0 : num(old!.size, 'file size');
      const state: RangeState = { rsize: oldSize, wrote: false };
      const ranges = isNew ? [[0, size] as [number, number]] : normalizeRanges(job.ranges ?? [], size);
      for (const [a, b] of ranges) {
        const before = isNew ? undefined : await this.oldPieces(job.ino, a, b, oldSize);
        await this.sendRange(job.ino, path, a, b, before, state, job.prefetched?.extents);
      }
      if (BigInt(state.rsize) !== item.size) await this.out.truncate(path, item.size);
      wrote = state.wrote;
    }

    const chowned = isNew || item.uid !== old!.uid || item.gid !== old!.gid;
    if (chowned) await this.out.chown(path, item.uid, item.gid);
    if (type !== S_IFLNK && (isNew || item.mode !== old!.mode || (chowned && (item.mode & 0o6000) !== 0))) {
      await this.out.chmod(path, item.mode);
    }
    if (isNew || chowned || wrote || capsChanged) {
      const caps = (isNew || job.xattrsChanged || job.prefetched ? curX : await this.cur.xattrs(job.ino)).find((x) => x.name.equals(CAPS));
      if (caps) await this.out.setXattr(path, caps.name, caps.value);
    }
    await this.out.utimes(path, item.atime, item.mtime, item.ctime);
  }

  /**
   * Sends [lo, hi) of a file as it is in the sent snapshot. With `old`
   * (a changed file), the receiver holds the parent's version there: what
   * already maps to the same bytes of the same extent is left alone, holes
   * are punched only where the parent had data.
   */
  private async sendRange(ino: bigint, path: Buffer, lo: number, hi: number, old: Piece[] | undefined, state: RangeState, extents?: ExtentRef[]): Promise<void> {
    let pos = lo;
    for await (const p of extents ? cut(extents, lo, hi) : this.pieces(this.cur, ino, lo, hi)) {
      this.out.check();
      if (p.start > pos) await this.hole(path, pos, p.start, old, state);
      if (!p.data) await this.hole(path, p.start, p.end, old, state);
      else await this.extent(ino, path, p, old, state);
      pos = p.end;
    }
    if (pos < hi) await this.hole(path, pos, hi, old, state);
  }

  /** The file extent items of `ino` in `view` over [lo, hi), cut to it; gaps are left out. */
  private async *pieces(view: TreeView, ino: bigint, lo: number, hi: number): AsyncGenerator<Piece> {
    const root = view.root;
    const reader = this.info.reader;
    const first = await findLastItem(reader, root, key(ino, KEY.EXTENT_DATA, 0n), key(ino, KEY.EXTENT_DATA, BigInt(lo)));
    const from = first ? first.key : key(ino, KEY.EXTENT_DATA, BigInt(lo));
    for await (const it of iterItems(reader, root, from, key(ino, KEY.EXTENT_DATA, BigInt(hi - 1)))) {
      let fe: FileExtentItem;
      try {
        fe = decodeFileExtentItem(it.data);
      } catch (e) {
        throw e instanceof BtrfsError ? e.withWhere({ tree: root.objectid, block: it.block.bytenr, key: it.key }) : e;
      }
      yield* cut([{ offset: num(it.key.offset, 'file offset'), fe }], lo, hi);
    }
  }

  /** The parent's pieces over [lo, hi) of the file, up to its old size. */
  private async oldPieces(ino: bigint, lo: number, hi: number, oldSize: number): Promise<Piece[]> {
    const out: Piece[] = [];
    const end = Math.min(hi, oldSize);
    if (end <= lo) return out;
    for await (const p of this.pieces(this.old!, ino, lo, end)) out.push(p);
    return out;
  }

  private async hole(path: Buffer, a: number, b: number, old: Piece[] | undefined, state: RangeState): Promise<void> {
    // a new file has nothing there; past the receiver's end of file the truncate makes zeros
    if (!old) return;
    for (const [x, y] of overlapWhere(old, a, Math.min(b, state.rsize), (p) => p.data)) {
      if (this.opts.noData) await this.out.updateExtent(path, x, y - x);
      else if (this.opts.version >= 2) await this.out.fallocate(path, PUNCH_HOLE, x, y - x);
      else {
        const zeros = Buffer.alloc(Math.min(this.opts.writeSize, y - x));
        for (let off = x; off < y; off += zeros.length) {
          const n = Math.min(zeros.length, y - off);
          await this.out.write(path, off, n === zeros.length ? zeros : zeros.subarray(0, n));
        }
      }
      state.wrote = true;
    }
  }

  /** A data piece: the parts the receiver does not already have, cloned or written. */
  private async extent(ino: bigint, path: Buffer, p: Piece, old: Piece[] | undefined, state: RangeState): Promise<void> {
    const fe = p.fe;
    if (fe.encryption !== 0 || fe.other_encoding !== 0) throw new BtrfsError('ENOTSUP', `send: inode ${ino} has an encrypted or encoded extent`);
    let parts: [number, number][] = [[p.start, p.end]];
    if (old && !isInlineExtent(fe)) {
      // the same bytes of the same extent at the same file offset: the receiver has them
      const same = (o: Piece): boolean => !isInlineExtent(o.fe) && o.data && o.fe.disk_bytenr === fe.disk_bytenr &&
        o.fe.compression === fe.compression && o.fe.offset - BigInt(o.itemStart) === fe.offset - BigInt(p.itemStart);
      parts = outsideOf(overlapWhere(old, p.start, p.end, same), p.start, p.end);
    }
    for (const [a, b] of parts) await this.sendData(ino, path, p, a, b, state);
  }

  /** [a, b) of a data piece: a CLONE of what the receiver has elsewhere, the rest written. */
  private async sendData(ino: bigint, path: Buffer, p: Piece, a: number, b: number, state: RangeState): Promise<void> {
    const fe = p.fe;
    const start = p.itemStart;
    let pos = a;
    if (!isInlineExtent(fe) && this.clones && a % this.info.sectorsize === 0) {
      const src = await this.clones.find({
        diskBytenr: fe.disk_bytenr, diskNumBytes: fe.disk_num_bytes, compression: fe.compression,
        extentOffset: fe.offset + BigInt(a - start), len: b - a, ino,
      });
      if (src) {
        await this.out.clone(path, a, src.len, src);
        pos = a + src.len;
        state.rsize = Math.max(state.rsize, pos);
        state.wrote = true;
      }
    }
    if (pos >= b) return;
    if (this.opts.noData) {
      await this.out.updateExtent(path, pos, b - pos);
      state.rsize = Math.max(state.rsize, b);
      state.wrote = true;
      return;
    }
    const ws = this.opts.writeSize;
    if (isInlineExtent(fe) || fe.compression !== COMPRESS.NONE) {
      const plain = await this.plain(fe);
      const base = isInlineExtent(fe) ? 0 : num(fe.offset, 'extent offset');
      for (let off = pos; off < b; off += ws) {
        const n = Math.min(ws, b - off);
        const from = base + off - start;
        let chunk = plain.subarray(from, from + n);
        if (chunk.length < n) chunk = Buffer.concat([chunk, Buffer.alloc(n - chunk.length)]);
        await this.out.write(path, off, chunk);
      }
    } else {
      // a few reads stay in flight (the thread pool runs them side by side) while earlier ones become commands
      const read = (off: number): Promise<Buffer> => this.info.readData(fe.disk_bytenr + fe.offset + BigInt(off - start), Math.min(READ_BYTES, b - off));
      const ahead: Promise<Buffer>[] = [];
      let issued = pos;
      const fill = (): void => {
        while (ahead.length < READS_AHEAD && issued < b) {
          ahead.push(read(issued));
          issued += READ_BYTES;
        }
      };
      try {
        fill();
        for (let off = pos; off < b; off += READ_BYTES) {
          const data = await ahead.shift()!;
          fill();
          for (let q = 0; q < data.length; q += ws) await this.out.write(path, off + q, data.subarray(q, Math.min(data.length, q + ws)));
        }
      } finally {
        for (const p of ahead) p.catch(() => undefined);
      }
    }
    state.rsize = Math.max(state.rsize, b);
    state.wrote = true;
  }

  /** The uncompressed bytes of an inline or compressed extent (the last one is kept for the next window). */
  private async plain(fe: FileExtentItem): Promise<Buffer> {
    const ss = this.info.sectorsize;
    if (isInlineExtent(fe)) {
      return fe.compression === COMPRESS.NONE ? fe.data : decompressExtent(fe.compression, fe.data, num(fe.ram_bytes, 'inline length'), ss, { inline: true });
    }
    const k = `${fe.disk_bytenr}:${fe.disk_num_bytes}:${fe.ram_bytes}`;
    if (this.extentCache?.key === k) return this.extentCache.data;
    const raw = await this.info.readData(fe.disk_bytenr, num(fe.disk_num_bytes, 'extent length'));
    const data = decompressExtent(fe.compression, raw, num(fe.ram_bytes, 'extent length'), ss);
    this.extentCache = { key: k, data };
    return data;
  }
}

/**
 * An empty POSIX ACL xattr is valid on disk but refused by setxattr; the
 * kernel sends a header-only ACL (version 2, no entries) instead, which
 * setxattr accepts and which means the same.
 */
function aclValue(x: Xattr): Buffer {
  if (x.value.length === 0 && (x.name.equals(ACL_ACCESS) || x.name.equals(ACL_DEFAULT))) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(2);
    return b;
  }
  return x.value;
}

