/**
 * Subvolume operations with the kernel's guards: delete (EPERM for the
 * top level, the default subvolume, or one being sent; ENOTEMPTY when
 * subvolumes live inside it), read-only on and off (EPERM turning a
 * subvolume being sent read-write), the default subvolume, and the
 * cleaner that drops deleted subvolumes (`subvolume sync`).
 *
 * Each operation commits: as in the kernel, a deletion is durable when it
 * returns, and its DEAD flag is either on disk with the unlink or cleared
 * again.
 */
import { BtrfsError } from '../util/errors.js';
import { nameHash } from '../util/checksum.js';
import { KEY, OBJ, FT, ROOT_FLAG, FEATURE_INCOMPAT } from '../format/constants.js';
import { key } from '../format/key.js';
import type { Timespec } from '../format/layout.js';
import { decodeDirItems, encodeDirItems } from '../format/items/dir-item.js';
import { liveRegistrations } from '../device/image-registry.js';
import type { FsWriter } from '../transaction/writer.js';
import type { Transaction } from '../transaction/transaction.js';
import { RootLocks, isDead } from './root-lock.js';
import { childSubvolumes, unlinkSubvolume, deletedSubvolumes, cleanStep } from './delete.js';

/** What a send registers beside the image for other processes (device/image-registry.ts). */
export interface SendRegistration { roots: string[] }
export const SEND_KIND = 'send';

export interface SubvolContext {
  writer: FsWriter;
  locks: RootLocks;
  /** the image file or device path, to see other processes' sends; undefined for in-memory devices */
  imagePath?: string;
  now(): Timespec;
  /** kernel-style warnings (the kernel logs them to dmesg) */
  warn?: (msg: string) => void;
  /**
   * Called at the operation's await points (tests drive every interleaving
   * of concurrent operations through it); it may throw to make the
   * operation fail there.
   */
  point?: (label: string) => Promise<void>;
}

/** Root ids other processes are sending from, by their live registrations. */
export async function remoteSends(ctx: SubvolContext): Promise<Set<bigint>> {
  const out = new Set<bigint>();
  if (!ctx.imagePath) return out;
  for (const r of await liveRegistrations<SendRegistration>(ctx.imagePath, SEND_KIND)) {
    for (const id of r.roots ?? []) out.add(BigInt(id));
  }
  return out;
}

const DEFAULT_NAME = Buffer.from('default');

export async function getDefaultSubvolume(txn: Transaction): Promise<bigint> {
  const it = await txn.lookup(OBJ.ROOT_TREE, key(OBJ.ROOT_TREE_DIR, KEY.DIR_ITEM, nameHash(DEFAULT_NAME)));
  const d = it && decodeDirItems(it).find((e) => e.name.equals(DEFAULT_NAME));
  return d ? d.location.objectid : OBJ.FS_TREE;
}

/** A live (not deleted) subvolume's root item flags; ENOENT otherwise. */
async function liveFlags(txn: Transaction, id: bigint): Promise<bigint> {
  let item;
  try {
    item = (await txn.rootItem(id)).item;
  } catch (e) {
    if (e instanceof BtrfsError && e.code === 'ENOENT') throw new BtrfsError('ENOENT', `no subvolume ${id}`);
    throw e;
  }
  if (item.refs === 0 || isDead(item.flags)) throw new BtrfsError('ENOENT', `subvolume ${id} is deleted`);
  return item.flags;
}

function isSubvolId(id: bigint): boolean {
  return id === OBJ.FS_TREE || (id >= OBJ.FIRST_FREE && id <= OBJ.LAST_FREE);
}

export async function deleteSubvolume(ctx: SubvolContext, id: bigint): Promise<void> {
  if (!isSubvolId(id)) throw new BtrfsError('EINVAL', `${id} is not a subvolume id`);
  if (id === OBJ.FS_TREE) throw new BtrfsError('EPERM', 'cannot delete the top-level subvolume');
  const w = ctx.writer;
  const txn = w.transaction();
  const flags = await liveFlags(txn, id);
  if ((await getDefaultSubvolume(txn)) === id) throw new BtrfsError('EPERM', `cannot delete subvolume ${id}: it is the default subvolume`);
  if ((await childSubvolumes(txn, id)).length > 0) throw new BtrfsError('ENOTEMPTY', `subvolume ${id} contains other subvolumes`);
  const remote = await remoteSends(ctx);
  await ctx.point?.('delete:checked');
  const lock = ctx.locks.get(id, flags);
  lock.critical((s) => {
    if (s.sendInProgress === 0 && !remote.has(id)) {
      s.flags |= ROOT_FLAG.SUBVOL_DEAD;
      return;
    }
    ctx.warn?.(`attempt to delete subvolume ${id} during send`);
    throw new BtrfsError('EPERM', `subvolume ${id} is being sent`);
  });
  let changed = false;
  try {
    await ctx.point?.('delete:dead-set');
    const t = w.transaction();
    changed = true;
    await t.setRootItem(id, { flags: lock.peek().flags });
    await unlinkSubvolume(t, id, ctx.now());
    await ctx.point?.('delete:before-commit');
    await w.commit();
  } catch (e) {
    lock.critical((s) => { s.flags &= ~ROOT_FLAG.SUBVOL_DEAD; });
    // only a transaction this deletion touched is thrown away
    if (changed && w.dirty) await w.abort();
    throw e;
  }
}

