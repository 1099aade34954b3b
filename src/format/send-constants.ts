/**
 * The numbers of the btrfs send stream protocol: commands, attributes, and
 * what kind of value each attribute holds. Names are the kernel's
 * (fs/btrfs/send.h) without the BTRFS_SEND_C_ / BTRFS_SEND_A_ prefix; the
 * prefixed names are exported as well for code that reads like the kernel.
 *
 * Protocol 1 has commands 1..22 and attributes 1..24; protocol 2 adds
 * FALLOCATE, FILEATTR and ENCODED_WRITE with attributes 25..31; protocol 3
 * (only offered by kernels built with CONFIG_BTRFS_DEBUG) adds ENABLE_VERITY
 * with attributes 32..35. The framing of 3 is that of 2.
 */

export const SEND_STREAM_MAGIC = Buffer.from('btrfs-stream\0', 'latin1');
/** magic (13 bytes) + le32 version */
export const SEND_STREAM_HEADER_SIZE = 17;
/** le32 len, le16 cmd, le32 crc */
export const SEND_CMD_HEADER_SIZE = 10;
/** le16 type, le16 len */
export const SEND_TLV_HEADER_SIZE = 4;
/** Largest command (header included) a protocol 1 sender makes; older receivers had a fixed buffer of this size. */
export const SEND_BUF_SIZE_V1 = 64 * 1024;
/** The highest protocol version this code reads and writes. */
export const SEND_STREAM_VERSION_MAX = 3;

export const SEND_CMD = {
  UNSPEC: 0,
  SUBVOL: 1,
  SNAPSHOT: 2,
  MKFILE: 3,
  MKDIR: 4,
  MKNOD: 5,
  MKFIFO: 6,
  MKSOCK: 7,
  SYMLINK: 8,
  RENAME: 9,
  LINK: 10,
  UNLINK: 11,
  RMDIR: 12,
  SET_XATTR: 13,
  REMOVE_XATTR: 14,
  WRITE: 15,
  CLONE: 16,
  TRUNCATE: 17,
  CHMOD: 18,
  CHOWN: 19,
  UTIMES: 20,
  END: 21,
  UPDATE_EXTENT: 22,
  // protocol 2
  FALLOCATE: 23,
  FILEATTR: 24,
  ENCODED_WRITE: 25,
  // protocol 3
  ENABLE_VERITY: 26,
} as const;
export type SendCmdName = keyof typeof SEND_CMD;

export const SEND_ATTR = {
  UNSPEC: 0,
  UUID: 1,
  CTRANSID: 2,
  INO: 3,
  SIZE: 4,
  MODE: 5,
  UID: 6,
  GID: 7,
  RDEV: 8,
  CTIME: 9,
  MTIME: 10,
  ATIME: 11,
  OTIME: 12,
  XATTR_NAME: 13,
  XATTR_DATA: 14,
  PATH: 15,
  PATH_TO: 16,
  PATH_LINK: 17,
  FILE_OFFSET: 18,
  /** From protocol 2 on: no length field, runs to the end of the command (so it must come last). */
  DATA: 19,
  CLONE_UUID: 20,
  CLONE_CTRANSID: 21,
  CLONE_PATH: 22,
  CLONE_OFFSET: 23,
  CLONE_LEN: 24,
  // protocol 2
  FALLOCATE_MODE: 25,
  /** BTRFS_INODE_* flags of the inode item */
  FILEATTR: 26,
  UNENCODED_FILE_LEN: 27,
  UNENCODED_LEN: 28,
  UNENCODED_OFFSET: 29,
  /** BTRFS_ENCODED_IO_COMPRESSION_*; NONE (0) when absent */
  COMPRESSION: 30,
  /** BTRFS_ENCODED_IO_ENCRYPTION_*; NONE (0) when absent */
  ENCRYPTION: 31,
  // protocol 3
  VERITY_ALGORITHM: 32,
  VERITY_BLOCK_SIZE: 33,
  VERITY_SALT_DATA: 34,
  VERITY_SIG_DATA: 35,
} as const;
export type SendAttrName = keyof typeof SEND_ATTR;

/** Highest command / attribute number of each protocol version (index = version). */
export const SEND_CMD_MAX: readonly number[] = [0, 22, 25, 26];
export const SEND_ATTR_MAX: readonly number[] = [0, 24, 31, 35];
export const SEND_CMD_MAX_ANY = 26;
export const SEND_ATTR_MAX_ANY = 35;

