/**
 * The filesystem as a program sees it through a kernel mount of the top-level
 * subvolume (subvolid=5): paths are absolute from there, nested subvolumes and
 * snapshots are directories. The API follows node's fs.promises where the
 * names match (readdir, lstat, stat, readFile, readlink), plus the btrfs and
 * Linux things node lacks (subvolumes, xattrs).
 *
 *   const fs = await Filesystem.open('disk.img', { readOnly: true });
 *   await fs.readFile('/sv/etc/hostname', 'utf8');
 *   await fs.at(257n).readdir('/');   // paths relative to subvolume 257
 */
import { Readable } from 'node:stream';
import { BtrfsError } from '../util/errors.js';
import { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, KEY, OBJ, ROOT_DIR_INO } from '../format/constants.js';
import type { InodeItem } from '../format/items/inode-item.js';
import type { BlockDevice } from '../device/block-device.js';
import { FileDevice } from '../device/file-device.js';
import { FsInfo, type OpenOptions } from '../tree/fs-info.js';
import { labelOf } from '../format/superblock.js';
import { lookupItem, type RootLocation } from '../tree/search.js';
import { key, type Key } from '../format/key.js';
import { readInodeItem, placeholderInodeItem, EMPTY_SUBVOL_DIR_INO } from './inode.js';
import { lookupName, listDir, FT_NAMES } from './dir.js';
import { FileReader, type FilePiece } from './file-read.js';
import { listXattrs, getXattr } from './xattr.js';
import { listSubvolumes, defaultSubvolume, hasRootRef, type SubvolumeInfo } from './subvolumes.js';
import { Stats } from './stats.js';
import { walkPath } from './path-walk.js';

export interface FilesystemOpenOptions extends OpenOptions {
  /** default true: nothing is written and no lock is taken */
  readOnly?: boolean;
}

/** A resolved inode: where it lives and its item. */
export interface Resolved {
  path: string;
  subvol: bigint;
  root: RootLocation;
  ino: bigint;
  item: InodeItem;
  /**
   * A subvolume entry with no linked subvolume behind it (e.g. a nested
   * subvolume seen inside a snapshot): the kernel shows an empty directory,
   * inode 2, on a device of its own.
   */
  placeholder?: boolean;
}

export class Dirent {
  constructor(
    readonly name: string,
    /** file, dir, symlink, chardev, blockdev, fifo, socket */
    readonly type: string,
    readonly ino: bigint,
    /** the subvolume the entry points into (differs from the parent's for subvolume roots) */
    readonly subvol: bigint,
    readonly rawName: Buffer,
  ) {}
  isFile(): boolean { return this.type === 'file'; }
  isDirectory(): boolean { return this.type === 'dir'; }
  isSymbolicLink(): boolean { return this.type === 'symlink'; }
  isCharacterDevice(): boolean { return this.type === 'chardev'; }
  isBlockDevice(): boolean { return this.type === 'blockdev'; }
  isFIFO(): boolean { return this.type === 'fifo'; }
  isSocket(): boolean { return this.type === 'socket'; }
}

/** The kernel stores a symlink target inline, at most PATH_MAX - 1 bytes. */
const MAX_SYMLINK_BYTES = 4095;
/** Largest file readFile will put into one Buffer (node's own limit). */
const MAX_BUFFER = 2 ** 31 - 1;


export class Filesystem {
  /** root locations by subvolume id; a writer clears it when its trees move */
  protected readonly roots: Map<bigint, RootLocation>;
  protected files: FileReader;

  protected constructor(
    readonly info: FsInfo,
    protected readonly device: BlockDevice,
    /** the subvolume paths are relative to */
    readonly base: bigint,
    shared?: { roots: Map<bigint, RootLocation>; files: FileReader },
  ) {
    this.roots = shared?.roots ?? new Map();
    this.files = shared?.files ?? new FileReader(info);
  }

  /** Opens an image file or block device (or an already open BlockDevice). */
  static async open(image: string | BlockDevice, opts: FilesystemOpenOptions = {}): Promise<Filesystem> {
    const readOnly = opts.readOnly ?? true;
    const device = typeof image === 'string' ? await FileDevice.open(image, { readOnly }) : image;
    try {
      const info = await FsInfo.open(device, opts);
      return new Filesystem(info, device, OBJ.FS_TREE);
    } catch (e) {
      if (typeof image === 'string') await device.close().catch(() => undefined);
      throw e;
    }
  }

  /**
   * A view of an FsInfo someone else owns (a writer's, showing its running
   * transaction): nothing is cached across calls beyond this object, and
   * closing the view is the owner's business, not the view's.
   */
  static view(info: FsInfo, device: BlockDevice, base: bigint = OBJ.FS_TREE): Filesystem {
    return new Filesystem(info, device, base);
  }

