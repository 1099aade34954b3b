/**
 * The btrfs send stream: bytes <-> commands. Pure; the only input is what the
 * caller hands in (a buffer, or an async iterable of chunks).
 *
 *   stream header   magic "btrfs-stream\0" (13 bytes), le32 version
 *   command         le32 len (payload bytes, header excluded), le16 cmd,
 *                   le32 crc, then `len` bytes of attributes
 *   attribute       le16 type, le16 len, value
 *                   — except from version 2 on, the DATA attribute has no
 *                   len: its value runs to the end of the command
 *
 * crc is crc32c seeded with 0 and not inverted, over the command header with
 * its crc field zeroed followed by the payload.
 *
 * Two levels of checking. The framing (lengths inside their bounds, crc,
 * attribute types 1..35) is always checked: that is what btrfs-progs checks.
 * `strict` (the default) also refuses what no kernel sends: a command or
 * attribute the stream's version does not have, an attribute twice in one
 * command, a fixed-size value of the wrong size, unlengthed DATA outside
 * WRITE/ENCODED_WRITE. `strict: false` reads a stream the way progs does, for
 * `receive --dump` to print what progs prints.
 */
import { BtrfsError } from '../util/errors.js';
import { sendCrc, crc32cRaw } from '../util/checksum.js';
import {
  SEND_STREAM_MAGIC, SEND_STREAM_HEADER_SIZE, SEND_CMD_HEADER_SIZE, SEND_TLV_HEADER_SIZE,
  SEND_BUF_SIZE_V1, SEND_STREAM_VERSION_MAX, SEND_CMD, SEND_ATTR, SEND_CMD_MAX, SEND_ATTR_MAX,
  SEND_ATTR_MAX_ANY, SEND_ATTR_KIND, SEND_ATTR_KIND_SIZE, sendCmdName, sendAttrName,
} from './send-constants.js';

export * from './send-constants.js';

export interface SendAttr { type: number; value: Buffer }

/**
 * One decoded command. `offset` (of its header in the stream), `index` (0 for
 * the first command after a stream header) and `size` (header included) are
 * filled in by the decoders and used in error messages; encoders ignore them.
 * Attribute values are views into the decoded bytes, not copies.
 */
export interface SendCommand {
  cmd: number;
  attrs: SendAttr[];
  offset?: number;
  index?: number;
  size?: number;
}

export interface DecodeOptions {
  /** false: check only what btrfs-progs checks (see the file comment). Default true. */
  strict?: boolean;
  /** Added to buffer offsets in messages and in `command.offset` (the stream offset of `buf[0]`). */
  base?: number;
  /** Command number within its stream, for messages. */
  index?: number;
}

/** Default bound on one command (header included) in parseStream: far above any kernel's (64 KiB in v1, 144 KiB in v2). */
export const SEND_MAX_COMMAND_SIZE_DEFAULT = 16 * 1024 * 1024;

const einval = (msg: string): BtrfsError => new BtrfsError('EINVAL', msg);

/** `command #3 write (15) at offset 1234`, the prefix of every command error. */
export function describeCommand(c: Pick<SendCommand, 'cmd' | 'offset' | 'index'>): string {
  const idx = c.index !== undefined ? `#${c.index} ` : '';
  const at = c.offset !== undefined ? ` at offset ${c.offset}` : '';
  return `command ${idx}${sendCmdName(c.cmd)} (${c.cmd})${at}`;
}

function describeAttr(type: number): string {
  return `${sendAttrName(type)} (${type})`;
}

/**
 * Throws unless `version` is one this code reads. Strict: 1..3. Not strict:
 * also 0, which btrfs-progs reads as 1 (it only refuses versions above its own).
 */
export function checkSendVersion(version: number, strict = true): void {
  const lo = strict ? 1 : 0;
  if (!Number.isInteger(version) || version < lo || version > SEND_STREAM_VERSION_MAX) {
    throw einval(`send stream version ${version} is not supported (this reads versions 1 to ${SEND_STREAM_VERSION_MAX})`);
  }
}

