/**
 * Inter-process exclusion for writers of an image.
 *
 * The lock is a directory created with mkdir (atomic on every local and
 * network filesystem), managed by proper-lockfile, which refreshes its mtime
 * while held so a lock whose holder vanished goes stale after `staleMs`.
 * Inside the directory we record the holder (owner.json: pid, hostname,
 * boot id, process start time). That record lets us
 *  - name the holder in the EBUSY message,
 *  - recover at once a lock left by a process that was SIGKILLed or died
 *    with the machine (same hostname, pid gone / reused / zombie, or another
 *    boot), instead of waiting out the mtime staleness,
 *  - refuse to break a lock whose holder is alive on this machine even if
 *    its mtime is old (its event loop may just have been blocked).
 * Holders on other machines are judged by mtime staleness alone.
 *
 * Where the lock lives: beside a regular image as `<realpath>.lock`; for a
 * block device (or an image in a directory we cannot write) in
 * `$TSBTRFS_LOCK_DIR` or `<os.tmpdir()>/tsbtrfs-locks/`, named after the
 * escaped real path, since /dev is no place for lock directories.
 * Every process must see the same tmpdir for block-device locks to exclude
 * each other.
 *
 * Locks are released by `release()` and, through proper-lockfile's exit
 * hook, when the process exits or dies of a catchable signal.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { BtrfsError } from '../util/errors.js';

/** What a holder records about itself inside the lock directory. */
export interface LockOwner {
  pid: number;
  hostname: string;
  /** /proc/sys/kernel/random/boot_id, if readable: a reboot frees every lock */
  bootId?: string;
  /** wall-clock start of the holding process (ISO 8601) */
  startedAt: string;
  /** field 22 of /proc/PID/stat, to tell a reused pid from the holder */
  procStart?: string;
  /** when the lock was taken (ISO 8601) */
  lockedAt: string;
  /** canonical path of the locked image */
  image: string;
}

/** The state of a lock as seen from outside, from readLockHolder. */
export interface LockHolder {
  lockPath: string;
  /** undefined while the holder is still writing its record, or if it died before */
  owner?: LockOwner;
  /** true/false when the holder is on this machine; undefined when that cannot be told */
  alive?: boolean;
  /** true if a new locker would take the lock over */
  stale: boolean;
  /** ms since the holder last refreshed the lock */
  ageMs: number;
}

export interface ImageLock {
  /** canonical path of the locked image */
  readonly image: string;
  readonly lockPath: string;
  readonly owner: LockOwner;
  /**
   * Set if the lock was removed or replaced behind our back (another
   * machine judged it stale). Writing on is then unsafe.
   */
  readonly compromised: BtrfsError | undefined;
  /** Removes the lock; further calls do nothing. */
  release(): Promise<void>;
}

export interface LockOptions {
  /** ms without refresh after which a holder on another machine is presumed dead; default 10000, minimum 2000 */
  staleMs?: number;
  /** lock as a block device (lock file in the lock dir); default: from stat */
  blockDevice?: boolean;
  /**
   * How long to keep trying while another process holds the lock (ms);
   * default 0: EBUSY at once. A moment's wait lets a command get past a
   * sender that holds the lock only to register itself. A lock held by this
   * very process is refused at once whatever this says: waiting on ourselves
   * would never end.
   */
  waitMs?: number;
}

const OWNER = 'owner.json';
const OWNER_TMP = 'owner.json.tmp';
const DEFAULT_STALE_MS = 10_000;
/** a breaker that died mid-break leaves its guard; ignore guards older than this */
const GUARD_STALE_MS = 5_000;

/** Lock paths this process holds, to tell our own live lock from a leftover with our pid. */
const held = new Set<string>();

