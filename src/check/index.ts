/**
 * `check`: a read-only fsck. Opens the image and runs the passes in the
 * order their facts are needed: roots, superblock, extent tree, a walk of
 * every tree (collecting what references what), then each cross-tree
 * comparison. A pass that cannot read what it needs reports that and the
 * passes depending on it are skipped or made lenient, so that one damaged
 * block yields its own error rather than a flood of consequences.
 */
import { availableParallelism } from 'node:os';
import { BtrfsError } from '../util/errors.js';
import type { BlockDevice } from '../device/block-device.js';
import { FileDevice } from '../device/file-device.js';
import { FsInfo } from '../tree/fs-info.js';
import { CoalescingDevice } from './coalescing-device.js';
import type { CheckContext } from './context.js';
import { Reporter, type CheckReport } from './report.js';
import { loadRoots, checkRootRefs } from './roots.js';
import { checkSuperblock } from './superblock.js';
import { loadExtentTree, compareExtents, checkBlockGroupUsage } from './extents.js';
import { walkTrees } from './trees.js';
import { checkChunks } from './chunks.js';
import { checkFreeSpaceTree } from './free-space.js';
import { checkInodes, isFsTree, judgePrealloc, type SubvolEntry } from './inodes.js';
import { inodesInWorker, type InodeResults } from './inode-worker.js';
import { loadCsums } from './csums.js';
import { checkQgroups } from './qgroups.js';

export type { CheckReport, Finding, Severity, CheckStats } from './report.js';

/** Where a check is: the phase, what it is on within it, and an estimate of the share done (0 to 1). */
export interface CheckProgress { phase: string; detail?: string; fraction: number }

/**
 * The phases in order, with their rough share of the time of a check (the
 * tree walk and the fs trees dominate), for a progress bar that moves evenly.
 */
const PHASES: [label: string, weight: number][] = [
  ['opening filesystem', 1], ['checking root items', 1], ['checking superblock', 0.5], ['checking extent tree', 10],
  ['checking tree blocks', 40], ['checking extent references', 5], ['checking block groups', 1],
  ['checking chunks and device extents', 1], ['checking free space tree', 3], ['checking csums', 2],
  ['checking fs roots', 33], ['checking root refs', 1], ['checking quota groups', 1.5],
];
const TOTAL_WEIGHT = PHASES.reduce((n, [, w]) => n + w, 0);
export { formatFinding, reportToJson } from './report.js';

export interface CheckOptions {
  /** read every checksummed data sector and verify it (slow: reads all data) */
  checkDataCsum?: boolean;
  /** called as the check advances, for progress display (often: throttle what you draw) */
  onProgress?: (p: CheckProgress) => void;
  /**
   * check a snapshot by its difference from a tree already checked (default
   * true); false checks every tree in full, with the same findings, slower
   */
  incremental?: boolean;
  /**
   * screen each fs tree by fingerprints of its names first, and check name
   * by name only the trees the screen does not pass (default true); false
   * checks every tree name by name, with the same findings, slower
   */
  screen?: boolean;
  /**
   * when `image` is a path, check the subvolumes in a worker thread while
   * the rest is checked; same findings. Default: when there are at least
   * PARALLEL_FROM_CORES cores and PARALLEL_FROM_BYTES of subvolume metadata.
   */
  parallel?: boolean;
}

/** Subvolume metadata from which a second thread pays for its start-up. */
const PARALLEL_FROM_BYTES = 8n << 20n;

/**
 * Cores from which the worker is used by default. The worker reads, verifies
 * and decodes every fs tree block again (the main thread's walk has them
 * verified in its cache already, and the pass run there reuses them), and the
 * garbage collector and the I/O pool want a core too: on two busy cores the
 * worker made the check slower (about 20% in wall time on the benchmark
 * image, 30% more memory), so it waits for spare cores.
 */
const PARALLEL_FROM_CORES = 4;

/** The most memory the block cache may take for a check: 1 GiB of tree blocks. */
const CACHE_MAX_BYTES = 1n << 30n;

/**
 * Room in the block cache for every tree block, up to CACHE_MAX_BYTES: the
 * walk reads each block and the fs-tree pass reads the fs trees' leaves
 * again, which costs nothing while they are still cached and a second read
 * and verification each when they are not (on a 300,000-file image, 17,000
 * blocks against the default 8,192, that was a third of the check). The
 * root items' byte counts overstate it (snapshots count shared blocks once
 * each), but the cache only ever holds blocks actually read.
 */
function sizeBlockCache(ctx: CheckContext): void {
  const nodesize = BigInt(ctx.info.nodesize);
  let bytes = 0n;
  for (const r of ctx.roots) bytes += r.item.bytes_used;
  const blocks = (bytes < CACHE_MAX_BYTES ? bytes : CACHE_MAX_BYTES) / nodesize;
  const reader = ctx.info.reader;
  reader.cacheBlocks = Math.max(reader.cacheBlocks, Number(blocks) + 1024);
}

/** Bytes of tree blocks in the subvolumes, as their root items record it. */
function fsTreeBytes(ctx: CheckContext): bigint {
  let n = 0n;
  for (const r of ctx.roots) if (isFsTree(r.objectid) && !r.partiallyDropped) n += r.item.bytes_used;
  return n;
}

