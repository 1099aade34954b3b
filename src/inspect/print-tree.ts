/**
 * Text dumps of tree blocks in the exact format of `btrfs inspect-internal
 * dump-tree` from btrfs-progs 6.2, so that output can be diffed against the
 * reference tool line for line. Pure functions: the caller reads the block.
 *
 * Where progs prints something odd (e.g. "DATA|single", a leading "|" in
 * "|FULL_BACKREF", names cut at a NUL byte, the missing newline after
 * "unknown stats item bytes"), this does the same on purpose.
 */
import type { TreeBlock } from '../format/tree-block.js';
import type { Key } from '../format/key.js';
import { decodeKey } from '../format/key.js';
import { HEADER_SIZE, ITEM_SIZE, KEY_PTR_SIZE, KEY, OBJ, BLOCK_GROUP, EXTENT_FLAG, INODE_FLAG, HEADER_FLAG, QGROUP_STATUS_FLAG, ROOT_FLAG } from '../format/constants.js';
import { uuidToString } from '../util/bytes.js';
import type { Timespec } from '../format/layout.js';
import { decodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { decodeRootItem } from '../format/items/root-item.js';
import { decodeExtentItem, EXTENT_ITEM_HEAD_SIZE } from '../format/items/extent-item.js';
import { decodeChunkItem, CHUNK_ITEM_HEAD_SIZE, type ChunkItem } from '../format/items/chunk-item.js';
import { devItem } from '../format/items/dev-item.js';
import { FILE_EXTENT_INLINE_DATA_START, FILE_EXTENT_ITEM_SIZE } from '../format/items/file-extent-item.js';
import { DIR_ITEM_HEAD_SIZE } from '../format/items/dir-item.js';
import { INODE_REF_HEAD_SIZE } from '../format/items/inode-ref.js';
import { INODE_EXTREF_HEAD_SIZE } from '../format/items/inode-extref.js';
import { ROOT_REF_HEAD_SIZE } from '../format/items/root-ref.js';
import { decodeBalanceItem, type BalanceArgs } from '../format/items/balance-item.js';
import { qgroupLevel, qgroupSubvolid } from '../format/items/qgroup.js';

/**
 * What the printer needs beyond the block itself.
 *  - csumSize, sectorsize: EXTENT_CSUM items print the range they cover
 *    (item_size / csumSize sectors of sectorsize bytes).
 *  - nodesize: a node's "free space" is the number of unused key pointers.
 *  - csumHeaders / csumItems: the --csum-headers and --csum-items options.
 *  - hideNames: the --hide-names option (names and xattr values as HIDDEN).
 *  - utc: print timestamps in UTC instead of the process's local time zone
 *    (progs uses local time; set this, or run with TZ=UTC, for stable output).
 */
export interface PrintContext {
  csumType: number;
  csumSize: number;
  nodesize: number;
  sectorsize: number;
  csumHeaders?: boolean;
  csumItems?: boolean;
  hideNames?: boolean;
  utc?: boolean;
}

const U64_NEG1 = 0xffff_ffff_ffff_ffffn;
const NAME_LEN = 255;

/** Key type names exactly as progs 6.2 knows them (no EXTENT_OWNER_REF, RAID_STRIPE: those are newer). */
const KEY_TYPE_NAMES: Record<number, string> = {
  1: 'INODE_ITEM', 12: 'INODE_REF', 13: 'INODE_EXTREF', 84: 'DIR_ITEM', 96: 'DIR_INDEX',
  60: 'DIR_LOG_ITEM', 72: 'DIR_LOG_INDEX', 24: 'XATTR_ITEM', 36: 'VERITY_DESC_ITEM',
  37: 'VERITY_MERKLE_ITEM', 48: 'ORPHAN_ITEM', 132: 'ROOT_ITEM', 156: 'ROOT_REF', 144: 'ROOT_BACKREF',
  168: 'EXTENT_ITEM', 169: 'METADATA_ITEM', 176: 'TREE_BLOCK_REF', 182: 'SHARED_BLOCK_REF',
  178: 'EXTENT_DATA_REF', 184: 'SHARED_DATA_REF', 180: 'EXTENT_REF_V0', 120: 'CSUM_ITEM',
  128: 'EXTENT_CSUM', 108: 'EXTENT_DATA', 192: 'BLOCK_GROUP_ITEM', 198: 'FREE_SPACE_INFO',
  199: 'FREE_SPACE_EXTENT', 200: 'FREE_SPACE_BITMAP', 228: 'CHUNK_ITEM', 216: 'DEV_ITEM',
  204: 'DEV_EXTENT', 248: 'TEMPORARY_ITEM', 250: 'DEV_REPLACE', 253: 'STRING_ITEM',
  240: 'QGROUP_STATUS', 246: 'QGROUP_RELATION', 242: 'QGROUP_INFO', 244: 'QGROUP_LIMIT',
  249: 'PERSISTENT_ITEM', 251: 'UUID_KEY_SUBVOL', 252: 'UUID_KEY_RECEIVED_SUBVOL',
};

const CSUM_ITEM_KEY = 120;
const CSUM_TREE_TMP_OBJECTID = 13n;

/** Well-known objectids by value, as print_objectid names them (type-dependent ones handled there). */
const OBJECTID_NAMES = new Map<bigint, string>([
  [OBJ.EXTENT_TREE, 'EXTENT_TREE'], [OBJ.CHUNK_TREE, 'CHUNK_TREE'], [OBJ.DEV_TREE, 'DEV_TREE'],
  [OBJ.FS_TREE, 'FS_TREE'], [OBJ.ROOT_TREE_DIR, 'ROOT_TREE_DIR'], [OBJ.CSUM_TREE, 'CSUM_TREE'],
  [OBJ.BALANCE, 'BALANCE'], [OBJ.ORPHAN, 'ORPHAN'], [OBJ.TREE_LOG, 'TREE_LOG'],
  [OBJ.TREE_LOG_FIXUP, 'LOG_FIXUP'], [OBJ.TREE_RELOC, 'TREE_RELOC'], [OBJ.DATA_RELOC_TREE, 'DATA_RELOC_TREE'],
  [OBJ.EXTENT_CSUM, 'EXTENT_CSUM'], [OBJ.FREE_SPACE, 'FREE_SPACE'], [OBJ.FREE_INO, 'FREE_INO'],
  [OBJ.QUOTA_TREE, 'QUOTA_TREE'], [OBJ.UUID_TREE, 'UUID_TREE'], [OBJ.FREE_SPACE_TREE, 'FREE_SPACE_TREE'],
  [OBJ.MULTIPLE, 'MULTIPLE'], [OBJ.BLOCK_GROUP_TREE, 'BLOCK_GROUP_TREE'], [U64_NEG1, '-1'],
]);

const hex16 = (v: bigint) => `0x${v.toString(16).padStart(16, '0')}`;

/** An objectid as progs prints it; `type` is the key type it goes with (0 when it stands alone). */
export function objectidToString(objectid: bigint, type: number): string {
  switch (type) {
    case KEY.PERSISTENT_ITEM:
      return objectid === OBJ.DEV_STATS ? 'DEV_STATS' : objectid.toString();
    case KEY.DEV_EXTENT:
      return objectid.toString();
    case KEY.QGROUP_RELATION:
      return `${qgroupLevel(objectid)}/${qgroupSubvolid(objectid)}`;
    case KEY.UUID_KEY_SUBVOL:
    case KEY.UUID_KEY_RECEIVED_SUBVOL:
      return hex16(objectid);
  }
  // ROOT_TREE and DEV_ITEMS share the value 1; FIRST_CHUNK_TREE is only named in a chunk key
  if (objectid === OBJ.ROOT_TREE) return type === KEY.DEV_ITEM ? 'DEV_ITEMS' : 'ROOT_TREE';
  const name = OBJECTID_NAMES.get(objectid);
  if (name !== undefined) return name;
  if (objectid === OBJ.FIRST_CHUNK_TREE && type === KEY.CHUNK_ITEM) return 'FIRST_CHUNK_TREE';
  return objectid.toString();
}

/** Alias of objectidToString. */
export const objectidName = objectidToString;

export function keyTypeToString(objectid: bigint, type: number): string {
  if (type === 0 && objectid === OBJ.FREE_SPACE) return 'UNTYPED';
  return KEY_TYPE_NAMES[type] ?? `UNKNOWN.${type}`;
}

/** `key (OBJECTID TYPE OFFSET)` as btrfs_print_key prints it. */
export function keyToString(k: Key): string {
  let off: string;
  switch (k.type) {
    case KEY.QGROUP_RELATION:
    case KEY.QGROUP_INFO:
    case KEY.QGROUP_LIMIT:
      off = `${qgroupLevel(k.offset)}/${qgroupSubvolid(k.offset)}`;
      break;
    case KEY.UUID_KEY_SUBVOL:
    case KEY.UUID_KEY_RECEIVED_SUBVOL:
      off = hex16(k.offset);
      break;
    case KEY.ROOT_ITEM:
      // a reloc tree's ROOT_ITEM offset is the id of the tree it relocates
      off = k.objectid === OBJ.TREE_RELOC ? objectidToString(k.offset, k.type) : k.offset.toString();
      break;
    default:
      off = k.offset === U64_NEG1 ? '-1' : k.offset.toString();
  }
  return `key (${objectidToString(k.objectid, k.type)} ${keyTypeToString(k.objectid, k.type)} ${off})`;
}

/** Block group / chunk type flags, e.g. "DATA|single", "METADATA|DUP", "DATA|METADATA". */
export function blockGroupFlagsToString(flags: bigint): string {
  let s = '';
  let empty = true;
  if (flags & BLOCK_GROUP.DATA) { empty = false; s = 'DATA'; }
  // progs never clears `empty` after METADATA, so METADATA|SYSTEM would run together; keep it
  if (flags & BLOCK_GROUP.METADATA) s += (empty ? '' : '|') + 'METADATA';
  if (flags & BLOCK_GROUP.SYSTEM) s += (empty ? '' : '|') + 'SYSTEM';
  let profile: string;
  if (flags & BLOCK_GROUP.RAID10) profile = 'RAID10';
  else if (flags & BLOCK_GROUP.RAID1) profile = 'RAID1';
  else if (flags & BLOCK_GROUP.RAID1C3) profile = 'RAID1C3';
  else if (flags & BLOCK_GROUP.RAID1C4) profile = 'RAID1C4';
  else if (flags & BLOCK_GROUP.DUP) profile = 'DUP';
  else if (flags & BLOCK_GROUP.RAID0) profile = 'RAID0';
  else if (flags & BLOCK_GROUP.RAID5) profile = 'RAID5';
  else if (flags & BLOCK_GROUP.RAID6) profile = 'RAID6';
  // progs only skips an upper-case "SINGLE", and the table spells it in lower case
  else profile = 'single';
  return `${s}|${profile}`;
}

function extentFlagsToString(flags: bigint): string {
  let s = '';
  let empty = true;
  if (flags & EXTENT_FLAG.DATA) { empty = false; s = 'DATA'; }
  if (flags & EXTENT_FLAG.TREE_BLOCK) s += (empty ? '' : '|') + 'TREE_BLOCK';
  if (flags & EXTENT_FLAG.FULL_BACKREF) s += '|FULL_BACKREF';
  return s;
}

const INODE_FLAG_ORDER: Array<[string, bigint]> = [
  ['NODATASUM', INODE_FLAG.NODATASUM], ['NODATACOW', INODE_FLAG.NODATACOW], ['READONLY', INODE_FLAG.READONLY],
  ['NOCOMPRESS', INODE_FLAG.NOCOMPRESS], ['PREALLOC', INODE_FLAG.PREALLOC], ['SYNC', INODE_FLAG.SYNC],
  ['IMMUTABLE', INODE_FLAG.IMMUTABLE], ['APPEND', INODE_FLAG.APPEND], ['NODUMP', INODE_FLAG.NODUMP],
  ['NOATIME', INODE_FLAG.NOATIME], ['DIRSYNC', INODE_FLAG.DIRSYNC], ['COMPRESS', INODE_FLAG.COMPRESS],
];

function inodeFlagsToString(flags: bigint): string {
  const names = INODE_FLAG_ORDER.filter(([, bit]) => flags & bit).map(([n]) => n);
  return names.length ? names.join('|') : 'none';
}

function headerFlagsToString(flags: bigint): string {
  const names: string[] = [];
  if (flags & HEADER_FLAG.WRITTEN) names.push('WRITTEN');
  if (flags & HEADER_FLAG.RELOC) names.push('RELOC');
  return names.join('|');
}

function qgroupFlagsToString(flags: bigint): string {
  let s = flags & QGROUP_STATUS_FLAG.ON ? 'ON' : 'OFF';
  if (flags & QGROUP_STATUS_FLAG.RESCAN) s += '|SCANNING';
  if (flags & QGROUP_STATUS_FLAG.INCONSISTENT) s += '|INCONSISTENT';
  return s;
}

function compressionName(c: number): string {
  return ['none', 'zlib', 'lzo', 'zstd'][c] ?? `UNKNOWN.${c}`;
}

function fileExtentTypeName(t: number): string {
  return t === 0 ? 'inline' : t === 1 ? 'regular' : t === 2 ? 'prealloc' : 'unknown';
}

const DIR_TYPE_NAMES: Record<number, string> = {
  1: 'FILE', 2: 'DIR', 3: 'CHRDEV', 4: 'BLKDEV', 5: 'FIFO', 6: 'SOCK', 7: 'SYMLINK', 8: 'XATTR',
};

/**
 * A name as printf("%.*s") shows it: at most `max` bytes, cut at the first
 * NUL. Decoded as UTF-8 (what a terminal would show for progs' raw bytes).
 */
function cstr(b: Buffer, max = Infinity): string {
  let s = b.subarray(0, Math.min(b.length, max));
  const nul = s.indexOf(0);
  if (nul >= 0) s = s.subarray(0, nul);
  return s.toString('utf8');
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/** strftime("%Y-%m-%d %H:%M:%S") of a time_t, in local time (or UTC). */
export function formatTimestamp(sec: bigint, utc = false): string {
  const signed = BigInt.asIntN(64, sec);
  const ms = Number(signed) * 1000;
  const d = new Date(ms);
  if (!Number.isFinite(d.getTime())) return '';
  const y = utc ? d.getUTCFullYear() : d.getFullYear();
  const mo = (utc ? d.getUTCMonth() : d.getMonth()) + 1;
  const da = utc ? d.getUTCDate() : d.getDate();
  const h = utc ? d.getUTCHours() : d.getHours();
  const mi = utc ? d.getUTCMinutes() : d.getMinutes();
  const se = utc ? d.getUTCSeconds() : d.getSeconds();
  return `${y}-${pad2(mo)}-${pad2(da)} ${pad2(h)}:${pad2(mi)}:${pad2(se)}`;
}

function timespecToString(t: Timespec, utc: boolean): string {
  return `${BigInt.asUintN(64, t.sec)}.${t.nsec} (${formatTimestamp(t.sec, utc)})`;
}

/** Reads a prefix of `data` into a zeroed struct-sized buffer, as progs does for short items. */
function padded(data: Buffer, size: number): Buffer {
  if (data.length >= size) return data;
  const out = Buffer.alloc(size);
  data.copy(out);
  return out;
}

// ---- item printers: each returns the lines after the "item N key ..." line ----

function printInodeItem(ii: InodeItem, utc: boolean): string[] {
  return [
    `\t\tgeneration ${ii.generation} transid ${ii.transid} size ${ii.size} nbytes ${ii.nbytes}`,
    `\t\tblock group ${ii.block_group} mode ${ii.mode.toString(8)} links ${ii.nlink} uid ${ii.uid} gid ${ii.gid} rdev ${ii.rdev}`,
    `\t\tsequence ${ii.sequence} flags 0x${ii.flags.toString(16)}(${inodeFlagsToString(ii.flags)})`,
    `\t\tatime ${timespecToString(ii.atime, utc)}`,
    `\t\tctime ${timespecToString(ii.ctime, utc)}`,
    `\t\tmtime ${timespecToString(ii.mtime, utc)}`,
    `\t\totime ${timespecToString(ii.otime, utc)}`,
  ];
}

/*
 * The variable-length printers walk the item like progs does, but stop at
 * the item's end instead of reading past it: a damaged item prints what can
 * be read and nothing invented.
 */
function printInodeRefs(d: Buffer, hide: boolean): string[] {
  const out: string[] = [];
  let off = 0;
  while (off + INODE_REF_HEAD_SIZE <= d.length) {
    const index = d.readBigUInt64LE(off);
    const nameLen = d.readUInt16LE(off + 8);
    const name = d.subarray(off + INODE_REF_HEAD_SIZE, off + INODE_REF_HEAD_SIZE + nameLen);
    out.push(`\t\tindex ${index} namelen ${nameLen} name: ${hide ? 'HIDDEN' : cstr(name, NAME_LEN)}`);
    off += INODE_REF_HEAD_SIZE + nameLen;
  }
  return out;
}

function printInodeExtrefs(d: Buffer, hide: boolean): string[] {
  const out: string[] = [];
  let off = 0;
  while (off + INODE_EXTREF_HEAD_SIZE <= d.length) {
    const parent = d.readBigUInt64LE(off);
    const index = d.readBigUInt64LE(off + 8);
    const nameLen = d.readUInt16LE(off + 16);
    const name = d.subarray(off + INODE_EXTREF_HEAD_SIZE, off + INODE_EXTREF_HEAD_SIZE + nameLen);
    out.push(`\t\tindex ${index} parent ${parent} namelen ${nameLen} name: ${hide ? 'HIDDEN' : cstr(name, NAME_LEN)}`);
    off += INODE_EXTREF_HEAD_SIZE + nameLen;
  }
  return out;
}

function printDirItems(d: Buffer, hide: boolean): string[] {
  const out: string[] = [];
  let off = 0;
  while (off + DIR_ITEM_HEAD_SIZE <= d.length) {
    const location = decodeKey(d, off);
    const transid = d.readBigUInt64LE(off + 17);
    const dataLen = d.readUInt16LE(off + 25);
    const nameLen = d.readUInt16LE(off + 27);
    const type = d[off + 29]!;
    const nameAt = off + DIR_ITEM_HEAD_SIZE;
    out.push(`\t\tlocation ${keyToString(location)} type ${DIR_TYPE_NAMES[type] ?? `DIR_ITEM.${type}`}`);
    out.push(`\t\ttransid ${transid} data_len ${dataLen} name_len ${nameLen}`);
    out.push(hide ? '\t\tname: HIDDEN' : `\t\tname: ${cstr(d.subarray(nameAt, nameAt + nameLen), NAME_LEN)}`);
    if (dataLen) {
      const data = d.subarray(nameAt + nameLen, nameAt + nameLen + dataLen);
      out.push(hide ? '\t\tdata HIDDEN' : `\t\tdata ${cstr(data, NAME_LEN)}`);
    }
    off = nameAt + nameLen + dataLen;
  }
  return out;
}

function printFileExtent(d: Buffer): string[] {
  const fe = padded(d, FILE_EXTENT_ITEM_SIZE);
  const generation = fe.readBigUInt64LE(0);
  const ramBytes = fe.readBigUInt64LE(8);
  const compression = fe[16]!;
  const type = fe[20]!;
  const out = [`\t\tgeneration ${generation} type ${type} (${fileExtentTypeName(type)})`];
  if (type === 0) {
    out.push(`\t\tinline extent data size ${d.length - FILE_EXTENT_INLINE_DATA_START} ram_bytes ${ramBytes} compression ${compression} (${compressionName(compression)})`);
    return out;
  }
  const diskBytenr = fe.readBigUInt64LE(21);
  const diskNum = fe.readBigUInt64LE(29);
  const offset = fe.readBigUInt64LE(37);
  const num = fe.readBigUInt64LE(45);
  if (type === 2) {
    out.push(`\t\tprealloc data disk byte ${diskBytenr} nr ${diskNum}`);
    out.push(`\t\tprealloc data offset ${offset} nr ${num}`);
    return out;
  }
  out.push(`\t\textent data disk byte ${diskBytenr} nr ${diskNum}`);
  out.push(`\t\textent data offset ${offset} nr ${num} ram ${ramBytes}`);
  out.push(`\t\textent compression ${compression} (${compressionName(compression)})`);
  return out;
}

function printExtentItem(key: Key, d: Buffer): string[] {
  if (d.length < EXTENT_ITEM_HEAD_SIZE) return [];
  const skinny = key.type === KEY.METADATA_ITEM;
  let ei;
  try {
    ei = decodeExtentItem(d, { skinny, stopAtUnknown: true });
  } catch {
    // a truncated tree_block_info or ref: print the head, as far as it goes
    ei = decodeExtentItem(d.subarray(0, EXTENT_ITEM_HEAD_SIZE), { skinny: true });
  }
  const out = [`\t\trefs ${ei.refs} gen ${ei.generation} flags ${extentFlagsToString(ei.flags)}`];
  if (ei.treeBlockInfo) out.push(`\t\ttree block ${keyToString(ei.treeBlockInfo.key)} level ${ei.treeBlockInfo.level}`);
  else if (skinny) out.push(`\t\ttree block skinny level ${Number(BigInt.asIntN(32, key.offset))}`);
  for (const r of ei.inlineRefs) {
    switch (r.type) {
      case KEY.TREE_BLOCK_REF:
        out.push(`\t\ttree block backref root ${objectidToString(r.root, 0)}`);
        break;
      case KEY.SHARED_BLOCK_REF:
        out.push(`\t\tshared block backref parent ${r.parent}`);
        break;
      case KEY.EXTENT_DATA_REF:
        out.push(`\t\textent data backref root ${objectidToString(r.root, 0)} objectid ${r.objectid} offset ${r.offset} count ${r.count}`);
        break;
      case KEY.SHARED_DATA_REF:
        out.push(`\t\tshared data backref parent ${r.parent} count ${r.count}`);
        break;
      default:
        // progs 6.2 predates EXTENT_OWNER_REF and stops at any ref it does not know
        return out;
    }
  }
  return out;
}

function printRootItem(d: Buffer, utc: boolean): string[] {
  const ri = decodeRootItem(padded(d, 239));
  const flagsStr = ri.flags & ROOT_FLAG.SUBVOL_RDONLY ? 'RDONLY' : 'none';
  const out = [
    `\t\tgeneration ${ri.generation} root_dirid ${ri.root_dirid} bytenr ${ri.bytenr} byte_limit ${ri.byte_limit} bytes_used ${ri.bytes_used}`,
    `\t\tlast_snapshot ${ri.last_snapshot} flags 0x${ri.flags.toString(16)}(${flagsStr}) refs ${ri.refs}`,
    `\t\tdrop_progress ${keyToString(ri.drop_progress)} drop_level ${ri.drop_level}`,
    `\t\tlevel ${ri.level} generation_v2 ${ri.generation_v2}`,
  ];
  if (ri.generation === ri.generation_v2) {
    out.push(
      `\t\tuuid ${uuidToString(ri.uuid)}`,
      `\t\tparent_uuid ${uuidToString(ri.parent_uuid)}`,
      `\t\treceived_uuid ${uuidToString(ri.received_uuid)}`,
      `\t\tctransid ${ri.ctransid} otransid ${ri.otransid} stransid ${ri.stransid} rtransid ${ri.rtransid}`,
      `\t\tctime ${timespecToString(ri.ctime, utc)}`,
      `\t\totime ${timespecToString(ri.otime, utc)}`,
      `\t\tstime ${timespecToString(ri.stime, utc)}`,
      `\t\trtime ${timespecToString(ri.rtime, utc)}`,
    );
  }
  return out;
}

function printRootRef(d: Buffer, tag: string): string[] {
  const r = padded(d, ROOT_REF_HEAD_SIZE);
  const nameLen = r.readUInt16LE(16);
  const name = cstr(d.subarray(ROOT_REF_HEAD_SIZE, ROOT_REF_HEAD_SIZE + nameLen));
  return [`\t\troot ${tag} key dirid ${r.readBigUInt64LE(0)} sequence ${r.readBigUInt64LE(8)} name ${name}`];
}

/** The lines of a chunk item (also used for the superblock's sys_chunk_array). */
export function printChunkItem(c: ChunkItem): string[] {
  const out = [
    `\t\tlength ${c.length} owner ${c.owner} stripe_len ${c.stripe_len} type ${blockGroupFlagsToString(c.type)}`,
    `\t\tio_align ${c.io_align} io_width ${c.io_width} sector_size ${c.sector_size}`,
    `\t\tnum_stripes ${c.num_stripes} sub_stripes ${c.sub_stripes}`,
  ];
  c.stripes.forEach((s, i) => {
    out.push(`\t\t\tstripe ${i} devid ${s.devid} offset ${s.offset}`);
    out.push(`\t\t\tdev_uuid ${uuidToString(s.dev_uuid)}`);
  });
  return out;
}

function printChunk(d: Buffer): string[] {
  if (d.length >= CHUNK_ITEM_HEAD_SIZE) {
    const n = d.readUInt16LE(44);
    if (n < 1) return [`invalid num_stripes: ${n}`];
  }
  try {
    return printChunkItem(decodeChunkItem(d, 0, d.length));
  } catch {
    return ['\t\tchunk item invalid'];
  }
}

function printDevItem(d: Buffer): string[] {
  const di = devItem.decode(padded(d, devItem.size), 0);
  return [
    `\t\tdevid ${di.devid} total_bytes ${di.total_bytes} bytes_used ${di.bytes_used}`,
    `\t\tio_align ${di.io_align} io_width ${di.io_width} sector_size ${di.sector_size} type ${di.type}`,
    `\t\tgeneration ${di.generation} start_offset ${di.start_offset} dev_group ${di.dev_group}`,
    `\t\tseek_speed ${di.seek_speed} bandwidth ${di.bandwidth}`,
    `\t\tuuid ${uuidToString(di.uuid)}`,
    `\t\tfsid ${uuidToString(di.fsid)}`,
  ];
}

function printCsumItem(key: Key, d: Buffer, ctx: PrintContext): string[] {
  const count = Math.floor(d.length / ctx.csumSize);
  const size = count * ctx.sectorsize;
  const out = [`\t\trange start ${key.offset} end ${key.offset + BigInt(size)} length ${size}`];
  if (!ctx.csumItems) return out;
  // as many checksums per line as fill 32 bytes of hex twice over: 4 crc32c, 2 xxhash, 1 sha256
  const perLine = Math.max(1, Math.floor(32 / ctx.csumSize / 2));
  let line = '\t\t';
  let onLine = 0;
  let offset = key.offset;
  for (let i = 0; i < count; i++) {
    if (onLine === perLine) { out.push(line); line = '\t\t'; onLine = 0; } else if (onLine > 0) line += ' ';
    line += `[${offset}] 0x${d.subarray(i * ctx.csumSize, (i + 1) * ctx.csumSize).toString('hex')}`;
    offset += BigInt(ctx.sectorsize);
    onLine++;
  }
  out.push(line);
  return out;
}

function u64s(d: Buffer, i: number): bigint {
  return i * 8 + 8 <= d.length ? d.readBigUInt64LE(i * 8) : 0n;
}

function printPersistentItem(key: Key, d: Buffer): string[] {
  const out = [`\t\tpersistent item objectid ${objectidToString(key.objectid, KEY.PERSISTENT_ITEM)} offset ${key.offset}`];
  if (key.objectid !== OBJ.DEV_STATS) {
    out.push(`\t\tunknown persistent item objectid ${key.objectid}`);
    return out;
  }
  out.push('\t\tdevice stats');
  out.push(`\t\twrite_errs ${u64s(d, 0)} read_errs ${u64s(d, 1)} flush_errs ${u64s(d, 2)} corruption_errs ${u64s(d, 3)} generation ${u64s(d, 4)}`);
  const known = 5 * 8;
  if (known < d.length) {
    // progs prints no newline after the byte count, so the first extra value shares its line
    let line = `\t\tunknown stats item bytes ${d.length - known}`;
    for (let i = 5; i * 8 < d.length; i++) {
      out.push(`${line}\t\tunknown item ${i} offset ${i * 8} value ${u64s(d, i)}`);
      line = '';
    }
  }
  return out;
}

function printBalanceArgs(a: BalanceArgs): string[] {
  return [
    `\t\tprofiles ${a.profiles} devid ${a.devid} target ${a.target} flags ${a.flags}`,
    `\t\tusage_min ${a.usage_min} usage_max ${a.usage_max} pstart ${a.pstart} pend ${a.pend}`,
    `\t\tvstart ${a.vstart} vend ${a.vend} limit_min ${a.limit_min} limit_max ${a.limit_max}`,
    `\t\tstripes_min ${a.stripes_min} stripes_max ${a.stripes_max}`,
  ];
}

function printTemporaryItem(key: Key, d: Buffer): string[] {
  const out = [`\t\ttemporary item objectid ${objectidToString(key.objectid, KEY.TEMPORARY_ITEM)} offset ${key.offset}`];
  if (key.objectid === OBJ.BALANCE) {
    const b = decodeBalanceItem(padded(d, 448));
    out.push(`\t\tbalance status flags ${b.flags}`);
    out.push('\t\tDATA', ...printBalanceArgs(b.data));
    out.push('\t\tMETADATA', ...printBalanceArgs(b.meta));
    out.push('\t\tSYSTEM', ...printBalanceArgs(b.sys));
  } else if (key.objectid === CSUM_TREE_TMP_OBJECTID) {
    out.push(`\t\tcsum tree tmp root ${key.offset}`);
  } else {
    out.push(`\t\tunknown temporary item objectid ${key.objectid}`);
  }
  return out;
}

function s64(v: bigint): string { return BigInt.asIntN(64, v).toString(); }

/** The lines printed for one leaf item (without its "item N key ..." line). */
export function printItemBody(key: Key, d: Buffer, ctx: PrintContext): string[] {
  const utc = !!ctx.utc;
  const hide = !!ctx.hideNames;
  const out: string[] = [];
  if (key.type === 0 && key.objectid === OBJ.FREE_SPACE) {
    const h = padded(d, 41);
    out.push(`\t\tlocation ${keyToString(decodeKey(h, 0))}`);
    out.push(`\t\tcache generation ${h.readBigUInt64LE(17)} entries ${h.readBigUInt64LE(25)} bitmaps ${h.readBigUInt64LE(33)}`);
  }
  switch (key.type) {
    case KEY.INODE_ITEM: out.push(...printInodeItem(decodeInodeItem(padded(d, 160)), utc)); break;
    case KEY.INODE_REF: out.push(...printInodeRefs(d, hide)); break;
    case KEY.INODE_EXTREF: out.push(...printInodeExtrefs(d, hide)); break;
    case KEY.DIR_ITEM:
    case KEY.DIR_INDEX:
    case KEY.XATTR_ITEM:
      out.push(...printDirItems(d, hide));
      break;
    case KEY.DIR_LOG_INDEX:
    case KEY.DIR_LOG_ITEM:
      out.push(`\t\tdir log end ${padded(d, 8).readBigUInt64LE(0)}`);
      break;
    case KEY.ORPHAN_ITEM: out.push('\t\torphan item'); break;
    case KEY.ROOT_ITEM: out.push(...printRootItem(d, utc)); break;
    case KEY.ROOT_REF: out.push(...printRootRef(d, 'ref')); break;
    case KEY.ROOT_BACKREF: out.push(...printRootRef(d, 'backref')); break;
    case KEY.EXTENT_ITEM:
    case KEY.METADATA_ITEM:
      out.push(...printExtentItem(key, d));
      break;
    case KEY.TREE_BLOCK_REF: out.push('\t\ttree block backref'); break;
    case KEY.SHARED_BLOCK_REF: out.push('\t\tshared block backref'); break;
    case KEY.EXTENT_DATA_REF: {
      const r = padded(d, 28);
      out.push(`\t\textent data backref root ${objectidToString(r.readBigUInt64LE(0), 0)} objectid ${r.readBigUInt64LE(8)} offset ${r.readBigUInt64LE(16)} count ${r.readUInt32LE(24)}`);
      break;
    }
    case KEY.SHARED_DATA_REF: out.push(`\t\tshared data backref count ${padded(d, 4).readUInt32LE(0)}`); break;
    case KEY.EXTENT_REF_V0: out.push('\t\textent ref v0 (deprecated)'); break;
    case CSUM_ITEM_KEY: out.push('\t\tcsum item'); break;
    case KEY.EXTENT_CSUM: out.push(...printCsumItem(key, d, ctx)); break;
    case KEY.EXTENT_DATA: out.push(...printFileExtent(d)); break;
    case KEY.BLOCK_GROUP_ITEM: {
      const b = padded(d, 24);
      out.push(`\t\tblock group used ${b.readBigUInt64LE(0)} chunk_objectid ${b.readBigUInt64LE(8)} flags ${blockGroupFlagsToString(b.readBigUInt64LE(16))}`);
      break;
    }
    case KEY.FREE_SPACE_INFO: {
      const f = padded(d, 8);
      out.push(`\t\tfree space info extent count ${f.readUInt32LE(0)} flags ${f.readUInt32LE(4)}`);
      break;
    }
    case KEY.FREE_SPACE_EXTENT: out.push('\t\tfree space extent'); break;
    case KEY.FREE_SPACE_BITMAP: out.push('\t\tfree space bitmap'); break;
    case KEY.CHUNK_ITEM: out.push(...printChunk(d)); break;
    case KEY.DEV_ITEM: out.push(...printDevItem(d)); break;
    case KEY.DEV_EXTENT: {
      const e = padded(d, 48);
      out.push(`\t\tdev extent chunk_tree ${e.readBigUInt64LE(0)}`);
      out.push(`\t\tchunk_objectid ${e.readBigUInt64LE(8)} chunk_offset ${e.readBigUInt64LE(16)} length ${e.readBigUInt64LE(24)}`);
      out.push(`\t\tchunk_tree_uuid ${uuidToString(e.subarray(32, 48))}`);
      break;
    }
    case KEY.QGROUP_STATUS: {
      const q = padded(d, 32);
      out.push(`\t\tversion ${q.readBigUInt64LE(0)} generation ${q.readBigUInt64LE(8)} flags ${qgroupFlagsToString(q.readBigUInt64LE(16))} scan ${q.readBigUInt64LE(24)}`);
      break;
    }
    case KEY.QGROUP_RELATION: break;
    case KEY.QGROUP_INFO: {
      const q = padded(d, 40);
      out.push(`\t\tgeneration ${q.readBigUInt64LE(0)}`);
      out.push(`\t\treferenced ${q.readBigUInt64LE(8)} referenced_compressed ${q.readBigUInt64LE(16)}`);
      out.push(`\t\texclusive ${q.readBigUInt64LE(24)} exclusive_compressed ${q.readBigUInt64LE(32)}`);
      break;
    }
    case KEY.QGROUP_LIMIT: {
      const q = padded(d, 40);
      out.push(`\t\tflags ${q.readBigUInt64LE(0).toString(16)}`);
      out.push(`\t\tmax_referenced ${s64(q.readBigUInt64LE(8))} max_exclusive ${s64(q.readBigUInt64LE(16))}`);
      out.push(`\t\trsv_referenced ${s64(q.readBigUInt64LE(24))} rsv_exclusive ${s64(q.readBigUInt64LE(32))}`);
      break;
    }
    case KEY.UUID_KEY_SUBVOL:
    case KEY.UUID_KEY_RECEIVED_SUBVOL:
      if (d.length & 7) out.push(`btrfs: uuid item with illegal size ${d.length}!`);
      else for (let i = 0; i < d.length; i += 8) out.push(`\t\tsubvol_id ${d.readBigUInt64LE(i)}`);
      break;
    case KEY.STRING_ITEM: out.push(`\t\titem data ${cstr(d)}`); break;
    case KEY.PERSISTENT_ITEM: out.push(...printPersistentItem(key, d)); break;
    case KEY.TEMPORARY_ITEM: out.push(...printTemporaryItem(key, d)); break;
  }
  return out;
}

/** progs' btrfs_leaf_free_space: data area minus the span from the first item's end to the last item's start. */
function leafFreeSpace(block: TreeBlock): number {
  const dataSize = block.nodesize - HEADER_SIZE;
  const n = block.items.length;
  if (n === 0) return dataSize;
  const first = block.items[0]!;
  const last = block.items[n - 1]!;
  return dataSize - (first.offset + first.size - last.offset + ITEM_SIZE * n);
}

function headerLines(block: TreeBlock, ctx: PrintContext): string[] {
  const h = block.header;
  const flags = h.flags & ((1n << 56n) - 1n);
  const rev = Number(h.flags >> 56n);
  const owner = objectidToString(h.owner, 0);
  const first = h.level
    ? `node ${h.bytenr} level ${h.level} items ${h.nritems} free space ${(Math.floor((block.nodesize - HEADER_SIZE) / KEY_PTR_SIZE) - h.nritems) >>> 0} generation ${h.generation} owner ${owner}`
    : `leaf ${h.bytenr} items ${h.nritems} free space ${leafFreeSpace(block)} generation ${h.generation} owner ${owner}`;
  const csum = ctx.csumHeaders ? ` csum 0x${h.csum.subarray(0, ctx.csumSize).toString('hex')}` : '';
  return [
    first,
    `${h.level ? 'node' : 'leaf'} ${h.bytenr} flags 0x${flags.toString(16)}(${headerFlagsToString(flags)}) backref revision ${rev}${csum}`,
    `fs uuid ${uuidToString(h.fsid)}`,
    `chunk uuid ${uuidToString(h.chunk_tree_uuid)}`,
  ];
}

/**
 * The dump-tree text of one tree block (leaf or node), each line ending in
 * "\n", exactly as `btrfs inspect-internal dump-tree -b BYTENR` prints it.
 */
export function printTreeBlock(block: TreeBlock, ctx: PrintContext): string {
  const lines = headerLines(block, ctx);
  if (block.isLeaf) {
    block.items.forEach((it, i) => {
      lines.push(`\titem ${i} ${keyToString(it.key)} itemoff ${it.offset} itemsize ${it.size}`);
      lines.push(...printItemBody(it.key, it.data, ctx));
    });
  } else {
    for (const p of block.ptrs) lines.push(`\t${keyToString(p.key)} block ${p.blockptr} gen ${p.generation}`);
  }
  return lines.join('\n') + '\n';
}
