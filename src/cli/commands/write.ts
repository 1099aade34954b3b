/**
 * Single changes to an image, each committed before the command returns
 * (nothing is changed when it fails): put (cp -a from the host), mkdir, rm,
 * mv, ln, chmod, chown, touch, write. Options may come anywhere.
 */
import type { Command } from 'commander';
import { WritableFilesystem, importTree, BtrfsError, isBtrfsError } from '../../index.js';
import { Progress } from '../progress.js';
import { lockWaitMs } from '../util.js';

async function withWritable<T>(image: string, fn: (fs: WritableFilesystem) => Promise<T>): Promise<T> {
  const fs = await WritableFilesystem.open(image, { lockWaitMs: lockWaitMs() });
  try {
    const out = await fn(fs);
    await fs.close();
    return out;
  } catch (e) {
    await fs.abort().catch(() => undefined);
    await fs.close().catch(() => undefined);
    throw e;
  }
}

/** Octal modes, or symbolic ones like u+x,go-w (applied to the current mode). */
export function applyMode(spec: string, current: number): number {
  if (/^[0-7]{1,4}$/.test(spec)) return parseInt(spec, 8);
  let mode = current & 0o7777;
  for (const clause of spec.split(',')) {
    const m = /^([ugoa]*)([+=-])([rwxXst]*)$/.exec(clause);
    if (!m) throw new BtrfsError('EINVAL', `invalid mode '${spec}'`);
    const who = m[1] || 'a';
    let bits = 0;
    const set = (u: number, g: number, o: number): void => {
      if (who.includes('u') || who.includes('a')) bits |= u;
      if (who.includes('g') || who.includes('a')) bits |= g;
      if (who.includes('o') || who.includes('a')) bits |= o;
    };
    for (const p of m[3]!) {
      if (p === 'r') set(0o400, 0o040, 0o004);
      if (p === 'w') set(0o200, 0o020, 0o002);
      if (p === 'x' || (p === 'X' && (current & 0o40111))) set(0o100, 0o010, 0o001);
      if (p === 's') set(0o4000, 0o2000, 0);
      if (p === 't') bits |= 0o1000;
    }
    if (m[2] === '+') mode |= bits;
    else if (m[2] === '-') mode &= ~bits;
    else {
      let mask = 0;
      if (who.includes('u') || who.includes('a')) mask |= 0o4700;
      if (who.includes('g') || who.includes('a')) mask |= 0o2070;
      if (who.includes('o') || who.includes('a')) mask |= 0o1007;
      mode = (mode & ~mask) | bits;
    }
  }
  return mode;
}

async function removeTree(fs: WritableFilesystem, p: string): Promise<void> {
  const st = await fs.lstat(p);
  if (!st.isDirectory()) return fs.unlink(p);
  for (const name of await fs.readdir(p)) await removeTree(fs, p === '/' ? `/${name}` : `${p}/${name}`);
  await fs.rmdir(p);
}

