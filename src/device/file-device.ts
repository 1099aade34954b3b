/**
 * A device backed by an image file or a host block device (/dev/loop0,
 * /dev/sdb1, ...), accessed with positional reads and writes.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { asBuffer } from '../util/bytes.js';
import { BtrfsError, type ErrnoCode } from '../util/errors.js';
import {
  type BlockDevice, checkArgs, closedError, pastEnd, readOnlyError, writePastEnd,
} from './block-device.js';
import type { ImageLock } from './image-lock.js';

export interface FileDeviceOptions {
  /** open O_RDONLY; nothing is ever written to the image, no lock is taken; default false */
  readOnly?: boolean;
  /**
   * take the inter-process write lock (see image-lock.ts); default true
   * for read-write opens, ignored for read-only ones
   */
  lock?: boolean;
  /** create the image file if it does not exist (regular files only) */
  create?: boolean;
  /**
   * make the image file at least this long, extending it sparsely; an
   * image already longer is left alone. Regular files only.
   */
  sizeBytes?: number;
  /** staleness threshold for the lock, see LockOptions.staleMs */
  lockStaleMs?: number;
  /** how long to retry while another process holds the lock, see LockOptions.waitMs; default 0 */
  lockWaitMs?: number;
}

const NODE_CODES: ReadonlySet<string> = new Set([
  'ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'EPERM', 'EACCES', 'EINVAL', 'EIO', 'ENOSPC',
  'EBUSY', 'EROFS', 'ENAMETOOLONG', 'ELOOP', 'EFBIG', 'EBADF', 'ENOMEM', 'EAGAIN', 'ENOTSUP',
]);

/** A Node fs error as BtrfsError, keeping its code when it is one we know. */
function fromNode(e: unknown, syscall: string, name: string, detail?: string): BtrfsError {
  if (e instanceof BtrfsError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = (typeof err?.code === 'string' && NODE_CODES.has(err.code) ? err.code : 'EIO') as ErrnoCode;
  const msg = (err?.message ?? String(e)).replace(/^[A-Z0-9_]+: /, '').replace(/, [a-z]+ '.*'$/s, '');
  return new BtrfsError(code, detail ? `${detail}: ${msg}` : msg, { syscall, path: name, cause: e });
}

/**
 * Size of a block device: sysfs gives it in 512-byte units; where sysfs is
 * missing, probe for the end by reading single bytes, since Node has no
 * lseek(SEEK_END) and a read at or past the end returns 0 bytes.
 */
async function blockDeviceSize(fh: fsp.FileHandle, rdev: number): Promise<number> {
  // glibc's encoding of dev_t (gnu_dev_major/minor), which Node reports as rdev
  const d = BigInt(rdev);
  const major = Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & 0xfffff000n));
  const minor = Number((d & 0xffn) | ((d >> 12n) & 0xffffff00n));
  try {
    const sectors = Number((await fsp.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim());
    if (Number.isSafeInteger(sectors) && sectors >= 0) return sectors * 512;
  } catch {
    // no sysfs: probe
  }
  const one = Buffer.alloc(1);
  const has = async (off: number): Promise<boolean> => (await fh.read(one, 0, 1, off)).bytesRead === 1;
  if (!(await has(0))) return 0;
  let lo = 0; // has(lo) is true
  let hi = 512;
  while (await has(hi)) {
    lo = hi;
    hi *= 2;
    if (hi > Number.MAX_SAFE_INTEGER) throw new Error('block device size probe ran away');
  }
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (await has(mid)) lo = mid; else hi = mid;
  }
  return hi;
}

export class FileDevice implements BlockDevice {
  readonly name: string;
  readonly readOnly: boolean;
  /** true for a host block device, false for a regular image file */
  readonly isBlockDevice: boolean;
  /** the write lock held, if any */
  readonly lock: ImageLock | undefined;
  private fh: fsp.FileHandle | undefined;
  private readonly bytes: number;

  private constructor(name: string, fh: fsp.FileHandle, size: number, readOnly: boolean, block: boolean, lock: ImageLock | undefined) {
    this.name = name;
    this.fh = fh;
    this.bytes = size;
    this.readOnly = readOnly;
    this.isBlockDevice = block;
    this.lock = lock;
  }

  get size(): number {
    return this.bytes;
  }

  /**
   * Opens an image file or block device. Read-write opens take the image
   * lock first (EBUSY if held elsewhere) and, for block devices, open with
   * O_EXCL so the kernel refuses (EBUSY) a device that is mounted or
   * claimed. Only regular files and block devices are accepted (EINVAL).
   */
  static async open(file: string, options: FileDeviceOptions = {}): Promise<FileDevice> {
    const readOnly = options.readOnly ?? false;
    const name = file;
    if (readOnly && (options.create || options.sizeBytes !== undefined)) {
      throw new BtrfsError('EINVAL', 'create/sizeBytes need a read-write open', { syscall: 'open', path: name });
    }
    if (options.sizeBytes !== undefined) checkArgs(name, 'open', 0, options.sizeBytes);

    if (options.create) {
      // The lock needs the file to exist (it is keyed by its real path);
      // creating an empty file here changes nothing that exists already.
      try {
        await (await fsp.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644)).close();
      } catch (e) {
        throw fromNode(e, 'open', name);
      }
    }

