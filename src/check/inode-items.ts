/**
 * An fs tree leaf read item by item into what each inode's own items say
 * (an `Own`), and the names and directory entries it holds, handed to a
 * sink. Two sinks use it: the exact inode pass (inodes.ts), which keeps
 * every name to compare them and word its findings, and the screen
 * (inode-screen.ts), which keeps only fingerprints. Both must judge an
 * inode's own items by the same rules, so the rules live here once: what is
 * wrong with an inode by its own items alone is `shapeNotes`.
 */
import { FILE_EXTENT, HEADER_SIZE, ITEM_SIZE, KEY, OBJ, S_IFDIR, S_IFMT, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, FT, FEATURE_INCOMPAT } from '../format/constants.js';
import type { Key } from '../format/key.js';
import type { TreeBlock } from '../format/tree-block.js';
import { nameHashAt } from '../util/checksum.js';
import type { CheckContext } from './context.js';
import { csumBytesIn } from './csums.js';
import { addrKey, addU64, fromBig, readU64, toBig, type AddrKey, type U64 } from './u64.js';

export const NONE = -1;

/** A finding about one inode, without the tree's name (so a snapshot can reuse it): code, text, key. */
export type Note = [code: string, text: string, key: Key];

/** A name as the inode's own INODE_REF/INODE_EXTREF records it; an INODE_REF's key, (inode, INODE_REF, dir), is rebuilt when needed. */
export interface OwnRef { dir: U64; name: string; index: U64; key: Key | undefined }

/** A directory entry naming a subvolume: (tree holding the entry, subvolume id, dir, name, index). */
export interface SubvolEntry { tree: bigint; child: bigint; dir: bigint; name: Buffer; index?: bigint; kind: 'item' | 'index'; key: Key }

/** What an inode's own items say. */
export class Own {
  found = false;
  nlink = 0;
  isize: U64 = 0;
  nbytes: U64 = 0;
  mode = 0;
  nodatasum = false;
  itemKey: Key | undefined;
  /** its names, as the exact pass keeps them */
  refs: OwnRef[] | undefined;
  /** it holds directory entries */
  foundDirItem = false;
  /** it holds entries but has nlink 0: they are ignored, which makes its children depend on its own items */
  zeroDir = false;
  foundFileExtent = false;
  /** name bytes of its entries (directories), bytes of its extents (files) */
  foundSize: U64 = 0;
  extentStart: U64 = NONE;
  extentEnd: U64 = NONE;
  firstGap: U64 = NONE;
  foundCsumItem = false;
  someCsumMissing = false;
  errors: [code: string, text: string][] | undefined;
  /** preallocated extents with checksums in their range: judged once every tree is known */
  prealloc: { key: Key; start: U64; len: U64 }[] | undefined;
  // Its names as the screen keeps them: how many, fingerprint sums (see inode-screen.ts), and
  // whether each is one the screen can vouch for.
  refCount = 0;
  refA = 0;
  refB = 0;
  refIA = 0;
  refIB = 0;
  refOdd = false;
  /** the fingerprints of its names when it has more than one, to tell duplicates */
  refHashes: number[] | undefined;

  /** `firstKey` is kept by the exact pass only: the screen reports nothing itself. */
  constructor(readonly firstKey: Key | undefined) {}

  error(text: string, code = 'inode'): void {
    (this.errors ??= []).push([code, text]);
  }
}

/** Where the items of a leaf go. */
export interface ItemSink {
  /** the record of inode `ino`, whose first item in this leaf is at `slot` */
  own(ino: U64, leaf: TreeBlock, slot: number): Own;
  /** one name of `o` (inode `ino`) from its INODE_REF or INODE_EXTREF (`key` given for an extref); the name is d[nameAt, nameEnd) */
  ref(o: Own, ino: U64, dir: U64, index: U64, d: Buffer, nameAt: number, nameEnd: number, key: Key | undefined): void;
  /** a DIR_ITEM or DIR_INDEX entry of `dir` naming inode `target` */
  entry(target: U64, dir: U64, d: Buffer, nameAt: number, nameEnd: number, nameLen: number, index: U64, ftype: number, isIndex: boolean, leaf: TreeBlock): void;
  /** an orphan item for inode `ino` */
  orphan(ino: U64): void;
  /** an entry naming a subvolume */
  subvol(e: SubvolEntry & { leaf: bigint }): void;
}