/**
 * Checks the filesystem on `image` (a path, opened read-only, or a device)
 * and returns every problem found. Never writes. An image that cannot be
 * opened at all yields a report with that one error; only programming
 * errors (not BtrfsError) reject.
 */
export async function checkImage(image: BlockDevice | string, opts: CheckOptions = {}): Promise<CheckReport> {
  const t0 = performance.now();
  const report = new Reporter();
  const name = typeof image === 'string' ? image : image.name;
  const done = (): CheckReport => ({
    image: name, findings: report.findings, errors: report.errors, warnings: report.warnings,
    clean: report.errors === 0, dropped: report.dropped, stats: report.stats, elapsedMs: performance.now() - t0,
  });
  let doneWeight = 0;
  let current: [string, number] = PHASES[0]!;
  const progress = (label: string) => {
    const i = PHASES.findIndex(([l]) => l === label);
    doneWeight = PHASES.slice(0, i).reduce((n, [, w]) => n + w, 0);
    current = PHASES[i]!;
    opts.onProgress?.({ phase: label, fraction: doneWeight / TOTAL_WEIGHT });
  };
  /** progress within the current phase: `within` of it done, on `detail` */
  const inPhase = (detail: string, within: number) => {
    opts.onProgress?.({ phase: current[0], detail, fraction: (doneWeight + current[1] * Math.min(1, within)) / TOTAL_WEIGHT });
  };
  let device: BlockDevice;
  try {
    device = typeof image === 'string' ? await FileDevice.open(image, { readOnly: true }) : image;
  } catch (e) {
    report.fromError(e, 'open');
    return done();
  }
  try {
    let info: FsInfo;
    try {
      progress('opening filesystem');
      info = await FsInfo.open(new CoalescingDevice(device, false));
    } catch (e) {
      report.fromError(e, 'open');
      return done();
    }
    const ctx: CheckContext = {
      info, report, roots: [], extents: new Map(), blockGroups: [], found: { blocks: new Map(), data: new Map() },
      extentTreeOk: true, treesOk: true, unverifiableRoots: new Set(), reachedBlocks: new Set(), onProgress: opts.onProgress ? inPhase : undefined,
    };
    // btrfs check warns and goes on: what the missing devices hold is only checked through the copies here.
    for (const devid of info.missingDevices) report.warning('device-missing', `device ${devid} is missing`);
    const phase = async (label: string, fn: () => unknown): Promise<void> => {
      progress(label);
      try {
        await fn();
      } catch (e) {
        if (!(e instanceof BtrfsError)) throw e;
        report.fromError(e, 'phase-failed');
      }
    };
    await phase('checking root items', () => loadRoots(ctx));
    sizeBlockCache(ctx);
    // With cores to spare, a big filesystem's fs trees are checked in a worker meanwhile (see inode-worker.ts).
    let worker: Promise<InodeResults> | undefined;
    if (typeof image === 'string' && (opts.parallel ?? (availableParallelism() >= PARALLEL_FROM_CORES && fsTreeBytes(ctx) >= PARALLEL_FROM_BYTES))) {
      worker = inodesInWorker(image, ctx.roots, { incremental: opts.incremental, screen: opts.screen }, (detail, within) => {
        if (current[0] === 'checking fs roots') inPhase(detail, within);
      });
      worker.catch(() => undefined);
    }
    await phase('checking superblock', () => checkSuperblock(ctx));
    await phase('checking extent tree', () => loadExtentTree(ctx));
    await phase('checking tree blocks', () => walkTrees(ctx));
    await phase('checking extent references', () => compareExtents(ctx));
    await phase('checking block groups', () => checkBlockGroupUsage(ctx));
    await phase('checking chunks and device extents', () => checkChunks(ctx));
    await phase('checking free space tree', () => checkFreeSpaceTree(ctx));
    await phase('checking csums', () => loadCsums(ctx, opts.checkDataCsum ?? false));
    const subvolEntries: SubvolEntry[] = [];
    await phase('checking fs roots', async () => {
      const r = worker && await worker.catch(() => undefined);
      if (!r) return checkInodes(ctx, (e) => subvolEntries.push(e), { incremental: opts.incremental, screen: opts.screen });
      for (const f of r.findings) {
        const where = { tree: f.tree, block: f.block, key: f.key, inode: f.inode };
        if (f.severity === 'error') report.error(f.code, f.message, where); else report.warning(f.code, f.message, where);
      }
      report.dropped += r.dropped;
      report.stats.inodes += r.inodes;
      report.stats.screenedTrees += r.screened;
      // Buffers arrive from the worker as plain byte arrays.
      for (const e of r.subvol) subvolEntries.push({ ...e, name: Buffer.from(e.name) });
      judgePrealloc(ctx, r.prealloc, new Set(r.written));
    });
    await phase('checking root refs', () => checkRootRefs(ctx, subvolEntries));
    await phase('checking quota groups', () => checkQgroups(ctx));
    // A copy that failed verification was replaced by its mirror: the image still holds a damaged copy.
    // (Counted per failed copy; when other errors exist the retries are likely theirs.)
    const retries = info.reader.stats.mirrorRetries;
    if (retries > 0 && report.errors === 0) report.error('bad-mirror', `${retries} tree block cop${retries === 1 ? 'y' : 'ies'} failed verification and ${retries === 1 ? 'was' : 'were'} read from another mirror`);
    return done();
  } finally {
    if (typeof image === 'string') await device.close();
  }
}
