/**
 * Host filesystem operations that Node's fs module cannot do, backed by the
 * small N-API addon in native/host.c (built by node-gyp into
 * build/Release/host.node on `npm install`):
 *
 * - nanosecond timestamps (fs.utimes takes a double and keeps only ~240 ns),
 * - mknod for character/block devices, fifos and sockets,
 * - extended attributes (Node has no xattr API at all).
 *
 * Only extraction to the host needs these, so the addon is loaded lazily:
 * importing this module never fails, and a missing addon is reported as
 * ENOTSUP when one of the functions is first called.
 *
 * All functions act on the path itself, never on a symlink's target
 * (AT_SYMLINK_NOFOLLOW / the l*xattr family). All are synchronous.
 * Paths and names may be strings (UTF-8) or Buffers (raw bytes, for names
 * that are not valid UTF-8). Failures throw BtrfsError with the errno code,
 * syscall and path, like Node's fs errors.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { BtrfsError, type ErrnoCode } from './errors.js';

export type HostPath = string | Buffer;

interface NativeHost {
  lutimensNs(p: HostPath, as: bigint, ans: number, ms: bigint, mns: number): void;
  mknod(p: HostPath, mode: number, major: number, minor: number): void;
  lsetxattr(p: HostPath, name: HostPath, value: Buffer, flags: number): void;
  lgetxattr(p: HostPath, name: HostPath): Buffer;
  llistxattr(p: HostPath): string[];
  lremovexattr(p: HostPath, name: HostPath): void;
}

/** lsetxattr flags (same values on Linux and macOS). */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

const NS_PER_SEC = 1_000_000_000;

let loaded: { host?: NativeHost; error?: unknown; file?: string } | undefined;

/**
 * The package root is the nearest directory above this module holding our
 * package.json; searching (instead of a fixed '../..') keeps this working
 * from both src/ (ts loaders) and dist/src/ (compiled).
 */
function packageRoot(): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    try {
      const name = (JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: unknown }).name;
      if (name === 'tsbtrfs') return dir;
    } catch {
      // not here (or unreadable): keep climbing
    }
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

function load(): NativeHost {
  if (!loaded) {
    loaded = {};
    const root = packageRoot();
    if (root === undefined) {
      loaded.error = new Error('package root of tsbtrfs not found');
    } else {
      const require = createRequire(import.meta.url);
      for (const kind of ['Release', 'Debug']) {
        const file = path.join(root, 'build', kind, 'host.node');
        if (!fs.existsSync(file)) continue;
        try {
          loaded.host = require(file) as NativeHost;
          loaded.file = file;
          break;
        } catch (e) {
          // a stale build for another Node ABI fails here; report it below
          loaded.error = e;
        }
      }
      if (!loaded.host && loaded.error === undefined) {
        loaded.error = new Error(`${path.join(root, 'build/Release/host.node')} does not exist`);
      }
    }
  }
  if (!loaded.host) {
    const why = loaded.error instanceof Error ? loaded.error.message : String(loaded.error);
    throw new BtrfsError('ENOTSUP', `native helper not built: run npm rebuild (${why})`, { cause: loaded.error });
  }
  return loaded.host;
}

/** True if the addon loads; never throws. */
export function nativeHostAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

const KNOWN: ReadonlySet<string> = new Set<ErrnoCode>([
  'ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'ENOTEMPTY', 'EPERM', 'EACCES',
  'EINVAL', 'EIO', 'EUCLEAN', 'ENOSPC', 'EBUSY', 'EROFS', 'ENODATA',
  'ENAMETOOLONG', 'ELOOP', 'EXDEV', 'EFBIG', 'EMLINK', 'ENOTSUP', 'EBADF',
  'ERANGE', 'E2BIG', 'EOVERFLOW', 'ENOMEM', 'ESTALE', 'EAGAIN', 'EOPNOTSUPP',
]);

// Errnos outside ErrnoCode are folded into the closest known code; the
// original name stays in the message and in `cause`.
const FOLD: Record<string, ErrnoCode> = { EDQUOT: 'ENOSPC', EFAULT: 'EINVAL', ENXIO: 'ENOENT', ETXTBSY: 'EBUSY' };

function showPath(p: HostPath): string {
  return typeof p === 'string' ? p : p.toString('utf8');
}

function call<T>(syscall: string, p: HostPath, fn: (h: NativeHost) => T): T {
  const h = load();
  try {
    return fn(h);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const raw = typeof err?.code === 'string' ? err.code : 'EIO';
    const code: ErrnoCode = KNOWN.has(raw) ? (raw as ErrnoCode) : FOLD[raw] ?? 'EIO';
    // drop the native "CODE: " prefix and the ", syscall 'path'" suffix: BtrfsError re-adds both
    let detail = typeof err?.message === 'string' ? err.message : String(e);
    detail = detail.replace(/^[A-Z0-9_]+: /, '').replace(/, [a-z]+ '.*'$/s, '');
    if (code !== raw) detail += ` (${raw})`;
    throw new BtrfsError(code, detail, { syscall: err?.syscall ?? syscall, path: err?.path ?? showPath(p), cause: e });
  }
}