export const FREE_INO = fromBig(OBJ.FREE_INO);
export const FREE_SPACE_OBJECTID = fromBig(OBJ.FREE_SPACE);
export const ORPHAN_OBJECTID = fromBig(OBJ.ORPHAN);

export const FT_OF_MODE: Record<number, number> = {
  [S_IFREG]: FT.REG_FILE, [S_IFDIR]: FT.DIR, [S_IFCHR]: FT.CHRDEV, [S_IFBLK]: FT.BLKDEV,
  [S_IFIFO]: FT.FIFO, [S_IFSOCK]: FT.SOCK, [S_IFLNK]: FT.SYMLINK,
};

// Inode flags as two 32-bit words. The kernel defines bits 0-11 and 31 of the low word and
// bit 0 (VERITY) of the high one; its tree-checker refuses others.
const FLAG_NODATASUM = 1;
const FLAG_IMMUTABLE = 1 << 6;
const FLAG_APPEND = 1 << 7;
const KNOWN_LO = 0xfff | 0x80000000;
const KNOWN_HI = 1;

/** Names as btrfs check prints them: bytes as they are. */
export const printable = (latin1: string) => Buffer.from(latin1, 'latin1').toString('utf8');

export class LeafScanner {
  /** disk bytenrs of written (regular) file extents, for judging preallocated ranges with checksums */
  readonly writtenExtents = new Set<AddrKey>();
  readonly noHoles: boolean;
  private readonly ss: number;
  /** What one inline extent may hold: less than a sector, and less than a leaf item. */
  private readonly maxInline: number;
  readonly superGen: bigint;
  readonly superGenLimit: U64;

  constructor(private readonly ctx: CheckContext) {
    const info = ctx.info;
    this.noHoles = (info.sb.incompat_flags & FEATURE_INCOMPAT.NO_HOLES) !== 0n;
    this.ss = info.sectorsize;
    this.maxInline = Math.min(info.sectorsize - 1, info.nodesize - 101 - 25 - 21);
    this.superGen = info.sb.generation;
    this.superGenLimit = fromBig(info.sb.generation + 1n);
  }

  /**
   * Reads one leaf's items into `sink`. `only` limits own items to those
   * inodes (a leaf scanned again for a changed inode's items); `entries`
   * says whether its directory entries and orphan items count as new.
   * `keys` says whether item keys are kept for findings.
   */
  scanLeaf(leaf: TreeBlock, sink: ItemSink, dataReloc: boolean, only: Set<U64> | undefined, entries: boolean, keys: boolean): void {
    let cur: Own | undefined;
    let curIno: U64 = NONE;
    const d = leaf.buf;
    // Keys are read in place, and decoded only for the items kept: a rescan skips most of a leaf.
    for (let slot = 0; slot < leaf.nritems; slot++) {
      const at = HEADER_SIZE + slot * ITEM_SIZE;
      const ino = readU64(d, at);
      if (ino === FREE_SPACE_OBJECTID) continue;
      if (d[at + 8] === KEY.ORPHAN_ITEM) {
        if (entries && ino === ORPHAN_OBJECTID) sink.orphan(readU64(d, at + 9));
        continue;
      }
      if (only && !only.has(ino)) continue;
      if (ino !== curIno || !cur) {
        curIno = ino;
        cur = sink.own(ino, leaf, slot);
      }
      this.ownItem(cur, ino, slot, d, leaf.itemStartAt(slot), leaf.itemSizeAt(slot), leaf, sink, dataReloc, entries, keys);
    }
  }

