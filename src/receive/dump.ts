/**
 * `receive --dump`: one line per command of a send stream, byte for byte what
 * `btrfs receive --dump` of btrfs-progs 6.2 prints for the same stream.
 *
 * What that means, learned from progs and checked against it:
 * - `%-16s` title, then the path: "./" + subvolume name for subvol/snapshot,
 *   else the current subvolume's path + "/" + the command's path (one
 *   trailing '/' of each part dropped). Paths are escaped C-style (\n, \t,
 *   "\ " for a space, \\, octal \ooo for other unprintable bytes, bytes >= 0x80
 *   included). Paths are C strings: cut at the first NUL.
 * - If the command prints more, spaces pad the escaped path to 32 columns
 *   (at least one), then the fields. rename/symlink/link destinations are
 *   escaped; clone sources, xattr names and xattr data are printed raw
 *   (xattr data up to its length or its first NUL).
 * - Numbers keep progs' C types: clone's length passes through an int
 *   (only its low 32 bits, sign-extended), fallocate's mode prints signed,
 *   fileattr prints decimal after "0x".
 * - Times: local time zone, whole seconds, strftime "%FT%T%z" of glibc: the
 *   year unpadded and signed, an error past the years an int holds.
 * - A joined path of PATH_MAX (4096) bytes or more is an error, as in progs.
 * - The dump stops at the first END; commands it has no printer for
 *   (numbers past 26, or 0) are skipped, as progs skips them.
 * Differences, deliberately: version 3 streams are read (progs 6.2 refuses
 * them); errors are BtrfsErrors, not progs' messages; there is no -E. And one
 * we do not model: in zones with daylight saving time, glibc's yearly rule
 * arithmetic overflows an int for years past about 5,800,000, so progs may
 * print another offset there than the calendar gives (UTC is unaffected).
 */
import { BtrfsError } from '../util/errors.js';
import { uuidToString } from '../util/bytes.js';
import { parseStream, describeCommand, type ParseStreamOptions } from '../format/send-stream.js';
import { decodeOp, PATH_MAX, type SendOp, type SendTime } from './parse.js';

/** Called with each piece of output; may return a promise to apply backpressure. */
export type DumpSink = (chunk: Buffer) => void | Promise<void>;

export interface DumpOptions {
  maxCommandSize?: ParseStreamOptions['maxCommandSize'];
  /** Time zone of the printed times: the process's local zone (as progs) or UTC. Default 'local'. */
  timeZone?: 'local' | 'utc';
  /** Told about what progs reports on stderr but carries on after: commands skipped, destination-only lines. */
  onWarning?: (message: string) => void;
}

export interface DumpResult {
  version: number;
  /** commands read, END included */
  commands: number;
  lines: number;
  skipped: number;
}

const TITLE_WIDTH = 16;
const PATH_COLUMN = 32;

const NAMED_ESCAPES: Record<number, string> = {
  0x07: 'a', 0x08: 'b', 0x1b: 'e', 0x0c: 'f', 0x0a: 'n', 0x0d: 'r', 0x09: 't', 0x0b: 'v', 0x20: ' ', 0x5c: '\\',
};

/** A C string's bytes: up to the first NUL. */
function cstr(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

/** progs' print_path_escaped, in the C locale (only 0x20..0x7e are printable). */
export function escapeDumpPath(p: Buffer): Buffer {
  let plain = true;
  for (const c of p) if (c < 0x20 || c > 0x7e || c === 0x20 || c === 0x5c) { plain = false; break; }
  if (plain) return p;
  const out: number[] = [];
  for (const c of p) {
    const named = NAMED_ESCAPES[c];
    if (named !== undefined) out.push(0x5c, named.charCodeAt(0));
    else if (c < 0x20 || c > 0x7e) out.push(0x5c, 0x30 + (c >> 6), 0x30 + ((c >> 3) & 7), 0x30 + (c & 7));
    else out.push(c);
  }
  return Buffer.from(out);
}

/** progs' path_cat_out: p1 + '/' + p2, one trailing '/' of each dropped; ENAMETOOLONG at PATH_MAX. */
function pathCat(title: string, p1: Buffer, p2: Buffer): Buffer {
  if (p1.length + p2.length + 2 >= PATH_MAX) {
    throw new BtrfsError('ENAMETOOLONG', `${title}: path invalid: joined path of ${p1.length + p2.length + 1} bytes is not shorter than PATH_MAX (${PATH_MAX})`);
  }
  const a = p1.length && p1[p1.length - 1] === 0x2f ? p1.subarray(0, -1) : p1;
  const b = p2.length && p2[p2.length - 1] === 0x2f ? p2.subarray(0, -1) : p2;
  return Buffer.concat([a, Buffer.from('/'), b]);
}

const two = (n: number): string => String(n).padStart(2, '0');
const INT_MIN = -(2n ** 31n);
const INT_MAX = 2n ** 31n - 1n;

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
}

