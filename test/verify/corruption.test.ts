/**
 * Corrupting any metadata block of a fixture (one byte flipped) gives a typed
 * error naming the block, or, with DUP, a correct read from the other copy;
 * never an uncaught exception.
 *
 * For each fixture every tree block of every tree (root tree, chunk tree,
 * each ROOT_ITEM's tree) is found with the library's own walk, its copies
 * located with the chunk map, and one byte flipped through an OverlayDevice
 * (the fixture file is never written):
 * - DUP metadata, copy 0 only: open + libraryManifest + a walk of all trees
 *   + dump-tree must succeed and equal the uncorrupted results, and the
 *   reader must report a mirror retry;
 * - every copy (DUP both copies, or a SINGLE-metadata fixture): the same
 *   operations must reject with a BtrfsError EIO/EUCLEAN whose `block` is the
 *   corrupted block (dump-tree, which reports bad blocks and goes on, must
 *   name the block in its output or reject likewise).
 *
 * Big fixtures are sampled: TSBTRFS_CORRUPT_BLOCKS blocks per fixture (default
 * 24; 0 = all). The byte offsets and the sample are seeded: the seed is
 * printed, TSBTRFS_SEED=N reproduces a run.
 */
import { expect } from 'chai';
import { FileDevice } from '../../src/device/file-device.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { dumpTree } from '../../src/inspect/dump-tree.js';
import { SUPER_INFO_SIZE, SUPER_MIRROR_OFFSETS } from '../../src/format/constants.js';
import { BtrfsError } from '../../src/util/errors.js';
import { fixturePath, listFixtures } from '../helpers/fixtures.js';
import { libraryManifest } from '../helpers/library-manifest.js';
import type { Manifest } from '../helpers/manifest.js';
import {
  OverlayDevice, listTreeBlocks, rng, testSeed, walkAllTrees, type TreeBlockRef,
} from '../helpers/overlay-device.js';

const DUP_FIXTURES = [
  'filetypes-links-modes-times', 'subvols-snapshots-default-received', 'half-deleted-subvol',
  'nodesize-4k-large-dir', 'nodesize-64k', 'csum-xxhash', 'csum-blake2', 'compression',
];
const SINGLE_FIXTURES = ['metadata-single', 'mixed'];
const CASE_TIMEOUT_MS = 30_000;

const SEED = testSeed();
const MAX_BLOCKS = (() => {
  const v = process.env.TSBTRFS_CORRUPT_BLOCKS;
  const n = v === undefined || v === '' ? 24 : Number(v);
  return Number.isSafeInteger(n) && n > 0 ? n : Infinity;
})();

interface Baseline {
  base: FileDevice;
  manifest: Manifest;
  dump: string;
  blocks: TreeBlockRef[];
  nodesize: number;
  csumSize: number;
  copies: number;
}

interface Outcome {
  ok: boolean;
  manifest?: Manifest;
  dump?: string;
  mirrorRetries?: number;
  error?: unknown;
  /** which stage failed */
  stage?: string;
}

