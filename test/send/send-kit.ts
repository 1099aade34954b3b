/**
 * Test kit for send: kernel images with a subvolume changed in seeded
 * rounds and snapshotted after each, mounts that survive a remount in the
 * middle, the structural changes send finds hardest (swaps, cycles, a
 * directory moved under its former child, reused inode numbers, files and
 * directories replacing each other), and the referee: streams piped into
 * the real `btrfs receive`, received trees compared with the originals.
 */
import { promises as fsp, createReadStream, createWriteStream } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run, runOk, mkfs } from '../helpers/kernel.js';
import { manifestOf, diffManifests, type Manifest } from '../helpers/manifest.js';
import { Rng, TreeGenerator, makeContent } from '../native/random-tree.js';
import { Filesystem } from '../../src/fs/filesystem.js';
import { send, type SendOptions, type SendStats } from '../../src/send/index.js';
import { parseStream, SEND_CMD, SEND_ATTR, getAttr } from '../../src/format/send-stream.js';

export const MiB = 1024 * 1024;

/** A loop-mounted image, unmounted and detached by close() (also after a failed open). */
export class Mounted {
  private constructor(readonly img: string, readonly dev: string, readonly mnt: string) {}

  static async open(img: string, mnt: string, options: string[] = []): Promise<Mounted> {
    await fsp.mkdir(mnt, { recursive: true });
    const dev = (await runOk('losetup', ['--find', '--show', img])).stdout.trim();
    const r = await run('mount', ['-t', 'btrfs', ...(options.length ? ['-o', options.join(',')] : []), dev, mnt]);
    if (r.code !== 0) {
      await run('losetup', ['-d', dev]);
      throw new Error(`mount ${img}: ${r.output.trim()}`);
    }
    return new Mounted(img, dev, mnt);
  }

  async close(): Promise<void> {
    for (let i = 0; i < 20; i++) {
      const r = await run('umount', [this.mnt]);
      if (r.code === 0 || /not mounted/.test(r.output)) break;
      await new Promise((res) => setTimeout(res, 200));
      if (i === 19) await run('umount', ['-l', this.mnt]);
    }
    for (let i = 0; i < 20; i++) {
      const r = await run('losetup', ['-d', this.dev]);
      if (r.code === 0 || /No such device/.test(r.output)) break;
      await new Promise((res) => setTimeout(res, 200));
    }
  }
}

const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Raw operations Node lacks (ns times, binary xattrs, mknod), one python call per batch. */
const PY = String.raw`
import sys, os, json, base64
def P(s): return base64.b64decode(s)
for op in json.load(sys.stdin):
    k = op['op']; p = P(op['path'])
    try:
        if k == 'utime': os.utime(p, ns=(int(op['atime']), int(op['mtime'])), follow_symlinks=False)
        elif k == 'setxattr': os.setxattr(p, P(op['name']), P(op['value']), follow_symlinks=False)
        elif k == 'chown': os.chown(p, op['uid'], op['gid'], follow_symlinks=False)
        elif k == 'chmod': os.chmod(p, op['mode'])
    except OSError as e:
        if not op.get('soft'): raise
`;

export interface PyOp { op: 'utime' | 'setxattr' | 'chown' | 'chmod'; path: string; soft?: boolean; [k: string]: unknown }

export async function py(ops: PyOp[]): Promise<void> {
  if (!ops.length) return;
  const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');
  const enc = ops.map((o) => ({ ...o, path: b64(o.path), ...(o.op === 'setxattr' ? { name: b64(String(o.name)), value: String(o.value) } : {}) }));
  await runOk('python3', ['-S', '-c', PY], { input: JSON.stringify(enc) });
}

/** A random ns time, including before 1970 and past 2038. */
export function randomTimeNs(rng: Rng): bigint {
  const sec = rng.weighted([[8, rng.int(1_000_000_000, 1_800_000_000)], [1, rng.int(-2_000_000_000, -1)], [1, rng.int(2_200_000_000, 8_000_000_000)]] as const);
  return BigInt(sec) * 1_000_000_000n + BigInt(rng.int(0, 999_999_999));
}

interface Ent { path: string; type: 'file' | 'dir' | 'other'; ino: bigint; dev: bigint; nlink: number }

