/**
 * Unlinking and renaming by directory inode and name bytes, with the checks
 * and errnos of the kernel's unlink/rename paths. The POSIX layer
 * (writable.ts) resolves string paths and calls these; receive resolves the
 * byte paths of a send stream and calls the same, so both judge a rename
 * the one way the kernel does.
 */
import { BtrfsError } from '../util/errors.js';
import { KEY, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, ROOT_DIR_INO } from '../format/constants.js';
import type { Timespec } from '../format/layout.js';
import type { Transaction } from '../transaction/transaction.js';
import { dropFileData } from './file-write.js';
import {
  type Counters, addLink, removeLink, readInode, writeInode, findEntry, ftOf, parentOf, deleteInodeItems,
} from './namespace.js';

/** Where an entry lives: a directory inode of a tree, and a name in it. */
export interface EntryAt { dir: bigint; name: Buffer; /** for messages */ path: string }

/** Drops one link of inode `ino` named `name` in `dir`; the last one takes the inode and its data with it. */
export async function dropLink(t: Transaction, tree: bigint, dir: bigint, name: Buffer, ino: bigint, now: Timespec, noHoles: boolean): Promise<void> {
  await removeLink(t, tree, dir, name, ino, now);
  const item = await readInode(t, tree, ino);
  const isDir = (item.mode & S_IFMT) === S_IFDIR;
  if (!isDir && item.nlink > 1) {
    item.nlink--;
    item.ctime = now;
    await writeInode(t, tree, ino, item);
    return;
  }
  const type = item.mode & S_IFMT;
  if (type === S_IFREG || type === S_IFLNK) await dropFileData({ txn: t, subvol: tree, ino, item, noHoles });
  await deleteInodeItems(t, tree, ino);
}

/** The directories from `dir` up to the subvolume root; EUCLEAN on a loop (a damaged tree). */
async function ancestors(t: Transaction, tree: bigint, dir: bigint, path: string): Promise<Set<bigint>> {
  const seen = new Set<bigint>();
  for (let d: bigint | undefined = dir; d !== undefined; d = d === ROOT_DIR_INO ? undefined : await parentOf(t, tree, d)) {
    if (seen.has(d)) throw new BtrfsError('EUCLEAN', `directory ${d} is its own ancestor`, { syscall: 'rename', path, tree });
    seen.add(d);
  }
  return seen;
}

/**
 * rename(2) inside one tree: moves the entry `from` to `to`, replacing what
 * `to` names when POSIX allows it (a file over a file, an empty directory
 * over an empty directory). Same inode on both sides: nothing happens.
 */
export async function renameEntry(t: Transaction, counters: Counters, tree: bigint, from: EntryAt, to: EntryAt, now: Timespec, noHoles: boolean): Promise<void> {
  const src = await findEntry(t, tree, from.dir, from.name);
  if (!src) throw new BtrfsError('ENOENT', 'no such file or directory', { syscall: 'rename', path: from.path });
  if (src.location.type === KEY.ROOT_ITEM) throw new BtrfsError('EXDEV', 'renaming a subvolume is not supported', { syscall: 'rename', path: from.path });
  const ino = src.location.objectid;
  const item = await readInode(t, tree, ino);
  const isDir = (item.mode & S_IFMT) === S_IFDIR;
  const dst = await findEntry(t, tree, to.dir, to.name);
  if (dst && dst.location.type === KEY.INODE_ITEM && dst.location.objectid === ino) return;
  // the kernel's lock_rename "trap": the source may not be an ancestor of the
  // target (EINVAL), nor the target an ancestor of the source (ENOTEMPTY),
  // both judged before the entries' types
  if (isDir && (await ancestors(t, tree, to.dir, to.path)).has(ino)) {
    throw new BtrfsError('EINVAL', 'cannot move a directory into itself', { syscall: 'rename', path: to.path });
  }
  if (dst && dst.location.type === KEY.INODE_ITEM && (await ancestors(t, tree, from.dir, from.path)).has(dst.location.objectid)) {
    throw new BtrfsError('ENOTEMPTY', 'directory not empty', { syscall: 'rename', path: to.path });
  }
  if (dst) {
    if (dst.location.type === KEY.ROOT_ITEM) throw new BtrfsError(isDir ? 'EPERM' : 'EISDIR', 'target is a subvolume', { syscall: 'rename', path: to.path });
    const ditem = await readInode(t, tree, dst.location.objectid);
    const dIsDir = (ditem.mode & S_IFMT) === S_IFDIR;
    if (isDir && !dIsDir) throw new BtrfsError('ENOTDIR', 'not a directory', { syscall: 'rename', path: to.path });
    if (!isDir && dIsDir) throw new BtrfsError('EISDIR', 'is a directory', { syscall: 'rename', path: to.path });
    if (dIsDir && ditem.size !== 0n) throw new BtrfsError('ENOTEMPTY', 'directory not empty', { syscall: 'rename', path: to.path });
    await dropLink(t, tree, to.dir, to.name, dst.location.objectid, now, noHoles);
  }
  await removeLink(t, tree, from.dir, from.name, ino, now);
  await addLink(t, counters, tree, to.dir, to.name, ino, ftOf(item.mode), now);
  const after = await readInode(t, tree, ino);
  after.ctime = now;
  await writeInode(t, tree, ino, after);
}