const baselines = new Map<string, Promise<Baseline>>();
const openBases: FileDevice[] = [];

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`HANG: ${what} did not finish in ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function dumpAll(fs: Filesystem): Promise<string> {
  const parts: string[] = [];
  await dumpTree(fs.info, (s) => { parts.push(s); });
  return parts.join('');
}

/** open, manifest, walk of every tree, dump-tree; the first failure stops it. */
async function runAll(dev: OverlayDevice): Promise<Outcome> {
  let stage = 'open';
  let fs: Filesystem | undefined;
  try {
    fs = await Filesystem.open(dev);
    stage = 'libraryManifest';
    const manifest = await libraryManifest(fs, '/');
    stage = 'walkAllTrees';
    await walkAllTrees(fs.info);
    stage = 'dumpTree';
    const dump = await dumpAll(fs);
    return { ok: true, manifest, dump, mirrorRetries: fs.info.reader.stats.mirrorRetries };
  } catch (error) {
    return { ok: false, error, stage, mirrorRetries: fs?.info.reader.stats.mirrorRetries };
  }
}

function baseline(name: string): Promise<Baseline> {
  let p = baselines.get(name);
  if (!p) {
    p = (async () => {
      const base = await FileDevice.open(await fixturePath(name), { readOnly: true });
      openBases.push(base);
      const fs = await Filesystem.open(new OverlayDevice(base));
      const manifest = await libraryManifest(fs, '/');
      const dump = await dumpAll(fs);
      const blocks = await listTreeBlocks(fs.info);
      const copies = Math.min(...blocks.map((b) => b.physical.length));
      return { base, manifest, dump, blocks, nodesize: fs.info.nodesize, csumSize: fs.info.csumSize, copies };
    })();
    baselines.set(name, p);
  }
  return p;
}

type Region = 'csum' | 'header' | 'table' | 'data' | 'any';

/** A seeded offset inside the block whose flip the checksum must catch. */
function pickOffset(b: TreeBlockRef, bl: Baseline, r: () => number, region: Region): number {
  const int = (lo: number, len: number) => lo + Math.floor(r() * len);
  switch (region) {
    case 'csum':
      return int(0, bl.csumSize);
    case 'header':
      return int(32, 101 - 32);
    case 'table':
      if (b.table[1] > 0) return int(b.table[0], b.table[1]);
      break;
    case 'data': {
      const withData = b.itemData.filter(([, len]) => len > 0);
      if (withData.length) {
        const [off, len] = withData[Math.floor(r() * withData.length)]!;
        return int(off, len);
      }
      break;
    }
    case 'any':
      break;
  }
  // anywhere covered by the checksum or in the checksum itself (not the unused csum tail)
  const span = bl.csumSize + (bl.nodesize - 32);
  const x = Math.floor(r() * span);
  return x < bl.csumSize ? x : 32 + (x - bl.csumSize);
}

const REGIONS: Region[] = ['csum', 'header', 'table', 'data', 'any'];

function describeErr(e: unknown): string {
  if (e instanceof BtrfsError) return `BtrfsError ${e.code} block=${e.block}: ${e.message}`;
  if (e instanceof Error) return `${e.constructor.name}: ${e.stack ?? e.message}`;
  return String(e);
}

/** The sample of blocks tried in fixture `name`: all, or MAX_BLOCKS seeded, always with the two tree roots. */
function sample(name: string, bl: Baseline): TreeBlockRef[] {
  if (bl.blocks.length <= MAX_BLOCKS) return bl.blocks;
  const r = rng(SEED ^ hashName(name));
  const rest = bl.blocks.slice(2);
  for (let i = rest.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [rest[i], rest[j]] = [rest[j]!, rest[i]!];
  }
  return [...bl.blocks.slice(0, 2), ...rest.slice(0, MAX_BLOCKS - 2)];
}

function hashName(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

describe('verify/corruption: one flipped byte in a metadata block', function () {
  this.timeout(900_000);
  let available: string[] = [];

  before(async () => {
    available = await listFixtures();
    console.log(`      corruption seed ${SEED} (TSBTRFS_SEED=${SEED} to reproduce), ${MAX_BLOCKS === Infinity ? 'all' : MAX_BLOCKS} blocks per fixture`);
  });

  after(async () => {
    for (const b of openBases.splice(0)) await b.close().catch(() => undefined);
  });

  for (const name of DUP_FIXTURES) {
    describe(name, () => {
      it('has DUP metadata', async function () {
        if (!available.includes(name)) this.skip();
        const bl = await baseline(name);
        expect(bl.copies, 'every tree block has two copies').to.equal(2);
      });

      it('copy 0 corrupted: every block is read from the other copy, results unchanged', async function () {
        if (!available.includes(name)) this.skip();
        const bl = await baseline(name);
        const r = rng(SEED ^ hashName(name) ^ 0x1);
        const failures: string[] = [];
        const blocks = sample(name, bl);
        for (const [i, b] of blocks.entries()) {
          const region = REGIONS[i % REGIONS.length]!;
          const off = pickOffset(b, bl, r, region);
          const dev = new OverlayDevice(bl.base);
          await dev.flipByte(b.physical[0]! + off);
          const what = `block ${b.bytenr} (tree ${b.tree}, level ${b.level}) byte ${off} (${region}) of copy 0 @${b.physical[0]! + off}`;
          let res: Outcome;
          try {
            res = await withTimeout(runAll(dev), CASE_TIMEOUT_MS, what);
          } catch (e) {
            failures.push(`${what}: ${describeErr(e)}`);
            continue;
          }
          if (!res.ok) {
            failures.push(`${what}: ${res.stage} failed: ${describeErr(res.error)}`);
            continue;
          }
          if (!(res.mirrorRetries! > 0)) failures.push(`${what}: no mirror retry counted`);
          try {
            expect(res.manifest).to.deep.equal(bl.manifest);
          } catch {
            failures.push(`${what}: manifest differs from the uncorrupted one`);
          }
          if (res.dump !== bl.dump) failures.push(`${what}: dump-tree output differs from the uncorrupted one`);
        }
        expect(failures, `seed ${SEED}\n${failures.join('\n')}`).to.deep.equal([]);
      });

      it('both copies corrupted: a BtrfsError naming the block', async function () {
        if (!available.includes(name)) this.skip();
        const bl = await baseline(name);
        await everyCopyCorrupted(name, bl);
      });
    });
  }

  for (const name of SINGLE_FIXTURES) {
    describe(name, () => {
      it('has SINGLE metadata', async function () {
        if (!available.includes(name)) this.skip();
        const bl = await baseline(name);
        expect(bl.copies, 'every tree block has one copy').to.equal(1);
      });

      it('the only copy corrupted: a BtrfsError naming the block', async function () {
        if (!available.includes(name)) this.skip();
        const bl = await baseline(name);
        await everyCopyCorrupted(name, bl);
      });
    });
  }

  describe('superblock', () => {
    const BIG = 'filetypes-links-modes-times';
    const SMALL = 'metadata-single';

    /** Offsets of the primary superblock whose flip only the checksum can catch (not magic, csum_type, unused csum tail). */
    function superOffsets(csumSize: number, r: () => number, n: number): number[] {
      const ranges: [number, number][] = [[0, csumSize], [32, 64], [72, 196], [198, SUPER_INFO_SIZE]];
      const total = ranges.reduce((s, [a, b]) => s + b - a, 0);
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        let x = Math.floor(r() * total);
        for (const [a, b] of ranges) {
          if (x < b - a) { out.push(a + x); break; }
          x -= b - a;
        }
      }
      return out;
    }

    it('a flipped byte in the primary superblock: EIO checksum mismatch', async function () {
      if (!available.includes(BIG)) this.skip();
      const bl = await baseline(BIG);
      const r = rng(SEED ^ 0x5b);
      for (const off of superOffsets(bl.csumSize, r, 16)) {
        const dev = new OverlayDevice(bl.base);
        await dev.flipByte(SUPER_MIRROR_OFFSETS[0]! + off);
        let err: unknown;
        try {
          await Filesystem.open(dev);
        } catch (e) {
          err = e;
        }
        expect(err, `superblock byte ${off} flipped (seed ${SEED})`).to.be.instanceOf(BtrfsError);
        expect((err as BtrfsError).code, describeErr(err)).to.equal('EIO');
        expect((err as BtrfsError).message).to.match(/checksum mismatch/);
      }
    });

    it('superMirror 1 opens a device larger than 64 MiB + 4 KiB despite a bad primary', async function () {
      if (!available.includes(BIG)) this.skip();
      const bl = await baseline(BIG);
      expect(bl.base.size).to.be.greaterThanOrEqual(SUPER_MIRROR_OFFSETS[1]! + SUPER_INFO_SIZE);
      const dev = new OverlayDevice(bl.base);
      await dev.flipByte(SUPER_MIRROR_OFFSETS[0]! + 0x200);
      const fs = await Filesystem.open(dev, { superMirror: 1 });
      expect(fs.info.sb.bytenr).to.equal(BigInt(SUPER_MIRROR_OFFSETS[1]!));
      expect(await libraryManifest(fs, '/')).to.deep.equal(bl.manifest);
    });

    it('superMirror 1 on a device of exactly 64 MiB: BtrfsError, no copy there', async function () {
      if (!available.includes(SMALL)) this.skip();
      const bl = await baseline(SMALL);
      expect(bl.base.size).to.be.lessThan(SUPER_MIRROR_OFFSETS[1]! + SUPER_INFO_SIZE);
      let err: unknown;
      try {
        await Filesystem.open(new OverlayDevice(bl.base), { superMirror: 1 });
      } catch (e) {
        err = e;
      }
      expect(err, describeErr(err)).to.be.instanceOf(BtrfsError);
    });

    it('superMirror 1 with a flipped byte in that copy: EIO checksum mismatch', async function () {
      if (!available.includes(BIG)) this.skip();
      const bl = await baseline(BIG);
      const dev = new OverlayDevice(bl.base);
      await dev.flipByte(SUPER_MIRROR_OFFSETS[1]! + 0x300);
      let err: unknown;
      try {
        await Filesystem.open(dev, { superMirror: 1 });
      } catch (e) {
        err = e;
      }
      expect(err, describeErr(err)).to.be.instanceOf(BtrfsError);
      expect((err as BtrfsError).code).to.equal('EIO');
      // the primary is untouched and still opens
      await Filesystem.open(dev);
    });
  });
});

/** Flip one byte in every copy of each sampled block: open/manifest/walk must reject naming the block. */
async function everyCopyCorrupted(name: string, bl: Baseline): Promise<void> {
  const r = rng(SEED ^ hashName(name) ^ 0x2);
  const failures: string[] = [];
  for (const [i, b] of sample(name, bl).entries()) {
    const region = REGIONS[i % REGIONS.length]!;
    const off = pickOffset(b, bl, r, region);
    const dev = new OverlayDevice(bl.base);
    for (const p of b.physical) await dev.flipByte(p + off);
    const what = `block ${b.bytenr} (tree ${b.tree}, level ${b.level}) byte ${off} (${region}) of ${b.physical.length} cop${b.physical.length > 1 ? 'ies' : 'y'}`;
    let res: Outcome;
    try {
      res = await withTimeout(runAll(dev), CASE_TIMEOUT_MS, what);
    } catch (e) {
      failures.push(`${what}: ${describeErr(e)}`);
      continue;
    }
    if (res.ok) {
      // dump-tree reports bad blocks in its output and goes on; the other stages must have thrown
      failures.push(`${what}: open, manifest and walk all succeeded`);
      continue;
    }
    const e = res.error;
    if (!(e instanceof BtrfsError)) {
      failures.push(`${what}: ${res.stage} threw a non-BtrfsError: ${describeErr(e)}`);
      continue;
    }
    if (e.code !== 'EIO' && e.code !== 'EUCLEAN') failures.push(`${what}: ${res.stage}: code ${e.code}, want EIO or EUCLEAN: ${e.message}`);
    if (e.block !== b.bytenr) failures.push(`${what}: ${res.stage}: error names block ${e.block}, want ${b.bytenr}: ${e.message}`);
    // dump-tree alone (fresh open when the failure came later than open)
    if (res.stage !== 'open') {
      const fs = await Filesystem.open(dev);
      try {
        const out = await withTimeout(dumpAll(fs), CASE_TIMEOUT_MS, `dump-tree of ${what}`);
        if (!out.includes(`block=${b.bytenr}`)) failures.push(`${what}: dump-tree succeeded without naming block ${b.bytenr}`);
      } catch (e2) {
        if (!(e2 instanceof BtrfsError)) failures.push(`${what}: dump-tree threw a non-BtrfsError: ${describeErr(e2)}`);
        else if (e2.block !== b.bytenr) failures.push(`${what}: dump-tree error names block ${e2.block}, want ${b.bytenr}: ${e2.message}`);
      }
    }
  }
  expect(failures, `seed ${SEED}\n${failures.join('\n')}`).to.deep.equal([]);
}
