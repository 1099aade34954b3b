/**
 * The sending end of a stream: typed commands in, bytes out to a Node
 * writable, with backpressure. Commands are gathered into batches of about
 * a megabyte so a small command does not cost one write() each; when the
 * consumer's buffer is full the sender waits for 'drain'. A consumer that
 * errors or closes before the END makes every later call fail, so the
 * caller stops at once instead of computing a stream nobody reads.
 *
 * Attribute order follows the kernel's for each command; receivers do not
 * depend on it, but dumps compare line for line.
 */
import { BtrfsError } from '../util/errors.js';
import { CommandBuilder, encodeStreamHeader, SEND_CMD, SEND_ATTR, sendCmdName } from '../format/send-stream.js';
import type { Timespec } from '../format/layout.js';

const BATCH_BYTES = 1 << 20;
/** Commands at least this large go out on their own. */
const BIG_COMMAND = 32 * 1024;
/** Bytes the consumer may hold unwritten before the sender waits for it. */
const MAX_AHEAD = 4 << 20;

/** What a send did, for callers and benchmarks. */
export interface SendStats {
  /** bytes written to the output, stream header included */
  bytes: number;
  commands: number;
  /** per command name ('write', 'clone', ...) */
  commandCounts: Record<string, number>;
  /** file bytes carried by WRITE commands */
  dataBytes: number;
  /** file bytes referenced by CLONE commands instead of being sent */
  cloneBytes: number;
  /** inodes whose contents or attributes were sent */
  inodes: number;
  /** tree blocks read while comparing the two trees (incremental sends) */
  diffBlocks: number;
  /** subtrees the comparison skipped because both trees share them */
  sharedSubtrees: number;
  /** time spent finding what differs, emitting name changes, emitting contents (ms) */
  phases: { changes: number; names: number; contents: number };
  elapsedMs: number;
}

export function emptyStats(): SendStats {
  return {
    bytes: 0, commands: 0, commandCounts: {}, dataBytes: 0, cloneBytes: 0, inodes: 0, diffBlocks: 0, sharedSubtrees: 0,
    phases: { changes: 0, names: 0, contents: 0 }, elapsedMs: 0,
  };
}

/** Linux's new_encode_dev of the kernel dev_t btrfs stores (major << 20 | minor): the user-space dev_t receivers pass to mknod. */
export function encodeRdev(rdev: bigint): bigint {
  const major = (rdev >> 20n) & 0xfffn;
  const minor = rdev & 0xfffffn;
  return (minor & 0xffn) | (major << 8n) | ((minor & ~0xffn) << 12n);
}

export class StreamWriter {
  private readonly b: CommandBuilder;
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private failure: Error | undefined;
  private finished = false;
  private readonly onError = (e: Error): void => {
    this.failure ??= new BtrfsError('EIO', `send stream consumer failed: ${e.message}`, { cause: e });
  };
  private readonly onClose = (): void => {
    if (!this.finished) this.failure ??= new BtrfsError('EIO', 'send stream consumer closed before the end of the stream');
  };

  constructor(private readonly out: NodeJS.WritableStream, readonly version: number, readonly stats: SendStats) {
    this.b = new CommandBuilder(version);
    out.on('error', this.onError);
    out.on('close', this.onClose);
  }