/** Every entry under `root` on the same device (nested subvolumes left out). */
export async function entries(root: string): Promise<Ent[]> {
  const out: Ent[] = [];
  const rootDev = (await fsp.lstat(root, { bigint: true })).dev;
  const visit = async (p: string): Promise<void> => {
    const st = await fsp.lstat(p, { bigint: true });
    if (st.dev !== rootDev) return;
    const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
    if (p !== root) out.push({ path: p, type, ino: st.ino, dev: st.dev, nlink: Number(st.nlink) });
    if (type === 'dir') for (const n of (await fsp.readdir(p)).sort()) await visit(path.join(p, n));
  };
  await visit(root);
  return out;
}

const isUnder = (p: string, anc: string): boolean => p === anc || p.startsWith(anc + '/');

/**
 * The changes send finds hardest, made on a live subvolume at `root`.
 * Each returns a line for the log, or '' when it found nothing to do.
 */
export class HardChanges {
  private n = 0;
  constructor(readonly root: string, readonly rng: Rng) {}

  private fresh(dir: string): string {
    return path.join(dir, `h${this.n++}-${this.rng.u32().toString(36)}`);
  }

  private async pick(filter: (e: Ent) => boolean): Promise<Ent | undefined> {
    const c = (await entries(this.root)).filter(filter);
    return c.length ? this.rng.pick(c) : undefined;
  }

  /** a <-> b through a temporary name (files or directories, neither inside the other). */
  async swap(): Promise<string> {
    const all = await entries(this.root);
    if (all.length < 2) return '';
    const a = this.rng.pick(all);
    const cand = all.filter((e) => !isUnder(e.path, a.path) && !isUnder(a.path, e.path));
    if (!cand.length) return '';
    const b = this.rng.pick(cand);
    const tmp = this.fresh(this.root);
    await fsp.rename(a.path, tmp);
    await fsp.rename(b.path, a.path);
    await fsp.rename(tmp, b.path);
    return `swap ${a.path} <-> ${b.path}`;
  }

  /** a -> b -> c -> a */
  async cycle(): Promise<string> {
    const all = await entries(this.root);
    const picked: Ent[] = [];
    for (const e of this.rng.chance(0.5) ? all : [...all].reverse()) {
      if (picked.length === 3) break;
      if (picked.every((p) => !isUnder(e.path, p.path) && !isUnder(p.path, e.path)) && this.rng.chance(0.3)) picked.push(e);
    }
    if (picked.length < 3) return '';
    const [a, b, c] = picked as [Ent, Ent, Ent];
    const tmp = this.fresh(this.root);
    await fsp.rename(a.path, tmp);
    await fsp.rename(c.path, a.path);
    await fsp.rename(b.path, c.path);
    await fsp.rename(tmp, b.path);
    return `cycle ${a.path} ${b.path} ${c.path}`;
  }

  /** P/D/C -> P/D (the old C) holding D (the old D): a directory under its former child. */
  async underChild(): Promise<string> {
    const all = await entries(this.root);
    const pairs = all.filter((c) => c.type === 'dir' && all.some((d) => d.type === 'dir' && path.dirname(c.path) === d.path));
    if (!pairs.length) return '';
    const c = this.rng.pick(pairs);
    const d = path.dirname(c.path);
    const tmp = this.fresh(path.dirname(d));
    await fsp.rename(c.path, tmp);
    await fsp.rename(d, path.join(tmp, path.basename(d)));
    await fsp.rename(tmp, d);
    return `under-child ${d} now inside its former child ${c.path}`;
  }

  async fileToDir(): Promise<string> {
    const f = await this.pick((e) => e.type !== 'dir');
    if (!f) return '';
    await fsp.rm(f.path);
    await fsp.mkdir(f.path);
    await fsp.writeFile(path.join(f.path, 'inside'), makeContent(this.rng, this.rng.int(0, 9000)));
    return `file-to-dir ${f.path}`;
  }

  async dirToFile(): Promise<string> {
    const d = await this.pick((e) => e.type === 'dir');
    if (!d) return '';
    const r = await run('rm', ['-rf', d.path]);
    if (r.code !== 0) return '';
    await fsp.writeFile(d.path, makeContent(this.rng, this.rng.int(0, 9000)));
    return `dir-to-file ${d.path}`;
  }

  async addLink(): Promise<string> {
    const f = await this.pick((e) => e.type !== 'dir');
    const d = await this.pick((e) => e.type === 'dir');
    if (!f) return '';
    const dst = this.fresh(d?.path ?? this.root);
    await fsp.link(f.path, dst);
    return `link ${f.path} ${dst}`;
  }