/**
 * Days since 1970-01-01 -> proleptic Gregorian (year, month 1..12, day 1..31),
 * counted in 400-year eras of 146097 days with years starting in March, so
 * the leap day falls at the end of a year.
 */
function civilFromDays(days: bigint): { y: bigint; m: number; d: number } {
  const z = days + 719468n; // days from 0000-03-01
  const era = floorDiv(z, 146097n);
  const doe = z - era * 146097n; // 0..146096
  const yoe = (doe - doe / 1460n + doe / 36524n - doe / 146096n) / 365n; // 0..399
  const doy = doe - (365n * yoe + yoe / 4n - yoe / 100n); // 0..365, from March 1
  const mp = (5n * doy + 2n) / 153n; // 0..11, March = 0
  const d = Number(doy - (153n * mp + 2n) / 5n + 1n);
  const m = Number(mp < 10n ? mp + 3n : mp - 9n);
  const y = yoe + era * 400n + (m <= 2 ? 1n : 0n);
  return { y, m, d };
}

/** Seconds in 400 Gregorian years: the calendar, weekdays included, repeats after that. */
const ERA_SECONDS = 12_622_780_800n;
const MAX_DATE_SECONDS = 8_640_000_000_000n;

/**
 * UTC offset in seconds of the local zone at `sec`, seconds included (zones
 * had offsets like +05:21:10 before standard time). A time outside what a
 * Date holds is moved by whole 400-year eras into it: zone rules beyond the
 * tz data repeat yearly, so the offset is the same.
 */
function localOffsetSeconds(sec: bigint): number {
  let s = sec;
  if (s > MAX_DATE_SECONDS) s -= ((s - MAX_DATE_SECONDS) / ERA_SECONDS + 1n) * ERA_SECONDS;
  if (s < -MAX_DATE_SECONDS) s += ((-MAX_DATE_SECONDS - s) / ERA_SECONDS + 1n) * ERA_SECONDS;
  const d = new Date(Number(s) * 1000);
  // getTimezoneOffset() drops the seconds; the local fields keep them
  const wall = new Date(0);
  wall.setUTCFullYear(d.getFullYear(), d.getMonth(), d.getDate());
  wall.setUTCHours(d.getHours(), d.getMinutes(), d.getSeconds(), d.getMilliseconds());
  return Math.round((wall.getTime() - d.getTime()) / 1000);
}

/**
 * glibc's localtime_r + strftime("%FT%T%z") of a time_t: EINVAL where
 * localtime_r fails (the year minus 1900 does not fit an int); the year
 * printed as the int strftime computes (tm_year + 1900, wrapping at 2^31).
 */
export function formatDumpTime(t: SendTime, timeZone: 'local' | 'utc' = 'local'): string {
  const off = timeZone === 'utc' ? 0 : localOffsetSeconds(t.sec);
  const local = t.sec + BigInt(off);
  const days = floorDiv(local, 86400n);
  const sod = Number(local - days * 86400n);
  const { y, m, d } = civilFromDays(days);
  const tmYear = y - 1900n;
  if (tmYear < INT_MIN || tmYear > INT_MAX) {
    throw new BtrfsError('EINVAL', `failed to convert time ${t.sec}.${String(t.nsec).padStart(9, '0')} to local time`);
  }
  const year = BigInt.asIntN(32, tmYear + 1900n);
  const a = Math.abs(off);
  const z = `${off < 0 ? '-' : '+'}${two(Math.floor(a / 3600))}${two(Math.floor(a / 60) % 60)}`;
  return `${year}-${two(m)}-${two(d)}T${two(Math.floor(sod / 3600))}:${two(Math.floor(sod / 60) % 60)}:${two(sod % 60)}${z}`;
}