function readOr(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Fields after the parenthesised comm of /proc/PID/stat (comm may contain spaces). */
function procStat(pid: number | 'self'): string[] | undefined {
  const s = readOr(`/proc/${pid}/stat`);
  if (s === undefined) return undefined;
  return s.slice(s.lastIndexOf(')') + 2).split(' ');
}

/** Who a process is, well enough to tell later whether it still runs (pid reuse and reboots included). */
export type ProcessRecord = Omit<LockOwner, 'lockedAt' | 'image'>;

let self: ProcessRecord | undefined;
/** This process's record. */
export function selfInfo(): ProcessRecord {
  if (!self) {
    const bootId = readOr('/proc/sys/kernel/random/boot_id');
    const procStart = procStat('self')?.[19];
    self = {
      pid: process.pid,
      hostname: os.hostname(),
      startedAt: new Date(Date.now() - process.uptime() * 1000).toISOString(),
      ...(bootId ? { bootId } : {}),
      ...(procStart ? { procStart } : {}),
    };
  }
  return self;
}

/** Whether the recorded holder still runs; undefined if it is on another machine. */
function holderAlive(owner: LockOwner, lockPath: string): boolean | undefined {
  // Our own pid: live only if we hold it now; otherwise it is a leftover
  // from an earlier process that had our pid (common in containers).
  return processAlive(owner, () => held.has(lockPath));
}

/**
 * Whether the process a record describes still runs: false once its pid is
 * gone, reused, a zombie, or from another boot; undefined for a process on
 * another machine. `mine` decides for records carrying this process's pid.
 */
export function processAlive(owner: ProcessRecord, mine: () => boolean): boolean | undefined {
  const me = selfInfo();
  if (owner.hostname !== me.hostname) return undefined;
  if (owner.bootId && me.bootId && owner.bootId !== me.bootId) return false;
  if (owner.pid === me.pid) return mine();
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    // EPERM: exists but belongs to another user
  }
  const st = procStat(owner.pid);
  if (st) {
    // a killed child nobody has reaped yet is a zombie: gone for our purposes
    if (st[0] === 'Z' || st[0] === 'X') return false;
    if (owner.procStart && st[19] !== owner.procStart) return false;
  }
  return true;
}

function staleMsOf(opts: LockOptions): number {
  return Math.max(opts.staleMs ?? DEFAULT_STALE_MS, 2000);
}

function lockDirBase(): string {
  return process.env.TSBTRFS_LOCK_DIR ?? path.join(os.tmpdir(), 'tsbtrfs-locks');
}

/**
 * Where the lock of the image at canonical path `real` lives. Pure apart
 * from checking whether the image's directory is writable.
 */
export function lockPathFor(real: string, blockDevice: boolean): string {
  if (!blockDevice) {
    try {
      fs.accessSync(path.dirname(real), fs.constants.W_OK);
      return `${real}.lock`;
    } catch {
      // fall through to the shared lock directory
    }
  }
  let name = encodeURIComponent(real);
  if (name.length > 200) {
    // keep names under NAME_MAX; the hash keeps them distinct
    const hash = crypto.createHash('sha256').update(real).digest('hex').slice(0, 32);
    name = `${name.slice(0, 100)}-${hash}`;
  }
  return path.join(lockDirBase(), `${name}.lock`);
}

async function ensureLockDirBase(lockPath: string): Promise<void> {
  const dir = path.dirname(lockPath);
  if (dir !== lockDirBase()) return;
  const created = await fsp.mkdir(dir, { recursive: true });
  // shared by all users, like /tmp itself
  if (created !== undefined) await fsp.chmod(dir, 0o1777).catch(() => undefined);
}

async function resolveImage(imagePath: string, opts: LockOptions): Promise<{ real: string; lockPath: string }> {
  let real: string;
  let block = opts.blockDevice;
  try {
    real = await fsp.realpath(imagePath);
    if (block === undefined) block = (await fsp.stat(real)).isBlockDevice();
  } catch (e) {
    throw fsError(e, 'realpath', imagePath);
  }
  return { real, lockPath: lockPathFor(real, block) };
}

function fsError(e: unknown, syscall: string, p: string): BtrfsError {
  const code = (e as NodeJS.ErrnoException)?.code;
  const known = code === 'ENOENT' || code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
    || code === 'ENOTDIR' || code === 'ELOOP' || code === 'ENOSPC' || code === 'EBUSY';
  return new BtrfsError(known ? code : 'EIO', (e as Error)?.message ?? String(e), { syscall, path: p, cause: e });
}

async function readOwner(lockPath: string): Promise<LockOwner | undefined> {
  try {
    const o = JSON.parse(await fsp.readFile(path.join(lockPath, OWNER), 'utf8')) as Partial<LockOwner>;
    if (typeof o.pid !== 'number' || typeof o.hostname !== 'string') return undefined;
    return o as LockOwner;
  } catch {
    return undefined;
  }
}

