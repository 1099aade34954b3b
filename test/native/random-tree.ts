/**
 * Random btrfs trees made by the real kernel, reproducible from a seed.
 *
 * `planImage(rng)` picks mkfs.btrfs arguments, an image size and mount
 * options; `TreeGenerator.build()` then fills a mounted (subvolid=5, rw)
 * image with a random tree and random changes, in rounds:
 *
 *   (maybe quota enable) populate the top level (files of 0..3 MiB with
 *   random/text/zero/mixed data, inline-limit sizes, sparse files, NOCOW
 *   files, dirs, symlinks of all sorts, hard links, fifos, sockets, devices,
 *   random modes incl. suid/sgid/sticky, owners, user./trusted. xattrs with
 *   binary values, ACLs, the btrfs.compression property, unicode and 255-byte
 *   names, a big directory, an inode with INODE_EXTREFs) + random subvolumes
 *   (some nested) -> retime (random ns atime/mtime) -> sync
 *   then 2..3 rounds: snapshots (ro/rw, of subvolumes and of the top level)
 *                    -> random changes (overwrite, append, truncate both ways,
 *                       delete, rename, reflink copies and clone ranges,
 *                       fallocate, punch/zero holes, hard links, chmod/chown,
 *                       xattrs, new/deleted/renamed subvolumes, defrag, rmdir
 *                       of snapshot placeholders)
 *                    -> maybe: remount with another compression, send |
 *                       receive (received uuid), full balance, set-default
 *                    -> retime -> sync
 *
 * Contents come from the seeded PRNG, so a seed reproduces the same sequence
 * of operations (inode numbers, subvolume ids and "now" times are the
 * kernel's). Everything done is logged (`gen.log`) for reproducing a failure
 * by hand.
 *
 * Special operations Node has no API for (mknod of devices/fifos/sockets,
 * nanosecond utimensat, binary xattrs, FICLONERANGE) go through one small
 * python3 helper per batch; fallocate, cp --reflink, setfacl, chattr and the
 * btrfs tool are the real command line tools.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { run, runOk } from '../helpers/kernel.js';

// ------------------------------------------------------------------ PRNG

/** sfc32 seeded through splitmix32: small, fast and good enough for test data. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    let s = seed >>> 0;
    const sm = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = sm();
    this.b = sm();
    this.c = sm();
    this.d = sm();
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** [0, 1) */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** integer in [lo, hi] (inclusive) */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(a: readonly T[]): T {
    if (a.length === 0) throw new Error('pick from an empty list');
    return a[Math.floor(this.float() * a.length)]!;
  }

  /** pick by weight: [[weight, value], ...] */
  weighted<T>(choices: ReadonlyArray<readonly [number, T]>): T {
    const total = choices.reduce((s, [w]) => s + w, 0);
    let x = this.float() * total;
    for (const [w, v] of choices) {
      if (x < w) return v;
      x -= w;
    }
    return choices[choices.length - 1]![1];
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) b.writeUInt32LE(this.u32(), i);
    if (i < n) {
      const last = this.u32();
      for (let k = 0; i < n; i++, k++) b[i] = (last >>> (8 * k)) & 0xff;
    }
    return b;
  }
}

/** Seeds for this run: TSBTRFS_SEED="123" or "1,2,3" reproduces; otherwise `count` fresh ones. */
export function seedsFromEnv(count: number): number[] {
  const env = process.env.TSBTRFS_SEED;
  if (env && env.trim() !== '') {
    return env.split(',').map((s) => {
      const n = Number(s.trim());
      if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`TSBTRFS_SEED: bad seed ${JSON.stringify(s)}`);
      return n;
    });
  }
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(Math.floor(Math.random() * 0x7fffffff) + 1);
  return out;
}

// ------------------------------------------------------------------ contents

export type ContentKind = 'random' | 'text' | 'zeros' | 'mixed';

const WORDS = ['btrfs', 'extent', 'inode', 'tree', 'leaf', 'node', 'csum', 'chunk', 'stripe', 'subvol', 'snapshot', 'the', 'quick', 'brown', 'fox', 'lorem', 'ipsum', '\n', '0123456789', 'zstd', 'lzo', 'zlib'];

/** n bytes of the given kind (random: incompressible; text: very compressible; mixed: 4 KiB blocks of each). */
export function makeContent(rng: Rng, n: number, kind: ContentKind = rng.pick(['random', 'text', 'zeros', 'mixed'] as const)): Buffer {
  if (n <= 0) return Buffer.alloc(0);
  switch (kind) {
    case 'random':
      return rng.bytes(n);
    case 'zeros':
      return Buffer.alloc(n);
    case 'text': {
      // a short random phrase repeated with variations: compresses well but is not trivial
      const phrase = Array.from({ length: rng.int(3, 12) }, () => rng.pick(WORDS)).join(' ') + ` ${rng.u32()}\n`;
      const out = Buffer.allocUnsafe(n);
      let off = 0;
      let line = 0;
      while (off < n) {
        const s = Buffer.from(`${line++}: ${phrase}`);
        off += s.copy(out, off, 0, Math.min(s.length, n - off));
      }
      return out;
    }
    case 'mixed': {
      const parts: Buffer[] = [];
      let left = n;
      while (left > 0) {
        const len = Math.min(left, rng.pick([512, 4096, 4096, 8192, 65536, 131072]));
        parts.push(makeContent(rng, len, rng.pick(['random', 'text', 'zeros'] as const)));
        left -= len;
      }
      return Buffer.concat(parts);
    }
  }
}

// ------------------------------------------------------------------ image plan

export interface ImagePlan {
  /** extra mkfs.btrfs arguments */
  mkfsArgs: string[];
  sizeBytes: number;
  /** mount options while populating (later rounds may remount with others) */
  mountOptions: string[];
  /** upper bound on data bytes written by the generator */
  dataBudget: number;
  mixed: boolean;
  nodesize: number;
  sectorsize: number;
  describe: string;
}

