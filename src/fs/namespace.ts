/**
 * Names and inodes in a subvolume tree, as the kernel's inode.c and
 * dir-item.c / inode-item.c keep them: an entry is a DIR_ITEM (by name
 * hash; colliding names share the item) plus a DIR_INDEX (by a per-directory
 * sequence, the readdir order), and the inode names its parent with an
 * INODE_REF (one item per parent directory, holding every name the inode
 * has there) or, once that item would outgrow a leaf, INODE_EXTREF items
 * (extended irefs). A directory's i_size is twice the length of its names.
 */
import { BtrfsError } from '../util/errors.js';
import { nameHash, extrefHash } from '../util/checksum.js';
import { KEY, FT, OBJ, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, FEATURE_INCOMPAT, ITEM_SIZE } from '../format/constants.js';
import { key, KEY_MAX, type Key } from '../format/key.js';
import type { Timespec } from '../format/layout.js';
import { maxItemSize } from '../format/tree-block-encode.js';
import { decodeInodeItem, encodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { decodeInodeRefs, encodeInodeRefs, inodeRefSize } from '../format/items/inode-ref.js';
import { decodeInodeExtrefs, encodeInodeExtrefs } from '../format/items/inode-extref.js';
import { decodeDirItems, encodeDirItems, dirItemSize, type DirItem } from '../format/items/dir-item.js';
import type { Transaction } from '../transaction/transaction.js';

export const LINK_MAX = 65535;

export function ftOf(mode: number): number {
  switch (mode & S_IFMT) {
    case S_IFREG: return FT.REG_FILE;
    case S_IFDIR: return FT.DIR;
    case S_IFLNK: return FT.SYMLINK;
    case S_IFCHR: return FT.CHRDEV;
    case S_IFBLK: return FT.BLKDEV;
    case S_IFIFO: return FT.FIFO;
    case S_IFSOCK: return FT.SOCK;
    default: return FT.UNKNOWN;
  }
}

/** Per-transaction memory of the next inode number and directory index (the kernel caches both). */
export class Counters {
  private inos = new Map<bigint, bigint>();
  private indexes = new Map<string, bigint>();

  async nextIno(txn: Transaction, tree: bigint): Promise<bigint> {
    let n = this.inos.get(tree);
    if (n === undefined) {
      const last = await txn.last(tree, key(OBJ.FIRST_FREE, 0, 0n), key(OBJ.LAST_FREE, 255, KEY_MAX.offset));
      n = (last ? last.key.objectid : OBJ.FIRST_FREE) + 1n;
    }
    if (n > OBJ.LAST_FREE) throw new BtrfsError('ENOSPC', 'no inode numbers left in this subvolume');
    this.inos.set(tree, n + 1n);
    return n;
  }

  async nextIndex(txn: Transaction, tree: bigint, dir: bigint): Promise<bigint> {
    const k = `${tree}:${dir}`;
    let n = this.indexes.get(k);
    if (n === undefined) {
      const last = await txn.last(tree, key(dir, KEY.DIR_INDEX, 0n), key(dir, KEY.DIR_INDEX, KEY_MAX.offset));
      n = last ? last.key.offset + 1n : 2n;
    }
    this.indexes.set(k, n + 1n);
    return n;
  }

  clear(): void {
    this.inos.clear();
    this.indexes.clear();
  }
}

export async function readInode(txn: Transaction, tree: bigint, ino: bigint): Promise<InodeItem> {
  const raw = await txn.lookup(tree, key(ino, KEY.INODE_ITEM, 0n));
  if (!raw) throw new BtrfsError('EUCLEAN', `inode ${ino} has no inode item`, { tree, key: key(ino, KEY.INODE_ITEM, 0n) });
  return decodeInodeItem(raw);
}

/** Writes an inode item back, stamping the transaction and bumping the change counter. */
export async function writeInode(txn: Transaction, tree: bigint, ino: bigint, item: InodeItem): Promise<void> {
  item.transid = txn.generation;
  item.sequence += 1n;
  await txn.update(tree, key(ino, KEY.INODE_ITEM, 0n), encodeInodeItem(item));
}

export function newInode(txn: Transaction, mode: number, uid: number, gid: number, now: Timespec, rdev = 0n): InodeItem {
  return {
    generation: txn.generation, transid: txn.generation, size: 0n, nbytes: 0n, block_group: 0n, nlink: 1, uid, gid, mode, rdev,
    flags: 0n, sequence: 1n, reserved: Buffer.alloc(32), atime: now, ctime: now, mtime: now, otime: now,
  };
}

/** The entry `name` of directory `dir`, or undefined. */
export async function findEntry(txn: Transaction, tree: bigint, dir: bigint, name: Buffer): Promise<DirItem | undefined> {
  const raw = await txn.lookup(tree, key(dir, KEY.DIR_ITEM, nameHash(name)));
  return raw ? decodeDirItems(raw).find((d) => d.name.equals(name)) : undefined;
}

/** Adds `entry` to the item at `k` (a new item, or one more name sharing the hash). */
export async function appendDirItem(txn: Transaction, tree: bigint, k: Key, entry: DirItem): Promise<void> {
  const raw = await txn.lookup(tree, k);
  if (!raw) {
    await txn.insert(tree, k, encodeDirItems([entry]));
    return;
  }
  const buf = encodeDirItems([...decodeDirItems(raw), entry]);
  if (buf.length > maxItemSize(txn.nodesize)) throw new BtrfsError('EOVERFLOW', 'too many names share this hash');
  await txn.resize(tree, k, buf.length);
  await txn.update(tree, k, buf);
}

/** Removes one name from a DIR_ITEM/XATTR_ITEM shared by colliding names, or the whole item. */
export async function removeFromDirItem(txn: Transaction, tree: bigint, k: Key, name: Buffer): Promise<void> {
  const raw = await txn.lookup(tree, k);
  if (!raw) throw new BtrfsError('EUCLEAN', `entry '${name.toString()}' missing`, { tree, key: k });
  const rest = decodeDirItems(raw).filter((d) => !d.name.equals(name));
  if (rest.length === 0) {
    await txn.delete(tree, k);
    return;
  }
  const buf = encodeDirItems(rest);
  await txn.resize(tree, k, buf.length);
  await txn.update(tree, k, buf);
}

/**
 * Links inode `ino` (type `ft`) into `dir` as `name`: DIR_ITEM, DIR_INDEX,
 * the inode's back reference, and the directory's size and times. The
 * caller checked that the name is free.
 */
export async function addLink(txn: Transaction, c: Counters, tree: bigint, dir: bigint, name: Buffer, ino: bigint, ft: number, now: Timespec): Promise<bigint> {
  const index = await c.nextIndex(txn, tree, dir);
  const entry: DirItem = { location: key(ino, KEY.INODE_ITEM, 0n), transid: txn.generation, type: ft, name, data: Buffer.alloc(0) };
  await appendDirItem(txn, tree, key(dir, KEY.DIR_ITEM, nameHash(name)), entry);
  await txn.insert(tree, key(dir, KEY.DIR_INDEX, index), encodeDirItems([entry]));
  await addInodeRef(txn, tree, ino, dir, index, name);
  const d = await readInode(txn, tree, dir);
  d.size += BigInt(name.length * 2);
  d.mtime = now;
  d.ctime = now;
  await writeInode(txn, tree, dir, d);
  return index;
}

export async function addInodeRef(txn: Transaction, tree: bigint, ino: bigint, dir: bigint, index: bigint, name: Buffer): Promise<void> {
  const k = key(ino, KEY.INODE_REF, dir);
  const raw = await txn.lookup(tree, k);
  if (!raw) {
    await txn.insert(tree, k, encodeInodeRefs([{ index, name }]));
    return;
  }
  const refs = [...decodeInodeRefs(raw), { index, name }];
  const size = refs.reduce((n, r) => n + inodeRefSize(r.name.length), 0);
  if (size <= maxItemSize(txn.nodesize) - ITEM_SIZE) {
    await txn.resize(tree, k, size);
    await txn.update(tree, k, encodeInodeRefs(refs));
    return;
  }
  // the ref item is full: the kernel moves on to extended refs (EMLINK without them)
  if (!(txn.incompat & FEATURE_INCOMPAT.EXTENDED_IREF)) throw new BtrfsError('EMLINK', 'too many links in one directory');
  const ek = key(ino, KEY.INODE_EXTREF, extrefHash(dir, name));
  const old = await txn.lookup(tree, ek);
  const ext = [...(old ? decodeInodeExtrefs(old) : []), { parent: dir, index, name }];
  const buf = encodeInodeExtrefs(ext);
  if (old) {
    await txn.resize(tree, ek, buf.length);
    await txn.update(tree, ek, buf);
  } else {
    await txn.insert(tree, ek, buf);
  }
}

/** Finds and removes the back reference of `ino` for `name` in `dir`; returns its directory index. */
async function removeInodeRef(txn: Transaction, tree: bigint, ino: bigint, dir: bigint, name: Buffer): Promise<bigint> {
  const k = key(ino, KEY.INODE_REF, dir);
  const raw = await txn.lookup(tree, k);
  if (raw) {
    const refs = decodeInodeRefs(raw);
    const i = refs.findIndex((r) => r.name.equals(name));
    if (i >= 0) {
      const index = refs[i]!.index;
      refs.splice(i, 1);
      if (refs.length === 0) await txn.delete(tree, k);
      else {
        const buf = encodeInodeRefs(refs);
        await txn.resize(tree, k, buf.length);
        await txn.update(tree, k, buf);
      }
      return index;
    }
  }
  const ek = key(ino, KEY.INODE_EXTREF, extrefHash(dir, name));
  const old = await txn.lookup(tree, ek);
  const ext = old ? decodeInodeExtrefs(old) : [];
  const j = ext.findIndex((r) => r.parent === dir && r.name.equals(name));
  if (j < 0) throw new BtrfsError('EUCLEAN', `inode ${ino} has no back reference for '${name.toString()}' in ${dir}`, { tree, key: k });
  const index = ext[j]!.index;
  ext.splice(j, 1);
  if (ext.length === 0) await txn.delete(tree, ek);
  else {
    const buf = encodeInodeExtrefs(ext);
    await txn.resize(tree, ek, buf.length);
    await txn.update(tree, ek, buf);
  }
  return index;
}

/** Unlinks `name` (pointing at inode `ino`) from `dir`: the reverse of addLink. */
export async function removeLink(txn: Transaction, tree: bigint, dir: bigint, name: Buffer, ino: bigint, now: Timespec): Promise<void> {
  const index = await removeInodeRef(txn, tree, ino, dir, name);
  await removeFromDirItem(txn, tree, key(dir, KEY.DIR_ITEM, nameHash(name)), name);
  await txn.delete(tree, key(dir, KEY.DIR_INDEX, index));
  const d = await readInode(txn, tree, dir);
  d.size -= BigInt(name.length * 2);
  d.mtime = now;
  d.ctime = now;
  await writeInode(txn, tree, dir, d);
}

/** The parent directory of directory `ino` (its only INODE_REF), or undefined for the root. */
export async function parentOf(txn: Transaction, tree: bigint, ino: bigint): Promise<bigint | undefined> {
  const it = await txn.last(tree, key(ino, KEY.INODE_REF, 0n), key(ino, KEY.INODE_REF, KEY_MAX.offset));
  if (!it || it.key.offset === ino) return undefined;
  return it.key.offset;
}

/** Deletes every remaining item of inode `ino` (its data must be dropped first). */
export async function deleteInodeItems(txn: Transaction, tree: bigint, ino: bigint): Promise<void> {
  const keys: Key[] = [];
  for await (const it of txn.iter(tree, key(ino, 0, 0n), key(ino, 255, KEY_MAX.offset))) keys.push(it.key);
  for (const k of keys) await txn.delete(tree, k);
}

/** The xattr item for `name`, if set. */
export async function findXattr(txn: Transaction, tree: bigint, ino: bigint, name: Buffer): Promise<DirItem | undefined> {
  const raw = await txn.lookup(tree, key(ino, KEY.XATTR_ITEM, nameHash(name)));
  return raw ? decodeDirItems(raw).find((d) => d.name.equals(name)) : undefined;
}

/** The largest name + value an xattr item can hold (the kernel's BTRFS_MAX_XATTR_SIZE). */
export function maxXattrBytes(nodesize: number): number {
  return maxItemSize(nodesize) - dirItemSize(0, 0);
}

export async function setXattr(txn: Transaction, tree: bigint, ino: bigint, name: Buffer, value: Buffer): Promise<void> {
  const k = key(ino, KEY.XATTR_ITEM, nameHash(name));
  if (await findXattr(txn, tree, ino, name)) await removeFromDirItem(txn, tree, k, name);
  await appendDirItem(txn, tree, k, { location: { objectid: 0n, type: 0, offset: 0n }, transid: txn.generation, type: FT.XATTR, name, data: value });
}

export async function removeXattr(txn: Transaction, tree: bigint, ino: bigint, name: Buffer): Promise<void> {
  await removeFromDirItem(txn, tree, key(ino, KEY.XATTR_ITEM, nameHash(name)), name);
}
