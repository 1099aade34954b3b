/**
 * The host side of an import, in a worker thread: walking the source trees,
 * lstat, xattrs, link targets, and reading file data with its checksums.
 * Reading the host is mostly system calls and checksumming, the engine on
 * the main thread mostly tree work; on two cores they overlap, where in one
 * thread each waited for the other. The walk (readdir, lstat, xattrs) uses
 * synchronous calls: this thread has nothing else to do, and they cost a
 * fraction of the promise machinery. Small files' data is read through
 * libuv's pool, several parts ahead, because a cold disk serves a few
 * requests at once much faster than one after another.
 *
 * Order, which the main thread relies on: each root job in turn; a
 * directory's entries in sorted name order, in one or more parts (the last
 * one `final`); then its subdirectories the same way, depth first. A big
 * file's data follows the part it is the last entry of, as chunks. Hard
 * links after the first name of an inode carry `linkOf` and no data.
 *
 * Memory is bounded: the worker waits while more than `budgetKiB` of data it
 * sent has not been released by the main thread (a shared counter), and
 * reads at most AHEAD_BYTES ahead of what it sent.
 *
 * The same file is the worker's body when loaded as a worker.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isMainThread, parentPort, workerData, Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { checksum, crc32c, initChecksums, CSUM_TYPE } from '../util/checksum.js';
import * as host from '../util/host.js';

export interface ReaderRoot {
  /** host directory to list */
  dir: string;
  /** list only this name of it (an import of one entry), else every name */
  only?: string;
}

export interface ReaderJob {
  kind: 'tsbtrfs-import-reader';
  roots: ReaderRoot[];
  /** files up to this size travel whole in a part; larger ones as chunks */
  smallMax: number;
  /** files up to this size become inline extents: data sent as is, no checksums */
  inlineMax: number;
  sectorsize: number;
  csumType: number;
  csumSize: number;
  xattrs: boolean;
  budgetKiB: number;
  /** Int32Array over a SharedArrayBuffer: [0] KiB sent and not yet released */
  shared: SharedArrayBuffer;
}

export interface ReaderEntry {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  rdev: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  /** hard link: the `dev:ino` id of an inode sent earlier under another name */
  linkOf?: string;
  /** `dev:ino` when nlink > 1 (later names of it come as linkOf) */
  linkId?: string;
  xattrs?: [string, Buffer][];
  warnings?: string[];
  target?: Buffer;
  /** inline files: the data */
  inline?: Buffer;
  /** small files: [offset, length) of the sector-padded data in the part's `data` */
  at?: number;
  /** chunks follow (size > smallMax) */
  big?: boolean;
  /** holes on the host: the main thread copies it sector by sector itself */
  sparse?: boolean;
}

export interface ReaderPart {
  type: 'part';
  /** host path of the directory listed */
  dir: string;
  /** the index of the root job this listing is (absent for the directories below) */
  root?: number;
  entries: ReaderEntry[];
  /** packed sector-padded data of small files, and their checksums */
  data?: Buffer;
  csums?: Buffer;
  /** KiB to release once consumed */
  kib: number;
  final: boolean;
}

export interface ReaderChunk {
  type: 'chunk';
  /** sector-padded; `bytes` of it are the file's */
  data: Buffer;
  csums: Buffer;
  bytes: number;
  last: boolean;
  kib: number;
}

export type ReaderMessage = ReaderPart | ReaderChunk | { type: 'done' } | { type: 'error'; code?: string; message: string; path?: string };

const PART_BYTES = 4 * 1024 * 1024;
const PART_ENTRIES = 2000;
const CHUNK = 8 * 1024 * 1024;
/** parts being read at once: small files are read in parallel, which a cold disk rewards */
const AHEAD_PARTS = 16;
const AHEAD_BYTES = 16 * 1024 * 1024;
/** files being read at once: each holds a descriptor while its reads wait in the pool */
const OPEN_FILES = 64;

/** Reads up to `len` bytes of a file into buf at `off` (libuv's pool); the number read, less at its end. */
function readInto(p: string, buf: Buffer, off: number, len: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.open(p, 'r', (err, fd) => {
      if (err) return reject(err);
      let done = 0;
      const step = (): void => {
        fs.read(fd, buf, off + done, len - done, done, (e, n) => {
          if (!e && n > 0 && done + n < len) {
            done += n;
            return step();
          }
          if (!e) done += n;
          fs.close(fd, () => (e ? reject(e) : resolve(done)));
        });
      };
      step();
    });
  });
}

/** A part whose files are being read; posted once they are, in the order parts were made. */
interface Pending { m: ReaderPart; data?: Buffer; ready: Promise<unknown>; bytes: number }

class Walker {
  private readonly counter: Int32Array;
  private readonly links = new Set<string>();
  private readonly ahead: Pending[] = [];
  private aheadBytes = 0;
  private openFiles = 0;
  private readonly waitingToOpen: (() => void)[] = [];

  constructor(private readonly job: ReaderJob, private readonly post: (m: ReaderMessage, transfer?: ArrayBuffer[]) => void) {
    this.counter = new Int32Array(job.shared);
  }

