/**
 * tsbtrfs' own view of a tree in the referee's Manifest shape, so the library
 * can be compared with what the kernel shows (manifest.ts manifestOf on a
 * mount) field for field.
 */
import { createHash } from 'node:crypto';
import type { Filesystem, Resolved } from '../../src/fs/filesystem.js';
import { BtrfsError } from '../../src/util/errors.js';
import { finishManifest, type Manifest, type ManifestEntry, type EntryType } from './manifest.js';

const TYPES: Record<number, EntryType> = {
  0o100000: 'file', 0o040000: 'dir', 0o120000: 'symlink', 0o020000: 'chardev',
  0o060000: 'blockdev', 0o010000: 'fifo', 0o140000: 'socket',
};

export interface LibraryManifestOptions { noHash?: boolean; noXattrs?: boolean }

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export async function libraryManifest(fs: Filesystem, root = '/', opts: LibraryManifestOptions = {}): Promise<Manifest> {
  const entries = new Map<string, ManifestEntry>();
  const inodes = new Map<string, string[]>();
  const rel = (p: string) => (root === '/' ? p : p.slice(root.length) || '/');

  const seenDirs = new Set<string>();
  const visit = async (r: Resolved, parentSubvol: bigint | null): Promise<void> => {
    const st = fs.stats(r);
    const type = TYPES[st.mode & 0o170000];
    if (!type) throw new BtrfsError('EUCLEAN', `unknown mode 0${st.mode.toString(8)}`, { path: r.path });
    const key = rel(r.path);
    const xattrs: Record<string, string> = {};
    if (!opts.noXattrs) for (const x of await fs.xattrs(r)) xattrs[x.name] = x.value.toString('base64');
    const e: ManifestEntry = {
      type,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      xattrs,
      nlink: st.nlink,
      mtime_ns: st.mtimeNs.toString(),
      ino: st.inode.toString(),
    };
    if (parentSubvol !== null && (r.subvol !== parentSubvol || r.placeholder)) e.dev_boundary = true;
    if (r.placeholder) e.subvol_placeholder = true;
    if (type === 'file') {
      e.size = st.size;
      if (!opts.noHash) {
        const h = createHash('sha256');
        for await (const p of fs.pieces(r)) {
          if (p.kind === 'data') h.update(p.data);
          else for (let off = 0; off < p.length; off += 1 << 20) h.update(Buffer.alloc(Math.min(1 << 20, p.length - off)));
        }
        e.sha256 = h.digest('hex');
      }
    } else if (type === 'symlink') {
      const t = Buffer.from(await fs.readlink(r.path), 'utf8');
      e.size = t.length;
      e.target = t.toString('utf8');
    } else if (type === 'dir') {
      e.dir_size = st.size;
    } else if (type === 'chardev' || type === 'blockdev') {
      e.rdev = { major: st.rdevMajor, minor: st.rdevMinor };
    }
    entries.set(key, e);
    if (type !== 'dir' && st.nlink > 1) {
      const id = `${r.subvol}:${r.ino}`;
      const list = inodes.get(id);
      if (list) list.push(key);
      else inodes.set(id, [key]);
    }
    if (type === 'dir') {
      const id = `${r.subvol}:${r.ino}:${r.placeholder ? r.path : ''}`;
      if (seenDirs.has(id)) throw new BtrfsError('EUCLEAN', 'directory reached twice (a loop in the image)', { path: r.path, tree: r.subvol });
      seenDirs.add(id);
      const ents = await fs.direntsOf(r);
      ents.sort((a, b) => cmp(a.name, b.name));
      for (const d of ents) await visit(await fs.entry(r, d), r.subvol);
    }
  };
  await visit(await fs.resolve(root, false), null);
  return finishManifest(entries, inodes);
}
