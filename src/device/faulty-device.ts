/**
 * A wrapper for testing how the engine survives I/O errors and crashes, in
 * the spirit of TigerBeetle's and redb's storage fault tests:
 *
 * - injected faults: make the Nth read, write or flush fail (once, or from
 *   then on), to check that errors propagate and nothing half-done is
 *   presented as done;
 * - crash images: every write since the last completed flush is logged
 *   with the bytes it overwrote, so `crash({ keep, tear })` can produce the
 *   image a power cut would leave: everything durable at the last flush,
 *   plus the first `keep` unflushed writes in issue order, the last of
 *   which may be torn (only a prefix of its sectors reached the disk).
 *   Iterating keep over 0..writesSinceFlush covers every cut point.
 *
 * The model is deliberately simple: unflushed writes persist in order (no
 * reordering), sectors are written atomically, and a torn write persists a
 * strict, non-empty prefix of its sectors.
 */
import { BtrfsError, type ErrnoCode } from '../util/errors.js';
import { type BlockDevice, checkArgs, closedError } from './block-device.js';
import { mulberry32 } from '../util/random.js';

export type FaultOp = 'read' | 'write' | 'flush';

export interface Fault {
  op: FaultOp;
  /** 1-based: the nth call of `op` counted from when the fault was injected */
  nth: number;
  /** also fail every later call of `op`; default false (fail once) */
  sticky?: boolean;
  /** error code to fail with; default EIO */
  code?: ErrnoCode;
}

export interface FaultyDeviceOptions {
  faults?: Fault[];
  /** atomic unit of the simulated disk for torn writes; default 512 */
  sectorSize?: number;
  /** keep the undo log needed by crash(); default true */
  record?: boolean;
}

export interface CrashOptions {
  /** how many of the unflushed writes persist, 0..writesSinceFlush */
  keep: number;
  /** tear the last kept write (a write within one sector cannot tear); default false */
  tear?: boolean;
  /** seeds the choice of the tear point; default 1 */
  seed?: number;
}

export interface TornWrite {
  /** index among the unflushed writes (keep - 1) */
  index: number;
  offset: number;
  length: number;
  /** bytes of it that persisted: a prefix ending on a sector boundary */
  written: number;
}

export interface CrashResult {
  bytes: Buffer;
  torn?: TornWrite;
}

interface LoggedWrite {
  offset: number;
  length: number;
  /** what [offset, offset + old.length) held before; shorter if the write grew the device */
  old: Buffer;
  sizeBefore: number;
}

interface ArmedFault {
  fault: Fault;
  /** calls of fault.op already made when injected */
  base: number;
}

const rng = mulberry32;

export class FaultyDevice implements BlockDevice {
  readonly inner: BlockDevice;
  readonly sectorSize: number;
  private readonly record: boolean;
  private faults: ArmedFault[] = [];
  private calls: Record<FaultOp, number> = { read: 0, write: 0, flush: 0 };
  private log: LoggedWrite[] = [];
  private writes = 0;
  private flushes = 0;
  private closed = false;
  /** writes and flushes run one at a time so each logged "old" is exact */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(inner: BlockDevice, options: FaultyDeviceOptions = {}) {
    this.inner = inner;
    this.sectorSize = options.sectorSize ?? 512;
    if (!Number.isSafeInteger(this.sectorSize) || this.sectorSize <= 0) {
      throw new BtrfsError('EINVAL', `sectorSize must be a positive integer, got ${this.sectorSize}`, { path: inner.name });
    }
    this.record = options.record ?? true;
    for (const f of options.faults ?? []) this.injectFault(f);
  }

  get size(): number { return this.inner.size; }
  get readOnly(): boolean { return this.inner.readOnly; }
  get name(): string { return this.inner.name; }

  /** Completed writes not yet made durable by a flush: the cut points of crash(). */
  get writesSinceFlush(): number { return this.log.length; }
  /** Completed writes since the device was wrapped. */
  get totalWrites(): number { return this.writes; }
  /** Completed flushes since the device was wrapped. */
  get totalFlushes(): number { return this.flushes; }
  /** Calls so far (completed, failed or injected-failed) per operation. */
  get callCounts(): Readonly<Record<FaultOp, number>> { return { ...this.calls }; }

  /** Where the unflushed writes went, in issue order. */
  unflushedWrites(): { offset: number; length: number }[] {
    return this.log.map(({ offset, length }) => ({ offset, length }));
  }