    let st: fs.Stats;
    try {
      st = await fsp.stat(file);
    } catch (e) {
      throw fromNode(e, 'stat', name);
    }
    const block = st.isBlockDevice();
    if (!block && !st.isFile()) {
      throw new BtrfsError('EINVAL', 'not a regular file or block device', { syscall: 'open', path: name });
    }
    if (block && (options.create || options.sizeBytes !== undefined)) {
      throw new BtrfsError('EINVAL', 'create/sizeBytes apply to image files, not block devices', { syscall: 'open', path: name });
    }

    let lock: ImageLock | undefined;
    if (!readOnly && (options.lock ?? true)) {
      // Loaded only by writers: the lock package patches fs and registers exit handlers, which a reader does not need.
      const { acquireImageLock } = await import('./image-lock.js');
      lock = await acquireImageLock(file, {
        blockDevice: block,
        ...(options.lockStaleMs !== undefined ? { staleMs: options.lockStaleMs } : {}),
        waitMs: options.lockWaitMs,
      });
    }

    let fh: fsp.FileHandle | undefined;
    try {
      let flags = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
      if (block && !readOnly) flags |= fs.constants.O_EXCL;
      try {
        fh = await fsp.open(file, flags);
      } catch (e) {
        if (block && (e as NodeJS.ErrnoException).code === 'EBUSY') {
          throw fromNode(e, 'open', name, 'device is mounted or held exclusively by another program');
        }
        throw fromNode(e, 'open', name);
      }
      const fst = await fh.stat();
      // the path may have been replaced between stat and open
      if (fst.ino !== st.ino || fst.dev !== st.dev) {
        throw new BtrfsError('EBUSY', 'image was replaced while opening', { syscall: 'open', path: name });
      }
      let size: number;
      if (block) {
        size = await blockDeviceSize(fh, fst.rdev);
      } else {
        size = fst.size;
        if (options.sizeBytes !== undefined && size < options.sizeBytes) {
          await fh.truncate(options.sizeBytes);
          size = options.sizeBytes;
        }
      }
      return new FileDevice(name, fh, size, readOnly, block, lock);
    } catch (e) {
      await fh?.close().catch(() => undefined);
      await lock?.release().catch(() => undefined);
      throw fromNode(e, 'open', name);
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const fh = this.live('read');
    checkArgs(this.name, 'read', offset, length);
    if (offset + length > this.bytes) throw pastEnd(this.name, offset, length, this.bytes);
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        n = (await fh.read(buf, done, length - done, offset + done)).bytesRead;
      } catch (e) {
        throw fromNode(e, 'read', this.name, `read at offset ${offset + done}`);
      }
      if (n === 0) {
        // the image shrank under us (truncated by someone else)
        throw new BtrfsError('EIO', `short read at offset ${offset + done}: image ends early`, { syscall: 'read', path: this.name });
      }
      done += n;
    }
    return buf;
  }

  readSync(offset: number, length: number): Buffer {
    const fh = this.live('read');
    checkArgs(this.name, 'read', offset, length);
    if (offset + length > this.bytes) throw pastEnd(this.name, offset, length, this.bytes);
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        n = fs.readSync(fh.fd, buf, done, length - done, offset + done);
      } catch (e) {
        throw fromNode(e, 'read', this.name, `read at offset ${offset + done}`);
      }
      if (n === 0) throw new BtrfsError('EIO', `short read at offset ${offset + done}: image ends early`, { syscall: 'read', path: this.name });
      done += n;
    }
    return buf;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const fh = this.live('write');
    if (this.readOnly) throw readOnlyError(this.name);
    checkArgs(this.name, 'write', offset, data.length);
    if (offset + data.length > this.bytes) throw writePastEnd(this.name, offset, data.length, this.bytes);
    const lost = this.lock?.compromised;
    if (lost) throw lost;
    const buf = asBuffer(data);
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = (await fh.write(buf, done, buf.length - done, offset + done)).bytesWritten;
      } catch (e) {
        throw fromNode(e, 'write', this.name, `write at offset ${offset + done}`);
      }
      if (n === 0) {
        throw new BtrfsError('EIO', `write at offset ${offset + done} made no progress`, { syscall: 'write', path: this.name });
      }
      done += n;
    }
  }

  async flush(): Promise<void> {
    const fh = this.live('flush');
    if (this.readOnly) return;
    try {
      await fh.datasync();
    } catch (e) {
      throw fromNode(e, 'fdatasync', this.name);
    }
  }

  async close(): Promise<void> {
    const fh = this.live('close');
    this.fh = undefined;
    try {
      await fh.close();
    } catch (e) {
      await this.lock?.release().catch(() => undefined);
      throw fromNode(e, 'close', this.name);
    }
    await this.lock?.release();
  }

  private live(op: string): fsp.FileHandle {
    if (!this.fh) throw closedError(this.name, op);
    return this.fh;
  }
}