  /** One item of inode `ino`: slot `slot` of `leaf`. */
  private ownItem(o: Own, ino: U64, slot: number, d: Buffer, at: number, size: number, leaf: TreeBlock, sink: ItemSink, dataReloc: boolean, entries: boolean, keys: boolean): void {
    // `d` is the whole leaf; the item is [at, at + size).
    const end = at + size;
    const keyAt = HEADER_SIZE + slot * ITEM_SIZE;
    const type = d[keyAt + 8]!;
    switch (type) {
      case KEY.INODE_ITEM: {
        if (o.found) { o.error('dup inode item'); break; }
        o.found = true;
        // The record's first key is usually this very item's: the inode item sorts first.
        if (keys) o.itemKey = o.firstKey?.type === KEY.INODE_ITEM ? o.firstKey : leaf.itemKeyAt(slot);
        o.isize = readU64(d, at + 16);
        o.nbytes = readU64(d, at + 24);
        o.nlink = d.readUInt32LE(at + 40);
        o.mode = d.readUInt32LE(at + 52);
        const lo = d.readUInt32LE(at + 64);
        const hi = d.readUInt32LE(at + 68);
        o.nodatasum = (lo & FLAG_NODATASUM) !== 0;
        const fmt = o.mode & S_IFMT;
        if (fmt === S_IFLNK && (lo & (FLAG_IMMUTABLE | FLAG_APPEND)) !== 0) {
          o.error(`odd inode flags 0x${d.readBigUInt64LE(at + 64).toString(16)} (immutable/append on a symlink)`, 'odd-inode-flags');
        } else if ((lo & ~KNOWN_LO) !== 0 || (hi & ~KNOWN_HI) !== 0) {
          o.error(`odd inode flags 0x${d.readBigUInt64LE(at + 64).toString(16)}`, 'odd-inode-flags');
        }
        if (fmt === S_IFDIR && o.nlink >= 2) o.error(`directory has invalid nlink ${o.nlink}`, 'dir-nlink');
        const gen = readU64(d, at + 0);
        const transid = readU64(d, at + 8);
        if (gen > this.superGenLimit || transid > this.superGenLimit) {
          o.error(`invalid inode generation or transid (generation ${gen}, transid ${transid}, super ${this.superGen})`, 'inode-generation');
        }
        if (d.readUInt32LE(keyAt + 9) !== 0 || d.readUInt32LE(keyAt + 13) !== 0) o.error(`inode item key offset ${d.readBigUInt64LE(keyAt + 9)}, expect 0`);
        break;
      }
      case KEY.INODE_REF: {
        const parent = readU64(d, keyAt + 9);
        for (let off = at; off + 10 <= end;) {
          const len = d.readUInt16LE(off + 8);
          sink.ref(o, ino, parent, readU64(d, off), d, off + 10, Math.min(end, off + 10 + len), undefined);
          off += 10 + len;
        }
        break;
      }
      case KEY.INODE_EXTREF: {
        const k = leaf.itemKeyAt(slot);
        for (let off = at; off + 18 <= end;) {
          const len = d.readUInt16LE(off + 16);
          sink.ref(o, ino, readU64(d, off), readU64(d, off + 8), d, off + 18, Math.min(end, off + 18 + len), k);
          off += 18 + len;
        }
        break;
      }
      case KEY.XATTR_ITEM: {
        for (let off = at; off + 30 <= end;) {
          const nameLen = d.readUInt16LE(off + 27);
          if (nameLen > 255) o.error(`invalid xattr (name of ${nameLen} bytes)`);
          off += 30 + nameLen + d.readUInt16LE(off + 25);
        }
        break;
      }
      case KEY.DIR_ITEM:
      case KEY.DIR_INDEX:
        this.dirEntries(o, ino, slot, d, at, end, leaf, sink, entries);
        break;
      case KEY.EXTENT_DATA:
        this.fileExtent(o, leaf, slot, readU64(d, keyAt + 9), d, at, size, dataReloc);
        break;
      default:
        break;
    }
  }

