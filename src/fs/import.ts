/**
 * Copying host trees into an image, as `cp -a` would onto a kernel mount:
 * data (sparse files stay sparse), mode with setuid/setgid/sticky, owner,
 * nanosecond atime/mtime, xattrs, symlinks, hard links (same host inode →
 * one image inode), device numbers, fifos and sockets.
 *
 * Order matters the way it does for cp: owner before mode (chown clears
 * setuid), times last, and a directory's own metadata after its children,
 * whose creation changes its mtime.
 *
 * Two paths: FastImporter makes every new inode whole, from a host reader
 * thread's listing, a directory's entries in one batch of items; Importer
 * goes through the POSIX calls, for what the fast path leaves to it (names
 * already in the image, destinations it cannot resolve) and for the
 * metadata of directories that existed before.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { BigIntStats } from 'node:fs';
import { BtrfsError, isBtrfsError, type ErrnoCode } from '../util/errors.js';
import * as host from '../util/host.js';
import { nameHash } from '../util/checksum.js';
import { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, KEY, FT, NAME_LEN, FILE_EXTENT, COMPRESS, FEATURE_INCOMPAT } from '../format/constants.js';
import { key } from '../format/key.js';
import type { Timespec } from '../format/layout.js';
import { maxItemSize } from '../format/tree-block-encode.js';
import { encodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { encodeInodeRefs } from '../format/items/inode-ref.js';
import { encodeDirItems, type DirItem } from '../format/items/dir-item.js';
import { encodeFileExtentItem, FILE_EXTENT_INLINE_DATA_START } from '../format/items/file-extent-item.js';
import type { ItemToInsert } from '../tree/cow.js';
import { MAX_DATA_EXTENT, type Transaction } from '../transaction/transaction.js';
import type { FsWriter } from '../transaction/writer.js';
import { kernelRdev, type WritableFilesystem } from './writable.js';
import type { Stats } from './stats.js';
import { TxView } from './tx-view.js';
import { writeFileData, truncateFileData, MAX_INLINE, MAX_SYMLINK, type FileCtx } from './file-write.js';
import { asBuffer } from '../util/bytes.js';
import { roundUp } from './file-extents.js';
import { Counters, LINK_MAX, readInode, writeInode, findEntry, ftOf, appendDirItem, addInodeRef } from './namespace.js';
import { xattrNamespace, checkXattrTarget, checkXattrValue } from './xattr-rules.js';
import { HostReader, type ReaderRoot, type ReaderPart, type ReaderMessage } from './import-reader.js';

export interface ImportProgress { files: number; bytes: number; totalFiles?: number; totalBytes?: number }

export interface ImportOptions {
  onProgress?: (p: ImportProgress) => void;
  /**
   * The single source directory becomes the image root itself (mkfs -r): its
   * contents go into `dest` and its own metadata is given to `dest`.
   */
  contentsOnly?: boolean;
  /**
   * Commit whenever this many changed tree blocks wait in memory (default
   * 512): what bounds the import's memory. Each commit leaves a
   * consistent image holding the part imported so far.
   */
  commitBlocks?: number;
}

export interface ImportResult { files: number; dirs: number; bytes: number; hardlinks: number; warnings: string[] }

const SECTOR = 4096;
const CHUNK = 1 << 20;
const ZEROS = Buffer.alloc(SECTOR);

function ns(v: bigint): { sec: bigint; nsec: number } {
  const sec = v >= 0n ? v / 1_000_000_000n : -((-v + 999_999_999n) / 1_000_000_000n);
  return { sec, nsec: Number(v - sec * 1_000_000_000n) };
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** Hands `write` the runs of non-zero sectors of a file with holes; the caller sets the size. */
async function copySparse(fh: fsp.FileHandle, size: number, write: (off: number, data: Buffer) => Promise<unknown>): Promise<void> {
  const buf = Buffer.alloc(CHUNK);
  for (let off = 0; off < size; off += CHUNK) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - off), off);
    let runStart = -1;
    // one step past the last (possibly partial) sector closes an open run
    for (let i = 0; ; i += SECTOR) {
      const atEnd = i >= bytesRead;
      const zero = atEnd || ZEROS.compare(buf, i, Math.min(i + SECTOR, bytesRead), 0, Math.min(SECTOR, bytesRead - i)) === 0;
      if (!zero && runStart < 0) runStart = i;
      if (zero && runStart >= 0) {
        await write(off + runStart, Buffer.from(buf.subarray(runStart, Math.min(i, bytesRead))));
        runStart = -1;
      }
      if (atEnd) break;
    }
  }
}