/** BTRFS_ENCODED_IO_COMPRESSION_* values carried by SEND_ATTR.COMPRESSION. */
export const ENCODED_IO_COMPRESSION = {
  NONE: 0, ZLIB: 1, ZSTD: 2, LZO_4K: 3, LZO_8K: 4, LZO_16K: 5, LZO_32K: 6, LZO_64K: 7,
} as const;
export const ENCODED_IO_ENCRYPTION = { NONE: 0 } as const;

// The kernel's own spellings, for code that wants to read like send.c.
export const BTRFS_SEND_C_UNSPEC = 0;
export const BTRFS_SEND_C_SUBVOL = 1;
export const BTRFS_SEND_C_SNAPSHOT = 2;
export const BTRFS_SEND_C_MKFILE = 3;
export const BTRFS_SEND_C_MKDIR = 4;
export const BTRFS_SEND_C_MKNOD = 5;
export const BTRFS_SEND_C_MKFIFO = 6;
export const BTRFS_SEND_C_MKSOCK = 7;
export const BTRFS_SEND_C_SYMLINK = 8;
export const BTRFS_SEND_C_RENAME = 9;
export const BTRFS_SEND_C_LINK = 10;
export const BTRFS_SEND_C_UNLINK = 11;
export const BTRFS_SEND_C_RMDIR = 12;
export const BTRFS_SEND_C_SET_XATTR = 13;
export const BTRFS_SEND_C_REMOVE_XATTR = 14;
export const BTRFS_SEND_C_WRITE = 15;
export const BTRFS_SEND_C_CLONE = 16;
export const BTRFS_SEND_C_TRUNCATE = 17;
export const BTRFS_SEND_C_CHMOD = 18;
export const BTRFS_SEND_C_CHOWN = 19;
export const BTRFS_SEND_C_UTIMES = 20;
export const BTRFS_SEND_C_END = 21;
export const BTRFS_SEND_C_UPDATE_EXTENT = 22;
export const BTRFS_SEND_C_FALLOCATE = 23;
export const BTRFS_SEND_C_FILEATTR = 24;
export const BTRFS_SEND_C_ENCODED_WRITE = 25;
export const BTRFS_SEND_C_ENABLE_VERITY = 26;

export const BTRFS_SEND_A_UNSPEC = 0;
export const BTRFS_SEND_A_UUID = 1;
export const BTRFS_SEND_A_CTRANSID = 2;
export const BTRFS_SEND_A_INO = 3;
export const BTRFS_SEND_A_SIZE = 4;
export const BTRFS_SEND_A_MODE = 5;
export const BTRFS_SEND_A_UID = 6;
export const BTRFS_SEND_A_GID = 7;
export const BTRFS_SEND_A_RDEV = 8;
export const BTRFS_SEND_A_CTIME = 9;
export const BTRFS_SEND_A_MTIME = 10;
export const BTRFS_SEND_A_ATIME = 11;
export const BTRFS_SEND_A_OTIME = 12;
export const BTRFS_SEND_A_XATTR_NAME = 13;
export const BTRFS_SEND_A_XATTR_DATA = 14;
export const BTRFS_SEND_A_PATH = 15;
export const BTRFS_SEND_A_PATH_TO = 16;
export const BTRFS_SEND_A_PATH_LINK = 17;
export const BTRFS_SEND_A_FILE_OFFSET = 18;
export const BTRFS_SEND_A_DATA = 19;
export const BTRFS_SEND_A_CLONE_UUID = 20;
export const BTRFS_SEND_A_CLONE_CTRANSID = 21;
export const BTRFS_SEND_A_CLONE_PATH = 22;
export const BTRFS_SEND_A_CLONE_OFFSET = 23;
export const BTRFS_SEND_A_CLONE_LEN = 24;
export const BTRFS_SEND_A_FALLOCATE_MODE = 25;
export const BTRFS_SEND_A_FILEATTR = 26;
export const BTRFS_SEND_A_UNENCODED_FILE_LEN = 27;
export const BTRFS_SEND_A_UNENCODED_LEN = 28;
export const BTRFS_SEND_A_UNENCODED_OFFSET = 29;
export const BTRFS_SEND_A_COMPRESSION = 30;
export const BTRFS_SEND_A_ENCRYPTION = 31;
export const BTRFS_SEND_A_VERITY_ALGORITHM = 32;
export const BTRFS_SEND_A_VERITY_BLOCK_SIZE = 33;
export const BTRFS_SEND_A_VERITY_SALT_DATA = 34;
export const BTRFS_SEND_A_VERITY_SIG_DATA = 35;

