/**
 * Reading file data: walk the inode's EXTENT_DATA items and turn each into
 * bytes. What the kernel shows, and so what this returns:
 * - inline extents hold the (maybe compressed) bytes in the item itself;
 * - regular extents point at disk_bytenr; a window [offset, offset+num_bytes)
 *   of the extent's uncompressed bytes belongs to the file (reflinks and
 *   partial overwrites make windows of shared extents);
 * - disk_bytenr 0 and prealloc extents read as zeros, and so does any gap
 *   between extents (no-holes filesystems store no hole items);
 * - nothing past i_size is visible.
 */
import { BtrfsError, corrupt } from '../util/errors.js';
import { decompressExtent } from '../util/compress/index.js';
import { KEY, FILE_EXTENT, COMPRESS } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeFileExtentItem, type FileExtentItem } from '../format/items/file-extent-item.js';
import { iterItems, findLastItem, type RootLocation } from '../tree/search.js';
import type { FsInfo } from '../tree/fs-info.js';

/** A piece of a file: data (bytes to write) or a hole (zeros the file need not store). */
export type FilePiece =
  | { kind: 'data'; offset: number; data: Buffer }
  | { kind: 'hole'; offset: number; length: number };

const MAX_CHUNK = 8 * 1024 * 1024;

/** Decompressed extents, kept briefly so small sequential reads do not decompress again. */
class ExtentCache {
  private map = new Map<string, Buffer>();
  get(k: string): Buffer | undefined { return this.map.get(k); }
  set(k: string, v: Buffer): void {
    if (this.map.size >= 8) this.map.delete(this.map.keys().next().value!);
    this.map.set(k, v);
  }
}

export class FileReader {
  private cache = new ExtentCache();
  constructor(private readonly info: FsInfo) {}

  private async decompressed(fe: FileExtentItem & { disk_bytenr: bigint; disk_num_bytes: bigint }): Promise<Buffer> {
    const ck = `${fe.disk_bytenr}:${fe.disk_num_bytes}:${fe.ram_bytes}`;
    const hit = this.cache.get(ck);
    if (hit) return hit;
    const raw = await this.info.readData(fe.disk_bytenr, Number(fe.disk_num_bytes));
    const out = decompressExtent(fe.compression, raw, Number(fe.ram_bytes), this.info.sectorsize);
    this.cache.set(ck, out);
    return out;
  }

  /**
   * The pieces of [start, end) of the file, in order, covering it exactly;
   * `end` must already be clipped to i_size. Data pieces are at most 8 MiB.
   */
  async *pieces(root: RootLocation, ino: bigint, start: number, end: number, path?: string): AsyncGenerator<FilePiece> {
    if (end <= start) return;
    const first = await findLastItem(this.info.reader, root, key(ino, KEY.EXTENT_DATA, 0n), key(ino, KEY.EXTENT_DATA, BigInt(start)));
    const from = first ? first.key : key(ino, KEY.EXTENT_DATA, BigInt(start));
    let pos = start;
    const hole = function* (upTo: number): Generator<FilePiece> {
      if (upTo > pos) {
        yield { kind: 'hole', offset: pos, length: upTo - pos };
        pos = upTo;
      }
    };
    for await (const it of iterItems(this.info.reader, root, from, key(ino, KEY.EXTENT_DATA, BigInt(end - 1)))) {
      let fe: FileExtentItem;
      try {
        fe = decodeFileExtentItem(it.data);
      } catch (e) {
        throw e instanceof BtrfsError ? e.withWhere({ path, tree: root.objectid, block: it.block.bytenr, key: it.key }) : e;
      }
      const where = { path, tree: root.objectid, block: it.block.bytenr, key: it.key };
      const extStart = Number(it.key.offset);
      let extLen: number;
      let bytesAt: ((off: number, len: number) => Promise<Buffer>) | undefined;
      if (fe.type === FILE_EXTENT.INLINE) {
        const inline = fe as FileExtentItem & { data: Buffer };
        extLen = Number(fe.ram_bytes);
        let plain: Buffer;
        if (fe.compression === COMPRESS.NONE) plain = inline.data;
        else plain = decompressExtent(fe.compression, inline.data, extLen, this.info.sectorsize, { inline: true });
        bytesAt = async (off, len) => {
          const out = Buffer.alloc(len);
          plain.copy(out, 0, off, Math.min(off + len, plain.length));
          return out;
        };
      } else {
        const reg = fe as FileExtentItem & { disk_bytenr: bigint; disk_num_bytes: bigint; offset: bigint; num_bytes: bigint };
        extLen = Number(reg.num_bytes);
        if (fe.encryption !== 0 || fe.other_encoding !== 0) throw new BtrfsError('ENOTSUP', 'encrypted or encoded file extent', where);
        if (fe.type === FILE_EXTENT.REG && reg.disk_bytenr !== 0n) {
          const inExtent = Number(reg.offset);
          if (fe.compression !== COMPRESS.NONE) {
            if (reg.offset + reg.num_bytes > reg.ram_bytes) throw corrupt('compressed extent window exceeds ram_bytes', where);
            bytesAt = async (off, len) => (await this.decompressed(reg)).subarray(inExtent + off, inExtent + off + len);
          } else {
            if (reg.offset + reg.num_bytes > reg.disk_num_bytes) throw corrupt('extent window exceeds disk_num_bytes', where);
            bytesAt = (off, len) => this.info.readData(reg.disk_bytenr + BigInt(inExtent + off), len);
          }
        } else if (fe.type !== FILE_EXTENT.REG && fe.type !== FILE_EXTENT.PREALLOC) {
          throw corrupt(`unknown file extent type ${fe.type}`, where);
        }
      }
      const lo = Math.max(extStart, pos);
      const hi = Math.min(extStart + extLen, end);
      if (hi <= lo) continue;
      if (lo < pos) throw corrupt('overlapping file extents', where);
      yield* hole(lo);
      if (!bytesAt) {
        yield* hole(hi);
        continue;
      }
      for (let off = lo; off < hi; off += MAX_CHUNK) {
        const len = Math.min(MAX_CHUNK, hi - off);
        const data = await bytesAt(off - extStart, len);
        if (data.length !== len) throw corrupt(`extent yielded ${data.length} bytes, expected ${len}`, where);
        yield { kind: 'data', offset: off, data };
      }
      pos = hi;
    }
    yield* hole(end);
  }

  /** [start, end) of the file as one buffer (end clipped to i_size by the caller). */
  async read(root: RootLocation, ino: bigint, start: number, end: number, path?: string): Promise<Buffer> {
    const out = Buffer.alloc(Math.max(0, end - start));
    for await (const p of this.pieces(root, ino, start, end, path)) {
      if (p.kind === 'data') p.data.copy(out, p.offset - start);
    }
    return out;
  }
}