/**
 * The general path, through the POSIX calls: what the fast path leaves to
 * it (names already in the image, destinations it cannot resolve), and the
 * metadata of directories merged into.
 */
class Importer {
  readonly result: ImportResult = { files: 0, dirs: 0, bytes: 0, hardlinks: 0, warnings: [] };
  /** image path of the first name of each host inode with several links, by `dev:ino` */
  readonly links = new Map<string, string>();
  private xattrsOk = host.nativeHostAvailable();

  constructor(private readonly fs: WritableFilesystem, private readonly opts: ImportOptions) {
    if (!this.xattrsOk) this.result.warnings.push('native helper unavailable: xattrs and device numbers of the host cannot be read');
  }

  private progress(): void {
    this.opts.onProgress?.({ files: this.result.files, bytes: this.result.bytes });
  }

  /** Owner, mode, xattrs, then times: what cp -a restores, in the order that keeps each. */
  async metadata(src: string, dst: string, st: HostMeta): Promise<void> {
    if (this.xattrsOk) {
      for (const name of host.llistxattr(src)) {
        // of system.* only POSIX ACLs are stored (as the kernel stores them)
        if (name.startsWith('system.') && name !== 'system.posix_acl_access' && name !== 'system.posix_acl_default') {
          this.result.warnings.push(`${src}: xattr ${name} not copied`);
          continue;
        }
        await this.fs.lsetxattr(dst, name, host.lgetxattr(src, name));
      }
    }
    // owner before mode (chown clears setuid), times last: one change
    await this.fs.setattr(dst, { uid: Number(st.uid), gid: Number(st.gid), mode: Number(st.mode) & 0o7777, atime: ns(st.atimeNs), mtime: ns(st.mtimeNs) });
  }

  private async existing(dst: string): Promise<Stats | undefined> {
    try {
      return await this.fs.lstat(dst);
    } catch (e) {
      if (isBtrfsError(e, 'ENOENT')) return undefined;
      throw e;
    }
  }

  /**
   * `src` as `dst`. A name already there is handled as cp -a does: a
   * directory is merged into, a regular file overwritten in place, anything
   * else replaced; a directory and a non-directory do not replace each other.
   */
  async copy(src: string, dst: string, st?: BigIntStats): Promise<void> {
    st ??= await fsp.lstat(src, { bigint: true });
    const type = Number(st.mode) & S_IFMT;
    const there = await this.existing(dst);
    if (there?.isDirectory() && type !== S_IFDIR) throw new BtrfsError('EISDIR', 'cannot overwrite a directory with a non-directory', { path: dst });
    if (there && !there.isDirectory() && type === S_IFDIR) throw new BtrfsError('ENOTDIR', 'cannot overwrite a non-directory with a directory', { path: dst });
    const first = type !== S_IFDIR && st.nlink > 1n ? this.links.get(`${st.dev}:${st.ino}`) : undefined;
    if (there && type !== S_IFDIR && (first !== undefined || type !== S_IFREG || !there.isFile())) await this.fs.unlink(dst);
    if (first !== undefined) {
      await this.fs.link(first, dst);
      this.result.hardlinks++;
      return;
    }
    if (type !== S_IFDIR && st.nlink > 1n) this.links.set(`${st.dev}:${st.ino}`, dst);
    if (type === S_IFDIR) {
      if (!there) await this.fs.mkdir(dst, { mode: 0o700 });
      await this.children(src, dst);
      await this.metadata(src, dst, st);
      if (!there) this.result.dirs++;
      return;
    }
    if (type === S_IFREG) await this.file(src, dst, st);
    else if (type === S_IFLNK) await this.fs.symlink(await fsp.readlink(src), dst);
    else await this.fs.mknod(dst, Number(st.mode), st.rdev);
    await this.metadata(src, dst, st);
    this.result.files++;
    this.progress();
  }

  async children(src: string, dst: string): Promise<void> {
    for (const name of (await fsp.readdir(src)).sort()) await this.copy(path.join(src, name), join(dst, name));
  }

