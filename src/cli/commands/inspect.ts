/** dump-super and dump-tree: print on-disk structures like btrfs inspect-internal. */
import type { Command } from 'commander';
import { FsInfo, FileDevice, dumpTree, printSuperblock, OBJ, BtrfsError } from '../../index.js';
import { write, parseBigInt } from '../util.js';

const TREE_NAMES: Record<string, bigint> = {
  root: OBJ.ROOT_TREE, extent: OBJ.EXTENT_TREE, chunk: OBJ.CHUNK_TREE, dev: OBJ.DEV_TREE, device: OBJ.DEV_TREE,
  fs: OBJ.FS_TREE, csum: OBJ.CSUM_TREE, checksum: OBJ.CSUM_TREE, quota: OBJ.QUOTA_TREE, uuid: OBJ.UUID_TREE,
  'free-space': OBJ.FREE_SPACE_TREE, free_space: OBJ.FREE_SPACE_TREE, 'block-group': OBJ.BLOCK_GROUP_TREE,
  'data-reloc': OBJ.DATA_RELOC_TREE, 'tree-log': OBJ.TREE_LOG, log: OBJ.TREE_LOG,
};

function parseTree(v: string): bigint {
  const n = TREE_NAMES[v.toLowerCase().replace(/_tree$|-tree$/, '')];
  if (n !== undefined) return n;
  return parseBigInt(v, 'tree');
}

async function openInfo(image: string, superMirror?: number): Promise<{ info: FsInfo; close: () => Promise<void> }> {
  const dev = await FileDevice.open(image, { readOnly: true });
  try {
    return { info: await FsInfo.open(dev, { superMirror }), close: () => dev.close() };
  } catch (e) {
    await dev.close();
    throw e;
  }
}

export function register(program: Command): void {
  program
    .command('dump-super')
    .description('print the superblock, like btrfs inspect-internal dump-super')
    .argument('<image>', 'image file or block device')
    .option('-f, --full', 'print sys_chunk_array and backup roots too')
    .option('-s, --super <n>', 'superblock copy to print (0, 1, 2)', '0')
    .action(async (image: string, o: { full?: boolean; super: string }) => {
      const dev = await FileDevice.open(image, { readOnly: true });
      try {
        const mirror = Number(o.super);
        if (![0, 1, 2].includes(mirror)) throw new BtrfsError('EINVAL', `no superblock copy ${o.super}`);
        const { sb, raw } = await FsInfo.readSuperblock(dev, mirror);
        await write(printSuperblock(sb, raw, { full: !!o.full, device: image }));
      } finally {
        await dev.close();
      }
    });

  program
    .command('dump-tree')
    .description('print tree blocks, like btrfs inspect-internal dump-tree')
    .argument('<image>', 'image file or block device')
    .option('-t, --tree <tree>', 'only this tree: a name (root, extent, chunk, dev, fs, csum, quota, uuid, free-space, data-reloc, block-group) or an id')
    .option('-b, --block <bytenr>', 'only the tree block at this logical address')
    .option('--dfs', 'depth-first order (default: breadth-first, as btrfs-progs)')
    .option('--bfs', 'breadth-first order (the default)')
    .action(async (image: string, o: { tree?: string; block?: string; dfs?: boolean }) => {
      const { info, close } = await openInfo(image);
      try {
        // Batch small pieces into 64 KiB writes; write() waits for stdout to drain.
        let buf = '';
        await dumpTree(info, async (s) => {
          buf += s;
          if (buf.length > 1 << 16) { const chunk = buf; buf = ''; await write(chunk); }
        }, { dfs: !!o.dfs, tree: o.tree !== undefined ? parseTree(o.tree) : undefined, block: o.block !== undefined ? parseBigInt(o.block, 'bytenr') : undefined });
        if (buf) await write(buf);
      } finally {
        await close();
      }
    });
}
