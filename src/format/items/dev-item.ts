/**
 * DEV_ITEM (chunk tree, key (DEV_ITEMS DEV_ITEM devid)); also embedded in the superblock.
 *   0 devid u64 | 8 total_bytes u64 | 16 bytes_used u64 | 24 io_align u32 | 28 io_width u32
 *  32 sector_size u32 | 36 type u64 | 44 generation u64 | 52 start_offset u64 | 60 dev_group u32
 *  64 seek_speed u8 | 65 bandwidth u8 | 66 uuid[16] | 82 fsid[16]   = 98 bytes
 */
import { struct, u8, u32, u64, bytes } from '../layout.js';

export interface DevItem {
  devid: bigint;
  total_bytes: bigint;
  bytes_used: bigint;
  io_align: number;
  io_width: number;
  sector_size: number;
  type: bigint;
  generation: bigint;
  start_offset: bigint;
  dev_group: number;
  seek_speed: number;
  bandwidth: number;
  uuid: Buffer;
  fsid: Buffer;
}

export const devItem = struct<DevItem>('dev_item', [
  u64('devid'), u64('total_bytes'), u64('bytes_used'), u32('io_align'), u32('io_width'),
  u32('sector_size'), u64('type'), u64('generation'), u64('start_offset'), u32('dev_group'),
  u8('seek_speed'), u8('bandwidth'), bytes(16, 'uuid'), bytes(16, 'fsid'),
]);