  /** Data: streamed into big extents, or for a sparse file only its non-zero sectors. */
  private async file(src: string, dst: string, st: BigIntStats): Promise<void> {
    const size = Number(st.size);
    const sparse = st.blocks * 512n < st.size;
    const fh = await fsp.open(src, 'r');
    try {
      if (!sparse) {
        const stream = fh.createReadStream({ highWaterMark: CHUNK, autoClose: false });
        await this.fs.writeFile(dst, stream, { mode: 0o600, size });
      } else {
        await this.fs.writeFile(dst, '', { mode: 0o600 });
        await copySparse(fh, size, (off, data) => this.fs.write(dst, data, off));
        await this.fs.truncate(dst, size);
      }
    } finally {
      await fh.close();
    }
    this.result.bytes += size;
  }
}

// --- the fast path ---------------------------------------------------------
//
// Copying through the POSIX calls costs a path walk and a dozen tree
// descents per file. An import knows more: every inode it makes is new and
// final when made (its stat is read before), inode numbers grow, and a
// directory's entries arrive together. So the engine side builds each
// directory's items in memory and inserts them as one sorted batch (a COW
// descent per leaf filled), file data is written behind (coalesced, the
// transaction waits for it before it commits), and the host is read by a
// worker thread (import-reader.ts) while this one builds. It commits every
// COMMIT_BLOCKS changed tree blocks, so memory follows the metadata being
// built, not the size of the import. Commits come only between two parts
// of a listing, when every inode made is whole and every directory's size
// counts the names in it: each leaves a consistent image.

/** files up to this size are read whole and their data written in coalesced runs */
const SMALL_MAX = 1 << 20;
/** data the reader may have sent ahead and not yet consumed (KiB) */
const READ_BUDGET_KIB = 16 * 1024;
const COMMIT_BLOCKS = 512;

interface DirTarget {
  tree: bigint;
  ino: bigint;
  /** its path in the image */
  path: string;
  /** a directory that was there before: its indexes come from the tree, names may collide with its own */
  existing: boolean;
  nextIndex: bigint;
  /** length of the names added and not yet counted in the directory's size */
  nameBytes: number;
  /** new directories: the inode item as inserted, its size kept up to date after each part */
  item?: InodeItem;
  /** new directories: name hashes with a DIR_ITEM already inserted */
  hashes?: Set<bigint>;
  /** host name → image name (one source copied under another name) */
  rename?: Map<string, string>;
}

interface LinkTarget { tree: bigint; ino: bigint; ft: number; path: string }

/** The host metadata cp -a gives a directory (what Importer.metadata needs of a stat). */
interface HostMeta { uid: number | bigint; gid: number | bigint; mode: number | bigint; atimeNs: bigint; mtimeNs: bigint }



class FastImporter {
  private readonly counters = new Counters();
  /** new directories not yet listed, by host path */
  private readonly dirs = new Map<string, DirTarget>();
  /** first names of host inodes with several links, by `dev:ino` */
  readonly links = new Map<string, LinkTarget>();
  /** entries the fast path leaves to the POSIX path (a name already taken, a link it did not make) */
  readonly fallbacks: { src: string; dst: string }[] = [];
  /** directories that were already in the image, merged into: cp -a gives them the source's metadata at the end */
  readonly merged: { src: string; dst: string; meta: HostMeta }[] = [];
  private readonly sec: number;
  private readonly csumSize: number;
  private readonly noHoles: boolean;

  constructor(private readonly w: FsWriter, private readonly opts: ImportOptions, private readonly result: ImportResult, private readonly roots: DirTarget[]) {
    this.sec = w.info.sectorsize;
    this.csumSize = w.info.csumSize;
    this.noHoles = (w.info.sb.incompat_flags & FEATURE_INCOMPAT.NO_HOLES) !== 0n;
  }

