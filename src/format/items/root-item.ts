/**
 * ROOT_ITEM (root tree, key (tree_id ROOT_ITEM offset)); offset is 0, the
 * snapshot's creation transid, or for a TREE_RELOC root the source tree id.
 *   0 inode[160] (an unused inode_item) | 160 generation u64 | 168 root_dirid u64
 * 176 bytenr u64 | 184 byte_limit u64 | 192 bytes_used u64 | 200 last_snapshot u64
 * 208 flags u64 (RDONLY bit 0, DEAD bit 48) | 216 refs u32 | 220 drop_progress key[17]
 * 237 drop_level u8 | 238 level u8                           = 239: the old, short item
 * 239 generation_v2 u64 | 247 uuid[16] | 263 parent_uuid[16] | 279 received_uuid[16]
 * 295 ctransid | 303 otransid | 311 stransid | 319 rtransid   (u64 each)
 * 327 ctime | 339 otime | 351 stime | 363 rtime (timespec 12 each) | 375 reserved[8] u64  = 439
 * The fields past 239 are only meaningful when generation_v2 == generation: an
 * old kernel that rewrote the item left them stale.
 */
import { BtrfsError, corrupt } from '../../util/errors.js';
import { struct, u8, u32, u64, bytes, nested, timespec, type Timespec } from '../layout.js';
import { keyCodec } from '../key-codec.js';
import type { Key } from '../key.js';
import { inodeItemCodec, type InodeItem } from './inode-item.js';

export interface RootItem {
  inode: InodeItem;
  generation: bigint;
  root_dirid: bigint;
  bytenr: bigint;
  byte_limit: bigint;
  bytes_used: bigint;
  last_snapshot: bigint;
  flags: bigint;
  refs: number;
  drop_progress: Key;
  drop_level: number;
  level: number;
  generation_v2: bigint;
  uuid: Buffer;
  parent_uuid: Buffer;
  received_uuid: Buffer;
  ctransid: bigint;
  otransid: bigint;
  stransid: bigint;
  rtransid: bigint;
  ctime: Timespec;
  otime: Timespec;
  stime: Timespec;
  rtime: Timespec;
  reserved: Buffer;
  /** bytes the item had on disk: 439, or less for an item written by an old kernel */
  itemSize: number;
}

export const rootItemCodec = struct<Omit<RootItem, 'itemSize'>>('root_item', [
  nested(inodeItemCodec, 'inode'), u64('generation'), u64('root_dirid'), u64('bytenr'), u64('byte_limit'),
  u64('bytes_used'), u64('last_snapshot'), u64('flags'), u32('refs'), nested(keyCodec, 'drop_progress'),
  u8('drop_level'), u8('level'), u64('generation_v2'), bytes(16, 'uuid'), bytes(16, 'parent_uuid'),
  bytes(16, 'received_uuid'), u64('ctransid'), u64('otransid'), u64('stransid'), u64('rtransid'),
  timespec('ctime'), timespec('otime'), timespec('stime'), timespec('rtime'), bytes(64, 'reserved'),
]);

export const ROOT_ITEM_SIZE = rootItemCodec.size;
/** The item as kernels before 3.x wrote it (ending after `level`). */
export const ROOT_ITEM_V0_SIZE = 239;

/**
 * Decodes a root item of any size from the short 239-byte form up: missing
 * fields read as zero, as the kernel does (so generation_v2 != generation
 * marks the extended fields invalid). Longer items decode their first 439 bytes.
 */
export function decodeRootItem(b: Buffer): RootItem {
  if (b.length < ROOT_ITEM_V0_SIZE) throw corrupt(`root_item: ${b.length} bytes, at least ${ROOT_ITEM_V0_SIZE} needed`);
  let src = b;
  if (b.length < ROOT_ITEM_SIZE) {
    src = Buffer.alloc(ROOT_ITEM_SIZE);
    b.copy(src);
  }
  return { ...rootItemCodec.decode(src, 0), itemSize: b.length };
}

/** Encodes to `itemSize` bytes (439 unless the item was short and is kept short). */
export function encodeRootItem(r: RootItem, itemSize = r.itemSize ?? ROOT_ITEM_SIZE): Buffer {
  const full = rootItemCodec.toBuffer(r);
  if (itemSize === ROOT_ITEM_SIZE) return full;
  if (itemSize < ROOT_ITEM_V0_SIZE) throw new BtrfsError('EINVAL', `root item size ${itemSize} below ${ROOT_ITEM_V0_SIZE}`);
  // a longer item (from a newer kernel) keeps its unknown tail as zeros
  const out = Buffer.alloc(itemSize);
  full.copy(out, 0, 0, Math.min(itemSize, ROOT_ITEM_SIZE));
  return out;
}
