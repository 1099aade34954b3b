/**
 * No input makes the reader crash or hang.
 *
 * Every case runs in a worker thread (so a synchronous or microtask-only
 * infinite loop can be stopped: the worker is terminated when a case takes
 * longer than CASE_TIMEOUT_MS) and does: Filesystem.open, libraryManifest
 * (without hashing: a legitimate 2^60-byte sparse file must not make the
 * *test* hang), a bounded read of every file's pieces and first 4 KiB,
 * readFile of files up to 16 MiB, listSubvolumes, a walk of every tree and
 * dump-tree. Each stage must succeed or reject with a BtrfsError; any other
 * exception, a hang, or an allocation above ALLOC_LIMIT (Buffer.alloc* are
 * guarded in the worker; its heap is capped too) fails the test.
 *
 * Inputs:
 * - a seeded, time-bounded fuzz of small fixtures: tree blocks (random
 *   bytes; header nritems/level/generation/bytenr/owner; item keys, offsets,
 *   sizes; node blockptrs to itself, its parent, elsewhere; chunk items;
 *   root items; inode, dir and file extent items) and the superblock
 *   (nodesize, sectorsize, sys_chunk_array, roots, levels, csum type...),
 *   with the checksum recomputed so the mutation reaches the parsers, and
 *   applied to every copy so DUP cannot hide it;
 * - truncated images, the wrong magic (ext2), all-zero and empty files;
 * - btrfs-progs' fuzz-test images (../shared/corpus/fuzz-tests).
 *
 * TSBTRFS_SEED=N reproduces a fuzz run (the seed is printed);
 * TSBTRFS_FUZZ_MS sets the time budget per fuzzed fixture (default 4000),
 * TSBTRFS_FUZZ_CASES a fixed number of cases instead; TSBTRFS_CASE_SEED=N
 * replays the single case printed with "case seed N" in a failure.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { FileDevice } from '../../src/device/file-device.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { dumpTree } from '../../src/inspect/dump-tree.js';
import { HEADER_SIZE, KEY, SUPER_INFO_SIZE, SUPER_MIRROR_OFFSETS } from '../../src/format/constants.js';
import { key, type Key } from '../../src/format/key.js';
import { extract } from '../../src/fs/extract.js';
import { listDir } from '../../src/fs/dir.js';
import { lookupItem } from '../../src/tree/search.js';
import { BtrfsError } from '../../src/util/errors.js';
import { checksum, initChecksums, nameHash } from '../../src/util/checksum.js';
import { fixturePath, listFixtures, repoRoot } from '../helpers/fixtures.js';
import { libraryManifest } from '../helpers/library-manifest.js';
import {
  OverlayDevice, listTreeBlocks, rng, testSeed, walkAllTrees, type TreeBlockRef,
} from '../helpers/overlay-device.js';

const CASE_TIMEOUT_MS = 5_000;
const ALLOC_LIMIT = 256 * 1024 * 1024;
const READFILE_LIMIT = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------
// The worker: runs one case per message.

/** A case: an image file seen through an overlay (patches, maybe cut short). */
interface CaseInput {
  id: number;
  image: string;
  size?: number;
  patches: [number, string][];
}

interface StageResult {
  stage: string;
  /** ok, btrfs (rejected with a BtrfsError), other (any other exception: a bug) */
  kind: 'ok' | 'btrfs' | 'other';
  code?: string;
  block?: string;
  message?: string;
  stack?: string;
}

interface CaseOutput {
  id: number;
  stages: StageResult[];
  ms: number;
}

class HugeAllocation extends Error {
  constructor(n: number) {
    super(`allocation of ${n} bytes exceeds the test limit of ${ALLOC_LIMIT}`);
    this.name = 'HugeAllocation';
  }
}

function guardAllocations(): void {
  const B = Buffer as unknown as Record<string, (...a: unknown[]) => Buffer>;
  for (const fn of ['alloc', 'allocUnsafe', 'allocUnsafeSlow']) {
    const orig = B[fn]!.bind(Buffer);
    B[fn] = (...args: unknown[]) => {
      const n = args[0];
      if (typeof n === 'number' && n > ALLOC_LIMIT) throw new HugeAllocation(n);
      return orig(...args);
    };
  }
}

async function runCase(c: CaseInput, bases: Map<string, FileDevice>): Promise<CaseOutput> {
  const t0 = Date.now();
  const stages: StageResult[] = [];
  let base = bases.get(c.image);
  if (!base) {
    base = await FileDevice.open(c.image, { readOnly: true });
    bases.set(c.image, base);
  }
  const dev = new OverlayDevice(base, c.size !== undefined ? { size: c.size } : {});
  for (const [off, b64] of c.patches) dev.patch(off, Buffer.from(b64, 'base64'));

  const stage = async (name: string, fn: () => Promise<void>): Promise<boolean> => {
    try {
      await fn();
      stages.push({ stage: name, kind: 'ok' });
      return true;
    } catch (e) {
      if (e instanceof BtrfsError) {
        stages.push({ stage: name, kind: 'btrfs', code: e.code, block: e.block?.toString(), message: e.message });
      } else {
        const err = e as Error;
        stages.push({ stage: name, kind: 'other', message: `${err?.name ?? typeof e}: ${err?.message ?? String(e)}`, stack: err?.stack });
      }
      return false;
    }
  };

  let fs: Filesystem | undefined;
  if (!(await stage('open', async () => { fs = await Filesystem.open(dev); }))) return { id: c.id, stages, ms: Date.now() - t0 };
  const f = fs!;
  let files: string[] = [];
  await stage('libraryManifest', async () => {
    const m = await libraryManifest(f, '/', { noHash: true });
    files = Object.keys(m).filter((p) => m[p]!.type === 'file');
  });
  await stage('file contents', async () => {
    for (const p of files) {
      const r = await f.resolve(p, false);
      let n = 0;
      let bytes = 0;
      for await (const piece of f.pieces(r)) {
        if (piece.kind === 'data') bytes += piece.data.length;
        if (++n > 4096 || bytes > 64 * 1024 * 1024) break;
      }
      await f.read(p, 0, 4096);
      if (r.item.size <= BigInt(READFILE_LIMIT)) await f.readFile(p);
    }
  });
  await stage('listSubvolumes', async () => {
    await f.listSubvolumes();
    await f.getDefaultSubvolume();
  });
  await stage('walkAllTrees', async () => { await walkAllTrees(f.info); });
  await stage('dumpTree', async () => {
    let chars = 0;
    await dumpTree(f.info, (s) => { chars += s.length; });
  });
  return { id: c.id, stages, ms: Date.now() - t0 };
}

