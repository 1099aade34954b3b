/**
 * Send stream commands -> typed operations, and the checks a receiver needs
 * before it acts on one.
 *
 * decodeOp reads the attributes of each command the way btrfs-progs does
 * (same attributes, same order, same optional ones). With `strict` (the
 * default) it then refuses what would be unsafe or meaningless to apply: a
 * path that is absolute, has `.`, `..` or empty components, a NUL byte, or is
 * longer than PATH_MAX; a name longer than 255 bytes; ranges past the largest
 * file size; a mode of the wrong type; nanoseconds >= 10^9; encoded writes
 * whose lengths contradict each other. readOps adds the order rules: the
 * first command of a stream is SUBVOL or SNAPSHOT and the stream ends with END.
 *
 * Non-strict decoding is for `receive --dump`, which prints whatever progs
 * prints: values unchecked, unknown commands passed through as 'unknown'.
 */
import { BtrfsError } from '../util/errors.js';
import {
  SEND_CMD, SEND_ATTR, type SendCommand, type ParseStreamOptions, parseStream, describeCommand,
  getAttr, getBytes, getU8, getU32, getU64, getUuid, getTimespec, ENCODED_IO_COMPRESSION, ENCODED_IO_ENCRYPTION,
} from '../format/send-stream.js';

export interface SendTime { sec: bigint; nsec: number }

/** the command number, and where the command was in its stream (for messages) */
interface Base { cmd: number; streamOffset?: number; index?: number }

/**
 * One command of a send stream. Paths are relative to the subvolume being
 * received ('' is its top directory) and kept as bytes: names need not be
 * UTF-8. `ino` is the sender's inode number, which receivers may ignore.
 */
export type SendOp = Base & (
  | { op: 'subvol'; path: Buffer; uuid: Buffer; ctransid: bigint }
  | { op: 'snapshot'; path: Buffer; uuid: Buffer; ctransid: bigint; cloneUuid: Buffer; cloneCtransid: bigint }
  | { op: 'mkfile' | 'mkdir' | 'mkfifo' | 'mksock'; path: Buffer; ino: bigint }
  | { op: 'mknod'; path: Buffer; ino: bigint; mode: bigint; rdev: bigint }
  | { op: 'symlink'; path: Buffer; ino: bigint; target: Buffer }
  | { op: 'rename'; path: Buffer; to: Buffer }
  /** a new name `path` for the existing file `target` */
  | { op: 'link'; path: Buffer; target: Buffer }
  | { op: 'unlink' | 'rmdir'; path: Buffer }
  | { op: 'set_xattr'; path: Buffer; name: Buffer; data: Buffer }
  | { op: 'remove_xattr'; path: Buffer; name: Buffer }
  | { op: 'write'; path: Buffer; offset: bigint; data: Buffer }
  | { op: 'clone'; path: Buffer; offset: bigint; len: bigint; cloneUuid: Buffer; cloneCtransid: bigint; clonePath: Buffer; cloneOffset: bigint }
  | { op: 'truncate'; path: Buffer; size: bigint }
  | { op: 'chmod'; path: Buffer; mode: bigint }
  | { op: 'chown'; path: Buffer; uid: bigint; gid: bigint }
  | { op: 'utimes'; path: Buffer; atime: SendTime; mtime: SendTime; ctime: SendTime }
  /** --no-data streams: this range changed, its data is not sent */
  | { op: 'update_extent'; path: Buffer; offset: bigint; size: bigint }
  | { op: 'fallocate'; path: Buffer; mode: number; offset: bigint; size: bigint }
  | { op: 'fileattr'; path: Buffer; fileattr: bigint }
  | {
    op: 'encoded_write'; path: Buffer; offset: bigint; unencodedFileLen: bigint; unencodedLen: bigint;
    unencodedOffset: bigint; compression: number; encryption: number; data: Buffer;
  }
  | { op: 'enable_verity'; path: Buffer; algorithm: number; blockSize: number; salt: Buffer; sig: Buffer }
  | { op: 'end' }
  /** only from non-strict decoding: a command number no handler knows; progs skips it */
  | { op: 'unknown' }
);

export type SendOpName = SendOp['op'];

/** What readOps yields: the start of each stream, then its operations. */
export type SendStreamItem = { op: 'stream'; version: number } | SendOp;

export interface DecodeOpOptions { strict?: boolean }

/** Linux PATH_MAX, terminating NUL included. */
export const PATH_MAX = 4096;
export const NAME_MAX = 255;
/** Largest file size and offset btrfs allows (the kernel's MAX_LFS_FILESIZE). */
export const MAX_FILE_SIZE = (1n << 63n) - 1n;

const S_IFMT = 0o170000n;
const S_IFSOCK = 0o140000n;
const S_IFBLK = 0o060000n;
const S_IFCHR = 0o020000n;
const S_IFIFO = 0o010000n;