export function encodeStreamHeader(version: number): Buffer {
  checkSendVersion(version);
  const out = Buffer.alloc(SEND_STREAM_HEADER_SIZE);
  SEND_STREAM_MAGIC.copy(out, 0);
  out.writeUInt32LE(version, SEND_STREAM_MAGIC.length);
  return out;
}

/** The version of a stream header at `buf[off]`; throws EINVAL on a bad magic, a short header or an unknown version. */
export function decodeStreamHeader(buf: Buffer, off = 0, opts: { strict?: boolean; base?: number } = {}): number {
  const at = (opts.base ?? 0) + off;
  if (buf.length - off < SEND_STREAM_HEADER_SIZE) {
    throw einval(`truncated send stream header at offset ${at}: ${Math.max(0, buf.length - off)} of ${SEND_STREAM_HEADER_SIZE} bytes`);
  }
  if (!buf.subarray(off, off + SEND_STREAM_MAGIC.length).equals(SEND_STREAM_MAGIC)) {
    const seen = JSON.stringify(buf.subarray(off, off + SEND_STREAM_MAGIC.length).toString('latin1'));
    throw einval(`not a btrfs send stream: bad magic at offset ${at} (expected "btrfs-stream\\u0000", found ${seen})`);
  }
  const version = buf.readUInt32LE(off + SEND_STREAM_MAGIC.length);
  checkSendVersion(version, opts.strict ?? true);
  return version;
}

/** The crc a command at `buf[off]` with `len` payload bytes must carry (its own crc field counts as zero). */
export function commandCrc(buf: Buffer, off: number, len: number): number {
  const head = Buffer.from(buf.subarray(off, off + SEND_CMD_HEADER_SIZE));
  head.writeUInt32LE(0, 6);
  // raw crc32c chains: the state after the header seeds the payload's
  return crc32cRaw(sendCrc(head), buf.subarray(off + SEND_CMD_HEADER_SIZE, off + SEND_CMD_HEADER_SIZE + len));
}

/**
 * Decodes the command at `buf[off]`. Checks that its header and payload lie
 * inside `buf`, its crc (EIO when wrong), that every attribute is a known type
 * whose length stays inside the command, and, when strict, the rules in the
 * file comment. `next` is the offset just past the command.
 */
