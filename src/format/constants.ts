/**
 * On-disk constants of btrfs: item key types, well-known objectids, flags.
 * Names follow the kernel's (without the BTRFS_ prefix) so that code reads
 * like the format's documentation.
 */

export const SUPER_INFO_OFFSET = 65536;
export const SUPER_INFO_SIZE = 4096;
/** Superblock mirrors: 64 KiB, 64 MiB, 256 GiB (each used only if the device is large enough). */
export const SUPER_MIRROR_OFFSETS = [65536, 64 * 1024 * 1024, 256 * 1024 * 1024 * 1024];
export const MAGIC = Buffer.from('_BHRfS_M', 'latin1');
export const CSUM_SIZE = 32;
export const FSID_SIZE = 16;
export const UUID_SIZE = 16;
export const HEADER_SIZE = 101;
export const ITEM_SIZE = 25;
export const KEY_PTR_SIZE = 33;
export const DISK_KEY_SIZE = 17;
export const MAX_LEVEL = 8;
export const SYSTEM_CHUNK_ARRAY_SIZE = 2048;
export const NUM_BACKUP_ROOTS = 4;
export const LABEL_SIZE = 256;
export const NAME_LEN = 255;

/** Item key types. */
export const KEY = {
  INODE_ITEM: 1,
  INODE_REF: 12,
  INODE_EXTREF: 13,
  XATTR_ITEM: 24,
  VERITY_DESC_ITEM: 36,
  VERITY_MERKLE_ITEM: 37,
  ORPHAN_ITEM: 48,
  DIR_LOG_ITEM: 60,
  DIR_LOG_INDEX: 72,
  DIR_ITEM: 84,
  DIR_INDEX: 96,
  EXTENT_DATA: 108,
  EXTENT_CSUM: 128,
  ROOT_ITEM: 132,
  ROOT_BACKREF: 144,
  ROOT_REF: 156,
  EXTENT_ITEM: 168,
  METADATA_ITEM: 169,
  EXTENT_OWNER_REF: 172,
  TREE_BLOCK_REF: 176,
  EXTENT_DATA_REF: 178,
  EXTENT_REF_V0: 180,
  SHARED_BLOCK_REF: 182,
  SHARED_DATA_REF: 184,
  BLOCK_GROUP_ITEM: 192,
  FREE_SPACE_INFO: 198,
  FREE_SPACE_EXTENT: 199,
  FREE_SPACE_BITMAP: 200,
  DEV_EXTENT: 204,
  DEV_ITEM: 216,
  CHUNK_ITEM: 228,
  RAID_STRIPE: 230,
  QGROUP_STATUS: 240,
  QGROUP_INFO: 242,
  QGROUP_LIMIT: 244,
  QGROUP_RELATION: 246,
  /** also BALANCE_ITEM */
  TEMPORARY_ITEM: 248,
  /** also DEV_STATS */
  PERSISTENT_ITEM: 249,
  DEV_REPLACE: 250,
  UUID_KEY_SUBVOL: 251,
  UUID_KEY_RECEIVED_SUBVOL: 252,
  STRING_ITEM: 253,
} as const;

/** Key type name as dump-tree prints it. */
export const KEY_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(KEY).map(([k, v]) => [v, k]),
);
KEY_NAMES[KEY.TEMPORARY_ITEM] = 'TEMPORARY_ITEM';
KEY_NAMES[KEY.PERSISTENT_ITEM] = 'PERSISTENT_ITEM';