interface Assessment extends LockHolder {
  ino: number;
}

async function assess(lockPath: string, staleMs: number): Promise<Assessment | null> {
  let st: fs.Stats;
  try {
    st = await fsp.stat(lockPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw fsError(e, 'stat', lockPath);
  }
  const owner = await readOwner(lockPath);
  // proper-lockfile sets mtimes slightly in the future; report those as fresh
  const ageMs = Math.max(0, Date.now() - st.mtimeMs);
  const alive = owner ? holderAlive(owner, lockPath) : undefined;
  const stale = alive === false || (alive === undefined && ageMs > staleMs);
  return { lockPath, ...(owner ? { owner } : {}), ...(alive !== undefined ? { alive } : {}), stale, ageMs, ino: st.ino };
}

function busy(image: string, h: LockHolder): BtrfsError {
  const o = h.owner;
  if (!o) {
    return new BtrfsError('EBUSY', `image in use by another process (holder not recorded; lock ${h.lockPath})`, { path: image });
  }
  const where = o.hostname === os.hostname() ? '' : ` on ${o.hostname}`;
  return new BtrfsError('EBUSY', `image in use by pid ${o.pid}${where} (process started ${o.startedAt}, locked ${o.lockedAt}, lock ${h.lockPath})`, { path: image });
}

/**
 * Removes a stale lock (dead holder, or not refreshed for staleMs).
 * Breakers serialise on a guard directory and, under it, re-check that the
 * lock is still the one they judged (same inode and holder record) and
 * still stale. Without this, two processes that saw the same dead holder
 * could each remove the lock the other had just taken; the inode alone is
 * not enough since filesystems reuse inode numbers at once.
 */
async function breakStaleLock(lockPath: string, seen: Assessment, staleMs: number): Promise<void> {
  const guard = `${lockPath}.break`;
  try {
    await fsp.mkdir(guard);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(e, 'mkdir', guard);
    const st = await fsp.stat(guard).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > GUARD_STALE_MS) await fsp.rmdir(guard).catch(() => undefined);
    // someone else is breaking it (or we just cleared a dead breaker): let the caller retry
    return;
  }
  try {
    const now = await assess(lockPath, staleMs);
    if (now && now.stale && now.ino === seen.ino && sameOwner(now.owner, seen.owner)) await removeLockDir(lockPath);
  } finally {
    await fsp.rmdir(guard).catch(() => undefined);
  }
}

function sameOwner(a: LockOwner | undefined, b: LockOwner | undefined): boolean {
  if (!a || !b) return a === b;
  return a.pid === b.pid && a.hostname === b.hostname && a.lockedAt === b.lockedAt;
}

async function removeLockDir(lockPath: string): Promise<void> {
  for (const f of [OWNER, OWNER_TMP]) await fsp.unlink(path.join(lockPath, f)).catch(() => undefined);
  await fsp.rmdir(lockPath).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw fsError(e, 'rmdir', lockPath);
  });
}

type Cb = (err: NodeJS.ErrnoException | null, ...rest: unknown[]) => void;

/**
 * The fs proper-lockfile works through. mkdir writes the owner record
 * before proper-lockfile probes the directory's mtime, so the record never
 * disturbs its refresh check; rmdir empties the directory first, since
 * proper-lockfile removes locks with a plain rmdir (also in its exit hook,
 * hence rmdirSync).
 */
function ownerFs(owner: LockOwner): object {
  const record = JSON.stringify(owner);
  return {
    mkdir(p: string, cb: Cb): void {
      fs.mkdir(p, (err) => {
        if (err) return cb(err);
        const tmp = path.join(p, OWNER_TMP);
        // written then renamed so a reader never sees a half-written record
        fs.writeFile(tmp, record, (werr) => {
          if (werr) return fs.rm(p, { recursive: true, force: true }, () => cb(werr));
          fs.rename(tmp, path.join(p, OWNER), (rerr) => {
            if (rerr) return fs.rm(p, { recursive: true, force: true }, () => cb(rerr));
            cb(null);
          });
        });
      });
    },
    rmdir(p: string, cb: Cb): void {
      fs.unlink(path.join(p, OWNER), () => fs.unlink(path.join(p, OWNER_TMP), () => fs.rmdir(p, cb)));
    },
    rmdirSync(p: string): void {
      for (const f of [OWNER, OWNER_TMP]) {
        try { fs.unlinkSync(path.join(p, f)); } catch { /* already gone */ }
      }
      fs.rmdirSync(p);
    },
    stat: fs.stat,
    utimes: fs.utimes,
    realpath: fs.realpath,
  };
}

