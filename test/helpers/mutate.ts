/**
 * Seeded, checksum-preserving damage to a btrfs image, for differential
 * tests of `check` against btrfs check. A mutation changes one thing — a
 * field of one item, a key, a header field, a bit, a dropped item, a
 * superblock field — and then recomputes the checksum of the block (or
 * superblock) it touched, so the change gets past checksum verification
 * and reaches the parsers and cross-tree checks. Tree blocks are rewritten
 * in every copy (DUP), so no mirror quietly repairs the damage.
 *
 * A mutation is a list of byte patches at physical offsets; the caller lays
 * them over an image (a file for btrfs check, or an OverlayDevice) and takes
 * them off again. `planMutation` is a pure function of the catalog and the
 * random source, so a printed seed replays the same damage on the same image.
 */
import { CSUM_SIZE, HEADER_SIZE, ITEM_SIZE, KEY, KEY_PTR_SIZE, OBJ, SUPER_INFO_SIZE, SUPER_MIRROR_OFFSETS } from '../../src/format/constants.js';
import { encodeLeaf, sealTreeBlock } from '../../src/format/tree-block-encode.js';
import { checksum, csumSize } from '../../src/util/checksum.js';
import type { FsInfo } from '../../src/tree/fs-info.js';
import { walkAllTrees } from './overlay-device.js';

export interface CatalogBlock {
  bytenr: bigint;
  /** objectid of the first tree the block was reached from */
  tree: bigint;
  level: number;
  /** the pristine block */
  buf: Buffer;
  /** device offsets of every copy */
  physical: number[];
  /** leaf only: each item's key type, data offset (in the block) and size */
  items: { type: number; dataAt: number; size: number }[];
}

/** What mutations choose from: every tree block of an image, and its superblock. */
export interface Catalog {
  nodesize: number;
  sectorsize: number;
  csumType: number;
  blocks: CatalogBlock[];
  /** leaf items by key type: [block index, slot] */
  byType: Map<number, [number, number][]>;
  superblock: Buffer;
}

export interface Patch { offset: number; bytes: Buffer }

export interface Mutation {
  /** the family: field, key, header, ptr, bit, drop-item, super */
  kind: string;
  /** what was changed, for a person reading a mismatch */
  desc: string;
  patches: Patch[];
}

export async function buildCatalog(info: FsInfo): Promise<Catalog> {
  const blocks: CatalogBlock[] = [];
  const byType = new Map<number, [number, number][]>();
  const seen = new Set<bigint>();
  await walkAllTrees(info, (b, root) => {
    if (seen.has(b.bytenr)) return;
    seen.add(b.bytenr);
    const idx = blocks.length;
    const items = b.items.map((it, slot) => {
      let l = byType.get(it.key.type);
      if (!l) byType.set(it.key.type, l = []);
      l.push([idx, slot]);
      return { type: it.key.type, dataAt: HEADER_SIZE + it.offset, size: it.size };
    });
    blocks.push({
      bytenr: b.bytenr, tree: root.objectid, level: b.level, buf: Buffer.from(b.buf),
      physical: info.chunks.map(b.bytenr, info.nodesize).map((c) => Number(c.physical)), items,
    });
  });
  return { nodesize: info.nodesize, sectorsize: info.sectorsize, csumType: info.csumType, blocks, byType, superblock: Buffer.from(info.sbRaw) };
}

// ---------------------------------------------------------------- random helpers

type Rand = () => number;
const pickInt = (r: Rand, n: number): number => Math.floor(r() * n);
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[pickInt(r, xs.length)]!;

/** A field of an item (or header, or superblock): where it is relative to its base, how wide, and special values worth trying. */
interface Field { name: string; at: number; width: 1 | 2 | 4 | 8 | 16; special?: bigint[] }

const MODES = [0o100644n, 0o040755n, 0o120777n, 0o020644n, 0o060644n, 0o010644n, 0o140755n, 0o000644n, 0o170000n];