/** Well-known objectids (tree ids and special inode numbers). */
export const OBJ = {
  ROOT_TREE: 1n,
  EXTENT_TREE: 2n,
  CHUNK_TREE: 3n,
  DEV_TREE: 4n,
  FS_TREE: 5n,
  ROOT_TREE_DIR: 6n,
  CSUM_TREE: 7n,
  QUOTA_TREE: 8n,
  UUID_TREE: 9n,
  FREE_SPACE_TREE: 10n,
  BLOCK_GROUP_TREE: 11n,
  RAID_STRIPE_TREE: 12n,
  DEV_STATS: 0n,
  FIRST_FREE: 256n,
  LAST_FREE: 0xffff_ffff_ffff_ff00n, // -256
  FIRST_CHUNK_TREE: 256n,
  DEV_ITEMS: 1n,
  BALANCE: 0xffff_ffff_ffff_fffcn, // -4
  ORPHAN: 0xffff_ffff_ffff_fffbn, // -5
  TREE_LOG: 0xffff_ffff_ffff_fffan, // -6
  TREE_LOG_FIXUP: 0xffff_ffff_ffff_fff9n, // -7
  TREE_RELOC: 0xffff_ffff_ffff_fff8n, // -8
  DATA_RELOC_TREE: 0xffff_ffff_ffff_fff7n, // -9
  EXTENT_CSUM: 0xffff_ffff_ffff_fff6n, // -10
  FREE_SPACE: 0xffff_ffff_ffff_fff5n, // -11
  FREE_INO: 0xffff_ffff_ffff_fff4n, // -12
  MULTIPLE: 0xffff_ffff_ffff_fffen, // -2
} as const;

/** Block group / chunk type and profile bits. */
export const BLOCK_GROUP = {
  DATA: 1n << 0n,
  SYSTEM: 1n << 1n,
  METADATA: 1n << 2n,
  RAID0: 1n << 3n,
  RAID1: 1n << 4n,
  DUP: 1n << 5n,
  RAID10: 1n << 6n,
  RAID5: 1n << 7n,
  RAID6: 1n << 8n,
  RAID1C3: 1n << 9n,
  RAID1C4: 1n << 10n,
} as const;
export const BLOCK_GROUP_TYPE_MASK = BLOCK_GROUP.DATA | BLOCK_GROUP.SYSTEM | BLOCK_GROUP.METADATA;
export const BLOCK_GROUP_PROFILE_MASK =
  BLOCK_GROUP.RAID0 | BLOCK_GROUP.RAID1 | BLOCK_GROUP.DUP | BLOCK_GROUP.RAID10 |
  BLOCK_GROUP.RAID5 | BLOCK_GROUP.RAID6 | BLOCK_GROUP.RAID1C3 | BLOCK_GROUP.RAID1C4;

/** Tree block header flags. */
export const HEADER_FLAG = { WRITTEN: 1n << 0n, RELOC: 1n << 1n } as const;
export const BACKREF_REV_SHIFT = 56n;
export const MIXED_BACKREF_REV = 1n;

/** Root item flags (le64). DEAD is bit 48, set while a subvolume is being deleted. */
export const ROOT_FLAG = {
  SUBVOL_RDONLY: 1n << 0n,
  SUBVOL_DEAD: 1n << 48n,
} as const;

/** Inode item flags. */
export const INODE_FLAG = {
  NODATASUM: 1n << 0n,
  NODATACOW: 1n << 1n,
  READONLY: 1n << 2n,
  NOCOMPRESS: 1n << 3n,
  PREALLOC: 1n << 4n,
  SYNC: 1n << 5n,
  IMMUTABLE: 1n << 6n,
  APPEND: 1n << 7n,
  NODUMP: 1n << 8n,
  NOATIME: 1n << 9n,
  DIRSYNC: 1n << 10n,
  COMPRESS: 1n << 11n,
  ROOT_ITEM_INIT: 1n << 31n,
} as const;

/** Directory entry file types (DIR_ITEM.type). */
export const FT = {
  UNKNOWN: 0,
  REG_FILE: 1,
  DIR: 2,
  CHRDEV: 3,
  BLKDEV: 4,
  FIFO: 5,
  SOCK: 6,
  SYMLINK: 7,
  XATTR: 8,
} as const;

/** File extent types. */
export const FILE_EXTENT = { INLINE: 0, REG: 1, PREALLOC: 2 } as const;