  async run(roots: ReaderRoot[]): Promise<void> {
    const info = this.w.info;
    const reader = new HostReader({
      roots, smallMax: SMALL_MAX, inlineMax: Math.min(MAX_INLINE, this.sec - 1), sectorsize: this.sec,
      csumType: info.csumType, csumSize: this.csumSize, xattrs: host.nativeHostAvailable(), budgetKiB: READ_BUDGET_KIB,
    });
    try {
      for (;;) {
        const m = await reader.next();
        if (m.type === 'done') break;
        if (m.type !== 'part') throw readerError(m);
        await this.part(reader, m);
        reader.release(m.kib);
        const t = this.w.transaction();
        if (t.pending.size + t.tree.dirtyCount > (this.opts.commitBlocks ?? COMMIT_BLOCKS)) await this.w.commit();
      }
    } finally {
      await reader.stop();
    }
  }

  /** Skips a part nobody asked for (a subtree left to the POSIX path): only its chunks must be drained. */
  private async skip(reader: HostReader, m: ReaderPart): Promise<void> {
    for (const e of m.entries) if (e.big) await this.skipChunks(reader);
  }

  private async skipChunks(reader: HostReader): Promise<void> {
    for (;;) {
      const c = await reader.next();
      if (c.type !== 'chunk') throw readerError(c);
      reader.release(c.kib);
      if (c.last) return;
    }
  }

