/**
 * A tree block decoded: the one place bytes become a node. Items and key
 * pointers are indexed eagerly (nritems is small, at most a few hundred),
 * item data stays a view into the block's buffer. Blocks are immutable
 * once read: copy-on-write makes a new buffer, never edits this one.
 */
import { corrupt } from '../util/errors.js';
import { HEADER_SIZE, ITEM_SIZE, KEY_PTR_SIZE } from './constants.js';
import { headerCodec, type Header, type KeyPtr } from './header.js';
import { searchSlot, type Key } from './key.js';

export interface LeafItem {
  key: Key;
  /** item data offset relative to the end of the header, as stored */
  offset: number;
  size: number;
  /** a view of the item's bytes inside the block */
  data: Buffer;
}

export class TreeBlock {
  readonly header: Header;
  readonly items: LeafItem[] = [];
  readonly ptrs: KeyPtr[] = [];

  /**
   * Parses the block's structure. Item bounds are checked here (a leaf whose
   * items point outside it is corrupt); semantic checks live in verify/.
   */
  constructor(readonly buf: Buffer, readonly nodesize: number) {
    this.header = headerCodec.decode(buf, 0);
    const n = this.header.nritems;
    const bytenr = this.header.bytenr;
    const owner = this.header.owner;
    if (this.header.level === 0) {
      if (HEADER_SIZE + n * ITEM_SIZE > nodesize) throw corrupt(`leaf nritems ${n} too large`, { block: bytenr, tree: owner });
      for (let slot = 0; slot < n; slot++) {
        // Read field by field: every block read decodes all its items, and the generic codec is the slow part.
        const at = HEADER_SIZE + slot * ITEM_SIZE;
        const key = { objectid: buf.readBigUInt64LE(at), type: buf[at + 8]!, offset: buf.readBigUInt64LE(at + 9) };
        const offset = buf.readUInt32LE(at + 17);
        const size = buf.readUInt32LE(at + 21);
        const start = HEADER_SIZE + offset;
        if (offset + size > nodesize - HEADER_SIZE || start < HEADER_SIZE + n * ITEM_SIZE && size > 0) {
          throw corrupt(`item data out of bounds, offset ${offset} size ${size}`, { block: bytenr, tree: owner, slot, key });
        }
        this.items.push({ key, offset, size, data: buf.subarray(start, start + size) });
      }
    } else {
      if (HEADER_SIZE + n * KEY_PTR_SIZE > nodesize) throw corrupt(`node nritems ${n} too large`, { block: bytenr, tree: owner });
      for (let slot = 0; slot < n; slot++) {
        const at = HEADER_SIZE + slot * KEY_PTR_SIZE;
        this.ptrs.push({
          key: { objectid: buf.readBigUInt64LE(at), type: buf[at + 8]!, offset: buf.readBigUInt64LE(at + 9) },
          blockptr: buf.readBigUInt64LE(at + 17), generation: buf.readBigUInt64LE(at + 25),
        });
      }
    }
  }

  get bytenr(): bigint { return this.header.bytenr; }
  get level(): number { return this.header.level; }
  get generation(): bigint { return this.header.generation; }
  get owner(): bigint { return this.header.owner; }
  get nritems(): number { return this.header.nritems; }
  get isLeaf(): boolean { return this.header.level === 0; }

  /** The key of slot i (item key in a leaf, pointer key in a node). */
  keyAt(slot: number): Key {
    return this.isLeaf ? this.items[slot]!.key : this.ptrs[slot]!.key;
  }

  firstKey(): Key | undefined {
    return this.nritems > 0 ? this.keyAt(0) : undefined;
  }

  /**
   * Binary search: the slot of the last key <= k, or -1 if every key is
   * greater; `exact` tells whether that slot's key equals k.
   */
  search(k: Key): { slot: number; exact: boolean } {
    return searchSlot(this.nritems, (i) => this.keyAt(i), k);
  }

  /** Free bytes in a leaf between the item headers and the item data. */
  leafFreeSpace(): number {
    if (!this.isLeaf) return 0;
    const dataStart = this.items.length ? Math.min(...this.items.map((i) => i.offset)) : this.nodesize - HEADER_SIZE;
    return dataStart - this.items.length * ITEM_SIZE;
  }
}
