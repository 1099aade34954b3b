/**
 * Files made straight from items, below the POSIX layer: engine tests need
 * content that btrfs check accepts (inodes linked into the root directory,
 * data extents with their references) without depending on the fs layer
 * they are meant to support.
 */
import { createHash } from 'node:crypto';
import { KEY, FT, S_IFREG, OBJ, FILE_EXTENT } from '../../src/format/constants.js';
import { key } from '../../src/format/key.js';
import { nameHash } from '../../src/util/checksum.js';
import { decodeInodeItem, encodeInodeItem, type InodeItem } from '../../src/format/items/inode-item.js';
import { encodeInodeRefs } from '../../src/format/items/inode-ref.js';
import { encodeDirItems } from '../../src/format/items/dir-item.js';
import { decodeFileExtentItem, encodeFileExtentItem, type FileExtentRegular } from '../../src/format/items/file-extent-item.js';
import type { Transaction } from '../../src/transaction/transaction.js';

/** Where raw files go: a subvolume tree and a directory in it. */
export interface RawDir { tree: bigint; dir: bigint }
const TOP: RawDir = { tree: OBJ.FS_TREE, dir: 256n };

export interface RawFile { name: string; ino: bigint; size: number; sha256: string; at: RawDir }

function inode(gen: bigint, mode: number, size: bigint, nbytes: bigint): InodeItem {
  const t = { sec: 1_700_000_000n, nsec: 123_456_789 };
  return {
    generation: gen, transid: gen, size, nbytes, block_group: 0n, nlink: 1, uid: 0, gid: 0, mode, rdev: 0n,
    flags: 0n, sequence: 0n, reserved: Buffer.alloc(32), atime: t, ctime: t, mtime: t, otime: t,
  };
}

async function nextFree(txn: Transaction, { tree: T, dir: ROOT_DIR }: RawDir): Promise<{ ino: bigint; index: bigint }> {
  const last = await txn.last(T, key(256n, 0, 0n), key(0xffff_ffff_ffff_ff00n, 255, 0xffff_ffff_ffff_ffffn));
  const ino = (last ? last.key.objectid : 256n) + 1n;
  const idx = await txn.last(T, key(ROOT_DIR, KEY.DIR_INDEX, 0n), key(ROOT_DIR, KEY.DIR_INDEX, 0xffff_ffff_ffff_ffffn));
  return { ino, index: idx ? idx.key.offset + 1n : 2n };
}

/**
 * A regular file `name` in the top-level root directory holding `data`
 * (size a multiple of 4096, or empty), in extents of at most `extentMax`.
 */
export async function addRawFile(txn: Transaction, name: string, data: Buffer, extentMax = 1024 * 1024, at: RawDir = TOP): Promise<RawFile> {
  const { tree: T, dir: ROOT_DIR } = at;
  const { ino, index } = await nextFree(txn, at);
  const nb = Buffer.from(name);
  let off = 0;
  while (off < data.length) {
    const want = Math.min(extentMax, data.length - off);
    const got = await txn.allocData(want);
    await txn.writeData(got.bytenr, data.subarray(off, off + got.len));
    const fe: FileExtentRegular = {
      generation: txn.generation, ram_bytes: BigInt(got.len), compression: 0, encryption: 0, other_encoding: 0, type: FILE_EXTENT.REG,
      disk_bytenr: got.bytenr, disk_num_bytes: BigInt(got.len), offset: 0n, num_bytes: BigInt(got.len),
    };
    await txn.insert(T, key(ino, KEY.EXTENT_DATA, BigInt(off)), encodeFileExtentItem(fe));
    txn.addDataRef({ bytenr: got.bytenr, numBytes: BigInt(got.len), root: T, ino, offset: BigInt(off) });
    off += got.len;
  }
  await txn.insert(T, key(ino, KEY.INODE_ITEM, 0n), encodeInodeItem(inode(txn.generation, S_IFREG | 0o644, BigInt(data.length), BigInt(data.length))));
  await txn.insert(T, key(ino, KEY.INODE_REF, ROOT_DIR), encodeInodeRefs([{ index, name: nb }]));
  const loc = key(ino, KEY.INODE_ITEM, 0n);
  const entry = encodeDirItems([{ location: loc, transid: txn.generation, type: FT.REG_FILE, name: nb, data: Buffer.alloc(0) }]);
  await txn.insert(T, key(ROOT_DIR, KEY.DIR_ITEM, nameHash(nb)), entry);
  await txn.insert(T, key(ROOT_DIR, KEY.DIR_INDEX, index), entry);
  await bumpDir(txn, at, BigInt(nb.length * 2));
  return { name, ino, size: data.length, sha256: createHash('sha256').update(data).digest('hex'), at };
}

/** Removes a file made by addRawFile: its items, its references, its directory entries. */
export async function removeRawFile(txn: Transaction, f: RawFile): Promise<void> {
  const { tree: T, dir: ROOT_DIR } = f.at;
  const nb = Buffer.from(f.name);
  const exts: { k: ReturnType<typeof key>; fe: FileExtentRegular }[] = [];
  for await (const it of txn.iter(T, key(f.ino, KEY.EXTENT_DATA, 0n), key(f.ino, KEY.EXTENT_DATA, 0xffff_ffff_ffff_ffffn))) {
    exts.push({ k: it.key, fe: decodeFileExtentItem(it.data) as FileExtentRegular });
  }
  for (const { k, fe } of exts) {
    await txn.delete(T, k);
    txn.dropDataRef({ bytenr: fe.disk_bytenr, numBytes: fe.disk_num_bytes, root: T, ino: f.ino, offset: k.offset - fe.offset });
  }
  const ref = await txn.lookup(T, key(f.ino, KEY.INODE_REF, ROOT_DIR));
  const index = ref!.readBigUInt64LE(0);
  await txn.delete(T, key(f.ino, KEY.INODE_REF, ROOT_DIR));
  await txn.delete(T, key(f.ino, KEY.INODE_ITEM, 0n));
  await txn.delete(T, key(ROOT_DIR, KEY.DIR_ITEM, nameHash(nb)));
  await txn.delete(T, key(ROOT_DIR, KEY.DIR_INDEX, index));
  await bumpDir(txn, f.at, -BigInt(nb.length * 2));
}

async function bumpDir(txn: Transaction, { tree: T, dir }: RawDir, delta: bigint): Promise<void> {
  const k = key(dir, KEY.INODE_ITEM, 0n);
  const it = decodeInodeItem((await txn.lookup(T, k))!);
  it.size += delta;
  it.transid = txn.generation;
  await txn.update(T, k, encodeInodeItem(it));
}

/** Deterministic, incompressible bytes. */
export function pseudoRandom(len: number, seed: number): Buffer {
  const out = Buffer.alloc(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out.writeUInt32LE(x, i);
  }
  return out;
}
