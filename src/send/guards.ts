/**
 * The seed's guards on the send side ("Btrfs: fix protection between send
 * and root deletion"): for as long as a send reads a root — the snapshot,
 * its parent, every clone source — that root must stay read-only and
 * alive. Each root is counted in under its root_item_lock (so a deletion
 * or a read-write switch in this process sees the count, and a send sees a
 * deletion that got there first as DEAD), and, when the image is a file or
 * device others may open, a registration names the roots for other
 * processes (docs/send-delete-coordination.md).
 *
 * The registration is made while holding the image write lock, after
 * re-reading the committed root items, so no writer of another process can
 * change a root between that check and the registration. When a writer of
 * this very process holds the lock, the registration is made under its
 * protection: such a writer sees this send through the in-process counter.
 *
 * Every exit path undoes exactly what was done: each counter is decremented
 * once and the registration removed once.
 */
import { BtrfsError, isBtrfsError } from '../util/errors.js';
import { acquireImageLock, readLockHolder, type ImageLock } from '../device/image-lock.js';
import { register, type Registration } from '../device/image-registry.js';
import { FsInfo } from '../tree/fs-info.js';
import { RootLocks, type RootItemLock, isDead, isReadOnly } from '../subvol/root-lock.js';
import { SEND_KIND, type SendRegistration } from '../subvol/manage.js';

export interface SendGuards {
  /** the filesystem view to send from: the committed image as checked under the lock, or the caller's */
  info: FsInfo;
  /** Undoes the guards; safe to call more than once. */
  release(): Promise<void>;
}

export interface GuardOptions {
  locks?: RootLocks;
  imagePath?: string;
  /** how long to wait for another process's writer to let go of the image lock (ms); default 10000 */
  lockWaitMs?: number;
}

/**
 * Sends of this process take the image lock one at a time, so that a lock
 * this process holds, seen from a send, is always a writer's.
 */
let lockTurn: Promise<void> = Promise.resolve();
async function oneAtATime<T>(fn: () => Promise<T>): Promise<T> {
  const prev = lockTurn;
  let done!: () => void;
  lockTurn = new Promise<void>((r) => { done = r; });
  await prev;
  try {
    return await fn();
  } finally {
    done();
  }
}

/** The image lock, or undefined when a writer of this process holds it (we are then under its protection). */
async function takeImageLock(imagePath: string, waitMs: number): Promise<ImageLock | undefined> {
  try {
    return await acquireImageLock(imagePath, { waitMs });
  } catch (e) {
    if (!isBtrfsError(e, 'EBUSY')) throw e;
    const holder = await readLockHolder(imagePath).catch(() => null);
    if (holder?.owner?.pid === process.pid && holder.alive !== false) return undefined;
    throw e;
  }
}

/**
 * Counts the send into each root (distinct ids, in the order given) and
 * registers it. Throws ENOENT for a root that does not exist or is
 * deleted, EPERM for one that is not read-only or is being deleted; on any
 * failure nothing stays counted or registered.
 */
export async function acquireSendGuards(info: FsInfo, ids: bigint[], opts: GuardOptions = {}): Promise<SendGuards> {
  const locks = opts.locks ?? new RootLocks();
  const roots = [...new Set(ids)];
  const counted: RootItemLock[] = [];
  let registration: Registration<SendRegistration> | undefined;
  let released = false;

  const uncount = (): void => {
    for (const l of counted.splice(0)) l.critical((s) => { s.sendInProgress--; });
  };
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    uncount();
    const r = registration;
    registration = undefined;
    await r?.release();
  };

  const countIn = async (view: FsInfo): Promise<void> => {
    for (const id of roots) {
      const r = await view.findRoot(id);
      if (!r || r.item.refs === 0) throw new BtrfsError('ENOENT', `subvolume ${id} does not exist or is deleted`, { tree: id });
      const onDisk = r.item.flags;
      const lock = locks.get(id, onDisk);
      lock.critical((s) => {
        s.sendInProgress++;
        if (!isReadOnly(s.flags) || isDead(s.flags) || !isReadOnly(onDisk) || isDead(onDisk)) {
          s.sendInProgress--;
          const why = isDead(s.flags) || isDead(onDisk) ? 'is being deleted' : 'is not read-only';
          throw new BtrfsError('EPERM', `cannot send subvolume ${id}: it ${why}`, { tree: id });
        }
      });
      counted.push(lock);
    }
  };

  try {
    if (!opts.imagePath) {
      await countIn(info);
      return { info, release };
    }
    const imagePath = opts.imagePath;
    return await oneAtATime(async () => {
      const lock = await takeImageLock(imagePath, opts.lockWaitMs ?? 10_000);
      try {
        // what other processes committed is what they will check against: read it fresh under the lock
        const fresh = await FsInfo.open(info.device);
        await countIn(fresh);
        registration = await register<SendRegistration>(imagePath, SEND_KIND, { roots: roots.map(String) });
        return { info: fresh, release };
      } finally {
        await lock?.release();
      }
    });
  } catch (e) {
    await release();
    throw e;
  }
}