const u64s = (v: bigint): string => v.toString();
/** a C int converted to u64, as progs passes an int length to a u64 parameter */
const intToU64 = (v: bigint): string => BigInt.asUintN(64, BigInt.asIntN(32, v)).toString();

/**
 * The printing half of the dump: keeps the current subvolume's path and turns
 * each operation into its line (undefined for END and unknown commands).
 * Throws the errors progs reports (path too long, time out of range).
 */
export class DumpPrinter {
  /** where paths are relative to: "." until the first subvol/snapshot */
  private subvolPath: Buffer = Buffer.from('.');
  private readonly root = Buffer.from('.');

  constructor(private readonly timeZone: 'local' | 'utc' = 'local', private readonly onWarning?: (message: string) => void) {}

  /**
   * symlink, link and rename print "title path<pad>dest=" and then the
   * destination without looking at whether the first part failed: when the
   * path is too long, progs reports it, prints only the destination, and
   * goes on as if nothing happened. So do we.
   */
  private destLine(title: string, path: Buffer, dest: Buffer): Buffer {
    let head: Buffer;
    try {
      head = this.line(title, path, 'dest=', false, false);
    } catch (e) {
      if (!(e instanceof BtrfsError) || e.code !== 'ENAMETOOLONG') throw e;
      this.onWarning?.(`${e.detail} (printed only the destination, as btrfs receive --dump does)`);
      head = Buffer.alloc(0);
    }
    return Buffer.concat([head, escapeDumpPath(dest), Buffer.from('\n')]);
  }

  private line(title: string, path: Buffer, fields?: Buffer | string, subvol = false, newline = true): Buffer {
    let full: Buffer;
    if (subvol) {
      full = pathCat(title, this.root, cstr(path));
      this.subvolPath = full;
    } else {
      full = pathCat(title, this.subvolPath, cstr(path));
    }
    const esc = escapeDumpPath(full);
    const head = Buffer.from(title.padEnd(TITLE_WIDTH, ' '), 'latin1');
    if (fields === undefined) return Buffer.concat([head, esc, Buffer.from('\n')]);
    const pad = Buffer.alloc(Math.max(1, PATH_COLUMN - esc.length), 0x20);
    const tail = typeof fields === 'string' ? Buffer.from(fields, 'latin1') : fields;
    return Buffer.concat([head, esc, pad, tail, Buffer.from(newline ? '\n' : '')]);
  }

  private time(t: SendTime): string {
    return formatDumpTime(t, this.timeZone);
  }

