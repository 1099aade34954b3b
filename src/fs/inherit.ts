/**
 * What a new inode takes from the directory it is made in, as the kernel
 * gives it at creation:
 *  - a default POSIX ACL (system.posix_acl_default) replaces the umask: the
 *    requested mode is masked by the ACL's owner, group-or-mask and other
 *    entries, the inode gets the masked ACL as its access ACL when that says
 *    more than the mode bits can (named users or groups, a mask), and a
 *    directory also gets the default ACL itself. Symlinks take nothing.
 *  - the btrfs.compression property, for regular files and directories:
 *    only the algorithm (a level is dropped; "no"/"none" pass nothing on).
 * Without a default ACL the umask applies as usual. The POSIX layer and
 * receive both create through this, so a stream's REMOVE_XATTR of an
 * inherited name (which a sender aware of inheritance emits) finds it, as
 * it does under `btrfs receive` on a kernel mount.
 */
import { BtrfsError } from '../util/errors.js';
import { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK } from '../format/constants.js';
import type { Transaction } from '../transaction/transaction.js';
import { findXattr, setXattr } from './namespace.js';

const ACL_ACCESS = Buffer.from('system.posix_acl_access');
const ACL_DEFAULT = Buffer.from('system.posix_acl_default');
const COMPRESSION = Buffer.from('btrfs.compression');

/** The on-disk (and xattr API) ACL format: le32 version 2, then 8-byte entries {le16 tag, le16 perm, le32 id}. */
const ACL_VERSION = 2;
const ACL_TAG = { USER_OBJ: 0x01, USER: 0x02, GROUP_OBJ: 0x04, GROUP: 0x08, MASK: 0x10, OTHER: 0x20 } as const;

export interface Inheritance {
  /** the new inode's mode: masked by the default ACL, or by `umask` when there is none */
  mode: number;
  /** xattrs to give the new inode (name, value) */
  xattrs: [Buffer, Buffer][];
}

/**
 * What an inode of `mode` (type and requested permission bits, before any
 * umask) made in directory `dir` of `tree` gets.
 */
export async function inheritFrom(txn: Transaction, tree: bigint, dir: bigint, mode: number, umask: number): Promise<Inheritance> {
  const type = mode & S_IFMT;
  const xattrs: [Buffer, Buffer][] = [];
  if (type === S_IFLNK) return { mode, xattrs };
  let out = mode & ~umask;
  const dflt = usableAcl((await findXattr(txn, tree, dir, ACL_DEFAULT))?.data);
  if (dflt) {
    const masked = maskAcl(dflt, mode);
    out = masked.mode;
    if (aclExtended(dflt)) xattrs.push([ACL_ACCESS, masked.acl]);
    if (type === S_IFDIR) xattrs.push([ACL_DEFAULT, Buffer.from(dflt)]);
  }
  if (type === S_IFREG || type === S_IFDIR) {
    const alg = inheritedCompression((await findXattr(txn, tree, dir, COMPRESSION))?.data);
    if (alg) xattrs.push([COMPRESSION, alg]);
  }
  return { mode: out, xattrs };
}

/** The btrfs.compression value a child inherits: the algorithm without level; "no"/"none" pass nothing on. */
export function inheritedCompression(v: Buffer | undefined): Buffer | undefined {
  const m = v && /^(zlib|lzo|zstd)/.exec(v.toString('latin1'));
  return m ? Buffer.from(m[1]!, 'latin1') : undefined;
}

/** A stored ACL that means one: a header-only ACL reads back as no ACL at all. */
export function usableAcl(v: Buffer | undefined): Buffer | undefined {
  return v && v.length > 4 ? v : undefined;
}

/** Whether an ACL says more than mode bits can (named users or groups, a mask): then a child gets an access ACL. */
export function aclExtended(acl: Buffer): boolean {
  for (let off = 4; off + 8 <= acl.length; off += 8) {
    const tag = acl.readUInt16LE(off);
    if (tag === ACL_TAG.USER || tag === ACL_TAG.GROUP || tag === ACL_TAG.MASK) return true;
  }
  return false;
}

/** Gives inode `ino` what inheritFrom found. */
export async function applyInheritance(txn: Transaction, tree: bigint, ino: bigint, inh: Inheritance): Promise<void> {
  for (const [name, value] of inh.xattrs) await setXattr(txn, tree, ino, name, value);
}

/**
 * The default ACL `acl` applied to a new inode of `mode`: each class's
 * permissions are what both the ACL and the requested mode allow, and the
 * mode's group bits follow the mask entry when there is one (else the
 * owning group's).
 */
function maskAcl(acl: Buffer, mode: number): { mode: number; acl: Buffer } {
  if ((acl.length - 4) % 8 !== 0 || acl.readUInt32LE(0) !== ACL_VERSION) {
    throw new BtrfsError('EIO', `a default ACL of ${acl.length} bytes is not a version ${ACL_VERSION} POSIX ACL`);
  }
  const out = Buffer.from(acl);
  let bits = mode & 0o777;
  let groupObj = -1;
  let mask = -1;
  for (let off = 4; off < out.length; off += 8) {
    const tag = out.readUInt16LE(off);
    const perm = out.readUInt16LE(off + 2);
    switch (tag) {
      case ACL_TAG.USER_OBJ: {
        const p = perm & (((bits >> 6) & 7) | ~7);
        out.writeUInt16LE(p & 0xffff, off + 2);
        bits &= ((p & 7) << 6) | ~0o700;
        break;
      }
      case ACL_TAG.OTHER: {
        const p = perm & ((bits & 7) | ~7);
        out.writeUInt16LE(p & 0xffff, off + 2);
        bits &= (p & 7) | ~0o007;
        break;
      }
      case ACL_TAG.USER:
      case ACL_TAG.GROUP: break;
      case ACL_TAG.GROUP_OBJ: groupObj = off; break;
      case ACL_TAG.MASK: mask = off; break;
      default: throw new BtrfsError('EIO', `a default ACL entry has the unknown tag ${tag}`);
    }
  }
  const g = mask >= 0 ? mask : groupObj;
  if (g < 0) throw new BtrfsError('EIO', 'a default ACL without a group entry');
  const p = out.readUInt16LE(g + 2) & (((bits >> 3) & 7) | ~7);
  out.writeUInt16LE(p & 0xffff, g + 2);
  bits &= ((p & 7) << 3) | ~0o070;
  return { mode: (mode & ~0o777) | (bits & 0o777), acl: out };
}
