/**
 * The fs-tree pass in a worker thread, so that it runs on a second core
 * while the main thread reads and cross-checks everything else: the two are
 * independent until the end (the pass needs only the root items and the
 * checksum tree; what it leaves for the main thread to judge is handed
 * back). The worker opens the image on its own, read-only.
 *
 * The same file is the worker's body when loaded as a worker.
 */
import { isMainThread, parentPort, workerData, Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { FileDevice } from '../device/file-device.js';
import { FsInfo } from '../tree/fs-info.js';
import { BtrfsError } from '../util/errors.js';
import { CoalescingDevice } from './coalescing-device.js';
import type { CheckContext, RootRecord } from './context.js';
import { loadCsums } from './csums.js';
import { inodePass, type InodeOptions, type PreallocCsum, type SubvolEntry } from './inodes.js';
import { Reporter, type Finding } from './report.js';
import type { AddrKey, U64 } from './u64.js';

export interface InodeResults {
  findings: Finding[];
  /** findings beyond what the reporter kept */
  dropped: number;
  subvol: SubvolEntry[];
  prealloc: PreallocCsum[];
  written: AddrKey[];
  inodes: number;
  screened: number;
}

interface Job { kind: 'tsbtrfs-check-inodes'; image: string; roots: RootRecord[]; opts: InodeOptions }
type Message = { progress: [string, number] } | { done: InodeResults } | { failed: string };

async function work(job: Job, post: (m: Message) => void): Promise<void> {
  const device = await FileDevice.open(job.image, { readOnly: true });
  try {
    const info = await FsInfo.open(new CoalescingDevice(device, false));
    const report = new Reporter();
    const base = {
      info, roots: job.roots, extents: new Map(), blockGroups: [], found: { blocks: new Map(), data: new Map() },
      extentTreeOk: false, treesOk: true, unverifiableRoots: new Set<bigint>(), reachedBlocks: new Set<AddrKey>(),
    };
    // The checksum tree's coverage only: its own findings are the main thread's to report.
    const csumCtx: CheckContext = { ...base, report: new Reporter() };
    try {
      await loadCsums(csumCtx, false);
    } catch (e) {
      if (!(e instanceof BtrfsError)) throw e;
    }
    const ctx: CheckContext = { ...base, report, csums: csumCtx.csums, onProgress: (detail, within) => post({ progress: [detail, within] }) };
    const subvol: SubvolEntry[] = [];
    const r = await inodePass(ctx, (e) => subvol.push(e), job.opts);
    post({ done: { findings: report.findings, dropped: report.dropped, subvol, prealloc: r.prealloc, written: [...r.written], inodes: report.stats.inodes, screened: report.stats.screenedTrees } });
  } finally {
    await device.close();
  }
}

if (!isMainThread && parentPort && (workerData as Job | undefined)?.kind === 'tsbtrfs-check-inodes') {
  const port = parentPort;
  work(workerData as Job, (m) => port.postMessage(m)).catch((e: unknown) => port.postMessage({ failed: e instanceof Error ? e.stack ?? e.message : String(e) } satisfies Message));
}

/**
 * Starts the fs-tree pass on `image` in a worker. The promise rejects if the
 * worker fails in any way (the caller then runs the pass itself).
 */
export function inodesInWorker(image: string, roots: RootRecord[], opts: InodeOptions, onProgress?: (detail: string, within: number) => void): Promise<InodeResults> {
  return new Promise((resolve, reject) => {
    const job: Job = { kind: 'tsbtrfs-check-inodes', image, roots, opts };
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: job });
    let settled = false;
    const end = (f: () => void) => {
      if (settled) return;
      settled = true;
      void w.terminate();
      f();
    };
    w.on('message', (m: Message) => {
      if ('progress' in m) onProgress?.(m.progress[0], m.progress[1]);
      else if ('done' in m) end(() => resolve(m.done));
      else end(() => reject(new Error(`inode worker failed: ${m.failed}`)));
    });
    w.on('error', (e) => end(() => reject(e)));
    w.on('exit', (code) => end(() => reject(new Error(`inode worker exited with code ${code}`))));
  });
}
