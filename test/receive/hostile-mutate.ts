/**
 * Seeded mutations of send streams for the fuzz tests (hostile*.test.ts and
 * dump-progs.test.ts). Mutations aim at the framing — lengths, command and
 * attribute numbers, truncation, reordering — and the crcs are recomputed
 * afterwards (most of the time) so that the mutation reaches the parser
 * instead of stopping at the crc check.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { commandCrc } from '../../src/format/send-stream.js';
import { repoRoot } from '../helpers/fixtures.js';

export const STREAM_DIR = path.join(repoRoot(), 'native-fixtures', 'streams');

export function loadStream(name: string): Buffer {
  return gunzipSync(readFileSync(path.join(STREAM_DIR, `${name}.stream.gz`)));
}

const MAGIC = Buffer.from('btrfs-stream\0', 'latin1');

/** Commands that lie wholly inside `s`, following the length fields from the header on. */
export function frameCommands(s: Buffer): Array<{ off: number; len: number }> {
  const out: Array<{ off: number; len: number }> = [];
  let p = 17;
  while (p + 10 <= s.length) {
    if (s.subarray(p, p + 13).equals(MAGIC)) {
      p += 17;
      continue;
    }
    const len = s.readUInt32LE(p);
    if (p + 10 + len > s.length) break;
    out.push({ off: p, len });
    p += 10 + len;
  }
  return out;
}

/** Attribute headers (offsets) inside one command, lengthed TLVs only. */
function frameAttrs(s: Buffer, off: number, len: number, version: number): number[] {
  const out: number[] = [];
  let p = off + 10;
  const end = off + 10 + len;
  while (p + 2 <= end) {
    out.push(p);
    const type = s.readUInt16LE(p);
    if (version >= 2 && type === 19) break;
    if (p + 4 > end) break;
    p += 4 + s.readUInt16LE(p + 2);
  }
  return out;
}

export function fixCrcs(s: Buffer): void {
  for (const c of frameCommands(s)) s.writeUInt32LE(commandCrc(s, c.off, c.len), c.off + 6);
}

const U16S = [0, 1, 2, 0x13, 15, 21, 22, 25, 26, 27, 35, 36, 0x7fff, 0x8000, 0xfffe, 0xffff];
const U32S = [0, 1, 2, 9, 10, 0xff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffff0, 0xffffffff];

/** One to four random mutations of `src` (never modified), crcs recomputed 9 times out of 10. */
export function mutateStream(src: Buffer, rnd: () => number): Buffer {
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(a: readonly T[]): T => a[int(a.length)]!;
  let s = Buffer.from(src);
  const version = s.length >= 17 ? s.readUInt32LE(13) : 1;
  const rounds = 1 + int(4);
  for (let r = 0; r < rounds; r++) {
    const cmds = frameCommands(s);
    const c = cmds.length ? pick(cmds) : undefined;
    switch (int(14)) {
      case 0: { // a random bit
        const i = int(s.length);
        s[i]! ^= 1 << int(8);
        break;
      }
      case 1: { // a random byte
        s[int(s.length)] = int(256);
        break;
      }
      case 2: // a command's length
        if (c) s.writeUInt32LE(rnd() < 0.5 ? pick(U32S) : Math.max(0, c.len + int(9) - 4), c.off);
        break;
      case 3: // a command's number
        if (c) s.writeUInt16LE(rnd() < 0.5 ? pick(U16S) : int(30), c.off + 4);
        break;
      case 4:
      case 5: { // an attribute's type or length
        if (!c) break;
        const attrs = frameAttrs(s, c.off, c.len, version);
        if (!attrs.length) break;
        const a = pick(attrs);
        const at = a + (int(2) * 2);
        if (at + 2 <= c.off + 10 + c.len) s.writeUInt16LE(rnd() < 0.5 ? pick(U16S) : int(64), at);
        break;
      }
      case 6: // truncate
        s = s.subarray(0, int(s.length + 1));
        break;
      case 7: { // delete a range
        const i = int(s.length);
        s = Buffer.concat([s.subarray(0, i), s.subarray(Math.min(s.length, i + 1 + int(16)))]);
        break;
      }
      case 8: { // insert random bytes
        const i = int(s.length);
        const ins = Buffer.from(Array.from({ length: 1 + int(12) }, () => int(256)));
        s = Buffer.concat([s.subarray(0, i), ins, s.subarray(i)]);
        break;
      }
      case 9: // drop a command
        if (c) s = Buffer.concat([s.subarray(0, c.off), s.subarray(c.off + 10 + c.len)]);
        break;
      case 10: // repeat a command
        if (c) s = Buffer.concat([s.subarray(0, c.off + 10 + c.len), s.subarray(c.off, c.off + 10 + c.len), s.subarray(c.off + 10 + c.len)]);
        break;
      case 11: { // swap two commands
        if (cmds.length < 2) break;
        let [x, y] = [pick(cmds), pick(cmds)];
        if (x.off === y.off) break;
        if (x.off > y.off) [x, y] = [y, x];
        const xe = x.off + 10 + x.len;
        const ye = y.off + 10 + y.len;
        s = Buffer.concat([s.subarray(0, x.off), s.subarray(y.off, ye), s.subarray(xe, y.off), s.subarray(x.off, xe), s.subarray(ye)]);
        break;
      }
      case 12: // the stream version
        if (s.length >= 17) s.writeUInt32LE(pick([0, 1, 2, 3, 4, 0xffffffff]), 13);
        break;
      case 13: { // a random u32 anywhere
        const i = int(Math.max(1, s.length - 4));
        if (i + 4 <= s.length) s.writeUInt32LE(pick(U32S), i);
        break;
      }
    }
  }
  if (rnd() < 0.9) fixCrcs(s);
  return s;
}

/** The seed of a fuzz run: FUZZ_SEED from the environment, else a fresh one. */
export function fuzzSeed(): number {
  const env = process.env.FUZZ_SEED;
  return env !== undefined && env !== '' ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
}
