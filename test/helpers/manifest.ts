/**
 * The referee's view of a directory tree on the host.
 *
 * `manifestOf(root)` walks a tree (a kernel mount of a btrfs image, or a tree
 * extracted by tsbtrfs) with `lstat` and records, per path, everything that a
 * faithful btrfs reader/writer must reproduce. `diffManifests(a, b)` compares two
 * such manifests and returns human-readable differences (empty array = equal).
 *
 * Paths are relative to the root, POSIX style: '/' for the root itself, '/a/b'
 * otherwise. Keys of a Manifest are sorted (byte order of the UTF-16 string).
 *
 * Extended attributes come from ONE `getfattr -R -h -d -m - -e base64
 * --absolute-names ROOT` call per tree. With `-m -` getfattr lists every
 * namespace the kernel returns from listxattr(2), INCLUDING `system.*` names
 * such as `system.posix_acl_access` / `system.posix_acl_default` (checked on
 * Linux 6.x with attr 2.5.1), plus `security.*`, `trusted.*` (root only) and
 * btrfs' own `btrfs.compression` property xattr. Values are the raw bytes,
 * base64-encoded (without getfattr's "0s" prefix); an empty value is "".
 *
 * Usage as a script: `node dist/test/helpers/manifest.js DIR` prints the
 * manifest of DIR as JSON (one entry per line) on stdout.
 */
import { promises as fs } from 'node:fs';
import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export type EntryType = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';

export interface ManifestEntry {
  type: EntryType;
  /** Permission bits including suid/sgid/sticky (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Files: byte length; symlinks: length of the target in bytes. Absent for dirs and special files. */
  size?: number;
  /** Directories only: st_size as reported by the host fs. btrfs reports 2 x (sum of name lengths);
   *  other host filesystems report something else, so diffManifests ignores it unless strictDirs. */
  dir_size?: number;
  /** Files only: hex sha256 of the contents. */
  sha256?: string;
  /** Symlinks only: the link target. */
  target?: string;
  /** xattr name -> base64 of the raw value ('' for an empty value). Always present, maybe {}. */
  xattrs: Record<string, string>;
  /** st_nlink. Note btrfs reports nlink=1 for every directory; most other fs report 2+subdirs
   *  (ignored for dirs by diffManifests unless strictDirs). */
  nlink: number;
  /** Char/block devices only. */
  rdev?: { major: number; minor: number };
  /** st_mtime in nanoseconds since the epoch, as a decimal string (may be negative). */
  mtime_ns: string;
  /** st_ino as a decimal string. Not comparable across copies; ignored by diffManifests unless compareIno. */
  ino: string;
  /** For entries with nlink > 1 that are not directories: the smallest path (in the manifest's sort
   *  order) among the paths in this tree that share the same inode (st_dev + st_ino). Lets two
   *  manifests agree on which names are hard links of each other independent of inode numbers. */
  hardlink_group?: string;
  /** True when st_dev differs from the parent directory's (a btrfs subvolume root as seen by the
   *  kernel, or a mount point). Absent otherwise. */
  dev_boundary?: true;
  /** A directory the kernel synthesises in a snapshot where the snapshotted subvolume had a nested
   *  subvolume (btrfs BTRFS_EMPTY_SUBVOL_DIR_OBJECTID: st_ino 2, own st_dev, empty, mode 0755).
   *  Nothing of it is stored on disk except the parent's dir entry, and its mtime is the time the
   *  kernel looked it up, so diffManifests never compares its mtime_ns. Detected as: a directory,
   *  not the root, st_ino 2, st_dev different from its parent's. */
  subvol_placeholder?: true;
}

export type Manifest = Record<string, ManifestEntry>;

export interface ManifestOptions {
  /** Skip xattr collection (no getfattr call). Default false. */
  noXattrs?: boolean;
  /** Skip hashing of file contents. Default false. */
  noHash?: boolean;
}

