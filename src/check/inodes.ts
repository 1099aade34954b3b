/**
 * Each subvolume's inodes agree with their names. For every inode: an
 * INODE_ITEM exists; its nlink counts its INODE_REF/INODE_EXTREF names (a
 * directory has exactly one); every name has both directory entries
 * (DIR_ITEM by name hash, DIR_INDEX by index) in its parent, and every
 * directory entry has the name back; a directory's isize is the bytes of the
 * names it holds (each counted once as DIR_ITEM, once as DIR_INDEX); nbytes
 * is what its file extents occupy; file extents do not overlap (nor leave
 * holes, before NO_HOLES); an inode nobody names has an orphan item.
 */
import { FEATURE_INCOMPAT, FILE_EXTENT, FT, INODE_FLAG, KEY, OBJ, S_IFDIR, S_IFMT, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK } from '../format/constants.js';
import type { Key } from '../format/key.js';
import { decodeInodeItem, type InodeItem } from '../format/items/inode-item.js';
import { decodeInodeRefs } from '../format/items/inode-ref.js';
import { decodeInodeExtrefs } from '../format/items/inode-extref.js';
import { decodeDirItems } from '../format/items/dir-item.js';
import { decodeFileExtentItem } from '../format/items/file-extent-item.js';
import { nameHash } from '../util/checksum.js';
import { iterItems } from '../tree/search.js';
import type { CheckContext, RootRecord } from './context.js';

interface NameRef { parent: bigint; index: bigint; name: string; key: Key }
interface DirEntry { dir: bigint; name: string; child: bigint; childIsRoot: boolean; ftype: number; index?: bigint; key: Key }
interface FileExtent { offset: bigint; end: bigint; key: Key }

interface InodeRec {
  ino: bigint;
  item?: InodeItem;
  itemKey?: Key;
  refs: NameRef[];
  extents: FileExtent[];
  foundBytes: bigint;
  /** sum of name lengths of the entries this directory holds */
  dirNameBytes: bigint;
  firstKey: Key;
}

export interface FileExtentUse {
  tree: bigint; inode: bigint; key: Key; nodatasum: boolean;
  disk_bytenr: bigint; disk_num_bytes: bigint; offset: bigint; num_bytes: bigint; compressed: boolean; prealloc: boolean;
}

const FT_OF_MODE: Record<number, number> = {
  [S_IFREG]: FT.REG_FILE, [S_IFDIR]: FT.DIR, [S_IFCHR]: FT.CHRDEV, [S_IFBLK]: FT.BLKDEV,
  [S_IFIFO]: FT.FIFO, [S_IFSOCK]: FT.SOCK, [S_IFLNK]: FT.SYMLINK,
};

/** Inode flag bits the kernel defines; anything else is "odd". */
const KNOWN_INODE_FLAGS = (1n << 12n) - 1n | INODE_FLAG.ROOT_ITEM_INIT | (1n << 32n);

/** Trees that hold inodes: the top level, subvolumes and snapshots, and the data relocation tree. */
export function isFsTree(objectid: bigint): boolean {
  return objectid === OBJ.FS_TREE || objectid === OBJ.DATA_RELOC_TREE || (objectid >= OBJ.FIRST_FREE && objectid <= OBJ.LAST_FREE);
}

const latin = (b: Buffer) => b.toString('latin1');
const printable = (s: string) => Buffer.from(s, 'latin1').toString('utf8');

/**
 * Checks every fs tree; `onExtent` sees every regular/prealloc file extent
 * with the owning inode's NODATASUM flag, for the checksum pass.
 */
export async function checkInodes(ctx: CheckContext, onExtent: (u: FileExtentUse) => void): Promise<void> {
  for (const r of ctx.roots) {
    if (!isFsTree(r.objectid) || r.partiallyDropped) continue;
    ctx.onProgress?.(`checking inodes of root ${r.objectid}`);
    await checkTree(ctx, r, onExtent);
  }
}