const COMPRESS = ['none', 'compress-force=zlib', 'compress-force=lzo', 'compress-force=zstd', 'compress-force=zstd:9', 'compress-force=zlib:9', 'compress=zstd', 'compress=lzo'] as const;

export function randomCompression(rng: Rng): string | undefined {
  const c = rng.pick(COMPRESS);
  return c === 'none' ? undefined : c;
}

export function planImage(rng: Rng): ImagePlan {
  const variant = rng.weighted([
    [3, 'default'],
    [2, 'n4096'],
    [1, 'n16384-xxhash'],
    [1, 'xxhash'],
    [1, 'sha256'],
    [1, 'blake2'],
    [1, 'single'],
    [2, 'mixed'],
    [1, 'no-holes-off'],
  ] as const);
  const mkfsArgs: string[] = [];
  let sizeBytes = rng.int(160, 256) * 1024 * 1024;
  let dataBudget = 28 << 20;
  let mixed = false;
  let nodesize = 16384;
  switch (variant) {
    case 'default': break;
    case 'n4096': mkfsArgs.push('-n', '4096'); nodesize = 4096; break;
    case 'n16384-xxhash': mkfsArgs.push('-n', '16384', '--csum', 'xxhash'); break;
    case 'xxhash': mkfsArgs.push('--csum', 'xxhash'); break;
    case 'sha256': mkfsArgs.push('--csum', 'sha256'); break;
    case 'blake2': mkfsArgs.push('--csum', 'blake2'); break;
    case 'single': mkfsArgs.push('-m', 'single'); break;
    case 'mixed':
      mkfsArgs.push('--mixed');
      mixed = true;
      nodesize = 4096;
      sizeBytes = 64 << 20;
      dataBudget = 10 << 20;
      break;
    case 'no-holes-off': mkfsArgs.push('-O', '^no-holes'); break;
  }
  const mountOptions: string[] = [];
  const comp = randomCompression(rng);
  if (comp) mountOptions.push(comp);
  if (rng.chance(0.2)) mountOptions.push(`max_inline=${rng.pick([0, 100, 1024, 2048, 3000])}`);
  if (rng.chance(0.1)) mountOptions.push('nodatasum');
  return {
    mkfsArgs, sizeBytes, mountOptions, dataBudget, mixed, nodesize, sectorsize: 4096,
    describe: `mkfs [${mkfsArgs.join(' ') || 'default'}] ${Math.round(sizeBytes / 1048576)} MiB, mount -o ${mountOptions.join(',') || 'defaults'}`,
  };
}

// ------------------------------------------------------------------ names

const UNI = ['ü', 'é', 'ß', 'Ω', 'λ', '日本', '語', 'ç', 'ñ', '中文', '한', '🙂', 'ア', 'Ø'];
const PUNCT = [' ', '-', '_', '.', '#', '+', ',', '~', '@', '%', '(', ')', '[', ']', "'", '!', '&'];

