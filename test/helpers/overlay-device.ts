/**
 * A read-only BlockDevice that shows another device with byte patches laid
 * over it: tests corrupt a fixture image in memory (one flipped byte, a
 * rewritten header field) without copying the 100+ MiB file.
 *
 *   const dev = new OverlayDevice(await FileDevice.open(img, { readOnly: true }));
 *   dev.flipByte(physical + 123);
 *   await Filesystem.open(dev);        // sees the corruption
 *   dev.clear();                       // back to the pristine image
 *
 * Patches apply to every later read, overlapping patches in the order made
 * (a later one wins). `size` may be cut below the base device's to simulate
 * a truncated image. close() closes the overlay only (the base is shared and
 * stays open) unless `closeBase` is set.
 */
import { BtrfsError } from '../../src/util/errors.js';
import {
  type BlockDevice, checkArgs, closedError, pastEnd, readOnlyError,
} from '../../src/device/block-device.js';
import { HEADER_SIZE, ITEM_SIZE, KEY_PTR_SIZE, KEY, OBJ } from '../../src/format/constants.js';
import { decodeRootItem } from '../../src/format/items/root-item.js';
import type { TreeBlock } from '../../src/format/tree-block.js';
import type { FsInfo } from '../../src/tree/fs-info.js';
import { iterItems, walkBlocks, type RootLocation } from '../../src/tree/search.js';
import { mulberry32 } from '../../src/util/random.js';

interface Patch { offset: number; bytes: Buffer }

export interface OverlayDeviceOptions {
  /** label for messages; default "overlay(<base name>)" */
  name?: string;
  /** pretend the device is only this long (<= base size): a truncated image */
  size?: number;
  /** close the base device too on close(); default false */
  closeBase?: boolean;
}

export class OverlayDevice implements BlockDevice {
  readonly name: string;
  readonly readOnly = true;
  private readonly patches: Patch[] = [];
  private readonly len: number;
  private readonly closeBase: boolean;
  private closed = false;
  /** number of read() calls made, for tests that bound work */
  reads = 0;

  constructor(readonly base: BlockDevice, options: OverlayDeviceOptions = {}) {
    this.name = options.name ?? `overlay(${base.name})`;
    const size = options.size ?? base.size;
    if (!Number.isSafeInteger(size) || size < 0 || size > base.size) {
      throw new BtrfsError('EINVAL', `overlay size ${size} must be within the base device's ${base.size}`, { path: this.name });
    }
    this.len = size;
    this.closeBase = options.closeBase ?? false;
  }

  get size(): number {
    return this.len;
  }

  /** Lays `bytes` over [offset, offset + bytes.length). The bytes are copied. */
  patch(offset: number, bytes: Uint8Array): this {
    checkArgs(this.name, 'patch', offset, bytes.length);
    if (offset + bytes.length > this.len) throw pastEnd(this.name, offset, bytes.length, this.len);
    this.patches.push({ offset, bytes: Buffer.from(bytes) });
    return this;
  }

  /** Inverts the bits of the byte at `offset` (xor `mask`, default 0xff), as currently seen. */
  async flipByte(offset: number, mask = 0xff): Promise<this> {
    const cur = await this.read(offset, 1);
    return this.patch(offset, Buffer.from([(cur[0]! ^ mask) & 0xff]));
  }

  /** Synchronous flip when the caller already knows the original byte value. */
  flipKnown(offset: number, original: number, mask = 0xff): this {
    return this.patch(offset, Buffer.from([(original ^ mask) & 0xff]));
  }

  /** Drops every patch. */
  clear(): this {
    this.patches.length = 0;
    return this;
  }

  get patchCount(): number {
    return this.patches.length;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.live('read');
    checkArgs(this.name, 'read', offset, length);
    if (offset + length > this.len) throw pastEnd(this.name, offset, length, this.len);
    this.reads++;
    const buf = await this.base.read(offset, length);
    const end = offset + length;
    for (const p of this.patches) {
      const pEnd = p.offset + p.bytes.length;
      if (pEnd <= offset || p.offset >= end) continue;
      const from = Math.max(p.offset, offset);
      const to = Math.min(pEnd, end);
      p.bytes.copy(buf, from - offset, from - p.offset, to - p.offset);
    }
    return buf;
  }