  private async part(reader: HostReader, m: ReaderPart): Promise<void> {
    const d = m.root !== undefined ? this.roots[m.root] : this.dirs.get(m.dir);
    if (!d) return this.skip(reader, m);
    const t = this.w.transaction();
    const now = this.w.now();
    const gen = t.generation;
    const tree = d.tree;
    const items: ItemToInsert[] = [];
    const dirItems = new Map<bigint, DirItem[]>();
    const later: (() => Promise<void>)[] = [];
    const data = m.data && asBuffer(m.data);
    const csums = m.csums && asBuffer(m.csums);
    const { sec, csumSize: cs } = this;
    // a run of small files' data, contiguous both in `data` and on disk: one write
    let run: { bytenr: bigint; at: number; len: number; chunkEnd: bigint } | undefined;
    const flushRun = async (): Promise<void> => {
      if (!run) return;
      const r = run;
      run = undefined;
      await t.writeDataBehind(r.bytenr, data!.subarray(r.at, r.at + r.len), csums!.subarray((r.at / sec) * cs, ((r.at + r.len) / sec) * cs));
    };
    const entry = (name: Buffer, ino: bigint, ft: number, index: bigint): void => {
      const de: DirItem = { location: key(ino, KEY.INODE_ITEM, 0n), transid: gen, type: ft, name, data: Buffer.alloc(0) };
      const h = nameHash(name);
      const list = dirItems.get(h);
      if (list) list.push(de);
      else dirItems.set(h, [de]);
      items.push({ key: key(d.ino, KEY.DIR_INDEX, index), data: encodeDirItems([de]) });
      d.nameBytes += name.length;
    };
    const nextIndex = async (): Promise<bigint> => (d.existing ? this.counters.nextIndex(t, tree, d.ino) : d.nextIndex++);

    for (const e of m.entries) {
      const src = path.join(m.dir, e.name);
      const imageName = d.rename?.get(e.name) ?? e.name;
      const dst = join(d.path, imageName);
      const name = Buffer.from(imageName, 'utf8');
      if (name.length > NAME_LEN) throw new BtrfsError('ENAMETOOLONG', 'name too long', { syscall: 'open', path: dst });
      if (e.warnings) this.result.warnings.push(...e.warnings);
      const there = d.existing ? await findEntry(t, tree, d.ino, name) : undefined;
      if (there) {
        if ((e.mode & S_IFMT) === S_IFDIR && there.type === FT.DIR && there.location.type === KEY.INODE_ITEM) {
          // cp -a merges a directory into one of the same name
          this.dirs.set(src, { tree, ino: there.location.objectid, path: dst, existing: true, nextIndex: 0n, nameBytes: 0 });
          this.merged.push({ src, dst, meta: e });
        } else {
          this.fallbacks.push({ src, dst });
          if (e.big) await this.skipChunks(reader);
        }
        continue;
      }
      if (e.linkOf !== undefined) {
        const l = this.links.get(e.linkOf);
        if (!l) {
          this.fallbacks.push({ src, dst });
          continue;
        }
        if (l.tree !== tree) throw new BtrfsError('EXDEV', 'cross-subvolume link', { syscall: 'link', path: dst });
        const index = await nextIndex();
        entry(name, l.ino, l.ft, index);
        later.push(async () => {
          await addInodeRef(t, tree, l.ino, d.ino, index, name);
          const it = await readInode(t, tree, l.ino);
          if (it.nlink >= LINK_MAX) throw new BtrfsError('EMLINK', 'too many links', { syscall: 'link', path: dst });
          it.nlink++;
          it.ctime = now;
          await writeInode(t, tree, l.ino, it);
        });
        this.result.hardlinks++;
        continue;
      }
      const ino = await this.counters.nextIno(t, tree);
      const index = await nextIndex();
      const type = e.mode & S_IFMT;
      const mode = type === S_IFLNK ? S_IFLNK | 0o777 : type | (e.mode & 0o7777);
      const item: InodeItem = {
        generation: gen, transid: gen, size: 0n, nbytes: 0n, block_group: 0n, nlink: 1, uid: e.uid >>> 0, gid: e.gid >>> 0, mode,
        rdev: type === S_IFCHR || type === S_IFBLK ? kernelRdev(e.rdev) : 0n, flags: 0n, sequence: 1n, reserved: Buffer.alloc(32),
        atime: ns(e.atimeNs), ctime: now, mtime: ns(e.mtimeNs), otime: now,
      };
      items.push({ key: key(ino, KEY.INODE_REF, d.ino), data: encodeInodeRefs([{ index, name }]) });
      if (e.xattrs) this.xattrItems(ino, type, dst, gen, e.xattrs, items);
      if (type === S_IFDIR) {
        this.dirs.set(src, { tree, ino, path: dst, existing: false, nextIndex: 2n, nameBytes: 0, item, hashes: new Set() });
      } else if (type === S_IFREG && e.sparse) {
        later.push(() => this.sparse(t, tree, ino, item, src, e.size));
      } else if (type === S_IFREG && e.inline) {
        const bytes = asBuffer(e.inline);
        if (bytes.length > 0) {
          items.push({ key: key(ino, KEY.EXTENT_DATA, 0n), data: this.inlineExtent(gen, bytes) });
          item.size = BigInt(bytes.length);
          item.nbytes = BigInt(bytes.length);
        }
      } else if (type === S_IFREG && e.at !== undefined) {
        const padded = roundUp(e.size, sec);
        for (let done = 0; done < padded;) {
          const ext = await t.allocData(padded - done);
          const at = e.at + done;
          this.regularExtent(t, tree, ino, done, ext.bytenr, ext.len, items);
          if (run && run.bytenr + BigInt(run.len) === ext.bytenr && run.at + run.len === at && ext.bytenr + BigInt(ext.len) <= run.chunkEnd) {
            run.len += ext.len;
          } else {
            await flushRun();
            const c = this.w.info.chunks.find(ext.bytenr)!;
            run = { bytenr: ext.bytenr, at, len: ext.len, chunkEnd: c.logical + c.length };
          }
          done += ext.len;
        }
        item.size = BigInt(e.size);
        item.nbytes = BigInt(padded);
      } else if (type === S_IFREG && e.big) {
        await this.big(reader, t, tree, ino, item, e.size, items);
      } else if (type === S_IFLNK && e.target) {
        const target = asBuffer(e.target);
        const max = Math.min(MAX_SYMLINK, maxItemSize(t.nodesize) - FILE_EXTENT_INLINE_DATA_START);
        if (target.length === 0) throw new BtrfsError('ENOENT', 'empty symlink target', { syscall: 'symlink', path: dst });
        if (target.length > max) throw new BtrfsError('ENAMETOOLONG', `symlink target of ${target.length} bytes (at most ${max})`, { syscall: 'symlink', path: dst });
        items.push({ key: key(ino, KEY.EXTENT_DATA, 0n), data: this.inlineExtent(gen, target) });
        item.size = BigInt(target.length);
        item.nbytes = BigInt(target.length);
      }
      items.push({ key: key(ino, KEY.INODE_ITEM, 0n), data: encodeInodeItem(item) });
      entry(name, ino, ftOf(mode), index);
      if (e.linkId !== undefined) this.links.set(e.linkId, { tree, ino, ft: ftOf(mode), path: dst });
      if (type !== S_IFDIR) {
        this.result.files++;
        this.result.bytes += type === S_IFREG ? e.size : 0;
        this.opts.onProgress?.({ files: this.result.files, bytes: this.result.bytes });
      }
    }
    await flushRun();
    for (const [h, list] of dirItems) {
      if (d.existing || d.hashes!.has(h)) {
        later.unshift(async () => { for (const de of list) await appendDirItem(t, tree, key(d.ino, KEY.DIR_ITEM, h), de); });
      } else {
        d.hashes!.add(h);
        items.push({ key: key(d.ino, KEY.DIR_ITEM, h), data: encodeDirItems(list) });
      }
    }
    if (items.length) await t.insertItems(tree, items);
    for (const f of later) await f();
    await this.dirSize(t, d, now);
    if (m.final && m.root === undefined) {
      this.dirs.delete(m.dir);
      if (!d.existing) this.result.dirs++;
    }
  }

