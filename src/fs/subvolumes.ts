/**
 * Subvolumes as `btrfs subvolume list` sees them: every ROOT_ITEM of an fs
 * tree (5 and 256..LAST_FREE) in the root tree, placed in the hierarchy by
 * its ROOT_BACKREF (parent tree, directory, name). A root item with no
 * backref and refs 0 is a deleted subvolume the cleaner has not dropped yet.
 */
import { BtrfsError } from '../util/errors.js';
import { uuidToString, isZero } from '../util/bytes.js';
import { KEY, OBJ, ROOT_FLAG } from '../format/constants.js';
import { key } from '../format/key.js';
import { decodeRootItem, type RootItem } from '../format/items/root-item.js';
import { decodeRootRef } from '../format/items/root-ref.js';
import { decodeInodeRefs } from '../format/items/inode-ref.js';
import { decodeDirItems } from '../format/items/dir-item.js';
import { nameHash } from '../util/checksum.js';
import { iterItems, lookupItem, type RootLocation } from '../tree/search.js';
import { rootLocation, type FsInfo } from '../tree/fs-info.js';
import { timespecNs } from './stats.js';

export interface SubvolumeInfo {
  id: bigint;
  /** path from the top-level subvolume, '/' for it; '' for a deleted subvolume */
  path: string;
  /** the subvolume containing it (0 for the top level and deleted ones) */
  parentId: bigint;
  /** inode of the directory in the parent that holds it */
  dirId: bigint;
  name: string;
  uuid: string;
  parentUuid: string | null;
  receivedUuid: string | null;
  generation: bigint;
  ctransid: bigint;
  otransid: bigint;
  stransid: bigint;
  rtransid: bigint;
  ctimeNs: bigint;
  otimeNs: bigint;
  flags: bigint;
  readOnly: boolean;
  /** ROOT_SUBVOL_DEAD set: deletion in progress */
  dead: boolean;
  /** unlinked, waiting for the cleaner */
  deleted: boolean;
  refs: number;
  rootItem: RootItem;
}

function optUuid(b: Buffer): string | null {
  return isZero(b) ? null : uuidToString(b);
}

/** Path of directory `dirIno` inside tree `root`, from that tree's root dir ('' for the root dir). */
export async function dirPathInTree(info: FsInfo, root: RootLocation, dirIno: bigint): Promise<string> {
  const parts: string[] = [];
  let ino = dirIno;
  for (let guard = 0; ino !== 256n; guard++) {
    if (guard > 4096) throw new BtrfsError('ELOOP', `directory ${dirIno} has no path to the root of tree ${root.objectid}`, { tree: root.objectid });
    let found = false;
    for await (const it of iterItems(info.reader, root, key(ino, KEY.INODE_REF, 0n), key(ino, KEY.INODE_REF, 0xffff_ffff_ffff_ffffn))) {
      const refs = decodeInodeRefs(it.data);
      if (refs.length === 0) break;
      parts.unshift(refs[0]!.name.toString('utf8'));
      ino = it.key.offset;
      found = true;
      break;
    }
    if (!found) throw new BtrfsError('ENOENT', `directory ${ino} has no INODE_REF in tree ${root.objectid}`, { tree: root.objectid });
  }
  return parts.join('/');
}

export async function listSubvolumes(info: FsInfo): Promise<SubvolumeInfo[]> {
  const items = new Map<bigint, RootItem>();
  const backrefs = new Map<bigint, { parent: bigint; dirid: bigint; name: string }>();
  const top = await info.findRootItem(OBJ.FS_TREE);
  if (top) items.set(OBJ.FS_TREE, top.item);
  for await (const it of iterItems(info.reader, info.treeRoot, key(OBJ.FIRST_FREE, KEY.ROOT_ITEM, 0n), key(OBJ.LAST_FREE, 255, 0xffff_ffff_ffff_ffffn))) {
    const where = { tree: OBJ.ROOT_TREE, block: it.block.bytenr, key: it.key };
    try {
      if (it.key.type === KEY.ROOT_ITEM) items.set(it.key.objectid, decodeRootItem(it.data));
      else if (it.key.type === KEY.ROOT_BACKREF) {
        const r = decodeRootRef(it.data);
        backrefs.set(it.key.objectid, { parent: it.key.offset, dirid: r.dirid, name: r.name.toString('utf8') });
      }
    } catch (e) {
      throw e instanceof BtrfsError ? e.withWhere(where) : e;
    }
  }
  const paths = new Map<bigint, string>([[OBJ.FS_TREE, '/']]);
  const pathOf = async (id: bigint, depth = 0): Promise<string> => {
    const known = paths.get(id);
    if (known !== undefined) return known;
    const br = backrefs.get(id);
    if (!br || depth > 4096) return '';
    const parentPath = await pathOf(br.parent, depth + 1);
    if (parentPath === '') return '';
    const parentItem = items.get(br.parent);
    if (!parentItem) return '';
    const dir = await dirPathInTree(info, rootLocation(br.parent, parentItem), br.dirid);
    const p = [parentPath === '/' ? '' : parentPath, dir, br.name].filter((s, i) => i === 0 || s !== '').join('/');
    paths.set(id, p);
    return p;
  };
  const out: SubvolumeInfo[] = [];
  for (const [id, item] of items) {
    const br = backrefs.get(id);
    const path = await pathOf(id);
    out.push({
      id,
      path,
      parentId: br?.parent ?? 0n,
      dirId: br?.dirid ?? 0n,
      name: id === OBJ.FS_TREE ? '' : br?.name ?? '',
      uuid: uuidToString(item.uuid),
      parentUuid: optUuid(item.parent_uuid),
      receivedUuid: optUuid(item.received_uuid),
      generation: item.generation,
      ctransid: item.ctransid,
      otransid: item.otransid,
      stransid: item.stransid,
      rtransid: item.rtransid,
      ctimeNs: timespecNs(item.ctime),
      otimeNs: timespecNs(item.otime),
      flags: item.flags,
      readOnly: (item.flags & ROOT_FLAG.SUBVOL_RDONLY) !== 0n,
      dead: (item.flags & ROOT_FLAG.SUBVOL_DEAD) !== 0n,
      deleted: id !== OBJ.FS_TREE && (!br || item.refs === 0),
      refs: item.refs,
      rootItem: item,
    });
  }
  return out;
}

/** The default subvolume: the root tree's "default" entry in dir 6 (5 when absent). */
export async function defaultSubvolume(info: FsInfo): Promise<bigint> {
  const name = Buffer.from('default');
  const it = await lookupItem(info.reader, info.treeRoot, key(OBJ.ROOT_TREE_DIR, KEY.DIR_ITEM, nameHash(name)));
  if (!it) return OBJ.FS_TREE;
  const d = decodeDirItems(it.data).find((e) => e.name.equals(name));
  return d ? d.location.objectid : OBJ.FS_TREE;
}

/** Whether `parent` links subvolume `child` (the kernel checks ROOT_REF before crossing into it). */
export async function hasRootRef(info: FsInfo, parent: bigint, child: bigint): Promise<boolean> {
  return (await lookupItem(info.reader, info.treeRoot, key(parent, KEY.ROOT_REF, child))) !== undefined;
}