/** Linux dev_t decoding (glibc gnu_dev_major/minor). */
export function devMajor(rdev: bigint): number {
  return Number(((rdev >> 32n) & 0xfffff000n) | ((rdev >> 8n) & 0xfffn));
}
export function devMinor(rdev: bigint): number {
  return Number(((rdev >> 12n) & 0xffffff00n) | (rdev & 0xffn));
}

function typeOf(st: import('node:fs').BigIntStats): EntryType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  throw new Error(`unknown file type, mode ${st.mode.toString(8)}`);
}

export async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    const s = createReadStream(p, { highWaterMark: 1 << 20 });
    s.on('data', (c) => h.update(c));
    s.on('error', reject);
    s.on('end', () => resolve());
  });
  return h.digest('hex');
}

/** Undo getfattr's quoting: `\ooo` octal escapes (used for control chars, '\\', '=' and spaces in
 *  some versions). Works on a latin1 ("binary") string so that multi-byte UTF-8 passes through. */
function unquote(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function runCapture(cmd: string, args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }),
    );
  });
}

/**
 * Parse `getfattr -R -h -d -m - -e base64 --absolute-names` output into
 * absolute path -> (name -> base64 value).
 */
export function parseGetfattr(out: Buffer): Map<string, Record<string, string>> {
  const res = new Map<string, Record<string, string>>();
  const text = out.toString('latin1');
  let cur: Record<string, string> | null = null;
  for (const rawLine of text.split('\n')) {
    if (rawLine === '') {
      cur = null;
      continue;
    }
    if (rawLine.startsWith('# file: ')) {
      const p = Buffer.from(unquote(rawLine.slice('# file: '.length)), 'latin1').toString('utf8');
      cur = {};
      res.set(p, cur);
      continue;
    }
    if (cur === null) throw new Error(`getfattr output: unexpected line ${JSON.stringify(rawLine)}`);
    const eq = rawLine.indexOf('=');
    const rawName = eq < 0 ? rawLine : rawLine.slice(0, eq);
    const name = Buffer.from(unquote(rawName), 'latin1').toString('utf8');
    let value = '';
    if (eq >= 0) {
      const v = rawLine.slice(eq + 1);
      if (v.startsWith('0s')) value = v.slice(2);
      else if (v.startsWith('0x')) value = Buffer.from(v.slice(2), 'hex').toString('base64');
      else if (v.startsWith('"') && v.endsWith('"'))
        value = Buffer.from(unquote(v.slice(1, -1)), 'latin1').toString('base64');
      else throw new Error(`getfattr output: cannot decode value in ${JSON.stringify(rawLine)}`);
    }
    // Normalise base64 (getfattr emits canonical padding already; round-trip to be safe).
    cur[name] = Buffer.from(value, 'base64').toString('base64');
  }
  return res;
}