  async close(): Promise<void> {
    await this.device.close();
  }

  /**
   * Brings the view up to date before a public method reads anything. A
   * read-only filesystem has nothing to do; a writer makes its running
   * transaction visible here.
   */
  protected async ready(): Promise<void> {}

  /**
   * Runs one public operation. Every public method goes through here, so a
   * subclass can serialize operations and refresh the view in one place.
   */
  protected async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.ready();
    return fn();
  }

  /** The same filesystem with paths relative to subvolume `id` (ENOENT if there is none). */
  async at(id: bigint | number): Promise<Filesystem> {
    return this.run(async () => {
      const sub = new Filesystem(this.info, this.device, BigInt(id), { roots: this.roots, files: this.files });
      await sub.rootOf(BigInt(id));
      return sub;
    });
  }

  get label(): string {
    return labelOf(this.info.sb);
  }

  async rootOf(subvol: bigint, path?: string): Promise<RootLocation> {
    return this.run(() => this.rootOfNow(subvol, path));
  }

  private async rootOfNow(subvol: bigint, path?: string): Promise<RootLocation> {
    const hit = this.roots.get(subvol);
    if (hit) return hit;
    const r = await this.info.findRoot(subvol);
    if (!r) throw new BtrfsError('ENOENT', `no subvolume ${subvol}`, { path, tree: subvol });
    this.roots.set(subvol, r.loc);
    return r.loc;
  }

  listSubvolumes(): Promise<SubvolumeInfo[]> {
    return this.run(() => listSubvolumes(this.info));
  }

  getDefaultSubvolume(): Promise<bigint> {
    return this.run(() => defaultSubvolume(this.info));
  }

  /**
   * Resolves `path` (absolute from this view's base subvolume; relative paths
   * are taken from it too) following symlinks in the middle, and in the last
   * component when `follow` is set. Symlink targets that are absolute resolve
   * from this view's base subvolume, as they would in a mount of it.
   */
  async resolve(path: string, follow = false): Promise<Resolved> {
    return this.run(async () => {
      const chain = await this.walk(path, follow);
      return { ...chain[chain.length - 1]!, path };
    });
  }

  /**
   * Like resolve(), but returns every directory passed on the way: the base
   * subvolume's root first, the resolved inode last. After symlinks and
   * `..` are taken, this is the inode's real ancestry (what the kernel's
   * rename checks for loops). Call inside run().
   */
  protected async walk(path: string, follow = false): Promise<Resolved[]> {
    if (typeof path !== 'string') throw new BtrfsError('EINVAL', 'path must be a string');
    const baseRoot = await this.rootOfNow(this.base, path);
    const base: Resolved = { path, subvol: this.base, root: baseRoot, ino: ROOT_DIR_INO, item: await readInodeItem(this.info, baseRoot, ROOT_DIR_INO, path) };
    return walkPath(path, base, {
      child: (dir, name) => this.lookupEntry(dir, name, path),
      target: (link) => this.symlinkTarget(link.root, link.ino, link.item, path),
    }, follow);
  }

  /**
   * Follows a directory entry's location from the resolved directory holding
   * it: into a subvolume (ROOT_ITEM location) when the parent links it, to the
   * kernel's empty placeholder when it does not, else to the inode.
   */
  private async follow(dir: Resolved, location: Key, path: string): Promise<Resolved> {
    if (location.type === KEY.ROOT_ITEM) {
      const child = location.objectid;
      const r = (await hasRootRef(this.info, dir.subvol, child)) ? await this.info.findRoot(child) : undefined;
      if (r && r.item.refs > 0) {
        this.roots.set(child, r.loc);
        const ino = r.item.root_dirid || ROOT_DIR_INO;
        return { path, subvol: child, root: r.loc, ino, item: await readInodeItem(this.info, r.loc, ino, path) };
      }
      return { path, subvol: dir.subvol, root: dir.root, ino: EMPTY_SUBVOL_DIR_INO, item: placeholderInodeItem(dir.item), placeholder: true };
    }
    const r: Resolved = { path, subvol: dir.subvol, root: dir.root, ino: location.objectid, item: await readInodeItem(this.info, dir.root, location.objectid, path) };
    await this.checkDirParent(dir, r);
    return r;
  }

  private statOf(r: Resolved): Stats {
    return new Stats(r.subvol, r.ino, r.item, this.info.sectorsize);
  }

  async lstat(path: string): Promise<Stats> {
    return this.run(async () => {
      return this.statOf(await this.resolve(path, false));
    });
  }

  async stat(path: string): Promise<Stats> {
    return this.run(async () => {
      return this.statOf(await this.resolve(path, true));
    });
  }

  async exists(path: string): Promise<boolean> {
    return this.run(async () => {
      try {
        await this.resolve(path, false);
        return true;
      } catch (e) {
        if (e instanceof BtrfsError && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return false;
        throw e;
      }
    });
  }

  /** Entries of a directory in readdir order (DIR_INDEX order), without . and .. */
  async readdir(path: string): Promise<string[]>;
  async readdir(path: string, opts: { withFileTypes: true }): Promise<Dirent[]>;
  async readdir(path: string, opts: { withFileTypes?: boolean } = {}): Promise<string[] | Dirent[]> {
    return this.run(async () => {
      const r = await this.resolve(path, true);
      const ents = await this.direntsOf(r);
      return opts.withFileTypes ? ents : ents.map((e) => e.name);
    });
  }

  /** Directory entries of an already resolved directory. */
  async direntsOf(r: Resolved): Promise<Dirent[]> {
    return this.run(async () => {
      if ((r.item.mode & S_IFMT) !== S_IFDIR) throw new BtrfsError('ENOTDIR', 'not a directory', { path: r.path, syscall: 'scandir' });
      if (r.placeholder) return [];
      const out: Dirent[] = [];
      for await (const e of listDir(this.info, r.root, r.ino)) {
        const isSub = e.location.type === KEY.ROOT_ITEM;
        out.push(new Dirent(e.name.toString('utf8'), FT_NAMES[e.type] ?? 'unknown', isSub ? ROOT_DIR_INO : e.location.objectid, isSub ? e.location.objectid : r.subvol, e.name));
      }
      return out;
    });
  }

  /**
   * Resolves an entry returned by direntsOf(dir) from the location it already
   * carries (no second lookup of the name).
   */
  async entry(dir: Resolved, d: Dirent): Promise<Resolved> {
    return this.run(async () => {
      const path = dir.path === '/' ? `/${d.name}` : `${dir.path}/${d.name}`;
      const location = d.subvol !== dir.subvol ? key(d.subvol, KEY.ROOT_ITEM, 0n) : key(d.ino, KEY.INODE_ITEM, 0n);
      return this.follow(dir, location, path);
    });
  }

  /**
   * A directory has exactly one name, and its INODE_REF names its parent.
   * An entry that leads to a directory whose INODE_REF points elsewhere is an
   * alias (the kernel refuses it: "detected aliased directory"); following it
   * could loop forever, e.g. an entry pointing back at an ancestor.
   */
  private async checkDirParent(parent: Resolved, child: Resolved): Promise<void> {
    if ((child.item.mode & S_IFMT) !== S_IFDIR || child.ino === ROOT_DIR_INO || child.subvol !== parent.subvol) return;
    const ref = await lookupItem(this.info.reader, child.root, key(child.ino, KEY.INODE_REF, parent.ino));
    if (!ref) {
      throw new BtrfsError('EUCLEAN', `directory ${child.ino} is linked from directory ${parent.ino}, but has no INODE_REF to it (aliased directory)`, {
        path: child.path, tree: child.subvol, key: key(child.ino, KEY.INODE_REF, parent.ino),
      });
    }
  }

  /** Resolves the child `name` of a resolved directory without re-walking the path. */
  async child(dir: Resolved, name: string): Promise<Resolved> {
    return this.run(async () => {
      return this.resolveFrom(dir, name);
    });
  }

  private async resolveFrom(dir: Resolved, name: string): Promise<Resolved> {
    const path = dir.path === '/' ? `/${name}` : `${dir.path}/${name}`;
    const r = await this.lookupEntry(dir, Buffer.from(name, 'utf8'), path);
    if (!r) throw new BtrfsError('ENOENT', 'no such file or directory', { path });
    return r;
  }

  /** The entry `name` of a resolved directory, followed; undefined when there is none (a placeholder has none). */
  private async lookupEntry(dir: Resolved, name: Buffer, path: string): Promise<Resolved | undefined> {
    const d = dir.placeholder ? undefined : await lookupName(this.info, dir.root, dir.ino, name);
    return d && this.follow(dir, d.location, path);
  }


  private async symlinkTarget(root: RootLocation, ino: bigint, item: InodeItem, path: string): Promise<Buffer> {
    if (item.size > BigInt(MAX_SYMLINK_BYTES)) {
      throw new BtrfsError('EUCLEAN', `symlink inode ${ino} has size ${item.size}, more than a target can be`, { path, tree: root.objectid });
    }
    return this.files.read(root, ino, 0, Number(item.size), path);
  }

  async readlink(path: string): Promise<string> {
    return this.run(async () => {
      const r = await this.resolve(path, false);
      if ((r.item.mode & S_IFMT) !== S_IFLNK) throw new BtrfsError('EINVAL', 'not a symbolic link', { path, syscall: 'readlink' });
      return (await this.symlinkTarget(r.root, r.ino, r.item, path)).toString('utf8');
    });
  }

  /** i_size as a JS number; EFBIG past 2^53 (no host file or buffer can hold that). */
  private sizeOf(r: Resolved): number {
    if (r.item.size > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new BtrfsError('EFBIG', `file size ${r.item.size} is beyond what can be read`, { path: r.path });
    }
    return Number(r.item.size);
  }

  private regular(r: Resolved, syscall: string): void {
    const t = r.item.mode & S_IFMT;
    if (t === S_IFDIR) throw new BtrfsError('EISDIR', 'illegal operation on a directory', { path: r.path, syscall });
    if (t !== S_IFREG) throw new BtrfsError('EINVAL', 'not a regular file', { path: r.path, syscall });
  }

  /** The whole file (following symlinks), as a Buffer or decoded string. */
  async readFile(path: string, opts?: BufferEncoding | { encoding?: BufferEncoding | null }): Promise<Buffer | string> {
    return this.run(async () => {
      const r = await this.resolve(path, true);
      this.regular(r, 'open');
      const size = this.sizeOf(r);
      if (size > MAX_BUFFER) {
        throw new BtrfsError('EFBIG', `file is ${size} bytes, too large for one buffer: use createReadStream() or read()`, { path, syscall: 'read' });
      }
      const data = await this.files.read(r.root, r.ino, 0, size, path);
      const enc = typeof opts === 'string' ? opts : opts?.encoding;
      return enc ? data.toString(enc) : data;
    });
  }

  /** Bytes [position, position+length) of a file, short at end of file like pread. */
  async read(path: string, position: number, length: number): Promise<Buffer> {
    return this.run(async () => {
      const r = await this.resolve(path, true);
      this.regular(r, 'read');
      if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0) {
        throw new BtrfsError('EINVAL', `bad range ${position}+${length}`, { path, syscall: 'read' });
      }
      const size = this.sizeOf(r);
      const start = Math.min(position, size);
      const end = Math.min(position + length, size);
      if (end - start > MAX_BUFFER) throw new BtrfsError('EFBIG', `read of ${end - start} bytes is too large for one buffer`, { path, syscall: 'read' });
      return this.files.read(r.root, r.ino, start, end, path);
    });
  }

  /** Data and hole pieces of a resolved regular file, in order, for streaming and sparse extraction. */
  pieces(r: Resolved, start = 0, end?: number): AsyncGenerator<FilePiece> {
    const size = this.sizeOf(r);
    return this.stepwise(this.files.pieces(r.root, r.ino, start, Math.min(end ?? size, size), r.path));
  }

  /** `gen` with each step run as one operation (see run()): a writer's changes may land between steps. */
  private async *stepwise<T>(gen: AsyncGenerator<T>): AsyncGenerator<T> {
    let done = false;
    try {
      for (;;) {
        const step = await this.run(() => gen.next());
        if (step.done) {
          done = true;
          return;
        }
        yield step.value;
      }
    } finally {
      if (!done) await gen.return(undefined);
    }
  }

  /** A readable stream of a file's bytes ([start, end] inclusive, like fs.createReadStream). */
  createReadStream(path: string, opts: { start?: number; end?: number } = {}): Readable {
    const self = this;
    async function* gen(): AsyncGenerator<Buffer> {
      const r = await self.resolve(path, true);
      self.regular(r, 'open');
      const start = opts.start ?? 0;
      const end = opts.end === undefined ? Number(r.item.size) : opts.end + 1;
      for await (const p of self.pieces(r, start, end)) {
        if (p.kind === 'data') yield p.data;
        else {
          for (let off = 0; off < p.length; off += 1 << 20) yield Buffer.alloc(Math.min(1 << 20, p.length - off));
        }
      }
    }
    return Readable.from(gen(), { objectMode: false });
  }

  async listxattr(path: string): Promise<string[]> {
    return this.run(async () => {
      const r = await this.resolve(path, false);
      if (r.placeholder) return [];
      return (await listXattrs(this.info, r.root, r.ino)).map((x) => x.name);
    });
  }

  /** All xattrs with values, in one walk. */
  async xattrs(path: string | Resolved): Promise<{ name: string; value: Buffer }[]> {
    return this.run(async () => {
      const r = typeof path === 'string' ? await this.resolve(path, false) : path;
      if (r.placeholder) return [];
      return listXattrs(this.info, r.root, r.ino);
    });
  }

  async getxattr(path: string, name: string): Promise<Buffer> {
    return this.run(async () => {
      const r = await this.resolve(path, false);
      const v = r.placeholder ? undefined : await getXattr(this.info, r.root, r.ino, name);
      if (v === undefined) throw new BtrfsError('ENODATA', `no xattr ${name}`, { path, syscall: 'getxattr' });
      return v;
    });
  }

  /** Stats of a resolved inode. */
  stats(r: Resolved): Stats {
    return this.statOf(r);
  }
}