  /**
   * Counts the part's names in the directory's size. After every part, not
   * only the last: a commit may come between two parts of one directory,
   * and each commit must leave a consistent image.
   */
  private async dirSize(t: Transaction, d: DirTarget, now: Timespec): Promise<void> {
    if (d.nameBytes === 0) return;
    const grow = BigInt(d.nameBytes * 2);
    d.nameBytes = 0;
    if (d.existing) {
      const it = await readInode(t, d.tree, d.ino);
      it.size += grow;
      it.mtime = now;
      it.ctime = now;
      await writeInode(t, d.tree, d.ino, it);
      return;
    }
    const it = d.item!;
    it.size += grow;
    it.transid = t.generation;
    await t.update(d.tree, key(d.ino, KEY.INODE_ITEM, 0n), encodeInodeItem(it));
  }

  private inlineExtent(gen: bigint, bytes: Buffer): Buffer {
    return encodeFileExtentItem({
      generation: gen, ram_bytes: BigInt(bytes.length), compression: COMPRESS.NONE, encryption: 0, other_encoding: 0,
      type: FILE_EXTENT.INLINE, data: bytes,
    });
  }

  /** The item and reference of a whole new extent at file offset `off`. */
  private regularExtent(t: Transaction, tree: bigint, ino: bigint, off: number, bytenr: bigint, len: number, items: ItemToInsert[]): void {
    const n = BigInt(len);
    items.push({
      key: key(ino, KEY.EXTENT_DATA, BigInt(off)),
      data: encodeFileExtentItem({
        generation: t.generation, ram_bytes: n, compression: COMPRESS.NONE, encryption: 0, other_encoding: 0,
        type: FILE_EXTENT.REG, disk_bytenr: bytenr, disk_num_bytes: n, offset: 0n, num_bytes: n,
      }),
    });
    t.addDataRef({ bytenr, numBytes: n, root: tree, ino, offset: BigInt(off) });
  }

  /** A big file's chunks into extents of up to 128 MiB, sized by its stat size while that holds. */
  private async big(reader: HostReader, t: Transaction, tree: bigint, ino: bigint, item: InodeItem, hint: number, items: ItemToInsert[]): Promise<void> {
    const { sec, csumSize: cs } = this;
    let cur: { bytenr: bigint; len: number; start: number; written: number } | undefined;
    let fileOff = 0;
    let total = 0;
    let nbytes = 0;
    const close = (): void => {
      if (!cur) return;
      if (cur.written < cur.len) t.trimData(cur.bytenr, cur.len, cur.written);
      this.regularExtent(t, tree, ino, cur.start, cur.bytenr, cur.written, items);
      nbytes += cur.written;
      cur = undefined;
    };
    for (;;) {
      const c = await reader.next();
      if (c.type !== 'chunk') throw readerError(c);
      const data = asBuffer(c.data);
      const sums = asBuffer(c.csums);
      for (let off = 0; off < data.length;) {
        if (!cur) {
          const left = roundUp(hint, sec) - fileOff;
          const want = Math.min(MAX_DATA_EXTENT, Math.max(left, data.length - off));
          const got = await t.allocData(want);
          cur = { bytenr: got.bytenr, len: got.len, start: fileOff, written: 0 };
        }
        const take = Math.min(data.length - off, cur.len - cur.written);
        await t.writeDataBehind(cur.bytenr + BigInt(cur.written), data.subarray(off, off + take), sums.subarray((off / sec) * cs, ((off + take) / sec) * cs));
        cur.written += take;
        off += take;
        fileOff += take;
        if (cur.written === cur.len) close();
      }
      total += c.bytes;
      reader.release(c.kib);
      if (c.last) break;
    }
    close();
    item.size = BigInt(total);
    item.nbytes = BigInt(nbytes);
  }

