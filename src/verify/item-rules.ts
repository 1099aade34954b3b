/**
 * Per-item structural rules: the sizes and key shapes the readers above rely
 * on. A rule returns a message (what is wrong) or undefined. These are the
 * checks that keep decoders from reading past an item; the semantic checks
 * across items and trees belong to check/.
 */
import { KEY } from '../format/constants.js';
import type { Key } from '../format/key.js';

export interface ItemContext { owner: bigint; sectorsize: number; csumSize: number }

const INODE_ITEM_SIZE = 160;
const DIR_ITEM_HEAD = 30;
const FILE_EXTENT_INLINE_HEAD = 21;
const FILE_EXTENT_REG_SIZE = 53;
const ROOT_ITEM_V1_SIZE = 239;
const ROOT_ITEM_SIZE = 439;

const S_IFMT = 0o170000;
const VALID_TYPES = new Set([0o100000, 0o040000, 0o120000, 0o020000, 0o060000, 0o010000, 0o140000]);
const I64_MAX = (1n << 63n) - 1n;

/** The kernel tree-checker's check_inode_item rules that readers depend on. */
function checkInodeItem(k: Key, data: Buffer): string | undefined {
  if (data.length !== INODE_ITEM_SIZE) return `invalid inode item size, have ${data.length} expect ${INODE_ITEM_SIZE}`;
  const mode = data.readUInt32LE(52);
  if ((mode & ~(S_IFMT | 0o7777)) !== 0) return `invalid inode mode, have 0${mode.toString(8)} (unknown bits set)`;
  if (!VALID_TYPES.has(mode & S_IFMT)) return `invalid inode mode, have 0${mode.toString(8)} (no valid file type)`;
  const nlink = data.readUInt32LE(40);
  if ((mode & S_IFMT) === 0o040000 && nlink > 1) return `invalid nlink: has ${nlink} expect no more than 1 for dir`;
  // i_size and nbytes are loff_t in the kernel: anything past 2^63-1 is negative there.
  if (data.readBigUInt64LE(16) > I64_MAX) return `invalid inode size ${data.readBigUInt64LE(16)}`;
  if (data.readBigUInt64LE(24) > I64_MAX) return `invalid inode nbytes ${data.readBigUInt64LE(24)}`;
  void k;
  return undefined;
}

function checkDirItems(data: Buffer, type: number): string | undefined {
  let off = 0;
  while (off < data.length) {
    if (data.length - off < DIR_ITEM_HEAD) return `dir item too short, have ${data.length - off} expect >= ${DIR_ITEM_HEAD}`;
    const locType = data[off + 8]!;
    if (type === KEY.XATTR_ITEM) {
      if (locType !== 0) return `invalid location key type for xattr item, have ${locType} expect 0`;
    } else if (locType !== KEY.INODE_ITEM && locType !== KEY.ROOT_ITEM) {
      return `invalid location key type, have ${locType} expect ${KEY.INODE_ITEM} or ${KEY.ROOT_ITEM}`;
    } else if (locType === KEY.ROOT_ITEM && data[off + 29] !== 2) {
      return `invalid dir item type for a subvolume entry, have ${data[off + 29]} expect 2`;
    }
    const dataLen = data.readUInt16LE(off + 25);
    const nameLen = data.readUInt16LE(off + 27);
    const ftype = data[off + 29]!;
    if (nameLen === 0) return 'dir item with empty name';
    if (type !== KEY.XATTR_ITEM && nameLen > 255) return `dir item name too long, have ${nameLen} max 255`;
    if (type !== KEY.XATTR_ITEM && dataLen !== 0) return `dir item with data_len ${dataLen}`;
    if (ftype > 8) return `invalid dir item type ${ftype}`;
    if ((type === KEY.XATTR_ITEM) !== (ftype === 8)) return `dir item type ${ftype} does not fit key type ${type}`;
    const total = DIR_ITEM_HEAD + nameLen + dataLen;
    if (off + total > data.length) return `dir item name/data past item end, need ${total} have ${data.length - off}`;
    off += total;
    if (type === KEY.DIR_INDEX && off !== data.length) return 'DIR_INDEX holds more than one entry';
  }
  return undefined;
}

