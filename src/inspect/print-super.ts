/**
 * The superblock as `btrfs inspect-internal dump-super [-f]` of btrfs-progs
 * 6.2 prints it. Pure: the caller reads the 4096 bytes and passes both the
 * decoded superblock and the raw bytes (the checksum is verified on the raw
 * bytes; for xxhash64 images `await initChecksums()` first).
 */
import type { Superblock, RootBackup } from '../format/superblock.js';
import { superblockCsumOk } from '../format/superblock.js';
import { MAGIC, FEATURE_INCOMPAT, FEATURE_COMPAT_RO, SUPER_FLAG, HEADER_FLAG, KEY, SYSTEM_CHUNK_ARRAY_SIZE, NUM_BACKUP_ROOTS } from '../format/constants.js';
import { decodeKey } from '../format/key.js';
import { decodeChunkItem, chunkItemSize } from '../format/items/chunk-item.js';
import { uuidToString } from '../util/bytes.js';
import { keyToString, printChunkItem } from './print-tree.js';

export interface PrintSuperOptions {
  /** -f: also the sys_chunk_array and the backup roots */
  full?: boolean;
  /**
   * When set, frame the fields as the dump-super command does: a heading
   * ("superblock: bytenr=..., device=..." and a rule) and a blank line after.
   */
  device?: string;
}

// progs' names for csum types in the superblock dump (blake2, not blake2b)
const CSUM_NAMES: Record<number, string> = { 0: 'crc32c', 1: 'xxhash64', 2: 'sha256', 3: 'blake2' };
const CSUM_SIZES: Record<number, number> = { 0: 4, 1: 8, 2: 32, 3: 32 };

type FlagTable = Array<[bigint, string]>;

const SUPER_FLAGS: FlagTable = [
  [HEADER_FLAG.WRITTEN, 'WRITTEN'], [HEADER_FLAG.RELOC, 'RELOC'], [SUPER_FLAG.CHANGING_FSID, 'CHANGING_FSID'],
  [SUPER_FLAG.SEEDING, 'SEEDING'], [SUPER_FLAG.METADUMP, 'METADUMP'], [SUPER_FLAG.METADUMP_V2, 'METADUMP_V2'],
];
const SUPER_FLAGS_KNOWN = SUPER_FLAGS.reduce((m, [b]) => m | b, 0n);

const COMPAT_RO_FLAGS: FlagTable = [
  [FEATURE_COMPAT_RO.FREE_SPACE_TREE, 'FREE_SPACE_TREE'], [FEATURE_COMPAT_RO.FREE_SPACE_TREE_VALID, 'FREE_SPACE_TREE_VALID'],
  [FEATURE_COMPAT_RO.BLOCK_GROUP_TREE, 'BLOCK_GROUP_TREE'],
];
// VERITY counts as known (so not "unknown flag") yet has no name in progs 6.2's table
const COMPAT_RO_KNOWN = FEATURE_COMPAT_RO.FREE_SPACE_TREE | FEATURE_COMPAT_RO.FREE_SPACE_TREE_VALID |
  FEATURE_COMPAT_RO.VERITY | FEATURE_COMPAT_RO.BLOCK_GROUP_TREE;

const I = FEATURE_INCOMPAT;
const INCOMPAT_FLAGS: FlagTable = [
  [I.MIXED_BACKREF, 'MIXED_BACKREF'], [I.DEFAULT_SUBVOL, 'DEFAULT_SUBVOL'], [I.MIXED_GROUPS, 'MIXED_GROUPS'],
  [I.COMPRESS_LZO, 'COMPRESS_LZO'], [I.COMPRESS_ZSTD, 'COMPRESS_ZSTD'], [I.BIG_METADATA, 'BIG_METADATA'],
  [I.EXTENDED_IREF, 'EXTENDED_IREF'], [I.RAID56, 'RAID56'], [I.SKINNY_METADATA, 'SKINNY_METADATA'],
  [I.NO_HOLES, 'NO_HOLES'], [I.METADATA_UUID, 'METADATA_UUID'], [I.RAID1C34, 'RAID1C34'], [I.ZONED, 'ZONED'],
  [I.EXTENT_TREE_V2, 'EXTENT_TREE_V2'],
];
// a release build of progs 6.2 does not support EXTENT_TREE_V2 and reports it as unknown
const INCOMPAT_KNOWN = I.MIXED_BACKREF | I.DEFAULT_SUBVOL | I.COMPRESS_LZO | I.COMPRESS_ZSTD | I.BIG_METADATA |
  I.EXTENDED_IREF | I.RAID56 | I.MIXED_GROUPS | I.SKINNY_METADATA | I.NO_HOLES | I.RAID1C34 | I.METADATA_UUID | I.ZONED;

