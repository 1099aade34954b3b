/**
 * CHUNK_ITEM (chunk tree, key (FIRST_CHUNK_TREE CHUNK_ITEM logical); also in sys_chunk_array).
 *   0 length u64 | 8 owner u64 | 16 stripe_len u64 | 24 type u64 | 32 io_align u32
 *  36 io_width u32 | 40 sector_size u32 | 44 num_stripes u16 | 46 sub_stripes u16   = 48 bytes
 * followed by num_stripes stripes of: devid u64 | offset u64 | dev_uuid[16]   = 32 bytes each
 */
import { corrupt } from '../../util/errors.js';
import { needBytes } from '../../util/bytes.js';
import { struct, u16, u32, u64, bytes } from '../layout.js';

export interface Stripe { devid: bigint; offset: bigint; dev_uuid: Buffer }

export interface ChunkItem {
  length: bigint;
  owner: bigint;
  stripe_len: bigint;
  type: bigint;
  io_align: number;
  io_width: number;
  sector_size: number;
  num_stripes: number;
  sub_stripes: number;
  stripes: Stripe[];
}

const chunkHead = struct<Omit<ChunkItem, 'stripes'>>('chunk_item', [
  u64('length'), u64('owner'), u64('stripe_len'), u64('type'), u32('io_align'), u32('io_width'),
  u32('sector_size'), u16('num_stripes'), u16('sub_stripes'),
]);
export const stripeCodec = struct<Stripe>('stripe', [u64('devid'), u64('offset'), bytes(16, 'dev_uuid')]);

export const CHUNK_ITEM_HEAD_SIZE = chunkHead.size;
export const STRIPE_SIZE = stripeCodec.size;

export function chunkItemSize(numStripes: number): number {
  return CHUNK_ITEM_HEAD_SIZE + numStripes * STRIPE_SIZE;
}

/** Decodes a chunk item; `avail` bounds it (the item size, or what is left of sys_chunk_array). */
export function decodeChunkItem(b: Buffer, off: number, avail: number): ChunkItem {
  if (avail < CHUNK_ITEM_HEAD_SIZE) throw corrupt(`chunk item too short: ${avail} bytes`);
  needBytes(b, off, CHUNK_ITEM_HEAD_SIZE, 'chunk_item');
  const head = chunkHead.decode(b, off);
  if (head.num_stripes === 0) throw corrupt('chunk item with zero stripes');
  const need = chunkItemSize(head.num_stripes);
  if (need > avail) throw corrupt(`chunk item with ${head.num_stripes} stripes needs ${need} bytes, has ${avail}`);
  const stripes: Stripe[] = [];
  for (let i = 0; i < head.num_stripes; i++) stripes.push(stripeCodec.decode(b, off + CHUNK_ITEM_HEAD_SIZE + i * STRIPE_SIZE));
  return { ...head, stripes };
}

export function encodeChunkItem(c: ChunkItem): Buffer {
  const out = Buffer.alloc(chunkItemSize(c.stripes.length));
  chunkHead.encode({ ...c, num_stripes: c.stripes.length }, out, 0);
  c.stripes.forEach((s, i) => stripeCodec.encode(s, out, CHUNK_ITEM_HEAD_SIZE + i * STRIPE_SIZE));
  return out;
}