async function checkTree(ctx: CheckContext, root: RootRecord, onExtent: (u: FileExtentUse) => void): Promise<void> {
  const { info, report } = ctx;
  const tree = root.objectid;
  const loc = { objectid: tree, bytenr: root.item.bytenr, level: root.item.level, generation: root.item.generation };
  const inodes = new Map<bigint, InodeRec>();
  const entries: DirEntry[] = [];
  const orphans = new Set<bigint>();
  const noHoles = (info.sb.incompat_flags & FEATURE_INCOMPAT.NO_HOLES) !== 0n;
  const pendingExtents: { ino: bigint; u: Omit<FileExtentUse, 'nodatasum'> }[] = [];
  const rec = (ino: bigint, k: Key): InodeRec => {
    let r = inodes.get(ino);
    if (!r) inodes.set(ino, r = { ino, refs: [], extents: [], foundBytes: 0n, dirNameBytes: 0n, firstKey: k });
    return r;
  };
  try {
    for await (const it of iterItems(info.reader, loc)) {
      const k = it.key;
      const where = { tree, block: it.block.bytenr, key: k, inode: k.objectid };
      try {
        if (k.objectid === OBJ.ORPHAN) {
          if (k.type === KEY.ORPHAN_ITEM) orphans.add(k.offset);
          continue;
        }
        // Special inodes past LAST_FREE (the deprecated inode cache, free space cache) have no names.
        if (k.objectid > OBJ.LAST_FREE) continue;
        switch (k.type) {
          case KEY.INODE_ITEM: {
            const r = rec(k.objectid, k);
            r.item = decodeInodeItem(it.data);
            r.itemKey = k;
            break;
          }
          case KEY.INODE_REF:
            for (const ref of decodeInodeRefs(it.data)) rec(k.objectid, k).refs.push({ parent: k.offset, index: ref.index, name: latin(ref.name), key: k });
            break;
          case KEY.INODE_EXTREF:
            for (const ref of decodeInodeExtrefs(it.data)) rec(k.objectid, k).refs.push({ parent: ref.parent, index: ref.index, name: latin(ref.name), key: k });
            break;
          case KEY.DIR_ITEM:
          case KEY.DIR_INDEX: {
            const r = rec(k.objectid, k);
            for (const d of decodeDirItems(it.data)) {
              const name = latin(d.name);
              r.dirNameBytes += BigInt(d.name.length);
              if (d.name.length === 0 || d.name.includes(0x2f) || d.name.includes(0)) {
                report.error('invalid-name', `root ${tree} inode ${k.objectid} errors: invalid dir entry name "${printable(name)}"`, where);
              }
              if (k.type === KEY.DIR_ITEM && nameHash(d.name) !== k.offset) {
                report.error('name-hash', `root ${tree} inode ${k.objectid} errors: dir item name "${printable(name)}" hash mismatch`, where);
              }
              entries.push({
                dir: k.objectid, name, child: d.location.objectid, childIsRoot: d.location.type === KEY.ROOT_ITEM, ftype: d.type,
                index: k.type === KEY.DIR_INDEX ? k.offset : undefined, key: k,
              });
            }
            break;
          }
          case KEY.EXTENT_DATA: {
            const r = rec(k.objectid, k);
            const fe = decodeFileExtentItem(it.data);
            if (fe.type === FILE_EXTENT.INLINE && 'data' in fe) {
              if (fe.compression === 0 && fe.ram_bytes !== BigInt(fe.data.length)) {
                report.error('inline-ram-bytes', `root ${tree} inode ${k.objectid} errors: invalid inline ram bytes, have ${fe.ram_bytes} expect ${fe.data.length}`, where);
              }
              r.foundBytes += fe.ram_bytes;
              r.extents.push({ offset: k.offset, end: k.offset + fe.ram_bytes, key: k });
            } else if ('disk_bytenr' in fe) {
              if (fe.disk_bytenr !== 0n) r.foundBytes += fe.num_bytes;
              r.extents.push({ offset: k.offset, end: k.offset + fe.num_bytes, key: k });
              if (fe.type !== FILE_EXTENT.REG && fe.type !== FILE_EXTENT.PREALLOC) {
                report.error('bad-file-extent', `root ${tree} inode ${k.objectid} errors: bad file extent type ${fe.type}`, where);
              } else if (fe.disk_bytenr !== 0n) {
                pendingExtents.push({ ino: k.objectid, u: {
                  tree, inode: k.objectid, key: k, disk_bytenr: fe.disk_bytenr, disk_num_bytes: fe.disk_num_bytes, offset: fe.offset,
                  num_bytes: fe.num_bytes, compressed: fe.compression !== 0, prealloc: fe.type === FILE_EXTENT.PREALLOC,
                } });
              }
            }
            break;
          }
          default: break;
        }
      } catch (e) {
        report.fromError(e, 'bad-item', where);
      }
    }
  } catch (e) {
    report.fromError(e, 'fs-tree-unreadable', { tree });
    return;
  }

  for (const p of pendingExtents) {
    const item = inodes.get(p.ino)?.item;
    const nodatasum = !item || (item.flags & INODE_FLAG.NODATASUM) !== 0n;
    // Compression needs data checksums: the kernel never writes a compressed extent without them.
    if (item && nodatasum && p.u.compressed) {
      report.error('compressed-nodatasum', `root ${tree} inode ${p.ino} errors: bad file extent, compressed extent without csum in a NODATASUM inode`,
        { tree, key: p.u.key, inode: p.ino });
    }
    onExtent({ ...p.u, nodatasum });
  }

  const superGen = info.sb.generation;
  const rootDir = root.item.root_dirid || 256n;
  const dataReloc = tree === OBJ.DATA_RELOC_TREE;
  // Index the entries both ways, for the name <-> entry cross-check.
  const byIndex = new Map<string, DirEntry>();
  const byName = new Map<string, DirEntry>();
  const indexNames = new Set<string>();
  for (const e of entries) {
    if (e.index !== undefined) { byIndex.set(`${e.dir}/${e.index}`, e); indexNames.add(`${e.dir}/${e.name}`); }
    else byName.set(`${e.dir}/${e.name}/${e.child}`, e);
  }

  for (const r of inodes.values()) {
    report.stats.inodes++;
    const ino = r.ino;
    const err = (code: string, what: string) => report.error(code, `root ${tree} inode ${ino} errors: ${what}`, { tree, key: r.itemKey ?? r.firstKey, inode: ino });
    if (!r.item) {
      err('no-inode-item', 'no inode item');
      continue;
    }
    const it = r.item;
    const type = it.mode & S_IFMT;
    const isDir = type === S_IFDIR;
    if ((it.flags & ~KNOWN_INODE_FLAGS) !== 0n) err('odd-inode-flags', `odd inode flags 0x${it.flags.toString(16)}`);
    // The kernel refuses to set immutable/append-only on a symlink (its setflags path
    // only accepts them on files and directories), so such a symlink is corruption.
    else if (type === S_IFLNK && (it.flags & (INODE_FLAG.IMMUTABLE | INODE_FLAG.APPEND)) !== 0n) {
      err('odd-inode-flags', `odd inode flags 0x${it.flags.toString(16)} (immutable/append on a symlink)`);
    }
    if (it.generation > superGen + 1n || it.transid > superGen + 1n) {
      err('inode-generation', `invalid inode generation or transid (generation ${it.generation}, transid ${it.transid}, super ${superGen})`);
    }
    for (const ref of r.refs) {
      const parent = inodes.get(ref.parent);
      if (ino === rootDir && ref.parent === ino) continue;
      if (!parent?.item) {
        err('ref-no-parent', `unresolved ref dir ${ref.parent} index ${ref.index} name ${printable(ref.name)}: parent directory does not exist`);
        continue;
      }
      const di = byIndex.get(`${ref.parent}/${ref.index}`);
      if (!di || di.name !== ref.name || di.child !== ino) {
        err('no-dir-index', `unresolved ref dir ${ref.parent} index ${ref.index} namelen ${ref.name.length} name ${printable(ref.name)}, no dir index`);
      }
      const dn = byName.get(`${ref.parent}/${ref.name}/${ino}`);
      if (!dn) {
        err('no-dir-item', `unresolved ref dir ${ref.parent} index ${ref.index} namelen ${ref.name.length} name ${printable(ref.name)}, no dir item`);
      }
    }
    const links = r.refs.filter((x) => !(ino === rootDir && x.parent === ino)).length;
    const special = dataReloc && ino !== rootDir;
    if (isDir) {
      // An unlinked directory waiting for its orphan cleanup has nlink 0.
      if (!special && it.nlink !== 1 && !(it.nlink === 0 && links === 0 && orphans.has(ino))) err('dir-nlink', `directory has invalid nlink ${it.nlink}`);
      if (links > 1) err('dir-hard-link', `directory has ${links} names`);
      if (r.dirNameBytes !== it.size && !orphans.has(ino)) err('dir-isize', `dir isize wrong, have ${it.size} expect ${r.dirNameBytes}`);
    } else if (!special) {
      if (it.nlink !== links) {
        if (!(links === 0 && orphans.has(ino))) err('nlink', `link count wrong, nlink ${it.nlink} but found ${links} name(s)`);
      }
    }
    if (ino !== rootDir && links === 0 && !orphans.has(ino) && !special) {
      err('unreferenced', 'unreferenced inode without an orphan item');
    }
    // An orphan may be half truncated: its extents and nbytes are in flux until cleanup.
    if (r.foundBytes !== it.nbytes && type !== S_IFDIR && !orphans.has(ino)) {
      const aligned = r.extents.length > 0 ? roundNbytes(r, info.sectorsize) : 0n;
      if (aligned !== it.nbytes) err('nbytes', `nbytes wrong, have ${it.nbytes} expect ${r.foundBytes}`);
    }
    let prevEnd = 0n;
    for (const fe of r.extents) {
      if (fe.offset < prevEnd) err('extent-overlap', `file extent at offset ${fe.offset} overlaps the previous one ending at ${prevEnd}`);
      else if (!noHoles && fe.offset > prevEnd && type === S_IFREG) err('file-extent-discount', `file extent discount, hole [${prevEnd}, ${fe.offset}) has no extent`);
      if (fe.end > prevEnd) prevEnd = fe.end;
    }
    if (!noHoles && type === S_IFREG && r.extents.length === 0 && it.size > 0n) {
      err('file-extent-discount', `file extent discount, size ${it.size} but no file extents`);
    }
  }

  for (const e of entries) {
    // A directory awaiting orphan cleanup may hold entries whose inodes are already gone.
    if (e.childIsRoot || orphans.has(e.dir)) continue;
    const where = { tree, key: e.key, inode: e.dir };
    const child = inodes.get(e.child);
    const kind = e.index !== undefined ? `index ${e.index}` : 'item';
    if (!child?.item) {
      report.error('entry-no-inode', `root ${tree} inode ${e.dir} errors: dir ${kind} name ${printable(e.name)} points to inode ${e.child} which has no inode item`, where);
      continue;
    }
    const want = FT_OF_MODE[child.item.mode & S_IFMT];
    if (want !== undefined && e.ftype !== want) {
      report.error('entry-filetype', `root ${tree} inode ${e.dir} errors: dir ${kind} name ${printable(e.name)} filetype ${e.ftype} but inode ${e.child} has filetype ${want}`, where);
    }
    const ref = child.refs.find((x) => x.parent === e.dir && x.name === e.name && (e.index === undefined || x.index === e.index));
    if (!ref) {
      report.error('no-inode-ref', `root ${tree} inode ${e.dir} errors: unresolved dir ${kind} name ${printable(e.name)} filetype ${e.ftype} for inode ${e.child}, no inode ref`, where);
    }
    if (e.index !== undefined && !byName.has(`${e.dir}/${e.name}/${e.child}`)) {
      report.error('no-dir-item', `root ${tree} inode ${e.dir} errors: dir index ${e.index} name ${printable(e.name)} has no dir item`, where);
    }
    if (e.index === undefined && !indexNames.has(`${e.dir}/${e.name}`)) {
      report.error('no-dir-index', `root ${tree} inode ${e.dir} errors: dir item name ${printable(e.name)} has no dir index`, where);
    }
  }
}

/** nbytes as the kernel counts inline extents: whole sectors. */
function roundNbytes(r: InodeRec, sectorsize: number): bigint {
  const ss = BigInt(sectorsize);
  let n = 0n;
  for (const fe of r.extents) n += fe.offset === 0n && r.extents.length === 1 ? (fe.end + ss - 1n) / ss * ss : 0n;
  return n || r.foundBytes;
}