/** The "( A |\n  B )" block under a flags line; nothing when no bit is set. */
function readableFlags(flags: bigint, table: FlagTable, known: bigint): string[] {
  if (!flags) return [];
  const parts: string[] = [];
  if (flags & known) for (const [bit, name] of table) if (flags & bit) parts.push(`${name} `);
  const unknown = flags & ~known;
  if (unknown) parts.push(`unknown flag: 0x${unknown.toString(16)} `);
  // the entries are joined by "|" and a continuation indent, the block closed by ")"
  const text = `\t\t\t( ${parts.join('|\n\t\t\t  ')})`;
  return text.split('\n');
}

/** Bytes as printf("%c") with isprint() in the C locale: anything else becomes '.'. */
function printable(b: Buffer): string {
  let s = '';
  for (const c of b) s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : '.';
  return s;
}

function printSysChunkArray(sb: Superblock): string[] {
  const out: string[] = [];
  const size = sb.sys_chunk_array_size;
  if (size > SYSTEM_CHUNK_ARRAY_SIZE) {
    // progs reports this on stderr and prints no items
    return out;
  }
  const arr = sb.sys_chunk_array;
  let off = 0;
  let item = 0;
  while (off < size) {
    if (off + 17 > size) break;
    const k = decodeKey(arr, off);
    off += 17;
    out.push(`\titem ${item} ${keyToString(k)}`);
    if (k.type !== KEY.CHUNK_ITEM) break;
    if (off + chunkItemSize(1) > size) break;
    const n = arr.readUInt16LE(off + 44);
    if (n === 0) break;
    const len = chunkItemSize(n);
    if (off + len > size) break;
    out.push(...printChunkItem(decodeChunkItem(arr, off, len)));
    off += len;
    item++;
  }
  return out;
}

function printBackup(b: RootBackup, extentTreeV2: boolean): string[] {
  return [
    `\t\tbackup_tree_root:\t${b.tree_root}\tgen: ${b.tree_root_gen}\tlevel: ${b.tree_root_level}`,
    `\t\tbackup_chunk_root:\t${b.chunk_root}\tgen: ${b.chunk_root_gen}\tlevel: ${b.chunk_root_level}`,
    `\t\t${extentTreeV2 ? 'backup_block_group_root' : 'backup_extent_root'}:\t${b.extent_root}\tgen: ${b.extent_root_gen}\tlevel: ${b.extent_root_level}`,
    `\t\tbackup_fs_root:\t\t${b.fs_root}\tgen: ${b.fs_root_gen}\tlevel: ${b.fs_root_level}`,
    `\t\tbackup_dev_root:\t${b.dev_root}\tgen: ${b.dev_root_gen}\tlevel: ${b.dev_root_level}`,
    `\t\tcsum_root:\t${b.csum_root}\tgen: ${b.csum_root_gen}\tlevel: ${b.csum_root_level}`,
    `\t\tbackup_total_bytes:\t${b.total_bytes}`,
    `\t\tbackup_bytes_used:\t${b.bytes_used}`,
    `\t\tbackup_num_devices:\t${b.num_devices}`,
    '',
  ];
}