function checkInodeRefs(data: Buffer): string | undefined {
  let off = 0;
  while (off < data.length) {
    if (data.length - off < 10) return 'inode ref too short';
    const nameLen = data.readUInt16LE(off + 8);
    if (off + 10 + nameLen > data.length) return 'inode ref name past item end';
    off += 10 + nameLen;
  }
  return undefined;
}

function checkInodeExtrefs(data: Buffer): string | undefined {
  let off = 0;
  while (off < data.length) {
    if (data.length - off < 18) return 'inode extref too short';
    const nameLen = data.readUInt16LE(off + 16);
    if (off + 18 + nameLen > data.length) return 'inode extref name past item end';
    off += 18 + nameLen;
  }
  return undefined;
}

function checkFileExtent(k: Key, data: Buffer, ctx: ItemContext): string | undefined {
  if (data.length < FILE_EXTENT_INLINE_HEAD) return `file extent too short, have ${data.length}`;
  const type = data[20]!;
  if (type > 2) return `invalid file extent type ${type}`;
  if (data[16]! > 3) return `invalid compression type ${data[16]}`;
  if (type === 0) {
    if (k.offset !== 0n) return `inline extent at non-zero file offset ${k.offset}`;
    if (data[16] === 0 && data.length - FILE_EXTENT_INLINE_HEAD !== Number(data.readBigUInt64LE(8))) {
      return `invalid ram_bytes for uncompressed inline extent, have ${data.readBigUInt64LE(8)} expect ${data.length - FILE_EXTENT_INLINE_HEAD}`;
    }
    return undefined;
  }
  if (data.length !== FILE_EXTENT_REG_SIZE) return `invalid item size for reg/prealloc file extent, have ${data.length} expect ${FILE_EXTENT_REG_SIZE}`;
  if (k.offset % BigInt(ctx.sectorsize) !== 0n) return `unaligned file extent offset ${k.offset}`;
  const numBytes = data.readBigUInt64LE(45);
  if (numBytes === 0n) return 'file extent with zero num_bytes';
  return undefined;
}

/** Minimum item sizes for types whose readers index into fixed fields. */
const FIXED_MIN: Record<number, number> = {
  [KEY.INODE_ITEM]: INODE_ITEM_SIZE,
  [KEY.BLOCK_GROUP_ITEM]: 24,
  [KEY.DEV_EXTENT]: 48,
  [KEY.DEV_ITEM]: 98,
  [KEY.CHUNK_ITEM]: 80,
  [KEY.ROOT_REF]: 18,
  [KEY.ROOT_BACKREF]: 18,
  [KEY.EXTENT_DATA_REF]: 28,
  [KEY.SHARED_DATA_REF]: 4,
  [KEY.FREE_SPACE_INFO]: 8,
};

export function checkItem(k: Key, data: Buffer, ctx: ItemContext): string | undefined {
  switch (k.type) {
    case KEY.INODE_ITEM:
      return checkInodeItem(k, data);
    case KEY.INODE_REF: return checkInodeRefs(data);
    case KEY.INODE_EXTREF: return checkInodeExtrefs(data);
    case KEY.DIR_ITEM:
    case KEY.DIR_INDEX:
    case KEY.XATTR_ITEM:
      return checkDirItems(data, k.type);
    case KEY.EXTENT_DATA: return checkFileExtent(k, data, ctx);
    case KEY.EXTENT_CSUM:
      if (data.length % ctx.csumSize !== 0) return `unaligned csum item size, have ${data.length} should be aligned to ${ctx.csumSize}`;
      return undefined;
    case KEY.ROOT_ITEM:
      if (data.length !== ROOT_ITEM_SIZE && data.length !== ROOT_ITEM_V1_SIZE) {
        return `invalid root item size, have ${data.length} expect ${ROOT_ITEM_SIZE} or ${ROOT_ITEM_V1_SIZE}`;
      }
      return undefined;
    case KEY.EXTENT_ITEM:
    case KEY.METADATA_ITEM:
      if (data.length < 24 && data.length !== 4) return `invalid extent item size ${data.length}`;
      return undefined;
    default: {
      const min = FIXED_MIN[k.type];
      if (min !== undefined && data.length < min) return `item too short for type ${k.type}, have ${data.length} expect >= ${min}`;
      return undefined;
    }
  }
}
