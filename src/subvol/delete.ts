/**
 * Deleting a subvolume (the kernel's btrfs_delete_subvolume after its
 * checks) and cleaning deleted ones (btrfs_clean_one_deleted_snapshot).
 *
 * Deletion unlinks the subvolume — directory entries in the parent, root
 * refs, uuid tree entries — sets its root item's refs to 0 and records an
 * ORPHAN_ITEM; the tree itself is dropped later by the cleaner, a bounded
 * step per transaction, so a crash at any commit leaves a half-dropped tree
 * that the next cleaner (ours or the kernel's) finishes. Images the kernel
 * left in that state are cleaned the same way.
 *
 * The DEAD flag and the send guard live in root-lock.ts; this file assumes
 * the caller holds the right to delete.
 */
import { BtrfsError } from '../util/errors.js';
import { nameHash } from '../util/checksum.js';
import { KEY, OBJ } from '../format/constants.js';
import { key, KEY_MAX } from '../format/key.js';
import type { Timespec } from '../format/layout.js';
import { decodeInodeItem, encodeInodeItem } from '../format/items/inode-item.js';
import { decodeRootRef } from '../format/items/root-ref.js';
import { decodeUuidItem, encodeUuidItem, uuidKeyParts } from '../format/items/uuid-item.js';
import { encodeOrphanItem } from '../format/items/orphan-item.js';
import type { Transaction } from '../transaction/transaction.js';
import { dropTreeStep } from './drop.js';
import { removeFromDirItem } from '../fs/namespace.js';

const ZERO_UUID = Buffer.alloc(16);

/** Subvolumes linked inside `id` (ROOT_REF items it holds). */
export async function childSubvolumes(txn: Transaction, id: bigint): Promise<bigint[]> {
  const out: bigint[] = [];
  for await (const it of txn.iter(OBJ.ROOT_TREE, key(id, KEY.ROOT_REF, 0n), key(id, KEY.ROOT_REF, KEY_MAX.offset))) out.push(it.key.offset);
  return out;
}

async function removeUuid(txn: Transaction, uuid: Buffer, type: number, id: bigint): Promise<void> {
  if (uuid.equals(ZERO_UUID)) return;
  const { objectid, offset } = uuidKeyParts(uuid);
  const k = key(objectid, type, offset);
  const old = await txn.lookup(OBJ.UUID_TREE, k);
  if (!old) return;
  const ids = decodeUuidItem(old).filter((x) => x !== id);
  if (ids.length === 0) {
    await txn.delete(OBJ.UUID_TREE, k);
  } else {
    await txn.resize(OBJ.UUID_TREE, k, ids.length * 8);
    await txn.update(OBJ.UUID_TREE, k, encodeUuidItem(ids));
  }
}

/**
 * Unlinks subvolume `id` and marks it for the cleaner. The caller has set
 * ROOT_SUBVOL_DEAD (see root-lock.ts) and checked the kernel's refusals
 * (ENOTEMPTY, EPERM); they are checked again here for direct callers.
 */
export async function unlinkSubvolume(txn: Transaction, id: bigint, now: Timespec): Promise<void> {
  if (id === OBJ.FS_TREE) throw new BtrfsError('EPERM', 'the top-level subvolume cannot be deleted');
  if ((await childSubvolumes(txn, id)).length > 0) throw new BtrfsError('ENOTEMPTY', `subvolume ${id} contains other subvolumes`);
  const backrefs: { parent: bigint; data: Buffer }[] = [];
  for await (const it of txn.iter(OBJ.ROOT_TREE, key(id, KEY.ROOT_BACKREF, 0n), key(id, KEY.ROOT_BACKREF, KEY_MAX.offset))) {
    backrefs.push({ parent: it.key.offset, data: it.data });
  }
  for (const b of backrefs) {
    const ref = decodeRootRef(b.data);
    await removeFromDirItem(txn, b.parent, key(ref.dirid, KEY.DIR_ITEM, nameHash(ref.name)), ref.name);
    await txn.delete(b.parent, key(ref.dirid, KEY.DIR_INDEX, ref.sequence));
    await txn.delete(OBJ.ROOT_TREE, key(b.parent, KEY.ROOT_REF, id));
    await txn.delete(OBJ.ROOT_TREE, key(id, KEY.ROOT_BACKREF, b.parent));
    const dk = key(ref.dirid, KEY.INODE_ITEM, 0n);
    const raw = await txn.lookup(b.parent, dk);
    if (raw) {
      const dir = decodeInodeItem(raw);
      dir.size -= BigInt(ref.name.length * 2);
      dir.transid = txn.generation;
      dir.mtime = now;
      dir.ctime = now;
      await txn.update(b.parent, dk, encodeInodeItem(dir));
    }
  }
  const { item } = await txn.rootItem(id);
  await removeUuid(txn, item.uuid, KEY.UUID_KEY_SUBVOL, id);
  await removeUuid(txn, item.received_uuid, KEY.UUID_KEY_RECEIVED_SUBVOL, id);
  await txn.setRootItem(id, { refs: 0 });
  const ok = key(OBJ.ORPHAN, KEY.ORPHAN_ITEM, id);
  if (!(await txn.lookup(OBJ.ROOT_TREE, ok))) await txn.insert(OBJ.ROOT_TREE, ok, encodeOrphanItem());
}

/** Deleted subvolumes waiting for the cleaner: orphan items whose root item has no refs. */
export async function deletedSubvolumes(txn: Transaction): Promise<bigint[]> {
  const out: bigint[] = [];
  for await (const it of txn.iter(OBJ.ROOT_TREE, key(OBJ.ORPHAN, KEY.ORPHAN_ITEM, 0n), key(OBJ.ORPHAN, KEY.ORPHAN_ITEM, KEY_MAX.offset))) {
    out.push(it.key.offset);
  }
  return out;
}

/**
 * One bounded cleaning step of deleted subvolume `id`: drops part of its
 * tree; when the tree is gone, removes its root item and orphan item.
 * Returns true when the subvolume is completely gone.
 */
export async function cleanStep(txn: Transaction, id: bigint, budget: number): Promise<boolean> {
  const step = await dropTreeStep(txn, id, budget);
  if (!step.done) return false;
  const { offset } = await txn.rootItem(id);
  await txn.delete(OBJ.ROOT_TREE, key(id, KEY.ROOT_ITEM, offset));
  txn.forgetRoot(id);
  const ok = key(OBJ.ORPHAN, KEY.ORPHAN_ITEM, id);
  if (await txn.lookup(OBJ.ROOT_TREE, ok)) await txn.delete(OBJ.ROOT_TREE, ok);
  return true;
}
