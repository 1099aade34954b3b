/**
 * EXTENT_ITEM (extent tree, key (bytenr EXTENT_ITEM length)) and the skinny
 * METADATA_ITEM (key (bytenr METADATA_ITEM level)) for tree blocks.
 *   0 refs u64 | 8 generation u64 | 16 flags u64 (DATA 1, TREE_BLOCK 2, FULL_BACKREF 256)   = 24
 * A tree block in a (non-skinny) EXTENT_ITEM then has tree_block_info:
 *  24 key[17] (first key of the block) | 41 level u8                                        = 18
 * Then inline back references to the end of the item, each a type byte and a body:
 *   TREE_BLOCK_REF   (176): offset u64 = root id                       9 bytes
 *   SHARED_BLOCK_REF (182): offset u64 = parent block bytenr           9 bytes
 *   EXTENT_DATA_REF  (178): root u64, objectid u64, offset u64, count u32   29 bytes
 *   SHARED_DATA_REF  (184): offset u64 = parent bytenr, count u32     13 bytes
 *   EXTENT_OWNER_REF (172): root_id u64 (simple quotas; first, if present)  9 bytes
 */
import { corrupt } from '../../util/errors.js';
import { struct, u8, u32, u64, nested } from '../layout.js';
import { keyCodec } from '../key-codec.js';
import { KEY, EXTENT_FLAG } from '../constants.js';
import type { Key } from '../key.js';
import { extentDataRefCodec, EXTENT_DATA_REF_SIZE, type ExtentDataRef } from './extent-ref.js';

export interface TreeBlockInfo { key: Key; level: number }

export type InlineRef =
  | { type: typeof KEY.TREE_BLOCK_REF; root: bigint }
  | { type: typeof KEY.SHARED_BLOCK_REF; parent: bigint }
  | ({ type: typeof KEY.EXTENT_DATA_REF } & ExtentDataRef)
  | { type: typeof KEY.SHARED_DATA_REF; parent: bigint; count: number }
  | { type: typeof KEY.EXTENT_OWNER_REF; root: bigint };

export interface ExtentItem {
  refs: bigint;
  generation: bigint;
  flags: bigint;
  /** present for a tree block described by an EXTENT_ITEM (not a METADATA_ITEM) */
  treeBlockInfo?: TreeBlockInfo;
  inlineRefs: InlineRef[];
  /**
   * Bytes from the first inline ref of unknown type to the end of the item
   * (only with `stopAtUnknown`; otherwise such a ref is corruption).
   */
  unparsed?: Buffer;
}

const extentHead = struct<{ refs: bigint; generation: bigint; flags: bigint }>('extent_item', [
  u64('refs'), u64('generation'), u64('flags'),
]);
export const treeBlockInfoCodec = struct<TreeBlockInfo>('tree_block_info', [nested(keyCodec, 'key'), u8('level')]);
const u64Body = struct<{ v: bigint }>('inline_ref', [u64('v')]);
const sharedDataBody = struct<{ parent: bigint; count: number }>('shared_data_ref', [u64('parent'), u32('count')]);

export const EXTENT_ITEM_HEAD_SIZE = extentHead.size;
export const TREE_BLOCK_INFO_SIZE = treeBlockInfoCodec.size;

/** Bytes an inline ref of `type` takes, including its type byte; 0 for a type that cannot be inline. */
export function inlineRefSize(type: number): number {
  switch (type) {
    case KEY.TREE_BLOCK_REF:
    case KEY.SHARED_BLOCK_REF:
    case KEY.EXTENT_OWNER_REF:
      return 1 + 8;
    case KEY.EXTENT_DATA_REF:
      return 1 + EXTENT_DATA_REF_SIZE;
    case KEY.SHARED_DATA_REF:
      return 1 + 8 + 4;
    default:
      return 0;
  }
}

