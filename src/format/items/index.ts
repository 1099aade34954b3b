/**
 * One entry point from (key, bytes) to a typed item: the key type picks the
 * format, and for TEMPORARY_ITEM / PERSISTENT_ITEM (and the untyped free
 * space cache header) the objectid does. Used by the dump-tree printer and
 * the filesystem layer; unknown types come back raw so that callers can
 * still copy or print them.
 */
import { KEY, OBJ } from '../constants.js';
import type { Key } from '../key.js';
import { decodeInodeItem, encodeInodeItem, type InodeItem } from './inode-item.js';
import { decodeInodeRefs, encodeInodeRefs, type InodeRef } from './inode-ref.js';
import { decodeInodeExtrefs, encodeInodeExtrefs, type InodeExtref } from './inode-extref.js';
import { decodeDirItems, encodeDirItems, type DirItem } from './dir-item.js';
import { decodeFileExtentItem, encodeFileExtentItem, type FileExtentItem } from './file-extent-item.js';
import { decodeRootItem, encodeRootItem, type RootItem } from './root-item.js';
import { decodeRootRef, encodeRootRef, type RootRef } from './root-ref.js';
import { decodeExtentItem, encodeExtentItem, type ExtentItem } from './extent-item.js';
import { decodeExtentDataRef, decodeSharedDataRef, encodeExtentDataRef, encodeSharedDataRef, type ExtentDataRef, type SharedDataRef } from './extent-ref.js';
import { decodeBlockGroupItem, encodeBlockGroupItem, type BlockGroupItem } from './block-group-item.js';
import { decodeDevExtent, encodeDevExtent, type DevExtent } from './dev-extent.js';
import { decodeExtentCsums, encodeExtentCsums } from './extent-csum.js';
import { decodeFreeSpaceInfo, decodeFreeSpaceHeader, encodeFreeSpaceInfo, encodeFreeSpaceHeader, type FreeSpaceInfo, type FreeSpaceHeader } from './free-space.js';
import { decodeUuidItem, encodeUuidItem } from './uuid-item.js';
import { decodeDevStats, encodeDevStats } from './dev-stats.js';
import { decodeQgroupStatus, decodeQgroupInfo, decodeQgroupLimit, encodeQgroupStatus, encodeQgroupInfo, encodeQgroupLimit, type QgroupStatus, type QgroupInfo, type QgroupLimit } from './qgroup.js';
import { decodeDevReplace, encodeDevReplace, type DevReplaceItem } from './dev-replace.js';
import { decodeBalanceItem, encodeBalanceItem, type BalanceItem } from './balance-item.js';
import { decodeDirLogItem, encodeDirLogItem, type DirLogItem } from './dir-log-item.js';
import { decodeOrphanItem } from './orphan-item.js';
import { decodeChunkItem, encodeChunkItem, type ChunkItem } from './chunk-item.js';
import { devItem, type DevItem } from './dev-item.js';
import { BtrfsError, corrupt } from '../../util/errors.js';

export interface DecodeContext {
  /** checksum size of the filesystem (superblock csum_type): 4, 8 or 32 */
  csumSize: number;
}

/** Items without a body: the key is the whole record. */
type Empty = Record<string, never>;

export type DecodedItem =
  | { kind: 'inode_item'; value: InodeItem }
  | { kind: 'inode_ref'; value: InodeRef[] }
  | { kind: 'inode_extref'; value: InodeExtref[] }
  | { kind: 'dir_item'; value: DirItem[] }
  | { kind: 'dir_index'; value: DirItem[] }
  | { kind: 'xattr_item'; value: DirItem[] }
  | { kind: 'dir_log_item'; value: DirLogItem }
  | { kind: 'dir_log_index'; value: DirLogItem }
  | { kind: 'file_extent_item'; value: FileExtentItem }
  | { kind: 'orphan_item'; value: Empty }
  | { kind: 'root_item'; value: RootItem }
  | { kind: 'root_ref'; value: RootRef }
  | { kind: 'root_backref'; value: RootRef }
  | { kind: 'extent_item'; value: ExtentItem }
  | { kind: 'metadata_item'; value: ExtentItem }
  | { kind: 'tree_block_ref'; value: Empty }
  | { kind: 'shared_block_ref'; value: Empty }
  | { kind: 'extent_data_ref'; value: ExtentDataRef }
  | { kind: 'shared_data_ref'; value: SharedDataRef }
  | { kind: 'extent_csum'; value: Buffer[] }
  | { kind: 'block_group_item'; value: BlockGroupItem }
  | { kind: 'free_space_info'; value: FreeSpaceInfo }
  | { kind: 'free_space_extent'; value: Empty }
  | { kind: 'free_space_bitmap'; value: Buffer }
  | { kind: 'free_space_header'; value: FreeSpaceHeader }
  | { kind: 'dev_item'; value: DevItem }
  | { kind: 'chunk_item'; value: ChunkItem }
  | { kind: 'dev_extent'; value: DevExtent }
  | { kind: 'dev_stats'; value: bigint[] }
  | { kind: 'dev_replace'; value: DevReplaceItem }
  | { kind: 'balance_item'; value: BalanceItem }
  | { kind: 'qgroup_status'; value: QgroupStatus }
  | { kind: 'qgroup_info'; value: QgroupInfo }
  | { kind: 'qgroup_limit'; value: QgroupLimit }
  | { kind: 'qgroup_relation'; value: Empty }
  | { kind: 'uuid_subvol'; value: bigint[] }
  | { kind: 'uuid_received_subvol'; value: bigint[] }
  | { kind: 'string_item'; value: Buffer }
  | { kind: 'verity_desc_item'; value: Buffer }
  | { kind: 'verity_merkle_item'; value: Buffer }
  /** a TEMPORARY_ITEM / PERSISTENT_ITEM whose objectid tsbtrfs does not know */
  | { kind: 'temporary_item'; value: Buffer }
  | { kind: 'persistent_item'; value: Buffer }
  | { kind: 'unknown'; data: Buffer };