  /** Blocks while the main thread holds more than the budget, then counts `kib` as sent. */
  private reserve(kib: number): void {
    for (;;) {
      const cur = Atomics.load(this.counter, 0);
      if (cur === 0 || cur + kib <= this.job.budgetKiB) break;
      Atomics.wait(this.counter, 0, cur, 1000);
    }
    Atomics.add(this.counter, 0, kib);
  }

  private sums(buf: Buffer, len: number): Buffer {
    const { sectorsize: sec, csumSize: cs, csumType } = this.job;
    const n = len / sec;
    const out = Buffer.alloc(n * cs);
    for (let i = 0; i < n; i++) {
      const s = buf.subarray(i * sec, (i + 1) * sec);
      if (csumType === CSUM_TYPE.CRC32) out.writeUInt32LE(crc32c(s), i * cs);
      else checksum(csumType, s).copy(out, i * cs, 0, cs);
    }
    return out;
  }

  /** readInto, at most OPEN_FILES at a time (a slot passes straight to the next waiter). */
  private async read(p: string, buf: Buffer, off: number, len: number): Promise<number> {
    if (this.openFiles < OPEN_FILES) this.openFiles++;
    else await new Promise<void>((resolve) => this.waitingToOpen.push(resolve));
    try {
      return await readInto(p, buf, off, len);
    } finally {
      const next = this.waitingToOpen.shift();
      if (next) next();
      else this.openFiles--;
    }
  }

  async run(): Promise<void> {
    for (const [i, r] of this.job.roots.entries()) {
      const stack: string[] = [];
      await this.list(r.dir, r.only, stack, i);
      while (stack.length) await this.list(stack.pop()!, undefined, stack);
    }
    await this.drain(0, 0);
    this.post({ type: 'done' });
  }

  /** Posts the oldest pending parts, waiting for their reads, until at most `parts` and `bytes` remain. */
  private async drain(parts: number, bytes: number): Promise<void> {
    while (this.ahead.length > parts || (this.ahead.length > 0 && this.aheadBytes > bytes)) {
      const p = this.ahead.shift()!;
      await p.ready;
      this.aheadBytes -= p.bytes;
      if (p.data) p.m.csums = this.sums(p.data, p.data.length);
      this.reserve(p.m.kib);
      this.post(p.m, p.data ? [p.data.buffer as ArrayBuffer] : undefined);
    }
  }

  /**
   * One directory: its parts (and big files' chunks); its subdirectories
   * pushed for later, first on top. Every entry is stat'ed before any data
   * is read, so each part's data buffer is allocated at its exact size.
   */
  private async list(dir: string, only: string | undefined, stack: string[], root?: number): Promise<void> {
    const names = only !== undefined ? [only] : fs.readdirSync(dir).sort();
    const subdirs: string[] = [];
    const sec = this.job.sectorsize;
    const all = names.map((name) => this.describe(dir, name, subdirs));
    const padded = (e: ReaderEntry): number => (e.at !== undefined ? Math.ceil(e.size / sec) * sec : 0);
    for (let i = 0; ;) {
      // a part: up to PART_ENTRIES entries and PART_BYTES of data, ending early after a big file
      let j = i;
      let bytes = 0;
      while (j < all.length && j - i < PART_ENTRIES) {
        const n = padded(all[j]!);
        if (j > i && bytes + n > PART_BYTES) break;
        bytes += n;
        if (all[j++]!.big) break;
      }
      const entries = all.slice(i, j);
      const m: ReaderPart = { type: 'part', dir, entries, kib: Math.ceil(bytes / 1024), final: j >= all.length };
      if (root !== undefined) m.root = root;
      // every byte of it is written: file data, then zeros to the sector
      const data = bytes > 0 ? Buffer.allocUnsafeSlow(bytes) : undefined;
      if (data) m.data = data;
      const reads: Promise<unknown>[] = [];
      let fill = 0;
      for (const e of entries) {
        const p = path.join(dir, e.name);
        if (e.inline) {
          const buf = e.inline;
          // a file that shrank since lstat: what was read is the file
          reads.push(this.read(p, buf, 0, buf.length).then((got) => { e.inline = buf.subarray(0, got); e.size = got; }));
        } else if (e.at !== undefined) {
          const at = fill;
          const want = padded(e);
          e.at = at;
          fill += want;
          reads.push(this.read(p, data!, at, e.size).then((got) => { e.size = got; data!.fill(0, at + got, at + want); }));
        }
      }
      const ready = Promise.all(reads);
      // a failure shows when the part's turn comes, not as an unhandled rejection
      ready.catch(() => undefined);
      this.ahead.push({ m, data, ready, bytes });
      this.aheadBytes += bytes;
      const last = entries[entries.length - 1];
      if (last?.big) {
        await this.drain(0, 0);
        this.stream(path.join(dir, last.name));
      } else {
        await this.drain(AHEAD_PARTS, AHEAD_BYTES);
      }
      i = j;
      if (j >= all.length) break;
    }
    for (let k = subdirs.length - 1; k >= 0; k--) stack.push(subdirs[k]!);
  }