function checkPath(p: unknown, what: string, syscall: string): asserts p is HostPath {
  if (typeof p !== 'string' && !Buffer.isBuffer(p)) {
    throw new BtrfsError('EINVAL', `${what} must be a string or Buffer`, { syscall });
  }
  const bytes = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
  if (bytes.includes(0)) {
    throw new BtrfsError('EINVAL', `${what} must not contain NUL bytes`, { syscall, path: showPath(p) });
  }
}

function checkNsec(v: number, what: string, p: HostPath): void {
  if (!Number.isInteger(v) || v < 0 || v >= NS_PER_SEC) {
    throw new BtrfsError('EINVAL', `${what} must be an integer in 0..999999999, got ${v}`, { syscall: 'utimensat', path: showPath(p) });
  }
}

/**
 * Sets atime and mtime of `p` (not a symlink's target) to the exact
 * nanosecond. Seconds are signed 64-bit (times before 1970 are negative);
 * nanoseconds must be 0..999999999. ctime is set by the kernel to now and
 * cannot be chosen.
 */
export function lutimensNs(p: HostPath, atimeSec: bigint, atimeNsec: number, mtimeSec: bigint, mtimeNsec: number): void {
  checkPath(p, 'path', 'utimensat');
  checkNsec(atimeNsec, 'atimeNsec', p);
  checkNsec(mtimeNsec, 'mtimeNsec', p);
  if (typeof atimeSec !== 'bigint' || typeof mtimeSec !== 'bigint') {
    throw new BtrfsError('EINVAL', 'seconds must be bigints', { syscall: 'utimensat', path: showPath(p) });
  }
  call('utimensat', p, (h) => h.lutimensNs(p, atimeSec, atimeNsec, mtimeSec, mtimeNsec));
}

/**
 * Creates a special file. `mode` holds the type (fs.constants.S_IFCHR,
 * S_IFBLK, S_IFIFO or S_IFSOCK) or'ed with permission bits, which the
 * process umask reduces as with mknod(2): chmod afterwards for exact bits.
 * major/minor are used only for device nodes. Device nodes need
 * CAP_MKNOD (EPERM otherwise).
 */
export function mknod(p: HostPath, mode: number, major = 0, minor = 0): void {
  checkPath(p, 'path', 'mknod');
  for (const [what, v] of [['mode', mode], ['major', major], ['minor', minor]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
      throw new BtrfsError('EINVAL', `${what} must be a 32-bit unsigned integer, got ${v}`, { syscall: 'mknod', path: showPath(p) });
    }
  }
  call('mknod', p, (h) => h.mknod(p, mode, major, minor));
}

/**
 * Sets extended attribute `name` (namespace included, e.g. "user.foo") on
 * `p` itself. flags: 0, XATTR_CREATE (EEXIST if present) or XATTR_REPLACE
 * (ENODATA if absent).
 */
export function lsetxattr(p: HostPath, name: HostPath, value: Uint8Array, flags = 0): void {
  checkPath(p, 'path', 'lsetxattr');
  checkPath(name, 'name', 'lsetxattr');
  if (!(value instanceof Uint8Array)) {
    throw new BtrfsError('EINVAL', 'value must be a Buffer or Uint8Array', { syscall: 'lsetxattr', path: showPath(p) });
  }
  if (flags !== 0 && flags !== XATTR_CREATE && flags !== XATTR_REPLACE) {
    throw new BtrfsError('EINVAL', `flags must be 0, XATTR_CREATE or XATTR_REPLACE, got ${flags}`, { syscall: 'lsetxattr', path: showPath(p) });
  }
  const buf = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  call('lsetxattr', p, (h) => h.lsetxattr(p, name, buf, flags));
}

/** The value of extended attribute `name` of `p`; ENODATA if it has none. */
export function lgetxattr(p: HostPath, name: HostPath): Buffer {
  checkPath(p, 'path', 'lgetxattr');
  checkPath(name, 'name', 'lgetxattr');
  return call('lgetxattr', p, (h) => h.lgetxattr(p, name));
}

/**
 * Names of the extended attributes of `p` visible to this process (the
 * kernel hides trusted.* from non-root), in the kernel's order, decoded as
 * UTF-8.
 */
export function llistxattr(p: HostPath): string[] {
  checkPath(p, 'path', 'llistxattr');
  return call('llistxattr', p, (h) => h.llistxattr(p));
}

/** Removes extended attribute `name` of `p`; ENODATA if it has none. */
export function lremovexattr(p: HostPath, name: HostPath): void {
  checkPath(p, 'path', 'lremovexattr');
  checkPath(name, 'name', 'lremovexattr');
  call('lremovexattr', p, (h) => h.lremovexattr(p, name));
}