/** Collect all xattrs of every entry under root (absolute paths as keys). */
export async function collectXattrs(root: string): Promise<Map<string, Record<string, string>>> {
  let r;
  try {
    r = await runCapture('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', root]);
  } catch (e) {
    throw new Error(`cannot run getfattr (install the "attr" package): ${(e as Error).message}`);
  }
  if (r.code !== 0 || r.stderr.trim() !== '') {
    throw new Error(`getfattr -R ${root} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
  return parseGetfattr(r.stdout);
}

function rel(root: string, p: string): string {
  if (p === root) return '/';
  return '/' + path.relative(root, p).split(path.sep).join('/');
}

/** Walk `root` and build its manifest. */
export async function manifestOf(root: string, opts: ManifestOptions = {}): Promise<Manifest> {
  const absRoot = path.resolve(root);
  const xattrs = opts.noXattrs ? new Map<string, Record<string, string>>() : await collectXattrs(absRoot);
  const entries = new Map<string, ManifestEntry>();
  const inodes = new Map<string, string[]>();

  const visit = async (abs: string, parentDev: bigint | null): Promise<void> => {
    const st = await fs.lstat(abs, { bigint: true });
    const type = typeOf(st);
    const key = rel(absRoot, abs);
    const e: ManifestEntry = {
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      xattrs: xattrs.get(abs) ?? {},
      nlink: Number(st.nlink),
      mtime_ns: st.mtimeNs.toString(),
      ino: st.ino.toString(),
    };
    if (parentDev !== null && st.dev !== parentDev) e.dev_boundary = true;
    if (type === 'dir' && parentDev !== null && st.dev !== parentDev && st.ino === 2n) e.subvol_placeholder = true;
    if (type === 'file') {
      e.size = Number(st.size);
      if (!opts.noHash) e.sha256 = await sha256File(abs);
    } else if (type === 'symlink') {
      const t = await fs.readlink(abs, { encoding: 'buffer' });
      e.size = t.length;
      e.target = t.toString('utf8');
    } else if (type === 'dir') {
      e.dir_size = Number(st.size);
    } else if (type === 'chardev' || type === 'blockdev') {
      e.rdev = { major: devMajor(st.rdev), minor: devMinor(st.rdev) };
    }
    entries.set(key, e);
    if (type !== 'dir' && st.nlink > 1n) {
      const id = `${st.dev}:${st.ino}`;
      const list = inodes.get(id);
      if (list) list.push(key);
      else inodes.set(id, [key]);
    }
    if (type === 'dir') {
      const names = await fs.readdir(abs);
      names.sort();
      for (const n of names) await visit(path.join(abs, n), st.dev);
    }
  };
  await visit(absRoot, null);
  return finishManifest(entries, inodes);
}

/**
 * Completes a walk: names sharing an inode get the smallest of them as their
 * hardlink_group, and entries come out in sorted path order.
 */
export function finishManifest(entries: Map<string, ManifestEntry>, inodes: Map<string, string[]>): Manifest {
  for (const list of inodes.values()) {
    list.sort(cmp);
    for (const k of list) entries.get(k)!.hardlink_group = list[0];
  }
  const out: Manifest = {};
  for (const k of [...entries.keys()].sort(cmp)) out[k] = entries.get(k)!;
  return out;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface DiffOptions {
  /** Fields never compared (e.g. ['mtime_ns'] or ['uid','gid'] for an unprivileged extraction). */
  ignore?: Array<keyof ManifestEntry>;
  /** Compare dir_size and directory nlink (only meaningful btrfs-vs-btrfs). Default false. */
  strictDirs?: boolean;
  /** Compare inode numbers. Default false. */
  compareIno?: boolean;
  /** Compare dev_boundary and subvol_placeholder markers (btrfs kernel mount vs btrfs kernel mount). Default false. */
  compareDevBoundary?: boolean;
  /** Compare symlink mtimes (many copy tools do not preserve them). Default true. */
  symlinkMtime?: boolean;
  /** Compare directory mtimes. Default true. */
  dirMtime?: boolean;
  /** Paths (and their subtrees) to leave out of the comparison, e.g. ['/lost+found']. */
  excludePaths?: string[];
  /** Predicate: return true to leave a path out. */
  exclude?: (p: string) => boolean;
  /** xattr names to ignore (exact names or RegExp), e.g. [/^security\.selinux$/]. */
  ignoreXattrs?: Array<string | RegExp>;
  /** Stop after this many differences (default 200). */
  maxDiffs?: number;
}

function fmt(v: unknown): string {
  return v === undefined ? 'undefined' : JSON.stringify(v);
}

/**
 * Differences between manifest `a` (expected) and `b` (actual) as readable strings,
 * e.g. "/x/y: mode expected 0o644 got 0o600". Empty array when equal.
 */
export function diffManifests(a: Manifest, b: Manifest, opts: DiffOptions = {}): string[] {
  const ignore = new Set<string>(opts.ignore ?? []);
  if (!opts.compareIno) ignore.add('ino');
  if (!opts.compareDevBoundary) {
    ignore.add('dev_boundary');
    ignore.add('subvol_placeholder');
  }
  const max = opts.maxDiffs ?? 200;
  const excluded = (p: string) =>
    (opts.exclude?.(p) ?? false) ||
    (opts.excludePaths ?? []).some((x) => p === x || p.startsWith(x.endsWith('/') ? x : x + '/'));
  const xattrIgnored = (n: string) =>
    (opts.ignoreXattrs ?? []).some((r) => (typeof r === 'string' ? r === n : r.test(n)));
  const diffs: string[] = [];
  const push = (s: string) => {
    if (diffs.length < max) diffs.push(s);
    else if (diffs.length === max) diffs.push('... (more differences omitted)');
  };
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort(cmp);
  for (const k of keys) {
    if (diffs.length > max) break;
    if (excluded(k)) continue;
    const ea = a[k];
    const eb = b[k];
    if (!ea) {
      push(`${k}: unexpected ${eb!.type} (only in actual)`);
      continue;
    }
    if (!eb) {
      push(`${k}: missing ${ea.type} (only in expected)`);
      continue;
    }
    if (ea.type !== eb.type) {
      push(`${k}: type expected ${ea.type} got ${eb.type}`);
      continue;
    }
    const fields: Array<keyof ManifestEntry> = [
      'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'nlink', 'rdev', 'mtime_ns', 'ino',
      'hardlink_group', 'dev_boundary', 'subvol_placeholder', 'dir_size',
    ];
    for (const f of fields) {
      if (ignore.has(f)) continue;
      if (ea.type === 'dir' && !opts.strictDirs && (f === 'dir_size' || f === 'nlink')) continue;
      if (f === 'mtime_ns' && ea.type === 'symlink' && opts.symlinkMtime === false) continue;
      if (f === 'mtime_ns' && ea.type === 'dir' && opts.dirMtime === false) continue;
      if (f === 'mtime_ns' && (ea.subvol_placeholder || eb.subvol_placeholder)) continue;
      const va = ea[f];
      const vb = eb[f];
      if (JSON.stringify(va) !== JSON.stringify(vb)) {
        const show = (v: unknown) => (f === 'mode' && typeof v === 'number' ? '0o' + v.toString(8) : fmt(v));
        push(`${k}: ${f} expected ${show(va)} got ${show(vb)}`);
      }
    }
    if (!ignore.has('xattrs')) {
      const names = [...new Set([...Object.keys(ea.xattrs ?? {}), ...Object.keys(eb.xattrs ?? {})])].sort(cmp);
      for (const n of names) {
        if (xattrIgnored(n)) continue;
        const xa = ea.xattrs?.[n];
        const xb = eb.xattrs?.[n];
        if (xa === undefined) push(`${k}: unexpected xattr ${n}`);
        else if (xb === undefined) push(`${k}: missing xattr ${n}`);
        else if (xa !== xb) push(`${k}: xattr ${n} expected ${short(xa)} got ${short(xb)}`);
      }
    }
  }
  return diffs;
}

function short(b64: string): string {
  return b64.length > 40 ? `${b64.slice(0, 37)}...(${Buffer.from(b64, 'base64').length} bytes)` : `base64:${b64}`;
}

/** Serialise a manifest as JSON with one entry per line (compact yet diff-friendly). */
export function manifestToJson(m: Manifest, indent = ''): string {
  const keys = Object.keys(m);
  if (keys.length === 0) return '{}';
  const lines = keys.map((k) => `${indent}  ${JSON.stringify(k)}: ${JSON.stringify(m[k])}`);
  return `{\n${lines.join(',\n')}\n${indent}}`;
}

// CLI: node dist/test/helpers/manifest.js DIR [--no-xattrs] [--no-hash]
const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const args = process.argv.slice(2);
  const dir = args.find((a) => !a.startsWith('--'));
  if (!dir) {
    process.stderr.write('usage: node manifest.js DIR [--no-xattrs] [--no-hash]\n');
    process.exit(2);
  }
  manifestOf(dir, { noXattrs: args.includes('--no-xattrs'), noHash: args.includes('--no-hash') }).then(
    (m) => process.stdout.write(manifestToJson(m) + '\n'),
    (e: Error) => {
      process.stderr.write(`manifest: ${e.message}\n`);
      process.exit(1);
    },
  );
}