if (!isMainThread && (workerData as { hostileWorker?: boolean } | undefined)?.hostileWorker) {
  guardAllocations();
  const bases = new Map<string, FileDevice>();
  parentPort!.on('message', (c: CaseInput) => {
    runCase(c, bases).then(
      (out) => parentPort!.postMessage(out),
      (e) => parentPort!.postMessage({
        id: c.id, ms: 0,
        stages: [{ stage: 'harness', kind: 'other', message: String(e), stack: (e as Error)?.stack }],
      } satisfies CaseOutput),
    );
  });
}

// ---------------------------------------------------------------------------
// The main thread: a runner that restarts the worker after a hang or a crash.

type Verdict = { ok: true; out: CaseOutput } | { ok: false; why: string; out?: CaseOutput };

class CaseRunner {
  private worker: Worker | undefined;
  private seq = 0;

  private spawn(): Worker {
    const w = new Worker(new URL(import.meta.url), {
      workerData: { hostileWorker: true },
      resourceLimits: { maxOldGenerationSizeMb: 512, maxYoungGenerationSizeMb: 64 },
      stdout: false,
      stderr: false,
    });
    w.unref();
    return w;
  }

  /** Runs a case; a BtrfsError or success in every stage is ok, anything else is a failure. */
  async run(c: Omit<CaseInput, 'id'>, timeoutMs = CASE_TIMEOUT_MS): Promise<Verdict> {
    const w = (this.worker ??= this.spawn());
    const id = ++this.seq;
    return new Promise<Verdict>((resolve) => {
      const cleanup = () => {
        clearTimeout(timer);
        w.off('message', onMsg);
        w.off('error', onErr);
        w.off('exit', onExit);
      };
      const kill = (why: string) => {
        cleanup();
        this.worker = undefined;
        void w.terminate();
        resolve({ ok: false, why });
      };
      const timer = setTimeout(() => kill(`HANG: no result after ${timeoutMs} ms`), timeoutMs);
      const onMsg = (out: CaseOutput) => {
        if (out.id !== id) return;
        cleanup();
        const bad = out.stages.find((s) => s.kind === 'other');
        if (bad) resolve({ ok: false, out, why: `${bad.stage}: ${bad.stack ?? bad.message}` });
        else resolve({ ok: true, out });
      };
      const onErr = (e: Error) => kill(`worker died: ${(e as NodeJS.ErrnoException).code ?? ''} ${e.stack ?? e.message}`);
      const onExit = (code: number) => kill(`worker exited with code ${code}`);
      w.on('message', onMsg);
      w.once('error', onErr);
      w.once('exit', onExit);
      w.postMessage({ ...c, id } satisfies CaseInput);
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }
}

// ---------------------------------------------------------------------------
// Mutations.

const U64_MAX = (1n << 64n) - 1n;

interface FuzzImage {
  name: string;
  image: string;
  size: number;
  nodesize: number;
  sectorsize: number;
  csumType: number;
  blocks: TreeBlockRef[];
  /** raw bytes of copy 0 of each block */
  raw: Map<bigint, Buffer>;
  /** parent block of each non-root block */
  parent: Map<bigint, bigint>;
  superRaw: Buffer;
}

interface Mutation { what: string; patches: [number, string][] }

export class Picker {
  constructor(readonly r: () => number) {}
  int(n: number): number { return Math.floor(this.r() * n); }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  u64(): bigint { return (BigInt(this.int(2 ** 32)) << 32n) | BigInt(this.int(2 ** 32)); }
}

function setU64(b: Buffer, off: number, v: bigint): void { b.writeBigUInt64LE(BigInt.asUintN(64, v), off); }

/** Interesting values for a u64 field whose current value is `cur`. */
function u64Values(p: Picker, cur: bigint, img: FuzzImage, extra: bigint[] = []): bigint {
  const other = p.pick(img.blocks).bytenr;
  return p.pick([
    0n, 1n, cur - 1n, cur + 1n, cur * 2n, U64_MAX, U64_MAX - 4095n, 1n << 63n, (1n << 53n) + 1n, 1n << 32n,
    BigInt(img.size), BigInt(img.size) + 4096n, other, other + 1n, other + 512n, BigInt(img.nodesize), p.u64(), ...extra,
  ]);
}

function u32Values(p: Picker, cur: number, img: FuzzImage): number {
  return p.pick([0, 1, cur - 1, cur + 1, cur * 2, 0xffff, 0x10000, 0x7fffffff, 0xffffffff, img.nodesize, img.nodesize - 101, img.nodesize + 1, p.int(2 ** 32)]) >>> 0;
}

function u16Values(p: Picker, cur: number): number {
  return p.pick([0, 1, cur - 1, cur + 1, 255, 256, 4095, 4096, 0x7fff, 0xffff, p.int(0x10000)]) & 0xffff;
}

const KEY_TYPES = [0, 1, 12, 13, 24, 48, 54, 60, 72, 84, 96, 108, 128, 132, 144, 156, 168, 169, 176, 178, 180, 182, 184, 192, 198, 199, 200, 204, 206, 208, 228, 230, 240, 241, 242, 248, 249, 250, 251, 252, 255];

/** Mutates a copy of a tree block; returns a description. */
function mutateBlock(p: Picker, img: FuzzImage, ref: TreeBlockRef, b: Buffer): string {
  const n = ref.nritems;
  const leaf = ref.level === 0;
  const slot = n > 0 ? p.int(n) : 0;
  const kinds = leaf
    ? ['random', 'random', 'nritems', 'level', 'generation', 'bytenr', 'owner', 'key', 'key', 'item-offset', 'item-size', 'item-size', 'item-data', 'item-data', 'item-field', 'item-field', 'item-field', 'swap-items']
    : ['random', 'nritems', 'level', 'generation', 'bytenr', 'owner', 'key', 'blockptr', 'blockptr', 'blockptr', 'ptr-generation'];
  const kind = p.pick(kinds);
  switch (kind) {
    case 'random': {
      const k = 1 + p.int(16);
      for (let i = 0; i < k; i++) b[32 + p.int(b.length - 32)] = p.int(256);
      return `${k} random bytes`;
    }
    case 'nritems': {
      const v = u32Values(p, n, img);
      b.writeUInt32LE(v, 96);
      return `nritems ${n} -> ${v}`;
    }
    case 'level': {
      const v = p.pick([0, 1, 2, ref.level + 1, ref.level - 1, 7, 8, 9, 255]) & 0xff;
      b[100] = v;
      return `level ${ref.level} -> ${v}`;
    }
    case 'generation': {
      const cur = b.readBigUInt64LE(80);
      const v = u64Values(p, cur, img);
      setU64(b, 80, v);
      return `generation ${cur} -> ${BigInt.asUintN(64, v)}`;
    }
    case 'bytenr': {
      const v = u64Values(p, ref.bytenr, img);
      setU64(b, 48, v);
      return `header bytenr -> ${BigInt.asUintN(64, v)}`;
    }
    case 'owner': {
      const v = p.pick([0n, 1n, 2n, 3n, 4n, 5n, 7n, 9n, 256n, 257n, U64_MAX, U64_MAX - 8n, p.u64()]);
      setU64(b, 88, v);
      return `owner -> ${v}`;
    }
    case 'key': {
      if (n === 0) return 'nothing (empty block)';
      const off = 101 + slot * (leaf ? 25 : 33);
      const field = p.pick(['objectid', 'type', 'offset']);
      if (field === 'type') {
        const v = p.pick(KEY_TYPES);
        b[off + 8] = v;
        return `slot ${slot} key type -> ${v}`;
      }
      const at = field === 'objectid' ? off : off + 9;
      const v = u64Values(p, b.readBigUInt64LE(at), img, [256n, 257n, 5n, 6n]);
      setU64(b, at, v);
      return `slot ${slot} key ${field} -> ${BigInt.asUintN(64, v)}`;
    }
    case 'item-offset': {
      if (n === 0) return 'nothing (empty leaf)';
      const at = 101 + slot * 25 + 17;
      const cur = b.readUInt32LE(at);
      const v = u32Values(p, cur, img);
      b.writeUInt32LE(v, at);
      return `slot ${slot} item offset ${cur} -> ${v}`;
    }
    case 'item-size': {
      if (n === 0) return 'nothing (empty leaf)';
      const at = 101 + slot * 25 + 21;
      const cur = b.readUInt32LE(at);
      const v = u32Values(p, cur, img);
      b.writeUInt32LE(v, at);
      return `slot ${slot} item size ${cur} -> ${v}`;
    }
    case 'swap-items': {
      if (n < 2) return 'nothing (<2 items)';
      const a = 101 + slot * 25;
      const c = 101 + ((slot + 1) % n) * 25;
      const tmp = Buffer.from(b.subarray(a, a + 25));
      b.copy(b, a, c, c + 25);
      tmp.copy(b, c);
      return `swap item headers ${slot} and ${(slot + 1) % n}`;
    }
    case 'item-data': {
      const [off, len] = ref.itemData[slot] ?? [0, 0];
      if (len === 0) return 'nothing (no item data)';
      const k = 1 + p.int(8);
      for (let i = 0; i < k; i++) b[off + p.int(len)] = p.int(256);
      return `slot ${slot}: ${k} random bytes in item data`;
    }
    case 'item-field':
      return mutateItemField(p, img, ref, b, slot);
    case 'blockptr': {
      if (n === 0) return 'nothing';
      const at = 101 + slot * 33 + 17;
      const parent = img.parent.get(ref.bytenr);
      const target = p.pick([
        ['itself', ref.bytenr], ['its parent', parent ?? ref.bytenr], ['the tree root', img.blocks[0]!.bytenr],
        ['the chunk root', img.blocks.find((x) => x.tree === 3n)?.bytenr ?? 0n],
        ['a sibling', b.readBigUInt64LE(101 + ((slot + 1) % n) * 33 + 17)], ['another block', p.pick(img.blocks).bytenr],
        ['0', 0n], ['unaligned', ref.bytenr + 1n], ['past the device', BigInt(img.size) + 65536n], ['u64 max', U64_MAX - 4095n],
      ] as [string, bigint][]);
      setU64(b, at, target[1]);
      return `slot ${slot} blockptr -> ${target[0]} (${target[1]})`;
    }
    case 'ptr-generation': {
      if (n === 0) return 'nothing';
      const at = 101 + slot * 33 + 25;
      const v = u64Values(p, b.readBigUInt64LE(at), img);
      setU64(b, at, v);
      return `slot ${slot} ptr generation -> ${BigInt.asUintN(64, v)}`;
    }
  }
  return kind;
}

/** Targeted fields of the item in `slot`, by key type. */
function mutateItemField(p: Picker, img: FuzzImage, ref: TreeBlockRef, b: Buffer, slot: number): string {
  const [off, len] = ref.itemData[slot] ?? [0, 0];
  if (len === 0) return 'nothing (no item data)';
  const type = b[101 + slot * 25 + 8]!;
  const fields: [string, number, 8 | 4 | 2 | 1][] = [];
  switch (type) {
    case 228: // CHUNK_ITEM
      fields.push(['chunk length', 0, 8], ['chunk stripe_len', 16, 8], ['chunk type', 24, 8], ['chunk sector_size', 40, 4],
        ['chunk num_stripes', 44, 2], ['chunk num_stripes', 44, 2], ['chunk sub_stripes', 46, 2],
        ['stripe 0 devid', 48, 8], ['stripe 0 offset', 56, 8], ['stripe 0 offset', 56, 8], ['stripe 1 offset', 88, 8]);
      break;
    case 132: // ROOT_ITEM
      fields.push(['root generation', 160, 8], ['root dirid', 168, 8], ['root bytenr', 176, 8], ['root bytenr', 176, 8],
        ['root refs', 216, 4], ['root drop_level', 237, 1], ['root level', 238, 1], ['root level', 238, 1], ['root flags', 208, 8]);
      break;
    case 1: // INODE_ITEM
      fields.push(['inode size', 16, 8], ['inode size', 16, 8], ['inode nbytes', 24, 8], ['inode nlink', 40, 4],
        ['inode mode', 52, 4], ['inode mode', 52, 4], ['inode rdev', 56, 8], ['inode flags', 64, 8]);
      break;
    case 108: // EXTENT_DATA
      fields.push(['extent ram_bytes', 8, 8], ['extent compression', 16, 1], ['extent encryption', 17, 1], ['extent type', 20, 1],
        ['extent disk_bytenr', 21, 8], ['extent disk_num_bytes', 29, 8], ['extent offset', 37, 8], ['extent num_bytes', 45, 8], ['extent num_bytes', 45, 8]);
      break;
    case 84: case 96: case 24: // DIR_ITEM, DIR_INDEX, XATTR_ITEM
      fields.push(['dir location objectid', 0, 8], ['dir location type', 8, 1], ['dir data_len', 25, 2], ['dir name_len', 27, 2],
        ['dir name_len', 27, 2], ['dir type', 29, 1]);
      break;
    case 12: // INODE_REF
      fields.push(['ref index', 0, 8], ['ref name_len', 8, 2], ['ref name_len', 8, 2]);
      break;
    case 13: // INODE_EXTREF
      fields.push(['extref parent', 0, 8], ['extref name_len', 16, 2]);
      break;
    case 144: case 156: // ROOT_REF, ROOT_BACKREF
      fields.push(['rootref dirid', 0, 8], ['rootref sequence', 8, 8], ['rootref name_len', 16, 2], ['rootref name_len', 16, 2]);
      break;
    case 204: // DEV_ITEM
      fields.push(['dev devid', 0, 8], ['dev total_bytes', 8, 8], ['dev sector_size', 40, 4]);
      break;
    case 168: case 169: // EXTENT_ITEM, METADATA_ITEM
      fields.push(['extent refs', 0, 8], ['extent flags', 16, 8], ['inline ref type', 24, 1]);
      break;
    case 192: // BLOCK_GROUP_ITEM
      fields.push(['bg used', 0, 8], ['bg flags', 16, 8]);
      break;
    default:
      break;
  }
  // any 1/2/4/8-byte field at a random aligned spot otherwise (or sometimes)
  if (fields.length === 0 || p.int(4) === 0) {
    const w = p.pick([1, 2, 4, 8] as const);
    if (len >= w) fields.push([`type-${type} bytes`, p.int(len - w + 1), w]);
  }
  const [name, at, w] = p.pick(fields);
  if (at + w > len) return `nothing (${name} past item end)`;
  const o = off + at;
  switch (w) {
    case 8: { const v = u64Values(p, b.readBigUInt64LE(o), img); setU64(b, o, v); return `slot ${slot} ${name} -> ${BigInt.asUintN(64, v)}`; }
    case 4: { const v = u32Values(p, b.readUInt32LE(o), img); b.writeUInt32LE(v, o); return `slot ${slot} ${name} -> ${v}`; }
    case 2: { const v = u16Values(p, b.readUInt16LE(o)); b.writeUInt16LE(v, o); return `slot ${slot} ${name} -> ${v}`; }
    default: { const v = p.pick([0, 1, 2, 3, 4, 5, 7, 8, 9, 255, p.int(256)]); b[o] = v; return `slot ${slot} ${name} -> ${v}`; }
  }
}

/** Mutates a copy of the primary superblock and fixes its checksum. */
function mutateSuper(p: Picker, img: FuzzImage, sb: Buffer): string {
  const sysSize = sb.readUInt32LE(160);
  const chunk0 = 811 + 17; // first chunk item of the sys_chunk_array
  const fields: [string, number, 8 | 4 | 2 | 1][] = [
    ['sectorsize', 144, 4], ['sectorsize', 144, 4], ['nodesize', 148, 4], ['nodesize', 148, 4], ['leafsize', 152, 4],
    ['stripesize', 156, 4], ['sys_chunk_array_size', 160, 4], ['sys_chunk_array_size', 160, 4],
    ['generation', 72, 8], ['root', 80, 8], ['root', 80, 8], ['chunk_root', 88, 8], ['chunk_root', 88, 8], ['log_root', 96, 8],
    ['total_bytes', 112, 8], ['num_devices', 136, 8], ['chunk_root_generation', 164, 8], ['incompat_flags', 188, 8],
    ['compat_ro_flags', 180, 8], ['csum_type', 196, 2], ['root_level', 198, 1], ['chunk_root_level', 199, 1],
    ['dev_item devid', 201, 8], ['dev_item total_bytes', 209, 8],
    ['sys chunk key type', 811 + 8, 1], ['sys chunk key offset', 811 + 9, 8],
    ['sys chunk length', chunk0, 8], ['sys chunk stripe_len', chunk0 + 16, 8], ['sys chunk type', chunk0 + 24, 8],
    ['sys chunk num_stripes', chunk0 + 44, 2], ['sys chunk num_stripes', chunk0 + 44, 2], ['sys chunk sub_stripes', chunk0 + 46, 2],
    ['sys chunk stripe 0 offset', chunk0 + 56, 8], ['sys chunk stripe 0 offset', chunk0 + 56, 8], ['sys chunk stripe 0 devid', chunk0 + 48, 8],
    ['sys_chunk_array random', -1, 1], ['random', -2, 1],
  ];
  const [name, at0, w] = p.pick(fields);
  let what: string;
  if (at0 === -1) {
    const k = 1 + p.int(8);
    for (let i = 0; i < k; i++) sb[811 + p.int(Math.max(1, sysSize))] = p.int(256);
    what = `${k} random bytes in sys_chunk_array`;
  } else if (at0 === -2) {
    const k = 1 + p.int(8);
    for (let i = 0; i < k; i++) {
      const o = 72 + p.int(SUPER_INFO_SIZE - 72);
      if (o !== 196 && o !== 197) sb[o] = p.int(256);
    }
    what = `${k} random bytes`;
  } else if (w === 8) {
    const v = u64Values(p, sb.readBigUInt64LE(at0), img);
    setU64(sb, at0, v);
    what = `${name} -> ${BigInt.asUintN(64, v)}`;
  } else if (w === 4) {
    const v = name.endsWith('size') && name !== 'sys_chunk_array_size'
      ? p.pick([0, 1, 511, 512, 1024, 2048, 4096, 4097, 8192, 16384, 32768, 65536, 131072, 1 << 30, 0xffffffff])
      : name === 'sys_chunk_array_size' ? p.pick([0, 1, 16, 17, 96, 97, sysSize - 1, sysSize + 1, sysSize + 32, 2048, 2049, 0xffffffff]) >>> 0
        : u32Values(p, sb.readUInt32LE(at0), img);
    sb.writeUInt32LE(v, at0);
    what = `${name} -> ${v}`;
  } else if (w === 2) {
    const v = name === 'csum_type' ? p.pick([0, 1, 2, 3, 4, 0xffff]) : u16Values(p, sb.readUInt16LE(at0));
    sb.writeUInt16LE(v, at0);
    what = `${name} -> ${v}`;
  } else {
    const v = p.pick([0, 1, 2, 7, 8, 9, 128, 255, p.int(256)]);
    sb[at0] = v;
    what = `${name} -> ${v}`;
  }
  const t = sb.readUInt16LE(196);
  checksum(t <= 3 ? t : img.csumType, sb.subarray(32)).copy(sb, 0);
  return `superblock: ${what}`;
}

export function randomMutation(p: Picker, img: FuzzImage): Mutation {
  if (p.int(5) === 0) {
    const sb = Buffer.from(img.superRaw);
    const what = mutateSuper(p, img, sb);
    return { what, patches: [[SUPER_MIRROR_OFFSETS[0]!, sb.toString('base64')]] };
  }
  // more than one block now and then
  const nblocks = p.int(6) === 0 ? 2 : 1;
  const whats: string[] = [];
  const patches: [number, string][] = [];
  for (let i = 0; i < nblocks; i++) {
    const ref = p.pick(img.blocks);
    const b = Buffer.from(img.raw.get(ref.bytenr)!);
    const what = mutateBlock(p, img, ref, b);
    checksum(img.csumType, b.subarray(32)).copy(b, 0);
    whats.push(`block ${ref.bytenr} (tree ${ref.tree}, level ${ref.level}): ${what}`);
    for (const phys of ref.physical) patches.push([phys, b.toString('base64')]);
  }
  return { what: whats.join('; '), patches };
}

export async function loadFuzzImage(name: string): Promise<FuzzImage> {
  const image = await fixturePath(name);
  const dev = await FileDevice.open(image, { readOnly: true });
  try {
    await initChecksums();
    const fs = await Filesystem.open(dev);
    const blocks = await listTreeBlocks(fs.info);
    const raw = new Map<bigint, Buffer>();
    const parent = new Map<bigint, bigint>();
    for (const ref of blocks) {
      const b = await dev.read(ref.physical[0]!, fs.info.nodesize);
      raw.set(ref.bytenr, b);
      if (ref.level > 0) {
        for (let s = 0; s < ref.nritems; s++) parent.set(b.readBigUInt64LE(101 + s * 33 + 17), ref.bytenr);
      }
    }
    return {
      name, image, size: dev.size, nodesize: fs.info.nodesize, sectorsize: fs.info.sectorsize, csumType: fs.info.csumType,
      blocks, raw, parent, superRaw: Buffer.from(fs.info.sbRaw),
    };
  } finally {
    await dev.close();
  }
}

// ---------------------------------------------------------------------------
// The tests.

const FUZZ_FIXTURES = ['filetypes-links-modes-times', 'subvols-snapshots-default-received', 'mixed'];
const SEED = testSeed();
const FUZZ_MS = Number(process.env.TSBTRFS_FUZZ_MS ?? 4000);
const FUZZ_CASES = process.env.TSBTRFS_FUZZ_CASES ? Number(process.env.TSBTRFS_FUZZ_CASES) : undefined;
/** TSBTRFS_CASE_SEED=N: run only the fuzz case with that case seed (as printed in a failure). */
const CASE_SEED = process.env.TSBTRFS_CASE_SEED ? Number(process.env.TSBTRFS_CASE_SEED) >>> 0 : undefined;
const CORPUS = path.resolve(repoRoot(), '..', 'shared', 'corpus');

function report(failures: string[]): string {
  return `seed ${SEED} (TSBTRFS_SEED=${SEED} to reproduce)\n${failures.join('\n\n')}`;
}

/** Error class and where it was thrown (first frame outside this file), to report each bug once. */
function signature(why: string): string {
  const lines = why.split('\n');
  const cls = /^(\S+: )?([A-Za-z]+)/.exec(lines[0]!)?.[2] ?? lines[0]!;
  const at = lines.find((l) => l.trim().startsWith('at ') && !l.includes('hostile.test.js')) ?? lines[0]!;
  return `${cls} ${at.trim().replace(/^at (async )?/, '')}`;
}

if (isMainThread && typeof describe === 'function') {
  describe('verify/hostile: no input crashes or hangs the reader', function () {
    this.timeout(600_000);
    const runner = new CaseRunner();
    let available: string[] = [];
    let tmp = '';

    before(async () => {
      available = await listFixtures();
      tmp = mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-hostile-'));
      console.log(`      hostile seed ${SEED} (TSBTRFS_SEED=${SEED} to reproduce)`);
    });

    after(async () => {
      await runner.close();
      if (tmp) spawnSync('rm', ['-rf', tmp]);
    });

    describe('fuzzed metadata with valid checksums', () => {
      for (const [fi, name] of FUZZ_FIXTURES.entries()) {
        it(`${name}: every mutation opens-or-rejects with BtrfsError, no hang`, async function () {
          if (!available.includes(name)) this.skip();
          const img = await loadFuzzImage(name);
          // sanity: the unmutated image passes every stage
          const clean = await runner.run({ image: img.image, patches: [] });
          expect(clean.ok, clean.ok ? '' : clean.why).to.equal(true);
          expect(clean.ok && clean.out.stages.every((s) => s.kind === 'ok'), JSON.stringify(clean.ok && clean.out.stages)).to.equal(true);

          const failures = new Map<string, string>();
          const t0 = Date.now();
          let cases = 0;
          let rejected = 0;
          for (let i = 0; CASE_SEED !== undefined ? i < 1 : FUZZ_CASES !== undefined ? i < FUZZ_CASES : Date.now() - t0 < FUZZ_MS; i++) {
            const caseSeed = CASE_SEED ?? (SEED + fi * 1_000_003 + i * 7919) >>> 0;
            const m = randomMutation(new Picker(rng(caseSeed)), img);
            const v = await runner.run({ image: img.image, patches: m.patches });
            cases++;
            if (!v.ok) {
              const sig = signature(v.why);
              if (!failures.has(sig)) failures.set(sig, `case ${i} (case seed ${caseSeed}) ${name}: ${m.what}\n  ${v.why}`);
            } else if (v.out.stages.some((s) => s.kind === 'btrfs')) {
              rejected++;
            }
          }
          console.log(`      ${name}: ${cases} cases in ${Date.now() - t0} ms, ${rejected} with some BtrfsError, ${failures.size} distinct failures`);
          expect([...failures.values()], report([...failures.values()])).to.deep.equal([]);
        });
      }
    });

    describe('targeted mutations (deterministic)', () => {
      /** One patched copy of block `ref` (every copy), checksum fixed. */
      const blockPatch = (img: FuzzImage, ref: TreeBlockRef, edit: (b: Buffer) => void): [number, string][] => {
        const b = Buffer.from(img.raw.get(ref.bytenr)!);
        edit(b);
        checksum(img.csumType, b.subarray(32)).copy(b, 0);
        return ref.physical.map((ph) => [ph, b.toString('base64')] as [number, string]);
      };
      const superPatch = (img: FuzzImage, edit: (sb: Buffer) => void): [number, string][] => {
        const sb = Buffer.from(img.superRaw);
        edit(sb);
        const t = sb.readUInt16LE(196);
        checksum(t <= 3 ? t : img.csumType, sb.subarray(32)).copy(sb, 0);
        return [[SUPER_MIRROR_OFFSETS[0]!, sb.toString('base64')]];
      };

      // nodesize-4k-large-dir has a 3-level fs tree (a pointer to the parent, two levels up); its manifest is big, so only its nodes
      for (const [name, nodesOnly] of [['filetypes-links-modes-times', false], ['mixed', false], ['nodesize-4k-large-dir', true]] as const) {
        it(`${name}: loops, impossible counts and sizes, chunks past the device: BtrfsError or success, no hang`, async function () {
          if (!available.includes(name)) this.skip();
          const img = await loadFuzzImage(name);
          const cases: [string, [number, string][]][] = [];
          const superCase = (what: string, patches: [number, string][]) => { if (!nodesOnly) cases.push([what, patches]); };
          const sysSize = img.superRaw.readUInt32LE(160);
          const chunk0 = 811 + 17;
          for (const v of [0, 1, 512, 4097, 1 << 30, 0xffffffff]) {
            superCase(`superblock nodesize ${v}`, superPatch(img, (sb) => sb.writeUInt32LE(v >>> 0, 148)));
            superCase(`superblock sectorsize ${v}`, superPatch(img, (sb) => sb.writeUInt32LE(v >>> 0, 144)));
          }
          for (const v of [0, 1, 17, sysSize - 1, sysSize + 1, 2048, 2049, 0xffffffff]) {
            superCase(`sys_chunk_array_size ${v}`, superPatch(img, (sb) => sb.writeUInt32LE(v >>> 0, 160)));
          }
          for (const v of [0, 3, 0xffff]) superCase(`sys chunk num_stripes ${v}`, superPatch(img, (sb) => sb.writeUInt16LE(v, chunk0 + 44)));
          for (const v of [BigInt(img.size), BigInt(img.size) - 4096n, 1n << 62n, U64_MAX - 4095n]) {
            superCase(`sys chunk stripe offset ${v}`, superPatch(img, (sb) => sb.writeBigUInt64LE(v, chunk0 + 56)));
            superCase(`sys chunk length ${v}`, superPatch(img, (sb) => sb.writeBigUInt64LE(v, chunk0)));
          }
          for (const v of [1, 8, 255]) {
            superCase(`root_level ${v}`, superPatch(img, (sb) => { sb[198] = v; }));
            superCase(`chunk_root_level ${v}`, superPatch(img, (sb) => { sb[199] = v; }));
          }
          for (const v of [4, 0xffff]) superCase(`csum_type ${v}`, superPatch(img, (sb) => sb.writeUInt16LE(v, 196)));
          superCase('log_root set to the root tree', superPatch(img, (sb) => sb.writeBigUInt64LE(img.blocks[0]!.bytenr, 96)));
          superCase('root = chunk root', superPatch(img, (sb) => sb.writeBigUInt64LE(sb.readBigUInt64LE(88), 80)));

          // every node, the root- and chunk-tree leaves, and a few other leaves
          const others = img.blocks.filter((b) => b.level === 0 && b.tree !== 1n && b.tree !== 3n);
          const chosen = nodesOnly
            ? img.blocks.filter((b) => b.level > 0).sort((a, b) => b.level - a.level).slice(0, 3)
            : img.blocks.filter((b) => b.level > 0 || b.tree === 1n || b.tree === 3n)
              .concat(others.filter((_, i) => i % Math.max(1, Math.floor(others.length / 6)) === 0).slice(0, 6));
          for (const ref of chosen) {
            const leaf = ref.level === 0;
            for (const v of [0, ref.nritems + 1, 0xffff, 0xffffffff]) {
              cases.push([`block ${ref.bytenr} nritems ${v}`, blockPatch(img, ref, (b) => b.writeUInt32LE(v >>> 0, 96))]);
            }
            if (leaf && ref.nritems > 0) {
              const last = ref.nritems - 1;
              cases.push([`block ${ref.bytenr} last item size 0xffffffff`, blockPatch(img, ref, (b) => b.writeUInt32LE(0xffffffff, 101 + last * 25 + 21))]);
              cases.push([`block ${ref.bytenr} first item offset 0xffffffff`, blockPatch(img, ref, (b) => b.writeUInt32LE(0xffffffff, 101 + 17))]);
              cases.push([`block ${ref.bytenr} first item size = nodesize`, blockPatch(img, ref, (b) => b.writeUInt32LE(img.nodesize, 101 + 21))]);
            }
            if (!leaf && ref.nritems > 0) {
              const parent = img.parent.get(ref.bytenr) ?? ref.bytenr;
              for (const [what, to] of [['itself', ref.bytenr], ['its parent', parent], ['the root tree root', img.blocks[0]!.bytenr]] as [string, bigint][]) {
                for (const slot of [0, ref.nritems - 1]) {
                  cases.push([`node ${ref.bytenr} slot ${slot} blockptr -> ${what}`, blockPatch(img, ref, (b) => b.writeBigUInt64LE(to, 101 + slot * 33 + 17))]);
                }
              }
              // every pointer to the first child: the same subtree many times over
              cases.push([`node ${ref.bytenr} every blockptr -> slot 0's`, blockPatch(img, ref, (b) => {
                for (let s = 1; s < ref.nritems; s++) b.copy(b, 101 + s * 33 + 17, 101 + 17, 101 + 33);
              })]);
            }
            // chunk items: zero/huge stripes, stripes past the device
            const raw = img.raw.get(ref.bytenr)!;
            for (let slot = 0; leaf && slot < ref.nritems; slot++) {
              if (raw[101 + slot * 25 + 8] !== KEY.CHUNK_ITEM) continue;
              const [off] = ref.itemData[slot]!;
              for (const v of [0, 3, 0xffff]) cases.push([`chunk item ${slot} num_stripes ${v}`, blockPatch(img, ref, (b) => b.writeUInt16LE(v, off + 44))]);
              for (const v of [BigInt(img.size), 1n << 62n, U64_MAX - 4095n]) {
                cases.push([`chunk item ${slot} stripe 0 offset ${v}`, blockPatch(img, ref, (b) => b.writeBigUInt64LE(v, off + 56))]);
                cases.push([`chunk item ${slot} length ${v}`, blockPatch(img, ref, (b) => b.writeBigUInt64LE(v, off))]);
              }
            }
          }
          const failures: string[] = [];
          for (const [what, patches] of cases) {
            const v = await runner.run({ image: img.image, patches });
            if (!v.ok) failures.push(`${name}: ${what}: ${v.why}`);
          }
          console.log(`      ${name}: ${cases.length} targeted cases`);
          expect(failures, report(failures)).to.deep.equal([]);
        });
      }
    });

    describe('truncated images', () => {
      const NAME = 'filetypes-links-modes-times';
      it('cut short anywhere (before, inside, after the superblock; before any tree block): BtrfsError, no hang', async function () {
        if (!available.includes(NAME)) this.skip();
        const img = await loadFuzzImage(NAME);
        const cuts = new Set<number>([0, 1, 4096, 65536, 65536 + 100, 65536 + 4095, 65536 + 4096, 1 << 20]);
        for (const b of img.blocks) {
          const first = Math.min(...b.physical);
          cuts.add(first);
          cuts.add(first + 1);
          cuts.add(Math.max(...b.physical) + img.nodesize - 1);
        }
        const failures: string[] = [];
        for (const size of [...cuts].sort((a, b) => a - b)) {
          if (size > img.size) continue;
          const v = await runner.run({ image: img.image, size, patches: [] });
          if (!v.ok) failures.push(`cut to ${size} bytes: ${v.why}`);
          else if (size < SUPER_MIRROR_OFFSETS[0]! + SUPER_INFO_SIZE) {
            const open = v.out.stages[0]!;
            if (open.kind !== 'btrfs') failures.push(`cut to ${size} bytes: open did not reject (${JSON.stringify(open)})`);
          }
        }
        expect(failures, report(failures)).to.deep.equal([]);
      });
    });

    describe('not btrfs', () => {
      const expectRejected = async (image: string, what: string, size?: number) => {
        const v = await runner.run({ image, patches: [], ...(size !== undefined ? { size } : {}) });
        expect(v.ok, v.ok ? '' : `${what}: ${v.why}`).to.equal(true);
        const open = v.ok ? v.out.stages[0]! : undefined;
        expect(open?.stage).to.equal('open');
        expect(open?.kind, `${what}: ${JSON.stringify(open)}`).to.equal('btrfs');
        return open!;
      };

      it('an empty file, a 1-byte file and an all-zero 128 MiB file: BtrfsError', async () => {
        const empty = path.join(tmp, 'empty.img');
        writeFileSync(empty, Buffer.alloc(0));
        await expectRejected(empty, 'empty file');
        const one = path.join(tmp, 'one.img');
        writeFileSync(one, Buffer.from([0]));
        await expectRejected(one, '1-byte file');
        const zero = path.join(tmp, 'zero.img');
        writeFileSync(zero, Buffer.alloc(0));
        truncateSync(zero, 128 * 1024 * 1024);
        const open = await expectRejected(zero, 'all-zero file');
        expect(open.code).to.equal('EINVAL');
      });

      it('an ext2 image (wrong magic): BtrfsError', async function () {
        const dir = path.join(CORPUS, 'convert-tests', '004-ext2-backup-superblock-ranges');
        if (!existsSync(dir)) {
          console.log(`      (skipped: no corpus at ${dir})`);
          this.skip();
        }
        const xz = readdirSync(dir).filter((f) => f.endsWith('.raw.xz'));
        expect(xz.length).to.be.greaterThan(0);
        for (const f of xz) {
          const out = path.join(tmp, f.replace(/\.xz$/, ''));
          unxz(path.join(dir, f), out);
          const open = await expectRejected(out, f);
          expect(open.code).to.equal('EINVAL');
          expect(open.message).to.match(/not a btrfs filesystem/);
        }
      });
    });

    describe('btrfs-progs fuzz-test images', () => {
      it('each opens-or-rejects with BtrfsError and full walks do not crash or hang', async function () {
        const dir = path.join(CORPUS, 'fuzz-tests');
        if (!existsSync(dir)) {
          console.log(`      (skipped: no corpus at ${dir})`);
          this.skip();
        }
        const failures: string[] = [];
        const names = readdirSync(dir).filter((f) => f.endsWith('.raw.xz')).sort();
        expect(names.length).to.be.greaterThan(0);
        for (const f of names) {
          const out = path.join(tmp, f.replace(/\.xz$/, ''));
          unxz(path.join(dir, f), out);
          const v = await runner.run({ image: out, patches: [] });
          if (!v.ok) failures.push(`${f}: ${v.why}`);
          rmSync(out, { force: true });
        }
        expect(failures, report(failures)).to.deep.equal([]);
      });
    });

    describe('known crashes, pinned', () => {
      const NAME = 'filetypes-links-modes-times';
      const bases: FileDevice[] = [];
      after(async () => { for (const b of bases.splice(0)) await b.close(); });

      /** The fixture with the item `k` of the tree holding `file` changed by `mutate` (checksum fixed, every copy). */
      const withItem = async (file: string, k: (ino: bigint) => Key, mutate: (data: Buffer, fs: Filesystem) => void | Promise<void>): Promise<OverlayDevice> => {
        const base = await FileDevice.open(await fixturePath(NAME), { readOnly: true });
        bases.push(base);
        const fs = await Filesystem.open(new OverlayDevice(base));
        const r = await fs.resolve(file);
        const it = await lookupItem(fs.info.reader, r.root, k(r.ino));
        expect(it, `item ${JSON.stringify(k(r.ino), (_, v) => (typeof v === 'bigint' ? v.toString() : v))} of ${file}`).to.not.equal(undefined);
        const b = Buffer.from(it!.block.buf);
        const at = HEADER_SIZE + it!.block.items[it!.slot]!.offset;
        await mutate(b.subarray(at, at + it!.data.length), fs);
        checksum(fs.info.csumType, b.subarray(32)).copy(b, 0);
        const dev = new OverlayDevice(base);
        for (const c of fs.info.chunks.map(it!.block.bytenr, fs.info.nodesize)) dev.patch(Number(c.physical), b);
        return dev;
      };
      const withInode = (file: string, mutate: (inode: Buffer) => void) => withItem(file, (ino) => key(ino, KEY.INODE_ITEM, 0n), mutate);
      const rejection = async (p: Promise<unknown>): Promise<unknown> => {
        try {
          await p;
        } catch (e) {
          return e;
        }
        return undefined;
      };

      it('an inode mode with no valid S_IFMT type or stray high bits: lstat rejects with BtrfsError EUCLEAN', async function () {
        if (!available.includes(NAME)) this.skip();
        const wrong: string[] = [];
        for (const mode of [0, 0o170644, 0o030644, 0o200644, 0xffffffff]) {
          const dev = await withInode('/regular', (ino) => ino.writeUInt32LE(mode >>> 0, 52));
          const fs = await Filesystem.open(dev);
          let st: { mode: number } | undefined;
          const err = await rejection(fs.lstat('/regular').then((x) => { st = x; }));
          if (!(err instanceof BtrfsError) || err.code !== 'EUCLEAN') {
            wrong.push(`mode 0${mode.toString(8)}: ${err ? String(err) : `lstat gave mode 0${st?.mode.toString(8)}`}`);
          }
        }
        expect(wrong).to.deep.equal([]);
      });

      it('a directory entry pointing back at an ancestor (a cycle): extract rejects with BtrfsError, no endless nesting', async function () {
        if (!available.includes(NAME)) this.skip();
        // the DIR_INDEX of /dir/a/b/c/d for "e" (what readdir, and so extract, walks) points back at /dir/a
        const probe = await Filesystem.open(await FileDevice.open(await fixturePath(NAME), { readOnly: true }));
        const d0 = await probe.resolve('/dir/a/b/c/d');
        let index: bigint | undefined;
        for await (const e of listDir(probe.info, d0.root, d0.ino)) if (e.name.toString() === 'e') index = e.index;
        await probe.close();
        expect(index, 'DIR_INDEX of e').to.not.equal(undefined);
        const dev = await withItem('/dir/a/b/c/d', (ino) => key(ino, KEY.DIR_INDEX, index!), async (d, fs0) => {
          d.writeBigUInt64LE((await fs0.resolve('/dir/a')).ino, 0);
        });
        const fs = await Filesystem.open(dev);
        const dest = path.join(tmp, 'cycle-out');
        let err: unknown;
        const timer = new Promise<never>((_, rej) => setTimeout(() => rej(new Error('HANG: extract did not finish in 20 s')), 20_000).unref());
        try {
          await Promise.race([extract(fs, '/dir/a', dest), timer]);
        } catch (e) {
          err = e;
        }
        let depth = 0;
        for (let p = path.join(dest, 'b'); existsSync(p) && depth < 10_000; p = path.join(p, 'c', 'd', 'e', 'b')) depth++;
        spawnSync('rm', ['-rf', dest]);
        expect(err, `${(err as Error | undefined)?.stack ?? 'extract succeeded'} (b/c/d/e nested ${depth} times)`).to.be.instanceOf(BtrfsError);
      });

      it('a DIR_ITEM whose location key type is neither INODE_ITEM nor ROOT_ITEM: lookup rejects with BtrfsError EUCLEAN', async function () {
        if (!available.includes(NAME)) this.skip();
        const wrong: string[] = [];
        for (const t of [0, 4, 161, 255]) {
          // DIR_ITEM (256 DIR_ITEM hash("dir")) of the top directory: location (257 INODE_ITEM 0) -> (257 t 0)
          const dev = await withItem('/', (ino) => key(ino, KEY.DIR_ITEM, nameHash(Buffer.from('dir'))), (d) => { d[8] = t; });
          const fs = await Filesystem.open(dev);
          const err = await rejection(fs.lstat('/dir'));
          if (!(err instanceof BtrfsError) || err.code !== 'EUCLEAN') wrong.push(`location type ${t}: ${err ? String(err) : 'lstat succeeded'}`);
        }
        expect(wrong).to.deep.equal([]);
      });

      it('a symlink whose i_size is 2^34: readlink rejects with BtrfsError, allocating nothing huge', async function () {
        if (!available.includes(NAME)) this.skip();
        const dev = await withInode('/symlink', (ino) => ino.writeBigUInt64LE(1n << 34n, 16));
        const fs = await Filesystem.open(dev);
        const err = await rejection(fs.readlink('/symlink'));
        expect(err, (err as Error | undefined)?.stack ?? 'readlink succeeded').to.be.instanceOf(BtrfsError);
      });

      it('a regular file whose i_size is 2^62: readFile rejects with BtrfsError (not a RangeError)', async function () {
        if (!available.includes(NAME)) this.skip();
        const dev = await withInode('/regular', (ino) => ino.writeBigUInt64LE(1n << 62n, 16));
        const fs = await Filesystem.open(dev);
        const err = await rejection(fs.readFile('/regular'));
        expect(err, (err as Error | undefined)?.stack ?? 'readFile succeeded').to.be.instanceOf(BtrfsError);
      });

      it('a regular file whose i_size is 2^64 - 1 (not a safe integer, negative as loff_t): stat rejects with BtrfsError EUCLEAN', async function () {
        if (!available.includes(NAME)) this.skip();
        const dev = await withInode('/regular', (ino) => ino.writeBigUInt64LE(U64_MAX, 16));
        const fs = await Filesystem.open(dev);
        let size: unknown;
        const err = await rejection(fs.stat('/regular').then((st) => { size = st.size; }));
        expect(err, `stat gave size ${String(size)}`).to.be.instanceOf(BtrfsError);
      });

      it('an inode whose nbytes has the top bit set (the kernel wrote one into a log tree): read as the kernel reads it, not refused', async function () {
        if (!available.includes(NAME)) this.skip();
        // the value seen: a kernel pointer left in a log tree's inode item after an fsync
        const nbytes = 0xffffea000cdbd5c0n;
        const want = await Filesystem.open(await FileDevice.open(await fixturePath(NAME), { readOnly: true }));
        const content = await want.readFile('/regular');
        await want.close();
        const fs = await Filesystem.open(await withInode('/regular', (ino) => ino.writeBigUInt64LE(nbytes, 24)));
        const st = await fs.stat('/regular');
        // st_blocks: nbytes rounded up to the 4096-byte sector, in 512-byte units, as the kernel's getattr
        expect(st.blocks).to.equal(Number(((nbytes + 4095n) & ~4095n) >> 9n));
        expect(Buffer.from(await fs.readFile('/regular')).equals(Buffer.from(content))).to.equal(true);
      });

      it('readFile of a file whose i_size is ~2^64 (bko-200403) rejects with BtrfsError', async function () {
        const f = path.join(CORPUS, 'fuzz-tests', 'bko-200403.raw.xz');
        if (!existsSync(f)) this.skip();
        const out = path.join(tmp, 'bko-200403.raw');
        unxz(f, out);
        const fs = await Filesystem.open(out);
        try {
          let err: unknown;
          try {
            await fs.readFile('/foo/bar/baz');
          } catch (e) {
            err = e;
          }
          expect(err, (err as Error)?.stack).to.be.instanceOf(BtrfsError);
        } finally {
          await fs.close();
        }
      });
    });
  });
}

/** xz -dc SRC > DEST, kept sparse. */
function unxz(src: string, dest: string): void {
  const r = spawnSync('sh', ['-c', 'xz -dc "$1" | cp --sparse=always /dev/stdin "$2"', 'sh', src, dest], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`xz -dc ${src} failed: ${r.stderr?.toString()}`);
}