  /** A file with holes: only its non-zero sectors get extents (as Importer.file does), through the general write path. */
  private async sparse(t: Transaction, tree: bigint, ino: bigint, item: InodeItem, src: string, size: number): Promise<void> {
    const ctx: FileCtx = { txn: t, subvol: tree, ino, item, noHoles: this.noHoles };
    const fh = await fsp.open(src, 'r');
    try {
      await copySparse(fh, size, (off, data) => writeFileData(ctx, off, data));
    } finally {
      await fh.close();
    }
    await truncateFileData(ctx, size);
    await writeInode(t, tree, ino, item);
  }

  /** XATTR_ITEMs of a new inode, checked as lsetxattr checks them. */
  private xattrItems(ino: bigint, type: number, dst: string, gen: bigint, xattrs: [string, Uint8Array][], items: ItemToInsert[]): void {
    const byHash = new Map<bigint, DirItem[]>();
    const syscall = 'lsetxattr';
    for (const [n, raw] of xattrs) {
      const nb = Buffer.from(n, 'utf8');
      const v = asBuffer(raw);
      const where = { syscall, path: dst };
      checkXattrTarget(xattrNamespace(n, nb, where), type, where);
      checkXattrValue(nb, v, this.w.info.nodesize, where);
      const h = nameHash(nb);
      const de: DirItem = { location: { objectid: 0n, type: 0, offset: 0n }, transid: gen, type: FT.XATTR, name: nb, data: Buffer.from(v) };
      const list = byHash.get(h);
      if (list) list.push(de);
      else byHash.set(h, [de]);
    }
    for (const [h, list] of byHash) {
      const data = encodeDirItems(list);
      if (data.length > maxItemSize(this.w.info.nodesize)) throw new BtrfsError('EOVERFLOW', 'too many names share this hash', { path: dst });
      items.push({ key: key(ino, KEY.XATTR_ITEM, h), data });
    }
  }
}

function readerError(m: ReaderMessage): BtrfsError {
  if (m.type === 'error') {
    const code = (m.code && /^E[A-Z0-9]+$/.test(m.code) ? m.code : 'EIO') as ErrnoCode;
    return new BtrfsError(code, m.message.replace(/^[A-Z0-9_]+: /, ''), m.path ? { path: m.path } : {});
  }
  return new BtrfsError('EIO', `import reader out of step: ${m.type}`);
}

/**
 * One source of an import. `contents`: the source directory's entries go
 * into `dst` (an existing directory), which then takes the source's own
 * metadata (mkfs -r, and `cp -a dir/. DEST`); else the source itself
 * becomes `dst`.
 */
interface Job { src: string; dst: string; contents: boolean; st: BigIntStats }

/** What the POSIX path (Importer) still has to do after the fast path. */
interface Leftovers { fallbacks: Job[]; merged: { src: string; dst: string; meta: HostMeta }[]; links: Map<string, string> }

/**
 * The fast path, under the filesystem's lock. Changes made before the
 * import are committed first; a failure then aborts the running
 * transaction (half a directory's batch would leave references without
 * items), and the image stays at its last commit: earlier changes, and any
 * part of the import a periodic commit already made durable.
 */