const INODE_FIELDS: Field[] = [
  { name: 'generation', at: 0, width: 8 }, { name: 'transid', at: 8, width: 8 }, { name: 'size', at: 16, width: 8 },
  { name: 'nbytes', at: 24, width: 8 }, { name: 'block_group', at: 32, width: 8 }, { name: 'nlink', at: 40, width: 4 },
  { name: 'uid', at: 44, width: 4 }, { name: 'gid', at: 48, width: 4 }, { name: 'mode', at: 52, width: 4, special: MODES },
  { name: 'rdev', at: 56, width: 8 },
  { name: 'flags', at: 64, width: 8, special: [1n, 2n, 4n, 8n, 0x10n, 0x20n, 0x40n, 0x80n, 0x100n, 0x800n, 0x1000n, 1n << 31n, 1n << 32n, 1n << 40n] },
  { name: 'sequence', at: 72, width: 8 }, { name: 'atime.sec', at: 112, width: 8 }, { name: 'ctime.nsec', at: 132, width: 4 },
  { name: 'mtime.sec', at: 136, width: 8 }, { name: 'otime.sec', at: 148, width: 8 },
];

const DIR_FIELDS: Field[] = [
  { name: 'location.objectid', at: 0, width: 8 }, { name: 'location.type', at: 8, width: 1, special: [1n, 132n, 0n, 12n] },
  { name: 'location.offset', at: 9, width: 8 }, { name: 'transid', at: 17, width: 8 }, { name: 'data_len', at: 25, width: 2 },
  { name: 'name_len', at: 27, width: 2 }, { name: 'type', at: 29, width: 1, special: [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n] },
  { name: 'name[0]', at: 30, width: 1, special: [0n, 0x2fn, 0x41n] },
];

const FILE_EXTENT_FIELDS: Field[] = [
  { name: 'generation', at: 0, width: 8 }, { name: 'ram_bytes', at: 8, width: 8 },
  { name: 'compression', at: 16, width: 1, special: [0n, 1n, 2n, 3n, 4n] }, { name: 'encryption', at: 17, width: 1 },
  { name: 'other_encoding', at: 18, width: 2 }, { name: 'type', at: 20, width: 1, special: [0n, 1n, 2n, 3n] },
];
const FILE_EXTENT_REG_FIELDS: Field[] = [
  { name: 'disk_bytenr', at: 21, width: 8 }, { name: 'disk_num_bytes', at: 29, width: 8 },
  { name: 'offset', at: 37, width: 8 }, { name: 'num_bytes', at: 45, width: 8 },
];

const ROOT_ITEM_FIELDS: Field[] = [
  { name: 'inode.generation', at: 0, width: 8 }, { name: 'inode.nlink', at: 40, width: 4 }, { name: 'inode.mode', at: 52, width: 4, special: MODES },
  { name: 'generation', at: 160, width: 8 }, { name: 'root_dirid', at: 168, width: 8, special: [256n, 257n, 0n] },
  { name: 'bytenr', at: 176, width: 8 }, { name: 'byte_limit', at: 184, width: 8 }, { name: 'bytes_used', at: 192, width: 8 },
  { name: 'last_snapshot', at: 200, width: 8 }, { name: 'flags', at: 208, width: 8, special: [0n, 1n, 1n << 48n] },
  { name: 'refs', at: 216, width: 4 }, { name: 'drop_progress.objectid', at: 220, width: 8 },
  { name: 'drop_progress.type', at: 228, width: 1 }, { name: 'drop_level', at: 237, width: 1, special: [0n, 1n, 7n, 8n] },
  { name: 'level', at: 238, width: 1, special: [0n, 1n, 2n, 7n, 8n] },
  { name: 'generation_v2', at: 239, width: 8 }, { name: 'uuid', at: 247, width: 16 }, { name: 'parent_uuid', at: 263, width: 16 },
  { name: 'ctransid', at: 295, width: 8 }, { name: 'otransid', at: 303, width: 8 },
];

const CHUNK_FIELDS: Field[] = [
  { name: 'length', at: 0, width: 8 }, { name: 'owner', at: 8, width: 8 }, { name: 'stripe_len', at: 16, width: 8 },
  { name: 'type', at: 24, width: 8, special: [1n, 2n, 4n, 5n, 0x22n, 0x24n, 0x21n, 0x11n, 0x14n, 0x44n, 0x81n, 0x204n] },
  { name: 'io_align', at: 32, width: 4 }, { name: 'io_width', at: 36, width: 4 },
  { name: 'sector_size', at: 40, width: 4 }, { name: 'num_stripes', at: 44, width: 2, special: [0n, 1n, 2n, 3n] },
  { name: 'sub_stripes', at: 46, width: 2 }, { name: 'stripe[0].devid', at: 48, width: 8 },
  { name: 'stripe[0].offset', at: 56, width: 8 }, { name: 'stripe[0].dev_uuid', at: 64, width: 16 },
];