  format(o: SendOp): Buffer | undefined {
    switch (o.op) {
      case 'subvol':
        return this.line('subvol', o.path, `uuid=${uuidToString(o.uuid)} transid=${u64s(o.ctransid)}`, true);
      case 'snapshot':
        return this.line('snapshot', o.path,
          `uuid=${uuidToString(o.uuid)} transid=${u64s(o.ctransid)} parent_uuid=${uuidToString(o.cloneUuid)} parent_transid=${u64s(o.cloneCtransid)}`, true);
      case 'mkfile':
      case 'mkdir':
      case 'mkfifo':
      case 'mksock':
        return this.line(o.op, o.path);
      case 'mknod':
        return this.line('mknod', o.path, `mode=${o.mode.toString(8)} dev=0x${o.rdev.toString(16)}`);
      case 'symlink':
        return this.destLine('symlink', o.path, cstr(o.target));
      case 'rename': {
        const to = pathCat('rename', this.subvolPath, cstr(o.to));
        return this.destLine('rename', o.path, to);
      }
      case 'link':
        return this.destLine('link', o.path, cstr(o.target));
      case 'unlink':
      case 'rmdir':
        return this.line(o.op, o.path);
      case 'write':
        return this.line('write', o.path, `offset=${u64s(o.offset)} len=${intToU64(BigInt(o.data.length))}`);
      case 'clone': {
        const from = pathCat('clone', this.subvolPath, cstr(o.clonePath));
        return this.line('clone', o.path, Buffer.concat([
          Buffer.from(`offset=${u64s(o.offset)} len=${intToU64(o.len)} from=`), from, Buffer.from(` clone_offset=${u64s(o.cloneOffset)}`),
        ]));
      }
      case 'set_xattr': {
        const shown = cstr(o.data);
        return this.line('set_xattr', o.path, Buffer.concat([
          Buffer.from('name='), cstr(o.name), Buffer.from(' data='), shown, Buffer.from(` len=${BigInt.asIntN(32, BigInt(o.data.length))}`),
        ]));
      }
      case 'remove_xattr':
        return this.line('remove_xattr', o.path, Buffer.concat([Buffer.from('name='), cstr(o.name)]));
      case 'truncate':
        return this.line('truncate', o.path, `size=${u64s(o.size)}`);
      case 'chmod':
        return this.line('chmod', o.path, `mode=${o.mode.toString(8)}`);
      case 'chown':
        return this.line('chown', o.path, `gid=${u64s(o.gid)} uid=${u64s(o.uid)}`);
      case 'utimes': {
        const at = this.time(o.atime);
        const mt = this.time(o.mtime);
        const ct = this.time(o.ctime);
        return this.line('utimes', o.path, `atime=${at} mtime=${mt} ctime=${ct}`);
      }
      case 'update_extent':
        return this.line('update_extent', o.path, `offset=${u64s(o.offset)} len=${u64s(o.size)}`);
      case 'encoded_write':
        return this.line('encoded_write', o.path,
          `offset=${u64s(o.offset)} len=${intToU64(BigInt(o.data.length))}, unencoded_file_len=${u64s(o.unencodedFileLen)}, ` +
          `unencoded_len=${u64s(o.unencodedLen)}, unencoded_offset=${u64s(o.unencodedOffset)}, ` +
          `compression=${o.compression}, encryption=${o.encryption}`);
      case 'fallocate':
        return this.line('fallocate', o.path, `mode=${o.mode | 0} offset=${u64s(o.offset)} len=${u64s(o.size)}`);
      case 'fileattr':
        return this.line('fileattr', o.path, `fileattr=0x${u64s(o.fileattr)}`);
      case 'enable_verity':
        return this.line('enable_verity', o.path,
          `algorithm=${o.algorithm} block_size=${o.blockSize} salt_len=${o.salt.length | 0} sig_len=${o.sig.length | 0}`);
      case 'end':
      case 'unknown':
        return undefined;
    }
  }
}

/**
 * Reads a send stream and writes its dump to `sink`, flushing in pieces of
 * about 64 KiB and at the end (also when an error stops it, so everything
 * before the bad command is out, as with progs). Stops after the first END.
 */
export async function dumpSendStream(source: AsyncIterable<Buffer | Uint8Array>, sink: DumpSink, opts: DumpOptions = {}): Promise<DumpResult> {
  const printer = new DumpPrinter(opts.timeZone ?? 'local', opts.onWarning);
  const res: DumpResult = { version: 0, commands: 0, lines: 0, skipped: 0 };
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async (): Promise<void> => {
    if (!pendingBytes) return;
    const out = Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    await sink(out);
  };
  try {
    for await (const item of parseStream(source, { maxCommandSize: opts.maxCommandSize, strict: false })) {
      if (!('cmd' in item)) {
        res.version = item.version;
        continue;
      }
      res.commands++;
      const o = decodeOp(item, { strict: false });
      if (o.op === 'unknown') {
        res.skipped++;
        opts.onWarning?.(`skipping ${describeCommand(item)}: no such command (btrfs receive --dump skips it too)`);
        continue;
      }
      const text = printer.format(o);
      if (!text) continue;
      pending.push(text);
      pendingBytes += text.length;
      res.lines++;
      if (pendingBytes >= 64 * 1024) await flush();
    }
  } finally {
    await flush();
  }
  return res;
}

/** The dump of an in-memory stream as one Buffer (tests, small streams). */
export async function dumpSendStreamToBuffer(stream: Buffer, opts: DumpOptions = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  async function* one(): AsyncGenerator<Buffer> { yield stream; }
  await dumpSendStream(one(), (b) => { parts.push(b); }, opts);
  return Buffer.concat(parts);
}

