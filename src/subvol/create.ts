/**
 * Making subvolumes and snapshots (the kernel's create_subvol and
 * create_pending_snapshot): a root item in the root tree, the link into a
 * parent directory (DIR_ITEM/DIR_INDEX whose location is the new root, and
 * ROOT_REF/ROOT_BACKREF naming that entry), and the uuid tree entry by which
 * send and receive find subvolumes.
 *
 * A snapshot shares the source's tree: its root block is a copy of the
 * source's, every block below gains a reference (Transaction.snapshotTree),
 * and later writes on either side copy what they change.
 */
import { randomUUID } from 'node:crypto';
import { BtrfsError } from '../util/errors.js';
import { nameHash } from '../util/checksum.js';
import { KEY, OBJ, FT, ROOT_FLAG, S_IFDIR, NAME_LEN } from '../format/constants.js';
import { key, KEY_MAX } from '../format/key.js';
import type { Timespec } from '../format/layout.js';
import { decodeInodeItem, encodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { encodeInodeRefs } from '../format/items/inode-ref.js';
import { decodeDirItems, encodeDirItems } from '../format/items/dir-item.js';
import { encodeRootRef } from '../format/items/root-ref.js';
import type { RootItem } from '../format/items/root-item.js';
import type { Transaction } from '../transaction/transaction.js';
import { addUuidEntry } from './uuid-tree.js';

const ZERO_UUID = Buffer.alloc(16);
const ZERO_TIME: Timespec = { sec: 0n, nsec: 0 };

export interface SubvolLink {
  /** tree holding the parent directory */
  parentTree: bigint;
  /** inode of the parent directory in that tree */
  parentDir: bigint;
  name: Buffer;
}

function newUuid(): Buffer {
  return Buffer.from(randomUUID().replace(/-/g, ''), 'hex');
}

/** The next free subvolume id: one past the highest id the root tree knows. */
export async function nextSubvolId(txn: Transaction): Promise<bigint> {
  const last = await txn.last(OBJ.ROOT_TREE, key(OBJ.FIRST_FREE, 0, 0n), key(OBJ.LAST_FREE, 255, KEY_MAX.offset));
  const id = last ? last.key.objectid + 1n : OBJ.FIRST_FREE;
  if (id > OBJ.LAST_FREE) throw new BtrfsError('ENOSPC', 'no subvolume ids left');
  return id;
}

function dirInode(gen: bigint, now: Timespec): InodeItem {
  return {
    generation: gen, transid: gen, size: 0n, nbytes: 0n, block_group: 0n, nlink: 1, uid: 0, gid: 0, mode: S_IFDIR | 0o755,
    rdev: 0n, flags: 0n, sequence: 0n, reserved: Buffer.alloc(32), atime: now, ctime: now, mtime: now, otime: now,
  };
}

/**
 * Links subvolume `child` into a directory: the directory entries, the
 * root refs both ways, the directory's size and times. EEXIST if the name
 * is taken.
 */
export async function linkSubvolume(txn: Transaction, link: SubvolLink, child: bigint, now: Timespec): Promise<void> {
  const { parentTree, parentDir, name } = link;
  if (name.length === 0 || name.length > NAME_LEN) throw new BtrfsError('ENAMETOOLONG', `subvolume name of ${name.length} bytes`);
  if (name.includes(0x2f) || name.includes(0) || name.equals(Buffer.from('.')) || name.equals(Buffer.from('..'))) {
    throw new BtrfsError('EINVAL', `invalid subvolume name '${name.toString()}'`);
  }
  const hash = nameHash(name);
  const existing = await txn.lookup(parentTree, key(parentDir, KEY.DIR_ITEM, hash));
  if (existing) {
    if (decodeDirItems(existing).some((d) => d.name.equals(name))) throw new BtrfsError('EEXIST', `'${name.toString()}' already exists`);
    throw new BtrfsError('ENOTSUP', 'directory name hash collision with an existing entry');
  }
  const idx = await txn.last(parentTree, key(parentDir, KEY.DIR_INDEX, 0n), key(parentDir, KEY.DIR_INDEX, KEY_MAX.offset));
  const index = idx ? idx.key.offset + 1n : 2n;
  const entry = encodeDirItems([{ location: key(child, KEY.ROOT_ITEM, KEY_MAX.offset), transid: txn.generation, type: FT.DIR, name, data: Buffer.alloc(0) }]);
  await txn.insert(parentTree, key(parentDir, KEY.DIR_ITEM, hash), entry);
  await txn.insert(parentTree, key(parentDir, KEY.DIR_INDEX, index), entry);
  const ref = encodeRootRef({ dirid: parentDir, sequence: index, name });
  await txn.insert(OBJ.ROOT_TREE, key(parentTree, KEY.ROOT_REF, child), ref);
  await txn.insert(OBJ.ROOT_TREE, key(child, KEY.ROOT_BACKREF, parentTree), ref);
  const dk = key(parentDir, KEY.INODE_ITEM, 0n);
  const raw = await txn.lookup(parentTree, dk);
  if (!raw) throw new BtrfsError('ENOENT', `parent directory inode ${parentDir} not found`, { tree: parentTree });
  const dir = decodeInodeItem(raw);
  dir.size += BigInt(name.length * 2);
  dir.transid = txn.generation;
  dir.mtime = now;
  dir.ctime = now;
  await txn.update(parentTree, dk, encodeInodeItem(dir));
}

function baseRootItem(gen: bigint): Omit<RootItem, 'inode' | 'bytenr' | 'level' | 'uuid' | 'ctime' | 'otime'> {
  return {
    generation: gen, root_dirid: 256n, byte_limit: 0n, bytes_used: 0n, last_snapshot: 0n, flags: 0n, refs: 1,
    drop_progress: { objectid: 0n, type: 0, offset: 0n }, drop_level: 0, generation_v2: gen,
    parent_uuid: ZERO_UUID, received_uuid: ZERO_UUID, ctransid: gen, otransid: gen, stransid: 0n, rtransid: 0n,
    stime: ZERO_TIME, rtime: ZERO_TIME, reserved: Buffer.alloc(64), itemSize: 439,
  };
}

/** A new, empty subvolume linked at `link`. Returns its id. */
export async function createSubvolume(txn: Transaction, link: SubvolLink, now: Timespec, opts: { uid?: number; gid?: number; mode?: number } = {}): Promise<bigint> {
  const id = await nextSubvolId(txn);
  const gen = txn.generation;
  const loc = await txn.tree.createTree(id);
  const uuid = newUuid();
  // the root item's own inode is a relic the kernel still fills this way
  const itemInode: InodeItem = { ...dirInode(1n, ZERO_TIME), transid: 0n, size: 3n, nbytes: BigInt(txn.nodesize) };
  await txn.addRoot(id, 0n, {
    ...baseRootItem(gen), inode: itemInode, bytenr: loc.bytenr, level: loc.level, uuid, ctime: now, otime: now,
    bytes_used: BigInt(txn.nodesize),
  });
  const root = { ...dirInode(gen, now), uid: opts.uid ?? 0, gid: opts.gid ?? 0, mode: S_IFDIR | ((opts.mode ?? 0o755) & 0o7777) };
  await txn.insert(id, key(256n, KEY.INODE_ITEM, 0n), encodeInodeItem(root));
  await txn.insert(id, key(256n, KEY.INODE_REF, 256n), encodeInodeRefs([{ index: 0n, name: Buffer.from('..') }]));
  await linkSubvolume(txn, link, id, now);
  await addUuidEntry(txn, uuid, KEY.UUID_KEY_SUBVOL, id);
  return id;
}

/**
 * A snapshot of subvolume `src` linked at `link`, read-only if asked. Must
 * run in a transaction that has changed nothing yet (see snapshotTree).
 * Returns its id.
 */
export async function createSnapshot(txn: Transaction, src: bigint, link: SubvolLink, now: Timespec, opts: { readonly?: boolean } = {}): Promise<bigint> {
  const id = await nextSubvolId(txn);
  const gen = txn.generation;
  const copy = await txn.snapshotTree(src, id);
  const { item: s } = await txn.rootItem(src);
  const uuid = newUuid();
  const item: RootItem = {
    ...s,
    generation: gen, generation_v2: gen, bytenr: copy.bytenr, level: copy.level, last_snapshot: gen,
    flags: opts.readonly ? ROOT_FLAG.SUBVOL_RDONLY : 0n, refs: 1,
    drop_progress: { objectid: 0n, type: 0, offset: 0n }, drop_level: 0,
    uuid, parent_uuid: s.uuid, received_uuid: ZERO_UUID,
    otransid: gen, stransid: 0n, rtransid: 0n, otime: now, stime: ZERO_TIME, rtime: ZERO_TIME,
    itemSize: 439,
  };
  await txn.addRoot(id, gen, item);
  await linkSubvolume(txn, link, id, now);
  await addUuidEntry(txn, uuid, KEY.UUID_KEY_SUBVOL, id);
  return id;
}