  /** An entry's metadata and symlink target; inline files get their buffer, small files `at` (placed when their part is made). */
  private describe(dir: string, name: string, subdirs: string[]): ReaderEntry {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p, { bigint: true });
    const e: ReaderEntry = {
      name, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: Number(st.size), rdev: Number(st.rdev),
      atimeNs: st.atimeNs, mtimeNs: st.mtimeNs,
    };
    const isDir = st.isDirectory();
    if (!isDir && st.nlink > 1n) {
      const id = `${st.dev}:${st.ino}`;
      if (this.links.has(id)) {
        e.linkOf = id;
        return e;
      }
      this.links.add(id);
      e.linkId = id;
    }
    if (this.job.xattrs) this.readXattrs(p, e);
    if (isDir) {
      subdirs.push(p);
    } else if (st.isSymbolicLink()) {
      e.target = fs.readlinkSync(p, { encoding: 'buffer' });
    } else if (st.isFile() && e.size > 0) {
      if (st.blocks * 512n < st.size) e.sparse = true;
      // its own small ArrayBuffer: a view of a pooled one would be cloned whole
      else if (e.size <= this.job.inlineMax) e.inline = Buffer.alloc(e.size);
      else if (e.size <= this.job.smallMax) e.at = 0;
      else e.big = true;
    }
    return e;
  }

  private readXattrs(p: string, e: ReaderEntry): void {
    for (const name of host.llistxattr(p)) {
      // of system.* only POSIX ACLs are stored (as the kernel stores them)
      if (name.startsWith('system.') && name !== 'system.posix_acl_access' && name !== 'system.posix_acl_default') {
        (e.warnings ??= []).push(`${p}: xattr ${name} not copied`);
        continue;
      }
      (e.xattrs ??= []).push([name, host.lgetxattr(p, name)]);
    }
  }

  /** A big file's data to its end, as sector-padded chunks (sequential: the kernel reads ahead). */
  private stream(p: string): void {
    const sec = this.job.sectorsize;
    const fd = fs.openSync(p, 'r');
    try {
      let pos = 0;
      for (;;) {
        const buf = Buffer.allocUnsafeSlow(CHUNK);
        let got = 0;
        while (got < CHUNK) {
          const n = fs.readSync(fd, buf, got, CHUNK - got, pos + got);
          if (n === 0) break;
          got += n;
        }
        pos += got;
        const last = got < CHUNK;
        const padded = Math.ceil(got / sec) * sec;
        buf.fill(0, got, padded);
        const kib = CHUNK >> 10;
        const m: ReaderChunk = { type: 'chunk', data: buf.subarray(0, padded), csums: this.sums(buf, padded), bytes: got, last, kib };
        this.reserve(kib);
        this.post(m, [buf.buffer as ArrayBuffer]);
        if (last) return;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
}

async function work(job: ReaderJob): Promise<void> {
  if (job.csumType === CSUM_TYPE.XXHASH) await initChecksums();
  const port = parentPort!;
  await new Walker(job, (m, t) => port.postMessage(m, t)).run();
}

if (!isMainThread && parentPort && (workerData as ReaderJob | undefined)?.kind === 'tsbtrfs-import-reader') {
  const port = parentPort;
  work(workerData as ReaderJob).catch((e: unknown) => {
    const err = e as NodeJS.ErrnoException & { path?: string; code?: string };
    port.postMessage({ type: 'error', code: typeof err?.code === 'string' ? err.code : undefined, message: err?.message ?? String(e), path: err?.path } satisfies ReaderMessage);
  });
}

/** Messages of a reader, in order, one at a time. */
export class HostReader {
  private readonly worker: Worker;
  private readonly queue: ReaderMessage[] = [];
  private waiting: ((m: ReaderMessage) => void) | undefined;
  private readonly counter: Int32Array;
  private stopped = false;

  constructor(job: Omit<ReaderJob, 'kind' | 'shared'>) {
    const shared = new SharedArrayBuffer(4);
    this.counter = new Int32Array(shared);
    this.worker = new Worker(fileURLToPath(import.meta.url), { workerData: { ...job, kind: 'tsbtrfs-import-reader', shared } satisfies ReaderJob });
    const deliver = (m: ReaderMessage): void => {
      const w = this.waiting;
      if (w) {
        this.waiting = undefined;
        w(m);
      } else {
        this.queue.push(m);
      }
    };
    this.worker.on('message', deliver);
    this.worker.on('error', (e) => deliver({ type: 'error', message: e.message }));
    this.worker.on('exit', (code) => { if (!this.stopped) deliver({ type: 'error', message: `import reader exited with code ${code}` }); });
  }

  next(): Promise<ReaderMessage> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve) => { this.waiting = resolve; });
  }

  /** The data of a message is consumed: the reader may send that much more. */
  release(kib: number): void {
    if (kib <= 0) return;
    Atomics.sub(this.counter, 0, kib);
    Atomics.notify(this.counter, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.worker.terminate();
  }
}