/**
 * The typed operation of a decoded command. Throws EINVAL naming the command
 * and its offset when an attribute is missing or has the wrong size, and
 * (strict) when a value fails the checks in the file comment.
 */
export function decodeOp(c: SendCommand, opts: DecodeOpOptions = {}): SendOp {
  const strict = opts.strict ?? true;
  const op = readAttrs(c);
  const b: Base = { cmd: c.cmd };
  if (c.offset !== undefined) b.streamOffset = c.offset;
  if (c.index !== undefined) b.index = c.index;
  const out = Object.assign(b, op) as SendOp;
  if (strict) validateOp(out);
  return out;
}

type OpBody = SendOp extends infer T ? T extends Base ? Omit<T, keyof Base> : never : never;

// Attributes are fetched in btrfs-progs' order so the first error reported is the same one.
function readAttrs(c: SendCommand): OpBody {
  const A = SEND_ATTR;
  const str = (t: number) => getBytes(c, t);
  switch (c.cmd) {
    case SEND_CMD.SUBVOL:
      return { op: 'subvol', path: str(A.PATH), uuid: getUuid(c, A.UUID), ctransid: getU64(c, A.CTRANSID) };
    case SEND_CMD.SNAPSHOT:
      return {
        op: 'snapshot', path: str(A.PATH), uuid: getUuid(c, A.UUID), ctransid: getU64(c, A.CTRANSID),
        cloneUuid: getUuid(c, A.CLONE_UUID), cloneCtransid: getU64(c, A.CLONE_CTRANSID),
      };
    case SEND_CMD.MKFILE:
    case SEND_CMD.MKDIR:
    case SEND_CMD.MKFIFO:
    case SEND_CMD.MKSOCK: {
      const op = c.cmd === SEND_CMD.MKFILE ? 'mkfile' : c.cmd === SEND_CMD.MKDIR ? 'mkdir' : c.cmd === SEND_CMD.MKFIFO ? 'mkfifo' : 'mksock';
      return { op, path: str(A.PATH), ino: getU64(c, A.INO) };
    }
    case SEND_CMD.MKNOD:
      return { op: 'mknod', path: str(A.PATH), ino: getU64(c, A.INO), mode: getU64(c, A.MODE), rdev: getU64(c, A.RDEV) };
    case SEND_CMD.SYMLINK:
      return { op: 'symlink', path: str(A.PATH), ino: getU64(c, A.INO), target: str(A.PATH_LINK) };
    case SEND_CMD.RENAME:
      return { op: 'rename', path: str(A.PATH), to: str(A.PATH_TO) };
    case SEND_CMD.LINK:
      return { op: 'link', path: str(A.PATH), target: str(A.PATH_LINK) };
    case SEND_CMD.UNLINK:
      return { op: 'unlink', path: str(A.PATH) };
    case SEND_CMD.RMDIR:
      return { op: 'rmdir', path: str(A.PATH) };
    case SEND_CMD.WRITE:
      return { op: 'write', path: str(A.PATH), offset: getU64(c, A.FILE_OFFSET), data: getBytes(c, A.DATA) };
    case SEND_CMD.ENCODED_WRITE: {
      const path = str(A.PATH);
      const offset = getU64(c, A.FILE_OFFSET);
      const unencodedFileLen = getU64(c, A.UNENCODED_FILE_LEN);
      const unencodedLen = getU64(c, A.UNENCODED_LEN);
      const unencodedOffset = getU64(c, A.UNENCODED_OFFSET);
      // both default to NONE when omitted (send.h)
      const compression = getAttr(c, A.COMPRESSION) ? getU32(c, A.COMPRESSION) : ENCODED_IO_COMPRESSION.NONE;
      const encryption = getAttr(c, A.ENCRYPTION) ? getU32(c, A.ENCRYPTION) : ENCODED_IO_ENCRYPTION.NONE;
      return {
        op: 'encoded_write', path, offset, unencodedFileLen, unencodedLen, unencodedOffset, compression, encryption,
        data: getBytes(c, A.DATA),
      };
    }
    case SEND_CMD.CLONE:
      return {
        op: 'clone', path: str(A.PATH), offset: getU64(c, A.FILE_OFFSET), len: getU64(c, A.CLONE_LEN),
        cloneUuid: getUuid(c, A.CLONE_UUID), cloneCtransid: getU64(c, A.CLONE_CTRANSID),
        clonePath: str(A.CLONE_PATH), cloneOffset: getU64(c, A.CLONE_OFFSET),
      };
    case SEND_CMD.SET_XATTR:
      return { op: 'set_xattr', path: str(A.PATH), name: str(A.XATTR_NAME), data: getBytes(c, A.XATTR_DATA) };
    case SEND_CMD.REMOVE_XATTR:
      return { op: 'remove_xattr', path: str(A.PATH), name: str(A.XATTR_NAME) };
    case SEND_CMD.TRUNCATE:
      return { op: 'truncate', path: str(A.PATH), size: getU64(c, A.SIZE) };
    case SEND_CMD.CHMOD:
      return { op: 'chmod', path: str(A.PATH), mode: getU64(c, A.MODE) };
    case SEND_CMD.CHOWN:
      return { op: 'chown', path: str(A.PATH), uid: getU64(c, A.UID), gid: getU64(c, A.GID) };
    case SEND_CMD.UTIMES:
      return {
        op: 'utimes', path: str(A.PATH), atime: getTimespec(c, A.ATIME), mtime: getTimespec(c, A.MTIME), ctime: getTimespec(c, A.CTIME),
      };
    case SEND_CMD.UPDATE_EXTENT:
      return { op: 'update_extent', path: str(A.PATH), offset: getU64(c, A.FILE_OFFSET), size: getU64(c, A.SIZE) };
    case SEND_CMD.ENABLE_VERITY:
      return {
        op: 'enable_verity', path: str(A.PATH), algorithm: getU8(c, A.VERITY_ALGORITHM), blockSize: getU32(c, A.VERITY_BLOCK_SIZE),
        salt: getBytes(c, A.VERITY_SALT_DATA), sig: getBytes(c, A.VERITY_SIG_DATA),
      };
    case SEND_CMD.END:
      return { op: 'end' };
    case SEND_CMD.FALLOCATE:
      return {
        op: 'fallocate', path: str(A.PATH), mode: getU32(c, A.FALLOCATE_MODE), offset: getU64(c, A.FILE_OFFSET), size: getU64(c, A.SIZE),
      };
    case SEND_CMD.FILEATTR:
      return { op: 'fileattr', path: str(A.PATH), fileattr: getU64(c, A.FILEATTR) };
    default:
      return { op: 'unknown' };
  }
}

