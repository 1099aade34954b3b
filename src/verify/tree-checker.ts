/**
 * The tree-checker: every tree block is checked once, when it is read, and
 * deeper code trusts what it got. Messages follow the kernel's shape
 * ("corrupt leaf: root=5 block=30408704 slot=3, ...") so they can be compared
 * with kernel logs and btrfs check output.
 *
 * Checks, in the order a reader needs them: checksum (else nothing else is
 * meaningful), the header's identity (bytenr, fsid, level, generation, owner
 * when known), then structure (item bounds, key order), then per-item rules.
 */
import { corrupt, BtrfsError } from '../util/errors.js';
import { checksum, crc32c, csumSize, CSUM_TYPE } from '../util/checksum.js';
import { HEADER_SIZE, ITEM_SIZE, KEY_PTR_SIZE, MAX_LEVEL, OBJ } from '../format/constants.js';
import { compareKeys, keyEquals, formatKey, type Key } from '../format/key.js';
import { TreeBlock } from '../format/tree-block.js';
import { checkItem } from './item-rules.js';

/** What the filesystem knows about every block it reads. */
export interface CheckContext {
  nodesize: number;
  sectorsize: number;
  csumType: number;
  /** the fsid that tree blocks carry (metadata_uuid when that feature is on) */
  fsid: Buffer;
  superGeneration: bigint;
}

/** What the reader expects of this particular block (from the parent pointer or root item). */
export interface BlockExpectation {
  bytenr: bigint;
  level?: number;
  generation?: bigint;
  firstKey?: Key;
  /** tree objectid, for messages and for the owner check */
  owner?: bigint;
}

export function blockCsumOk(buf: Buffer, csumType: number): boolean {
  // crc32c, the usual case, compared as a number: no digest buffer per block read.
  if (csumType === CSUM_TYPE.CRC32) return crc32c(buf.subarray(32)) === buf.readUInt32LE(0);
  const want = checksum(csumType, buf.subarray(32));
  return buf.subarray(0, csumSize(csumType)).equals(want);
}

/** Verifies a raw block and returns it decoded; throws EUCLEAN (or EIO for checksum) naming the block. */
export function checkTreeBlock(buf: Buffer, ctx: CheckContext, exp: BlockExpectation): TreeBlock {
  const where = { block: exp.bytenr, tree: exp.owner };
  if (buf.length !== ctx.nodesize) throw corrupt(`tree block size ${buf.length} != nodesize ${ctx.nodesize}`, where);
  if (!blockCsumOk(buf, ctx.csumType)) {
    const found = buf.subarray(0, csumSize(ctx.csumType)).toString('hex');
    const want = checksum(ctx.csumType, buf.subarray(32)).toString('hex');
    throw new BtrfsError('EIO', `checksum verify failed on ${exp.bytenr} wanted 0x${want} found 0x${found}`, where);
  }
  const bytenr = buf.readBigUInt64LE(48);
  if (bytenr !== exp.bytenr) throw corrupt(`bad tree block start, want ${exp.bytenr} have ${bytenr}`, where);
  if (!buf.subarray(32, 48).equals(ctx.fsid)) throw corrupt('tree block fsid does not match the filesystem', where);
  const level = buf[100]!;
  if (level >= MAX_LEVEL) throw corrupt(`tree block level ${level} too high`, where);
  if (exp.level !== undefined && level !== exp.level) throw corrupt(`bad tree block level, want ${exp.level} have ${level}`, where);
  const generation = buf.readBigUInt64LE(80);
  // An expected generation of 0 means "unknown", as in the kernel's parent transid check.
  if (exp.generation !== undefined && exp.generation !== 0n && generation !== exp.generation) {
    throw corrupt(`parent transid verify failed on ${exp.bytenr} wanted ${exp.generation} found ${generation}`, where);
  }
  // Log tree blocks are written by fsync during the transaction after the
  // committed one, so they may be one generation ahead; nothing else may.
  const headerOwner = buf.readBigUInt64LE(88);
  const ahead = headerOwner === OBJ.TREE_LOG ? 1n : 0n;
  if (generation > ctx.superGeneration + ahead) {
    throw corrupt(`tree block generation ${generation} is newer than the superblock's ${ctx.superGeneration}`, where);
  }
  const block = new TreeBlock(buf, ctx.nodesize);
  const owner = exp.owner ?? block.owner;
  const w = (slot: number, k?: Key) => ({ block: exp.bytenr, tree: owner, slot, key: k });
  if (block.isLeaf) checkLeaf(block, ctx, owner, w);
  else checkNode(block, ctx, owner, w);
  checkFirstKey(block, exp);
  return block;
}

/**
 * The parent's word on a block: its first key. Checked on every read, a
 * cached block included, as the kernel does for each parent it descends
 * from: a block shared by snapshots is met through several pointers, and
 * each must agree with it.
 */