export function register(program: Command): void {
  program
    .command('put')
    .description('copy host files and directories into the image, as cp -a (into DEST when it is a directory)')
    .argument('<image>', 'image file or block device')
    .argument('<paths...>', 'SRC... DEST')
    .action(async (image: string, paths: string[]) => {
      if (paths.length < 2) throw new BtrfsError('EINVAL', 'put needs at least one source and a destination');
      const dest = paths.pop()!;
      await withWritable(image, async (fs) => {
        const bar = Progress.start('put');
        try {
          const r = await importTree(fs, paths, dest, { onProgress: (p) => bar?.update(p.files, p.bytes) });
          for (const w of r.warnings) process.stderr.write(`tsbtrfs: warning: ${w}\n`);
        } finally {
          bar?.stop();
        }
      });
    });
  program
    .command('mkdir')
    .description('make directories')
    .argument('<image>', 'image file or block device')
    .argument('<paths...>', 'directories to make')
    .option('-p, --parents', 'make parents as needed, no error if it exists')
    .option('-m, --mode <mode>', 'octal mode (the umask applies otherwise)')
    .action(async (image: string, paths: string[], o: { parents?: boolean; mode?: string }) => {
      await withWritable(image, async (fs) => {
        for (const p of paths) {
          await fs.mkdir(p, { recursive: o.parents ?? false, ...(o.mode ? { mode: parseInt(o.mode, 8) } : {}) });
          if (o.mode) await fs.chmod(p, parseInt(o.mode, 8));
        }
      });
    });
  program
    .command('rm')
    .description('remove files (and directories with -r)')
    .argument('<image>', 'image file or block device')
    .argument('<paths...>', 'paths to remove')
    .option('-r, --recursive', 'remove directories and their contents')
    .option('-f, --force', 'ignore missing paths')
    .action(async (image: string, paths: string[], o: { recursive?: boolean; force?: boolean }) => {
      await withWritable(image, async (fs) => {
        for (const p of paths) {
          try {
            if (o.recursive) await removeTree(fs, p);
            else await fs.unlink(p);
          } catch (e) {
            if (o.force && isBtrfsError(e, 'ENOENT')) continue;
            throw e;
          }
        }
      });
    });
  program
    .command('mv')
    .description('rename SRC to DEST (into DEST when it is a directory)')
    .argument('<image>', 'image file or block device')
    .argument('<src>', 'existing path')
    .argument('<dest>', 'new path or directory')
    .action(async (image: string, src: string, dest: string) => {
      await withWritable(image, async (fs) => {
        let to = dest;
        if (await fs.exists(dest) && (await fs.stat(dest)).isDirectory() && !(await fs.lstat(src)).isDirectory()) {
          to = `${dest.replace(/\/$/, '')}/${src.split('/').filter(Boolean).pop()}`;
        }
        await fs.rename(src, to);
      });
    });
  program
    .command('ln')
    .description('make a hard link (or with -s a symbolic link) LINK to TARGET')
    .argument('<image>', 'image file or block device')
    .argument('<target>', 'existing path, or any text for -s')
    .argument('<link>', 'the new name')
    .option('-s, --symbolic', 'make a symbolic link')
    .action(async (image: string, target: string, link: string, o: { symbolic?: boolean }) => {
      await withWritable(image, (fs) => (o.symbolic ? fs.symlink(target, link) : fs.link(target, link)));
    });
  program
    .command('chmod')
    .description('change modes (octal, or symbolic like u+x,go-w)')
    .argument('<image>', 'image file or block device')
    .argument('<mode>', 'mode')
    .argument('<paths...>', 'paths')
    .action(async (image: string, mode: string, paths: string[]) => {
      await withWritable(image, async (fs) => {
        for (const p of paths) await fs.chmod(p, applyMode(mode, (await fs.stat(p)).mode));
      });
    });
  program
    .command('chown')
    .description('change owner: numeric UID[:GID] (no user database is consulted)')
    .argument('<image>', 'image file or block device')
    .argument('<owner>', 'UID[:GID]')
    .argument('<paths...>', 'paths')
    .option('-h, --no-dereference', 'change a symlink itself')
    .action(async (image: string, owner: string, paths: string[], o: { dereference?: boolean }) => {
      const m = /^(\d+)?(?::(\d+))?$/.exec(owner);
      if (!m || (m[1] === undefined && m[2] === undefined)) throw new BtrfsError('EINVAL', `owner must be numeric UID[:GID], got '${owner}'`);
      const uid = m[1] === undefined ? -1 : Number(m[1]);
      const gid = m[2] === undefined ? -1 : Number(m[2]);
      await withWritable(image, async (fs) => {
        for (const p of paths) await (o.dereference === false ? fs.lchown(p, uid, gid) : fs.chown(p, uid, gid));
      });
    });
  program
    .command('touch')
    .description('create empty files, or set their times to now (ns)')
    .argument('<image>', 'image file or block device')
    .argument('<paths...>', 'paths')
    .action(async (image: string, paths: string[]) => {
      await withWritable(image, async (fs) => {
        for (const p of paths) {
          if (!(await fs.exists(p))) await fs.writeFile(p, '', { flag: 'wx' });
          else {
            const now = fs.writer.now();
            await fs.utimes(p, now, now);
          }
        }
      });
    });
  program
    .command('write')
    .description('write standard input into a file (created or replaced)')
    .argument('<image>', 'image file or block device')
    .argument('<path>', 'the file')
    .option('-a, --append', 'append instead of replacing')
    .action(async (image: string, p: string, o: { append?: boolean }) => {
      await withWritable(image, (fs) => fs.writeFile(p, process.stdin, { flag: o.append ? 'a' : 'w' }));
    });
}
