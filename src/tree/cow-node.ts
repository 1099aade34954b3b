/**
 * A tree block being rewritten in the current transaction (bbolt's `node`):
 * a mutable list of items or key pointers that becomes bytes only when the
 * transaction flushes it. It is made from an immutable TreeBlock by copying
 * the lists (item data stays shared: a buffer is replaced, never edited), so
 * whoever still holds the TreeBlock sees it unchanged.
 */
import { ITEM_SIZE } from '../format/constants.js';
import { searchSlot, type Key } from '../format/key.js';
import type { KeyPtr } from '../format/header.js';
import {
  encodeLeaf, encodeNode, leafDataSize, maxNodePtrs, type BlockHeaderFields,
} from '../format/tree-block-encode.js';

export interface CowItem { key: Key; data: Buffer }

/** What descent and balancing need of a block, dirty (CowNode) or clean (TreeBlock). */
export interface BlockView {
  readonly bytenr: bigint;
  readonly level: number;
  readonly generation: bigint;
  /** the tree that allocated the block (header owner) */
  readonly owner: bigint;
  readonly nritems: number;
  readonly items: readonly CowItem[];
  readonly ptrs: readonly KeyPtr[];
  keyAt(slot: number): Key;
  search(k: Key): { slot: number; exact: boolean };
}

/** Bytes a leaf's items take after the header (item headers plus data). */
export function leafUsed(v: BlockView): number {
  let used = 0;
  for (const it of v.items) used += ITEM_SIZE + it.data.length;
  return used;
}

export class CowNode implements BlockView {
  items: CowItem[];
  ptrs: KeyPtr[];

  constructor(
    public bytenr: bigint,
    readonly level: number,
    readonly owner: bigint,
    readonly generation: bigint,
    items: CowItem[] = [],
    ptrs: KeyPtr[] = [],
  ) {
    this.items = items;
    this.ptrs = ptrs;
  }

  /** A writable copy of `block` that will be written at `bytenr` with `generation`. */
  static fromBlock(block: BlockView, bytenr: bigint, owner: bigint, generation: bigint): CowNode {
    return new CowNode(
      bytenr, block.level, owner, generation,
      block.items.map((it) => ({ key: it.key, data: it.data })),
      // Key pointers are objects the TreeBlock hands out: copy them, they get edited here.
      block.ptrs.map((p) => ({ key: p.key, blockptr: p.blockptr, generation: p.generation })),
    );
  }

  get nritems(): number { return this.level === 0 ? this.items.length : this.ptrs.length; }
  get isLeaf(): boolean { return this.level === 0; }

  keyAt(slot: number): Key {
    return this.level === 0 ? this.items[slot]!.key : this.ptrs[slot]!.key;
  }

  /** Same contract as TreeBlock.search: last slot with key <= k (-1 if none). */
  search(k: Key): { slot: number; exact: boolean } {
    return searchSlot(this.nritems, (i) => this.keyAt(i), k);
  }

  /** Leaf bytes in use; only meaningful for leaves. */
  used(): number { return leafUsed(this); }

  /** True when the contents no longer fit one block (a transient state while balancing). */
  overfull(nodesize: number): boolean {
    return this.level === 0 ? this.used() > leafDataSize(nodesize) : this.ptrs.length > maxNodePtrs(nodesize);
  }

  /** The sealed block image. */
  encode(nodesize: number, csumType: number, fsid: Buffer, chunkTreeUuid: Buffer): Buffer {
    const h: BlockHeaderFields = { bytenr: this.bytenr, generation: this.generation, owner: this.owner, level: this.level, fsid, chunkTreeUuid };
    return this.level === 0 ? encodeLeaf(h, this.items, nodesize, csumType) : encodeNode(h, this.ptrs, nodesize, csumType);
  }
}