export interface DecodeExtentOptions {
  /** the item is a skinny METADATA_ITEM: no tree_block_info even for tree blocks */
  skinny?: boolean;
  /** stop at an inline ref of unknown type instead of throwing (for printing damaged items) */
  stopAtUnknown?: boolean;
}

export function decodeExtentItem(b: Buffer, opts: DecodeExtentOptions = {}): ExtentItem {
  if (b.length < EXTENT_ITEM_HEAD_SIZE) throw corrupt(`extent_item: ${b.length} bytes, at least ${EXTENT_ITEM_HEAD_SIZE} needed`);
  const head = extentHead.decode(b, 0);
  const item: ExtentItem = { ...head, inlineRefs: [] };
  let off = EXTENT_ITEM_HEAD_SIZE;
  if ((head.flags & EXTENT_FLAG.TREE_BLOCK) !== 0n && !opts.skinny) {
    if (off + TREE_BLOCK_INFO_SIZE > b.length) throw corrupt(`extent_item: tree_block_info truncated (${b.length} bytes)`);
    item.treeBlockInfo = treeBlockInfoCodec.decode(b, off);
    off += TREE_BLOCK_INFO_SIZE;
  }
  while (off < b.length) {
    const type = b[off]!;
    const size = inlineRefSize(type);
    if (size === 0) {
      if (opts.stopAtUnknown) { item.unparsed = Buffer.from(b.subarray(off)); break; }
      throw corrupt(`extent_item: unknown inline ref type ${type} at ${off}`);
    }
    if (off + size > b.length) throw corrupt(`extent_item: inline ref type ${type} at ${off} overruns item of ${b.length}`);
    const body = off + 1;
    switch (type) {
      case KEY.TREE_BLOCK_REF:
        item.inlineRefs.push({ type, root: u64Body.decode(b, body).v });
        break;
      case KEY.SHARED_BLOCK_REF:
        item.inlineRefs.push({ type, parent: u64Body.decode(b, body).v });
        break;
      case KEY.EXTENT_OWNER_REF:
        item.inlineRefs.push({ type, root: u64Body.decode(b, body).v });
        break;
      case KEY.EXTENT_DATA_REF:
        item.inlineRefs.push({ type, ...extentDataRefCodec.decode(b, body) });
        break;
      case KEY.SHARED_DATA_REF:
        item.inlineRefs.push({ type, ...sharedDataBody.decode(b, body) });
        break;
    }
    off += size;
  }
  return item;
}

export function extentItemSize(e: ExtentItem): number {
  return EXTENT_ITEM_HEAD_SIZE + (e.treeBlockInfo ? TREE_BLOCK_INFO_SIZE : 0) +
    e.inlineRefs.reduce((n, r) => n + inlineRefSize(r.type), 0) + (e.unparsed?.length ?? 0);
}

export function encodeExtentItem(e: ExtentItem): Buffer {
  const out = Buffer.alloc(extentItemSize(e));
  extentHead.encode(e, out, 0);
  let off = EXTENT_ITEM_HEAD_SIZE;
  if (e.treeBlockInfo) {
    treeBlockInfoCodec.encode(e.treeBlockInfo, out, off);
    off += TREE_BLOCK_INFO_SIZE;
  }
  for (const r of e.inlineRefs) {
    out[off] = r.type;
    const body = off + 1;
    switch (r.type) {
      case KEY.TREE_BLOCK_REF:
      case KEY.EXTENT_OWNER_REF:
        u64Body.encode({ v: r.root }, out, body);
        break;
      case KEY.SHARED_BLOCK_REF:
        u64Body.encode({ v: r.parent }, out, body);
        break;
      case KEY.EXTENT_DATA_REF:
        extentDataRefCodec.encode(r, out, body);
        break;
      case KEY.SHARED_DATA_REF:
        sharedDataBody.encode(r, out, body);
        break;
    }
    off += inlineRefSize(r.type);
  }
  e.unparsed?.copy(out, off);
  return out;
}