const DEV_ITEM_FIELDS: Field[] = [
  { name: 'devid', at: 0, width: 8 }, { name: 'total_bytes', at: 8, width: 8 }, { name: 'bytes_used', at: 16, width: 8 },
  { name: 'io_align', at: 24, width: 4 }, { name: 'sector_size', at: 32, width: 4 }, { name: 'type', at: 36, width: 8 },
  { name: 'generation', at: 44, width: 8 }, { name: 'uuid', at: 66, width: 16 }, { name: 'fsid', at: 82, width: 16 },
];

const FIELDS: Record<number, Field[]> = {
  [KEY.INODE_ITEM]: INODE_FIELDS,
  [KEY.INODE_REF]: [{ name: 'index', at: 0, width: 8 }, { name: 'name_len', at: 8, width: 2 }, { name: 'name[0]', at: 10, width: 1, special: [0n, 0x2fn] }],
  [KEY.INODE_EXTREF]: [{ name: 'parent', at: 0, width: 8 }, { name: 'index', at: 8, width: 8 }, { name: 'name_len', at: 16, width: 2 }, { name: 'name[0]', at: 18, width: 1 }],
  [KEY.DIR_ITEM]: DIR_FIELDS,
  [KEY.DIR_INDEX]: DIR_FIELDS,
  [KEY.XATTR_ITEM]: DIR_FIELDS,
  [KEY.EXTENT_DATA]: FILE_EXTENT_FIELDS,
  [KEY.EXTENT_CSUM]: [{ name: 'csum[0]', at: 0, width: 4 }],
  [KEY.ROOT_ITEM]: ROOT_ITEM_FIELDS,
  [KEY.ROOT_REF]: [{ name: 'dirid', at: 0, width: 8 }, { name: 'sequence', at: 8, width: 8 }, { name: 'name_len', at: 16, width: 2 }, { name: 'name[0]', at: 18, width: 1 }],
  [KEY.ROOT_BACKREF]: [{ name: 'dirid', at: 0, width: 8 }, { name: 'sequence', at: 8, width: 8 }, { name: 'name_len', at: 16, width: 2 }, { name: 'name[0]', at: 18, width: 1 }],
  [KEY.EXTENT_ITEM]: [{ name: 'refs', at: 0, width: 8 }, { name: 'generation', at: 8, width: 8 }, { name: 'flags', at: 16, width: 8, special: [1n, 2n, 3n, 0x100n, 0x102n, 0x101n] }],
  [KEY.METADATA_ITEM]: [{ name: 'refs', at: 0, width: 8 }, { name: 'generation', at: 8, width: 8 }, { name: 'flags', at: 16, width: 8, special: [1n, 2n, 3n, 0x100n, 0x102n, 0x101n] }],
  [KEY.EXTENT_DATA_REF]: [{ name: 'root', at: 0, width: 8 }, { name: 'objectid', at: 8, width: 8 }, { name: 'offset', at: 16, width: 8 }, { name: 'count', at: 24, width: 4 }],
  [KEY.SHARED_DATA_REF]: [{ name: 'count', at: 0, width: 4 }],
  [KEY.BLOCK_GROUP_ITEM]: [{ name: 'used', at: 0, width: 8 }, { name: 'chunk_objectid', at: 8, width: 8 }, { name: 'flags', at: 16, width: 8, special: [1n, 2n, 4n, 5n, 0x22n, 0x24n, 0x11n] }],
  [KEY.FREE_SPACE_INFO]: [{ name: 'extent_count', at: 0, width: 4 }, { name: 'flags', at: 4, width: 4, special: [0n, 1n, 2n] }],
  [KEY.FREE_SPACE_BITMAP]: [{ name: 'bitmap[0]', at: 0, width: 1 }],
  [KEY.DEV_EXTENT]: [{ name: 'chunk_tree', at: 0, width: 8 }, { name: 'chunk_objectid', at: 8, width: 8 }, { name: 'chunk_offset', at: 16, width: 8 }, { name: 'length', at: 24, width: 8 }],
  [KEY.DEV_ITEM]: DEV_ITEM_FIELDS,
  [KEY.CHUNK_ITEM]: CHUNK_FIELDS,
  [KEY.QGROUP_STATUS]: [{ name: 'version', at: 0, width: 8 }, { name: 'generation', at: 8, width: 8 }, { name: 'flags', at: 16, width: 8, special: [0n, 1n, 2n, 3n, 4n] }, { name: 'rescan', at: 24, width: 8 }],
  [KEY.QGROUP_INFO]: [{ name: 'generation', at: 0, width: 8 }, { name: 'rfer', at: 8, width: 8 }, { name: 'rfer_cmpr', at: 16, width: 8 }, { name: 'excl', at: 24, width: 8 }, { name: 'excl_cmpr', at: 32, width: 8 }],
  [KEY.QGROUP_LIMIT]: [{ name: 'flags', at: 0, width: 8 }, { name: 'max_rfer', at: 8, width: 8 }, { name: 'max_excl', at: 16, width: 8 }],
  [KEY.UUID_KEY_SUBVOL]: [{ name: 'subvol[0]', at: 0, width: 8 }],
  [KEY.UUID_KEY_RECEIVED_SUBVOL]: [{ name: 'subvol[0]', at: 0, width: 8 }],
};

