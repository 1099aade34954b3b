/**
 * Copying host trees into an image, as `cp -a` would onto a kernel mount:
 * data (sparse files stay sparse), mode with setuid/setgid/sticky, owner,
 * nanosecond atime/mtime, xattrs, symlinks, hard links (same host inode →
 * one image inode), device numbers, fifos and sockets.
 *
 * Order matters the way it does for cp: owner before mode (chown clears
 * setuid), times last, and a directory's own metadata after its children,
 * whose creation changes its mtime.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { BigIntStats } from 'node:fs';
import { BtrfsError, isBtrfsError } from '../util/errors.js';
import * as host from '../util/host.js';
import { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK } from '../format/constants.js';
import type { WritableFilesystem } from './writable.js';

export interface ImportProgress { files: number; bytes: number; totalFiles?: number; totalBytes?: number }

export interface ImportOptions {
  onProgress?: (p: ImportProgress) => void;
  /**
   * The single source directory becomes the image root itself (mkfs -r): its
   * contents go into `dest` and its own metadata is given to `dest`.
   */
  contentsOnly?: boolean;
}

export interface ImportResult { files: number; dirs: number; bytes: number; hardlinks: number; warnings: string[] }

const SECTOR = 4096;
const CHUNK = 1 << 20;
/** files up to this size are read ahead, this many entries ahead */
const PREFETCH_MAX = 1 << 20;
const PREFETCH_WINDOW = 64;

function ns(v: bigint): { sec: bigint; nsec: number } {
  const sec = v >= 0n ? v / 1_000_000_000n : -((-v + 999_999_999n) / 1_000_000_000n);
  return { sec, nsec: Number(v - sec * 1_000_000_000n) };
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

class Importer {
  readonly result: ImportResult = { files: 0, dirs: 0, bytes: 0, hardlinks: 0, warnings: [] };
  private links = new Map<string, string>();
  private xattrsOk = host.nativeHostAvailable();

  constructor(private readonly fs: WritableFilesystem, private readonly opts: ImportOptions) {
    if (!this.xattrsOk) this.result.warnings.push('native helper unavailable: xattrs and device numbers of the host cannot be read');
  }

  private progress(): void {
    this.opts.onProgress?.({ files: this.result.files, bytes: this.result.bytes });
  }

  /** Owner, mode, xattrs, then times: what cp -a restores, in the order that keeps each. */
  async metadata(src: string, dst: string, st: BigIntStats): Promise<void> {
    if (this.xattrsOk) {
      for (const name of host.llistxattr(src)) {
        // of system.* only POSIX ACLs are stored (as the kernel stores them)
        if (name.startsWith('system.') && name !== 'system.posix_acl_access' && name !== 'system.posix_acl_default') {
          this.result.warnings.push(`${src}: xattr ${name} not copied`);
          continue;
        }
        await this.fs.lsetxattr(dst, name, host.lgetxattr(src, name));
      }
    }
    // owner before mode (chown clears setuid), times last: one change
    await this.fs.setattr(dst, { uid: Number(st.uid), gid: Number(st.gid), mode: Number(st.mode) & 0o7777, atime: ns(st.atimeNs), mtime: ns(st.mtimeNs) });
  }

  async copy(src: string, dst: string, st?: BigIntStats): Promise<void> {
    st ??= await fsp.lstat(src, { bigint: true });
    const type = Number(st.mode) & S_IFMT;
    if (type !== S_IFDIR && st.nlink > 1n) {
      const id = `${st.dev}:${st.ino}`;
      const first = this.links.get(id);
      if (first) {
        this.prefetched.delete(src);
        await this.fs.link(first, dst);
        this.result.hardlinks++;
        return;
      }
      this.links.set(id, dst);
    }
    if (type === S_IFDIR) {
      await this.fs.mkdir(dst, { mode: 0o700 });
      await this.children(src, dst);
      await this.metadata(src, dst, st);
      this.result.dirs++;
      return;
    }
    if (type === S_IFREG) await this.file(src, dst, st);
    else if (type === S_IFLNK) await this.fs.symlink(await fsp.readlink(src), dst);
    else await this.fs.mknod(dst, Number(st.mode), st.rdev);
    await this.metadata(src, dst, st);
    this.result.files++;
    this.progress();
  }

  /** Small files read ahead of the (serial) writes, so the host's disk and the engine overlap. */
  private prefetched = new Map<string, Promise<Buffer>>();

  async children(src: string, dst: string): Promise<void> {
    const names = (await fsp.readdir(src)).sort();
    const paths = names.map((n) => path.join(src, n));
    const stats = await Promise.all(paths.map((p) => fsp.lstat(p, { bigint: true })));
    const small = (i: number): boolean => {
      const st = stats[i]!;
      return st.isFile() && st.size <= BigInt(PREFETCH_MAX) && st.blocks * 512n >= st.size;
    };
    let ahead = 0;
    const fill = (from: number): void => {
      for (let j = Math.max(from, ahead); j < paths.length && j < from + PREFETCH_WINDOW; j++, ahead = j) {
        if (!small(j)) continue;
        const pending = fsp.readFile(paths[j]!);
        // a failure shows when the file's turn comes, not as an unhandled rejection
        pending.catch(() => undefined);
        this.prefetched.set(paths[j]!, pending);
      }
    };
    for (let i = 0; i < paths.length; i++) {
      fill(i);
      await this.copy(paths[i]!, join(dst, names[i]!), stats[i]);
    }
  }

  /** Data: streamed into big extents, or for a sparse file only its non-zero sectors. */
  private async file(src: string, dst: string, st: BigIntStats): Promise<void> {
    const size = Number(st.size);
    const sparse = st.blocks * 512n < st.size;
    const ready = this.prefetched.get(src);
    if (ready) {
      this.prefetched.delete(src);
      await this.fs.writeFile(dst, await ready, { mode: 0o600 });
      this.result.bytes += size;
      return;
    }
    const fh = await fsp.open(src, 'r');
    try {
      if (!sparse) {
        const stream = fh.createReadStream({ highWaterMark: CHUNK, autoClose: false });
        await this.fs.writeFile(dst, stream, { mode: 0o600, size });
      } else {
        await this.fs.writeFile(dst, '', { mode: 0o600 });
        const buf = Buffer.alloc(CHUNK);
        for (let off = 0; off < size; off += CHUNK) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - off), off);
          let runStart = -1;
          // one step past the last (possibly partial) sector closes an open run
          for (let i = 0; ; i += SECTOR) {
            const atEnd = i >= bytesRead;
            const zero = atEnd || buf.subarray(i, Math.min(i + SECTOR, bytesRead)).every((b) => b === 0);
            if (!zero && runStart < 0) runStart = i;
            if (zero && runStart >= 0) {
              await this.fs.write(dst, Buffer.from(buf.subarray(runStart, Math.min(i, bytesRead))), off + runStart);
              runStart = -1;
            }
            if (atEnd) break;
          }
        }
        await this.fs.truncate(dst, size);
      }
    } finally {
      await fh.close();
    }
    this.result.bytes += size;
  }
}

