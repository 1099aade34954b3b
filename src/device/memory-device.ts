/**
 * A device held in memory: for tests, for images built before they are
 * written out, and for crash images produced by FaultyDevice.
 */
import { constants as bufferConstants } from 'node:buffer';
import { asBuffer } from '../util/bytes.js';
import { BtrfsError } from '../util/errors.js';
import {
  type BlockDevice, checkArgs, closedError, pastEnd, readOnlyError, writePastEnd,
} from './block-device.js';

export interface MemoryDeviceOptions {
  /** label used in error messages; default "memory" */
  name?: string;
  readOnly?: boolean;
  /**
   * If true, a write past `size` extends the device (the gap reads as
   * zeros) instead of failing with ENOSPC. Reads past `size` still fail.
   */
  growable?: boolean;
}

export class MemoryDevice implements BlockDevice {
  readonly name: string;
  readonly readOnly: boolean;
  readonly growable: boolean;
  private buf: Buffer;
  private len: number;
  private closed = false;

  /** A zero-filled device of `size` bytes. */
  constructor(size: number, options: MemoryDeviceOptions = {}) {
    this.name = options.name ?? 'memory';
    checkArgs(this.name, 'create', 0, size);
    this.readOnly = options.readOnly ?? false;
    this.growable = options.growable ?? false;
    this.buf = Buffer.alloc(this.fit(size));
    this.len = size;
  }

  /** A device holding a copy of `bytes` (the caller's buffer is not shared). */
  static fromBuffer(bytes: Uint8Array, options: MemoryDeviceOptions = {}): MemoryDevice {
    const dev = new MemoryDevice(0, options);
    dev.buf = Buffer.from(bytes);
    dev.len = bytes.length;
    return dev;
  }

  get size(): number {
    return this.len;
  }

  /** A copy of the current contents (all writes, flushed or not). */
  snapshot(): Buffer {
    this.live('snapshot');
    return Buffer.from(this.buf.subarray(0, this.len));
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.live('read');
    checkArgs(this.name, 'read', offset, length);
    if (offset + length > this.len) throw pastEnd(this.name, offset, length, this.len);
    return Buffer.from(this.buf.subarray(offset, offset + length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.live('write');
    if (this.readOnly) throw readOnlyError(this.name);
    checkArgs(this.name, 'write', offset, data.length);
    const end = offset + data.length;
    if (end > this.len) {
      if (!this.growable) throw writePastEnd(this.name, offset, data.length, this.len);
      this.grow(end);
    }
    asBuffer(data).copy(this.buf, offset);
  }

  async flush(): Promise<void> {
    this.live('flush');
  }

  async close(): Promise<void> {
    this.live('close');
    this.closed = true;
  }

  private grow(end: number): void {
    if (end > this.buf.length) {
      // doubling keeps a run of appending writes linear overall
      const next = Buffer.alloc(Math.max(this.fit(end), Math.min(this.buf.length * 2, bufferConstants.MAX_LENGTH)));
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    this.len = end;
  }

  /** Buffer.alloc throws a RangeError past MAX_LENGTH; say ENOMEM instead. */
  private fit(size: number): number {
    if (size > bufferConstants.MAX_LENGTH) {
      throw new BtrfsError('ENOMEM', `${size} bytes exceed the largest Buffer (${bufferConstants.MAX_LENGTH})`, { path: this.name });
    }
    return size;
  }

  private live(op: string): void {
    if (this.closed) throw closedError(this.name, op);
  }
}
