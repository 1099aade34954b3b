/**
 * `checkImage` in a worker thread with a deadline, for tests that feed it
 * hostile images: a hang (even a synchronous loop) is ended by terminating
 * the worker, and a crash (any rejection that is not a BtrfsError result,
 * or the worker dying) is reported instead of taking the test run down.
 *
 *   const w = new CheckWorker();
 *   const r = await w.check('/tmp/x.img', 30_000);   // { kind: 'ok', report } | { kind: 'crash' } | { kind: 'hang' }
 *   await w.close();
 *
 * The same file is the worker's body when loaded as a worker.
 */
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { checkImage, formatFinding } from '../../src/check/index.js';

/** The part of a report a differential test looks at (reports carry bigints, which do not cross threads well). */
export interface CheckSummary {
  errors: number;
  warnings: number;
  /** every finding's code, with its severity: 'error:nlink' */
  codes: string[];
  /** the first findings, formatted */
  lines: string[];
  elapsedMs: number;
  /**
   * when every mode was run: the findings the default mode (screened, snapshots by difference) and one of the
   * exact modes (every tree name by name, snapshots by difference or in full) do not share, if any
   */
  modesDiffer?: string;
}

export type WorkerResult =
  | { kind: 'ok'; summary: CheckSummary }
  | { kind: 'crash'; message: string }
  | { kind: 'hang'; afterMs: number };

interface Request { id: number; image: string; bothModes: boolean }
type Reply = { id: number; summary: CheckSummary } | { id: number; crash: string };

if (!isMainThread && parentPort) {
  const port = parentPort;
  const run = async (req: Request): Promise<CheckSummary> => {
    const r = await checkImage(req.image);
    const summary: CheckSummary = {
      errors: r.errors, warnings: r.warnings, codes: r.findings.map((f) => `${f.severity}:${f.code}`),
      lines: r.findings.slice(0, 12).map(formatFinding), elapsedMs: r.elapsedMs,
    };
    if (req.bothModes) {
      // Screening trees and checking snapshots by difference must find exactly what checking each tree name by name finds.
      const a = r.findings.map(formatFinding).sort();
      for (const [label, opts] of [['exact by difference', { screen: false }], ['exact in full', { screen: false, incremental: false }]] as const) {
        const other = await checkImage(req.image, opts);
        const b = other.findings.map(formatFinding).sort();
        const onlyA = a.filter((x) => !b.includes(x));
        const onlyB = b.filter((x) => !a.includes(x));
        if (onlyA.length || onlyB.length || a.length !== b.length) {
          summary.modesDiffer = `default only: ${onlyA.slice(0, 3).join(' | ') || '-'}; ${label} only: ${onlyB.slice(0, 3).join(' | ') || '-'} (${a.length} vs ${b.length})`;
          break;
        }
      }
    }
    return summary;
  };
  port.on('message', (req: Request) => {
    run(req).then(
      (summary) => port.postMessage({ id: req.id, summary } satisfies Reply),
      (e: unknown) => port.postMessage({ id: req.id, crash: e instanceof Error ? e.stack ?? e.message : String(e) } satisfies Reply),
    );
  });
}

export class CheckWorker {
  private worker: Worker | undefined;
  private seq = 0;

  private start(): Worker {
    // A heap cap turns a runaway allocation into a crash we can report rather than an OOM of the whole run.
    const w = new Worker(fileURLToPath(import.meta.url), { resourceLimits: { maxOldGenerationSizeMb: 2048 } });
    w.unref();
    this.worker = w;
    return w;
  }

  /** Runs one check (with bothModes, also a full one to compare with); never rejects. */
  check(image: string, timeoutMs: number, bothModes = false): Promise<WorkerResult> {
    const w = this.worker ?? this.start();
    const id = ++this.seq;
    const t0 = performance.now();
    return new Promise((resolve) => {
      let settled = false;
      const finish = (r: WorkerResult, kill: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        w.off('message', onMessage);
        w.off('error', onError);
        w.off('exit', onExit);
        if (kill) {
          if (this.worker === w) this.worker = undefined;
          void w.terminate();
        }
        resolve(r);
      };
      const onMessage = (m: Reply) => {
        if (m.id !== id) return;
        if ('crash' in m) finish({ kind: 'crash', message: m.crash }, false);
        else finish({ kind: 'ok', summary: m.summary }, false);
      };
      const onError = (e: Error) => finish({ kind: 'crash', message: `worker died: ${e.stack ?? e.message}` }, true);
      const onExit = (code: number) => finish({ kind: 'crash', message: `worker exited with code ${code}` }, true);
      const timer = setTimeout(() => finish({ kind: 'hang', afterMs: performance.now() - t0 }, true), timeoutMs);
      w.on('message', onMessage);
      w.on('error', onError);
      w.on('exit', onExit);
      w.postMessage({ id, image, bothModes } satisfies Request);
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }
}