export function checkFirstKey(block: TreeBlock, exp: BlockExpectation): void {
  if (!exp.firstKey) return;
  const first = block.firstKey();
  const problem = firstKeyProblem(block.isLeaf, exp.bytenr, first, exp.firstKey);
  if (problem) throw corrupt(problem, { block: exp.bytenr, tree: exp.owner ?? block.owner, slot: 0, key: first });
}

/** What is wrong when a block whose first key is `have` (undefined: empty) is reached through a pointer keyed `want`. */
export function firstKeyProblem(isLeaf: boolean, bytenr: bigint, have: Key | undefined, want: Key): string | undefined {
  const kind = isLeaf ? 'leaf' : 'node';
  // A block reached through a pointer has a first key to meet, so it cannot
  // be empty: the kernel refuses such a leaf (only a root may be empty).
  if (!have) return `corrupt ${kind}: invalid tree nritems, bytenr=${bytenr} nritems=0 expect >0`;
  if (!keyEquals(have, want)) return `corrupt ${kind}: first key mismatch, want ${formatKey(want)} have ${formatKey(have)}`;
  return undefined;
}

/** Orders the keys stored at byte offsets a and b of buf (objectid u64, type u8, offset u64), without decoding them. */
function compareStoredKeys(buf: Buffer, a: number, b: number): number {
  return u32(buf, a + 4) - u32(buf, b + 4) || u32(buf, a) - u32(buf, b)
    || buf[a + 8]! - buf[b + 8]!
    || u32(buf, a + 13) - u32(buf, b + 13) || u32(buf, a + 9) - u32(buf, b + 9);
}

/** The u32 at `at`, by index (no argument validation: this runs for every key of every block read). */
const u32 = (b: Buffer, at: number): number => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 16777216;

function checkLeaf(block: TreeBlock, ctx: CheckContext, owner: bigint, w: (s: number, k?: Key) => object): void {
  const n = block.nritems;
  const buf = block.buf;
  const itemCtx = { owner, sectorsize: ctx.sectorsize, csumSize: csumSize(ctx.csumType) };
  // Items' data is packed from the end of the block backwards, each ending where the previous began.
  let expectEnd = ctx.nodesize - HEADER_SIZE;
  // Keys are decoded only for messages: every block read passes through here.
  for (let slot = 0; slot < n; slot++) {
    const at = HEADER_SIZE + slot * ITEM_SIZE;
    if (slot > 0 && compareStoredKeys(buf, at - ITEM_SIZE, at) >= 0) {
      throw corrupt(`corrupt leaf: bad key order, prev ${formatKey(block.itemKeyAt(slot - 1))} current ${formatKey(block.itemKeyAt(slot))}`, w(slot, block.itemKeyAt(slot)));
    }
    const offset = block.itemOffsetAt(slot);
    const end = offset + block.itemSizeAt(slot);
    if (end !== expectEnd) {
      throw corrupt(`corrupt leaf: unexpected item end, have ${end} expect ${expectEnd}`, w(slot, block.itemKeyAt(slot)));
    }
    if (HEADER_SIZE + offset < HEADER_SIZE + n * ITEM_SIZE) {
      throw corrupt(`corrupt leaf: item data overlaps item headers, offset ${offset}`, w(slot, block.itemKeyAt(slot)));
    }
    expectEnd = offset;
    const problem = checkItem(block, slot, itemCtx);
    if (problem) throw corrupt(`corrupt leaf: ${problem}`, w(slot, block.itemKeyAt(slot)));
  }
}

function checkNode(block: TreeBlock, ctx: CheckContext, owner: bigint, w: (s: number, k?: Key) => object): void {
  const n = block.nritems;
  const max = Math.floor((ctx.nodesize - HEADER_SIZE) / KEY_PTR_SIZE);
  if (n === 0 || n > max) throw corrupt(`corrupt node: invalid nritems ${n}, expect [1, ${max}]`, w(0));
  for (let slot = 0; slot < n; slot++) {
    const p = block.ptrs[slot]!;
    if (p.blockptr === 0n || p.blockptr % BigInt(ctx.sectorsize) !== 0n) {
      throw corrupt(`corrupt node: invalid blockptr ${p.blockptr}`, w(slot, p.key));
    }
    if (slot > 0 && compareKeys(block.ptrs[slot - 1]!.key, p.key) >= 0) {
      throw corrupt(`corrupt node: bad key order, prev ${formatKey(block.ptrs[slot - 1]!.key)} current ${formatKey(p.key)}`, w(slot, p.key));
    }
    if (p.generation > ctx.superGeneration + 1n) {
      throw corrupt(`corrupt node: pointer generation ${p.generation} newer than the superblock's`, w(slot, p.key));
    }
  }
  void owner;
}