export function decodeCommand(buf: Buffer, off: number, version: number, opts: DecodeOptions = {}): { command: SendCommand; next: number } {
  const strict = opts.strict ?? true;
  const base = opts.base ?? 0;
  const at = base + off;
  const idx = opts.index !== undefined ? `#${opts.index} ` : '';
  if (!(off >= 0) || buf.length - off < SEND_CMD_HEADER_SIZE) {
    throw einval(`truncated command ${idx}header at offset ${at}: ${Math.max(0, buf.length - off)} of ${SEND_CMD_HEADER_SIZE} bytes`);
  }
  const len = buf.readUInt32LE(off);
  const cmd = buf.readUInt16LE(off + 4);
  const crc = buf.readUInt32LE(off + 6);
  const where = describeCommand({ cmd, offset: at, index: opts.index });
  const avail = buf.length - off - SEND_CMD_HEADER_SIZE;
  if (len > avail) throw einval(`${where}: truncated: its header claims ${len} payload bytes, only ${avail} follow`);
  const want = commandCrc(buf, off, len);
  if (crc !== want) {
    throw new BtrfsError('EIO', `${where}: crc mismatch: stored 0x${crc.toString(16).padStart(8, '0')}, computed 0x${want.toString(16).padStart(8, '0')}`);
  }
  if (strict) {
    const max = SEND_CMD_MAX[version] ?? 0;
    if (cmd < 1 || cmd > max) throw einval(`${where}: unknown command ${cmd} for send stream version ${version} (known: 1 to ${max})`);
  }

  const attrs: SendAttr[] = [];
  const start = off + SEND_CMD_HEADER_SIZE;
  const end = start + len;
  const seen = new Set<number>();
  let p = start;
  while (p < end) {
    const aAt = base + p;
    if (end - p < 2) throw einval(`${where}: truncated attribute header at offset ${aAt}: ${end - p} byte(s) left in the command`);
    const type = buf.readUInt16LE(p);
    if (type === 0 || type > SEND_ATTR_MAX_ANY) throw einval(`${where}: unknown attribute type ${type} at offset ${aAt}`);
    p += 2;
    let vlen: number;
    const unlengthed = version >= 2 && type === SEND_ATTR.DATA;
    if (unlengthed) {
      vlen = end - p;
    } else {
      if (end - p < 2) throw einval(`${where}: truncated header of attribute ${describeAttr(type)} at offset ${aAt}`);
      vlen = buf.readUInt16LE(p);
      p += 2;
      if (vlen > end - p) {
        throw einval(`${where}: attribute ${describeAttr(type)} at offset ${aAt} claims ${vlen} bytes, only ${end - p} left in the command`);
      }
    }
    if (strict) {
      const amax = SEND_ATTR_MAX[version] ?? 0;
      if (type > amax) throw einval(`${where}: attribute ${describeAttr(type)} at offset ${aAt} is not part of send stream version ${version}`);
      if (seen.has(type)) throw einval(`${where}: attribute ${describeAttr(type)} appears twice (again at offset ${aAt})`);
      const size = SEND_ATTR_KIND_SIZE[SEND_ATTR_KIND[type]!];
      if (size !== undefined && vlen !== size) {
        throw einval(`${where}: attribute ${describeAttr(type)} at offset ${aAt} has ${vlen} bytes, expected ${size}`);
      }
      if (unlengthed && cmd !== SEND_CMD.WRITE && cmd !== SEND_CMD.ENCODED_WRITE) {
        throw einval(`${where}: attribute ${describeAttr(type)} at offset ${aAt} is only valid in write and encoded_write`);
      }
    }
    seen.add(type);
    attrs.push({ type, value: buf.subarray(p, p + vlen) });
    p += vlen;
  }
  const size = SEND_CMD_HEADER_SIZE + len;
  const command: SendCommand = { cmd, attrs, offset: at, size };
  if (opts.index !== undefined) command.index = opts.index;
  return { command, next: off + size };
}

/**
 * Builds one command at a time, for a stream of `version`:
 *   new CommandBuilder(2).begin(SEND_CMD.WRITE).string(SEND_ATTR.PATH, 'f')
 *     .u64(SEND_ATTR.FILE_OFFSET, 0).data(SEND_ATTR.DATA, bytes).end()
 * Values are checked against their type's range; a value of a lengthed
 * attribute is at most 65535 bytes. In version 1 a whole command is at most
 * 64 KiB (receivers of that protocol may have a buffer of exactly that); in
 * version 2+ the unlengthed DATA attribute must come last.
 */
/** A last attribute value at least this large stays a buffer of its own (endParts). */
const SEPARATE_VALUE = 4096;

export class CommandBuilder {
  readonly version: number;
  private cmd = -1;
  private parts: Buffer[] = [];
  private payload = 0;
  private sealed = false;

  constructor(version: number) {
    checkSendVersion(version);
    this.version = version;
  }

  /** Payload bytes added so far (the command is this + 10). */
  get size(): number {
    return this.payload;
  }

  begin(cmd: number): this {
    if (!Number.isInteger(cmd) || cmd < 0 || cmd > 0xffff) throw einval(`send command number ${cmd} is not a u16`);
    this.cmd = cmd;
    this.parts = [];
    this.payload = 0;
    this.sealed = false;
    return this;
  }

  private put(type: number, value: Buffer, lengthed = true): this {
    if (this.cmd < 0) throw einval('CommandBuilder: begin() must come before attributes');
    if (this.sealed) {
      throw einval(`${sendCmdName(this.cmd)}: attribute ${describeAttr(type)} after the unlengthed data attribute, which must be last`);
    }
    if (!Number.isInteger(type) || type < 0 || type > 0xffff) throw einval(`send attribute type ${type} is not a u16`);
    if (lengthed && value.length > 0xffff) {
      throw einval(`${sendCmdName(this.cmd)}: attribute ${describeAttr(type)} of ${value.length} bytes is longer than 65535`);
    }
    const head = Buffer.alloc(lengthed ? SEND_TLV_HEADER_SIZE : 2);
    head.writeUInt16LE(type, 0);
    if (lengthed) head.writeUInt16LE(value.length, 2);
    this.parts.push(head, value);
    this.payload += head.length + value.length;
    return this;
  }

