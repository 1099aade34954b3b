/**
 * `check`: a read-only fsck. Opens the image and runs the passes in the
 * order their facts are needed: roots, superblock, extent tree, a walk of
 * every tree (collecting what references what), then each cross-tree
 * comparison. A pass that cannot read what it needs reports that and the
 * passes depending on it are skipped or made lenient, so that one damaged
 * block yields its own error rather than a flood of consequences.
 */
import { BtrfsError } from '../util/errors.js';
import type { BlockDevice } from '../device/block-device.js';
import { FileDevice } from '../device/file-device.js';
import { FsInfo } from '../tree/fs-info.js';
import type { CheckContext } from './context.js';
import { Reporter, type CheckReport } from './report.js';
import { loadRoots, checkRootRefs } from './roots.js';
import { checkSuperblock } from './superblock.js';
import { loadExtentTree, compareExtents, checkBlockGroupUsage } from './extents.js';
import { walkTrees } from './trees.js';
import { checkChunks } from './chunks.js';
import { checkFreeSpaceTree } from './free-space.js';
import { checkInodes, type FileExtentUse } from './inodes.js';
import { checkCsums } from './csums.js';

export type { CheckReport, Finding, Severity, CheckStats } from './report.js';
export { formatFinding, reportToJson } from './report.js';

export interface CheckOptions {
  /** read every checksummed data sector and verify it (slow: reads all data) */
  checkDataCsum?: boolean;
  /** called at the start of each phase, for progress display */
  onProgress?: (phase: string) => void;
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
      opts.onProgress?.('opening filesystem');
      info = await FsInfo.open(device);
    } catch (e) {
      report.fromError(e, 'open');
      return done();
    }
    const ctx: CheckContext = {
      info, report, roots: [], extents: new Map(), blockGroups: [], found: { blocks: new Map(), data: new Map() },
      extentTreeOk: true, treesOk: true, unverifiableRoots: new Set(), reachedBlocks: new Set(), onProgress: opts.onProgress,
    };
    const phase = async (label: string, fn: () => unknown): Promise<void> => {
      opts.onProgress?.(label);
      try {
        await fn();
      } catch (e) {
        if (!(e instanceof BtrfsError)) throw e;
        report.fromError(e, 'phase-failed');
      }
    };
    await phase('checking root items', () => loadRoots(ctx));
    await phase('checking superblock', () => checkSuperblock(ctx));
    await phase('checking extent tree', () => loadExtentTree(ctx));
    await phase('checking tree blocks', () => walkTrees(ctx));
    await phase('checking extent references', () => compareExtents(ctx));
    await phase('checking block groups', () => checkBlockGroupUsage(ctx));
    await phase('checking chunks and device extents', () => checkChunks(ctx));
    await phase('checking free space tree', () => checkFreeSpaceTree(ctx));
    await phase('checking root refs', () => checkRootRefs(ctx));
    const uses: FileExtentUse[] = [];
    await phase('checking fs roots', () => checkInodes(ctx, (u) => uses.push(u)));
    await phase('checking csums', () => checkCsums(ctx, uses, opts.checkDataCsum ?? false));
    return done();
  } finally {
    if (typeof image === 'string') await device.close();
  }
}
