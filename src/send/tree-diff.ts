/**
 * The differences between two trees, item by item, in key order, without
 * reading what the two share.
 *
 * A snapshot and its parent start as one tree; every later change copies
 * the blocks on the path to it, so both trees keep pointing at the same
 * blocks wherever nothing changed. Two key pointers with the same bytenr
 * and generation lead to the same bytes, so the whole subtree below them is
 * skipped. The walk keeps one cursor per tree; each cursor sits on a slot of
 * some block at some level, and the one whose key is behind moves first. A
 * cursor behind at a node level descends (part of its subtree lies before
 * the other side's key), a cursor behind on a leaf item reports the item as
 * only on its side. At equal keys the higher cursor descends until both are
 * level, then equal pointers are skipped and unequal ones entered. The
 * blocks read are those on the paths to changed items, so the cost follows
 * the size of the change, not of the trees.
 */
import { compareKeys, type Key } from '../format/key.js';
import type { TreeBlock } from '../format/tree-block.js';
import type { BlockReader } from '../tree/block-reader.js';
import type { RootLocation } from '../tree/search.js';

/** One item that differs: only in `cur` (new), only in `old` (deleted), or in both with other bytes. */
export interface DiffItem {
  key: Key;
  /** the item's bytes in the newer tree (undefined: deleted) */
  cur?: Buffer;
  /** the item's bytes in the older tree (undefined: new) */
  old?: Buffer;
}

export interface DiffStats {
  /** blocks read on both sides */
  blocksRead: number;
  /** subtrees skipped because both trees point at the same block */
  sharedSkipped: number;
}

interface Frame { block: TreeBlock; slot: number }

/** A position in one tree: a slot of a block at some level, or past the end. */
class Cursor {
  private path: Frame[] = [];
  done = false;

  constructor(
    private readonly reader: BlockReader,
    private readonly root: RootLocation,
    private readonly stats: DiffStats,
  ) {}

  async start(): Promise<void> {
    const block = await this.read(this.root.bytenr, this.root.level, this.root.generation);
    this.path = [{ block, slot: 0 }];
    if (block.nritems === 0) this.done = true;
  }

  private async read(bytenr: bigint, level: number, generation: bigint, firstKey?: Key): Promise<TreeBlock> {
    this.stats.blocksRead++;
    return this.reader.read({ bytenr, level, generation, firstKey, owner: this.root.objectid });
  }

  private get top(): Frame {
    return this.path[this.path.length - 1]!;
  }

  get level(): number {
    return this.top.block.level;
  }

  get key(): Key {
    return this.top.block.keyAt(this.top.slot);
  }

  /** The pointer under the cursor (node levels only). */
  get ptr(): { bytenr: bigint; generation: bigint } {
    const p = this.top.block.ptrs[this.top.slot]!;
    return { bytenr: p.blockptr, generation: p.generation };
  }

  /** The item under the cursor (leaf level only). */
  get data(): Buffer {
    return this.top.block.items[this.top.slot]!.data;
  }

  /** Enters the subtree under the cursor, onto its first slot. */
  async down(): Promise<void> {
    const { block, slot } = this.top;
    const p = block.ptrs[slot]!;
    const child = await this.read(p.blockptr, block.level - 1, p.generation, p.key);
    this.path.push({ block: child, slot: 0 });
    // an empty block below a node is corruption the checker reports; treat it as nothing
    if (child.nritems === 0) this.next();
  }

  /** Steps over the slot under the cursor (and its whole subtree), climbing as blocks run out. */
  next(): void {
    for (;;) {
      const f = this.top;
      f.slot++;
      if (f.slot < f.block.nritems) return;
      this.path.pop();
      if (this.path.length === 0) {
        this.done = true;
        return;
      }
    }
  }
}

/**
 * Yields every item that differs between `cur` and `old` (both fs trees of
 * one filesystem), in key order. Items equal in both are never yielded.
 */
export async function* diffTrees(reader: BlockReader, cur: RootLocation, old: RootLocation, stats: DiffStats = { blocksRead: 0, sharedSkipped: 0 }): AsyncGenerator<DiffItem> {
  if (cur.bytenr === old.bytenr && cur.generation === old.generation) {
    stats.sharedSkipped++;
    return;
  }
  const a = new Cursor(reader, cur, stats);
  const b = new Cursor(reader, old, stats);
  await a.start();
  await b.start();
  for (;;) {
    if (a.done && b.done) return;
    // the side that is behind moves; a finished side is infinitely far ahead
    const cmp = a.done ? 1 : b.done ? -1 : compareKeys(a.key, b.key);
    if (cmp < 0) {
      if (a.level > 0) await a.down();
      else {
        yield { key: a.key, cur: a.data };
        a.next();
      }
      continue;
    }
    if (cmp > 0) {
      if (b.level > 0) await b.down();
      else {
        yield { key: b.key, old: b.data };
        b.next();
      }
      continue;
    }
    if (a.level !== b.level) {
      if (a.level > b.level) await a.down();
      else await b.down();
      continue;
    }
    if (a.level === 0) {
      const x = a.data;
      const y = b.data;
      if (!x.equals(y)) yield { key: a.key, cur: x, old: y };
      a.next();
      b.next();
      continue;
    }
    const pa = a.ptr;
    const pb = b.ptr;
    if (pa.bytenr === pb.bytenr && pa.generation === pb.generation) {
      stats.sharedSkipped++;
      a.next();
      b.next();
      continue;
    }
    await a.down();
    await b.down();
  }
}