  u8(type: number, v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw einval(`attribute ${describeAttr(type)}: ${v} is not a u8`);
    return this.put(type, Buffer.from([v]));
  }

  u32(type: number, v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw einval(`attribute ${describeAttr(type)}: ${v} is not a u32`);
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return this.put(type, b);
  }

  u64(type: number, v: bigint | number): this {
    const n = typeof v === 'bigint' ? v : Number.isInteger(v) ? BigInt(v) : -1n;
    if (n < 0n || n > 0xffff_ffff_ffff_ffffn) throw einval(`attribute ${describeAttr(type)}: ${v} is not a u64`);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(n);
    return this.put(type, b);
  }

  /** A path or name: the bytes as given, or the UTF-8 of a string; no terminating NUL. */
  string(type: number, s: string | Buffer): this {
    return this.put(type, typeof s === 'string' ? Buffer.from(s, 'utf8') : s);
  }

  uuid(type: number, u: Buffer): this {
    if (u.length !== 16) throw einval(`attribute ${describeAttr(type)}: a uuid has 16 bytes, got ${u.length}`);
    return this.put(type, u);
  }

  /** le64 seconds (negative times stored two's complement, as the kernel does) + le32 nanoseconds. */
  timespec(type: number, t: { sec: bigint; nsec: number }): this {
    if (t.sec < -(1n << 63n) || t.sec >= 1n << 64n) throw einval(`attribute ${describeAttr(type)}: seconds ${t.sec} do not fit 64 bits`);
    if (!Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec > 0xffffffff) throw einval(`attribute ${describeAttr(type)}: nanoseconds ${t.nsec} is not a u32`);
    const b = Buffer.alloc(12);
    b.writeBigUInt64LE(BigInt.asUintN(64, t.sec), 0);
    b.writeUInt32LE(t.nsec, 8);
    return this.put(type, b);
  }

  /** File data: lengthed in version 1; in version 2+ without a length and necessarily the last attribute. */
  data(type: number, b: Buffer): this {
    if (this.version < 2) return this.put(type, b);
    this.put(type, b, false);
    this.sealed = true;
    return this;
  }

  bytes(type: number, b: Buffer): this {
    return this.put(type, b);
  }