export type DecodedKind = DecodedItem['kind'];

function empty(kind: string, data: Buffer): Empty {
  if (data.length !== 0) throw corrupt(`${kind} item with ${data.length} bytes of body, expected none`);
  return {};
}

/**
 * Decodes the item with key `key` and bytes `data`. Throws EUCLEAN (with the
 * key attached) when the bytes do not fit the format; never returns partial values.
 */
export function decodeItem(key: Key, data: Buffer, ctx: DecodeContext): DecodedItem {
  try {
    return decodeUnchecked(key, data, ctx);
  } catch (e) {
    throw e instanceof BtrfsError ? e.withWhere({ key }) : e;
  }
}

function decodeUnchecked(key: Key, data: Buffer, ctx: DecodeContext): DecodedItem {
  switch (key.type) {
    case KEY.INODE_ITEM: return { kind: 'inode_item', value: decodeInodeItem(data) };
    case KEY.INODE_REF: return { kind: 'inode_ref', value: decodeInodeRefs(data) };
    case KEY.INODE_EXTREF: return { kind: 'inode_extref', value: decodeInodeExtrefs(data) };
    case KEY.DIR_ITEM: return { kind: 'dir_item', value: decodeDirItems(data) };
    case KEY.DIR_INDEX: return { kind: 'dir_index', value: decodeDirItems(data) };
    case KEY.XATTR_ITEM: return { kind: 'xattr_item', value: decodeDirItems(data) };
    case KEY.DIR_LOG_ITEM: return { kind: 'dir_log_item', value: decodeDirLogItem(data) };
    case KEY.DIR_LOG_INDEX: return { kind: 'dir_log_index', value: decodeDirLogItem(data) };
    case KEY.EXTENT_DATA: return { kind: 'file_extent_item', value: decodeFileExtentItem(data) };
    case KEY.ORPHAN_ITEM: return { kind: 'orphan_item', value: decodeOrphanItem(data) };
    case KEY.ROOT_ITEM: return { kind: 'root_item', value: decodeRootItem(data) };
    case KEY.ROOT_REF: return { kind: 'root_ref', value: decodeRootRef(data) };
    case KEY.ROOT_BACKREF: return { kind: 'root_backref', value: decodeRootRef(data) };
    case KEY.EXTENT_ITEM: return { kind: 'extent_item', value: decodeExtentItem(data) };
    case KEY.METADATA_ITEM: return { kind: 'metadata_item', value: decodeExtentItem(data, { skinny: true }) };
    case KEY.TREE_BLOCK_REF: return { kind: 'tree_block_ref', value: empty('tree_block_ref', data) };
    case KEY.SHARED_BLOCK_REF: return { kind: 'shared_block_ref', value: empty('shared_block_ref', data) };
    case KEY.EXTENT_DATA_REF: return { kind: 'extent_data_ref', value: decodeExtentDataRef(data) };
    case KEY.SHARED_DATA_REF: return { kind: 'shared_data_ref', value: decodeSharedDataRef(data) };
    case KEY.EXTENT_CSUM: return { kind: 'extent_csum', value: decodeExtentCsums(data, ctx.csumSize) };
    case KEY.BLOCK_GROUP_ITEM: return { kind: 'block_group_item', value: decodeBlockGroupItem(data) };
    case KEY.FREE_SPACE_INFO: return { kind: 'free_space_info', value: decodeFreeSpaceInfo(data) };
    case KEY.FREE_SPACE_EXTENT: return { kind: 'free_space_extent', value: empty('free_space_extent', data) };
    case KEY.FREE_SPACE_BITMAP: return { kind: 'free_space_bitmap', value: Buffer.from(data) };
    case KEY.DEV_ITEM: return { kind: 'dev_item', value: devItem.decode(data, 0) };
    case KEY.CHUNK_ITEM: return { kind: 'chunk_item', value: decodeChunkItem(data, 0, data.length) };
    case KEY.DEV_EXTENT: return { kind: 'dev_extent', value: decodeDevExtent(data) };
    case KEY.QGROUP_STATUS: return { kind: 'qgroup_status', value: decodeQgroupStatus(data) };
    case KEY.QGROUP_INFO: return { kind: 'qgroup_info', value: decodeQgroupInfo(data) };
    case KEY.QGROUP_LIMIT: return { kind: 'qgroup_limit', value: decodeQgroupLimit(data) };
    case KEY.QGROUP_RELATION: return { kind: 'qgroup_relation', value: empty('qgroup_relation', data) };
    case KEY.DEV_REPLACE: return { kind: 'dev_replace', value: decodeDevReplace(data) };
    case KEY.UUID_KEY_SUBVOL: return { kind: 'uuid_subvol', value: decodeUuidItem(data) };
    case KEY.UUID_KEY_RECEIVED_SUBVOL: return { kind: 'uuid_received_subvol', value: decodeUuidItem(data) };
    case KEY.STRING_ITEM: return { kind: 'string_item', value: Buffer.from(data) };
    case KEY.VERITY_DESC_ITEM: return { kind: 'verity_desc_item', value: Buffer.from(data) };
    case KEY.VERITY_MERKLE_ITEM: return { kind: 'verity_merkle_item', value: Buffer.from(data) };
    case KEY.TEMPORARY_ITEM:
      if (key.objectid === OBJ.BALANCE) return { kind: 'balance_item', value: decodeBalanceItem(data) };
      return { kind: 'temporary_item', value: Buffer.from(data) };
    case KEY.PERSISTENT_ITEM:
      if (key.objectid === OBJ.DEV_STATS) return { kind: 'dev_stats', value: decodeDevStats(data) };
      return { kind: 'persistent_item', value: Buffer.from(data) };
    case 0:
      if (key.objectid === OBJ.FREE_SPACE) return { kind: 'free_space_header', value: decodeFreeSpaceHeader(data) };
      return { kind: 'unknown', data: Buffer.from(data) };
    default:
      return { kind: 'unknown', data: Buffer.from(data) };
  }
}

