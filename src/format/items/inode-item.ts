/**
 * INODE_ITEM (fs trees, key (ino INODE_ITEM 0)); also the first 160 bytes of a ROOT_ITEM.
 *   0 generation u64 |   8 transid u64  |  16 size u64 |  24 nbytes u64 |  32 block_group u64
 *  40 nlink u32      |  44 uid u32      |  48 gid u32  |  52 mode u32   |  56 rdev u64
 *  64 flags u64      |  72 sequence u64 |  80 reserved[4] u64
 * 112 atime | 124 ctime | 136 mtime | 148 otime    (btrfs_timespec: sec s64, nsec u32 = 12)  = 160 bytes
 */
import { struct, u32, u64, bytes, timespec, type Timespec } from '../layout.js';

export interface InodeItem {
  generation: bigint;
  transid: bigint;
  size: bigint;
  nbytes: bigint;
  block_group: bigint;
  nlink: number;
  uid: number;
  gid: number;
  mode: number;
  rdev: bigint;
  flags: bigint;
  sequence: bigint;
  /** kept so that re-encoding an item reproduces its bytes */
  reserved: Buffer;
  atime: Timespec;
  ctime: Timespec;
  mtime: Timespec;
  otime: Timespec;
}

export const inodeItemCodec = struct<InodeItem>('inode_item', [
  u64('generation'), u64('transid'), u64('size'), u64('nbytes'), u64('block_group'),
  u32('nlink'), u32('uid'), u32('gid'), u32('mode'), u64('rdev'), u64('flags'), u64('sequence'),
  bytes(32, 'reserved'), timespec('atime'), timespec('ctime'), timespec('mtime'), timespec('otime'),
]);

export const INODE_ITEM_SIZE = inodeItemCodec.size;

export function decodeInodeItem(b: Buffer, off = 0): InodeItem {
  return inodeItemCodec.decode(b, off);
}

export function encodeInodeItem(v: InodeItem): Buffer {
  return inodeItemCodec.toBuffer(v);
}
