/**
 * What a check finds. Each finding says what is wrong in btrfs check's own
 * words (so output can be compared with the reference tool) and where: the
 * tree, block, key and inode involved. Errors make a filesystem unclean;
 * warnings (things btrfs check also only warns about) do not.
 */
import { BtrfsError } from '../util/errors.js';
import type { Key } from '../format/key.js';

export type Severity = 'error' | 'warning';

export interface Finding {
  severity: Severity;
  /** a stable short name for tools, e.g. 'ref-mismatch', 'nlink' */
  code: string;
  message: string;
  tree?: bigint;
  block?: bigint;
  key?: Key;
  inode?: bigint;
}

export type FindingWhere = Pick<Finding, 'tree' | 'block' | 'key' | 'inode'>;

export interface CheckStats {
  treeBlocks: number;
  trees: number;
  extentItems: number;
  dataExtents: number;
  inodes: number;
  /** fs trees the screen found sound (their names were compared by fingerprint, not one by one) */
  screenedTrees: number;
  blockGroups: number;
  bytesChecked: number;
}

export interface CheckReport {
  /** the device or path that was checked */
  image: string;
  findings: Finding[];
  errors: number;
  warnings: number;
  /** no errors (warnings allowed) */
  clean: boolean;
  /** findings not kept because there were too many (still counted) */
  dropped: number;
  stats: CheckStats;
  elapsedMs: number;
}

/** Past this many findings a damaged image would only drown the useful first ones. */
const MAX_FINDINGS = 5000;

export class Reporter {
  readonly findings: Finding[] = [];
  errors = 0;
  warnings = 0;
  dropped = 0;
  readonly stats: CheckStats = { treeBlocks: 0, trees: 0, extentItems: 0, dataExtents: 0, inodes: 0, screenedTrees: 0, blockGroups: 0, bytesChecked: 0 };

  error(code: string, message: string, where: FindingWhere = {}): void {
    this.errors++;
    this.add({ severity: 'error', code, message, ...where });
  }

  warning(code: string, message: string, where: FindingWhere = {}): void {
    this.warnings++;
    this.add({ severity: 'warning', code, message, ...where });
  }

  /**
   * Records a failure to read or decode something as an error finding; any
   * exception that is not a BtrfsError is a bug of ours and is rethrown.
   */
  fromError(e: unknown, code: string, where: FindingWhere = {}): void {
    if (!(e instanceof BtrfsError)) throw e;
    this.error(code, e.detail, {
      tree: where.tree ?? e.tree, block: where.block ?? e.block, key: where.key ?? e.key, inode: where.inode,
    });
  }

  private add(f: Finding): void {
    for (const k of Object.keys(f) as (keyof Finding)[]) if (f[k] === undefined) delete f[k];
    if (this.findings.length >= MAX_FINDINGS) { this.dropped++; return; }
    this.findings.push(f);
  }
}

function fmtKey(k: Key): string {
  return `(${k.objectid} ${k.type} ${k.offset})`;
}

/** One finding as a line of text: "ERROR: message [root=5 block=… key=(…) inode=257]". */
export function formatFinding(f: Finding): string {
  const loc: string[] = [];
  if (f.tree !== undefined) loc.push(`root=${f.tree}`);
  if (f.block !== undefined) loc.push(`block=${f.block}`);
  if (f.key !== undefined) loc.push(`key=${fmtKey(f.key)}`);
  if (f.inode !== undefined) loc.push(`inode=${f.inode}`);
  const head = f.severity === 'error' ? 'ERROR' : 'WARNING';
  return `${head}: ${f.message}${loc.length ? ` [${loc.join(' ')}]` : ''}`;
}

/** The report as JSON-safe data (bigints as decimal strings). */
export function reportToJson(r: CheckReport): unknown {
  return JSON.parse(JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
}
