/**
 * The byte-addressed storage an image lives on: an image file, a block
 * device, memory, or a fault-injecting wrapper around one of these.
 */
import { BtrfsError } from '../util/errors.js';

/**
 * Contract shared by every device:
 *
 * - `read(offset, length)` returns exactly `length` bytes starting at byte
 *   `offset`, in a Buffer the caller owns (later writes do not change it).
 *   A read extending past `size` fails with EIO naming the offset; nothing
 *   is returned for the part that does fit.
 * - `write(offset, data)` stores all of `data` at `offset` or throws. It
 *   fails with EROFS on a read-only device and with ENOSPC if it extends
 *   past `size` on a device that cannot grow. A write is durable only after
 *   a later `flush()` resolves; until then a crash may lose or tear it.
 * - `flush()` makes every write that resolved before it durable. On a
 *   read-only device it does nothing.
 * - `close()` flushes nothing (call flush first) and releases the device
 *   and any lock; afterwards every method, close included, fails with EBADF.
 * - Offsets and lengths are non-negative safe integers, else EINVAL.
 * - Errors are BtrfsError whose `path` is the device's `name`.
 *
 * Concurrent calls are allowed; overlapping concurrent writes land in an
 * unspecified order, as on a real disk.
 */
export interface BlockDevice {
  /** bytes addressable; fixed unless the device documents growth */
  readonly size: number;
  readonly readOnly: boolean;
  /** for messages: the path it was opened from, or a label */
  readonly name: string;
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * The same read, done before returning, by a device for which that is
   * cheap (a file: one pread, usually served from the page cache). Readers
   * that issue many small reads and wait for each anyway use it to skip the
   * round trip through the I/O thread pool.
   */
  readSync?(offset: number, length: number): Buffer;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Throws EINVAL unless offset and length are usable byte counts. */
export function checkArgs(name: string, op: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new BtrfsError('EINVAL', `${op}: offset ${offset} is not a non-negative integer`, { syscall: op, path: name });
  }
  if (!Number.isSafeInteger(length) || length < 0 || !Number.isSafeInteger(offset + length)) {
    throw new BtrfsError('EINVAL', `${op}: length ${length} at offset ${offset} is not a usable byte count`, { syscall: op, path: name });
  }
}

/** The EIO a read past the end of a device fails with. */
export function pastEnd(name: string, offset: number, length: number, size: number): BtrfsError {
  return new BtrfsError('EIO', `read of ${length} bytes at offset ${offset} extends past end of device (size ${size})`, { syscall: 'read', path: name });
}

/** The ENOSPC a write past the end of a fixed-size device fails with. */
export function writePastEnd(name: string, offset: number, length: number, size: number): BtrfsError {
  return new BtrfsError('ENOSPC', `write of ${length} bytes at offset ${offset} extends past end of device (size ${size})`, { syscall: 'write', path: name });
}

export function readOnlyError(name: string): BtrfsError {
  return new BtrfsError('EROFS', 'device is open read-only', { syscall: 'write', path: name });
}

export function closedError(name: string, op: string): BtrfsError {
  return new BtrfsError('EBADF', 'device is closed', { syscall: op, path: name });
}
