/** Reading commands: subvolume list, ls, cat, get. Paths are absolute from the top-level subvolume. */
import { registerSubvolumeWrites } from './subvolume.js';
import type { Command } from 'commander';
import { extract, type Filesystem, type Stats, BtrfsError } from '../../index.js';
import { withImage, write } from '../util.js';
import { Progress } from '../progress.js';

function modeString(st: Stats): string {
  const t = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b'
    : st.isFIFO() ? 'p' : st.isSocket() ? 's' : '-';
  const m = st.mode;
  const rwx = (r: number, w: number, x: number, special: number, ch: string) =>
    (m & r ? 'r' : '-') + (m & w ? 'w' : '-') + (m & special ? (m & x ? ch : ch.toUpperCase()) : m & x ? 'x' : '-');
  return t + rwx(0o400, 0o200, 0o100, 0o4000, 's') + rwx(0o40, 0o20, 0o10, 0o2000, 's') + rwx(0o4, 0o2, 0o1, 0o1000, 't');
}

function timeString(ns: bigint): string {
  const d = new Date(Number(ns / 1_000_000n));
  const frac = (ns % 1_000_000_000n + 1_000_000_000n) % 1_000_000_000n;
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}.${frac.toString().padStart(9, '0')}`;
}

async function longLine(fs: Filesystem, path: string, name: string, st: Stats): Promise<string> {
  const size = st.isCharacterDevice() || st.isBlockDevice() ? `${st.rdevMajor}, ${st.rdevMinor}` : String(st.size);
  let line = `${modeString(st)} ${String(st.nlink).padStart(3)} ${String(st.uid).padStart(5)} ${String(st.gid).padStart(5)} ${size.padStart(10)} ${timeString(st.mtimeNs)} ${name}`;
  if (st.isSymbolicLink()) line += ` -> ${await fs.readlink(path)}`;
  return line;
}

/** strftime("%Y-%m-%d %H:%M:%S %z") in the local time zone, as btrfs subvolume show prints. */
function localTime(sec: bigint): string {
  const d = new Date(Number(sec) * 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const off = -d.getTimezoneOffset();
  const z = `${off >= 0 ? '+' : '-'}${p(Math.floor(Math.abs(off) / 60))}${p(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())} ${z}`;
}

const join = (dir: string, name: string) => (dir === '/' ? `/${name}` : `${dir}/${name}`);

async function listOne(fs: Filesystem, path: string, long: boolean, recursive: boolean, header: boolean): Promise<void> {
  const st = await fs.lstat(path);
  if (!st.isDirectory()) {
    await write((long ? await longLine(fs, path, path, st) : path) + '\n');
    return;
  }
  if (header) await write(`${path}:\n`);
  const ents = await fs.readdir(path, { withFileTypes: true });
  const lines: string[] = [];
  for (const e of ents) {
    const p = join(path, e.name);
    lines.push(long ? await longLine(fs, p, e.name, await fs.lstat(p)) : e.name);
  }
  if (lines.length) await write(lines.join('\n') + '\n');
  if (recursive) {
    for (const e of ents) {
      if (e.isDirectory()) {
        await write('\n');
        await listOne(fs, join(path, e.name), long, recursive, true);
      }
    }
  }
}

export function register(program: Command): void {
  const sub = program.command('subvolume').description('subvolume commands');
  registerSubvolumeWrites(sub);
  sub
    .command('list')
    .description('list subvolumes and snapshots, like btrfs subvolume list')
    .argument('<image>', 'image file or block device')
    .option('-u, --uuid', 'print the uuid of each subvolume')
    .option('-q, --parent-uuid', 'print the parent uuid (the snapshot source)')
    .option('-R, --received-uuid', 'print the received uuid')
    .option('-r, --readonly', 'only read-only subvolumes')
    .option('-d, --deleted', 'only deleted subvolumes not yet cleaned')
    .option('--json', 'print JSON with every field')
    .action(async (image: string, o: { uuid?: boolean; parentUuid?: boolean; receivedUuid?: boolean; readonly?: boolean; deleted?: boolean; json?: boolean }) => {
      await withImage(image, async (fs) => {
        let subs = (await fs.listSubvolumes()).filter((s) => s.id !== 5n);
        subs = subs.filter((s) => (o.deleted ? s.deleted : !s.deleted));
        if (o.readonly) subs = subs.filter((s) => s.readOnly);
        if (o.json) {
          const rows = subs.map(({ rootItem: _r, ...s }) => s);
          await write(JSON.stringify(rows, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
          return;
        }
        const lines = subs.map((s) => {
          let l = `ID ${s.id} gen ${s.generation} top level ${s.parentId}`;
          // btrfs pads missing uuids to the width of a uuid (%-36s).
          if (o.parentUuid) l += ` parent_uuid ${(s.parentUuid ?? '-').padEnd(36)}`;
          if (o.receivedUuid) l += ` received_uuid ${(s.receivedUuid ?? '-').padEnd(36)}`;
          if (o.uuid) l += ` uuid ${s.uuid}`;
          l += ` path ${s.deleted ? '<FS_TREE>/DELETED' : s.path.replace(/^\//, '')}`;
          if (s.readOnly && !o.readonly) l += '';
          return l;
        });
        if (lines.length) await write(lines.join('\n') + '\n');
      });
    });
  sub
    .command('show')
    .description('show one subvolume by path')
    .argument('<image>', 'image file or block device')
    .argument('<path>', 'path of the subvolume in the image')
    .action(async (image: string, path: string) => {
      await withImage(image, async (fs) => {
        const st = await fs.lstat(path);
        if (!st.isSubvolume()) throw new BtrfsError('EINVAL', 'not a subvolume', { path });
        const s = (await fs.listSubvolumes()).find((x) => x.id === st.subvolume);
        if (!s) throw new BtrfsError('ENOENT', 'subvolume not found', { path });
        const all = await fs.listSubvolumes();
        const t = (sec: bigint) => (sec === 0n ? '-' : localTime(sec));
        const ri = s.rootItem;
        const snaps = all.filter((x) => x.parentUuid === s.uuid && !x.deleted).map((x) => `\t\t\t\t${x.path.replace(/^\//, '')}`);
        await write([
          s.path === '/' ? '/' : s.path.replace(/^\//, ''),
          `\tName: \t\t\t${s.name || '<FS_TREE>'}`,
          `\tUUID: \t\t\t${s.uuid}`,
          `\tParent UUID: \t\t${s.parentUuid ?? '-'}`,
          `\tReceived UUID: \t\t${s.receivedUuid ?? '-'}`,
          `\tCreation time: \t\t${t(ri.otime.sec)}`,
          `\tSubvolume ID: \t\t${s.id}`,
          `\tGeneration: \t\t${s.generation}`,
          `\tGen at creation: \t${s.otransid}`,
          `\tParent ID: \t\t${s.parentId}`,
          `\tTop level ID: \t\t${s.parentId}`,
          `\tFlags: \t\t\t${s.readOnly ? 'readonly' : '-'}`,
          `\tSend transid: \t\t${s.stransid}`,
          `\tSend time: \t\t${t(ri.stime.sec)}`,
          `\tReceive transid: \t${s.rtransid}`,
          `\tReceive time: \t\t${t(ri.rtime.sec)}`,
          `\tSnapshot(s):`,
          ...snaps,
        ].join('\n') + '\n');
      });
    });
  sub
    .command('get-default')
    .description('print the default subvolume')
    .argument('<image>', 'image file or block device')
    .action(async (image: string) => {
      await withImage(image, async (fs) => {
        const id = await fs.getDefaultSubvolume();
        if (id === 5n) return write('ID 5 (FS_TREE)\n');
        const s = (await fs.listSubvolumes()).find((x) => x.id === id);
        await write(`ID ${id} gen ${s?.generation ?? '?'} top level ${s?.parentId ?? '?'} path ${s?.path.replace(/^\//, '') ?? '?'}\n`);
      });
    });

  program
    .command('ls')
    .description('list a directory in the image')
    .argument('<image>', 'image file or block device')
    .argument('[path]', 'absolute path in the image', '/')
    .option('-l', 'long listing: mode, links, owner, size, mtime (ns)')
    .option('-R', 'recurse into directories')
    .action(async (image: string, path: string, o: { l?: boolean; R?: boolean }) => {
      await withImage(image, (fs) => listOne(fs, path, !!o.l, !!o.R, !!o.R));
    });

  program
    .command('cat')
    .description('write a file from the image to stdout')
    .argument('<image>', 'image file or block device')
    .argument('<path>', 'absolute path in the image')
    .action(async (image: string, path: string) => {
      await withImage(image, async (fs) => {
        for await (const chunk of fs.createReadStream(path)) await write(chunk as Buffer);
      });
    });

  program
    .command('get')
    .description('extract a file or a whole tree (nested subvolumes as directories) to the host, keeping mode, owner, ns times, xattrs, links, devices and holes')
    .argument('<image>', 'image file or block device')
    .argument('<path>', 'absolute path in the image (/ for everything)')
    .argument('<dest>', 'host destination (created; an existing directory receives the item inside it)')
    .option('--no-owner', 'do not chown (default: chown when running as root)')
    .option('-q, --quiet', 'no warnings, no progress')
    .action(async (image: string, path: string, dest: string, o: { owner: boolean; quiet?: boolean }) => {
      await withImage(image, async (fs) => {
        const progress = o.quiet ? undefined : Progress.start('extracting');
        try {
          const r = await extract(fs, path, dest, {
            preserveOwner: o.owner ? undefined : false,
            onProgress: progress ? (p) => progress.update(p.files, p.bytes) : undefined,
            onWarning: o.quiet ? undefined : (m) => process.stderr.write(`warning: ${m}\n`),
          });
          progress?.stop();
          if (!o.quiet) process.stderr.write(`extracted ${r.files} files, ${r.dirs} directories, ${r.hardlinks} hard links, ${r.bytes} bytes\n`);
        } finally {
          progress?.stop();
        }
      });
    });
}
