/**
 * The superblock (4096 bytes at 64 KiB; mirrors at 64 MiB and 256 GiB).
 * Offsets as on disk:
 *    0 csum[32]            32 fsid[16]            48 bytenr             56 flags
 *   64 magic              72 generation          80 root               88 chunk_root
 *   96 log_root          104 log_root_transid   112 total_bytes        120 bytes_used
 *  128 root_dir_objectid 136 num_devices        144 sectorsize u32     148 nodesize u32
 *  152 leafsize u32      156 stripesize u32     160 sys_chunk_array_size u32
 *  164 chunk_root_generation 172 compat_flags   180 compat_ro_flags    188 incompat_flags
 *  196 csum_type u16     198 root_level u8      199 chunk_root_level   200 log_root_level
 *  201 dev_item[98]      299 label[256]         555 cache_generation   563 uuid_tree_generation
 *  571 metadata_uuid[16] 587 nr_global_roots    595 block_group_root   603 block_group_root_generation
 *  611 block_group_root_level u8, 7 pad         619 reserved[24 × u64]
 *  811 sys_chunk_array[2048]                    2859 super_roots[4 × 168]   3531 padding[565]
 */
import { struct, u8, u16, u32, u64, bytes, nested, type Codec } from './layout.js';
import { devItem, type DevItem } from './items/dev-item.js';
import { MAGIC, SUPER_INFO_SIZE } from './constants.js';
import { corrupt } from '../util/errors.js';
import { checksum, csumSize } from '../util/checksum.js';

export interface RootBackup {
  tree_root: bigint; tree_root_gen: bigint;
  chunk_root: bigint; chunk_root_gen: bigint;
  extent_root: bigint; extent_root_gen: bigint;
  fs_root: bigint; fs_root_gen: bigint;
  dev_root: bigint; dev_root_gen: bigint;
  csum_root: bigint; csum_root_gen: bigint;
  total_bytes: bigint; bytes_used: bigint; num_devices: bigint;
  unused_64: Buffer;
  tree_root_level: number; chunk_root_level: number; extent_root_level: number;
  fs_root_level: number; dev_root_level: number; csum_root_level: number;
  unused_8: Buffer;
}

export const rootBackupCodec = struct<RootBackup>('root_backup', [
  u64('tree_root'), u64('tree_root_gen'), u64('chunk_root'), u64('chunk_root_gen'),
  u64('extent_root'), u64('extent_root_gen'), u64('fs_root'), u64('fs_root_gen'),
  u64('dev_root'), u64('dev_root_gen'), u64('csum_root'), u64('csum_root_gen'),
  u64('total_bytes'), u64('bytes_used'), u64('num_devices'), bytes(32, 'unused_64'),
  u8('tree_root_level'), u8('chunk_root_level'), u8('extent_root_level'),
  u8('fs_root_level'), u8('dev_root_level'), u8('csum_root_level'), bytes(10, 'unused_8'),
]);

export interface Superblock {
  csum: Buffer;
  fsid: Buffer;
  bytenr: bigint;
  flags: bigint;
  magic: Buffer;
  generation: bigint;
  root: bigint;
  chunk_root: bigint;
  log_root: bigint;
  log_root_transid: bigint;
  total_bytes: bigint;
  bytes_used: bigint;
  root_dir_objectid: bigint;
  num_devices: bigint;
  sectorsize: number;
  nodesize: number;
  leafsize: number;
  stripesize: number;
  sys_chunk_array_size: number;
  chunk_root_generation: bigint;
  compat_flags: bigint;
  compat_ro_flags: bigint;
  incompat_flags: bigint;
  csum_type: number;
  root_level: number;
  chunk_root_level: number;
  log_root_level: number;
  dev_item: DevItem;
  label: Buffer;
  cache_generation: bigint;
  uuid_tree_generation: bigint;
  metadata_uuid: Buffer;
  nr_global_roots: bigint;
  block_group_root: bigint;
  block_group_root_generation: bigint;
  block_group_root_level: number;
  pad0: Buffer;
  reserved: Buffer;
  sys_chunk_array: Buffer;
  super_roots: RootBackup[];
  padding: Buffer;
}

const backupsLayout = () => {
  const n = nested(rootBackupCodec, 'x');
  return [0, 1, 2, 3].map((i) => n.replicate(`b${i}`));
};