async function importFast(fs: WritableFilesystem, jobs: Job[], opts: ImportOptions, result: ImportResult): Promise<Leftovers> {
  const left: Leftovers = { fallbacks: [], merged: [], links: new Map() };
  try {
    await fs.exclusive(async (w) => {
      if (w.dirty) await w.commit();
      const t = w.transaction();
      const targets: DirTarget[] = [];
      const roots: ReaderRoot[] = [];
      for (const job of jobs) {
        // the directory the listing goes into, and the name the source takes there
        const abs = path.resolve(job.src);
        const parts = job.dst.split('/').filter((c) => c !== '' && c !== '.');
        const last = job.contents ? undefined : parts.pop();
        const name = path.basename(abs);
        let d: DirTarget | undefined;
        if ((job.contents || (name && last && last !== '..')) && !parts.includes('..')) {
          const at = '/' + parts.join('/');
          try {
            const r = await new TxView(t).resolve(at, true);
            if ((r.item.mode & S_IFMT) === S_IFDIR && !r.placeholder) {
              d = { tree: r.subvol, ino: r.ino, path: at, existing: true, nextIndex: 0n, nameBytes: 0 };
              if (last !== undefined && last !== name) d.rename = new Map([[name, last]]);
            }
          } catch (e) {
            if (!isBtrfsError(e)) throw e;
          }
        }
        if (!d) {
          // the POSIX path gives the error (or copes)
          left.fallbacks.push(job);
          continue;
        }
        targets.push(d);
        roots.push(job.contents ? { dir: abs } : { dir: path.dirname(abs), only: name });
      }
      if (!roots.length) return;
      const imp = new FastImporter(w, opts, result, targets);
      try {
        await imp.run(roots);
      } catch (e) {
        await w.abort();
        if (isBtrfsError(e)) throw new BtrfsError(e.code, `${e.detail}; the transaction was aborted, the image is at its last commit and uncommitted changes are lost`, { path: e.path, syscall: e.syscall, cause: e });
        throw e;
      }
      for (const f of imp.fallbacks) left.fallbacks.push({ ...f, contents: false, st: await fsp.lstat(f.src, { bigint: true }) });
      left.merged.push(...imp.merged);
      for (const [id, l] of imp.links) left.links.set(id, l.path);
    });
  } finally {
    // exclusive() resets the filesystem's inode and index counters only when fn succeeds
    await fs.exclusive(async () => undefined);
  }
  return left;
}

/**
 * Copies `sources` into the image as `cp -a SRC... DEST` would: into
 * `dest` when it is an existing directory (each under its own name, a
 * directory of the same name merged into), else as `dest` (one source). A
 * source `dir/.` stands for the contents of dir, copied into DEST itself.
 * A missing source fails before anything is copied.
 */
export async function importTree(fs: WritableFilesystem, sources: string[], dest: string, opts: ImportOptions = {}): Promise<ImportResult> {
  if (sources.length === 0) throw new BtrfsError('EINVAL', 'nothing to copy');
  const imp = new Importer(fs, opts);
  let destIsDir = false;
  try {
    destIsDir = (await fs.stat(dest)).isDirectory();
  } catch (e) {
    if (!isBtrfsError(e, 'ENOENT')) throw e;
  }
  const jobs: Job[] = [];
  if (opts.contentsOnly) {
    if (sources.length !== 1 || !destIsDir) throw new BtrfsError('EINVAL', 'copying a directory\'s contents needs one source and an existing directory');
    const st = await fsp.lstat(sources[0]!, { bigint: true });
    if (!st.isDirectory()) throw new BtrfsError('ENOTDIR', 'not a directory', { path: sources[0] });
    jobs.push({ src: sources[0]!, dst: dest, contents: true, st });
  } else {
    if (!destIsDir && sources.length > 1) throw new BtrfsError('ENOTDIR', 'copying several sources needs an existing directory', { path: dest });
    for (const s of sources) {
      const st = await fsp.lstat(s, { bigint: true });
      if (path.basename(s) === '.') {
        // `dir/.` names dir by its entry '.', which cp copies onto DEST itself
        if (!st.isDirectory()) throw new BtrfsError('ENOTDIR', 'not a directory', { path: s });
        jobs.push({ src: s, dst: dest, contents: destIsDir, st });
      } else {
        jobs.push({ src: s, dst: destIsDir ? join(dest, path.basename(path.resolve(s))) : dest, contents: false, st });
      }
    }
  }
  const left = await importFast(fs, jobs, opts, imp.result);
  for (const [id, dst] of left.links) imp.links.set(id, dst);
  for (const f of left.fallbacks) {
    if (f.contents) {
      await imp.children(f.src, f.dst);
      await imp.metadata(f.src, f.dst, f.st);
    } else {
      await imp.copy(f.src, f.dst, f.st);
    }
  }
  // last, as cp -a does once a directory is complete: the times would not survive changes inside it
  for (const m of left.merged) await imp.metadata(m.src, m.dst, m.meta);
  for (const j of jobs) if (j.contents && !left.fallbacks.includes(j)) await imp.metadata(j.src, j.dst, j.st);
  return imp.result;
}