const INLINE_REF_TYPES = [KEY.TREE_BLOCK_REF, KEY.SHARED_BLOCK_REF, KEY.EXTENT_DATA_REF, KEY.SHARED_DATA_REF, KEY.EXTENT_OWNER_REF];

/**
 * The fields of an extent item's inline refs (their offsets depend on the
 * refs before them), parsed leniently: parsing stops at the first ref it
 * does not understand.
 */
function inlineRefFields(data: Buffer, keyType: number): Field[] {
  const out: Field[] = [];
  if (data.length < 24) return out;
  const flags = data.readBigUInt64LE(16);
  let off = 24;
  if (keyType === KEY.EXTENT_ITEM && (flags & 2n) !== 0n) {
    out.push({ name: 'tree_block_info.key.objectid', at: 24, width: 8 }, { name: 'tree_block_info.level', at: 41, width: 1, special: [0n, 1n, 2n, 8n] });
    off = 42;
  }
  let n = 0;
  while (off < data.length) {
    const type = data[off]!;
    const p = `inline[${n}]`;
    out.push({ name: `${p}.type`, at: off, width: 1, special: INLINE_REF_TYPES.map(BigInt).concat([0n, 255n]) });
    if (type === KEY.TREE_BLOCK_REF || type === KEY.SHARED_BLOCK_REF || type === KEY.EXTENT_OWNER_REF) {
      out.push({ name: `${p}.offset`, at: off + 1, width: 8 });
      off += 9;
    } else if (type === KEY.EXTENT_DATA_REF) {
      out.push({ name: `${p}.root`, at: off + 1, width: 8 }, { name: `${p}.objectid`, at: off + 9, width: 8 },
        { name: `${p}.offset`, at: off + 17, width: 8 }, { name: `${p}.count`, at: off + 25, width: 4 });
      off += 29;
    } else if (type === KEY.SHARED_DATA_REF) {
      out.push({ name: `${p}.parent`, at: off + 1, width: 8 }, { name: `${p}.count`, at: off + 9, width: 4 });
      off += 13;
    } else {
      break;
    }
    n++;
  }
  return out;
}

/** Fields of one item's data that fit inside it. */
function itemFields(type: number, data: Buffer): Field[] {
  let fs = FIELDS[type] ?? [];
  if (type === KEY.EXTENT_DATA && data.length >= 53 && data[20] !== 0) fs = [...fs, ...FILE_EXTENT_REG_FIELDS];
  if (type === KEY.EXTENT_ITEM || type === KEY.METADATA_ITEM) fs = [...fs, ...inlineRefFields(data, type)];
  return fs.filter((f) => f.at + f.width <= data.length);
}

