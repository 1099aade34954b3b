/**
 * Reference changes waiting for the extent tree (the kernel's delayed refs).
 * Tree blocks are allocated and freed in the middle of B-tree operations,
 * where the extent tree cannot be edited; file writes add and drop data
 * references many times per transaction. Both are summed here per extent and
 * per backref and applied once, at commit (extent-tree.ts), so an extent
 * created and dropped in the same transaction never reaches the extent tree.
 *
 * A backref names who points at the extent: a tree (TREE_BLOCK_REF root; for
 * data EXTENT_DATA_REF root/inode/offset) or, once a block is shared between
 * snapshots, the parent block itself (SHARED_BLOCK_REF / SHARED_DATA_REF).
 */
import { BtrfsError } from '../util/errors.js';

/** Who references a data extent: a file extent item of inode `ino` in tree `root` at file offset - extent offset. */
export interface DataRefKey { root: bigint; ino: bigint; offset: bigint }

export type MetaBackref = { root: bigint; parent?: undefined } | { parent: bigint; root?: undefined };
export type DataBackref = DataRefKey | { parent: bigint };

export interface MetaRefChange {
  level: number;
  /** the tree the block was allocated for (header owner) */
  owner: bigint;
  isNew: boolean;
  refs: Map<string, MetaBackref & { delta: number }>;
  /** extent flags to set (FULL_BACKREF) */
  setFlags: bigint;
}

export interface DataRefChange {
  numBytes: bigint;
  /** allocated in this transaction (no extent item yet) */
  isNew: boolean;
  refs: Map<string, DataBackref & { delta: number }>;
}

function metaKey(r: MetaBackref): string {
  return r.parent !== undefined ? `p${r.parent}` : `r${r.root}`;
}

function dataKey(r: DataBackref): string {
  return 'parent' in r ? `p${r.parent}` : `r${r.root}:${r.ino}:${r.offset}`;
}

export class DelayedRefs {
  meta = new Map<bigint, MetaRefChange>();
  data = new Map<bigint, DataRefChange>();

  get empty(): boolean { return this.meta.size === 0 && this.data.size === 0; }

  newTreeBlock(bytenr: bigint, owner: bigint, level: number): void {
    if (this.meta.get(bytenr)?.isNew) throw new BtrfsError('EUCLEAN', `tree block ${bytenr} allocated twice in one transaction`, { block: bytenr });
    const m: MetaRefChange = { level, owner, isNew: true, refs: new Map(), setFlags: 0n };
    this.meta.set(bytenr, m);
    this.treeRef(bytenr, level, owner, { root: owner }, 1);
  }

  /** A reference to a tree block gained (+1) or lost (-1). */
  treeRef(bytenr: bigint, level: number, owner: bigint, ref: MetaBackref, delta: number): void {
    let m = this.meta.get(bytenr);
    if (!m) {
      m = { level, owner, isNew: false, refs: new Map(), setFlags: 0n };
      this.meta.set(bytenr, m);
    }
    const k = metaKey(ref);
    const r = m.refs.get(k);
    if (r) r.delta += delta;
    else m.refs.set(k, { ...ref, delta });
  }

  setTreeBlockFlags(bytenr: bigint, level: number, owner: bigint, flags: bigint): void {
    let m = this.meta.get(bytenr);
    if (!m) {
      m = { level, owner, isNew: false, refs: new Map(), setFlags: 0n };
      this.meta.set(bytenr, m);
    }
    m.setFlags |= flags;
  }

  /** Net change of references to a tree block in this transaction, and flags set. */
  pendingMeta(bytenr: bigint): { delta: number; setFlags: bigint; isNew: boolean } | undefined {
    const m = this.meta.get(bytenr);
    if (!m) return undefined;
    let delta = 0;
    for (const r of m.refs.values()) delta += r.delta;
    return { delta, setFlags: m.setFlags, isNew: m.isNew };
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

  dataRef(bytenr: bigint, numBytes: bigint, ref: DataBackref, delta: number): void {
    let d = this.data.get(bytenr);
    if (!d) {
      d = { numBytes, isNew: false, refs: new Map() };
      this.data.set(bytenr, d);
    } else if (d.numBytes !== numBytes) {
      throw new BtrfsError('EUCLEAN', `data extent ${bytenr} referenced with lengths ${d.numBytes} and ${numBytes}`, { block: bytenr });
    }
    const k = dataKey(ref);
    const r = d.refs.get(k);
    if (r) r.delta += delta;
    else d.refs.set(k, { ...ref, delta });
  }

  /** Hands every pending change over and starts empty (commit runs them in rounds). */
  take(): { meta: Map<bigint, MetaRefChange>; data: Map<bigint, DataRefChange> } {
    const out = { meta: this.meta, data: this.data };
    this.meta = new Map();
    this.data = new Map();
    return out;
  }
}
