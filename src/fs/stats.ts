/**
 * Stats shaped like node's fs.Stats (numbers where node has numbers), with
 * nanosecond timestamps as bigints (node's BigIntStats names: atimeNs ...)
 * and the btrfs fields a tool wants (subvolume, generation, flags).
 */
import { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK } from '../format/constants.js';
import type { InodeItem } from '../format/items/inode-item.js';
import type { Timespec } from '../format/layout.js';

export function timespecNs(t: Timespec): bigint {
  return t.sec * 1_000_000_000n + BigInt(t.nsec);
}

/** The kernel stores rdev as its internal dev_t (major << 20 | minor). */
export function rdevParts(rdev: bigint): { major: number; minor: number } {
  return { major: Number((rdev >> 20n) & 0xfffn), minor: Number(rdev & 0xfffffn) };
}

/** glibc's makedev: the dev_t encoding stat(2) returns to user space. */
export function makedev(major: number, minor: number): number {
  return Number(
    (BigInt(minor) & 0xffn) | ((BigInt(major) & 0xfffn) << 8n) |
    ((BigInt(minor) & ~0xffn) << 12n) | ((BigInt(major) & ~0xfffn) << 32n),
  );
}

export class Stats {
  readonly dev: number;
  readonly ino: number;
  readonly mode: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  /** user-space dev_t, as node's fs.Stats.rdev */
  readonly rdev: number;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
  readonly size: number;
  readonly blksize: number;
  readonly blocks: number;
  readonly atimeNs: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  readonly birthtimeNs: bigint;
  /** subvolume (tree) id the inode lives in */
  readonly subvolume: bigint;
  readonly inode: bigint;
  readonly generation: bigint;
  readonly transid: bigint;
  readonly flags: bigint;
  readonly sequence: bigint;

  constructor(subvolume: bigint, ino: bigint, it: InodeItem, blksize: number) {
    this.subvolume = subvolume;
    this.inode = ino;
    this.dev = Number(subvolume);
    this.ino = Number(ino);
    this.mode = it.mode;
    this.nlink = it.nlink;
    this.uid = it.uid;
    this.gid = it.gid;
    const { major, minor } = rdevParts(it.rdev);
    this.rdevMajor = major;
    this.rdevMinor = minor;
    this.rdev = makedev(major, minor);
    this.size = Number(it.size);
    this.blksize = blksize;
    // The kernel rounds nbytes up to whole sectors (inline data and symlinks occupy a sector too).
    const sector = BigInt(blksize);
    // In 64 bits, as there: a wild nbytes near 2^64 wraps to few blocks rather than a huge inexact number.
    this.blocks = Number(BigInt.asUintN(64, (it.nbytes + sector - 1n) / sector * sector) >> 9n);
    this.atimeNs = timespecNs(it.atime);
    this.mtimeNs = timespecNs(it.mtime);
    this.ctimeNs = timespecNs(it.ctime);
    this.birthtimeNs = timespecNs(it.otime);
    this.generation = it.generation;
    this.transid = it.transid;
    this.flags = it.flags;
    this.sequence = it.sequence;
  }

  get atime(): Date { return new Date(Number(this.atimeNs / 1_000_000n)); }
  get mtime(): Date { return new Date(Number(this.mtimeNs / 1_000_000n)); }
  get ctime(): Date { return new Date(Number(this.ctimeNs / 1_000_000n)); }
  get birthtime(): Date { return new Date(Number(this.birthtimeNs / 1_000_000n)); }

  isFile(): boolean { return (this.mode & S_IFMT) === S_IFREG; }
  isDirectory(): boolean { return (this.mode & S_IFMT) === S_IFDIR; }
  isSymbolicLink(): boolean { return (this.mode & S_IFMT) === S_IFLNK; }
  isCharacterDevice(): boolean { return (this.mode & S_IFMT) === S_IFCHR; }
  isBlockDevice(): boolean { return (this.mode & S_IFMT) === S_IFBLK; }
  isFIFO(): boolean { return (this.mode & S_IFMT) === S_IFIFO; }
  isSocket(): boolean { return (this.mode & S_IFMT) === S_IFSOCK; }
  /** true for the root directory of a subvolume (or snapshot) */
  isSubvolume(): boolean { return this.isDirectory() && this.inode === 256n; }
}
