/**
 * Reference changes waiting for the extent tree (the kernel's delayed refs).
 * Tree blocks are allocated and freed in the middle of B-tree operations,
 * where the extent tree cannot be edited; file writes add and drop data
 * references many times per transaction. Both are summed here per extent and
 * applied once, at commit (extent-tree.ts), so an extent created and dropped
 * in the same transaction never reaches the extent tree at all.
 */
import { BtrfsError } from '../util/errors.js';

/** Who references a data extent: a file extent item of inode `ino` in tree `root` at file offset - extent offset. */
export interface DataRefKey { root: bigint; ino: bigint; offset: bigint }

export interface MetaRefChange {
  level: number;
  owner: bigint;
  /** +1 allocated, -1 freed, 0 both (allocated and freed in this transaction) */
  delta: number;
  isNew: boolean;
}

export interface DataRefChange {
  numBytes: bigint;
  /** allocated in this transaction (no extent item yet) */
  isNew: boolean;
  refs: Map<string, DataRefKey & { delta: number }>;
}

export class DelayedRefs {
  meta = new Map<bigint, MetaRefChange>();
  data = new Map<bigint, DataRefChange>();

  get empty(): boolean { return this.meta.size === 0 && this.data.size === 0; }

  newTreeBlock(bytenr: bigint, owner: bigint, level: number): void {
    if (this.meta.has(bytenr)) throw new BtrfsError('EUCLEAN', `tree block ${bytenr} allocated twice in one transaction`, { block: bytenr });
    this.meta.set(bytenr, { level, owner, delta: 1, isNew: true });
  }

  freeTreeBlock(bytenr: bigint, owner: bigint, level: number): void {
    const m = this.meta.get(bytenr);
    if (m) {
      if (m.delta !== 1) throw new BtrfsError('EUCLEAN', `tree block ${bytenr} freed twice in one transaction`, { block: bytenr });
      m.delta = 0;
      return;
    }
    this.meta.set(bytenr, { level, owner, delta: -1, isNew: false });
  }

  newDataExtent(bytenr: bigint, numBytes: bigint): void {
    if (this.data.has(bytenr)) throw new BtrfsError('EUCLEAN', `data extent ${bytenr} allocated twice in one transaction`, { block: bytenr });
    this.data.set(bytenr, { numBytes, isNew: true, refs: new Map() });
  }

  /** Shrinks a data extent allocated in this transaction that has no references yet. */
  shrinkNewData(bytenr: bigint, numBytes: bigint): void {
    const d = this.data.get(bytenr);
    if (!d?.isNew || d.refs.size > 0) throw new BtrfsError('EINVAL', `data extent ${bytenr} cannot shrink: not new or already referenced`, { block: bytenr });
    d.numBytes = numBytes;
  }

  dataRef(bytenr: bigint, numBytes: bigint, ref: DataRefKey, delta: number): void {
    let d = this.data.get(bytenr);
    if (!d) {
      d = { numBytes, isNew: false, refs: new Map() };
      this.data.set(bytenr, d);
    } else if (d.numBytes !== numBytes) {
      throw new BtrfsError('EUCLEAN', `data extent ${bytenr} referenced with lengths ${d.numBytes} and ${numBytes}`, { block: bytenr });
    }
    const k = `${ref.root}:${ref.ino}:${ref.offset}`;
    const r = d.refs.get(k);
    if (r) r.delta += delta;
    else d.refs.set(k, { ...ref, delta });
  }

  /** Net references this transaction gave a data extent it allocated (for callers deciding to reuse it). */
  netNew(bytenr: bigint): number | undefined {
    const d = this.data.get(bytenr);
    if (!d?.isNew) return undefined;
    let n = 0;
    for (const r of d.refs.values()) n += r.delta;
    return n;
  }

  /** Hands every pending change over and starts empty (commit runs them in rounds). */
  take(): { meta: Map<bigint, MetaRefChange>; data: Map<bigint, DataRefChange> } {
    const out = { meta: this.meta, data: this.data };
    this.meta = new Map();
    this.data = new Map();
    return out;
  }
}