  async write(_offset: number, _data: Uint8Array): Promise<void> {
    this.live('write');
    throw readOnlyError(this.name);
  }

  async flush(): Promise<void> {
    this.live('flush');
  }

  async close(): Promise<void> {
    this.live('close');
    this.closed = true;
    if (this.closeBase) await this.base.close();
  }

  private live(op: string): void {
    if (this.closed) throw closedError(this.name, op);
  }
}

// ---------------------------------------------------------------------------
// Helpers shared by the corruption and hostile-input tests: which tree blocks
// an image has and where their copies lie, a whole-image walk, a seeded rng.

/** Every tree the image has: root tree, chunk tree, then each ROOT_ITEM's tree (deduplicated by root block). */
export async function allTreeRoots(info: FsInfo): Promise<RootLocation[]> {
  const roots: RootLocation[] = [info.treeRoot, info.chunkRoot];
  const seen = new Set<bigint>([info.treeRoot.bytenr, info.chunkRoot.bytenr]);
  for await (const it of iterItems(info.reader, info.treeRoot)) {
    if (it.key.type !== KEY.ROOT_ITEM) continue;
    if (it.key.objectid === OBJ.ROOT_TREE || it.key.objectid === OBJ.CHUNK_TREE) continue;
    let item;
    try {
      item = decodeRootItem(it.data);
    } catch (e) {
      throw e instanceof BtrfsError ? e.withWhere({ tree: OBJ.ROOT_TREE, block: it.block.bytenr, slot: it.slot, key: it.key }) : e;
    }
    if (seen.has(item.bytenr)) continue;
    seen.add(item.bytenr);
    roots.push({ objectid: it.key.objectid, bytenr: item.bytenr, level: item.level, generation: item.generation });
  }
  return roots;
}

/**
 * Reads every block of every tree (allTreeRoots) through the library's
 * verified reader; `fn` sees each block once per tree it is reached from.
 */
export async function walkAllTrees(info: FsInfo, fn: (block: TreeBlock, root: RootLocation) => void = () => undefined): Promise<void> {
  for (const root of await allTreeRoots(info)) await walkBlocks(info.reader, root, (b) => fn(b, root));
}

/** A tree block of an image and where its copies are on the device. */
export interface TreeBlockRef {
  bytenr: bigint;
  /** objectid of the (first) tree it was reached from */
  tree: bigint;
  level: number;
  nritems: number;
  /** the item table: [offset, length) inside the block */
  table: [number, number];
  /** leaf only: [offset, length) of each item's data, inside the block */
  itemData: [number, number][];
  /** byte offsets on the device of each copy (1 for SINGLE, 2 for DUP) */
  physical: number[];
}

/** Every distinct tree block of the image, in walk order. */
export async function listTreeBlocks(info: FsInfo): Promise<TreeBlockRef[]> {
  const out: TreeBlockRef[] = [];
  const seen = new Set<bigint>();
  await walkAllTrees(info, (b, root) => {
    if (seen.has(b.bytenr)) return;
    seen.add(b.bytenr);
    const copies = info.chunks.map(b.bytenr, info.nodesize);
    out.push({
      bytenr: b.bytenr,
      tree: root.objectid,
      level: b.level,
      nritems: b.nritems,
      table: [HEADER_SIZE, b.nritems * (b.isLeaf ? ITEM_SIZE : KEY_PTR_SIZE)],
      itemData: b.items.map((it) => [HEADER_SIZE + it.offset, it.size] as [number, number]),
      physical: copies.map((c) => Number(c.physical)),
    });
  });
  return out;
}

export const rng = mulberry32;

/** The seed of a randomized test: TSBTRFS_SEED if set, else a fresh one (print it). */
export function testSeed(): number {
  const env = process.env.TSBTRFS_SEED;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isSafeInteger(n)) throw new Error(`TSBTRFS_SEED=${env} is not an integer`);
    return n >>> 0;
  }
  return (Math.random() * 2 ** 32) >>> 0;
}
