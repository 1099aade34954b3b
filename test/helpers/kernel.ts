/**
 * Native kernel tier: helpers to create, mount and check real btrfs images with
 * btrfs-progs and the Linux kernel. Needs root, btrfs in /proc/filesystems,
 * mkfs.btrfs and working loop devices; tests call `requireNativeOrSkip(this)`
 * which skips loudly when unavailable (or fails when REQUIRE_NATIVE=1).
 *
 * Every mount goes through `withMount`, which attaches an explicit loop device,
 * mounts, runs the body and ALWAYS unmounts and detaches in `finally`.
 */
import { spawn } from 'node:child_process';
import { promises as fs, existsSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout + stderr interleaved in arrival order. */
  output: string;
}

export interface RunOptions {
  /** Data written to stdin. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill after this many ms (default 10 minutes). */
  timeoutMs?: number;
}

function cmdline(cmd: string, args: string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Run a command, never throwing on a non-zero exit (only if it cannot be started). */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    let stdout = '';
    let stderr = '';
    let output = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (c: string) => {
      stdout += c;
      output += c;
    });
    child.stderr.on('data', (c: string) => {
      stderr += c;
      output += c;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmdline(cmd, args)}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, output });
    });
    child.stdin.on('error', () => {
      /* child may exit before reading stdin */
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Run a command and throw a descriptive error unless it exits 0. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const how = r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
    const tail = r.output.trim().split('\n').slice(-30).join('\n');
    throw new Error(`command failed (${how}): ${cmdline(cmd, args)}\n${tail}`);
  }
  return r;
}

/** Run a shell pipeline with bash (set -o pipefail) and throw unless it exits 0. */
export function sh(script: string, opts: RunOptions = {}): Promise<RunResult> {
  return runOk('bash', ['-c', `set -euo pipefail\n${script}`], opts);
}

// ---------------------------------------------------------------- availability

export interface NativeStatus {
  ok: boolean;
  reason?: string;
}

let nativeStatus: Promise<NativeStatus> | undefined;

async function which(cmd: string): Promise<boolean> {
  const r = await run('bash', ['-c', `command -v ${cmd}`]);
  return r.code === 0;
}

async function probeNative(): Promise<NativeStatus> {
  if (process.env.TSBTRFS_NO_NATIVE) return { ok: false, reason: 'disabled by TSBTRFS_NO_NATIVE' };
  if (process.platform !== 'linux') return { ok: false, reason: `platform is ${process.platform}, not linux` };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0)
    return { ok: false, reason: 'not running as root (uid != 0)' };
  try {
    const fsList = readFileSync('/proc/filesystems', 'utf8');
    if (!/\bbtrfs\b/.test(fsList)) {
      // The module may be loadable on demand.
      await run('modprobe', ['btrfs']).catch(() => undefined);
      if (!/\bbtrfs\b/.test(readFileSync('/proc/filesystems', 'utf8')))
        return { ok: false, reason: 'btrfs not in /proc/filesystems (kernel module missing?)' };
    }
  } catch (e) {
    return { ok: false, reason: `cannot read /proc/filesystems: ${(e as Error).message}` };
  }
  for (const tool of ['mkfs.btrfs', 'btrfs', 'losetup', 'mount', 'umount']) {
    if (!(await which(tool))) return { ok: false, reason: `${tool} not found in PATH` };
  }
  // losetup must actually work: attach a tiny file and detach it again.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-probe-'));
  const f = path.join(dir, 'probe.img');
  try {
    await fs.writeFile(f, Buffer.alloc(0));
    await fs.truncate(f, 1 << 20);
    const r = await run('losetup', ['--find', '--show', f]);
    if (r.code !== 0) return { ok: false, reason: `losetup does not work: ${r.output.trim()}` };
    const dev = r.stdout.trim();
    await run('losetup', ['-d', dev]);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  return { ok: true };
}

/** Whether the native kernel tier can run here (cached per process). */
export function nativeAvailable(): Promise<NativeStatus> {
  nativeStatus ??= probeNative().catch((e: Error) => ({ ok: false, reason: e.message }));
  return nativeStatus;
}

