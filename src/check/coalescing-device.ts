/**
 * A read-only view of a device that merges reads issued together: a check
 * asks for all children of a node at once, and tree blocks written in one
 * transaction usually sit side by side, so one read of a run of adjacent
 * blocks replaces dozens of small ones (each a round trip through the I/O
 * thread pool). Reads requested in the same turn of the event loop are
 * sorted, and exactly adjacent ones are read as one, up to MAX_MERGE bytes;
 * each caller gets its own range of the merged buffer.
 */
import type { BlockDevice } from '../device/block-device.js';
import { readOnlyError } from '../device/block-device.js';

const MAX_MERGE = 1 << 20;

interface Want { offset: number; length: number; resolve: (b: Buffer) => void; reject: (e: unknown) => void }

export class CoalescingDevice implements BlockDevice {
  readonly readOnly = true;
  private queue: Want[] = [];
  private scheduled = false;

  constructor(private readonly base: BlockDevice, private readonly closeBase: boolean) {}

  get size(): number { return this.base.size; }
  get name(): string { return this.base.name; }

  read(offset: number, length: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.queue.push({ offset, length, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this.flush_());
      }
    });
  }

  private flush_(): void {
    this.scheduled = false;
    const q = this.queue.sort((a, b) => a.offset - b.offset);
    this.queue = [];
    for (let i = 0; i < q.length;) {
      let j = i + 1;
      let end = q[i]!.offset + q[i]!.length;
      while (j < q.length && q[j]!.offset === end && end + q[j]!.length - q[i]!.offset <= MAX_MERGE) {
        end += q[j]!.length;
        j++;
      }
      const group = q.slice(i, j);
      const start = group[0]!.offset;
      if (this.base.readSync) {
        let buf: Buffer | undefined;
        try {
          buf = this.base.readSync(start, end - start);
        } catch {
          // One bad range should not fail its neighbours: each is read alone, and fails alone.
          for (const w of group) {
            try { w.resolve(this.base.readSync(w.offset, w.length)); } catch (e) { w.reject(e); }
          }
        }
        if (buf) for (const w of group) w.resolve(buf.subarray(w.offset - start, w.offset - start + w.length));
        i = j;
        continue;
      }
      // The base device checks bounds and arguments; its error goes to every reader of the run.
      this.base.read(start, end - start).then(
        (buf) => { for (const w of group) w.resolve(buf.subarray(w.offset - start, w.offset - start + w.length)); },
        (e: unknown) => {
          if (group.length === 1) { group[0]!.reject(e); return; }
          // One bad range should not fail its neighbours: retry each alone.
          for (const w of group) this.base.read(w.offset, w.length).then(w.resolve, w.reject);
        },
      );
      i = j;
    }
  }

  async write(): Promise<void> {
    throw readOnlyError(this.name);
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    if (this.closeBase) await this.base.close();
  }
}