  /** Arms a fault; `nth` counts calls of its op from now. */
  injectFault(fault: Fault): void {
    if (!Number.isSafeInteger(fault.nth) || fault.nth < 1) {
      throw new BtrfsError('EINVAL', `fault nth must be a positive integer, got ${fault.nth}`, { path: this.name });
    }
    this.faults.push({ fault, base: this.calls[fault.op] });
  }

  clearFaults(): void {
    this.faults = [];
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.live('read');
    this.trip('read', offset);
    return this.inner.read(offset, length);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.serial(async () => {
      this.live('write');
      this.trip('write', offset);
      if (!this.record || this.inner.readOnly) {
        await this.inner.write(offset, data);
        this.writes++;
        return;
      }
      checkArgs(this.name, 'write', offset, data.length);
      const sizeBefore = this.inner.size;
      const have = Math.max(0, Math.min(data.length, sizeBefore - offset));
      const old = have > 0 ? await this.inner.read(offset, have) : Buffer.alloc(0);
      await this.inner.write(offset, data);
      this.log.push({ offset, length: data.length, old, sizeBefore });
      this.writes++;
    });
  }

  flush(): Promise<void> {
    return this.serial(async () => {
      this.live('flush');
      this.trip('flush');
      await this.inner.flush();
      this.log = [];
      this.flushes++;
    });
  }

  async close(): Promise<void> {
    this.live('close');
    await this.queue.catch(() => undefined);
    this.closed = true;
    await this.inner.close();
  }

  /**
   * The image a crash now would leave (see the module comment). Reads the
   * whole inner device, so the wrapper must still be open.
   */
  async crash(options: CrashOptions): Promise<CrashResult> {
    this.live('crash');
    if (!this.record) throw new BtrfsError('EINVAL', 'crash images need record: true', { path: this.name });
    return this.serial(async () => {
      const { keep } = options;
      if (!Number.isSafeInteger(keep) || keep < 0 || keep > this.log.length) {
        throw new BtrfsError('EINVAL', `keep must be in 0..${this.log.length}, got ${keep}`, { path: this.name });
      }
      let bytes = await this.inner.read(0, this.inner.size);
      // Undo newest first so overlapping writes unwind to the right bytes.
      for (let i = this.log.length - 1; i >= keep; i--) bytes = undo(bytes, this.log[i]!, 0);
      let torn: TornWrite | undefined;
      if (options.tear && keep > 0) {
        const w = this.log[keep - 1]!;
        const written = this.tearPoint(w, options.seed ?? 1, keep);
        if (written !== undefined) {
          bytes = undo(bytes, w, written);
          torn = { index: keep - 1, offset: w.offset, length: w.length, written };
        }
      }
      return torn ? { bytes, torn } : { bytes };
    });
  }

  /** Just the bytes of crash(). */
  async crashImage(options: CrashOptions): Promise<Buffer> {
    return (await this.crash(options)).bytes;
  }

  /** A strict, non-empty, sector-aligned prefix length of w, or undefined if w fits one sector. */
  private tearPoint(w: LoggedWrite, seed: number, keep: number): number | undefined {
    const end = w.offset + w.length;
    const first = (Math.floor(w.offset / this.sectorSize) + 1) * this.sectorSize;
    if (first >= end) return undefined;
    const boundaries = Math.ceil((end - first) / this.sectorSize);
    const pick = Math.floor(rng(Math.imul(seed, 0x9e3779b1) ^ keep)() * boundaries);
    return first + pick * this.sectorSize - w.offset;
  }

  private trip(op: FaultOp, offset?: number): void {
    const n = ++this.calls[op];
    for (const armed of this.faults) {
      const { fault, base } = armed;
      if (fault.op !== op) continue;
      const k = n - base;
      if (k === fault.nth || (fault.sticky && k > fault.nth)) {
        const at = offset !== undefined ? ` at offset ${offset}` : '';
        throw new BtrfsError(fault.code ?? 'EIO', `injected fault: ${op} #${k}${at}`, { syscall: op, path: this.name });
      }
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private live(op: string): void {
    if (this.closed) throw closedError(this.name, op);
  }
}

/**
 * Reverts w in `bytes` except for its first `keepPrefix` bytes. Returns a
 * new buffer when the device size changes.
 */
function undo(bytes: Buffer, w: LoggedWrite, keepPrefix: number): Buffer {
  const from = keepPrefix;
  if (from < w.old.length) w.old.copy(bytes, w.offset + from, from);
  // a write that grew the device: cut back to what persisted
  const persistedEnd = keepPrefix > 0 ? w.offset + keepPrefix : 0;
  const size = Math.max(w.sizeBefore, persistedEnd);
  return size < bytes.length ? bytes.subarray(0, size) : bytes;
}