function readField(buf: Buffer, at: number, width: number): bigint {
  switch (width) {
    case 1: return BigInt(buf[at]!);
    case 2: return BigInt(buf.readUInt16LE(at));
    case 4: return BigInt(buf.readUInt32LE(at));
    case 8: return buf.readBigUInt64LE(at);
    default: return BigInt(`0x${Buffer.from(buf.subarray(at, at + width)).reverse().toString('hex') || '0'}`);
  }
}

function writeField(buf: Buffer, at: number, width: number, v: bigint): void {
  v = BigInt.asUintN(width * 8, v);
  switch (width) {
    case 1: buf[at] = Number(v); break;
    case 2: buf.writeUInt16LE(Number(v), at); break;
    case 4: buf.writeUInt32LE(Number(v), at); break;
    case 8: buf.writeBigUInt64LE(v, at); break;
    default: for (let i = 0; i < width; i++) { buf[at + i] = Number(v & 0xffn); v >>= 8n; }
  }
}

/**
 * A new value for a field: the edges of its range, neighbours of the old
 * value, alignment-sized steps, a flipped bit, a value borrowed from
 * elsewhere in the image (a real bytenr, inode number, length), or noise.
 */
function newValue(r: Rand, cat: Catalog, width: number, old: bigint, special: bigint[] | undefined, borrowed: bigint[]): bigint {
  const bits = BigInt(width * 8);
  const max = (1n << bits) - 1n;
  const rnd = (): bigint => {
    let v = 0n;
    for (let i = 0; i < width; i++) v = (v << 8n) | BigInt(pickInt(r, 256));
    return v;
  };
  const ss = BigInt(cat.sectorsize);
  const ns = BigInt(cat.nodesize);
  for (let attempt = 0; attempt < 20; attempt++) {
    let v: bigint;
    const c = pickInt(r, special?.length ? 14 : 12);
    switch (c) {
      case 0: v = 0n; break;
      case 1: v = 1n; break;
      case 2: v = old + 1n; break;
      case 3: v = old - 1n; break;
      case 4: v = max; break;
      case 5: v = old ^ (1n << BigInt(pickInt(r, Number(bits)))); break;
      case 6: v = old + (r() < 0.5 ? ss : -ss); break;
      case 7: v = old + (r() < 0.5 ? ns : -ns); break;
      case 8: v = old * 2n; break;
      case 9: v = borrowed.length ? pick(r, borrowed) : rnd(); break;
      case 10: v = borrowed.length ? pick(r, borrowed) : old / 2n; break;
      case 11: v = rnd(); break;
      default: v = pick(r, special!); break;
    }
    v = BigInt.asUintN(Number(bits), v);
    if (v !== old) return v;
  }
  return BigInt.asUintN(Number(bits), old + 1n);
}

/** The same field in up to 16 other items of the type: values a corrupted pointer plausibly takes. */
function borrowValues(cat: Catalog, type: number, f: Field, r: Rand): bigint[] {
  const list = cat.byType.get(type) ?? [];
  const out: bigint[] = [];
  for (let i = 0; i < 16 && list.length; i++) {
    const [bi, slot] = pick(r, list);
    const b = cat.blocks[bi]!;
    const it = b.items[slot]!;
    if (f.at + f.width <= it.size) out.push(readField(b.buf, it.dataAt + f.at, f.width));
  }
  return out;
}

function sealedPatches(cat: Catalog, b: CatalogBlock, buf: Buffer): Patch[] {
  sealTreeBlock(buf, cat.csumType);
  return b.physical.map((offset) => ({ offset, bytes: buf }));
}

const KEY_TYPES_SEEN = (cat: Catalog) => [...cat.byType.keys()];

function where(b: CatalogBlock, slot?: number): string {
  return `tree ${b.tree} block ${b.bytenr} level ${b.level}${slot === undefined ? '' : ` slot ${slot}`}`;
}

/** A random item, choosing the key type first so rare types (chunks, roots) get their share. */
function pickItem(cat: Catalog, r: Rand, types?: number[]): { b: CatalogBlock; slot: number; type: number } | undefined {
  const avail = (types ?? KEY_TYPES_SEEN(cat)).filter((t) => (cat.byType.get(t)?.length ?? 0) > 0);
  if (!avail.length) return undefined;
  const type = pick(r, avail);
  const [bi, slot] = pick(r, cat.byType.get(type)!);
  return { b: cat.blocks[bi]!, slot, type };
}

