/**
 * The changing half of `btrfs subvolume` and `btrfs property`: create,
 * snapshot, delete, sync, set-default, and the ro property. Each command
 * commits before it returns; a refusal (EPERM during a send, ENOTEMPTY,
 * ...) changes nothing and exits 1 with the kernel's reason.
 */
import type { Command } from 'commander';
import { Subvolumes, BtrfsError } from '../../index.js';
import { lockWaitMs, write } from '../util.js';

async function withSubvolumes<T>(image: string, fn: (s: Subvolumes) => Promise<T>): Promise<T> {
  const s = await Subvolumes.open(image, { lockWaitMs: lockWaitMs() });
  try {
    return await fn(s);
  } finally {
    for (const w of s.warnings) process.stderr.write(`tsbtrfs: warning: ${w}\n`);
    await s.close();
  }
}

function parseBool(v: string): boolean {
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new BtrfsError('EINVAL', `value must be true or false, got '${v}'`);
}

/** Adds the writing subcommands to the `subvolume` command group. */
export function registerSubvolumeWrites(sub: Command): void {
  sub
    .command('create')
    .description('create an empty subvolume at PATH')
    .argument('<image>', 'image file or block device')
    .argument('<path...>', 'where the new subvolumes go')
    .action(async (image: string, paths: string[]) => {
      await withSubvolumes(image, async (s) => {
        for (const p of paths) {
          const id = await s.create(p);
          await write(`Create subvolume '${p}' (id ${id})\n`);
        }
      });
    });
  sub
    .command('snapshot')
    .description('snapshot the subvolume SOURCE as DEST (sharing its blocks)')
    .argument('<image>', 'image file or block device')
    .argument('<source>', 'path of the subvolume to snapshot')
    .argument('<dest>', 'path of the new snapshot')
    .option('-r, --readonly', 'make the snapshot read-only')
    .action(async (image: string, source: string, dest: string, o: { readonly?: boolean }) => {
      await withSubvolumes(image, async (s) => {
        const id = await s.snapshot(source, dest, { readonly: o.readonly });
        await write(`Create ${o.readonly ? 'a readonly' : 'a'} snapshot of '${source}' in '${dest}' (id ${id})\n`);
      });
    });
  sub
    .command('delete')
    .description('delete subvolumes (refused with EPERM while one is being sent)')
    .argument('<image>', 'image file or block device')
    .argument('[path...]', 'subvolume paths')
    .option('-i, --subvolid <id>', 'delete by subvolume id instead of path')
    .option('-c, --commit-after', 'accepted for btrfs compatibility: every deletion is committed anyway')
    .action(async (image: string, paths: string[], o: { subvolid?: string }) => {
      await withSubvolumes(image, async (s) => {
        if (o.subvolid !== undefined) {
          if (!/^\d+$/.test(o.subvolid)) throw new BtrfsError('EINVAL', `bad subvolume id '${o.subvolid}'`);
          await s.deleteById(BigInt(o.subvolid));
          await write(`Delete subvolume ${o.subvolid}\n`);
        }
        if (o.subvolid === undefined && paths.length === 0) throw new BtrfsError('EINVAL', 'no subvolume given');
        for (const p of paths) {
          const id = await s.delete(p);
          await write(`Delete subvolume '${p}' (id ${id})\n`);
        }
      });
    });
  sub
    .command('sync')
    .description('drop every deleted subvolume now (btrfs subvolume sync)')
    .argument('<image>', 'image file or block device')
    .action(async (image: string) => {
      await withSubvolumes(image, async (s) => {
        const ids = await s.sync();
        for (const id of ids) await write(`Subvolume id ${id} is gone\n`);
      });
    });
  sub
    .command('set-default')
    .description('make a subvolume the default (what a mount without subvol= shows)')
    .argument('<image>', 'image file or block device')
    .argument('<target>', 'subvolume id or path')
    .action(async (image: string, target: string) => {
      await withSubvolumes(image, (s) => s.setDefault(/^\d+$/.test(target) ? BigInt(target) : target));
    });
}

export function register(program: Command): void {
  const prop = program.command('property').description('subvolume properties (ro)');
  prop
    .command('get')
    .description('print a property: ro')
    .argument('<image>', 'image file or block device')
    .argument('<path>', 'subvolume path')
    .argument('[name]', 'property name', 'ro')
    .action(async (image: string, path: string, name: string) => {
      if (name !== 'ro') throw new BtrfsError('EINVAL', `unknown property '${name}'`);
      await withSubvolumes(image, async (s) => write(`ro=${await s.isReadOnly(path)}\n`));
    });
  prop
    .command('set')
    .description('set a property: ro true|false (ro false is EPERM while the subvolume is being sent)')
    .argument('<image>', 'image file or block device')
    .argument('<path>', 'subvolume path')
    .argument('<name>', 'property name (ro)')
    .argument('<value>', 'true or false')
    .action(async (image: string, path: string, name: string, value: string) => {
      if (name !== 'ro') throw new BtrfsError('EINVAL', `unknown property '${name}'`);
      await withSubvolumes(image, (s) => s.setReadOnly(path, parseBool(value)));
    });
}
