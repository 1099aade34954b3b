/**
 * Seeded random POSIX operations (shared by the differential test against
 * the kernel and by the send/receive chains made by tsbtrfs).
 */
import { mulberry32 } from '../../src/util/random.js';
import type { WritableFilesystem } from '../../src/fs/writable.js';

const NAMES = ['a', 'b', 'c', 'd'];

export type Op =
  | { op: 'mkdir'; p: string; mode: number }
  | { op: 'rmdir' | 'unlink'; p: string }
  | { op: 'writeFile' | 'appendFile'; p: string; size: number; seed: number }
  | { op: 'pwrite'; p: string; pos: number; size: number; seed: number }
  | { op: 'truncate'; p: string; len: number }
  | { op: 'rename' | 'link'; p: string; q: string }
  | { op: 'symlink'; target: string; p: string }
  | { op: 'chmod'; p: string; mode: number }
  | { op: 'chown'; p: string; uid: number; gid: number }
  | { op: 'utimes'; p: string; sec: number; nsec: number }
  | { op: 'setxattr'; p: string; name: string; value: string }
  | { op: 'removexattr'; p: string; name: string }
  | { op: 'mkfifo'; p: string };

export function bytes(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}

/** `n` seeded operations on paths under `root`, most of them valid, some failing as POSIX says. */
export function randomOps(seed: number, n: number, root = '/top'): Op[] {
  const r = mulberry32(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  const p = (): string => {
    const depth = 1 + Math.floor(r() * 3);
    return root + '/' + Array.from({ length: depth }, () => pick(NAMES)).join('/');
  };
  const size = (): number => (r() < 0.1 ? Math.floor(r() * 300_000) : r() < 0.5 ? Math.floor(r() * 3000) : Math.floor(r() * 20_000));
  const ops: Op[] = [];
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.16) ops.push({ op: 'mkdir', p: p(), mode: pick([0o755, 0o700, 0o2775]) });
    else if (k < 0.30) ops.push({ op: 'writeFile', p: p(), size: size(), seed: i });
    else if (k < 0.35) ops.push({ op: 'appendFile', p: p(), size: size(), seed: i });
    else if (k < 0.40) ops.push({ op: 'pwrite', p: p(), pos: Math.floor(r() * 400_000), size: size(), seed: i });
    else if (k < 0.45) ops.push({ op: 'truncate', p: p(), len: Math.floor(r() * 300_000) });
    else if (k < 0.52) ops.push({ op: 'unlink', p: p() });
    else if (k < 0.58) ops.push({ op: 'rmdir', p: p() });
    else if (k < 0.68) ops.push({ op: 'rename', p: p(), q: p() });
    else if (k < 0.73) ops.push({ op: 'link', p: p(), q: p() });
    else if (k < 0.77) ops.push({ op: 'symlink', target: pick(NAMES) + (r() < 0.3 ? '/' + pick(NAMES) : ''), p: p() });
    else if (k < 0.82) ops.push({ op: 'chmod', p: p(), mode: pick([0o644, 0o600, 0o4755, 0o1777, 0o000]) });
    else if (k < 0.85) ops.push({ op: 'chown', p: p(), uid: pick([0, 1000, 65534]), gid: pick([0, 100, 65534]) });
    else if (k < 0.89) ops.push({ op: 'utimes', p: p(), sec: Math.floor(r() * 2e9), nsec: Math.floor(r() * 1e9) });
    else if (k < 0.94) ops.push({ op: 'setxattr', p: p(), name: `user.${pick(NAMES)}`, value: 'v'.repeat(Math.floor(r() * 100)) });
    else if (k < 0.97) ops.push({ op: 'removexattr', p: p(), name: `user.${pick(NAMES)}` });
    else ops.push({ op: 'mkfifo', p: p() });
  }
  return ops;
}

/** 'ok', or the errno code the operation failed with. */
export async function code<T>(f: () => Promise<T> | T): Promise<string> {
  try {
    await f();
    return 'ok';
  } catch (e) {
    const c = (e as { code?: string }).code;
    if (!c) throw e;
    return c;
  }
}

/** One operation through WritableFilesystem: 'ok' or its errno code. */
export async function onOurs(w: WritableFilesystem, o: Op): Promise<string> {
  switch (o.op) {
    case 'mkdir': return code(() => w.mkdir(o.p, { mode: o.mode }));
    case 'rmdir': return code(() => w.rmdir(o.p));
    case 'unlink': return code(() => w.unlink(o.p));
    case 'writeFile': return code(() => w.writeFile(o.p, bytes(o.size, o.seed)));
    case 'appendFile': return code(() => w.appendFile(o.p, bytes(o.size, o.seed)));
    case 'pwrite': return code(() => w.write(o.p, bytes(o.size, o.seed), o.pos));
    case 'truncate': return code(() => w.truncate(o.p, o.len));
    case 'rename': return code(() => w.rename(o.p, o.q));
    case 'link': return code(() => w.link(o.p, o.q));
    case 'symlink': return code(() => w.symlink(o.target, o.p));
    case 'chmod': return code(() => w.chmod(o.p, o.mode));
    case 'chown': return code(() => w.chown(o.p, o.uid, o.gid));
    case 'utimes': return code(() => w.utimes(o.p, { sec: BigInt(o.sec), nsec: o.nsec }, { sec: BigInt(o.sec), nsec: o.nsec }));
    case 'setxattr': return code(() => w.lsetxattr(o.p, o.name, o.value));
    case 'removexattr': return code(() => w.lremovexattr(o.p, o.name));
    case 'mkfifo': return code(() => w.mknod(o.p, 0o010644));
  }
}