/** The bytes of a decoded item: encodeItem(decodeItem(k, b, ctx)) reproduces b. */
export function encodeItem(item: DecodedItem): Buffer {
  switch (item.kind) {
    case 'inode_item': return encodeInodeItem(item.value);
    case 'inode_ref': return encodeInodeRefs(item.value);
    case 'inode_extref': return encodeInodeExtrefs(item.value);
    case 'dir_item':
    case 'dir_index':
    case 'xattr_item':
      return encodeDirItems(item.value);
    case 'dir_log_item':
    case 'dir_log_index':
      return encodeDirLogItem(item.value);
    case 'file_extent_item': return encodeFileExtentItem(item.value);
    case 'root_item': return encodeRootItem(item.value);
    case 'root_ref':
    case 'root_backref':
      return encodeRootRef(item.value);
    case 'extent_item':
    case 'metadata_item':
      return encodeExtentItem(item.value);
    case 'extent_data_ref': return encodeExtentDataRef(item.value);
    case 'shared_data_ref': return encodeSharedDataRef(item.value);
    case 'extent_csum': return encodeExtentCsums(item.value);
    case 'block_group_item': return encodeBlockGroupItem(item.value);
    case 'free_space_info': return encodeFreeSpaceInfo(item.value);
    case 'free_space_header': return encodeFreeSpaceHeader(item.value);
    case 'dev_item': return devItem.toBuffer(item.value);
    case 'chunk_item': return encodeChunkItem(item.value);
    case 'dev_extent': return encodeDevExtent(item.value);
    case 'dev_stats': return encodeDevStats(item.value);
    case 'dev_replace': return encodeDevReplace(item.value);
    case 'balance_item': return encodeBalanceItem(item.value);
    case 'qgroup_status': return encodeQgroupStatus(item.value);
    case 'qgroup_info': return encodeQgroupInfo(item.value);
    case 'qgroup_limit': return encodeQgroupLimit(item.value);
    case 'uuid_subvol':
    case 'uuid_received_subvol':
      return encodeUuidItem(item.value);
    case 'orphan_item':
    case 'tree_block_ref':
    case 'shared_block_ref':
    case 'free_space_extent':
    case 'qgroup_relation':
      return Buffer.alloc(0);
    case 'free_space_bitmap':
    case 'string_item':
    case 'verity_desc_item':
    case 'verity_merkle_item':
    case 'temporary_item':
    case 'persistent_item':
      return Buffer.from(item.value);
    case 'unknown':
      return Buffer.from(item.data);
  }
}

export * from './inode-item.js';
export * from './inode-ref.js';
export * from './inode-extref.js';
export * from './dir-item.js';
export * from './file-extent-item.js';
export * from './root-item.js';
export * from './root-ref.js';
export * from './extent-item.js';
export * from './extent-ref.js';
export * from './block-group-item.js';
export * from './dev-extent.js';
export * from './extent-csum.js';
export * from './free-space.js';
export * from './uuid-item.js';
export * from './dev-stats.js';
export * from './qgroup.js';
export * from './dev-replace.js';
export * from './balance-item.js';
export * from './dir-log-item.js';
export * from './orphan-item.js';
export * from './string-item.js';
export * from './verity.js';
export * from './chunk-item.js';
export * from './dev-item.js';
