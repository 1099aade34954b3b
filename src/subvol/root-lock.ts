/**
 * The root_item_lock of the seed patch ("Btrfs: fix protection between
 * send and root deletion"): per subvolume, one lock guarding its root
 * item's flags (RDONLY, DEAD) and its send_in_progress counter.
 *
 * In the kernel it is a spinlock: the check and the change it guards
 * cannot be interrupted. Here a critical section is a synchronous function:
 * JavaScript runs it to the end before any other callback, so no await can
 * split a check from its change. `critical` refuses a function that returns
 * a promise (that would be an await inside the lock) and refuses nesting.
 *
 * Every reader and writer of the guarded flags in this process goes through
 * it: deletion (sets DEAD only while no send runs, else EPERM, and clears
 * it again on any later failure), send (counts itself in, refuses a root
 * that is not read-only or is dead), and the read-only setter (refuses
 * read-write while a send runs). Other processes are seen through the image
 * registry (device/image-registry.ts), read while holding the image lock.
 */
import { BtrfsError } from '../util/errors.js';
import { ROOT_FLAG } from '../format/constants.js';

/** What a critical section sees and may change. */
export interface RootGuard {
  readonly id: bigint;
  flags: bigint;
  sendInProgress: number;
}

export class RootItemLock {
  private state: RootGuard;
  private inside = false;

  constructor(id: bigint, flags: bigint) {
    this.state = { id, flags, sendInProgress: 0 };
  }

  get id(): bigint { return this.state.id; }

  /** Runs `fn` holding the lock. `fn` must not be async. */
  critical<T>(fn: (s: RootGuard) => T): T {
    if (this.inside) throw new BtrfsError('EINVAL', `root_item_lock of ${this.state.id} taken twice`);
    this.inside = true;
    try {
      const out = fn(this.state);
      if (out instanceof Promise) {
        out.catch(() => undefined);
        throw new BtrfsError('EINVAL', 'root_item_lock critical section returned a promise: no await may run under the lock');
      }
      return out;
    } finally {
      this.inside = false;
    }
  }

  /** A snapshot of the guarded state (taken under the lock). */
  peek(): Readonly<RootGuard> {
    return this.critical((s) => ({ ...s }));
  }
}

/** The locks of one open filesystem, one per subvolume, made on first use. */
export class RootLocks {
  private locks = new Map<bigint, RootItemLock>();

  /** The lock of subvolume `id`; `flags` seeds it from the root item the first time. */
  get(id: bigint, flags: bigint): RootItemLock {
    let l = this.locks.get(id);
    if (!l) {
      l = new RootItemLock(id, flags);
      this.locks.set(id, l);
    }
    return l;
  }

  /** The lock if it exists (no root item at hand). */
  peek(id: bigint): RootItemLock | undefined {
    return this.locks.get(id);
  }

  /**
   * After a transaction was aborted, flags kept here may describe changes
   * that never reached the image: reseed them from the image, keeping the
   * send counters, which are about this process and not the image.
   */
  reseed(id: bigint, flags: bigint): void {
    this.locks.get(id)?.critical((s) => { s.flags = flags; });
  }

  /** Forgets a subvolume that is gone (deleted and cleaned). */
  forget(id: bigint): void {
    this.locks.delete(id);
  }
}

export const isDead = (flags: bigint): boolean => (flags & ROOT_FLAG.SUBVOL_DEAD) !== 0n;
export const isReadOnly = (flags: bigint): boolean => (flags & ROOT_FLAG.SUBVOL_RDONLY) !== 0n;