  /** Throws if the consumer is gone (so long computations stop early). */
  check(): void {
    const w = this.out as NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean; errored?: Error | null };
    // a write that failed marks the stream errored at once; its 'error' event comes a tick later
    if (w.errored) this.onError(w.errored);
    if (this.failure) throw this.failure;
    if (w.destroyed || w.writableEnded) {
      this.failure = new BtrfsError('EIO', 'send stream consumer closed before the end of the stream');
      throw this.failure;
    }
  }

  private async push(buf: Buffer): Promise<void> {
    this.stats.bytes += buf.length;
    this.batch.push(buf);
    this.batchBytes += buf.length;
    if (this.batchBytes >= BATCH_BYTES) await this.flush();
  }

  /**
   * Hands the batch to the consumer. Small commands are joined into one
   * buffer; large ones (file data) are passed as they are, corked, so a
   * consumer with writev (files, pipes) takes the batch in one call without
   * the data being copied again.
   */
  async flush(): Promise<void> {
    this.check();
    if (this.batchBytes === 0) return;
    const parts: Buffer[] = [];
    let small: Buffer[] = [];
    let smallBytes = 0;
    const joinSmall = (): void => {
      if (small.length) parts.push(small.length === 1 ? small[0]! : Buffer.concat(small, smallBytes));
      small = [];
      smallBytes = 0;
    };
    for (const b of this.batch) {
      if (b.length >= BIG_COMMAND) {
        joinSmall();
        parts.push(b);
      } else {
        small.push(b);
        smallBytes += b.length;
      }
    }
    joinSmall();
    this.batch = [];
    this.batchBytes = 0;
    const w = this.out as NodeJS.WritableStream & { cork?: () => void; uncork?: () => void };
    let ok = true;
    try {
      if (parts.length > 1) w.cork?.();
      for (const p of parts) ok = this.out.write(p);
      if (parts.length > 1) w.uncork?.();
    } catch (e) {
      this.onError(e as Error);
      throw this.failure;
    }
    // a little more than the consumer asked for keeps reading and encoding going while it writes
    const buffered = (this.out as NodeJS.WritableStream & { writableLength?: number }).writableLength;
    if (!ok && (buffered === undefined || buffered > MAX_AHEAD)) await this.drain();
    this.check();
  }

  private drain(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        this.out.off('drain', onDrain);
        this.out.off('error', onFail);
        this.out.off('close', onFail);
      };
      const onDrain = (): void => {
        done();
        resolve();
      };
      const onFail = (): void => {
        done();
        // the permanent listeners have recorded why
        setImmediate(() => reject(this.failure ?? new BtrfsError('EIO', 'send stream consumer closed before the end of the stream')));
      };
      this.out.on('drain', onDrain);
      this.out.on('error', onFail);
      this.out.on('close', onFail);
    });
  }

  async header(): Promise<void> {
    await this.push(encodeStreamHeader(this.version));
  }

  private async send(cmd: number): Promise<void> {
    // file data stays the buffer it was read into: the consumer gets it without a copy
    const parts = this.b.endParts();
    this.stats.commands++;
    const name = sendCmdName(cmd);
    this.stats.commandCounts[name] = (this.stats.commandCounts[name] ?? 0) + 1;
    for (const buf of parts) await this.push(buf);
  }

  /**
   * Ends the stream: flushes, then (with `end`) ends the writable and waits
   * until everything was handed to the consumer.
   */
  async close(end: boolean): Promise<void> {
    await this.flush();
    this.finished = true;
    if (end) {
      await new Promise<void>((resolve, reject) => {
        const w = this.out as NodeJS.WritableStream & { writableFinished?: boolean };
        const onErr = (e: Error): void => reject(new BtrfsError('EIO', `send stream consumer failed: ${e.message}`, { cause: e }));
        this.out.once('error', onErr);
        // end's callback is given the consumer's error (before the 'error' event) when a last write failed
        (this.out.end as (cb: (err?: Error | null) => void) => void)((err) => {
          this.out.off('error', onErr);
          if (err) onErr(err);
          else resolve();
        });
        if (w.writableFinished) resolve();
      });
    }
  }

  /** Stops listening to the output (on every exit path). */
  detach(): void {
    this.out.off('error', this.onError);
    this.out.off('close', this.onClose);
    // a failed consumer's 'error' event may still be on its way: send already reported it as EIO
    if ((this.out as NodeJS.WritableStream & { errored?: Error | null }).errored) this.out.once('error', () => undefined);
  }

  // ---------------------------------------------------------------- commands

  async subvol(name: Buffer, uuid: Buffer, ctransid: bigint): Promise<void> {
    this.b.begin(SEND_CMD.SUBVOL).string(SEND_ATTR.PATH, name).uuid(SEND_ATTR.UUID, uuid).u64(SEND_ATTR.CTRANSID, ctransid);
    await this.send(SEND_CMD.SUBVOL);
  }

  async snapshot(name: Buffer, uuid: Buffer, ctransid: bigint, parentUuid: Buffer, parentCtransid: bigint): Promise<void> {
    this.b.begin(SEND_CMD.SNAPSHOT).string(SEND_ATTR.PATH, name).uuid(SEND_ATTR.UUID, uuid).u64(SEND_ATTR.CTRANSID, ctransid)
      .uuid(SEND_ATTR.CLONE_UUID, parentUuid).u64(SEND_ATTR.CLONE_CTRANSID, parentCtransid);
    await this.send(SEND_CMD.SNAPSHOT);
  }

  /** MKFILE, MKDIR, MKFIFO or MKSOCK. */
  async make(cmd: number, path: Buffer, ino: bigint): Promise<void> {
    this.b.begin(cmd).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.INO, ino);
    await this.send(cmd);
  }

  async mknod(path: Buffer, ino: bigint, mode: number, rdev: bigint): Promise<void> {
    this.b.begin(SEND_CMD.MKNOD).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.INO, ino).u64(SEND_ATTR.MODE, mode).u64(SEND_ATTR.RDEV, encodeRdev(rdev));
    await this.send(SEND_CMD.MKNOD);
  }

  async symlink(path: Buffer, ino: bigint, target: Buffer): Promise<void> {
    this.b.begin(SEND_CMD.SYMLINK).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.INO, ino).string(SEND_ATTR.PATH_LINK, target);
    await this.send(SEND_CMD.SYMLINK);
  }

  async rename(from: Buffer, to: Buffer): Promise<void> {
    this.b.begin(SEND_CMD.RENAME).string(SEND_ATTR.PATH, from).string(SEND_ATTR.PATH_TO, to);
    await this.send(SEND_CMD.RENAME);
  }

  /** A new name `path` for the file now at `existing`. */
  async link(path: Buffer, existing: Buffer): Promise<void> {
    this.b.begin(SEND_CMD.LINK).string(SEND_ATTR.PATH, path).string(SEND_ATTR.PATH_LINK, existing);
    await this.send(SEND_CMD.LINK);
  }

  async unlink(path: Buffer): Promise<void> {
    this.b.begin(SEND_CMD.UNLINK).string(SEND_ATTR.PATH, path);
    await this.send(SEND_CMD.UNLINK);
  }

  async rmdir(path: Buffer): Promise<void> {
    this.b.begin(SEND_CMD.RMDIR).string(SEND_ATTR.PATH, path);
    await this.send(SEND_CMD.RMDIR);
  }

  async setXattr(path: Buffer, name: Buffer, value: Buffer): Promise<void> {
    this.b.begin(SEND_CMD.SET_XATTR).string(SEND_ATTR.PATH, path).string(SEND_ATTR.XATTR_NAME, name).bytes(SEND_ATTR.XATTR_DATA, value);
    await this.send(SEND_CMD.SET_XATTR);
  }

  async removeXattr(path: Buffer, name: Buffer): Promise<void> {
    this.b.begin(SEND_CMD.REMOVE_XATTR).string(SEND_ATTR.PATH, path).string(SEND_ATTR.XATTR_NAME, name);
    await this.send(SEND_CMD.REMOVE_XATTR);
  }

  async write(path: Buffer, offset: number, data: Buffer): Promise<void> {
    this.b.begin(SEND_CMD.WRITE).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.FILE_OFFSET, offset).data(SEND_ATTR.DATA, data);
    this.stats.dataBytes += data.length;
    await this.send(SEND_CMD.WRITE);
  }

  async clone(path: Buffer, offset: number, len: number, src: { uuid: Buffer; ctransid: bigint; path: Buffer; offset: number }): Promise<void> {
    this.b.begin(SEND_CMD.CLONE).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.FILE_OFFSET, offset).u64(SEND_ATTR.CLONE_LEN, len)
      .uuid(SEND_ATTR.CLONE_UUID, src.uuid).u64(SEND_ATTR.CLONE_CTRANSID, src.ctransid)
      .string(SEND_ATTR.CLONE_PATH, src.path).u64(SEND_ATTR.CLONE_OFFSET, src.offset);
    this.stats.cloneBytes += len;
    await this.send(SEND_CMD.CLONE);
  }

  async truncate(path: Buffer, size: bigint): Promise<void> {
    this.b.begin(SEND_CMD.TRUNCATE).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.SIZE, size);
    await this.send(SEND_CMD.TRUNCATE);
  }

  async chmod(path: Buffer, mode: number): Promise<void> {
    this.b.begin(SEND_CMD.CHMOD).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.MODE, mode & 0o7777);
    await this.send(SEND_CMD.CHMOD);
  }

  async chown(path: Buffer, uid: number, gid: number): Promise<void> {
    this.b.begin(SEND_CMD.CHOWN).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.UID, uid).u64(SEND_ATTR.GID, gid);
    await this.send(SEND_CMD.CHOWN);
  }

  async utimes(path: Buffer, atime: Timespec, mtime: Timespec, ctime: Timespec): Promise<void> {
    this.b.begin(SEND_CMD.UTIMES).string(SEND_ATTR.PATH, path).timespec(SEND_ATTR.ATIME, atime)
      .timespec(SEND_ATTR.MTIME, mtime).timespec(SEND_ATTR.CTIME, ctime);
    await this.send(SEND_CMD.UTIMES);
  }

  async updateExtent(path: Buffer, offset: number, size: number): Promise<void> {
    this.b.begin(SEND_CMD.UPDATE_EXTENT).string(SEND_ATTR.PATH, path).u64(SEND_ATTR.FILE_OFFSET, offset).u64(SEND_ATTR.SIZE, size);
    await this.send(SEND_CMD.UPDATE_EXTENT);
  }

  async fallocate(path: Buffer, mode: number, offset: number, size: number): Promise<void> {
    this.b.begin(SEND_CMD.FALLOCATE).string(SEND_ATTR.PATH, path).u32(SEND_ATTR.FALLOCATE_MODE, mode)
      .u64(SEND_ATTR.FILE_OFFSET, offset).u64(SEND_ATTR.SIZE, size);
    await this.send(SEND_CMD.FALLOCATE);
  }

  async end(): Promise<void> {
    this.b.begin(SEND_CMD.END);
    await this.send(SEND_CMD.END);
  }
}