/** How an attribute's value is encoded; fixed-size kinds have exactly that many bytes. */
export type SendAttrKind = 'u8' | 'u32' | 'u64' | 'uuid' | 'timespec' | 'string' | 'binary';

export const SEND_ATTR_KIND: Readonly<Record<number, SendAttrKind>> = {
  [SEND_ATTR.UUID]: 'uuid',
  [SEND_ATTR.CTRANSID]: 'u64',
  [SEND_ATTR.INO]: 'u64',
  [SEND_ATTR.SIZE]: 'u64',
  [SEND_ATTR.MODE]: 'u64',
  [SEND_ATTR.UID]: 'u64',
  [SEND_ATTR.GID]: 'u64',
  [SEND_ATTR.RDEV]: 'u64',
  [SEND_ATTR.CTIME]: 'timespec',
  [SEND_ATTR.MTIME]: 'timespec',
  [SEND_ATTR.ATIME]: 'timespec',
  [SEND_ATTR.OTIME]: 'timespec',
  [SEND_ATTR.XATTR_NAME]: 'string',
  [SEND_ATTR.XATTR_DATA]: 'binary',
  [SEND_ATTR.PATH]: 'string',
  [SEND_ATTR.PATH_TO]: 'string',
  [SEND_ATTR.PATH_LINK]: 'string',
  [SEND_ATTR.FILE_OFFSET]: 'u64',
  [SEND_ATTR.DATA]: 'binary',
  [SEND_ATTR.CLONE_UUID]: 'uuid',
  [SEND_ATTR.CLONE_CTRANSID]: 'u64',
  [SEND_ATTR.CLONE_PATH]: 'string',
  [SEND_ATTR.CLONE_OFFSET]: 'u64',
  [SEND_ATTR.CLONE_LEN]: 'u64',
  [SEND_ATTR.FALLOCATE_MODE]: 'u32',
  [SEND_ATTR.FILEATTR]: 'u64',
  [SEND_ATTR.UNENCODED_FILE_LEN]: 'u64',
  [SEND_ATTR.UNENCODED_LEN]: 'u64',
  [SEND_ATTR.UNENCODED_OFFSET]: 'u64',
  [SEND_ATTR.COMPRESSION]: 'u32',
  [SEND_ATTR.ENCRYPTION]: 'u32',
  [SEND_ATTR.VERITY_ALGORITHM]: 'u8',
  [SEND_ATTR.VERITY_BLOCK_SIZE]: 'u32',
  [SEND_ATTR.VERITY_SALT_DATA]: 'binary',
  [SEND_ATTR.VERITY_SIG_DATA]: 'binary',
};

export const SEND_ATTR_KIND_SIZE: Readonly<Partial<Record<SendAttrKind, number>>> = {
  u8: 1, u32: 4, u64: 8, uuid: 16, timespec: 12,
};

const CMD_NAMES: string[] = [];
for (const [k, v] of Object.entries(SEND_CMD)) CMD_NAMES[v] = k.toLowerCase();
const ATTR_NAMES: string[] = [];
for (const [k, v] of Object.entries(SEND_ATTR)) ATTR_NAMES[v] = k.toLowerCase();

/** 'write' for 15, as the dump titles them; 'cmd99' for numbers no kernel defines. */
export function sendCmdName(cmd: number): string {
  return CMD_NAMES[cmd] ?? `cmd${cmd}`;
}

/** 'file_offset' for 18; 'attr99' for numbers no kernel defines. */
export function sendAttrName(type: number): string {
  return ATTR_NAMES[type] ?? `attr${type}`;
}

/** The first protocol version that has this command (undefined for numbers no kernel defines). */
export function sendCmdMinVersion(cmd: number): number | undefined {
  if (cmd < 1 || cmd > SEND_CMD_MAX_ANY) return undefined;
  return SEND_CMD_MAX.findIndex((max, v) => v > 0 && cmd <= max);
}

/** The first protocol version that has this attribute (undefined for numbers no kernel defines). */
export function sendAttrMinVersion(type: number): number | undefined {
  if (type < 1 || type > SEND_ATTR_MAX_ANY) return undefined;
  return SEND_ATTR_MAX.findIndex((max, v) => v > 0 && type <= max);
}