  /** The whole command, header and crc included. The builder is then empty until the next begin(). */
  end(): Buffer {
    const parts = this.endParts();
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /**
   * The command as the pieces to write one after the other: its header and
   * attributes, and a large last value (file data) apart, not copied, its
   * bytes only read for the crc. The builder is then empty until the next
   * begin().
   */
  endParts(): Buffer[] {
    if (this.cmd < 0) throw einval('CommandBuilder: end() without begin()');
    const total = SEND_CMD_HEADER_SIZE + this.payload;
    if (this.payload > 0xffffffff) throw einval(`${sendCmdName(this.cmd)}: ${this.payload} payload bytes do not fit a u32 length`);
    if (this.version === 1 && total > SEND_BUF_SIZE_V1) {
      throw einval(`${sendCmdName(this.cmd)}: a command of ${total} bytes is over the version 1 limit of ${SEND_BUF_SIZE_V1}`);
    }
    const last = this.parts[this.parts.length - 1];
    const apart = last !== undefined && last.length >= SEPARATE_VALUE ? last : undefined;
    const head = Buffer.allocUnsafe(total - (apart?.length ?? 0));
    head.writeUInt32LE(this.payload, 0);
    head.writeUInt16LE(this.cmd, 4);
    head.writeUInt32LE(0, 6);
    let p = SEND_CMD_HEADER_SIZE;
    const n = apart ? this.parts.length - 1 : this.parts.length;
    for (let i = 0; i < n; i++) p += this.parts[i]!.copy(head, p);
    const crc = apart ? crc32cRaw(sendCrc(head), apart) : sendCrc(head);
    head.writeUInt32LE(crc, 6);
    this.cmd = -1;
    this.parts = [];
    this.payload = 0;
    this.sealed = false;
    return apart ? [head, apart] : [head];
  }
}

/**
 * Encodes a decoded command again (the inverse of decodeCommand for what the
 * kernel makes): attributes in their order, DATA unlengthed in version 2+.
 * Checks nothing about the attributes' kinds, so it also re-encodes hostile
 * commands for tests.
 */
export function encodeCommand(c: SendCommand, version: number): Buffer {
  const b = new CommandBuilder(version).begin(c.cmd);
  for (const a of c.attrs) {
    if (a.type === SEND_ATTR.DATA) b.data(a.type, a.value);
    else b.bytes(a.type, a.value);
  }
  return b.end();
}

// ---------------------------------------------------------------- typed getters

/** The attribute of `type`; the last one if it appears more than once (as btrfs-progs reads it). */
export function getAttr(c: SendCommand, type: number): SendAttr | undefined {
  for (let i = c.attrs.length - 1; i >= 0; i--) if (c.attrs[i]!.type === type) return c.attrs[i];
  return undefined;
}

export function hasAttr(c: SendCommand, type: number): boolean {
  return getAttr(c, type) !== undefined;
}

/** The raw value; EINVAL naming the command when it is missing. */
export function getBytes(c: SendCommand, type: number): Buffer {
  const a = getAttr(c, type);
  if (!a) throw einval(`${describeCommand(c)}: missing attribute ${describeAttr(type)}`);
  return a.value;
}

function fixed(c: SendCommand, type: number, size: number, what: string): Buffer {
  const v = getBytes(c, type);
  if (v.length !== size) throw einval(`${describeCommand(c)}: attribute ${describeAttr(type)} has ${v.length} bytes, a ${what} has ${size}`);
  return v;
}

export function getU8(c: SendCommand, type: number): number {
  return fixed(c, type, 1, 'u8').readUInt8(0);
}

export function getU32(c: SendCommand, type: number): number {
  return fixed(c, type, 4, 'u32').readUInt32LE(0);
}

export function getU64(c: SendCommand, type: number): bigint {
  return fixed(c, type, 8, 'u64').readBigUInt64LE(0);
}

/** 16 bytes. */
export function getUuid(c: SendCommand, type: number): Buffer {
  return fixed(c, type, 16, 'uuid');
}

/** seconds as a signed 64-bit value (times before 1970 are negative), nanoseconds as stored. */
export function getTimespec(c: SendCommand, type: number): { sec: bigint; nsec: number } {
  const v = fixed(c, type, 12, 'timespec');
  return { sec: v.readBigInt64LE(0), nsec: v.readUInt32LE(8) };
}

/** A path or name as its bytes (btrfs names need not be UTF-8). */
export function getStringBytes(c: SendCommand, type: number): Buffer {
  return getBytes(c, type);
}

/** A path or name decoded as UTF-8 (lossy for names that are not UTF-8: use getStringBytes to keep them). */
export function getString(c: SendCommand, type: number): string {
  return getBytes(c, type).toString('utf8');
}

// ---------------------------------------------------------------- streaming parser

export interface ParseStreamOptions {
  /** Refuse a command (header included) larger than this before buffering it. Default 16 MiB. */
  maxCommandSize?: number;
  /** See DecodeOptions.strict. Default true. */
  strict?: boolean;
  /**
   * After an END command: false (default) stops there without reading on,
   * as `btrfs receive --dump` does; true reads on, and bytes after an END must
   * start a new stream (header and all), as `btrfs send A B` writes them.
   */
  multiStream?: boolean;
}

/** Pulls chunks from an async iterator only as far as asked; bytes are handed out once each. */
class ChunkQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  private avail = 0;
  private done = false;
  constructor(private readonly it: AsyncIterator<Buffer | Uint8Array>) {}

  get available(): number {
    return this.avail;
  }