  async dropLink(): Promise<string> {
    const f = await this.pick((e) => e.type !== 'dir' && e.nlink > 1);
    if (!f) return '';
    await fsp.unlink(f.path);
    return `unlink ${f.path} (had ${f.nlink} links)`;
  }

  /** A directory tree moved deep into another one. */
  async moveTree(): Promise<string> {
    const all = await entries(this.root);
    const d = all.filter((e) => e.type === 'dir');
    if (d.length < 2) return '';
    const a = this.rng.pick(d);
    const targets = d.filter((t) => !isUnder(t.path, a.path));
    if (!targets.length) return '';
    const dst = this.fresh(this.rng.pick(targets).path);
    await fsp.rename(a.path, dst);
    return `move-tree ${a.path} ${dst}`;
  }

  /** File capabilities, which a receiver's write or chown would clear if sent too early. */
  async caps(): Promise<string> {
    const f = await this.pick((e) => e.type === 'file');
    if (!f) return '';
    const v = Buffer.alloc(20);
    v.writeUInt32LE(0x02000001, 0);
    v.writeUInt32LE(1 << this.rng.int(0, 30), 4);
    await py([{ op: 'setxattr', path: f.path, name: 'security.capability', value: v.toString('base64'), soft: true }]);
    return `caps ${f.path}`;
  }

  async random(): Promise<string> {
    const what = this.rng.weighted([
      [3, 'swap'], [2, 'cycle'], [2, 'underChild'], [2, 'fileToDir'], [2, 'dirToFile'], [3, 'addLink'], [2, 'dropLink'], [2, 'moveTree'], [1, 'caps'],
    ] as const);
    try {
      return await this[what]();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code && ['ENOENT', 'EINVAL', 'ENOTEMPTY', 'EEXIST', 'EISDIR', 'ENOTDIR', 'EXDEV', 'EMLINK', 'EBUSY', 'EPERM'].includes(code)) return `${what} skipped: ${code}`;
      throw e;
    }
  }
}

/** Sends into a file with our code from an unmounted image. */
export async function sendToFile(img: string, file: string, opts: Omit<SendOptions, 'out'>): Promise<SendStats> {
  const fs = await Filesystem.open(img);
  try {
    return await send(fs, { ...opts, out: createWriteStream(file) });
  } finally {
    await fs.close();
  }
}