/**
 * Copies `sources` into the image: into `dest` when it is an existing
 * directory (each under its own name), else as `dest` (one source).
 */
export async function importTree(fs: WritableFilesystem, sources: string[], dest: string, opts: ImportOptions = {}): Promise<ImportResult> {
  if (sources.length === 0) throw new BtrfsError('EINVAL', 'nothing to copy');
  const imp = new Importer(fs, opts);
  let destIsDir = false;
  try {
    destIsDir = (await fs.stat(dest)).isDirectory();
  } catch (e) {
    if (!isBtrfsError(e, 'ENOENT')) throw e;
  }
  if (opts.contentsOnly) {
    if (sources.length !== 1 || !destIsDir) throw new BtrfsError('EINVAL', 'copying a directory\'s contents needs one source and an existing directory');
    const st = await fsp.lstat(sources[0]!, { bigint: true });
    if (!st.isDirectory()) throw new BtrfsError('ENOTDIR', 'not a directory', { path: sources[0] });
    await imp.children(sources[0]!, dest);
    await imp.metadata(sources[0]!, dest, st);
    return imp.result;
  }
  if (!destIsDir && sources.length > 1) throw new BtrfsError('ENOTDIR', 'copying several sources needs an existing directory', { path: dest });
  for (const s of sources) {
    const name = path.basename(path.resolve(s));
    await imp.copy(s, destIsDir ? join(dest, name) : dest);
  }
  return imp.result;
}