function bad(o: Base, msg: string): BtrfsError {
  return new BtrfsError('EINVAL', `${describeCommand({ cmd: o.cmd, offset: o.streamOffset, index: o.index })}: ${msg}`);
}

function show(b: Buffer): string {
  return JSON.stringify(b.toString('latin1').slice(0, 80));
}

/**
 * Throws unless `p` is a safe path inside the subvolume: relative, no '.',
 * '..' or empty components, no NUL, shorter than PATH_MAX, names of at most
 * 255 bytes. '' (the subvolume's top directory) only when `allowEmpty`.
 */
export function checkRelativePath(o: Base, what: string, p: Buffer, allowEmpty: boolean): void {
  if (p.length === 0) {
    if (allowEmpty) return;
    throw bad(o, `${what} is empty`);
  }
  if (p.includes(0)) throw bad(o, `${what} ${show(p)} contains a NUL byte`);
  if (p.length >= PATH_MAX) throw bad(o, `${what} is ${p.length} bytes, longer than PATH_MAX`);
  if (p[0] === 0x2f) throw bad(o, `${what} ${show(p)} is absolute`);
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i < p.length && p[i] !== 0x2f) continue;
    const n = i - start;
    if (n === 0) throw bad(o, `${what} ${show(p)} has an empty component`);
    if (n > NAME_MAX) throw bad(o, `${what} has a component of ${n} bytes, longer than ${NAME_MAX}`);
    if ((n === 1 && p[start] === 0x2e) || (n === 2 && p[start] === 0x2e && p[start + 1] === 0x2e)) {
      throw bad(o, `${what} ${show(p)} has a '${n === 1 ? '.' : '..'}' component`);
    }
    start = i + 1;
  }
}

function checkRange(o: Base, what: string, offset: bigint, len: bigint): void {
  if (offset > MAX_FILE_SIZE || len > MAX_FILE_SIZE - offset) throw bad(o, `${what} ${offset}+${len} ends past the largest file size`);
}

function checkTime(o: Base, what: string, t: SendTime): void {
  if (t.nsec >= 1_000_000_000) throw bad(o, `${what} has ${t.nsec} nanoseconds`);
}