export async function setReadOnly(ctx: SubvolContext, id: bigint, ro: boolean): Promise<void> {
  if (!isSubvolId(id)) throw new BtrfsError('EINVAL', `${id} is not a subvolume id`);
  const w = ctx.writer;
  const txn = w.transaction();
  const flags = await liveFlags(txn, id);
  const remote = ro ? new Set<bigint>() : await remoteSends(ctx);
  await ctx.point?.('ro:checked');
  const lock = ctx.locks.get(id, flags);
  const before = lock.critical((s) => {
    const was = s.flags;
    if (ro) {
      s.flags |= ROOT_FLAG.SUBVOL_RDONLY;
      return was;
    }
    if (s.sendInProgress > 0 || remote.has(id)) {
      ctx.warn?.(`Attempt to set subvolume ${id} read-write during send`);
      throw new BtrfsError('EPERM', `subvolume ${id} is being sent`);
    }
    s.flags &= ~ROOT_FLAG.SUBVOL_RDONLY;
    return was;
  });
  if (before === lock.peek().flags) return;
  let changed = false;
  try {
    await ctx.point?.('ro:flags-set');
    changed = true;
    await w.transaction().setRootItem(id, { flags: lock.peek().flags });
    await w.commit();
  } catch (e) {
    lock.critical((s) => { s.flags = before; });
    if (changed && w.dirty) await w.abort();
    throw e;
  }
}

export async function setDefaultSubvolume(ctx: SubvolContext, id: bigint): Promise<void> {
  const w = ctx.writer;
  const txn = w.transaction();
  if (id !== OBJ.FS_TREE) await liveFlags(txn, id);
  const k = key(OBJ.ROOT_TREE_DIR, KEY.DIR_ITEM, nameHash(DEFAULT_NAME));
  const raw = await txn.lookup(OBJ.ROOT_TREE, k);
  const entries = raw ? decodeDirItems(raw) : [];
  const i = entries.findIndex((e) => e.name.equals(DEFAULT_NAME));
  const entry = { location: key(id, KEY.ROOT_ITEM, 0xffff_ffff_ffff_ffffn), transid: 0n, type: FT.DIR, name: DEFAULT_NAME, data: Buffer.alloc(0) };
  if (i >= 0) entries[i] = { ...entries[i]!, location: entry.location };
  else entries.push(entry);
  const buf = encodeDirItems(entries);
  try {
    if (!raw) await txn.insert(OBJ.ROOT_TREE, k, buf);
    else {
      if (buf.length !== raw.length) await txn.resize(OBJ.ROOT_TREE, k, buf.length);
      await txn.update(OBJ.ROOT_TREE, k, buf);
    }
    w.info.sb.incompat_flags |= FEATURE_INCOMPAT.DEFAULT_SUBVOL;
    await w.commit();
  } catch (e) {
    if (w.dirty) await w.abort();
    throw e;
  }
}

export interface SyncProgress { subvolume: bigint; done: boolean; freed: number }

/**
 * Runs the cleaner until no deleted subvolume is left (btrfs subvolume
 * sync), committing after every step of at most `budget` freed blocks.
 */
export async function syncDeleted(ctx: SubvolContext, opts: { budget?: number; onStep?: (p: SyncProgress) => void } = {}): Promise<bigint[]> {
  const w = ctx.writer;
  const cleaned: bigint[] = [];
  await w.commit();
  for (;;) {
    const t = w.transaction();
    const pending = await deletedSubvolumes(t);
    if (pending.length === 0) {
      await w.commit();
      return cleaned;
    }
    const id = pending[0]!;
    try {
      const done = await cleanStep(t, id, opts.budget ?? 256);
      await w.commit();
      opts.onStep?.({ subvolume: id, done, freed: 0 });
      if (done) {
        cleaned.push(id);
        ctx.locks.forget(id);
      }
    } catch (e) {
      if (w.dirty) await w.abort();
      throw e;
    }
  }
}
