/**
 * Extracting a tree from an image onto the host (`tsbtrfs get`), keeping
 * everything a kernel mount would show: data with its holes, mode, owner,
 * nanosecond timestamps, xattrs, symlinks, hard links, device numbers,
 * fifos and sockets. Nested subvolumes become directories.
 *
 * Metadata is applied in the order that keeps each step from undoing the
 * last: owner first (chown clears setuid/setgid and security.capability),
 * then mode, then xattrs, then times; directories get theirs after their
 * children are written, since creating a child changes the parent's mtime.
 */
import fsp from 'node:fs/promises';
import fs from 'node:fs';
import nodePath from 'node:path';
import { BtrfsError } from '../util/errors.js';
import * as host from '../util/host.js';
import { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK } from '../format/constants.js';
import type { Filesystem, Resolved } from './filesystem.js';

export interface ExtractOptions {
  /** chown to the image's uid/gid; default: when running as root */
  preserveOwner?: boolean;
  /** called after each inode is written */
  onProgress?: (p: ExtractProgress) => void;
  /** warnings about things the host refused (e.g. trusted.* xattrs without root) */
  onWarning?: (msg: string) => void;
}

export interface ExtractProgress { files: number; bytes: number; path: string }

export interface ExtractResult { files: number; dirs: number; bytes: number; hardlinks: number; warnings: string[] }

interface Pending { r: Resolved; dest: string }