/** Compression types in file extent items. */
export const COMPRESS = { NONE: 0, ZLIB: 1, LZO: 2, ZSTD: 3 } as const;

/** Extent item flags. */
export const EXTENT_FLAG = { DATA: 1n << 0n, TREE_BLOCK: 1n << 1n, FULL_BACKREF: 1n << 8n } as const;

/** Free space info flags. */
export const FREE_SPACE_FLAG = { USING_BITMAPS: 1 << 0 } as const;

/** Superblock flags. */
export const SUPER_FLAG = {
  ERROR: 1n << 2n,
  SEEDING: 1n << 32n,
  METADUMP: 1n << 33n,
  METADUMP_V2: 1n << 34n,
  CHANGING_FSID: 1n << 35n,
  CHANGING_FSID_V2: 1n << 36n,
  CHANGING_BG_TREE: 1n << 38n,
  CHANGING_DATA_CSUM: 1n << 39n,
  CHANGING_META_CSUM: 1n << 40n,
} as const;

export const FEATURE_COMPAT_RO = {
  FREE_SPACE_TREE: 1n << 0n,
  FREE_SPACE_TREE_VALID: 1n << 1n,
  VERITY: 1n << 2n,
  BLOCK_GROUP_TREE: 1n << 3n,
} as const;

export const FEATURE_INCOMPAT = {
  MIXED_BACKREF: 1n << 0n,
  DEFAULT_SUBVOL: 1n << 1n,
  MIXED_GROUPS: 1n << 2n,
  COMPRESS_LZO: 1n << 3n,
  COMPRESS_ZSTD: 1n << 4n,
  BIG_METADATA: 1n << 5n,
  EXTENDED_IREF: 1n << 6n,
  RAID56: 1n << 7n,
  SKINNY_METADATA: 1n << 8n,
  NO_HOLES: 1n << 9n,
  METADATA_UUID: 1n << 10n,
  RAID1C34: 1n << 11n,
  ZONED: 1n << 12n,
  EXTENT_TREE_V2: 1n << 13n,
  RAID_STRIPE_TREE: 1n << 14n,
  SIMPLE_QUOTA: 1n << 16n,
} as const;

/** Incompat features this reader understands; others make open fail with ENOTSUP. */
export const SUPPORTED_INCOMPAT =
  FEATURE_INCOMPAT.MIXED_BACKREF | FEATURE_INCOMPAT.DEFAULT_SUBVOL | FEATURE_INCOMPAT.MIXED_GROUPS |
  FEATURE_INCOMPAT.COMPRESS_LZO | FEATURE_INCOMPAT.COMPRESS_ZSTD | FEATURE_INCOMPAT.BIG_METADATA |
  FEATURE_INCOMPAT.EXTENDED_IREF | FEATURE_INCOMPAT.SKINNY_METADATA | FEATURE_INCOMPAT.NO_HOLES |
  FEATURE_INCOMPAT.METADATA_UUID | FEATURE_INCOMPAT.RAID1C34 | FEATURE_INCOMPAT.SIMPLE_QUOTA |
  // RAID5/6 chunks are read through their data stripes (no rebuild from parity).
  FEATURE_INCOMPAT.RAID56;

/** Qgroup status flags. */
export const QGROUP_STATUS_FLAG = { ON: 1n << 0n, RESCAN: 1n << 1n, INCONSISTENT: 1n << 2n, SIMPLE_MODE: 1n << 3n } as const;

/** Device stats counters, in DEV_STATS item order. */
export const DEV_STAT_NAMES = ['write_errs', 'read_errs', 'flush_errs', 'corruption_errs', 'generation'] as const;

/** POSIX file mode type bits. */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** The inode number of every subvolume's root directory. */
export const FIRST_FREE_OBJECTID = 256n;
export const ROOT_DIR_INO = 256n;
/** The top-level subvolume's "default" directory entry lives in dir 6 of the root tree. */
export const ROOT_TREE_DIR_OBJECTID = 6n;