/** Subvolume ids by path from the image's top level (read with our read side). */
export async function subvolIds(img: string): Promise<Map<string, bigint>> {
  const fs = await Filesystem.open(img);
  try {
    return new Map((await fs.listSubvolumes()).map((s) => [s.path.replace(/^\//, ''), s.id]));
  } finally {
    await fs.close();
  }
}

export interface StreamSummary { bytes: number; commands: number; writeBytes: number; cloneBytes: number; counts: Record<string, number> }

/** What a stream holds, from our own parser (which checks every crc on the way). */
export async function summarize(file: string): Promise<StreamSummary> {
  const s: StreamSummary = { bytes: (await fsp.stat(file)).size, commands: 0, writeBytes: 0, cloneBytes: 0, counts: {} };
  for await (const c of parseStream(createReadStream(file))) {
    if (!('cmd' in c)) continue;
    s.commands++;
    const name = Object.entries(SEND_CMD).find(([, v]) => v === c.cmd)?.[0]?.toLowerCase() ?? String(c.cmd);
    s.counts[name] = (s.counts[name] ?? 0) + 1;
    if (c.cmd === SEND_CMD.WRITE) s.writeBytes += getAttr(c, SEND_ATTR.DATA)!.value.length;
    if (c.cmd === SEND_CMD.CLONE) s.cloneBytes += Number(getAttr(c, SEND_ATTR.CLONE_LEN)!.value.readBigUInt64LE(0));
  }
  return s;
}

/** `btrfs receive --dump` of a stream: throws with its output unless it accepts the whole stream. */
export async function kernelDump(file: string): Promise<string> {
  const r = await run('btrfs', ['receive', '--dump', '-f', file], { env: { ...process.env, TZ: 'UTC' } });
  if (r.code !== 0) throw new Error(`btrfs receive --dump rejects ${file}: ${r.output.trim().split('\n').slice(-5).join('\n')}`);
  return r.stdout;
}

/** The real `btrfs receive` of a stream into `dir`; throws with its output on failure. */
export async function kernelReceive(file: string, dir: string): Promise<void> {
  const r = await run('btrfs', ['receive', '-f', file, dir]);
  if (r.code !== 0) throw new Error(`btrfs receive of ${path.basename(file)} failed: ${r.output.trim().split('\n').slice(-8).join('\n')}`);
}

/** Differences between an original snapshot and its received copy (placeholders of nested subvolumes are not sent). */
export async function compareTrees(original: string, received: string): Promise<{ diffs: string[]; entries: number }> {
  const a: Manifest = await manifestOf(original);
  const b: Manifest = await manifestOf(received);
  const skip = Object.keys(a).filter((k) => a[k]!.subvol_placeholder || a[k]!.dev_boundary);
  const diffs = diffManifests(a, b, { exclude: (p) => skip.some((s) => p === s || p.startsWith(s + '/')) });
  return { diffs, entries: Object.keys(a).length };
}

const ROUNDS = 5;

export interface Built { img: string; snaps: string[]; log: string[] }

/** A kernel image: subvolume `vol` populated, then changed in ROUNDS seeded rounds, snapshot s0..sN read-only after each. */
export async function buildChain(dir: string, rng: Rng): Promise<Built> {
  const img = path.join(dir, 'a.img');
  const args = rng.chance(0.3) ? ['-n', '4096'] : [];
  await mkfs(img, 1024 * MiB, args);
  const mnt = path.join(dir, 'ma');
  const options = rng.chance(0.4) ? [rng.pick(['compress=zstd', 'compress=lzo', 'compress-force=zlib'])] : [];
  const log: string[] = [`mkfs ${args.join(' ')} mount -o ${options.join(',') || 'defaults'}`];
  let m = await Mounted.open(img, mnt, options);
  const snaps: string[] = [];
  try {
    const vol = path.join(mnt, 'vol');
    await runOk('btrfs', ['subvolume', 'create', vol]);
    const gen = new TreeGenerator(vol, rng, { dataBudget: 40 * MiB });
    const hard = new HardChanges(vol, rng);
    await gen.populate(vol, 0, rng.int(25, 40));
    await gen.retime(0.6);
    await gen.sync();
    const snap = async (i: number): Promise<void> => {
      await runOk('btrfs', ['filesystem', 'sync', mnt]);
      await runOk('btrfs', ['subvolume', 'snapshot', '-r', vol, path.join(mnt, `s${i}`)]);
      snaps.push(`s${i}`);
    };
    await snap(0);
    for (let round = 1; round <= ROUNDS; round++) {
      log.push(`# round ${round}`);
      const n = rng.int(40, 80);
      for (let i = 0; i < n; i++) {
        if (rng.chance(0.3)) {
          const what = await hard.random();
          if (what) log.push(what);
          // the generator caches its view of the tree: make it look again
          await gen.sync();
        } else await gen.change();
      }
      if (round === 3) {
        // an inode number reused with a new generation: free the highest number, remount, create again
        const all = await entries(vol);
        const top = all.reduce((x, y) => (y.ino > x.ino ? y : x));
        const r = await run('rm', ['-rf', top.path]);
        if (r.code === 0) {
          await runOk('btrfs', ['filesystem', 'sync', mnt]);
          await m.close();
          m = await Mounted.open(img, mnt, options);
          const asDir = rng.chance(0.5);
          if (asDir) {
            await fsp.mkdir(top.path);
            await fsp.writeFile(path.join(top.path, 'reborn'), 'x');
          } else await fsp.writeFile(top.path, 'reborn file\n');
          const again = (await fsp.lstat(top.path, { bigint: true })).ino;
          log.push(`reuse ${top.path} ino ${top.ino} (${top.type}) -> ${again} (${asDir ? 'dir' : 'file'})`);
        }
      }
      await gen.retime(0.3);
      await py((await entries(vol)).filter(() => rng.chance(0.05)).map((e) => ({
        op: 'utime', path: e.path, atime: randomTimeNs(rng).toString(), mtime: randomTimeNs(rng).toString(), soft: true,
      })));
      await gen.sync();
      await snap(round);
    }
    log.push(...gen.log.slice(-40));
  } finally {
    await m.close();
  }
  return { img, snaps, log };
}

export async function tempDir(prefix: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

export { Rng, TreeGenerator, mkfs, run, runOk, shq };