  private dirEntries(o: Own, ino: U64, slot: number, d: Buffer, at: number, end: number, leaf: TreeBlock, sink: ItemSink, entries: boolean): void {
    o.foundDirItem = true;
    // An unlinked directory's entries are leftovers its orphan cleanup will remove.
    if (o.found && o.nlink === 0) { o.zeroDir = true; return; }
    const keyAt = HEADER_SIZE + slot * ITEM_SIZE;
    const isIndex = d[keyAt + 8] === KEY.DIR_INDEX;
    const keyOffset = readU64(d, keyAt + 9);
    let n = 0;
    for (let off = at; off + 30 <= end;) {
      n++;
      const locType = d[off + 8]!;
      const dataLen = d.readUInt16LE(off + 25);
      const nameLen = d.readUInt16LE(off + 27);
      const ftype = d[off + 29]!;
      const nameAt = off + 30;
      const nameEnd = Math.min(end, nameAt + nameLen);
      o.foundSize = addU64(o.foundSize, nameLen);
      const entryAt = off;
      off += 30 + nameLen + dataLen;
      if (!isIndex) {
        const h = nameHashAt(d, nameAt, nameEnd);
        if (h !== keyOffset) {
          o.error(`dir item name "${printable(d.toString('latin1', nameAt, nameEnd))}" hash mismatch, wanted 0x${h.toString(16).padStart(8, '0')} has 0x${toBig(keyOffset).toString(16).padStart(8, '0')}`, 'name-hash');
          continue;
        }
      }
      if (!entries) continue;
      if (locType === KEY.ROOT_ITEM) {
        const k = leaf.itemKeyAt(slot);
        sink.subvol({
          tree: leaf.owner, child: d.readBigUInt64LE(entryAt), dir: k.objectid, name: Buffer.from(d.subarray(nameAt, nameEnd)),
          index: isIndex ? k.offset : undefined, kind: isIndex ? 'index' : 'item', key: k, leaf: leaf.bytenr,
        });
        continue;
      }
      sink.entry(readU64(d, entryAt), ino, d, nameAt, nameEnd, nameLen, keyOffset, ftype, isIndex, leaf);
    }
    if (isIndex && n > 1) o.error('dup dir index');
  }

  /** One EXTENT_DATA item: its shape, its place among the inode's extents, its bytes and checksums. */
  private fileExtent(o: Own, leaf: TreeBlock, slot: number, off: U64, d: Buffer, at: number, size: number, dataReloc: boolean): void {
    const leafOwner = leaf.owner;
    const ss = this.ss;
    o.foundFileExtent = true;
    if (o.extentStart === NONE) { o.extentStart = off; o.extentEnd = off; }
    if (o.extentEnd > off) o.error(`file extent overlap at offset ${off}`, 'extent-overlap');
    else if (o.extentEnd < off && o.firstGap === NONE) o.firstGap = o.extentEnd;
    const type = d[at + 20]!;
    const compression = d[at + 16]!;
    const ramBytes = readU64(d, at + 8);
    let numBytes: U64 = 0;
    let diskBytenr: U64 = 0;
    let extentOffset: U64 = 0;
    if (type === FILE_EXTENT.INLINE) {
      numBytes = ramBytes;
      if (numBytes === 0) o.error('bad file extent (inline extent of 0 bytes)', 'bad-file-extent');
      const stored = size - 21;
      if (compression) {
        if (stored > this.maxInline || numBytes > ss) o.error('inline file extent too large');
      } else {
        if (numBytes > this.maxInline) o.error('inline file extent too large');
        if (stored !== numBytes) o.error(`invalid inline ram bytes, have ${numBytes} expect ${stored}`, 'inline-ram-bytes');
      }
      o.foundSize = addU64(o.foundSize, numBytes);
      numBytes = typeof numBytes === 'number' ? Math.ceil(numBytes / ss) * ss : fromBig((numBytes + BigInt(ss - 1)) / BigInt(ss) * BigInt(ss));
    } else if (type === FILE_EXTENT.REG || type === FILE_EXTENT.PREALLOC) {
      if (size < 53) { o.error('bad file extent (item too short)', 'bad-file-extent'); return; }
      numBytes = readU64(d, at + 45);
      diskBytenr = readU64(d, at + 21);
      extentOffset = readU64(d, at + 37);
      if (numBytes === 0 || (typeof numBytes === 'number' ? numBytes % ss !== 0 : numBytes % BigInt(ss) !== 0n)) o.error(`bad file extent (num_bytes ${numBytes})`, 'bad-file-extent');
      // Both are u64s in btrfs check: their sum may wrap.
      if (addU64(numBytes, extentOffset) > ramBytes) o.error(`bad file extent (offset ${extentOffset} + num_bytes ${numBytes} past ram_bytes ${ramBytes})`, 'bad-file-extent');
      if (type === FILE_EXTENT.PREALLOC && (compression || d[at + 17] || d.readUInt16LE(at + 18))) o.error('bad file extent (encoded preallocated extent)', 'bad-file-extent');
      if (compression && o.nodatasum) o.error('bad file extent (compressed extent in a NODATASUM inode)', 'bad-file-extent');
      if (diskBytenr !== 0) o.foundSize = addU64(o.foundSize, numBytes);
    } else {
      o.error(`bad file extent (type ${type})`, 'bad-file-extent');
    }
    o.extentEnd = addU64(off, numBytes);
    // The data relocation tree copies extents whatever their checksums: nothing to demand of it.
    if (diskBytenr === 0 || leafOwner === OBJ.DATA_RELOC_TREE || dataReloc) return;
    if (type === FILE_EXTENT.REG) this.writtenExtents.add(addrKey(diskBytenr));
    let start = diskBytenr;
    let len = numBytes;
    if (compression) len = readU64(d, at + 29);
    else start = addU64(diskBytenr, extentOffset);
    const found = csumBytesIn(this.ctx, start, len);
    if (type === FILE_EXTENT.REG) {
      if (found > 0) o.foundCsumItem = true;
      if (found < len) {
        o.someCsumMissing = true;
        if (compression) o.error('some csum missing (compressed extent)', 'csum-missing');
      }
    } else if (type === FILE_EXTENT.PREALLOC && found > 0) {
      (o.prealloc ??= []).push({ key: leaf.itemKeyAt(slot), start, len });
    }
  }