/** The dump-super text, each line ending in "\n". `raw` is the superblock's 4096 bytes as read. */
export function printSuperblock(sb: Superblock, raw: Buffer, opts: PrintSuperOptions = {}): string {
  const out: string[] = [];
  if (opts.device !== undefined) {
    out.push(`superblock: bytenr=${sb.bytenr}, device=${opts.device}`);
    out.push('---------------------------------------------------------');
  }
  const valid = CSUM_NAMES[sb.csum_type] !== undefined;
  const csumSize = valid ? CSUM_SIZES[sb.csum_type]! : 32;
  out.push(`csum_type\t\t${sb.csum_type} (${valid ? CSUM_NAMES[sb.csum_type] : 'INVALID'})`);
  out.push(`csum_size\t\t${csumSize}`);
  let verdict: string;
  if (!valid) verdict = ' [UNKNOWN CSUM TYPE OR SIZE]';
  else verdict = superblockCsumOk(raw, sb.csum_type) ? ' [match]' : " [DON'T MATCH]";
  out.push(`csum\t\t\t0x${sb.csum.subarray(0, csumSize).toString('hex')}${verdict}`);
  out.push(`bytenr\t\t\t${sb.bytenr}`);
  out.push(`flags\t\t\t0x${sb.flags.toString(16)}`);
  out.push(...readableFlags(sb.flags, SUPER_FLAGS, SUPER_FLAGS_KNOWN));
  out.push(`magic\t\t\t${printable(sb.magic)}${sb.magic.equals(MAGIC) ? ' [match]' : " [DON'T MATCH]"}`);
  const hasMetadataUuid = (sb.incompat_flags & I.METADATA_UUID) !== 0n;
  out.push(`fsid\t\t\t${uuidToString(sb.fsid)}`);
  out.push(`metadata_uuid\t\t${uuidToString(hasMetadataUuid ? sb.metadata_uuid : sb.fsid)}`);
  const labelEnd = sb.label.indexOf(0);
  out.push(`label\t\t\t${printable(sb.label.subarray(0, labelEnd < 0 ? sb.label.length : labelEnd))}`);
  out.push(`generation\t\t${sb.generation}`);
  out.push(`root\t\t\t${sb.root}`);
  out.push(`sys_array_size\t\t${sb.sys_chunk_array_size}`);
  out.push(`chunk_root_generation\t${sb.chunk_root_generation}`);
  out.push(`root_level\t\t${sb.root_level}`);
  out.push(`chunk_root\t\t${sb.chunk_root}`);
  out.push(`chunk_root_level\t${sb.chunk_root_level}`);
  out.push(`log_root\t\t${sb.log_root}`);
  out.push(`log_root_transid (deprecated)\t${sb.log_root_transid}`);
  out.push(`log_root_level\t\t${sb.log_root_level}`);
  out.push(`total_bytes\t\t${sb.total_bytes}`);
  out.push(`bytes_used\t\t${sb.bytes_used}`);
  out.push(`sectorsize\t\t${sb.sectorsize}`);
  out.push(`nodesize\t\t${sb.nodesize}`);
  out.push(`leafsize (deprecated)\t${sb.leafsize}`);
  out.push(`stripesize\t\t${sb.stripesize}`);
  out.push(`root_dir\t\t${sb.root_dir_objectid}`);
  out.push(`num_devices\t\t${sb.num_devices}`);
  out.push(`compat_flags\t\t0x${sb.compat_flags.toString(16)}`);
  out.push(`compat_ro_flags\t\t0x${sb.compat_ro_flags.toString(16)}`);
  out.push(...readableFlags(sb.compat_ro_flags, COMPAT_RO_FLAGS, COMPAT_RO_KNOWN));
  out.push(`incompat_flags\t\t0x${sb.incompat_flags.toString(16)}`);
  out.push(...readableFlags(sb.incompat_flags, INCOMPAT_FLAGS, INCOMPAT_KNOWN));
  out.push(`cache_generation\t${sb.cache_generation}`);
  out.push(`uuid_tree_generation\t${sb.uuid_tree_generation}`);
  const di = sb.dev_item;
  out.push(`dev_item.uuid\t\t${uuidToString(di.uuid)}`);
  const fsidMatch = di.fsid.equals(hasMetadataUuid ? sb.metadata_uuid : sb.fsid);
  out.push(`dev_item.fsid\t\t${uuidToString(di.fsid)} ${fsidMatch ? '[match]' : "[DON'T MATCH]"}`);
  out.push(`dev_item.type\t\t${di.type}`);
  out.push(`dev_item.total_bytes\t${di.total_bytes}`);
  out.push(`dev_item.bytes_used\t${di.bytes_used}`);
  out.push(`dev_item.io_align\t${di.io_align}`);
  out.push(`dev_item.io_width\t${di.io_width}`);
  out.push(`dev_item.sector_size\t${di.sector_size}`);
  out.push(`dev_item.devid\t\t${di.devid}`);
  out.push(`dev_item.dev_group\t${di.dev_group}`);
  out.push(`dev_item.seek_speed\t${di.seek_speed}`);
  out.push(`dev_item.bandwidth\t${di.bandwidth}`);
  out.push(`dev_item.generation\t${di.generation}`);
  if (opts.full) {
    out.push(`sys_chunk_array[${SYSTEM_CHUNK_ARRAY_SIZE}]:`);
    out.push(...printSysChunkArray(sb));
    out.push(`backup_roots[${NUM_BACKUP_ROOTS}]:`);
    const v2 = (sb.incompat_flags & I.EXTENT_TREE_V2) !== 0n;
    sb.super_roots.forEach((b, i) => {
      // an all-zero slot (tree root and its generation both 0) is skipped
      if (b.tree_root === 0n && b.tree_root_gen === 0n) return;
      out.push(`\tbackup ${i}:`);
      out.push(...printBackup(b, v2));
    });
  }
  if (opts.device !== undefined) out.push('');
  return out.join('\n') + '\n';
}