function randomName(rng: Rng): string {
  const style = rng.weighted([
    [5, 'plain'], [2, 'ext'], [2, 'unicode'], [1, 'punct'], [1, 'long'], [1, 'longuni'], [1, 'dot'],
  ] as const);
  const plain = () => Array.from({ length: rng.int(1, 10) }, () => 'abcdefghijklmnopqrstuvwxyz0123456789'[rng.int(0, 35)]).join('');
  switch (style) {
    case 'plain': return plain();
    case 'ext': return `${plain()}.${rng.pick(['txt', 'bin', 'tar.gz', 'c', 'json', 'so.1'])}`;
    case 'unicode': return `${plain()}${rng.pick(UNI)}${rng.chance(0.5) ? rng.pick(UNI) : ''}`;
    case 'punct': return `${plain()}${rng.pick(PUNCT)}${plain()}`;
    case 'dot': return `.${plain()}`;
    case 'long': {
      const n = rng.int(200, 255);
      return Array.from({ length: n }, () => 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_'[rng.int(0, 52)]).join('');
    }
    case 'longuni': {
      let s = plain();
      while (Buffer.byteLength(s) < 240) s += rng.pick(UNI);
      while (Buffer.byteLength(s) > 255) s = [...s].slice(0, -1).join('');
      return s;
    }
  }
}

// ------------------------------------------------------------------ python helper

/**
 * Reads a JSON list of operations on stdin; paths are base64 of the raw
 * bytes. Ops marked soft may fail (reported on stdout, one JSON line each).
 */
const PY = String.raw`
import sys, os, json, base64, fcntl, struct
def P(s): return base64.b64decode(s)
out = []
for op in json.load(sys.stdin):
    k = op['op']
    try:
        p = P(op['path'])
        if k == 'mknod':
            os.mknod(p, op['mode'], os.makedev(op.get('major', 0), op.get('minor', 0)))
        elif k == 'chown':
            os.chown(p, op['uid'], op['gid'], follow_symlinks=False)
        elif k == 'chmod':
            os.chmod(p, op['mode'])
        elif k == 'utime':
            os.utime(p, ns=(int(op['atime']), int(op['mtime'])), follow_symlinks=False)
        elif k == 'setxattr':
            os.setxattr(p, P(op['name']), P(op['value']), follow_symlinks=False)
        elif k == 'rmxattr':
            os.removexattr(p, P(op['name']), follow_symlinks=False)
        elif k == 'clone':
            s = os.open(P(op['src']), os.O_RDONLY)
            d = os.open(p, os.O_RDWR)
            try:
                fcntl.ioctl(d, 0x4020940d, struct.pack('=qQQQ', s, op['soff'], op['len'], op['doff']))
            finally:
                os.close(s); os.close(d)
        else:
            raise Exception('unknown op ' + k)
        out.append({'ok': True})
    except OSError as e:
        if not op.get('soft'):
            sys.stderr.write('%s %r: %s\n' % (k, P(op['path']), e))
            sys.exit(1)
        out.append({'ok': False, 'err': e.strerror})
print(json.dumps(out))
`;

type PyOp =
  | { op: 'mknod'; path: string; mode: number; major?: number; minor?: number; soft?: boolean }
  | { op: 'chown'; path: string; uid: number; gid: number; soft?: boolean }
  | { op: 'chmod'; path: string; mode: number; soft?: boolean }
  | { op: 'utime'; path: string; atime: string; mtime: string; soft?: boolean }
  | { op: 'setxattr'; path: string; name: string; value: string; soft?: boolean }
  | { op: 'rmxattr'; path: string; name: string; soft?: boolean }
  | { op: 'clone'; path: string; src: string; soff: number; len: number; doff: number; soft?: boolean };

let python: Promise<string> | undefined;
/** The real python3 binary (a pyenv/asdf shim costs ~100 ms per start; the generator starts it often). */
function pythonExe(): Promise<string> {
  python ??= run('python3', ['-c', 'import sys; print(sys.executable)']).then((r) => {
    if (r.code !== 0) throw new Error(`python3 is needed by the random tree generator: ${r.output.trim()}`);
    return r.stdout.trim() || 'python3';
  });
  return python;
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

// ------------------------------------------------------------------ scanning

export type EntryType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev';

export interface Entry {
  path: string;
  type: EntryType;
  dev: bigint;
  ino: bigint;
  size: number;
  /** inside a read-only subvolume */
  ro: boolean;
  /** the kernel's stand-in for a subvolume not reachable here (directory with ino 2) */
  placeholder: boolean;
  /** root directory of a subvolume (or the mount root) */
  subvolRoot: boolean;
  /** directories: a subvolume root or placeholder somewhere below */
  hasSubvolBelow: boolean;
}

const S_IFIFO = 0o010000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFSOCK = 0o140000;

// ------------------------------------------------------------------ generator

export interface GeneratorOptions {
  /** bytes of file data the generator may write in all */
  dataBudget: number;
  sectorsize?: number;
  /** where to append the operation log (one line per operation) */
  logFile?: string;
}

export interface GenStats {
  files: number; dirs: number; symlinks: number; specials: number; hardlinks: number; xattrs: number;
  subvolumes: number; snapshots: number; changes: number; skipped: number; bytes: number;
}

export class TreeGenerator {
  readonly log: string[] = [];
  readonly stats: GenStats = { files: 0, dirs: 0, symlinks: 0, specials: 0, hardlinks: 0, xattrs: 0, subvolumes: 0, snapshots: 0, changes: 0, skipped: 0, bytes: 0 };
  private budget: number;
  private readonly sectorsize: number;
  private py: PyOp[] = [];
  /** read-only flag of subvolume roots by "dev:path" (anonymous devs are reused after a subvolume is deleted) */
  private roBySubvol = new Map<string, boolean>();
  private aclBudget = 4;
  private chattrBudget = 3;
  private defragBudget = 2;
  private noSpace = false;
  private scanned: Entry[] | undefined;
  private scanUses = 0;

  constructor(readonly mnt: string, readonly rng: Rng, readonly opts: GeneratorOptions) {
    this.budget = opts.dataBudget;
    this.sectorsize = opts.sectorsize ?? 4096;
  }

  private note(s: string): void {
    this.log.push(s);
  }

  private rel(p: string): string {
    return '/' + path.relative(this.mnt, p);
  }

  async flushLog(): Promise<void> {
    if (this.opts.logFile) await fsp.writeFile(this.opts.logFile, this.log.join('\n') + '\n');
  }

  // -------------------------------------------------------------- the whole scenario

  async build(): Promise<GenStats> {
    const rng = this.rng;
    try {
      if (rng.chance(0.2)) await this.sh('btrfs', ['quota', 'enable', this.mnt], true);
      await this.populate(this.mnt, 0, rng.int(6, 16));
      if (rng.chance(0.35)) await this.bigDir(this.mnt);
      if (rng.chance(0.3)) await this.manyLinks(this.mnt);
      const nsub = rng.int(1, 3);
      for (let i = 0; i < nsub; i++) await this.createSubvolume();
      if (rng.chance(0.7)) await this.createSubvolume(true);
      await this.retime(0.5);
      await this.sync();
      const rounds = rng.int(2, 3);
      for (let round = 0; round < rounds; round++) {
        this.note(`# round ${round}`);
        const nsnap = rng.int(1, 2);
        for (let i = 0; i < nsnap; i++) await this.snapshot();
        const nchg = rng.int(40, 80);
        for (let i = 0; i < nchg; i++) await this.change();
        await this.flushPy();
        if (rng.chance(0.3)) await this.remount();
        if (rng.chance(0.35)) await this.sendReceive();
        if (rng.chance(0.25)) await this.balance();
        if (rng.chance(0.25)) await this.setDefault();
        await this.retime(0.3);
        await this.sync();
      }
      if (rng.chance(0.5)) await this.snapshot();
      await this.retime(0.2);
      await this.sync();
      return this.stats;
    } finally {
      await this.flushLog();
    }
  }

  // -------------------------------------------------------------- helpers

  private async sh(cmd: string, args: string[], soft = false): Promise<boolean> {
    this.note(`$ ${cmd} ${args.map((a) => JSON.stringify(a)).join(' ')}`);
    const t0 = Date.now();
    const r = await run(cmd, args);
    if (Date.now() - t0 > 1000) this.note(`  (took ${((Date.now() - t0) / 1000).toFixed(1)}s)`);
    if (r.code === 0) return true;
    if (soft) {
      this.note(`  (failed, ignored: ${r.output.trim().split('\n').slice(-1)[0]})`);
      this.stats.skipped++;
      if (/No space left/i.test(r.output)) this.noSpace = true;
      return false;
    }
    throw new Error(`${cmd} ${args.join(' ')} failed: ${r.output.trim()}`);
  }

  private pyOp(op: PyOp): void {
    this.py.push(op);
  }

  async flushPy(): Promise<void> {
    if (this.py.length === 0) return;
    const ops = this.py;
    this.py = [];
    for (const o of ops) {
      const { op, path: p, ...rest } = o;
      this.note(`py ${op} ${JSON.stringify(this.rel(p))} ${JSON.stringify(rest)}`);
    }
    const enc = ops.map((o) => {
      const e: Record<string, unknown> = { ...o, path: b64(o.path) };
      if (o.op === 'setxattr') { e.name = b64(o.name); e.value = o.value; }
      if (o.op === 'rmxattr') e.name = b64(o.name);
      if (o.op === 'clone') e.src = b64(o.src);
      return e;
    });
    const r = await runOk(await pythonExe(), ['-S', '-c', PY], { input: JSON.stringify(enc) });
    const res = JSON.parse(r.stdout) as { ok: boolean; err?: string }[];
    res.forEach((x, i) => {
      if (!x.ok) {
        this.stats.skipped++;
        this.note(`  py op ${i} (${ops[i]!.op} ${this.rel(ops[i]!.path)}) failed, ignored: ${x.err}`);
        if (/space/i.test(x.err ?? '')) this.noSpace = true;
      }
    });
  }

  private async freshName(dir: string): Promise<string> {
    for (let i = 0; i < 50; i++) {
      const n = randomName(this.rng);
      try {
        await fsp.lstat(path.join(dir, n));
      } catch {
        return path.join(dir, n);
      }
    }
    return path.join(dir, `n${this.rng.u32()}`);
  }

  private takeBudget(n: number): number {
    if (this.noSpace) return 0;
    const k = Math.max(0, Math.min(n, this.budget));
    this.budget -= k;
    this.stats.bytes += k;
    return k;
  }

  private fileSize(): number {
    const rng = this.rng;
    const k = rng.weighted([[30, 'tiny'], [35, 'small'], [22, 'medium'], [8, 'large'], [5, 'edge']] as const);
    switch (k) {
      case 'tiny': return rng.int(0, 4200);
      case 'small': return rng.int(4096, 128 * 1024);
      case 'medium': return rng.int(128 * 1024, 1 << 20);
      case 'large': return rng.int(1 << 20, 3 << 20);
      case 'edge': return rng.pick([0, 1, 2047, 2048, 2049, 3000, 4095, 4096, 4097, 8191, 8192, 131072, 131073, 65536 * 3 + 1]);
    }
  }

  private randomMode(type: EntryType): number {
    const rng = this.rng;
    let m = rng.weighted([[6, rng.pick([0o644, 0o600, 0o755, 0o700, 0o444, 0o664, 0o775])], [4, rng.int(0, 0o777)]] as const);
    if (rng.chance(0.12)) m |= rng.pick([0o4000, 0o2000, 0o1000, 0o6000, 0o7000]);
    if (type === 'dir' && rng.chance(0.1)) m |= 0o1000;
    return m;
  }

  private randomOwner(): { uid: number; gid: number } {
    const rng = this.rng;
    const id = () => rng.weighted([[5, 0], [3, rng.int(1, 1100)], [1, 65534], [1, rng.int(100000, 2 ** 31 - 2)]] as const);
    return { uid: id(), gid: id() };
  }

  private randomTimeNs(): bigint {
    const rng = this.rng;
    const sec = rng.weighted([
      [8, rng.int(1_000_000_000, 1_800_000_000)],
      [1, rng.int(-2_000_000_000, -1)],
      [1, rng.int(2_200_000_000, 8_000_000_000)],
      [1, 0],
    ] as const);
    const nsec = rng.weighted([[6, rng.int(0, 999_999_999)], [1, 0], [1, 999_999_999]] as const);
    return BigInt(sec) * 1_000_000_000n + BigInt(nsec);
  }

  /** Owner, mode and xattrs of a new entry (queued; chown before chmod since chown clears suid). */
  private async meta(p: string, type: EntryType): Promise<void> {
    const rng = this.rng;
    if (rng.chance(0.5)) {
      const { uid, gid } = this.randomOwner();
      this.pyOp({ op: 'chown', path: p, uid, gid });
    }
    if (type !== 'symlink') this.pyOp({ op: 'chmod', path: p, mode: this.randomMode(type) });
    if ((type === 'file' || type === 'dir') && rng.chance(0.25)) {
      const n = rng.int(1, 3);
      for (let i = 0; i < n; i++) this.randomXattr(p, 'user');
    }
    if (rng.chance(0.05)) this.randomXattr(p, 'trusted');
    if ((type === 'file' || type === 'dir') && rng.chance(0.04)) {
      this.pyOp({ op: 'setxattr', path: p, name: 'btrfs.compression', value: b64(rng.pick(['zlib', 'lzo', 'zstd'])), soft: true });
    }
    if ((type === 'file' || type === 'dir') && this.aclBudget > 0 && rng.chance(0.04)) {
      this.aclBudget--;
      await this.flushPy();
      const spec = `u:${rng.int(1, 5000)}:${rng.pick(['r', 'rw', 'rwx', 'rx'])},g:${rng.int(1, 5000)}:r`;
      await this.sh('setfacl', [...(type === 'dir' && rng.chance(0.5) ? ['-d'] : []), '-m', spec, p], true);
    }
  }

  private randomXattr(p: string, ns: 'user' | 'trusted'): void {
    const rng = this.rng;
    const name = `${ns}.${rng.pick(['a', 'mime', 'k' + rng.int(0, 99), 'comment', 'long.' + 'x'.repeat(rng.int(10, 120)), 'ünï'])}`;
    const len = rng.weighted([[3, 0], [5, rng.int(1, 32)], [3, rng.int(33, 300)], [1, rng.int(301, 900)]] as const);
    const value = rng.chance(0.6) ? rng.bytes(len) : makeContent(rng, len, 'text');
    this.stats.xattrs++;
    this.pyOp({ op: 'setxattr', path: p, name, value: value.toString('base64'), soft: true });
  }

  private async writeData(p: string, size: number, flags = 'w'): Promise<void> {
    const n = this.takeBudget(size);
    const fh = await fsp.open(p, flags, 0o644);
    try {
      if (n > 0) await fh.write(makeContent(this.rng, n), 0, n, 0);
    } finally {
      await fh.close();
    }
  }

  // -------------------------------------------------------------- populate

  /** `count` random entries in dir, recursing into new directories up to depth 4. */
  async populate(dir: string, depth: number, count: number): Promise<void> {
    const rng = this.rng;
    const made: string[] = [];
    const linkable: string[] = [];
    for (let i = 0; i < count; i++) {
      const kind = rng.weighted([
        [40, 'file'], [depth < 4 ? 16 : 0, 'dir'], [10, 'symlink'], [7, 'sparse'], [7, 'hardlink'], [8, 'special'], [6, 'edge'], [2, 'nocow'],
      ] as const);
      const p = await this.freshName(dir);
      switch (kind) {
        case 'file':
        case 'edge': {
          const size = kind === 'edge' ? rng.pick([0, 1, 2047, 2048, 2049, 4095, 4096, 4097, 3900, 1000]) : this.fileSize();
          await this.writeData(p, size);
          this.note(`file ${JSON.stringify(this.rel(p))} ${size}`);
          this.stats.files++;
          linkable.push(p);
          await this.meta(p, 'file');
          break;
        }
        case 'nocow': {
          if (this.chattrBudget <= 0) break;
          this.chattrBudget--;
          await fsp.writeFile(p, '');
          await this.sh('chattr', ['+C', p], true);
          await this.writeData(p, this.fileSize(), 'r+');
          this.stats.files++;
          linkable.push(p);
          await this.meta(p, 'file');
          break;
        }
        case 'sparse': {
          await this.sparseFile(p);
          linkable.push(p);
          await this.meta(p, 'file');
          break;
        }
        case 'dir': {
          await fsp.mkdir(p);
          this.note(`mkdir ${JSON.stringify(this.rel(p))}`);
          this.stats.dirs++;
          made.push(p);
          // mode/owner first (so sgid and default ACLs propagate like on a real system), children after
          await this.meta(p, 'dir');
          await this.flushPy();
          await this.populate(p, depth + 1, rng.int(0, depth === 0 ? 12 : 8));
          break;
        }
        case 'symlink': {
          await this.symlink(p);
          linkable.push(p);
          await this.meta(p, 'symlink');
          break;
        }
        case 'hardlink': {
          if (linkable.length === 0) break;
          const src = rng.pick(linkable);
          await fsp.link(src, p);
          this.note(`link ${JSON.stringify(this.rel(src))} ${JSON.stringify(this.rel(p))}`);
          this.stats.hardlinks++;
          break;
        }
        case 'special': {
          const t = rng.pick(['fifo', 'socket', 'chardev', 'blockdev'] as const);
          const mode = { fifo: S_IFIFO, socket: S_IFSOCK, chardev: S_IFCHR, blockdev: S_IFBLK }[t] | 0o644;
          const major = t === 'chardev' || t === 'blockdev' ? rng.weighted([[3, rng.int(0, 255)], [1, rng.int(256, 4095)]] as const) : 0;
          const minor = t === 'chardev' || t === 'blockdev' ? rng.weighted([[3, rng.int(0, 255)], [1, rng.int(256, 1048575)]] as const) : 0;
          this.pyOp({ op: 'mknod', path: p, mode, major, minor });
          this.stats.specials++;
          await this.meta(p, t);
          break;
        }
      }
    }
    await this.flushPy();
  }

  private async sparseFile(p: string): Promise<void> {
    const rng = this.rng;
    const size = rng.pick([rng.int(1, 64) * 4096, rng.int(64 * 1024, 8 << 20), rng.int(1, 3) << 20]);
    const fh = await fsp.open(p, 'w', 0o644);
    try {
      const pieces = rng.int(0, 5);
      for (let i = 0; i < pieces; i++) {
        const off = rng.chance(0.5) ? rng.int(0, Math.floor(size / 4096)) * 4096 : rng.int(0, size);
        const len = this.takeBudget(Math.min(rng.int(1, 256 * 1024), Math.max(1, size - off)));
        if (len > 0) await fh.write(makeContent(rng, len), 0, len, off);
      }
      await fh.truncate(size);
    } finally {
      await fh.close();
    }
    this.note(`sparse ${JSON.stringify(this.rel(p))} ${size}`);
    this.stats.files++;
  }

  private async symlink(p: string): Promise<void> {
    const rng = this.rng;
    const kind = rng.weighted([[4, 'relative'], [2, 'absolute'], [2, 'dangling'], [1, 'long'], [1, 'dots']] as const);
    let target: string;
    switch (kind) {
      case 'relative': target = rng.pick(['.', '..', '../x', 'sub/dir/file', randomName(rng)]); break;
      case 'absolute': target = rng.pick(['/etc/passwd', '/', '/usr/lib/../bin', `/${randomName(rng)}/${randomName(rng)}`]); break;
      case 'dangling': target = `does-not-exist-${rng.u32()}/${randomName(rng)}`; break;
      case 'dots': target = '../'.repeat(rng.int(1, 30)) + randomName(rng); break;
      case 'long': {
        const n = rng.int(300, 4000);
        target = Array.from({ length: Math.ceil(n / 50) }, () => 'd'.repeat(49)).join('/').slice(0, n);
        break;
      }
    }
    try {
      await fsp.symlink(target, p);
    } catch (e) {
      // long targets beyond what one tree leaf holds (nodesize 4096) fail with ENAMETOOLONG
      if ((e as NodeJS.ErrnoException).code !== 'ENAMETOOLONG') throw e;
      target = target.slice(0, 1000);
      await fsp.symlink(target, p);
    }
    this.note(`symlink ${JSON.stringify(this.rel(p))} -> ${JSON.stringify(target.length > 60 ? target.slice(0, 60) + `...(${target.length})` : target)}`);
    this.stats.symlinks++;
  }

  /** A directory with hundreds of entries (several leaves of dir items, more with -n 4096). */
  private async bigDir(parent: string): Promise<void> {
    const rng = this.rng;
    const d = await this.freshName(parent);
    await fsp.mkdir(d);
    const n = rng.int(200, 700);
    for (let i = 0; i < n; i++) {
      const p = path.join(d, `e${i.toString().padStart(4, '0')}-${randomName(rng).slice(0, 40)}`);
      await fsp.writeFile(p, rng.chance(0.2) ? makeContent(rng, rng.int(1, 300), 'text') : '').catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
    }
    this.note(`bigdir ${JSON.stringify(this.rel(d))} ${n}`);
    this.stats.dirs++;
    this.stats.files += n;
  }

  /** One inode with many long-named links in one directory: overflows INODE_REF into INODE_EXTREF. */
  private async manyLinks(parent: string): Promise<void> {
    const rng = this.rng;
    const d = await this.freshName(parent);
    await fsp.mkdir(d);
    const src = path.join(d, 'origin');
    await this.writeData(src, rng.int(0, 5000));
    const n = rng.int(60, 200);
    for (let i = 0; i < n; i++) await fsp.link(src, path.join(d, `link-${i}-${'L'.repeat(rng.int(100, 200))}`));
    this.note(`manylinks ${JSON.stringify(this.rel(d))} ${n}`);
    this.stats.hardlinks += n;
  }

  // -------------------------------------------------------------- scanning

  async scan(): Promise<Entry[]> {
    const out: Entry[] = [];
    const rootSt = await fsp.lstat(this.mnt, { bigint: true });
    const visit = async (p: string, parentDev: bigint, ro: boolean): Promise<boolean> => {
      const st = await fsp.lstat(p, { bigint: true });
      const type: EntryType = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink'
        : st.isFIFO() ? 'fifo' : st.isSocket() ? 'socket' : st.isCharacterDevice() ? 'chardev' : 'blockdev';
      const subvolRoot = type === 'dir' && (st.dev !== parentDev || p === this.mnt);
      const placeholder = type === 'dir' && st.ino === 2n;
      const key = `${st.dev}:${p}`;
      if (subvolRoot && p !== this.mnt && !this.roBySubvol.has(key)) {
        const r = await run('btrfs', ['property', 'get', '-ts', p, 'ro']);
        this.roBySubvol.set(key, /ro=true/.test(r.stdout));
        this.note(`# subvolume root ${JSON.stringify(this.rel(p))} dev ${st.dev} ${r.stdout.trim()}`);
      }
      const myRo = p === this.mnt ? false : subvolRoot ? this.roBySubvol.get(key)! : ro;
      const e: Entry = { path: p, type, dev: st.dev, ino: st.ino, size: Number(st.size), ro: myRo || placeholder, placeholder, subvolRoot, hasSubvolBelow: false };
      out.push(e);
      if (type === 'dir' && !placeholder) {
        const names = (await fsp.readdir(p)).sort();
        for (const n of names) {
          if (await visit(path.join(p, n), st.dev, myRo)) e.hasSubvolBelow = true;
        }
      }
      return subvolRoot || placeholder || e.hasSubvolBelow;
    };
    await visit(this.mnt, rootSt.dev, false);
    return out;
  }

  // -------------------------------------------------------------- subvolumes

  /** A new subvolume in a random writable directory (nested: inside a subvolume other than the top level). */
  async createSubvolume(nested = false): Promise<void> {
    const rng = this.rng;
    const all = await this.scan();
    const rootDev = all[0]!.dev;
    let dirs = all.filter((e) => e.type === 'dir' && !e.ro);
    if (nested) {
      const inner = dirs.filter((e) => e.dev !== rootDev);
      if (inner.length) dirs = inner;
    }
    const parent = rng.chance(0.3) && !nested ? all[0]! : rng.pick(dirs);
    const p = await this.freshName(parent.path);
    await this.sh('btrfs', ['subvolume', 'create', p]);
    this.stats.subvolumes++;
    if (rng.chance(0.3)) {
      const { uid, gid } = this.randomOwner();
      this.pyOp({ op: 'chown', path: p, uid, gid });
      this.pyOp({ op: 'chmod', path: p, mode: this.randomMode('dir') });
    }
    await this.populate(p, 1, rng.int(3, 12));
  }

  async snapshot(): Promise<void> {
    const rng = this.rng;
    const all = await this.scan();
    const roots = all.filter((e) => e.subvolRoot && !e.placeholder);
    const src = rng.chance(0.2) ? all[0]! : rng.pick(roots);
    const dst = rng.pick(all.filter((e) => e.type === 'dir' && !e.ro));
    const p = await this.freshName(dst.path);
    const ro = rng.chance(0.5);
    if (await this.sh('btrfs', ['subvolume', 'snapshot', ...(ro ? ['-r'] : []), src.path, p], true)) this.stats.snapshots++;
  }

  /** Full send of a read-only subvolume received into a writable directory: a subvolume with a received uuid. */
  async sendReceive(): Promise<void> {
    const rng = this.rng;
    const all = await this.scan();
    const ros = all.filter((e) => e.subvolRoot && !e.placeholder && e.ro && e.path !== this.mnt);
    const dirs = all.filter((e) => e.type === 'dir' && !e.ro && !e.placeholder);
    if (!ros.length || !dirs.length) return;
    const src = rng.pick(ros);
    const dst = rng.pick(dirs);
    if ((dst.path + '/').startsWith(src.path + '/')) return;
    // receive creates a subvolume named like the source: only when that name is free there
    try {
      await fsp.lstat(path.join(dst.path, path.basename(src.path)));
      return;
    } catch { /* free */ }
    const cmd = `btrfs send -q ${shq(src.path)} | btrfs receive -q ${shq(dst.path)}`;
    if (await this.sh('bash', ['-c', `set -o pipefail; ${cmd}`], true)) this.stats.snapshots++;
  }

  /** Relocate every chunk (new logical addresses for all data and metadata). */
  async balance(): Promise<void> {
    await this.flushPy();
    await this.sh('btrfs', ['balance', 'start', '--full-balance', this.mnt], true);
  }

  async setDefault(): Promise<void> {
    const roots = (await this.scan()).filter((e) => e.subvolRoot && !e.placeholder);
    const e = this.rng.pick(roots);
    const r = await run('btrfs', ['inspect-internal', 'rootid', e.path]);
    const id = r.stdout.trim();
    if (r.code === 0 && /^\d+$/.test(id)) await this.sh('btrfs', ['subvolume', 'set-default', id, this.mnt], true);
  }

  private async remount(): Promise<void> {
    const c = randomCompression(this.rng) ?? 'compress=no';
    await this.sh('mount', ['-o', `remount,${c}`, this.mnt], true);
  }

  async sync(): Promise<void> {
    this.scanned = undefined;
    await this.flushPy();
    await this.sh('btrfs', ['filesystem', 'sync', this.mnt]);
  }

  /** Random ns atime/mtime on a fraction of the writable entries. */
  async retime(fraction: number): Promise<void> {
    await this.flushPy();
    const rng = this.rng;
    for (const e of await this.scan()) {
      if (e.ro || e.placeholder || !rng.chance(fraction)) continue;
      this.pyOp({ op: 'utime', path: e.path, atime: this.randomTimeNs().toString(), mtime: this.randomTimeNs().toString() });
    }
    await this.flushPy();
  }

  // -------------------------------------------------------------- changes

  async change(): Promise<void> {
    const rng = this.rng;
    await this.flushPy();
    // rescanning after every change is the slowest part on big trees: reuse a scan for a few
    // changes (stale paths fail with ENOENT and are skipped) and rescan after structural ones
    if (!this.scanned || this.scanUses++ >= 4) {
      this.scanned = await this.scan();
      this.scanUses = 0;
    }
    const all = this.scanned;
    const rw = all.filter((e) => !e.ro);
    const files = rw.filter((e) => e.type === 'file');
    const anyFiles = all.filter((e) => e.type === 'file');
    const dirs = rw.filter((e) => e.type === 'dir');
    const what = rng.weighted([
      [10, 'overwrite'], [5, 'append'], [6, 'truncate'], [5, 'delete'], [6, 'rename'], [5, 'reflink'], [5, 'clonerange'],
      [4, 'fallocate'], [5, 'punch'], [2, 'zero'], [3, 'link'], [4, 'chmod'], [3, 'xattr'], [5, 'create'],
      [1, 'subvol'], [1, 'delsubvol'], [1, 'mvsubvol'], [1, 'defrag'], [1, 'rmplaceholder'],
    ] as const);
    this.stats.changes++;
    if (['delete', 'rename', 'subvol', 'delsubvol', 'mvsubvol', 'create', 'rmplaceholder'].includes(what)) this.scanned = undefined;
    const ss = this.sectorsize;
    try {
      switch (what) {
        case 'overwrite': {
          if (!files.length) return;
          const f = rng.pick(files);
          const off = rng.chance(0.4) ? rng.int(0, Math.floor(f.size / ss)) * ss : rng.int(0, Math.max(0, f.size));
          const len = this.takeBudget(rng.int(1, rng.pick([100, 4096, 70000, 300000])));
          if (!len) return;
          const fh = await fsp.open(f.path, 'r+');
          try { await fh.write(makeContent(rng, len), 0, len, off); } finally { await fh.close(); }
          this.note(`overwrite ${JSON.stringify(this.rel(f.path))} @${off} +${len}`);
          break;
        }
        case 'append': {
          if (!files.length) return;
          const f = rng.pick(files);
          const len = this.takeBudget(rng.int(1, rng.pick([10, 3000, 65536, 500000])));
          if (!len) return;
          await fsp.appendFile(f.path, makeContent(rng, len));
          this.note(`append ${JSON.stringify(this.rel(f.path))} +${len}`);
          break;
        }
        case 'truncate': {
          if (!files.length) return;
          const f = rng.pick(files);
          const to = rng.chance(0.5) ? rng.int(0, f.size) : f.size + rng.int(1, rng.pick([100, 5000, 1 << 20, 5 << 20]));
          await fsp.truncate(f.path, to);
          this.note(`truncate ${JSON.stringify(this.rel(f.path))} ${f.size} -> ${to}`);
          break;
        }
        case 'delete': {
          const cand = rw.filter((e) => !e.subvolRoot && !e.hasSubvolBelow && !e.placeholder && e.path !== this.mnt);
          if (!cand.length) return;
          const e = rng.pick(cand);
          await fsp.rm(e.path, { recursive: true, force: false });
          this.note(`rm -r ${JSON.stringify(this.rel(e.path))}`);
          break;
        }
        case 'rename': {
          const cand = rw.filter((e) => !e.subvolRoot && e.path !== this.mnt);
          if (!cand.length) return;
          const e = rng.pick(cand);
          const sameDev = dirs.filter((d) => d.dev === e.dev && !d.placeholder && !(d.path + '/').startsWith(e.path + '/'));
          if (!sameDev.length) return;
          let dst = await this.freshName(rng.pick(sameDev).path);
          if (e.type !== 'dir' && rng.chance(0.25)) {
            // replace an existing file of the same subvolume
            const victims = files.filter((f) => f.dev === e.dev && f.path !== e.path);
            if (victims.length) dst = rng.pick(victims).path;
          }
          await fsp.rename(e.path, dst);
          this.note(`mv ${JSON.stringify(this.rel(e.path))} ${JSON.stringify(this.rel(dst))}`);
          break;
        }
        case 'reflink': {
          if (!anyFiles.length || !dirs.length) return;
          const src = rng.pick(anyFiles);
          const dst = await this.freshName(rng.pick(dirs.filter((d) => !d.placeholder)).path);
          await this.sh('cp', ['--reflink=always', src.path, dst], true);
          break;
        }
        case 'clonerange': {
          const srcs = anyFiles.filter((f) => f.size >= ss);
          if (!srcs.length || !files.length) return;
          const src = rng.pick(srcs);
          const dst = rng.pick(files);
          const blocks = Math.floor(src.size / ss);
          const sb = rng.int(0, blocks - 1);
          const toEof = rng.chance(0.3);
          const len = toEof ? 0 : rng.int(1, blocks - sb) * ss;
          const doff = rng.int(0, Math.floor((dst.size + 3 * ss) / ss)) * ss;
          if (src.path === dst.path && !toEof && doff < sb * ss + len && sb * ss < doff + len) return; // overlapping ranges: EINVAL
          this.pyOp({ op: 'clone', path: dst.path, src: src.path, soff: sb * ss, len, doff, soft: true });
          await this.flushPy();
          break;
        }
        case 'fallocate': {
          if (!files.length) return;
          const f = rng.pick(files);
          const off = rng.int(0, f.size + 65536);
          const len = rng.int(1, rng.pick([4096, 65536, 1 << 20]));
          if (!this.takeBudget(len)) return;
          await this.sh('fallocate', [...(rng.chance(0.4) ? ['-k'] : []), '-o', String(off), '-l', String(len), f.path], true);
          break;
        }
        case 'punch':
        case 'zero': {
          const cand = files.filter((f) => f.size > 0);
          if (!cand.length) return;
          const f = rng.pick(cand);
          const off = rng.chance(0.5) ? rng.int(0, Math.floor(f.size / ss)) * ss : rng.int(0, f.size);
          const len = rng.chance(0.5) ? rng.int(1, 16) * ss : rng.int(1, Math.max(1, f.size - off));
          await this.sh('fallocate', [what === 'punch' ? '-p' : '-z', '-o', String(off), '-l', String(len), f.path], true);
          break;
        }
        case 'link': {
          const cand = rw.filter((e) => e.type !== 'dir');
          if (!cand.length) return;
          const src = rng.pick(cand);
          const sameDev = dirs.filter((d) => d.dev === src.dev && !d.placeholder);
          if (!sameDev.length) return;
          const dst = await this.freshName(rng.pick(sameDev).path);
          await fsp.link(src.path, dst);
          this.note(`link ${JSON.stringify(this.rel(src.path))} ${JSON.stringify(this.rel(dst))}`);
          this.stats.hardlinks++;
          break;
        }
        case 'chmod': {
          const cand = rw.filter((e) => !e.placeholder);
          const e = rng.pick(cand);
          if (rng.chance(0.5)) {
            const { uid, gid } = this.randomOwner();
            this.pyOp({ op: 'chown', path: e.path, uid, gid, soft: true });
          }
          if (e.type !== 'symlink') this.pyOp({ op: 'chmod', path: e.path, mode: this.randomMode(e.type), soft: true });
          await this.flushPy();
          break;
        }
        case 'xattr': {
          const cand = rw.filter((e) => !e.placeholder && (e.type === 'file' || e.type === 'dir'));
          if (!cand.length) return;
          const e = rng.pick(cand);
          const r = await run('getfattr', ['--absolute-names', '-h', '-d', '-m', '^user\\.', e.path]);
          const names = r.stdout.split('\n').filter((l) => /^user\./.test(l)).map((l) => l.split('=')[0]!);
          if (names.length && rng.chance(0.4)) this.pyOp({ op: 'rmxattr', path: e.path, name: rng.pick(names), soft: true });
          else this.randomXattr(e.path, 'user');
          await this.flushPy();
          break;
        }
        case 'create': {
          const d = rng.pick(dirs.filter((x) => !x.placeholder));
          await this.populate(d.path, 3, rng.int(1, 4));
          break;
        }
        case 'subvol':
          await this.createSubvolume(rng.chance(0.5));
          break;
        case 'delsubvol': {
          // only leaves: the kernel refuses to delete a subvolume with subvolumes inside
          const cand = all.filter((e) => e.subvolRoot && e.path !== this.mnt && !e.hasSubvolBelow);
          if (!cand.length) return;
          const e = rng.pick(cand);
          const parentRo = all.find((x) => x.path === path.dirname(e.path))?.ro ?? true;
          if (parentRo) return;
          await this.sh('btrfs', ['subvolume', 'delete', e.path], true);
          this.roBySubvol.clear();
          break;
        }
        case 'mvsubvol': {
          const cand = all.filter((e) => e.subvolRoot && e.path !== this.mnt);
          if (!cand.length) return;
          const e = rng.pick(cand);
          const parent = all.find((x) => x.path === path.dirname(e.path));
          if (!parent || parent.ro) return;
          const sameDev = dirs.filter((d) => d.dev === parent.dev && !d.placeholder && !(d.path + '/').startsWith(e.path + '/'));
          if (!sameDev.length) return;
          const dst = await this.freshName(rng.pick(sameDev).path);
          await fsp.rename(e.path, dst);
          this.note(`mv subvol ${JSON.stringify(this.rel(e.path))} ${JSON.stringify(this.rel(dst))}`);
          break;
        }
        case 'defrag': {
          if (!files.length || this.defragBudget <= 0) return;
          this.defragBudget--;
          const f = rng.pick(files);
          await this.sh('btrfs', ['filesystem', 'defragment', ...(rng.chance(0.7) ? [`-c${rng.pick(['zlib', 'lzo', 'zstd'])}`] : []), f.path], true);
          break;
        }
        case 'rmplaceholder': {
          const cand = all.filter((e) => e.placeholder);
          if (!cand.length) return;
          const e = rng.pick(cand);
          const parent = all.find((x) => x.path === path.dirname(e.path));
          if (!parent || parent.ro) return;
          await fsp.rmdir(e.path);
          this.note(`rmdir placeholder ${JSON.stringify(this.rel(e.path))}`);
          break;
        }
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code && ['ENOENT', 'EXDEV', 'ENOSPC', 'EPERM', 'ENOTEMPTY', 'EISDIR', 'ENOTDIR', 'EINVAL', 'EMLINK', 'EBUSY', 'EROFS', 'EEXIST'].includes(code)) {
        this.note(`  ${what} failed, ignored: ${(e as Error).message}`);
        this.stats.skipped++;
        if (code === 'ENOSPC') this.noSpace = true;
        return;
      }
      throw e;
    }
  }
}