  /** No finding from the inode's own items alone: what `shapeNotes` would say, decided without building anything. */
  soundShape(o: Own): boolean {
    if (o.errors) return false;
    if (!o.found) return true;
    const type = o.mode & S_IFMT;
    if (FT_OF_MODE[type] === undefined || (o.mode & ~(S_IFMT | 0o7777)) !== 0) return false;
    if (type === S_IFDIR) return o.foundSize === o.isize && !o.foundFileExtent;
    if (type === S_IFREG || type === S_IFLNK) {
      return !o.foundDirItem && !(o.nlink > 0 && o.foundSize !== o.nbytes) && !(o.nlink > 0 && !this.noHoles && this.extentGap(o))
        && !(o.foundCsumItem && o.nodatasum) && !(o.someCsumMissing && !o.nodatasum);
    }
    return true;
  }

  /** Before NO_HOLES, a file's extents must cover it from 0 to its size without a gap. */
  private extentGap(o: Own): boolean {
    return o.isize !== 0 && (o.extentEnd === NONE || o.extentEnd < o.isize || o.extentStart !== 0 || (o.firstGap !== NONE && o.firstGap < o.isize));
  }

  /** The findings that depend on the inode's own items only, under `key`. */
  shapeNotes(o: Own, key: Key): Note[] {
    const notes: Note[] = o.errors ? o.errors.map(([code, text]) => [code, text, key] as Note) : [];
    if (!o.found) return notes;
    const add = (code: string, text: string) => notes.push([code, text, key]);
    const type = o.mode & S_IFMT;
    if (FT_OF_MODE[type] === undefined || (o.mode & ~(S_IFMT | 0o7777)) !== 0) add('inode', `invalid inode mode bit 0${(o.mode & ~0o7777).toString(8)}`);
    if (type === S_IFDIR) {
      if (o.foundSize !== o.isize) add('dir-isize', `dir isize wrong, have ${o.isize} expect ${o.foundSize}`);
      if (o.foundFileExtent) add('inode', 'odd file extent');
    } else if (type === S_IFREG || type === S_IFLNK) {
      if (o.foundDirItem) add('inode', 'odd dir item (a non-directory holds directory entries)');
      // An unlinked inode is half truncated until its orphan cleanup: its nbytes and extents are in flux.
      if (o.nlink > 0 && o.foundSize !== o.nbytes) add('nbytes', `nbytes wrong, have ${o.nbytes} expect ${o.foundSize}`);
      if (o.nlink > 0 && !this.noHoles && this.extentGap(o)) {
        const s = o.extentStart === NONE ? 0 : o.extentStart;
        const e = o.extentEnd === NONE ? 0 : o.extentEnd;
        add('file-extent-discount', `file extent discount, size ${o.isize} but extents cover [${s}, ${e}) with a hole`);
      }
      if (o.foundCsumItem && o.nodatasum) add('inode', 'odd csum item (checksums for a NODATASUM inode)');
      if (o.someCsumMissing && !o.nodatasum) add('csum-missing', 'some csum missing');
    }
    return notes;
  }
}
