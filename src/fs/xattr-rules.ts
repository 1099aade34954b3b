/**
 * What lsetxattr accepts on btrfs, in one place for every way an xattr gets
 * into an image (the POSIX layer, the importer): the namespaces the
 * kernel's handlers know (of system.* only the POSIX ACLs, stored in the
 * kernel's own format), btrfs.* only as the compression property, user.*
 * only on files and directories, and sizes a tree leaf can hold.
 */
import { BtrfsError } from '../util/errors.js';
import { S_IFDIR, S_IFREG, NAME_LEN } from '../format/constants.js';
import { maxXattrBytes } from './namespace.js';

const NAMESPACE = /^(user|trusted|security|system|btrfs)\./;

interface Where { syscall: string; path: string }

/** The namespace of xattr `name` (`nb` its bytes), or the errno lsetxattr gives for it. */
export function xattrNamespace(name: string, nb: Buffer, where: Where): string {
  if (nb.length === 0 || nb.length > NAME_LEN) throw new BtrfsError('ERANGE', 'bad xattr name length', where);
  const ns = NAMESPACE.exec(name)?.[1];
  const acl = name === 'system.posix_acl_access' || name === 'system.posix_acl_default';
  if (!ns || (ns === 'system' && !acl)) throw new BtrfsError('EOPNOTSUPP', `unsupported xattr namespace in '${name}'`, where);
  if (nb.length === ns.length + 1) throw new BtrfsError('EINVAL', 'empty xattr name', where);
  if (ns === 'btrfs' && name !== 'btrfs.compression') throw new BtrfsError('EINVAL', `unknown btrfs property '${name}'`, where);
  return ns;
}

/** user.* xattrs only on regular files and directories (`type` is the S_IFMT bits). */
export function checkXattrTarget(ns: string, type: number, where: Where): void {
  if (ns === 'user' && type !== S_IFREG && type !== S_IFDIR) throw new BtrfsError('EPERM', 'user xattrs only on files and directories', where);
}

/** A value the VFS takes (64 KiB) and that fits a leaf with its name. */
export function checkXattrValue(nb: Buffer, value: Buffer, nodesize: number, where: Where): void {
  if (value.length > 65536) throw new BtrfsError('E2BIG', 'xattr value over 64 KiB', where);
  if (nb.length + value.length > maxXattrBytes(nodesize)) throw new BtrfsError('ENOSPC', 'xattr too large for a tree leaf', where);
}
