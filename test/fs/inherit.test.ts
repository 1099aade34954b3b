/**
 * Inheritance at creation, against the kernel: in a directory with a default
 * POSIX ACL (named user and group, so a mask) and btrfs.compression=zstd:3,
 * the kernel and tsbtrfs each make a file, a directory, a fifo, a device
 * and a symlink with the same requested modes and umask; the kernel then
 * shows the same modes and xattrs on both images. A directory without a
 * default ACL keeps the umask; one whose compression is "no" passes nothing.
 */
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { mkfs as ourMkfs } from '../../src/mkfs/index.js';
import { WritableFilesystem } from '../../src/fs/writable.js';
import { requireNativeOrSkip, mkfs, withMount, runOk, sh } from '../helpers/kernel.js';
import { expectClean } from '../helpers/strict.js';

const UMASK = 0o027;
/** [name, kind, requested mode] made in each directory */
const MADE: [string, 'file' | 'dir' | 'fifo' | 'chr' | 'symlink', number][] = [
  ['f', 'file', 0o666], ['g', 'file', 0o751], ['sub', 'dir', 0o777], ['p', 'fifo', 0o644], ['c', 'chr', 0o660], ['l', 'symlink', 0o777],
];
const DIRS = ['acl', 'plain', 'nocomp'];

/** Mode and every xattr (hex) of each entry under the mount, as the kernel shows them. */
async function view(mnt: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const d of DIRS) {
    for (const [name] of MADE) {
      const p = path.join(mnt, d, name);
      const st = await fsp.lstat(p);
      const x = await sh(`getfattr -h -d -m - -e hex ${JSON.stringify(p)} 2>/dev/null | grep -v '^#' | sort || true`);
      out[`${d}/${name}`] = `mode ${(st.mode & 0o7777).toString(8)} ${x.stdout.trim().split('\n').filter(Boolean).join(' ')}`;
    }
  }
  return out;
}

describe('fs: what a new inode inherits from its directory, as the kernel gives it', function () {
  this.timeout(300_000);
  let dir: string;
  before(async function () {
    await requireNativeOrSkip(this);
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-inherit-'));
  });
  after(async () => {
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('default ACL (masked into the mode, access ACL, default on directories) and the compression property', async () => {
    // the kernel's side
    const kimg = path.join(dir, 'kernel.img');
    await mkfs(kimg, 256 << 20);
    let acl = '';
    const kernelView = await withMount(kimg, {}, async (mnt) => {
      for (const d of DIRS) await fsp.mkdir(path.join(mnt, d));
      await runOk('setfacl', ['-d', '-m', 'u::rwx,u:1234:rx,g::rwx,g:77:r,m::rwx,o::r', path.join(mnt, 'acl')]);
      await runOk('setfattr', ['-n', 'btrfs.compression', '-v', 'zstd:3', path.join(mnt, 'acl')]);
      await runOk('setfattr', ['-n', 'btrfs.compression', '-v', 'zlib', path.join(mnt, 'plain')]);
      await runOk('setfattr', ['-n', 'btrfs.compression', '-v', 'no', path.join(mnt, 'nocomp')]);
      acl = (await runOk('getfattr', ['-n', 'system.posix_acl_default', '-e', 'hex', '--only-values', path.join(mnt, 'acl')], {})).stdout;
      const py = MADE.map(([n, k, m]) => `  p = os.path.join(d, ${JSON.stringify(n)})\n` + (
        k === 'file' ? `  os.close(os.open(p, os.O_CREAT | os.O_WRONLY, ${m}))\n`
          : k === 'dir' ? `  os.mkdir(p, ${m})\n`
            : k === 'fifo' ? `  os.mkfifo(p, ${m})\n`
              : k === 'chr' ? `  os.mknod(p, stat.S_IFCHR | ${m}, os.makedev(1, 3))\n`
                : `  os.symlink('f', p)\n`)).join('');
      await runOk('python3', ['-c', `import os, stat\nos.umask(${UMASK})\nfor d in ${JSON.stringify(DIRS.map((d) => path.join(mnt, d)))}:\n${py}`]);
      return view(mnt);
    });

    // ours, with the same ACL bytes the kernel stored
    const aclBytes = await (async () => {
      const r = await withMount(kimg, { readonly: true }, async (mnt) => sh(`getfattr -n system.posix_acl_default -e hex ${JSON.stringify(path.join(mnt, 'acl'))} | grep = | cut -d= -f2`));
      return Buffer.from(r.stdout.trim().replace(/^0x/, ''), 'hex');
    })();
    expect(acl.length).to.be.greaterThan(0);
    const oimg = path.join(dir, 'ours.img');
    await ourMkfs(oimg, { size: 256 << 20 });
    const w = await WritableFilesystem.open(oimg, { umask: UMASK, uid: 0, gid: 0 });
    try {
      for (const d of DIRS) await w.mkdir(`/${d}`, { mode: 0o755 });
      await w.setxattr('/acl', 'system.posix_acl_default', aclBytes);
      await w.setxattr('/acl', 'btrfs.compression', 'zstd:3');
      await w.setxattr('/plain', 'btrfs.compression', 'zlib');
      await w.setxattr('/nocomp', 'btrfs.compression', 'no');
      for (const d of DIRS) {
        for (const [n, k, m] of MADE) {
          const p = `/${d}/${n}`;
          if (k === 'file') await w.writeFile(p, '', { mode: m });
          else if (k === 'dir') await w.mkdir(p, { mode: m });
          else if (k === 'fifo') await w.mknod(p, 0o010000 | m);
          else if (k === 'chr') await w.mknod(p, 0o020000 | m, (1 << 8) | 3);
          else await w.symlink('f', p);
        }
      }
    } finally {
      await w.close();
    }
    await expectClean(oimg);
    const ourView = await withMount(oimg, { readonly: true }, async (mnt) => view(mnt));
    expect(ourView).to.deep.equal(kernelView);
    // the case is not vacuous: the ACL directory's file got a masked mode and an access ACL
    expect(kernelView['acl/f']).to.match(/^mode 664 .*system\.posix_acl_access=/);
    expect(kernelView['plain/f']).to.match(/^mode 640 btrfs\.compression=0x7a6c6962$/);
  });
});
