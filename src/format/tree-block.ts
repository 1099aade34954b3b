/**
 * A tree block decoded: the one place bytes become a node. Key pointers are
 * indexed eagerly; a leaf's item bounds are checked when it is read, but its
 * items become objects only when `items` is first asked for, because a
 * block cache full of leaves holding hundreds of item objects each is what
 * the garbage collector spends its time on. Hot readers that visit every
 * item once use the per-slot accessors, which build nothing that outlives
 * the call. Item data stays a view into the block's buffer. Blocks are
 * immutable once read: copy-on-write makes a new buffer, never edits this one.
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

/** The u32 at `at`, by index: the per-slot reads below run for every item of every block read. */
const u32 = (b: Buffer, at: number): number => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 16777216;

export class TreeBlock {
  readonly ptrs: KeyPtr[] = [];
  private items_: LeafItem[] | undefined;
  private header_: Header | undefined;
  readonly bytenr: bigint;
  readonly generation: bigint;
  readonly owner: bigint;
  readonly nritems: number;
  readonly level: number;

  /**
   * Parses the block's structure. Item bounds are checked here (a leaf whose
   * items point outside it is corrupt); semantic checks live in verify/.
   * The header's fields that every reader needs are read here; the rest
   * (checksum, fsid, uuid views) only when `header` is asked for.
   */
  constructor(readonly buf: Buffer, readonly nodesize: number) {
    const n = this.nritems = buf.readUInt32LE(96);
    const bytenr = this.bytenr = buf.readBigUInt64LE(48);
    this.generation = buf.readBigUInt64LE(80);
    const owner = this.owner = buf.readBigUInt64LE(88);
    this.level = buf[100]!;
    if (this.level === 0) {
      if (HEADER_SIZE + n * ITEM_SIZE > nodesize) throw corrupt(`leaf nritems ${n} too large`, { block: bytenr, tree: owner });
      for (let slot = 0; slot < n; slot++) {
        const at = HEADER_SIZE + slot * ITEM_SIZE;
        const offset = u32(buf, at + 17);
        const size = u32(buf, at + 21);
        const start = HEADER_SIZE + offset;
        if (offset + size > nodesize - HEADER_SIZE || start < HEADER_SIZE + n * ITEM_SIZE && size > 0) {
          throw corrupt(`item data out of bounds, offset ${offset} size ${size}`, { block: bytenr, tree: owner, slot, key: this.itemKeyAt(slot) });
        }
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

  /** The whole header, decoded on first use. */
  get header(): Header {
    return this.header_ ??= headerCodec.decode(this.buf, 0);
  }

  /** A leaf's items, decoded on first use and kept (empty for a node). */
  get items(): LeafItem[] {
    if (this.items_) return this.items_;
    const items: LeafItem[] = [];
    if (this.level === 0) {
      for (let slot = 0; slot < this.nritems; slot++) {
        const offset = this.itemOffsetAt(slot);
        const size = this.itemSizeAt(slot);
        items.push({ key: this.itemKeyAt(slot), offset, size, data: this.buf.subarray(HEADER_SIZE + offset, HEADER_SIZE + offset + size) });
      }
    }
    return this.items_ = items;
  }

  /** Slot `slot`'s key in a leaf, as a new object (nothing is kept). */
  itemKeyAt(slot: number): Key {
    const at = HEADER_SIZE + slot * ITEM_SIZE;
    return { objectid: this.buf.readBigUInt64LE(at), type: this.buf[at + 8]!, offset: this.buf.readBigUInt64LE(at + 9) };
  }

  /** Slot `slot`'s key type in a leaf. */
  itemTypeAt(slot: number): number { return this.buf[HEADER_SIZE + slot * ITEM_SIZE + 8]!; }

  /** Slot `slot`'s item data offset in a leaf, relative to the end of the header, as stored. */
  itemOffsetAt(slot: number): number { return u32(this.buf, HEADER_SIZE + slot * ITEM_SIZE + 17); }

  /** Slot `slot`'s item data size in a leaf. */
  itemSizeAt(slot: number): number { return u32(this.buf, HEADER_SIZE + slot * ITEM_SIZE + 21); }

  /** Where slot `slot`'s item data begins in a leaf, as a byte offset into `buf`. */
  itemStartAt(slot: number): number { return HEADER_SIZE + this.itemOffsetAt(slot); }

  /** Slot `slot`'s item data in a leaf, as a new view of the block's buffer. */
  itemDataAt(slot: number): Buffer {
    const start = HEADER_SIZE + this.itemOffsetAt(slot);
    return this.buf.subarray(start, start + this.itemSizeAt(slot));
  }

  get isLeaf(): boolean { return this.level === 0; }

  /** The key of slot i (item key in a leaf, pointer key in a node). */
  keyAt(slot: number): Key {
    return this.isLeaf ? this.items[slot]!.key : this.ptrs[slot]!.key;
  }

  firstKey(): Key | undefined {
    if (this.nritems === 0) return undefined;
    return this.isLeaf && !this.items_ ? this.itemKeyAt(0) : this.keyAt(0);
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