  /** True when `n` bytes are buffered; false when the source ended first. */
  async fill(n: number): Promise<boolean> {
    while (this.avail < n && !this.done) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        break;
      }
      const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      if (b.length === 0) continue;
      this.chunks.push(b);
      this.avail += b.length;
    }
    return this.avail >= n;
  }

  /** The next `n` buffered bytes without consuming them (n <= available). */
  peek(n: number): Buffer {
    return this.read(n, false);
  }

  /** Consumes the next `n` buffered bytes: a view when they lie in one chunk, else a copy. */
  take(n: number): Buffer {
    return this.read(n, true);
  }

  private read(n: number, consume: boolean): Buffer {
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      if (consume) this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    let ci = 0;
    let h = this.head;
    while (got < n) {
      const c = this.chunks[ci]!;
      const k = Math.min(n - got, c.length - h);
      c.copy(out, got, h, h + k);
      got += k;
      ci++;
      h = 0;
    }
    if (consume) this.advance(n);
    return out;
  }

  private advance(n: number): void {
    this.avail -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      const k = Math.min(n, c.length - this.head);
      n -= k;
      this.head += k;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
  }

  async close(): Promise<void> {
    this.chunks = [];
    this.avail = 0;
    if (!this.done && this.it.return) await this.it.return();
  }
}

/**
 * Reads a send stream from `source` (chunks of any size), yielding its
 * `{ version }` and then each command, END included. Holds at most one
 * command in memory, and refuses one larger than `maxCommandSize` before
 * reading it. Throws BtrfsError: ENODATA for an empty source; EINVAL for a bad
 * magic or version, a truncated header, command or attribute, an oversize or
 * (strict) unknown command, or a source that ends before END; EIO for a crc
 * mismatch.
 */
export async function* parseStream(
  source: AsyncIterable<Buffer | Uint8Array>,
  opts: ParseStreamOptions = {},
): AsyncGenerator<{ version: number } | SendCommand> {
  const max = opts.maxCommandSize ?? SEND_MAX_COMMAND_SIZE_DEFAULT;
  const strict = opts.strict ?? true;
  const q = new ChunkQueue(source[Symbol.asyncIterator]());
  let pos = 0;
  try {
    await q.fill(SEND_STREAM_HEADER_SIZE);
    if (q.available === 0) throw new BtrfsError('ENODATA', 'send stream is empty');
    for (;;) {
      const version = decodeStreamHeader(q.peek(Math.min(q.available, SEND_STREAM_HEADER_SIZE)), 0, { strict, base: pos });
      q.take(SEND_STREAM_HEADER_SIZE);
      pos += SEND_STREAM_HEADER_SIZE;
      yield { version };
      let index = 0;
      for (;;) {
        if (!(await q.fill(SEND_CMD_HEADER_SIZE))) {
          if (q.available === 0) throw einval(`send stream ends at offset ${pos} without an END command (after ${index} commands)`);
          throw einval(`truncated command #${index} header at offset ${pos}: ${q.available} of ${SEND_CMD_HEADER_SIZE} bytes`);
        }
        const head = q.peek(SEND_CMD_HEADER_SIZE);
        const len = head.readUInt32LE(0);
        const cmd = head.readUInt16LE(4);
        const total = SEND_CMD_HEADER_SIZE + len;
        if (total > max) {
          throw einval(`${describeCommand({ cmd, offset: pos, index })}: length ${len} is over the limit of ${max} bytes per command`);
        }
        if (!(await q.fill(total))) {
          throw einval(`${describeCommand({ cmd, offset: pos, index })}: truncated: its header claims ${len} payload bytes, the stream ends after ${q.available - SEND_CMD_HEADER_SIZE}`);
        }
        const bytes = q.take(total);
        const { command } = decodeCommand(bytes, 0, version, { strict, base: pos, index });
        pos += total;
        index++;
        yield command;
        if (command.cmd === SEND_CMD.END) break;
      }
      if (!opts.multiStream) return;
      if (!(await q.fill(1))) return;
      await q.fill(SEND_STREAM_HEADER_SIZE);
    }
  } finally {
    await q.close();
  }
}

/** Chunks of a buffer, for feeding parseStream from memory. */
export async function* bufferChunks(buf: Buffer, chunkSize = 64 * 1024): AsyncGenerator<Buffer> {
  for (let p = 0; p < buf.length; p += chunkSize) yield buf.subarray(p, Math.min(buf.length, p + chunkSize));
}