/**
 * Takes the write lock of the image at `imagePath` (a file or block device
 * that must exist). Fails with EBUSY naming the holder if another process,
 * or another open in this process, holds it (after `waitMs` of retries for
 * another process); takes over a lock whose holder is dead. The lock is
 * released by `release()` or at process exit.
 */
export async function acquireImageLock(imagePath: string, opts: LockOptions = {}): Promise<ImageLock> {
  const staleMs = staleMsOf(opts);
  const { real, lockPath } = await resolveImage(imagePath, opts);
  await ensureLockDirBase(lockPath).catch((e: unknown) => { throw fsError(e, 'mkdir', path.dirname(lockPath)); });
  const deadline = Date.now() + Math.max(0, opts.waitMs ?? 0);
  for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
    try {
      return await acquireOnce(real, lockPath, staleMs);
    } catch (e) {
      const left = deadline - Date.now();
      // our own lock will not go away while we wait for it
      if (!(e instanceof BtrfsError) || e.code !== 'EBUSY' || left <= 0 || held.has(lockPath)) throw e;
      await new Promise((r) => setTimeout(r, Math.min(delay, left)));
    }
  }
}

async function acquireOnce(real: string, lockPath: string, staleMs: number): Promise<ImageLock> {
  let last: Assessment | null = null;
  for (let attempt = 0; attempt < 8; attempt++) {
    if (held.has(lockPath)) {
      const mine = await assess(lockPath, staleMs);
      throw mine ? busy(real, mine) : new BtrfsError('EBUSY', `image in use by pid ${process.pid} (this process)`, { path: real });
    }
    last = await assess(lockPath, staleMs);
    if (last && !last.stale) throw busy(real, last);
    if (last) {
      // Stale: break it ourselves, under the guard. proper-lockfile would
      // also remove a lock stale by mtime, but without re-checking what it
      // removes; it is left to do so only in the window after this check.
      await breakStaleLock(lockPath, last, staleMs);
      // if the guard was busy the lock may still be there: back off a little
      if (attempt > 0) await new Promise((r) => setTimeout(r, 20 * attempt));
    }
    const owner: LockOwner = { ...selfInfo(), lockedAt: new Date().toISOString(), image: real };
    let compromised: BtrfsError | undefined;
    let release: () => Promise<void>;
    try {
      release = await lockfile.lock(real, {
        lockfilePath: lockPath,
        realpath: false,
        stale: staleMs,
        retries: 0,
        fs: ownerFs(owner),
        onCompromised: (err: Error) => {
          held.delete(lockPath);
          compromised = new BtrfsError('EBUSY', `lock lost: ${err.message}`, { path: real, cause: err });
        },
      });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ELOCKED') continue;
      throw fsError(e, 'mkdir', lockPath);
    }
    held.add(lockPath);
    let released = false;
    return {
      image: real,
      lockPath,
      owner,
      get compromised() { return compromised; },
      async release(): Promise<void> {
        if (released) return;
        released = true;
        held.delete(lockPath);
        if (compromised) return;
        try {
          await release();
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ERELEASED') return;
          throw fsError(e, 'rmdir', lockPath);
        }
      },
    };
  }
  if (last?.stale) {
    // we kept losing the race to take over an abandoned lock
    throw new BtrfsError('EBUSY', `abandoned lock ${lockPath} is being taken over by another process`, { path: real });
  }
  throw busy(real, last ?? { lockPath, stale: false, ageMs: 0 });
}

/**
 * Who holds the write lock of the image at `imagePath`, or null if nobody
 * does. A stale lock (dead holder) is reported with `stale: true` rather
 * than hidden, so a caller can tell "free" from "abandoned".
 */
export async function readLockHolder(imagePath: string, opts: LockOptions = {}): Promise<LockHolder | null> {
  const { lockPath } = await resolveImage(imagePath, opts);
  const a = await assess(lockPath, staleMsOf(opts));
  if (!a) return null;
  const { ino: _ino, ...holder } = a;
  return holder;
}
