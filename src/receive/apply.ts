/**
 * `btrfs receive` into an image: each stream of the input becomes a new
 * read-only subvolume in the destination directory, with received_uuid and
 * stransid set so that later incremental streams find it as their parent.
 *
 * How it follows btrfs-progs' receive, and where it is stricter:
 * - SUBVOL creates an empty subvolume; SNAPSHOT snapshots the parent found
 *   by received uuid, else by uuid (the stream's clone uuid), and refuses a
 *   parent whose stransid (or ctransid) is not the one the stream was made
 *   against: a parent changed since it was received would give garbage.
 * - Paths are the stream's bytes, resolved inside the subvolume being
 *   received without following symlinks and without entering other
 *   subvolumes: a stream can name nothing outside its own subvolume.
 *   (parse.ts has already refused absolute paths and '.'/'..' components.)
 * - New inodes start as progs makes them (files 0600, directories 0700,
 *   devices with no permission bits) and the stream's chown/chmod/utimes
 *   follow. UTIMES also sets ctime, which a kernel receive cannot do from
 *   user space: ours keeps the sender's.
 * - CLONE shares extents (a reflink) wherever the kernel's clone ioctl
 *   would, from the subvolume being received or from any other found by
 *   uuid; ENCODED_WRITE is decompressed and written; FALLOCATE keeps content
 *   and size semantics (holes read as zeros; no unwritten extent is made);
 *   FILEATTR is ignored, as progs ignores it; UPDATE_EXTENT (--no-data) has
 *   nothing to apply; ENABLE_VERITY is refused (ENOTSUP).
 * - All of one subvolume happens in one transaction, committed at its END:
 *   a stream that is malformed, truncated or fails to apply leaves the image
 *   exactly at its last commit. Subvolumes completed before it stay.
 */
