/**
 * Per-item structural rules: the sizes and key shapes the readers above rely
 * on. A rule returns a message (what is wrong) or undefined. These are the
 * checks that keep decoders from reading past an item; the semantic checks
 * across items and trees belong to check/.
 */
import { HEADER_SIZE, ITEM_SIZE, KEY } from '../format/constants.js';
import type { TreeBlock } from '../format/tree-block.js';

export interface ItemContext { owner: bigint; sectorsize: number; csumSize: number }

const INODE_ITEM_SIZE = 160;
const DIR_ITEM_HEAD = 30;
const FILE_EXTENT_INLINE_HEAD = 21;
const FILE_EXTENT_REG_SIZE = 53;
const ROOT_ITEM_V1_SIZE = 239;
const ROOT_ITEM_SIZE = 439;

const S_IFMT = 0o170000;
const VALID_TYPES = new Set([0o100000, 0o040000, 0o120000, 0o020000, 0o060000, 0o010000, 0o140000]);

/** The kernel tree-checker's check_inode_item rules that readers depend on. */
function checkInodeItem(b: Buffer, at: number, len: number): string | undefined {
  if (len !== INODE_ITEM_SIZE) return `invalid inode item size, have ${len} expect ${INODE_ITEM_SIZE}`;
  const mode = b.readUInt32LE(at + 52);
  if ((mode & ~(S_IFMT | 0o7777)) !== 0) return `invalid inode mode, have 0${mode.toString(8)} (unknown bits set)`;
  if (!VALID_TYPES.has(mode & S_IFMT)) return `invalid inode mode, have 0${mode.toString(8)} (no valid file type)`;
  const nlink = b.readUInt32LE(at + 40);
  if ((mode & S_IFMT) === 0o040000 && nlink > 1) return `invalid nlink: has ${nlink} expect no more than 1 for dir`;
  // i_size is loff_t in the kernel: past 2^63-1 it is negative there, and our
  // readers would walk extents toward it. nbytes is only reported (st_blocks),
  // and the kernel writes whatever it holds: a log tree cut off just after an
  // fsync has been seen carrying a kernel pointer there (0xffffea00...), which
  // the kernel's own tree-checker and btrfs-progs accept.
  if (b[at + 23]! > 0x7f) return `invalid inode size ${b.readBigUInt64LE(at + 16)}`;
  return undefined;
}

function checkDirItems(data: Buffer, at: number, len: number, type: number): string | undefined {
  let off = at;
  const end = at + len;
  while (off < end) {
    if (end - off < DIR_ITEM_HEAD) return `dir item too short, have ${end - off} expect >= ${DIR_ITEM_HEAD}`;
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
    if (off + total > end) return `dir item name/data past item end, need ${total} have ${end - off}`;
    off += total;
    if (type === KEY.DIR_INDEX && off !== end) return 'DIR_INDEX holds more than one entry';
  }
  return undefined;
}

function checkInodeRefs(data: Buffer, at: number, len: number): string | undefined {
  let off = at;
  const end = at + len;
  while (off < end) {
    if (end - off < 10) return 'inode ref too short';
    const nameLen = data.readUInt16LE(off + 8);
    if (off + 10 + nameLen > end) return 'inode ref name past item end';
    off += 10 + nameLen;
  }
  return undefined;
}

function checkInodeExtrefs(data: Buffer, at: number, len: number): string | undefined {
  let off = at;
  const end = at + len;
  while (off < end) {
    if (end - off < 18) return 'inode extref too short';
    const nameLen = data.readUInt16LE(off + 16);
    if (off + 18 + nameLen > end) return 'inode extref name past item end';
    off += 18 + nameLen;
  }
  return undefined;
}

/** `keyAt`: where the item's key lies in `data`, for its offset (read in place: this runs for every file extent read). */
function checkFileExtent(keyAt: number, data: Buffer, at: number, len: number, ctx: ItemContext): string | undefined {
  if (len < FILE_EXTENT_INLINE_HEAD) return `file extent too short, have ${len}`;
  const type = data[at + 20]!;
  if (type > 2) return `invalid file extent type ${type}`;
  if (data[at + 16]! > 3) return `invalid compression type ${data[at + 16]}`;
  if (type === 0) {
    if (data.readUInt32LE(keyAt + 9) !== 0 || data.readUInt32LE(keyAt + 13) !== 0) return `inline extent at non-zero file offset ${data.readBigUInt64LE(keyAt + 9)}`;
    if (data[at + 16] === 0 && len - FILE_EXTENT_INLINE_HEAD !== Number(data.readBigUInt64LE(at + 8))) {
      return `invalid ram_bytes for uncompressed inline extent, have ${data.readBigUInt64LE(at + 8)} expect ${len - FILE_EXTENT_INLINE_HEAD}`;
    }
    return undefined;
  }
  if (len !== FILE_EXTENT_REG_SIZE) return `invalid item size for reg/prealloc file extent, have ${len} expect ${FILE_EXTENT_REG_SIZE}`;
  // The sector size is a power of two below 2^32: the low word decides the alignment.
  if (data.readUInt32LE(keyAt + 9) % ctx.sectorsize !== 0) return `unaligned file extent offset ${data.readBigUInt64LE(keyAt + 9)}`;
  if (data.readUInt32LE(at + 45) === 0 && data.readUInt32LE(at + 49) === 0) return 'file extent with zero num_bytes';
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

/** The rules for the item in `slot` of a leaf (whose item bounds the block already checked). */
export function checkItem(block: TreeBlock, slot: number, ctx: ItemContext): string | undefined {
  const type = block.itemTypeAt(slot);
  // Offsets into the block's buffer rather than a view per item: this runs for every item read.
  const b = block.buf;
  const at = block.itemStartAt(slot);
  const len = block.itemSizeAt(slot);
  switch (type) {
    case KEY.INODE_ITEM:
      return checkInodeItem(b, at, len);
    case KEY.INODE_REF: return checkInodeRefs(b, at, len);
    case KEY.INODE_EXTREF: return checkInodeExtrefs(b, at, len);
    case KEY.DIR_ITEM:
    case KEY.DIR_INDEX:
    case KEY.XATTR_ITEM:
      return checkDirItems(b, at, len, type);
    case KEY.EXTENT_DATA: return checkFileExtent(HEADER_SIZE + slot * ITEM_SIZE, b, at, len, ctx);
    case KEY.EXTENT_CSUM:
      if (len % ctx.csumSize !== 0) return `unaligned csum item size, have ${len} should be aligned to ${ctx.csumSize}`;
      return undefined;
    case KEY.ROOT_ITEM:
      if (len !== ROOT_ITEM_SIZE && len !== ROOT_ITEM_V1_SIZE) {
        return `invalid root item size, have ${len} expect ${ROOT_ITEM_SIZE} or ${ROOT_ITEM_V1_SIZE}`;
      }
      return undefined;
    case KEY.EXTENT_ITEM:
    case KEY.METADATA_ITEM:
      if (len < 24 && len !== 4) return `invalid extent item size ${len}`;
      return undefined;
    default: {
      const min = FIXED_MIN[type];
      if (min !== undefined && len < min) return `item too short for type ${type}, have ${len} expect >= ${min}`;
      return undefined;
    }
  }
}