function mutateField(cat: Catalog, r: Rand): Mutation | undefined {
  const types = KEY_TYPES_SEEN(cat).filter((t) => FIELDS[t] !== undefined);
  for (let tries = 0; tries < 10; tries++) {
    const p = pickItem(cat, r, types);
    if (!p) return undefined;
    const it = p.b.items[p.slot]!;
    const data = p.b.buf.subarray(it.dataAt, it.dataAt + it.size);
    const fields = itemFields(p.type, data);
    if (!fields.length) continue;
    const f = pick(r, fields);
    const old = readField(data, f.at, f.width);
    const v = newValue(r, cat, f.width, old, f.special, borrowValues(cat, p.type, f, r));
    const buf = Buffer.from(p.b.buf);
    writeField(buf, it.dataAt + f.at, f.width, v);
    const key = keyAt(p.b.buf, p.slot, true);
    return { kind: 'field', desc: `${where(p.b, p.slot)} item ${key} field ${f.name}: ${old} -> ${v}`, patches: sealedPatches(cat, p.b, buf) };
  }
  return undefined;
}

function keyAt(buf: Buffer, slot: number, leaf: boolean): string {
  const at = HEADER_SIZE + slot * (leaf ? ITEM_SIZE : KEY_PTR_SIZE);
  return `(${buf.readBigUInt64LE(at)} ${buf[at + 8]} ${buf.readBigUInt64LE(at + 9)})`;
}

function mutateKey(cat: Catalog, r: Rand): Mutation | undefined {
  let b: CatalogBlock;
  let slot: number;
  if (r() < 0.8) {
    const p = pickItem(cat, r);
    if (!p) return undefined;
    b = p.b; slot = p.slot;
  } else {
    const nodes = cat.blocks.filter((x) => x.level > 0);
    if (!nodes.length) return undefined;
    b = pick(r, nodes);
    slot = pickInt(r, b.buf.readUInt32LE(96));
  }
  const leaf = b.level === 0;
  const at = HEADER_SIZE + slot * (leaf ? ITEM_SIZE : KEY_PTR_SIZE);
  const before = keyAt(b.buf, slot, leaf);
  const buf = Buffer.from(b.buf);
  const part = pickInt(r, 5);
  let what: string;
  if (part === 0) {
    what = 'objectid';
    const old = buf.readBigUInt64LE(at);
    writeField(buf, at, 8, newValue(r, cat, 8, old, [256n, 257n, 5n, OBJ.FREE_SPACE, OBJ.ORPHAN], []));
  } else if (part === 1) {
    what = 'type';
    const types = KEY_TYPES_SEEN(cat);
    let t = pick(r, [...types, buf[at + 8]! + 1, buf[at + 8]! - 1, 0, 255]);
    if (t === buf[at + 8]) t = (t + 1) & 0xff;
    buf[at + 8] = t & 0xff;
  } else {
    what = 'offset';
    const old = buf.readBigUInt64LE(at + 9);
    writeField(buf, at + 9, 8, newValue(r, cat, 8, old, undefined, []));
  }
  return { kind: 'key', desc: `${where(b, slot)} key ${before} ${what} -> ${keyAt(buf, slot, leaf)}`, patches: sealedPatches(cat, b, buf) };
}

const HEADER_FIELDS: Field[] = [
  { name: 'fsid', at: 32, width: 16 }, { name: 'bytenr', at: 48, width: 8 },
  { name: 'flags', at: 56, width: 8, special: [0n, 1n, 2n, 3n, 1n << 56n, 2n << 56n] },
  { name: 'chunk_tree_uuid', at: 64, width: 16 }, { name: 'generation', at: 80, width: 8 },
  { name: 'owner', at: 88, width: 8, special: [1n, 2n, 3n, 4n, 5n, 7n, 9n, 10n, 256n, 257n, OBJ.TREE_RELOC, OBJ.DATA_RELOC_TREE] },
  { name: 'nritems', at: 96, width: 4 }, { name: 'level', at: 100, width: 1, special: [0n, 1n, 2n, 7n, 8n] },
];