import { BtrfsError, isBtrfsError } from '../util/errors.js';
import { KEY, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFIFO, S_IFSOCK, ROOT_DIR_INO, ROOT_FLAG, FEATURE_INCOMPAT } from '../format/constants.js';
import { key } from '../format/key.js';
import type { Timespec } from '../format/layout.js';
import { encodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { ENCODED_IO_COMPRESSION } from '../format/send-constants.js';
import { describeCommand } from '../format/send-stream.js';
import { decompressExtent, COMPRESSION } from '../util/compress/index.js';
import type { Transaction } from '../transaction/transaction.js';
import type { FsWriter } from '../transaction/writer.js';
import type { Filesystem } from '../fs/filesystem.js';
import { kernelRdev, type WritableFilesystem } from '../fs/writable.js';
import {
  Counters, LINK_MAX, addLink, readInode, writeInode, newInode, findEntry, ftOf, findXattr, setXattr, removeXattr, maxXattrBytes,
} from '../fs/namespace.js';
import { dropLink, renameEntry } from '../fs/link-ops.js';
import { writeFileData, truncateFileData, writeSymlinkTarget, fileWriter, type FileDataWriter } from '../fs/file-write.js';
import { type FileCtx, dropRange, fillHoles, sectorOf, roundUp, roundDown } from '../fs/file-extents.js';
import { cloneRange } from '../fs/clone-range.js';
import { inheritFrom, applyInheritance } from '../fs/inherit.js';
import { createSubvolume, createSnapshot, type SubvolLink } from '../subvol/create.js';
import { addUuidEntry, subvolumesByUuid } from '../subvol/uuid-tree.js';
import { readOps, type SendOp } from './parse.js';

export interface ReceiveOptions {
  /** stop after the first END command, as `btrfs receive -e` */
  honorEnd?: boolean;
  /** refuse commands larger than this many bytes (parse.ts default: 16 MiB) */
  maxCommandSize?: number;
  /** progress lines as btrfs receive prints them ("At subvol NAME", "At snapshot NAME") */
  onLine?: (line: string) => void;
  /** called after each command applied (for progress displays) */
  onCommand?: (stats: ReceivedSubvolume) => void;
}

export interface ReceivedSubvolume {
  /** the subvolume's name in the destination directory */
  name: string;
  id: bigint;
  kind: 'subvol' | 'snapshot';
  /** for a snapshot: the subvolume it was made from */
  parent?: bigint;
  /** the sender's uuid of the subvolume, now this one's received_uuid */
  receivedUuid: Buffer;
  stransid: bigint;
  commands: number;
  /** file data written (write and encoded_write, after decompression) */
  bytesWritten: number;
  /** file data shared with other files by clone */
  bytesCloned: number;
  /** clone ranges that had to be copied (unaligned, inline) */
  bytesCopied: number;
  /** commands with nothing to apply: update_extent, fileattr */
  ignored: number;
}

const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;

const show = (b: Buffer): string => JSON.stringify(b.toString('utf8'));

function safeNumber(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new BtrfsError('EFBIG', `${what} ${v} is larger than this implementation handles`);
  return Number(v);
}

/** The btrfs compression type and sector size an encoded write's data is in. */
function encodedFormat(c: number): { type: number; sector?: number } {
  if (c === ENCODED_IO_COMPRESSION.ZLIB) return { type: COMPRESSION.ZLIB };
  if (c === ENCODED_IO_COMPRESSION.ZSTD) return { type: COMPRESSION.ZSTD };
  if (c >= ENCODED_IO_COMPRESSION.LZO_4K && c <= ENCODED_IO_COMPRESSION.LZO_64K) return { type: COMPRESSION.LZO, sector: 4096 << (c - ENCODED_IO_COMPRESSION.LZO_4K) };
  return { type: COMPRESSION.NONE };
}

interface Target { dir: bigint; name: Buffer; ino: bigint; item: InodeItem }

/** One subvolume being received: its tree, and the transaction holding all of it until END. */
class SubvolumeReceiver {
  private readonly counters = new Counters();
  /** directory path (latin1 of its bytes) -> inode, forgotten whenever a directory may have moved */
  private dirs = new Map<string, bigint>();
  private open: { path: string; ctx: FileCtx; writer: FileDataWriter; next: number } | undefined;
  private readonly noHoles: boolean;

  constructor(
    private readonly t: Transaction,
    private readonly tree: bigint,
    readonly stats: ReceivedSubvolume,
    private readonly now: () => Timespec,
    private readonly owner: { uid: number; gid: number },
  ) {
    this.noHoles = (t.incompat & FEATURE_INCOMPAT.NO_HOLES) !== 0n;
  }

  private ctx(ino: bigint, item: InodeItem, tree = this.tree): FileCtx {
    return { txn: this.t, subvol: tree, ino, item, noHoles: this.noHoles };
  }

  /** The directory holding the last component of `p`, in `tree`, and that name. */
  private async parent(p: Buffer, tree = this.tree): Promise<{ dir: bigint; name: Buffer }> {
    const cut = p.lastIndexOf(0x2f);
    const name = cut < 0 ? p : p.subarray(cut + 1);
    if (cut < 0) return { dir: ROOT_DIR_INO, name };
    const dirPath = p.subarray(0, cut);
    const cacheKey = tree === this.tree ? dirPath.toString('latin1') : undefined;
    const hit = cacheKey !== undefined ? this.dirs.get(cacheKey) : undefined;
    if (hit !== undefined) return { dir: hit, name };
    let dir = ROOT_DIR_INO;
    let start = 0;
    while (start <= dirPath.length) {
      let end = dirPath.indexOf(0x2f, start);
      if (end < 0) end = dirPath.length;
      const comp = dirPath.subarray(start, end);
      const d = await findEntry(this.t, tree, dir, comp);
      const upTo = dirPath.subarray(0, end);
      if (!d) throw new BtrfsError('ENOENT', `${show(upTo)} does not exist`);
      if (d.location.type !== KEY.INODE_ITEM) throw new BtrfsError('EXDEV', `${show(upTo)} is another subvolume: a stream stays inside its own`);
      const item = await readInode(this.t, tree, d.location.objectid);
      const type = item.mode & S_IFMT;
      if (type === S_IFLNK) throw new BtrfsError('ENOTDIR', `${show(upTo)} is a symlink: receive never follows one`);
      if (type !== S_IFDIR) throw new BtrfsError('ENOTDIR', `${show(upTo)} is not a directory`);
      dir = d.location.objectid;
      start = end + 1;
    }
    if (cacheKey !== undefined) {
      if (this.dirs.size > 65536) this.dirs.clear();
      this.dirs.set(cacheKey, dir);
    }
    return { dir, name };
  }

  /** The inode `p` names ('' is the subvolume's top directory). */
  private async target(p: Buffer, tree = this.tree): Promise<Target> {
    if (p.length === 0) return { dir: ROOT_DIR_INO, name: p, ino: ROOT_DIR_INO, item: await readInode(this.t, tree, ROOT_DIR_INO) };
    const { dir, name } = await this.parent(p, tree);
    const d = await findEntry(this.t, tree, dir, name);
    if (!d) throw new BtrfsError('ENOENT', `${show(p)} does not exist`);
    if (d.location.type !== KEY.INODE_ITEM) throw new BtrfsError('EXDEV', `${show(p)} is another subvolume: a stream stays inside its own`);
    return { dir, name, ino: d.location.objectid, item: await readInode(this.t, tree, d.location.objectid) };
  }

  private async regular(p: Buffer, tree = this.tree): Promise<Target> {
    const r = await this.target(p, tree);
    const type = r.item.mode & S_IFMT;
    if (type === S_IFDIR) throw new BtrfsError('EISDIR', `${show(p)} is a directory`);
    if (type !== S_IFREG) throw new BtrfsError('EINVAL', `${show(p)} is not a regular file`);
    return r;
  }

  /** Ends a run of sequential writes: its extents go in place and the inode item is written. */
  async flush(): Promise<void> {
    const o = this.open;
    if (!o) return;
    this.open = undefined;
    await o.writer.end();
    await writeInode(this.t, this.tree, o.ctx.ino, o.ctx.item);
  }

  private async create(p: Buffer, mode: number, rdev = 0n): Promise<{ ino: bigint; item: InodeItem }> {
    const { dir, name } = await this.parent(p);
    if (await findEntry(this.t, this.tree, dir, name)) throw new BtrfsError('EEXIST', `${show(p)} already exists`);
    const now = this.now();
    const ino = await this.counters.nextIno(this.t, this.tree);
    // the modes are btrfs receive's own (its later CHMOD sets the sent one), given with no umask
    const inh = await inheritFrom(this.t, this.tree, dir, mode, 0);
    const item = newInode(this.t, inh.mode, this.owner.uid, this.owner.gid, now, rdev);
    await this.t.insert(this.tree, key(ino, KEY.INODE_ITEM, 0n), encodeInodeItem(item));
    await addLink(this.t, this.counters, this.tree, dir, name, ino, ftOf(mode), now);
    await applyInheritance(this.t, this.tree, ino, inh);
    return { ino, item };
  }

  /** Changes an inode's item: `change` edits it, its ctime moves unless the change set one. */
  private async attr(p: Buffer, change: (item: InodeItem) => void): Promise<void> {
    const r = await this.target(p);
    const item = r.item;
    item.ctime = this.now();
    change(item);
    await writeInode(this.t, this.tree, r.ino, item);
  }

  /** The tree of a clone source: this subvolume when the uuid is the stream's own, else found by uuid. */
  private cloneTree: (uuid: Buffer, ctransid: bigint) => Promise<bigint> = async () => this.tree;
  setCloneResolver(fn: (uuid: Buffer, ctransid: bigint) => Promise<bigint>): void { this.cloneTree = fn; }

  async apply(op: SendOp): Promise<void> {
    const s = this.stats;
    s.commands++;
    if (op.op === 'write') {
      const key = op.path.toString('latin1');
      const offset = safeNumber(op.offset, 'write offset');
      if (this.open && (this.open.path !== key || this.open.next !== offset)) await this.flush();
      if (!this.open) {
        const r = await this.regular(op.path);
        const ctx = this.ctx(r.ino, r.item);
        this.open = { path: key, ctx, writer: fileWriter(ctx, offset), next: offset };
      }
      await this.open.writer.write(op.data);
      this.open.next += op.data.length;
      s.bytesWritten += op.data.length;
      return;
    }
    await this.flush();
    const t = this.t;
    const tree = this.tree;
    switch (op.op) {
      case 'subvol':
      case 'snapshot':
        throw new BtrfsError('EINVAL', 'subvol/snapshot commands are the receiver\'s, not a subvolume\'s');
      case 'mkfile':
        await this.create(op.path, S_IFREG | 0o600);
        return;
      case 'mkdir':
        await this.create(op.path, S_IFDIR | 0o700);
        return;
      case 'mkfifo':
        await this.create(op.path, S_IFIFO | 0o600);
        return;
      case 'mksock':
        await this.create(op.path, S_IFSOCK | 0o600);
        return;
      case 'mknod': {
        const type = Number(op.mode) & S_IFMT;
        await this.create(op.path, type, type === S_IFIFO || type === S_IFSOCK ? 0n : kernelRdev(op.rdev));
        return;
      }
      case 'symlink': {
        const { ino, item } = await this.create(op.path, S_IFLNK | 0o777);
        await writeSymlinkTarget(this.ctx(ino, item), op.target);
        await writeInode(t, tree, ino, item);
        return;
      }
      case 'rename': {
        const from = await this.parent(op.path);
        const to = await this.parent(op.to);
        this.dirs.clear();
        await renameEntry(t, this.counters, tree, { ...from, path: op.path.toString() }, { ...to, path: op.to.toString() }, this.now(), this.noHoles);
        return;
      }
      case 'link': {
        const src = await this.target(op.target);
        if ((src.item.mode & S_IFMT) === S_IFDIR) throw new BtrfsError('EPERM', `${show(op.target)} is a directory: no hard links to one`);
        const { dir, name } = await this.parent(op.path);
        if (await findEntry(t, tree, dir, name)) throw new BtrfsError('EEXIST', `${show(op.path)} already exists`);
        if (src.item.nlink >= LINK_MAX) throw new BtrfsError('EMLINK', `${show(op.target)} has too many links`);
        const now = this.now();
        await addLink(t, this.counters, tree, dir, name, src.ino, ftOf(src.item.mode), now);
        const item = await readInode(t, tree, src.ino);
        item.nlink++;
        item.ctime = now;
        await writeInode(t, tree, src.ino, item);
        return;
      }
      case 'unlink': {
        const r = await this.target(op.path);
        if ((r.item.mode & S_IFMT) === S_IFDIR) throw new BtrfsError('EISDIR', `${show(op.path)} is a directory`);
        await dropLink(t, tree, r.dir, r.name, r.ino, this.now(), this.noHoles);
        return;
      }
      case 'rmdir': {
        const r = await this.target(op.path);
        if ((r.item.mode & S_IFMT) !== S_IFDIR) throw new BtrfsError('ENOTDIR', `${show(op.path)} is not a directory`);
        if (r.item.size !== 0n) throw new BtrfsError('ENOTEMPTY', `${show(op.path)} is not empty`);
        this.dirs.clear();
        await dropLink(t, tree, r.dir, r.name, r.ino, this.now(), this.noHoles);
        return;
      }
      case 'set_xattr': {
        const r = await this.target(op.path);
        if (op.name.length + op.data.length > maxXattrBytes(t.nodesize)) throw new BtrfsError('ENOSPC', `xattr ${show(op.name)} of ${op.data.length} bytes does not fit a tree leaf`);
        await setXattr(t, tree, r.ino, op.name, op.data);
        r.item.ctime = this.now();
        await writeInode(t, tree, r.ino, r.item);
        return;
      }
      case 'remove_xattr': {
        const r = await this.target(op.path);
        if (!(await findXattr(t, tree, r.ino, op.name))) throw new BtrfsError('ENODATA', `${show(op.path)} has no xattr ${show(op.name)}`);
        await removeXattr(t, tree, r.ino, op.name);
        r.item.ctime = this.now();
        await writeInode(t, tree, r.ino, r.item);
        return;
      }
      case 'truncate': {
        const r = await this.regular(op.path);
        await truncateFileData(this.ctx(r.ino, r.item), safeNumber(op.size, 'truncate size'));
        await writeInode(t, tree, r.ino, r.item);
        return;
      }
      case 'chmod':
        await this.attr(op.path, (it) => { it.mode = (it.mode & S_IFMT) | (Number(op.mode) & 0o7777); });
        return;
      case 'chown':
        await this.attr(op.path, (it) => { it.uid = Number(op.uid); it.gid = Number(op.gid); });
        return;
      case 'utimes':
        await this.attr(op.path, (it) => {
          it.atime = { sec: op.atime.sec, nsec: op.atime.nsec };
          it.mtime = { sec: op.mtime.sec, nsec: op.mtime.nsec };
          it.ctime = { sec: op.ctime.sec, nsec: op.ctime.nsec };
        });
        return;
      case 'clone': {
        const dst = await this.regular(op.path);
        const srcTree = await this.cloneTree(op.cloneUuid, op.cloneCtransid);
        const src = await this.regular(op.clonePath, srcTree);
        // the same inode on both sides must be one item, or the second write-back would undo the first
        const srcItem = srcTree === tree && src.ino === dst.ino ? dst.item : src.item;
        const got = await cloneRange(this.ctx(dst.ino, dst.item), safeNumber(op.offset, 'clone offset'),
          this.ctx(src.ino, srcItem, srcTree), safeNumber(op.cloneOffset, 'clone source offset'), safeNumber(op.len, 'clone length'));
        await writeInode(t, tree, dst.ino, dst.item);
        s.bytesCloned += got.shared;
        s.bytesCopied += got.copied;
        return;
      }
      case 'encoded_write': {
        const r = await this.regular(op.path);
        const fmt = encodedFormat(op.compression);
        const ulen = safeNumber(op.unencodedLen, 'unencoded length');
        const plain = fmt.type === COMPRESSION.NONE ? op.data : decompressExtent(fmt.type, op.data, ulen, fmt.sector ?? sectorOf(this.ctx(r.ino, r.item)));
        if (plain.length < ulen && fmt.type === COMPRESSION.NONE) throw new BtrfsError('EINVAL', `encoded write holds ${plain.length} bytes, its header says ${ulen}`);
        const from = safeNumber(op.unencodedOffset, 'unencoded offset');
        const data = plain.subarray(from, from + safeNumber(op.unencodedFileLen, 'unencoded file length'));
        const ctx = this.ctx(r.ino, r.item);
        await writeFileData(ctx, safeNumber(op.offset, 'encoded write offset'), data);
        await writeInode(t, tree, r.ino, r.item);
        s.bytesWritten += data.length;
        return;
      }
      case 'fallocate': {
        const r = await this.regular(op.path);
        const ctx = this.ctx(r.ino, r.item);
        const off = safeNumber(op.offset, 'fallocate offset');
        const len = safeNumber(op.size, 'fallocate length');
        if (op.mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) throw new BtrfsError('EOPNOTSUPP', `fallocate mode 0x${op.mode.toString(16)}`);
        if (op.mode & FALLOC_FL_PUNCH_HOLE) {
          if (!(op.mode & FALLOC_FL_KEEP_SIZE)) throw new BtrfsError('EOPNOTSUPP', 'punching a hole needs KEEP_SIZE');
          await this.punchHole(ctx, off, Math.min(off + len, Number(r.item.size)));
        } else if (!(op.mode & FALLOC_FL_KEEP_SIZE) && off + len > Number(r.item.size)) {
          // what reads back is zeros either way; no unwritten extent is kept
          await truncateFileData(ctx, off + len);
        }
        await writeInode(t, tree, r.ino, r.item);
        return;
      }
      case 'update_extent':
      case 'fileattr':
        s.ignored++;
        return;
      case 'enable_verity':
        throw new BtrfsError('ENOTSUP', `${show(op.path)}: fs-verity is not supported by tsbtrfs`);
      case 'end':
      case 'unknown':
        return;
    }
  }

  /** Zeroes [a, b): whole sectors lose their extents, partial ones are rewritten with zeros. */
  private async punchHole(ctx: FileCtx, a: number, b: number): Promise<void> {
    if (b <= a) return;
    const sec = sectorOf(ctx);
    const lo = roundUp(a, sec);
    const hi = roundDown(b, sec);
    if (lo >= hi) {
      await writeFileData(ctx, a, Buffer.alloc(b - a));
      return;
    }
    if (a < lo) await writeFileData(ctx, a, Buffer.alloc(lo - a));
    if (hi < b) await writeFileData(ctx, hi, Buffer.alloc(b - hi));
    await dropRange(ctx, lo, hi);
    await fillHoles(ctx, lo, hi);
  }
}

/** Where the destination directory is, as a place to link new subvolumes. */
async function destination(view: Filesystem, dest: string): Promise<{ tree: bigint; dir: bigint }> {
  const r = await view.resolve(dest, true);
  if ((r.item.mode & S_IFMT) !== S_IFDIR) throw new BtrfsError('ENOTDIR', 'the destination is not a directory', { path: dest });
  if (r.placeholder) throw new BtrfsError('EPERM', 'the destination is an unlinked subvolume placeholder', { path: dest });
  return { tree: r.subvol, dir: r.ino };
}

/**
 * The subvolume a stream refers to by `uuid`: received from it first (a
 * chain of received snapshots), else the subvolume itself (receiving on the
 * filesystem it was sent from). Its stransid (resp. ctransid) must be the
 * stream's `ctransid`.
 */
async function findByUuid(t: Transaction, uuid: Buffer, ctransid: bigint, what: string): Promise<bigint> {
  const hex = uuid.toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
  const seen: string[] = [];
  for (const [type, field] of [[KEY.UUID_KEY_RECEIVED_SUBVOL, 'stransid'], [KEY.UUID_KEY_SUBVOL, 'ctransid']] as const) {
    for (const id of await subvolumesByUuid(t, uuid, type)) {
      const got = await t.rootItem(id).catch((e: unknown) => { if (isBtrfsError(e, 'ENOENT')) return undefined; throw e; });
      if (!got || got.item.refs === 0 || (got.item.flags & ROOT_FLAG.SUBVOL_DEAD)) continue;
      if (got.item[field] === ctransid) return id;
      seen.push(`subvolume ${id} has ${field} ${got.item[field]}`);
    }
  }
  throw new BtrfsError('ENOENT', `cannot find ${what} ${hex} with transid ${ctransid}${seen.length ? ` (${seen.join('; ')}: changed since the stream was made)` : ''}`);
}

/**
 * Receives every stream in `source` into directory `dest` of the image.
 * Returns the subvolumes made, in order. On an error the subvolume being
 * received is dropped whole (the image is at its last commit); those before
 * it stay, and the error says which command failed and why.
 */
export async function receive(fs: WritableFilesystem, dest: string, source: AsyncIterable<Buffer | Uint8Array>, opts: ReceiveOptions = {}): Promise<ReceivedSubvolume[]> {
  return fs.exclusive(async (writer, view) => receiveWith(writer, await destination(await view(), dest), source, opts));
}

async function receiveWith(writer: FsWriter, dest: { tree: bigint; dir: bigint }, source: AsyncIterable<Buffer | Uint8Array>, opts: ReceiveOptions): Promise<ReceivedSubvolume[]> {
  const done: ReceivedSubvolume[] = [];
  let cur: { rx: SubvolumeReceiver; uuid: Buffer } | undefined;
  let lastOp: SendOp | undefined;
  const owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  /** The subvolume is complete: received uuid, stransid and read-only set, all of it committed. */
  const finish = async (): Promise<void> => {
    const c = cur!;
    await c.rx.flush();
    const s = c.rx.stats;
    const t = writer.transaction();
    const { item } = await t.rootItem(s.id);
    await t.setRootItem(s.id, {
      received_uuid: Buffer.from(c.uuid), stransid: s.stransid, rtransid: t.generation, rtime: writer.now(),
      stime: { sec: 0n, nsec: 0 }, flags: item.flags | ROOT_FLAG.SUBVOL_RDONLY,
    });
    await addUuidEntry(t, c.uuid, KEY.UUID_KEY_RECEIVED_SUBVOL, s.id);
    await writer.commit();
    done.push(s);
    cur = undefined;
  };
  // anything uncommitted belongs to an earlier caller: make it durable first, so an abort here drops only ours
  await writer.commit();
  try {
    for await (const op of readOps(source, { maxCommandSize: opts.maxCommandSize, multiStream: !opts.honorEnd })) {
      if (op.op === 'stream') continue;
      lastOp = op;
      if (op.op === 'subvol' || op.op === 'snapshot') {
        // `btrfs send -e A B` puts B's subvol command right after A's last one, with no END between
        if (cur) await finish();
        const t = writer.transaction();
        const link: SubvolLink = { parentTree: dest.tree, parentDir: dest.dir, name: op.path };
        const now = writer.now();
        const stats: ReceivedSubvolume = {
          name: op.path.toString(), id: 0n, kind: op.op, receivedUuid: op.uuid, stransid: op.ctransid,
          commands: 1, bytesWritten: 0, bytesCloned: 0, bytesCopied: 0, ignored: 0,
        };
        if (await findEntry(t, dest.tree, dest.dir, op.path)) throw new BtrfsError('EEXIST', `${show(op.path)} already exists in the destination`);
        if (op.op === 'subvol') {
          opts.onLine?.(`At subvol ${op.path.toString()}`);
          stats.id = await createSubvolume(t, link, now, { uid: owner.uid, gid: owner.gid });
        } else {
          opts.onLine?.(`At snapshot ${op.path.toString()}`);
          const parent = await findByUuid(t, op.cloneUuid, op.cloneCtransid, 'parent subvolume');
          stats.parent = parent;
          stats.id = await createSnapshot(t, parent, link, now);
        }
        const rx = new SubvolumeReceiver(t, stats.id, stats, () => writer.now(), owner);
        const ownUuid = op.uuid;
        rx.setCloneResolver(async (uuid, ctransid) => (uuid.equals(ownUuid) ? stats.id : findByUuid(t, uuid, ctransid, 'clone source subvolume')));
        cur = { rx, uuid: op.uuid };
        continue;
      }
      if (!cur) throw new BtrfsError('EINVAL', 'a command before any subvol or snapshot command');
      if (op.op === 'end') {
        cur.rx.stats.commands++;
        await finish();
        if (opts.honorEnd) break;
        continue;
      }
      await cur.rx.apply(op);
      opts.onCommand?.(cur.rx.stats);
    }
    if (!lastOp) throw new BtrfsError('EINVAL', 'empty stream: no subvolume to receive');
    return done;
  } catch (e) {
    if (writer.dirty) await writer.abort();
    const where = lastOp && cur ? `${describeCommand({ cmd: lastOp.cmd, offset: lastOp.streamOffset, index: lastOp.index })} ` : '';
    const lost = cur ? `; nothing of subvolume ${show(Buffer.from(cur.rx.stats.name))} was kept, the image is at its last commit` : '';
    if (isBtrfsError(e)) throw new BtrfsError(e.code, `receive: ${where}${e.message.replace(/^[A-Z0-9]+: /, '')}${lost}`, { cause: e });
    throw e;
  }
}