/** The checks of strict decoding, for an op built by other means. */
export function validateOp(o: SendOp): void {
  const path = (p: Buffer, empty = false, what = 'path') => checkRelativePath(o, what, p, empty);
  switch (o.op) {
    case 'subvol':
    case 'snapshot':
      path(o.path);
      if (o.path.includes(0x2f)) throw bad(o, `subvolume name ${show(o.path)} has a '/'`);
      return;
    case 'mkfile':
    case 'mkdir':
    case 'mkfifo':
    case 'mksock':
      path(o.path);
      return;
    case 'mknod': {
      path(o.path);
      const t = o.mode & S_IFMT;
      if (o.mode > 0xffffffffn || (t !== S_IFCHR && t !== S_IFBLK && t !== S_IFIFO && t !== S_IFSOCK)) {
        throw bad(o, `mode 0${o.mode.toString(8)} is not that of a device, fifo or socket`);
      }
      return;
    }
    case 'symlink':
      path(o.path);
      if (o.target.length === 0) throw bad(o, 'symlink target is empty');
      if (o.target.includes(0)) throw bad(o, 'symlink target contains a NUL byte');
      if (o.target.length >= PATH_MAX) throw bad(o, `symlink target is ${o.target.length} bytes, longer than PATH_MAX`);
      return;
    case 'rename':
      path(o.path);
      path(o.to, false, 'destination path');
      return;
    case 'link':
      path(o.path);
      path(o.target, false, 'link target');
      return;
    case 'unlink':
    case 'rmdir':
      path(o.path);
      return;
    case 'set_xattr':
    case 'remove_xattr':
      path(o.path, true);
      if (o.name.length === 0 || o.name.length > NAME_MAX || o.name.includes(0)) {
        throw bad(o, `xattr name ${show(o.name)} is empty, longer than ${NAME_MAX} bytes or contains a NUL`);
      }
      return;
    case 'write':
      path(o.path);
      checkRange(o, 'write', o.offset, BigInt(o.data.length));
      return;
    case 'clone':
      path(o.path);
      path(o.clonePath, false, 'clone source path');
      checkRange(o, 'clone destination', o.offset, o.len);
      checkRange(o, 'clone source', o.cloneOffset, o.len);
      return;
    case 'truncate':
      path(o.path);
      checkRange(o, 'truncate size', 0n, o.size);
      return;
    case 'chmod':
      path(o.path, true);
      if (o.mode & ~0o7777n) throw bad(o, `mode 0${o.mode.toString(8)} has bits besides permissions`);
      return;
    case 'chown':
      path(o.path, true);
      if (o.uid > 0xffffffffn || o.gid > 0xffffffffn) throw bad(o, `uid ${o.uid} or gid ${o.gid} does not fit 32 bits`);
      return;
    case 'utimes':
      path(o.path, true);
      checkTime(o, 'atime', o.atime);
      checkTime(o, 'mtime', o.mtime);
      checkTime(o, 'ctime', o.ctime);
      return;
    case 'update_extent':
      path(o.path);
      checkRange(o, 'update_extent', o.offset, o.size);
      return;
    case 'fallocate':
      path(o.path);
      checkRange(o, 'fallocate', o.offset, o.size);
      return;
    case 'fileattr':
      path(o.path, true);
      return;
    case 'encoded_write':
      path(o.path);
      if (o.compression > ENCODED_IO_COMPRESSION.LZO_64K) throw bad(o, `unknown compression ${o.compression}`);
      if (o.encryption !== ENCODED_IO_ENCRYPTION.NONE) throw bad(o, `unknown encryption ${o.encryption}`);
      if (o.unencodedFileLen === 0n || o.unencodedOffset > o.unencodedLen || o.unencodedFileLen > o.unencodedLen - o.unencodedOffset) {
        throw bad(o, `inconsistent lengths: unencoded_file_len=${o.unencodedFileLen} unencoded_len=${o.unencodedLen} unencoded_offset=${o.unencodedOffset}`);
      }
      if (o.data.length === 0) throw bad(o, 'no data');
      checkRange(o, 'encoded_write', o.offset, o.unencodedFileLen);
      return;
    case 'enable_verity':
      path(o.path);
      if (o.blockSize === 0 || (o.blockSize & (o.blockSize - 1)) !== 0) throw bad(o, `verity block size ${o.blockSize} is not a power of two`);
      return;
    case 'end':
      return;
    case 'unknown':
      throw bad(o, 'unknown command');
  }
}

/**
 * The operations of a send stream, checked: parseStream (strict) + decodeOp
 * (strict) + order: each stream starts with SUBVOL or SNAPSHOT and ends with
 * END. Yields `{ op: 'stream', version }` at the start of every stream.
 */
export async function* readOps(source: AsyncIterable<Buffer | Uint8Array>, opts: ParseStreamOptions = {}): AsyncGenerator<SendStreamItem> {
  let started = false;
  for await (const item of parseStream(source, { ...opts, strict: true })) {
    if (!('cmd' in item)) {
      started = false;
      yield { op: 'stream', version: item.version };
      continue;
    }
    const o = decodeOp(item);
    if (!started && o.op !== 'subvol' && o.op !== 'snapshot') {
      throw bad(o, 'a send stream must start with a subvol or snapshot command');
    }
    started = true;
    yield o;
  }
}
