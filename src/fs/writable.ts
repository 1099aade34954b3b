/**
 * The filesystem open for writing, shaped like node's fs.promises: every
 * change goes into the running transaction and becomes durable at
 * `commit()` (or `close()`); reads see uncommitted changes.
 *
 *   const fs = await WritableFilesystem.open('disk.img');
 *   await fs.mkdir('/etc');
 *   await fs.writeFile('/etc/hostname', 'box\n', { mode: 0o644 });
 *   await fs.close();                         // commits
 *
 * Operations run one at a time (a mutex), reads included, so a read never
 * sees a tree half changed. Errors are BtrfsError with the errno Linux
 * gives for the same call on a kernel mount. A failure the transaction
 * cannot survive (ENOSPC while a tree was being changed, an I/O error)
 * aborts it: the image stays at its last commit and every uncommitted
 * change is lost, which the error message says.
 *
 * New inodes get the process's uid/gid (or the open options') and modes
 * filtered by the process umask, as the kernel does for a system call.
 */
import { Readable } from 'node:stream';
import { BtrfsError, isBtrfsError } from '../util/errors.js';
import { KEY, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, ROOT_DIR_INO, FEATURE_INCOMPAT, NAME_LEN } from '../format/constants.js';
import type { Timespec } from '../format/layout.js';
import { encodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { key } from '../format/key.js';
import type { BlockDevice } from '../device/block-device.js';
import { FileDevice } from '../device/file-device.js';
import { FsWriter, type WriterOptions } from '../transaction/writer.js';
import type { Transaction } from '../transaction/transaction.js';
import { Filesystem, type Dirent } from './filesystem.js';
import { TxView, type TxResolved } from './tx-view.js';
import { Subvolumes } from '../subvol/api.js';
import type { RootLocks } from '../subvol/root-lock.js';
import type { Stats } from './stats.js';
import type { SubvolumeInfo } from './subvolumes.js';
import { writeFileData, fileWriter, truncateFileData, writeSymlinkTarget } from './file-write.js';
import { dropLink, renameEntry } from './link-ops.js';
import { cloneRange } from './clone-range.js';
import { inheritFrom, applyInheritance } from './inherit.js';
import { xattrNamespace, checkXattrTarget, checkXattrValue } from './xattr-rules.js';
import type { FileCtx } from './file-extents.js';
import {
  Counters, LINK_MAX, addLink, removeLink, readInode, writeInode, newInode, findEntry, ftOf, parentOf,
  deleteInodeItems, findXattr, setXattr as putXattr, removeXattr as dropXattr,
} from './namespace.js';

export type TimeInput = Timespec | Date | number | bigint;

export interface WritableOpenOptions extends WriterOptions {
  /** owner of new inodes; default the process's */
  uid?: number;
  gid?: number;
  /** mode bits cleared from new inodes; default the process umask */
  umask?: number;
  /** commit by itself once this many tree blocks wait in memory (default 4096) */
  autoCommitBlocks?: number;
  /** opening by path: how long to wait for another process's hold on the image (default 0: EBUSY at once) */
  lockWaitMs?: number;
}

export interface CreateOptions { mode?: number; uid?: number; gid?: number }

/** A time as btrfs stores it. Numbers are seconds (fractions kept to the ns), bigints ns since the epoch. */
export function toTimespec(t: TimeInput): Timespec {
  if (typeof t === 'bigint') {
    const sec = t >= 0n ? t / 1_000_000_000n : -((-t + 999_999_999n) / 1_000_000_000n);
    return { sec, nsec: Number(t - sec * 1_000_000_000n) };
  }
  if (t instanceof Date) return toTimespec(BigInt(t.getTime()) * 1_000_000n);
  if (typeof t === 'number') {
    if (!Number.isFinite(t)) throw new BtrfsError('EINVAL', `bad time ${t}`);
    const sec = Math.floor(t);
    return { sec: BigInt(sec), nsec: Math.min(999_999_999, Math.round((t - sec) * 1e9)) };
  }
  if (typeof t.sec !== 'bigint' || !Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec > 999_999_999) throw new BtrfsError('EINVAL', 'bad time');
  return { sec: t.sec, nsec: t.nsec };
}

/** The kernel's dev_t (major << 20 | minor) from a user-space one as node reports it. */
export function kernelRdev(userDev: number | bigint): bigint {
  const d = BigInt(userDev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return (major << 20n) | (minor & 0xfffffn);
}

interface ParentRef { dir: TxResolved; name: Buffer; path: string }

export class WritableFilesystem {
  private queue: Promise<unknown> = Promise.resolve();
  private counters = new Counters();
  private subvolAdmin: Subvolumes | undefined;
  private closed = false;

  private constructor(
    readonly writer: FsWriter,
    private readonly device: BlockDevice,
    private readonly opts: WritableOpenOptions,
    /** the path the image was opened from (for the send registry), if any */
    readonly imagePath?: string,
  ) {}

  static async open(image: string | BlockDevice, opts: WritableOpenOptions = {}): Promise<WritableFilesystem> {
    const device = typeof image === 'string' ? await FileDevice.open(image, { lockWaitMs: opts.lockWaitMs }) : image;
    try {
      const w = await FsWriter.open(device, opts);
      return new WritableFilesystem(w, device, opts, typeof image === 'string' ? image : undefined);
    } catch (e) {
      if (typeof image === 'string') await device.close().catch(() => undefined);
      throw e;
    }
  }

  private get uid(): number { return this.opts.uid ?? process.getuid?.() ?? 0; }
  private get gid(): number { return this.opts.gid ?? process.getgid?.() ?? 0; }
  private readonly processUmask = process.umask();
  private get umask(): number { return this.opts.umask ?? this.processUmask; }
  private now(): Timespec { return this.writer.now(); }
  private get noHoles(): boolean { return (this.writer.info.sb.incompat_flags & FEATURE_INCOMPAT.NO_HOLES) !== 0n; }

  /** Runs `fn` alone; engine failures abort the transaction and say so. */
  private run<T>(syscall: string, path: string | undefined, fn: (t: Transaction) => Promise<T>): Promise<T> {
    const job = this.queue.then(async () => {
      if (this.closed) throw new BtrfsError('EBADF', 'filesystem is closed', { syscall, path });
      const t = this.writer.transaction();
      try {
        const out = await fn(t);
        if (t.pending.size + t.tree.dirtyCount > (this.opts.autoCommitBlocks ?? 4096)) await this.writer.commit();
        return out;
      } catch (e) {
        if (t.poisoned) {
          this.counters.clear();
          await this.writer.abort();
          if (isBtrfsError(e)) {
            throw new BtrfsError(e.code, `${e.detail}; the transaction was aborted, the image is at its last commit and uncommitted changes are lost`, { syscall, path, cause: e });
          }
        }
        throw e;
      }
    });
    this.queue = job.catch(() => undefined);
    return job;
  }

  /** A read-side view of the current state (running transaction included). */
  private async view(): Promise<Filesystem> {
    await this.writer.syncView();
    return Filesystem.view(this.writer.info, this.device);
  }

  private read<T>(fn: (v: Filesystem) => Promise<T>): Promise<T> {
    const job = this.queue.then(async () => {
      if (this.closed) throw new BtrfsError('EBADF', 'filesystem is closed');
      return fn(await this.view());
    });
    this.queue = job.catch(() => undefined);
    return job;
  }

  // --- reads ----------------------------------------------------------------
  lstat(path: string): Promise<Stats> { return this.read((v) => v.lstat(path)); }
  stat(path: string): Promise<Stats> { return this.read((v) => v.stat(path)); }
  exists(path: string): Promise<boolean> { return this.read((v) => v.exists(path)); }
  readdir(path: string): Promise<string[]>;
  readdir(path: string, opts: { withFileTypes: true }): Promise<Dirent[]>;
  readdir(path: string, opts: { withFileTypes?: boolean } = {}): Promise<string[] | Dirent[]> {
    return this.read<string[] | Dirent[]>((v) => (opts.withFileTypes ? v.readdir(path, { withFileTypes: true }) : v.readdir(path)));
  }
  readFile(path: string, opts?: BufferEncoding | { encoding?: BufferEncoding | null }): Promise<Buffer | string> {
    return this.read((v) => v.readFile(path, opts));
  }
  readlink(path: string): Promise<string> { return this.read((v) => v.readlink(path)); }
  listxattr(path: string): Promise<string[]> { return this.read((v) => v.listxattr(path)); }
  getxattr(path: string, name: string): Promise<Buffer> { return this.read((v) => v.getxattr(path, name)); }
  listSubvolumes(): Promise<SubvolumeInfo[]> { return this.read((v) => v.listSubvolumes()); }

  /** Runs `fn` on a read-side view while nothing else runs (for walks such as manifests and send). */
  withView<T>(fn: (v: Filesystem) => Promise<T>): Promise<T> { return this.read(fn); }

  // --- path helpers ---------------------------------------------------------
  private async parent(v: TxView, path: string, syscall: string): Promise<ParentRef> {
    if (typeof path !== 'string' || path.length === 0) throw new BtrfsError('ENOENT', 'no such file or directory', { syscall, path });
    const parts = path.split('/').filter((c) => c !== '' && c !== '.');
    const last = parts.pop();
    if (last === undefined) throw new BtrfsError('EBUSY', 'the root directory', { syscall, path });
    if (last === '..') throw new BtrfsError('EINVAL', 'invalid name', { syscall, path });
    const name = Buffer.from(last, 'utf8');
    if (name.length > NAME_LEN) throw new BtrfsError('ENAMETOOLONG', 'name too long', { syscall, path });
    const dir = await v.resolve('/' + parts.join('/'), true);
    if ((dir.item.mode & S_IFMT) !== S_IFDIR) throw new BtrfsError('ENOTDIR', 'not a directory', { syscall, path });
    if (dir.placeholder) throw new BtrfsError('EPERM', 'not a writable directory (a subvolume placeholder)', { syscall, path });
    return { dir, name, path };
  }

  private async mustNotExist(t: Transaction, p: ParentRef, syscall: string): Promise<void> {
    if (await findEntry(t, p.dir.subvol, p.dir.ino, p.name)) throw new BtrfsError('EEXIST', 'file already exists', { syscall, path: p.path });
  }

  /** The requested mode; create() masks it (by the umask, or by the directory's default ACL). */
  private mode(type: number, mode: number | undefined, dflt: number): number {
    return type | ((mode ?? dflt) & 0o7777);
  }

  /**
   * A new inode linked at `p`, `mode` as requested (before the umask):
   * setgid directories pass on their group (and setgid to subdirectories),
   * and the directory's default ACL and compression property are inherited
   * as the kernel does (fs/inherit.ts).
   */
  private async create(t: Transaction, p: ParentRef, mode: number, o: CreateOptions, rdev = 0n): Promise<{ ino: bigint; item: InodeItem }> {
    const tree = p.dir.subvol;
    let gid = o.gid ?? this.gid;
    if (p.dir.item.mode & 0o2000) {
      if (o.gid === undefined) gid = p.dir.item.gid;
      if ((mode & S_IFMT) === S_IFDIR) mode |= 0o2000;
    }
    const now = this.now();
    const ino = await this.counters.nextIno(t, tree);
    const inh = await inheritFrom(t, tree, p.dir.ino, mode, this.umask);
    const item = newInode(t, inh.mode, o.uid ?? this.uid, gid, now, rdev);
    await t.insert(tree, key(ino, KEY.INODE_ITEM, 0n), encodeInodeItem(item));
    await addLink(t, this.counters, tree, p.dir.ino, p.name, ino, ftOf(mode), now);
    await applyInheritance(t, tree, ino, inh);
    return { ino, item };
  }

  private fileCtx(t: Transaction, r: { subvol: bigint; ino: bigint }, item: InodeItem): FileCtx {
    return { txn: t, subvol: r.subvol, ino: r.ino, item, noHoles: this.noHoles };
  }

  // --- namespace ------------------------------------------------------------
  mkdir(path: string, opts: CreateOptions & { recursive?: boolean } = {}): Promise<void> {
    return this.run('mkdir', path, async (t) => {
      if (opts.recursive) {
        const parts = path.split('/').filter((c) => c !== '' && c !== '.');
        for (let i = 1; i <= parts.length; i++) {
          const sub = '/' + parts.slice(0, i).join('/');
          const v = new TxView(t);
          let r: TxResolved | undefined;
          try { r = await v.resolve(sub, true); } catch (e) { if (!isBtrfsError(e, 'ENOENT')) throw e; }
          if (r) {
            if ((r.item.mode & S_IFMT) !== S_IFDIR) throw new BtrfsError(i === parts.length ? 'EEXIST' : 'ENOTDIR', 'not a directory', { syscall: 'mkdir', path: sub });
            continue;
          }
          await this.create(t, await this.parent(v, sub, 'mkdir'), this.mode(S_IFDIR, opts.mode, 0o777) & ~0o6000, opts);
        }
        return;
      }
      const p = await this.parent(new TxView(t), path, 'mkdir');
      await this.mustNotExist(t, p, 'mkdir');
      await this.create(t, p, this.mode(S_IFDIR, opts.mode, 0o777) & ~0o6000, opts);
    });
  }

  symlink(target: string, path: string, opts: CreateOptions = {}): Promise<void> {
    return this.run('symlink', path, async (t) => {
      const tb = Buffer.from(target, 'utf8');
      if (tb.length === 0) throw new BtrfsError('ENOENT', 'empty symlink target', { syscall: 'symlink', path });
      const p = await this.parent(new TxView(t), path, 'symlink');
      await this.mustNotExist(t, p, 'symlink');
      const { ino, item } = await this.create(t, p, S_IFLNK | 0o777, opts);
      await writeSymlinkTarget(this.fileCtx(t, { subvol: p.dir.subvol, ino }, item), tb);
      await writeInode(t, p.dir.subvol, ino, item);
    });
  }

  mknod(path: string, mode: number, rdev: number | bigint = 0, opts: CreateOptions = {}): Promise<void> {
    return this.run('mknod', path, async (t) => {
      const type = (mode & S_IFMT) || S_IFREG;
      if (type === S_IFDIR) throw new BtrfsError('EPERM', 'mknod cannot make directories', { syscall: 'mknod', path });
      if (![S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFREG].includes(type)) throw new BtrfsError('EINVAL', 'mknod makes devices, fifos, sockets and regular files', { syscall: 'mknod', path });
      const p = await this.parent(new TxView(t), path, 'mknod');
      await this.mustNotExist(t, p, 'mknod');
      const dev = type === S_IFCHR || type === S_IFBLK ? kernelRdev(rdev) : 0n;
      await this.create(t, p, type | (mode & 0o7777), opts, dev);
    });
  }

  link(existing: string, newPath: string): Promise<void> {
    return this.run('link', newPath, async (t) => {
      const v = new TxView(t);
      // the kernel looks the new name up before judging the source (EEXIST/ENOENT before EPERM)
      const src = await v.resolve(existing, false);
      const p = await this.parent(v, newPath, 'link');
      await this.mustNotExist(t, p, 'link');
      if ((src.item.mode & S_IFMT) === S_IFDIR) throw new BtrfsError('EPERM', 'hard link to a directory', { syscall: 'link', path: existing });
      if (p.dir.subvol !== src.subvol) throw new BtrfsError('EXDEV', 'cross-subvolume link', { syscall: 'link', path: newPath });
      const item = await readInode(t, src.subvol, src.ino);
      if (item.nlink >= LINK_MAX) throw new BtrfsError('EMLINK', 'too many links', { syscall: 'link', path: existing });
      const now = this.now();
      await addLink(t, this.counters, p.dir.subvol, p.dir.ino, p.name, src.ino, ftOf(item.mode), now);
      item.nlink++;
      item.ctime = now;
      await writeInode(t, src.subvol, src.ino, item);
    });
  }

  private dropLink(t: Transaction, tree: bigint, dirIno: bigint, name: Buffer, ino: bigint): Promise<void> {
    return dropLink(t, tree, dirIno, name, ino, this.now(), this.noHoles);
  }

  unlink(path: string): Promise<void> {
    return this.run('unlink', path, async (t) => {
      const v = new TxView(t);
      const p = await this.parent(v, path, 'unlink');
      const d = await findEntry(t, p.dir.subvol, p.dir.ino, p.name);
      if (!d) throw new BtrfsError('ENOENT', 'no such file or directory', { syscall: 'unlink', path });
      if (d.location.type === KEY.ROOT_ITEM) throw new BtrfsError('EISDIR', 'is a directory', { syscall: 'unlink', path });
      const item = await readInode(t, p.dir.subvol, d.location.objectid);
      if ((item.mode & S_IFMT) === S_IFDIR) throw new BtrfsError('EISDIR', 'is a directory', { syscall: 'unlink', path });
      await this.dropLink(t, p.dir.subvol, p.dir.ino, p.name, d.location.objectid);
    });
  }

  rmdir(path: string): Promise<void> {
    return this.run('rmdir', path, async (t) => {
      const v = new TxView(t);
      const p = await this.parent(v, path, 'rmdir');
      const d = await findEntry(t, p.dir.subvol, p.dir.ino, p.name);
      if (!d) throw new BtrfsError('ENOENT', 'no such file or directory', { syscall: 'rmdir', path });
      if (d.location.type === KEY.ROOT_ITEM) throw new BtrfsError('EPERM', 'a subvolume: delete it with deleteSubvolume', { syscall: 'rmdir', path });
      const item = await readInode(t, p.dir.subvol, d.location.objectid);
      if ((item.mode & S_IFMT) !== S_IFDIR) throw new BtrfsError('ENOTDIR', 'not a directory', { syscall: 'rmdir', path });
      if (item.size !== 0n) throw new BtrfsError('ENOTEMPTY', 'directory not empty', { syscall: 'rmdir', path });
      await this.dropLink(t, p.dir.subvol, p.dir.ino, p.name, d.location.objectid);
    });
  }

  rename(oldPath: string, newPath: string): Promise<void> {
    return this.run('rename', oldPath, async (t) => {
      const v = new TxView(t);
      const from = await this.parent(v, oldPath, 'rename');
      const to = await this.parent(v, newPath, 'rename');
      if (from.dir.subvol !== to.dir.subvol) {
        // judged after the source is found: a missing source is ENOENT first
        if (!(await findEntry(t, from.dir.subvol, from.dir.ino, from.name))) throw new BtrfsError('ENOENT', 'no such file or directory', { syscall: 'rename', path: oldPath });
        throw new BtrfsError('EXDEV', 'cross-subvolume rename', { syscall: 'rename', path: oldPath });
      }
      await renameEntry(t, this.counters, from.dir.subvol, { dir: from.dir.ino, name: from.name, path: oldPath }, { dir: to.dir.ino, name: to.name, path: newPath }, this.now(), this.noHoles);
    });
  }

  // --- file data ------------------------------------------------------------
  /** Resolves a regular file for writing (following symlinks), creating it when asked. */
  private async openFile(t: Transaction, path: string, syscall: string, create: CreateOptions | undefined, excl = false, depth = 0): Promise<{ subvol: bigint; ino: bigint; item: InodeItem }> {
    const v = new TxView(t);
    let r: TxResolved | undefined;
    try {
      r = await v.resolve(path, true);
    } catch (e) {
      if (!isBtrfsError(e, 'ENOENT') || !create) throw e;
      // O_CREAT through a dangling symlink creates its target, as Linux does
      let link: TxResolved | undefined;
      try { link = await v.resolve(path, false); } catch { /* the name itself is missing */ }
      if (link && (link.item.mode & S_IFMT) === S_IFLNK) {
        if (excl) throw new BtrfsError('EEXIST', 'file already exists', { syscall, path });
        if (depth >= 40) throw new BtrfsError('ELOOP', 'too many levels of symbolic links', { syscall, path });
        const target = await v.readlink(path);
        const dir = path.split('/').slice(0, -1).join('/') || '/';
        return this.openFile(t, target.startsWith('/') ? target : `${dir}/${target}`, syscall, create, excl, depth + 1);
      }
    }
    if (r) {
      if (excl) throw new BtrfsError('EEXIST', 'file already exists', { syscall, path });
      const ty = r.item.mode & S_IFMT;
      if (ty === S_IFDIR) throw new BtrfsError('EISDIR', 'illegal operation on a directory', { syscall, path });
      if (ty !== S_IFREG) throw new BtrfsError('EINVAL', 'not a regular file', { syscall, path });
      return { subvol: r.subvol, ino: r.ino, item: await readInode(t, r.subvol, r.ino) };
    }
    const p = await this.parent(v, path, syscall);
    const { ino, item } = await this.create(t, p, this.mode(S_IFREG, create!.mode, 0o666), create!);
    return { subvol: p.dir.subvol, ino, item };
  }

  private async fill(t: Transaction, f: { subvol: bigint; ino: bigint; item: InodeItem }, pos: number, data: string | Uint8Array | AsyncIterable<Uint8Array> | NodeJS.ReadableStream, size?: number): Promise<void> {
    const ctx = this.fileCtx(t, f, f.item);
    if (typeof data === 'string' || data instanceof Uint8Array) {
      const b = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      if (b.length > 0) await writeFileData(ctx, pos, b);
    } else {
      const w = fileWriter(ctx, pos, size);
      const src = (typeof (data as Readable).pipe === 'function' && !(Symbol.asyncIterator in data) ? Readable.from(data as NodeJS.ReadableStream) : data) as AsyncIterable<Uint8Array | string>;
      for await (const chunk of src) {
        const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        if (b.length > 0) await w.write(b);
      }
      await w.end();
    }
    const now = this.now();
    f.item.mtime = now;
    f.item.ctime = now;
    await writeInode(t, f.subvol, f.ino, f.item);
  }

  writeFile(path: string, data: string | Uint8Array | AsyncIterable<Uint8Array> | NodeJS.ReadableStream, opts: CreateOptions & { flag?: 'w' | 'wx' | 'a'; size?: number } = {}): Promise<void> {
    return this.run('open', path, async (t) => {
      const flag = opts.flag ?? 'w';
      const f = await this.openFile(t, path, 'open', opts, flag === 'wx');
      let pos = 0;
      if (flag === 'a') pos = Number(f.item.size);
      else if (f.item.size > 0n) await truncateFileData(this.fileCtx(t, f, f.item), 0);
      await this.fill(t, f, pos, data, opts.size);
    });
  }

  appendFile(path: string, data: string | Uint8Array | AsyncIterable<Uint8Array> | NodeJS.ReadableStream, opts: CreateOptions = {}): Promise<void> {
    return this.writeFile(path, data, { ...opts, flag: 'a' });
  }

  /** pwrite: `data` at `position` of an existing regular file, growing it as needed. Returns the bytes written. */
  write(path: string, data: Uint8Array, position: number): Promise<number> {
    return this.run('write', path, async (t) => {
      if (!Number.isSafeInteger(position) || position < 0) throw new BtrfsError('EINVAL', `bad position ${position}`, { syscall: 'write', path });
      const f = await this.openFile(t, path, 'write', undefined);
      await this.fill(t, f, position, data);
      return data.length;
    });
  }

  /**
   * Reflink, as the FICLONERANGE ioctl (cp --reflink): [dstOffset, +length)
   * of `dst` shares the extents of [srcOffset, +length) of `src` (length 0:
   * to the source's end), across subvolumes too. Offsets must be sector
   * aligned and the length too unless it reaches the source's end (EINVAL
   * otherwise, as from the kernel); ranges of one file may not overlap.
   */
  clone(src: string, dst: string, opts: { srcOffset?: number; dstOffset?: number; length?: number } = {}): Promise<void> {
    return this.run('clone', dst, async (t) => {
      const s = await this.openFile(t, src, 'clone', undefined);
      const d = await this.openFile(t, dst, 'clone', undefined);
      const sec = t.sectorsize;
      const srcOff = opts.srcOffset ?? 0;
      const dstOff = opts.dstOffset ?? 0;
      const size = Number(s.item.size);
      const len = opts.length || Math.max(0, size - srcOff);
      const bad = (why: string) => new BtrfsError('EINVAL', why, { syscall: 'clone', path: dst });
      if (![srcOff, dstOff, len].every((n) => Number.isSafeInteger(n) && n >= 0)) throw bad('offsets and length must be non-negative integers');
      if (srcOff + len > size) throw bad('the source range ends past its end of file');
      if (srcOff % sec || dstOff % sec || (len % sec && srcOff + len !== size)) throw bad(`offsets and length must be multiples of ${sec} (the length may end at the source's end)`);
      const same = s.subvol === d.subvol && s.ino === d.ino;
      if (same && srcOff < dstOff + len && dstOff < srcOff + len) throw bad('overlapping ranges of one file');
      if (len === 0) return;
      const dstItem = same ? s.item : d.item;
      await cloneRange(this.fileCtx(t, d, dstItem), dstOff, this.fileCtx(t, s, s.item), srcOff, len);
      const now = this.now();
      dstItem.mtime = now;
      dstItem.ctime = now;
      await writeInode(t, d.subvol, d.ino, dstItem);
    });
  }

  truncate(path: string, len = 0): Promise<void> {
    return this.run('truncate', path, async (t) => {
      if (!Number.isSafeInteger(len) || len < 0) throw new BtrfsError('EINVAL', `bad length ${len}`, { syscall: 'truncate', path });
      const f = await this.openFile(t, path, 'truncate', undefined);
      await truncateFileData(this.fileCtx(t, f, f.item), len);
      const now = this.now();
      f.item.mtime = now;
      f.item.ctime = now;
      await writeInode(t, f.subvol, f.ino, f.item);
    });
  }

  // --- attributes -----------------------------------------------------------
  private attr(syscall: string, path: string, follow: boolean, change: (item: InodeItem) => void): Promise<void> {
    return this.run(syscall, path, async (t) => {
      const r = await new TxView(t).resolve(path, follow);
      if (r.placeholder) throw new BtrfsError('EPERM', 'a subvolume placeholder', { syscall, path });
      const item = await readInode(t, r.subvol, r.ino);
      change(item);
      item.ctime = this.now();
      await writeInode(t, r.subvol, r.ino, item);
    });
  }

  /**
   * Several attributes in one change (what an importer restores): owner as
   * lchown/chown would set it, then mode, then times. `follow` false works on
   * a symlink itself (its mode is left alone, as Linux cannot change it).
   */
  setattr(path: string, a: { uid?: number; gid?: number; mode?: number; atime?: TimeInput; mtime?: TimeInput }, opts: { follow?: boolean } = {}): Promise<void> {
    return this.attr('setattr', path, opts.follow ?? false, (it) => {
      if (a.uid !== undefined || a.gid !== undefined) this.owner(it, a.uid ?? -1, a.gid ?? -1);
      if (a.mode !== undefined && (it.mode & S_IFMT) !== S_IFLNK) it.mode = (it.mode & S_IFMT) | (a.mode & 0o7777);
      if (a.atime !== undefined) it.atime = toTimespec(a.atime);
      if (a.mtime !== undefined) it.mtime = toTimespec(a.mtime);
    });
  }

  chmod(path: string, mode: number): Promise<void> {
    return this.attr('chmod', path, true, (it) => { it.mode = (it.mode & S_IFMT) | (mode & 0o7777); });
  }

  chown(path: string, uid: number, gid: number): Promise<void> {
    return this.attr('chown', path, true, (it) => this.owner(it, uid, gid));
  }

  lchown(path: string, uid: number, gid: number): Promise<void> {
    return this.attr('lchown', path, false, (it) => this.owner(it, uid, gid));
  }

  private owner(it: InodeItem, uid: number, gid: number): void {
    if (uid !== -1) it.uid = uid >>> 0;
    if (gid !== -1) it.gid = gid >>> 0;
    // as chown(2) by root: setuid goes, setgid goes when group-executable
    if ((it.mode & S_IFMT) !== S_IFDIR) {
      it.mode &= ~0o4000;
      if (it.mode & 0o010) it.mode &= ~0o2000;
    }
  }

  utimes(path: string, atime: TimeInput, mtime: TimeInput): Promise<void> {
    return this.attr('utime', path, true, (it) => { it.atime = toTimespec(atime); it.mtime = toTimespec(mtime); });
  }

  lutimes(path: string, atime: TimeInput, mtime: TimeInput): Promise<void> {
    return this.attr('lutime', path, false, (it) => { it.atime = toTimespec(atime); it.mtime = toTimespec(mtime); });
  }

  private xattr(syscall: string, path: string, follow: boolean, name: string, fn: (t: Transaction, tree: bigint, ino: bigint, nb: Buffer) => Promise<void>): Promise<void> {
    return this.run(syscall, path, async (t) => {
      const nb = Buffer.from(name, 'utf8');
      const ns = xattrNamespace(name, nb, { syscall, path });
      const r = await new TxView(t).resolve(path, follow);
      if (r.placeholder) throw new BtrfsError('EPERM', 'a subvolume placeholder', { syscall, path });
      checkXattrTarget(ns, r.item.mode & S_IFMT, { syscall, path });
      await fn(t, r.subvol, r.ino, nb);
      const item = await readInode(t, r.subvol, r.ino);
      item.ctime = this.now();
      await writeInode(t, r.subvol, r.ino, item);
    });
  }

  setxattr(path: string, name: string, value: Uint8Array | string): Promise<void> { return this.doSetxattr('setxattr', path, true, name, value); }
  lsetxattr(path: string, name: string, value: Uint8Array | string): Promise<void> { return this.doSetxattr('lsetxattr', path, false, name, value); }

  private doSetxattr(syscall: string, path: string, follow: boolean, name: string, value: Uint8Array | string): Promise<void> {
    const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    return this.xattr(syscall, path, follow, name, async (t, tree, ino, nb) => {
      checkXattrValue(nb, v, t.nodesize, { syscall, path });
      await putXattr(t, tree, ino, nb, v);
    });
  }

  removexattr(path: string, name: string): Promise<void> { return this.doRemovexattr('removexattr', path, true, name); }
  lremovexattr(path: string, name: string): Promise<void> { return this.doRemovexattr('lremovexattr', path, false, name); }

  private doRemovexattr(syscall: string, path: string, follow: boolean, name: string): Promise<void> {
    return this.xattr(syscall, path, follow, name, async (t, tree, ino, nb) => {
      if (!(await findXattr(t, tree, ino, nb))) throw new BtrfsError('ENODATA', `no xattr ${name}`, { syscall, path });
      await dropXattr(t, tree, ino, nb);
    });
  }

  // --- transactions -----------------------------------------------------------
  /** Makes every change so far durable. */
  commit(): Promise<void> {
    const job = this.queue.then(async () => { await this.writer.commit(); this.counters.clear(); });
    this.queue = job.catch(() => undefined);
    return job;
  }

  /** Forgets every change since the last commit. */
  abort(): Promise<void> {
    const job = this.queue.then(async () => { this.counters.clear(); await this.writer.abort(); });
    this.queue = job.catch(() => undefined);
    return job;
  }

  /** Commits, then closes the image (releasing its lock). */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.commit();
    } finally {
      this.closed = true;
      await this.writer.close();
    }
  }

  // --- subvolumes (each commits, as the kernel's ioctls are durable on return) ---
  private subvols(): Subvolumes {
    this.subvolAdmin ??= new Subvolumes(this.writer, this.device, this.imagePath);
    return this.subvolAdmin;
  }

  createSubvolume(path: string, opts: CreateOptions = {}): Promise<bigint> {
    return this.exclusive(async () => this.subvols().create(path, { ...opts, mode: opts.mode === undefined ? undefined : opts.mode & ~this.umask }));
  }

  /** A snapshot of subvolume `source` at `dest` (commits first: shared blocks must be on disk). */
  snapshot(source: string, dest: string, opts: { readonly?: boolean } = {}): Promise<bigint> {
    return this.exclusive(async () => this.subvols().snapshot(source, dest, opts));
  }

  deleteSubvolume(path: string): Promise<bigint> {
    return this.exclusive(async () => this.subvols().delete(path));
  }

  /** The cleaner: drops every deleted subvolume (btrfs subvolume sync). */
  syncSubvolumes(): Promise<bigint[]> {
    return this.exclusive(async () => this.subvols().sync());
  }

  setReadOnly(path: string, ro: boolean): Promise<void> {
    return this.exclusive(async () => this.subvols().setReadOnly(path, ro));
  }

  isReadOnly(path: string): Promise<boolean> {
    return this.exclusive(async () => this.subvols().isReadOnly(path));
  }

  setDefaultSubvolume(pathOrId: string | bigint): Promise<void> {
    return this.exclusive(async () => this.subvols().setDefault(pathOrId));
  }

  /** The root_item_locks of this image's subvolumes in this process (send counts itself in here). */
  get rootLocks(): RootLocks { return this.subvols().locks; }

  /** Runs `fn` with the running transaction alone (for the subvolume and receive layers). */
  transact<T>(syscall: string, fn: (t: Transaction, v: () => Promise<Filesystem>) => Promise<T>): Promise<T> {
    return this.run(syscall, undefined, (t) => fn(t, () => this.view()));
  }

  /** Exclusive access to the writer between operations (subvolume operations commit themselves). */
  exclusive<T>(fn: (w: FsWriter, v: () => Promise<Filesystem>) => Promise<T>): Promise<T> {
    const job = this.queue.then(async () => {
      if (this.closed) throw new BtrfsError('EBADF', 'filesystem is closed');
      const out = await fn(this.writer, () => this.view());
      this.counters.clear();
      return out;
    });
    this.queue = job.catch(() => undefined);
    return job;
  }
}

