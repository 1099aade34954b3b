/**
 * Tree block header (101 bytes), then items (leaf) or key pointers (node).
 *   0 csum[32] | 32 fsid[16] | 48 bytenr u64 | 56 flags u64 (top byte: backref rev)
 *  64 chunk_tree_uuid[16] | 80 generation u64 | 88 owner u64 | 96 nritems u32 | 100 level u8
 * Leaf item (25): key[17] | offset u32 | size u32   (offset is from the end of the header)
 * Key ptr (33):   key[17] | blockptr u64 | generation u64
 */
import { struct, u8, u32, u64, bytes, nested } from './layout.js';
import { type Key } from './key.js';
import { keyCodec } from './key-codec.js';

export interface Header {
  csum: Buffer;
  fsid: Buffer;
  bytenr: bigint;
  flags: bigint;
  chunk_tree_uuid: Buffer;
  generation: bigint;
  owner: bigint;
  nritems: number;
  level: number;
}

export const headerCodec = struct<Header>('header', [
  bytes(32, 'csum'), bytes(16, 'fsid'), u64('bytenr'), u64('flags'), bytes(16, 'chunk_tree_uuid'),
  u64('generation'), u64('owner'), u32('nritems'), u8('level'),
]);

export interface ItemHeader { key: Key; offset: number; size: number }
export const itemCodec = struct<ItemHeader>('item', [nested(keyCodec, 'key'), u32('offset'), u32('size')]);

export interface KeyPtr { key: Key; blockptr: bigint; generation: bigint }
export const keyPtrCodec = struct<KeyPtr>('key_ptr', [nested(keyCodec, 'key'), u64('blockptr'), u64('generation')]);

/** The low 56 bits of header.flags are flags; the top 8 the backref revision. */
export function headerBackrefRev(flags: bigint): bigint { return flags >> 56n; }
export function headerFlagBits(flags: bigint): bigint { return flags & ((1n << 56n) - 1n); }
