/**
 * The one error type of tsbtrfs. Shaped like Node's own system errors
 * (`code`, `errno`, `syscall`, `path`) so callers used to `fs.promises`
 * can switch on `err.code`, plus the btrfs coordinates (tree, block, key)
 * that say where in an image the problem is.
 */
import os from 'node:os';

export type ErrnoCode =
  | 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'EPERM' | 'EACCES'
  | 'EINVAL' | 'EIO' | 'EUCLEAN' | 'ENOSPC' | 'EBUSY' | 'EROFS' | 'ENODATA'
  | 'ENAMETOOLONG' | 'ELOOP' | 'EXDEV' | 'EFBIG' | 'EMLINK' | 'ENOTSUP' | 'EBADF'
  | 'ERANGE' | 'E2BIG' | 'EOVERFLOW' | 'ENOMEM' | 'ESTALE' | 'EAGAIN' | 'EOPNOTSUPP';

/** Where in the image an error was found; every field is optional. */
export interface ErrorWhere {
  path?: string;
  syscall?: string;
  /** objectid of the tree (root) the block or item belongs to */
  tree?: bigint | number;
  /** logical bytenr of the tree block */
  block?: bigint | number;
  /** item key, printed as (objectid type offset) */
  key?: { objectid: bigint; type: number; offset: bigint };
  slot?: number;
  cause?: unknown;
}

// EUCLEAN ("structure needs cleaning") is what the kernel returns for a
// corrupt tree block; node's os.constants lacks it on some builds.
const EXTRA_ERRNO: Record<string, number> = { EUCLEAN: 117, ENOTSUP: 95 };

export function errnoOf(code: ErrnoCode): number {
  const n = (os.constants.errno as Record<string, number>)[code] ?? EXTRA_ERRNO[code];
  return n === undefined ? -1 : -n;
}

function fmtKey(k: ErrorWhere['key']): string {
  return k ? `(${k.objectid} ${k.type} ${k.offset})` : '';
}

export class BtrfsError extends Error {
  readonly code: ErrnoCode;
  /** negative errno as Node reports it (e.g. -2 for ENOENT) */
  readonly errno: number;
  readonly syscall?: string;
  readonly path?: string;
  readonly tree?: bigint;
  readonly block?: bigint;
  readonly key?: { objectid: bigint; type: number; offset: bigint };
  readonly slot?: number;
  /** the message without the location suffix */
  readonly detail: string;

  constructor(code: ErrnoCode, detail: string, where: ErrorWhere = {}) {
    const loc: string[] = [];
    if (where.tree !== undefined) loc.push(`root=${where.tree}`);
    if (where.block !== undefined) loc.push(`block=${where.block}`);
    if (where.slot !== undefined) loc.push(`slot=${where.slot}`);
    if (where.key) loc.push(`key=${fmtKey(where.key)}`);
    const head = where.syscall && where.path !== undefined
      ? `${code}: ${detail}, ${where.syscall} '${where.path}'`
      : where.path !== undefined ? `${code}: ${detail}: '${where.path}'` : `${code}: ${detail}`;
    super(loc.length ? `${head} [${loc.join(' ')}]` : head, where.cause !== undefined ? { cause: where.cause } : undefined);
    this.name = 'BtrfsError';
    this.code = code;
    this.errno = errnoOf(code);
    this.detail = detail;
    if (where.syscall !== undefined) this.syscall = where.syscall;
    if (where.path !== undefined) this.path = where.path;
    if (where.tree !== undefined) this.tree = BigInt(where.tree);
    if (where.block !== undefined) this.block = BigInt(where.block);
    if (where.key !== undefined) this.key = where.key;
    if (where.slot !== undefined) this.slot = where.slot;
  }

  /** A copy with more location filled in (the first value set wins). */
  withWhere(where: ErrorWhere): BtrfsError {
    return new BtrfsError(this.code, this.detail, {
      path: this.path ?? where.path,
      syscall: this.syscall ?? where.syscall,
      tree: this.tree ?? where.tree,
      block: this.block ?? where.block,
      key: this.key ?? where.key,
      slot: this.slot ?? where.slot,
      cause: this.cause ?? where.cause,
    });
  }
}

/** Corruption found in on-disk data: EUCLEAN, like the kernel's tree-checker. */
export function corrupt(detail: string, where: ErrorWhere = {}): BtrfsError {
  return new BtrfsError('EUCLEAN', detail, where);
}

export function isBtrfsError(e: unknown, code?: ErrnoCode): e is BtrfsError {
  return e instanceof BtrfsError && (code === undefined || e.code === code);
}
