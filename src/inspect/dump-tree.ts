/**
 * `dump-tree`: every block of every tree, in the order and with the section
 * headings of `btrfs inspect-internal dump-tree` (root tree, chunk tree, then
 * each tree with a ROOT_ITEM in root-tree key order), so the two outputs can
 * be compared line by line.
 */
import { BtrfsError } from '../util/errors.js';
import { uuidToString } from '../util/bytes.js';
import { KEY, OBJ } from '../format/constants.js';
import { KEY_MAX, KEY_MIN } from '../format/key.js';
import { decodeRootItem } from '../format/items/root-item.js';
import type { TreeBlock } from '../format/tree-block.js';
import { iterItems, type RootLocation } from '../tree/search.js';
import { rootLocation, type FsInfo } from '../tree/fs-info.js';
import { printTreeBlock, objectidName, type PrintContext } from './print-tree.js';

const TREE_TITLES: Record<string, string> = {
  [OBJ.EXTENT_TREE.toString()]: 'extent tree',
  [OBJ.DEV_TREE.toString()]: 'device tree',
  [OBJ.FS_TREE.toString()]: 'fs tree',
  [OBJ.CSUM_TREE.toString()]: 'checksum tree',
  [OBJ.QUOTA_TREE.toString()]: 'quota tree',
  [OBJ.UUID_TREE.toString()]: 'uuid tree',
  [OBJ.FREE_SPACE_TREE.toString()]: 'free space tree',
  [OBJ.BLOCK_GROUP_TREE.toString()]: 'block group tree',
  [OBJ.RAID_STRIPE_TREE.toString()]: 'raid stripe tree',
  [OBJ.DATA_RELOC_TREE.toString()]: 'data reloc tree',
  [OBJ.TREE_RELOC.toString()]: 'tree reloc',
  [OBJ.TREE_LOG.toString()]: 'log tree',
};

function treeTitle(objectid: bigint): string {
  return TREE_TITLES[objectid.toString()] ?? (objectid >= OBJ.FIRST_FREE && objectid <= OBJ.LAST_FREE ? 'file tree' : 'tree');
}

export function printContextOf(info: FsInfo, utc = false): PrintContext {
  return { csumType: info.csumType, csumSize: info.csumSize, nodesize: info.nodesize, sectorsize: info.sectorsize, utc };
}

/**
 * Prints a tree breadth-first (level by level, as btrfs-progs 6.2 does by
 * default) or depth-first. A block reached twice is a loop or a shared
 * block inside one tree; it is reported, not followed again.
 */
async function dumpTreeBlocks(info: FsInfo, root: RootLocation, out: Output, opts: DumpTreeOptions): Promise<void> {
  const ctx = printContextOf(info, !!opts.utc);
  const seen = new Set<bigint>();
  const queue: { bytenr: bigint; level: number; generation: bigint }[] = [{ bytenr: root.bytenr, level: root.level, generation: root.generation }];
  while (queue.length) {
    const { bytenr, level, generation } = opts.dfs ? queue.pop()! : queue.shift()!;
    if (seen.has(bytenr)) {
      await out(`ERROR: tree block ${bytenr} is referenced twice in tree ${root.objectid}\n`);
      continue;
    }
    seen.add(bytenr);
    let block: TreeBlock;
    try {
      block = await info.reader.read({ bytenr, level, generation, owner: root.objectid });
    } catch (e) {
      if (e instanceof BtrfsError) { await out(`ERROR: ${e.message}\n`); continue; }
      throw e;
    }
    await out(printTreeBlock(block, ctx));
    if (!block.isLeaf) {
      const kids = block.ptrs.map((p) => ({ bytenr: p.blockptr, level: block.level - 1, generation: p.generation }));
      if (opts.dfs) kids.reverse();
      queue.push(...kids);
    }
  }
}

/** Receives the text piece by piece; a returned promise is awaited (backpressure). */
export type Output = (s: string) => unknown;

export interface DumpTreeOptions {
  /** only this tree (objectid) */
  tree?: bigint;
  /** only this block */
  block?: bigint;
  /** timestamps in UTC instead of local time (btrfs-progs uses local time) */
  utc?: boolean;
  /** depth-first instead of breadth-first */
  dfs?: boolean;
}

export async function dumpTree(info: FsInfo, out: Output, opts: DumpTreeOptions = {}): Promise<void> {
  if (opts.block !== undefined) {
    const block = await info.reader.read({ bytenr: opts.block });
    await out(printTreeBlock(block, printContextOf(info, !!opts.utc)));
    return;
  }
  if (opts.tree !== undefined) {
    const root = await info.rootOf(opts.tree);
    await dumpTreeBlocks(info, root, out, opts);
    return;
  }
  await out('root tree\n');
  await dumpTreeBlocks(info, info.treeRoot, out, opts);
  await out('chunk tree\n');
  await dumpTreeBlocks(info, info.chunkRoot, out, opts);
  const logRoot = info.logRoot;
  if (logRoot) {
    await out('log root tree\n');
    await dumpTreeBlocks(info, logRoot, out, opts);
  }
  const dumpRoots = async (root: RootLocation, title: (objectid: bigint) => string): Promise<void> => {
    for await (const it of iterItems(info.reader, root, KEY_MIN, KEY_MAX)) {
      if (it.key.type !== KEY.ROOT_ITEM) continue;
      if (it.key.objectid === OBJ.ROOT_TREE || it.key.objectid === OBJ.CHUNK_TREE) continue;
      const item = decodeRootItem(it.data);
      await out(`${title(it.key.objectid)} key (${objectidName(it.key.objectid, KEY.ROOT_ITEM)} ROOT_ITEM ${it.key.offset}) \n`);
      await dumpTreeBlocks(info, rootLocation(it.key.objectid, item), out, opts);
    }
  };
  await dumpRoots(info.treeRoot, treeTitle);
  // The log root tree holds one ROOT_ITEM per subvolume with fsynced changes.
  if (logRoot) await dumpRoots(logRoot, () => 'log tree');
  await out(`total bytes ${info.sb.total_bytes}\n`);
  await out(`bytes used ${info.sb.bytes_used}\n`);
  await out(`uuid ${uuidToString(info.sb.fsid)}\n`);
}