const raw: Codec<any> = struct('superblock', [
  bytes(32, 'csum'), bytes(16, 'fsid'), u64('bytenr'), u64('flags'), bytes(8, 'magic'),
  u64('generation'), u64('root'), u64('chunk_root'), u64('log_root'), u64('log_root_transid'),
  u64('total_bytes'), u64('bytes_used'), u64('root_dir_objectid'), u64('num_devices'),
  u32('sectorsize'), u32('nodesize'), u32('leafsize'), u32('stripesize'), u32('sys_chunk_array_size'),
  u64('chunk_root_generation'), u64('compat_flags'), u64('compat_ro_flags'), u64('incompat_flags'),
  u16('csum_type'), u8('root_level'), u8('chunk_root_level'), u8('log_root_level'),
  nested(devItem, 'dev_item'), bytes(256, 'label'), u64('cache_generation'), u64('uuid_tree_generation'),
  bytes(16, 'metadata_uuid'), u64('nr_global_roots'), u64('block_group_root'),
  u64('block_group_root_generation'), u8('block_group_root_level'), bytes(7, 'pad0'),
  bytes(192, 'reserved'), bytes(2048, 'sys_chunk_array'), ...backupsLayout(), bytes(565, 'padding'),
]);

if (raw.size !== SUPER_INFO_SIZE) throw new Error(`superblock layout is ${raw.size} bytes, expected 4096`);

export function decodeSuperblock(b: Buffer, off = 0): Superblock {
  const r = raw.decode(b, off);
  const super_roots = [r.b0, r.b1, r.b2, r.b3];
  delete r.b0; delete r.b1; delete r.b2; delete r.b3;
  return { ...r, super_roots } as Superblock;
}

/** Encodes without touching the checksum field; see sealSuperblock. */
export function encodeSuperblock(sb: Superblock): Buffer {
  const out = Buffer.alloc(SUPER_INFO_SIZE);
  const { super_roots, ...rest } = sb;
  raw.encode({ ...rest, b0: super_roots[0], b1: super_roots[1], b2: super_roots[2], b3: super_roots[3] }, out, 0);
  return out;
}

/** Computes and stores the checksum of an encoded superblock in place. */
export function sealSuperblock(b: Buffer, csumType: number): void {
  b.fill(0, 0, 32);
  checksum(csumType, b.subarray(32, SUPER_INFO_SIZE)).copy(b, 0);
}

/** True when the stored checksum matches the contents. */
export function superblockCsumOk(b: Buffer, csumType: number): boolean {
  const want = checksum(csumType, b.subarray(32, SUPER_INFO_SIZE));
  return b.subarray(0, csumSize(csumType)).equals(want);
}

export function hasMagic(b: Buffer): boolean {
  return b.length >= 72 && b.subarray(64, 72).equals(MAGIC);
}

/** The label as a string (NUL-terminated on disk). */
export function labelOf(sb: Superblock): string {
  const end = sb.label.indexOf(0);
  return sb.label.subarray(0, end < 0 ? sb.label.length : end).toString('utf8');
}

/**
 * Basic sanity of a decoded superblock, as the kernel's btrfs_validate_super:
 * sizes that everything else divides by must be sane before they are used.
 */
export function validateSuperblock(sb: Superblock, where = 'superblock'): void {
  const pow2 = (v: number) => v > 0 && (v & (v - 1)) === 0;
  if (!sb.magic.equals(MAGIC)) throw corrupt(`${where}: bad magic`);
  if (!pow2(sb.sectorsize) || sb.sectorsize < 4096 || sb.sectorsize > 65536) throw corrupt(`${where}: invalid sectorsize ${sb.sectorsize}`);
  if (!pow2(sb.nodesize) || sb.nodesize < sb.sectorsize || sb.nodesize > 65536) throw corrupt(`${where}: invalid nodesize ${sb.nodesize}`);
  if (sb.csum_type > 3) throw corrupt(`${where}: unknown csum type ${sb.csum_type}`);
  if (sb.sys_chunk_array_size > 2048) throw corrupt(`${where}: sys_chunk_array_size ${sb.sys_chunk_array_size} too large`);
  if (sb.sys_chunk_array_size < 17 + 48 + 32) throw corrupt(`${where}: sys_chunk_array_size ${sb.sys_chunk_array_size} too small`);
  const align = BigInt(sb.sectorsize);
  for (const [name, v] of [['root', sb.root], ['chunk_root', sb.chunk_root]] as const) {
    if (v % align !== 0n || v === 0n) throw corrupt(`${where}: ${name} ${v} unaligned or zero`);
  }
  if (sb.root_level > 7 || sb.chunk_root_level > 7) throw corrupt(`${where}: tree level too high`);
  if (sb.total_bytes === 0n) throw corrupt(`${where}: total_bytes is 0`);
  if (sb.num_devices === 0n) throw corrupt(`${where}: num_devices is 0`);
  if (sb.generation === 0n) throw corrupt(`${where}: generation is 0`);
}