/** True when REQUIRE_NATIVE is set to something other than '', '0' or 'false'. */
export function nativeRequired(): boolean {
  const v = process.env.REQUIRE_NATIVE;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

const warned = new Set<string>();

/**
 * Call at the top of a native-tier test or `before` hook: `await requireNativeOrSkip(this)`.
 * Skips the test/suite (with a loud console.warn banner) when the native tier is unavailable,
 * or throws when REQUIRE_NATIVE=1.
 */
export async function requireNativeOrSkip(ctx: Mocha.Context): Promise<void> {
  const st = await nativeAvailable();
  if (st.ok) return;
  const msg = `NATIVE KERNEL TIER SKIPPED: ${st.reason}`;
  if (nativeRequired()) throw new Error(`REQUIRE_NATIVE is set but the native kernel tier is unavailable: ${st.reason}`);
  if (!warned.has(msg)) {
    warned.add(msg);
    const bar = '!'.repeat(Math.min(100, msg.length + 8));
    console.warn(`\n${bar}\n!!! ${msg} !!!\n!!! (set REQUIRE_NATIVE=1 to make this a failure)\n${bar}\n`);
  }
  ctx.skip();
}

// ---------------------------------------------------------------- images

/**
 * Create (or overwrite) a sparse image file of `sizeBytes` and run mkfs.btrfs on it.
 * `args` are extra mkfs.btrfs arguments, e.g. ['--mixed'], ['-n', '4096'], ['--csum', 'xxhash'].
 */
export async function mkfs(img: string, sizeBytes: number, args: string[] = []): Promise<RunResult> {
  await fs.rm(img, { force: true });
  const fh = await fs.open(img, 'w');
  try {
    await fh.truncate(sizeBytes);
  } finally {
    await fh.close();
  }
  return runOk('mkfs.btrfs', ['-q', '-f', ...args, img]);
}

export interface MountOptions {
  /** Mount options (array or comma string), e.g. ['compress-force=zstd'] or 'ro,subvolid=5'. */
  options?: string[] | string;
  /** Mount read-only (also attaches the loop device read-only). */
  readonly?: boolean;
  /** Use this (existing, empty) directory instead of a fresh temp dir. */
  mountpoint?: string;
}

/** Loop devices/mounts currently held by withMount, for diagnostics. */
export const activeMounts = new Map<string, string>();

async function retry<T>(what: string, fn: () => Promise<T>, tries = 10, delayMs = 300): Promise<T> {
  let last: unknown;
  for (let i = 0; i < tries; i++) {
    try {
      return await fn();
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
  throw new Error(`${what}: ${(last as Error).message}`);
}

/**
 * Attach `img` to a loop device, mount it, run `body(mountpoint)`, and ALWAYS unmount and
 * detach afterwards (also when body throws). Returns body's result.
 */
export async function withMount<T>(
  img: string,
  opts: MountOptions,
  body: (mnt: string) => Promise<T>,
): Promise<T> {
  const ro = opts.readonly === true;
  let options = typeof opts.options === 'string' ? opts.options.split(',').filter(Boolean) : [...(opts.options ?? [])];
  if (ro && !options.includes('ro')) options = ['ro', ...options];
  const ownDir = opts.mountpoint === undefined;
  const mnt = opts.mountpoint ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-mnt-')));
  let dev: string | undefined;
  let mounted = false;
  try {
    const la = await runOk('losetup', [...(ro ? ['-r'] : []), '--find', '--show', img]);
    dev = la.stdout.trim();
    activeMounts.set(mnt, dev);
    await runOk('mount', ['-t', 'btrfs', ...(options.length ? ['-o', options.join(',')] : []), dev, mnt]);
    mounted = true;
    return await body(mnt);
  } finally {
    const errors: string[] = [];
    if (mounted) {
      try {
        await retry(`umount ${mnt}`, () => runOk('umount', [mnt]));
      } catch (e) {
        errors.push((e as Error).message);
        await run('umount', ['-l', mnt]).catch(() => undefined);
      }
    }
    if (dev) {
      try {
        await retry(`losetup -d ${dev}`, async () => {
          await runOk('losetup', ['-d', dev!]);
        });
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    activeMounts.delete(mnt);
    if (ownDir) await fs.rmdir(mnt).catch(() => undefined);
    if (errors.length) {
      // Do not mask an error thrown by body; report cleanup problems loudly either way.
      console.warn(`withMount cleanup problems for ${img}:\n${errors.join('\n')}`);
    }
  }
}

export interface CheckResult {
  /** true when btrfs check exited 0 AND its output reports no error. */
  ok: boolean;
  code: number | null;
  output: string;
  /** Lines of the output that look like problems. */
  problems: string[];
}

/** Lines btrfs check prints that mention "error"-like words but are fine. */
const CHECK_BENIGN = [/no error found/i, /^\s*\[\d\/\d\]/, /^Opening filesystem/i, /^Checking filesystem on/i];
const CHECK_BAD = /error|corrupt|mismatch|fail|invalid|wrong|missing|unresolved|bad |not found|errno|abort|repair|fix/i;

/** `btrfs check --readonly IMG`; reads the output, not only the exit code. */
export async function btrfsCheck(img: string, extraArgs: string[] = []): Promise<CheckResult> {
  const r = await run('btrfs', ['check', '--readonly', ...extraArgs, img]);
  const problems = r.output
    .split('\n')
    .filter((l) => CHECK_BAD.test(l) && !CHECK_BENIGN.some((b) => b.test(l)));
  const ok = r.code === 0 && /no error found/.test(r.output) && problems.length === 0;
  return { ok, code: r.code, output: r.output, problems };
}

/** Judge an already-captured `btrfs check` output (e.g. a fixture's NAME.check.txt). */
export function checkOutputClean(output: string): { ok: boolean; problems: string[] } {
  const problems = output.split('\n').filter((l) => CHECK_BAD.test(l) && !CHECK_BENIGN.some((b) => b.test(l)));
  return { ok: /no error found/.test(output) && problems.length === 0, problems };
}

/** `TZ=UTC btrfs inspect-internal dump-tree [args] IMG` output. */
export async function dumpTree(img: string, args: string[] = []): Promise<string> {
  const r = await runOk('btrfs', ['inspect-internal', 'dump-tree', ...args, img], {
    env: { ...process.env, TZ: 'UTC' },
  });
  return r.stdout;
}

/** `btrfs inspect-internal dump-super IMG` output. */
export async function dumpSuper(img: string, args: string[] = []): Promise<string> {
  return (await runOk('btrfs', ['inspect-internal', 'dump-super', ...args, img])).stdout;
}

// ---------------------------------------------------------------- subvolumes

export interface SubvolumeInfo {
  id: number;
  /** Path relative to the top-level subvolume (id 5), without leading '/'. */
  path: string;
  uuid: string | null;
  parent_uuid: string | null;
  received_uuid: string | null;
  generation: number;
  /** Generation at creation (ogen). */
  ogeneration?: number;
  top_level: number;
  /** From `btrfs property get -ts PATH ro`, when the subvolume is reachable from mnt. */
  ro?: boolean;
}

function nullUuid(s: string | undefined): string | null {
  return s === undefined || s === '-' ? null : s;
}

/**
 * Parse `btrfs subvolume list` output produced with any of -a -u -q -R -g -c (the
 * columns come as "KEY VALUE" pairs, "path" last).
 */
export function parseSubvolumeList(out: string): SubvolumeInfo[] {
  const res: SubvolumeInfo[] = [];
  for (const line of out.split('\n')) {
    if (!line.startsWith('ID ')) continue;
    const pi = line.indexOf(' path ');
    let p = pi >= 0 ? line.slice(pi + ' path '.length) : '';
    const head = pi >= 0 ? line.slice(0, pi) : line;
    p = p.replace(/^<FS_TREE>\/?/, '');
    const num = (re: RegExp) => {
      const m = head.match(re);
      return m ? Number(m[1]) : undefined;
    };
    const str = (re: RegExp) => head.match(re)?.[1];
    res.push({
      id: num(/^ID (\d+)/)!,
      path: p,
      uuid: nullUuid(str(/(?:^| )uuid (\S+)/)),
      parent_uuid: nullUuid(str(/parent_uuid (\S+)/)),
      received_uuid: nullUuid(str(/received_uuid (\S+)/)),
      generation: num(/ gen (\d+)/) ?? 0,
      ogeneration: num(/ cgen (\d+)/),
      top_level: num(/top level (\d+)/) ?? 0,
    });
  }
  return res;
}

/**
 * All subvolumes of the filesystem mounted at `mnt` (`btrfs subvolume list -a -u -q -R -g -c`),
 * plus `ro` from `btrfs property get` when reachable. `mnt` should be a mount of subvolid=5 for
 * the paths to resolve.
 */
export async function subvolumeList(mnt: string): Promise<SubvolumeInfo[]> {
  const r = await runOk('btrfs', ['subvolume', 'list', '-a', '-u', '-q', '-R', '-g', '-c', mnt]);
  const list = parseSubvolumeList(r.stdout);
  for (const s of list) {
    const p = path.join(mnt, s.path);
    if (!s.path || !existsSync(p)) continue;
    const pr = await run('btrfs', ['property', 'get', '-ts', p, 'ro']);
    const m = pr.stdout.match(/ro=(true|false)/);
    if (pr.code === 0 && m) s.ro = m[1] === 'true';
  }
  return list;
}

/** Ids of deleted subvolumes not yet cleaned (`btrfs subvolume list -d`). */
export async function deletedSubvolumes(mnt: string): Promise<number[]> {
  const r = await runOk('btrfs', ['subvolume', 'list', '-d', mnt]);
  return parseSubvolumeList(r.stdout).map((s) => s.id);
}

/** Id of the default subvolume (`btrfs subvolume get-default`). */
export async function defaultSubvolume(mnt: string): Promise<number> {
  const r = await runOk('btrfs', ['subvolume', 'get-default', mnt]);
  const m = r.stdout.match(/ID (\d+)/);
  if (!m) throw new Error(`cannot parse get-default output: ${r.stdout}`);
  return Number(m[1]);
}

/** Loop devices attached to files under `dirPrefix` (from `losetup -a`), for leak checks. */
export async function loopDevicesFor(dirPrefix: string): Promise<string[]> {
  const r = await run('losetup', ['-a']);
  return r.stdout.split('\n').filter((l) => l.includes(dirPrefix));
}

export interface SuperblockInfo {
  uuid: string;
  nodesize: number;
  sectorsize: number;
  csum_type: string;
  generation: number;
  incompat_flags: string[];
  compat_ro_flags: string[];
}

/** Parse `btrfs inspect-internal dump-super` output (key facts only). */
export function parseDumpSuper(out: string): SuperblockInfo {
  const get = (k: string) => {
    const m = out.match(new RegExp(`^${k}\\s+(.*)$`, 'm'));
    if (!m) throw new Error(`dump-super: no ${k}`);
    return m[1].trim();
  };
  const flags = (k: string): string[] => {
    const m = out.match(new RegExp(`^${k}\\s+0x[0-9a-f]+(?:\\n\\s+\\(([^)]*)\\))?`, 'm'));
    if (!m || !m[1]) return [];
    return m[1].split('|').map((s) => s.trim()).filter(Boolean);
  };
  return {
    uuid: get('fsid'),
    nodesize: Number(get('nodesize')),
    sectorsize: Number(get('sectorsize')),
    csum_type: get('csum_type').replace(/^\d+\s+\((.*)\)$/, '$1'),
    generation: Number(get('generation')),
    incompat_flags: flags('incompat_flags'),
    compat_ro_flags: flags('compat_ro_flags'),
  };
}

/** Key superblock facts of an image. */
export async function superblockInfo(img: string): Promise<SuperblockInfo> {
  return parseDumpSuper(await dumpSuper(img));
}