function mutateHeader(cat: Catalog, r: Rand): Mutation | undefined {
  const b = pick(r, cat.blocks);
  const f = pick(r, HEADER_FIELDS);
  const old = readField(b.buf, f.at, f.width);
  const v = newValue(r, cat, f.width, old, f.special, f.name === 'bytenr' ? cat.blocks.slice(0, 16).map((x) => x.bytenr) : []);
  const buf = Buffer.from(b.buf);
  writeField(buf, f.at, f.width, v);
  return { kind: 'header', desc: `${where(b)} header ${f.name}: ${old} -> ${v}`, patches: sealedPatches(cat, b, buf) };
}

/** A node's pointer: its child bytenr or expected generation. */
function mutatePtr(cat: Catalog, r: Rand): Mutation | undefined {
  const nodes = cat.blocks.filter((x) => x.level > 0);
  if (!nodes.length) return undefined;
  const b = pick(r, nodes);
  const slot = pickInt(r, b.buf.readUInt32LE(96));
  const at = HEADER_SIZE + slot * KEY_PTR_SIZE;
  const buf = Buffer.from(b.buf);
  const gen = r() < 0.4;
  const off = at + (gen ? 25 : 17);
  const old = buf.readBigUInt64LE(off);
  const v = newValue(r, cat, 8, old, undefined, gen ? [] : cat.blocks.map((x) => x.bytenr).filter((x) => x !== old).slice(0, 32));
  buf.writeBigUInt64LE(v, off);
  return { kind: 'ptr', desc: `${where(b, slot)} ptr ${gen ? 'generation' : 'blockptr'}: ${old} -> ${v}`, patches: sealedPatches(cat, b, buf) };
}

/** One bit anywhere in the block's meaningful bytes (header after the checksum, item table, item data). */
function mutateBit(cat: Catalog, r: Rand): Mutation | undefined {
  const b = pick(r, cat.blocks);
  const n = b.buf.readUInt32LE(96);
  const regions: [number, number][] = [[CSUM_SIZE, HEADER_SIZE]];
  if (b.level === 0) {
    regions.push([HEADER_SIZE, HEADER_SIZE + n * ITEM_SIZE]);
    for (const it of b.items) if (it.size) regions.push([it.dataAt, it.dataAt + it.size]);
  } else {
    regions.push([HEADER_SIZE, HEADER_SIZE + n * KEY_PTR_SIZE]);
  }
  // Item data is most of a leaf: weigh regions by size, but give the header and table a fair share.
  const [s, e] = r() < 0.3 ? pick(r, regions.slice(0, 2)) : pick(r, regions);
  if (e <= s) return undefined;
  const off = s + pickInt(r, e - s);
  const bit = pickInt(r, 8);
  const buf = Buffer.from(b.buf);
  buf[off] = buf[off]! ^ (1 << bit);
  return { kind: 'bit', desc: `${where(b)} byte ${off} bit ${bit}: 0x${b.buf[off]!.toString(16)} -> 0x${buf[off]!.toString(16)}`, patches: sealedPatches(cat, b, buf) };
}

/** Removes one item from a leaf, repacking the rest as a writer would. */
function mutateDrop(cat: Catalog, r: Rand): Mutation | undefined {
  const p = pickItem(cat, r);
  if (!p) return undefined;
  const { b, slot } = p;
  const src = b.buf;
  const items = b.items.map((it, i) => {
    const at = HEADER_SIZE + i * ITEM_SIZE;
    return { key: { objectid: src.readBigUInt64LE(at), type: src[at + 8]!, offset: src.readBigUInt64LE(at + 9) }, data: src.subarray(it.dataAt, it.dataAt + it.size) };
  });
  const gone = keyAt(src, slot, true);
  items.splice(slot, 1);
  const buf = encodeLeaf({
    bytenr: src.readBigUInt64LE(48), generation: src.readBigUInt64LE(80), owner: src.readBigUInt64LE(88), level: 0,
    fsid: Buffer.from(src.subarray(32, 48)), chunkTreeUuid: Buffer.from(src.subarray(64, 80)), flags: src.readBigUInt64LE(56),
  }, items, cat.nodesize, cat.csumType);
  return { kind: 'drop-item', desc: `${where(b, slot)} item ${gone} removed`, patches: sealedPatches(cat, b, buf) };
}