export async function extract(fsys: Filesystem, srcPath: string, dest: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const preserveOwner = opts.preserveOwner ?? (process.getuid?.() === 0);
  const result: ExtractResult = { files: 0, dirs: 0, bytes: 0, hardlinks: 0, warnings: [] };
  const warn = (m: string) => { result.warnings.push(m); opts.onWarning?.(m); };
  // First host path of each multiply-linked inode, and when it is complete.
  const links = new Map<string, { path: string; done: Promise<unknown> }>();
  const top = await fsys.resolve(srcPath, false);

  let target = dest;
  const destStat = await fsp.lstat(dest).catch(() => undefined);
  const topIsDir = (top.item.mode & S_IFMT) === S_IFDIR;
  if (destStat?.isDirectory()) {
    const base = nodePath.posix.basename(nodePath.posix.normalize('/' + srcPath));
    if (base !== '' && base !== '/') target = nodePath.join(dest, base);
  } else if (destStat && topIsDir) {
    throw new BtrfsError('ENOTDIR', 'destination exists and is not a directory', { path: dest });
  }

  const applyMeta = async (r: Resolved, p: string): Promise<void> => {
    const it = r.item;
    const type = it.mode & S_IFMT;
    if (preserveOwner) {
      try { await fsp.lchown(p, it.uid, it.gid); } catch (e) { warn(`chown ${p}: ${(e as Error).message}`); }
    }
    if (type !== S_IFLNK) await fsp.chmod(p, it.mode & 0o7777);
    for (const x of await fsys.xattrs(r)) {
      try {
        host.lsetxattr(p, x.name, x.value);
      } catch (e) {
        warn(`xattr ${x.name} on ${p}: ${(e as Error).message}`);
      }
    }
    host.lutimensNs(p, it.atime.sec, it.atime.nsec, it.mtime.sec, it.mtime.nsec);
  };

  const writeFile = async (r: Resolved, p: string): Promise<void> => {
    const fh = await fsp.open(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    const writeAll = async (data: Buffer, at: number): Promise<void> => {
      let off = 0;
      while (off < data.length) {
        const { bytesWritten } = await fh.write(data, off, data.length - off, at + off);
        off += bytesWritten;
      }
      result.bytes += data.length;
    };
    try {
      // One write in flight while the next piece is read: reading and writing overlap.
      let pending: Promise<void> | undefined;
      for await (const piece of fsys.pieces(r)) {
        if (piece.kind !== 'data') continue;
        await pending;
        pending = writeAll(piece.data, piece.offset);
      }
      await pending;
      await fh.truncate(r.item.size > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(r.item.size));
    } finally {
      await fh.close();
    }
  };

  /** Creates one non-directory inode at p; true if it was a new inode (not a hard link). */
  const makeLeaf = async (r: Resolved, p: string): Promise<boolean> => {
    const it = r.item;
    const type = it.mode & S_IFMT;
    const linkKey = `${r.subvol}:${r.ino}`;
    let finished: (() => void) | undefined;
    if (it.nlink > 1 && type !== S_IFDIR) {
      const first = links.get(linkKey);
      if (first !== undefined) {
        await first.done;
        await fsp.link(first.path, p);
        result.hardlinks++;
        return false;
      }
      links.set(linkKey, { path: p, done: new Promise<void>((res) => { finished = res; }) });
    }
    try {
      await createLeaf(r, p, type);
    } finally {
      finished?.();
    }
    return true;
  };

  const createLeaf = async (r: Resolved, p: string, type: number): Promise<void> => {
    const it = r.item;
    switch (type) {
      case S_IFREG:
        await writeFile(r, p);
        break;
      case S_IFLNK:
        await fsp.symlink(await fsys.readlink(r.path), p);
        break;
      case S_IFCHR:
      case S_IFBLK: {
        const st = fsys.stats(r);
        host.mknod(p, type | 0o600, st.rdevMajor, st.rdevMinor);
        break;
      }
      case S_IFIFO:
      case S_IFSOCK:
        host.mknod(p, type | 0o600);
        break;
      default:
        throw new BtrfsError('EUCLEAN', `inode ${r.ino} has unknown file type mode 0${it.mode.toString(8)}`, { path: r.path, tree: r.subvol });
    }
    await applyMeta(r, p);
  };

  // Directories are created in pre-order by this loop; the non-directories
  // below them are written by up to CONCURRENCY workers at once, since
  // extraction is mostly waiting on host I/O. Directory metadata comes last,
  // once everything below is written.
  const CONCURRENCY = 16;
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  const dirsDone: Pending[] = [];
  // Every directory has one name, so one reached twice means the image links a
  // subvolume into itself: refuse rather than nest forever.
  const seenDirs = new Set<string>();
  const stack: Pending[] = [{ r: top, dest: target }];
  while (stack.length && failure === undefined) {
    const { r, dest: p } = stack.pop()!;
    if ((r.item.mode & S_IFMT) === S_IFDIR) {
      const id = `${r.subvol}:${r.ino}:${r.placeholder ? r.path : ''}`;
      if (seenDirs.has(id)) {
        failure = new BtrfsError('EUCLEAN', `directory ${r.ino} of subvolume ${r.subvol} is reached twice (a loop in the image)`, { path: r.path, tree: r.subvol });
        break;
      }
      seenDirs.add(id);
      await fsp.mkdir(p, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
      result.dirs++;
      dirsDone.push({ r, dest: p });
      const ents = await fsys.direntsOf(r);
      for (let i = ents.length - 1; i >= 0; i--) {
        const e = ents[i]!;
        stack.push({ r: await fsys.entry(r, e), dest: nodePath.join(p, e.name) });
      }
      opts.onProgress?.({ files: result.files, bytes: result.bytes, path: r.path });
    } else {
      while (inflight.size >= CONCURRENCY) await Promise.race(inflight);
      const job: Promise<void> = makeLeaf(r, p).then(
        (isNew) => {
          if (isNew) result.files++;
          opts.onProgress?.({ files: result.files, bytes: result.bytes, path: r.path });
        },
        (e) => { failure ??= e; },
      ).finally(() => { inflight.delete(job); });
      inflight.add(job);
    }
  }
  await Promise.all(inflight);
  if (failure !== undefined) throw failure;
  for (let i = dirsDone.length - 1; i >= 0; i--) await applyMeta(dirsDone[i]!.r, dirsDone[i]!.dest);
  return result;
}
