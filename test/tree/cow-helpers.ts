/**
 * Checks for COW B-tree tests: walk a flushed tree from the store's bytes,
 * verify every block as a reader would, and the shape invariants of
 * src/tree/balance.ts; compare with a sorted model.
 */
import { expect } from 'chai';
import { checkTreeBlock } from '../../src/verify/tree-checker.js';
import { compareKeys, formatKey, type Key } from '../../src/format/key.js';
import { HEADER_SIZE, ITEM_SIZE } from '../../src/format/constants.js';
import { WRITTEN_BLOCK_FLAGS, leafDataSize } from '../../src/format/tree-block-encode.js';
import type { TreeBlock } from '../../src/format/tree-block.js';
import { leafMinUsed, nodeMinPtrs } from '../../src/tree/balance.js';
import type { MemoryTreeStore } from '../../src/tree/memory-store.js';
import type { RootLocation } from '../../src/tree/search.js';

export const ITEM_TYPE = 253; // STRING_ITEM: no per-item rules, any size is valid

export const keyStr = (k: Key): string => `${k.objectid.toString(16).padStart(16, '0')}:${k.type}:${k.offset.toString(16).padStart(16, '0')}`;
export const mkKey = (objectid: number | bigint, offset: number | bigint = 0): Key => ({ objectid: BigInt(objectid), type: ITEM_TYPE, offset: BigInt(offset) });

export interface WalkResult {
  items: Array<{ key: Key; data: Buffer }>;
  blocks: Set<bigint>;
  leaves: TreeBlock[];
  levels: number;
}

/** Every block from the root, each verified from its bytes against its parent pointer. */
export function walkStored(store: MemoryTreeStore, root: RootLocation): WalkResult {
  const out: WalkResult = { items: [], blocks: new Set(), leaves: [], levels: root.level + 1 };
  const visit = (bytenr: bigint, level: number, generation: bigint, isRoot: boolean, firstKey?: Key): TreeBlock => {
    const buf = store.blocks.get(bytenr);
    if (!buf) throw new Error(`block ${bytenr} not in store`);
    const b = checkTreeBlock(buf, store.checkContext, { bytenr, level, generation, firstKey, owner: root.objectid });
    expect(out.blocks.has(bytenr), `block ${bytenr} reached twice`).to.equal(false);
    out.blocks.add(bytenr);
    expect(b.owner).to.equal(root.objectid);
    expect(b.header.flags).to.equal(WRITTEN_BLOCK_FLAGS);
    expect(b.header.chunk_tree_uuid.equals(store.chunkTreeUuid)).to.equal(true);
    if (b.isLeaf) {
      out.leaves.push(b);
      for (const it of b.items) out.items.push({ key: it.key, data: it.data });
      return b;
    }
    const min = nodeMinPtrs(store.nodesize);
    if (isRoot) expect(b.nritems, `root node ${bytenr} with one child`).to.be.at.least(2);
    else expect(b.nritems, `node ${bytenr} level ${level} under the minimum`).to.be.at.least(min);
    const children = b.ptrs.map((p) => visit(p.blockptr, level - 1, p.generation, false, p.key));
    if (level === 1) {
      // The leaf rule: an underfull leaf cannot merge with a same-parent neighbour.
      const cap = leafDataSize(store.nodesize);
      const lmin = leafMinUsed(store.nodesize);
      for (let i = 1; i < children.length; i++) {
        const a = used(children[i - 1]!);
        const c = used(children[i]!);
        if (a < lmin || c < lmin) expect(a + c, `leaves ${children[i - 1]!.bytenr} (${a}) and ${children[i]!.bytenr} (${c}) should have merged`).to.be.greaterThan(cap);
      }
    }
    return b;
  };
  visit(root.bytenr, root.level, root.generation, true);
  for (let i = 1; i < out.items.length; i++) expect(compareKeys(out.items[i - 1]!.key, out.items[i]!.key)).to.equal(-1);
  return out;
}

export function used(b: TreeBlock): number {
  return b.items.reduce((s, it) => s + ITEM_SIZE + it.size, 0);
}

/** The tree holds exactly the model's items. */
export function expectModel(items: Array<{ key: Key; data: Buffer }>, model: Map<string, { key: Key; data: Buffer }>): void {
  const want = [...model.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
  expect(items.length, 'item count').to.equal(want.length);
  for (let i = 0; i < want.length; i++) {
    const g = items[i]!;
    const w = want[i]!;
    if (compareKeys(g.key, w.key) !== 0) expect.fail(`slot ${i}: key ${formatKey(g.key)}, model has ${formatKey(w.key)}`);
    if (!g.data.equals(w.data)) expect.fail(`item ${formatKey(g.key)}: data differs (${g.data.length} vs ${w.data.length} bytes)`);
  }
}

/** Every block the store ever handed to `owner` is reachable from exactly one of `roots`' trees or freed (once: the store refuses twice). */
export function expectNoLeaks(store: MemoryTreeStore, owner: bigint, reachable: Set<bigint>): void {
  for (const b of reachable) expect(store.freed.has(b), `reachable block ${b} was freed`).to.equal(false);
  for (const [b, rec] of store.allocated) {
    if (rec.owner !== owner) continue;
    if (!reachable.has(b) && !store.freed.has(b)) expect.fail(`block ${b} (level ${rec.level}, gen ${rec.generation}) leaked: neither reachable nor freed`);
  }
}

export const HEADER = HEADER_SIZE;