const SUPER_FIELDS: Field[] = [
  { name: 'generation', at: 72, width: 8 }, { name: 'root', at: 80, width: 8 }, { name: 'chunk_root', at: 88, width: 8 },
  { name: 'log_root', at: 96, width: 8 }, { name: 'total_bytes', at: 112, width: 8 }, { name: 'bytes_used', at: 120, width: 8 },
  { name: 'root_dir_objectid', at: 128, width: 8, special: [6n, 5n, 0n] }, { name: 'num_devices', at: 136, width: 8, special: [0n, 1n, 2n] },
  { name: 'sectorsize', at: 144, width: 4, special: [512n, 4096n, 8192n, 65536n] }, { name: 'nodesize', at: 148, width: 4, special: [4096n, 16384n, 65536n] },
  { name: 'stripesize', at: 156, width: 4, special: [4096n, 65536n] }, { name: 'chunk_root_generation', at: 164, width: 8 },
  { name: 'compat_ro_flags', at: 180, width: 8, special: [0n, 1n, 3n, 8n, 11n] }, { name: 'incompat_flags', at: 188, width: 8 },
  { name: 'root_level', at: 198, width: 1, special: [0n, 1n, 2n, 8n] }, { name: 'chunk_root_level', at: 199, width: 1, special: [0n, 1n, 8n] },
  { name: 'dev_item.devid', at: 201, width: 8 }, { name: 'dev_item.total_bytes', at: 209, width: 8 }, { name: 'dev_item.bytes_used', at: 217, width: 8 },
  { name: 'dev_item.uuid', at: 267, width: 16 }, { name: 'cache_generation', at: 555, width: 8 }, { name: 'uuid_tree_generation', at: 563, width: 8 },
  { name: 'sys_chunk_array_size', at: 160, width: 4 }, { name: 'sys_chunk.length', at: 811 + 17, width: 8 },
  { name: 'sys_chunk.type', at: 811 + 17 + 24, width: 8, special: [2n, 0x22n, 0x12n, 1n] },
  { name: 'sys_chunk.num_stripes', at: 811 + 17 + 44, width: 2, special: [0n, 1n, 2n, 3n] },
  { name: 'sys_chunk.stripe[0].offset', at: 811 + 17 + 56, width: 8 },
];

function mutateSuper(cat: Catalog, r: Rand): Mutation | undefined {
  const f = pick(r, SUPER_FIELDS);
  const old = readField(cat.superblock, f.at, f.width);
  const v = newValue(r, cat, f.width, old, f.special, []);
  const buf = Buffer.from(cat.superblock);
  writeField(buf, f.at, f.width, v);
  const sum = checksum(cat.csumType, buf.subarray(CSUM_SIZE, SUPER_INFO_SIZE));
  buf.fill(0, 0, CSUM_SIZE);
  sum.copy(buf, 0, 0, csumSize(cat.csumType));
  return { kind: 'super', desc: `superblock ${f.name}: ${old} -> ${v}`, patches: [{ offset: SUPER_MIRROR_OFFSETS[0]!, bytes: buf }] };
}

/** Families and how often each is drawn; fields dominate because they reach the cross-tree checks. */
const FAMILIES: [number, (cat: Catalog, r: Rand) => Mutation | undefined][] = [
  [45, mutateField], [12, mutateKey], [7, mutateHeader], [5, mutatePtr], [14, mutateBit], [10, mutateDrop], [7, mutateSuper],
];

/** One mutation drawn from `r` (a seeded generator); undefined only for an image with nothing to mutate. */
export function planMutation(cat: Catalog, r: Rand): Mutation | undefined {
  const total = FAMILIES.reduce((n, [w]) => n + w, 0);
  for (let tries = 0; tries < 10; tries++) {
    let x = r() * total;
    let fn = FAMILIES[0]![1];
    for (const [w, f] of FAMILIES) {
      if (x < w) { fn = f; break; }
      x -= w;
    }
    const m = fn(cat, r);
    if (m) return m;
  }
  return undefined;
}
