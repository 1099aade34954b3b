/**
 * Decompression against extents the kernel itself wrote (see
 * test/data/compress/make-vectors.py), plus damaged and hostile inputs.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { decompressExtent, zlibDecompress, lzoDecompress, zstdDecompress, lzo1xDecompress, LzoError } from '../../src/util/compress/index.js';
import { BtrfsError } from '../../src/util/errors.js';
import { mulberry32 } from '../../src/util/random.js';

const DATA = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'data', 'compress');

interface Vector {
  file: string; mount: string; type: number; kind: 'regular' | 'inline'; source: string;
  fileOffset: number; compressedLen: number; ramBytes: number; sectorsize: number; sha256: string;
}
const index = JSON.parse(fs.readFileSync(path.join(DATA, 'index.json'), 'utf8')) as { kernel: string; vectors: Vector[] };
const load = (v: Vector): Buffer => zlib.gunzipSync(fs.readFileSync(path.join(DATA, v.file)));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const TYPE_NAME: Record<number, string> = { 1: 'zlib', 2: 'lzo', 3: 'zstd' };
/** Length without the zero sector padding after the stream. */
const streamLength = (b: Uint8Array): number => {
  let n = b.length;
  while (n > 0 && b[n - 1] === 0) n--;
  return n;
};

function expectEIO(f: () => unknown, what = ''): BtrfsError {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, `expected a BtrfsError ${what}`).to.be.instanceOf(BtrfsError);
  expect((err as BtrfsError).code, (err as BtrfsError).message).to.equal('EIO');
  return err as BtrfsError;
}

/** Either decodes to exactly outLen bytes or throws BtrfsError; anything else fails the test. */
function decodesOrEIO(type: number, data: Uint8Array, outLen: number, opts?: { inline?: boolean }): Buffer | undefined {
  try {
    const out = decompressExtent(type, data, outLen, 4096, opts);
    expect(out.length).to.equal(outLen);
    return out;
  } catch (e) {
    if (!(e instanceof BtrfsError)) throw e;
    expect(e.code).to.equal('EIO');
    return undefined;
  }
}

const rng = mulberry32;

function lzoFrame(segments: Uint8Array[], sectorsize = 4096): Buffer {
  const parts: number[] = [0, 0, 0, 0];
  for (const s of segments) {
    const left = sectorsize - (parts.length % sectorsize);
    if (left < 4) for (let i = 0; i < left; i++) parts.push(0);
    parts.push(s.length & 255, (s.length >> 8) & 255, (s.length >> 16) & 255, s.length >>> 24, ...s);
  }
  const b = Buffer.from(parts);
  b.writeUInt32LE(b.length, 0);
  return b;
}

describe('util/compress', () => {
  describe(`kernel-written vectors (${index.kernel})`, () => {
    it('cover every algorithm, inline and regular extents, and multi-sector extents', () => {
      for (const t of [1, 2, 3]) {
        expect(index.vectors.some((v) => v.type === t && v.kind === 'inline'), `${TYPE_NAME[t]} inline`).to.equal(true);
        expect(index.vectors.some((v) => v.type === t && v.kind === 'regular' && v.ramBytes === 131072), `${TYPE_NAME[t]} 128K`).to.equal(true);
      }
    });
    for (const v of index.vectors) {
      it(`${v.mount} ${v.kind} ${v.source}@${v.fileOffset} (${v.compressedLen} -> ${v.ramBytes})`, () => {
        const raw = load(v);
        expect(raw.length).to.equal(v.compressedLen);
        const out = decompressExtent(v.type, raw, v.ramBytes, v.sectorsize, { inline: v.kind === 'inline' });
        expect(out.length).to.equal(v.ramBytes);
        expect(sha(out)).to.equal(v.sha256);
        if (v.kind === 'inline') expect(sha(decompressExtent(v.type, raw, v.ramBytes, v.sectorsize))).to.equal(v.sha256);
      });
    }

    it('lzo vectors include a segment header pushed to the next sector', () => {
      // Re-walk the framing to prove the padding rule is exercised by real data.
      let padded = 0;
      for (const v of index.vectors.filter((x) => x.type === 2 && x.kind === 'regular')) {
        const raw = load(v);
        const total = raw.readUInt32LE(0);
        let cur = 4;
        while (cur < total) {
          cur += 4 + raw.readUInt32LE(cur);
          const left = 4096 - (cur % 4096);
          if (left < 4) { padded++; cur += left; }
        }
      }
      expect(padded).to.be.greaterThan(0);
    });

    it('never returns more than outLen, and stops early without complaint', () => {
      for (const v of index.vectors.filter((x) => x.kind === 'regular')) {
        const raw = load(v);
        const full = decompressExtent(v.type, raw, v.ramBytes, 4096);
        for (const n of [0, 1, 4095, 4096, 70000]) {
          if (n > v.ramBytes) continue;
          const part = decompressExtent(v.type, raw, n, 4096);
          expect(part.equals(full.subarray(0, n)), `${v.file} prefix ${n}`).to.equal(true);
        }
      }
    });

    it('regular extents: a stream that ends before outLen is zero-filled; inline: EIO', () => {
      for (const v of index.vectors.filter((x) => x.source === 'tail-12305.txt' || x.source === 'inline-200.txt')) {
        const raw = load(v);
        const want = decompressExtent(v.type, raw, v.ramBytes, 4096);
        if (v.ramBytes + 4096 > 131072) continue;
        const longer = decompressExtent(v.type, raw, v.ramBytes + 4096, 4096);
        expect(longer.subarray(0, v.ramBytes).equals(want)).to.equal(true);
        expect(longer.subarray(v.ramBytes).every((b) => b === 0)).to.equal(true);
        if (v.kind === 'inline') expectEIO(() => decompressExtent(v.type, raw, v.ramBytes + 1, 4096, { inline: true }));
      }
    });

    it('tolerates trailing garbage after the stream (zlib, zstd) and sector padding (all)', () => {
      for (const v of index.vectors.filter((x) => x.kind === 'regular' && x.type !== 2)) {
        const raw = Buffer.concat([load(v), Buffer.alloc(100, 0xa5)]);
        expect(sha(decompressExtent(v.type, raw, v.ramBytes, 4096)), v.file).to.equal(v.sha256);
      }
    });
  });

  describe('damaged input', () => {
    it('truncated streams are EIO', () => {
      for (const v of index.vectors) {
        const raw = load(v);
        // Cut well inside the compressed stream (sector padding excluded).
        const cut = raw.subarray(0, Math.floor(Math.min(streamLength(raw), 900) / 3));
        if (v.type === 2 && v.kind === 'regular') {
          // LZO's header states the length; cutting it off is caught by the framing.
          expectEIO(() => decompressExtent(v.type, cut, v.ramBytes, 4096), v.file);
          continue;
        }
        expectEIO(() => decompressExtent(v.type, cut, v.ramBytes, 4096, { inline: v.kind === 'inline' }), v.file);
      }
    });

    it('corrupted headers are EIO', () => {
      for (const v of index.vectors) {
        const raw = Buffer.from(load(v));
        raw[0] ^= 0xff;
        raw[1] ^= 0x5a;
        expectEIO(() => decompressExtent(v.type, raw, v.ramBytes, 4096, { inline: v.kind === 'inline' }), v.file);
      }
    });

    it('bit flips never crash or overrun (and usually fail)', function () {
      this.timeout(120000);
      const seed = Number(process.env.COMPRESS_SEED ?? Date.now() % 1e9);
      console.log(`      bit-flip seed ${seed} (COMPRESS_SEED=${seed} to replay)`);
      const r = rng(seed);
      let failed = 0, total = 0;
      for (const v of index.vectors) {
        const raw = load(v);
        const streamLen = Math.min(streamLength(raw), 4096);
        for (let k = 0; k < 12; k++) {
          const b = Buffer.from(raw);
          const pos = Math.floor(r() * streamLen);
          b[pos] ^= 1 << Math.floor(r() * 8);
          total++;
          if (decodesOrEIO(v.type, b, v.ramBytes, { inline: v.kind === 'inline' }) === undefined) failed++;
        }
      }
      console.log(`      ${failed} of ${total} flips detected`);
      // zlib is checked without adler32 and lzo has no checksum (as in the
      // kernel; btrfs' data checksums catch those), so many flips decode.
      expect(failed).to.be.greaterThan(total / 5);
    });

    it('rejects bad arguments and unknown types', () => {
      expect(() => decompressExtent(1, Buffer.alloc(10), -1, 4096)).to.throw(BtrfsError);
      expect(() => decompressExtent(1, Buffer.alloc(10), 10, 1000)).to.throw(BtrfsError);
      expectEIO(() => decompressExtent(4, Buffer.alloc(10), 10, 4096));
      expectEIO(() => decompressExtent(0, Buffer.alloc(10), 10, 4096));
      // ram_bytes from a hostile item must not become a huge allocation.
      expectEIO(() => decompressExtent(3, Buffer.alloc(10), 2 ** 40, 4096));
      expectEIO(() => decompressExtent(1, Buffer.alloc(10), 8192, 4096, { inline: true }));
    });
  });

  describe('zlib', () => {
    const plain = Buffer.from('btrfs zlib '.repeat(2000));
    it('ignores the adler32 trailer, like the kernel', () => {
      const z = Buffer.from(zlib.deflateSync(plain));
      z.writeUInt32BE(0xdeadbeef, z.length - 4);
      expect(zlibDecompress(z, plain.length).equals(plain)).to.equal(true);
    });
    it('accepts a smaller declared window', () => {
      const z = zlib.deflateSync(plain, { windowBits: 9 });
      expect(zlibDecompress(z, plain.length).equals(plain)).to.equal(true);
    });
    it('needs the zlib header; raw deflate or gzip is EIO', () => {
      expectEIO(() => zlibDecompress(zlib.deflateRawSync(plain), plain.length));
      expectEIO(() => zlibDecompress(zlib.gzipSync(plain), plain.length));
      expectEIO(() => zlibDecompress(Buffer.from([0x78, 0xbb, 0, 0]), 10)); // FDICT
    });
    it('a stream longer than outLen yields its first outLen bytes', () => {
      const z = zlib.deflateSync(plain);
      expect(zlibDecompress(z, 100).equals(plain.subarray(0, 100))).to.equal(true);
      // and that holds even when the rest of the stream is missing
      expect(zlibDecompress(z.subarray(0, z.length - 8), 100).equals(plain.subarray(0, 100))).to.equal(true);
    });
    it('a bomb is bounded by outLen', () => {
      const z = zlib.deflateSync(Buffer.alloc(50 * 1024 * 1024));
      expect(zlibDecompress(z, 131072).every((b) => b === 0)).to.equal(true);
    });
  });

  describe('lzo1x', () => {
    const dst = () => new Uint8Array(4096 + 4096 / 16 + 67);
    it('decodes hand-assembled streams', () => {
      // literal run "abcd", match distance 4 length 4 (M2: 01L DDD SS, H), end.
      const s = Uint8Array.from([17 + 4, 0x61, 0x62, 0x63, 0x64, 0x40 | (1 << 5) | (3 << 2), 0, 0x11, 0, 0]);
      const d = dst();
      const n = lzo1xDecompress(s, d);
      expect(Buffer.from(d.subarray(0, n)).toString()).to.equal('abcdabcd');
    });
    it('empty stream is just the end marker', () => {
      expect(lzo1xDecompress(Uint8Array.from([0x11, 0, 0]), dst())).to.equal(0);
    });
    const bad: Array<[string, number[]]> = [
      ['match before the start of the output', [17 + 1, 0x61, 0x40 | (7 << 2), 5, 0x11, 0, 0]],
      ['first instruction a match with an empty dictionary', [0x20 | 3, 0x04, 0x00, 0x11, 0, 0]],
      ['literal run past the input', [17 + 200, 1, 2, 3]],
      ['huge extended literal length', [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]],
      ['run past the output', [17 + 4, 1, 2, 3, 4, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0x11, 0, 0]],
      ['missing end marker', [17 + 4, 1, 2, 3, 4]],
      ['input after the end marker', [0x11, 0, 0, 0]],
      ['malformed end marker', [0x12, 0, 0]],
      ['unknown bitstream version', [17, 2, 0x11, 0, 0]],
      ['empty input', []],
    ];
    for (const [name, bytes] of bad) {
      it(`rejects ${name}`, () => {
        expect(() => lzo1xDecompress(Uint8Array.from(bytes), dst())).to.throw(LzoError);
      });
    }
    it('accepts the LZO-RLE zero run the kernel decoder knows', () => {
      // version 1, literal "a", then zero run of ((X<<3)|LLL)+4 = (1<<3|2)+4 = 14, end.
      const s = Uint8Array.from([17, 1, 17 + 1, 0x61, 0x10 | 8 | 2, 0xfc, 0xff, 1, 0x11, 0, 0]);
      const d = dst();
      const n = lzo1xDecompress(s, d);
      expect(n).to.equal(15);
      expect(d[0]).to.equal(0x61);
      expect(d.subarray(1, 15).every((b) => b === 0)).to.equal(true);
    });
  });

  describe('lzo framing', () => {
    const seg = (text: string): Uint8Array => Uint8Array.from([17 + text.length, ...Buffer.from(text), 0x11, 0, 0]);
    it('concatenates segments and zero-fills the rest', () => {
      const out = lzoDecompress(lzoFrame([seg('hello '), seg('world')]), 20, 4096);
      expect(out.subarray(0, 11).toString()).to.equal('hello world');
      expect(out.subarray(11).every((b) => b === 0)).to.equal(true);
    });
    it('skips padding when a header would straddle a sector', () => {
      // A 502-byte segment (one long literal run of 18 + 255 + 223 bytes)
      // ends at offset 510 of a 512-byte sector, so the next header moves to 512.
      const s1 = Uint8Array.from([0x00, 0x00, 223, ...Buffer.alloc(496, 0x42), 0x11, 0, 0]);
      expect(s1.length).to.equal(502);
      const f = lzoFrame([s1, seg('xyz')], 512);
      expect(f.readUInt32LE(512)).to.equal(7);
      const out = lzoDecompress(f, 499, 512);
      expect(out.subarray(0, 496).every((b) => b === 0x42)).to.equal(true);
      expect(out.subarray(496).toString()).to.equal('xyz');
      // Without the skip the reader would take the padding as a header.
      const unpadded = Buffer.concat([f.subarray(0, 510), f.subarray(512)]);
      unpadded.writeUInt32LE(unpadded.length, 0);
      expectEIO(() => lzoDecompress(unpadded, 499, 512));
    });
    it('framing errors are EIO', () => {
      const good = lzoFrame([seg('hello')]);
      expectEIO(() => lzoDecompress(good.subarray(0, 3), 5, 4096));
      const big = Buffer.from(good); big.writeUInt32LE(0x7fffffff, 0);
      expectEIO(() => lzoDecompress(big, 5, 4096));
      const hugeSeg = Buffer.from(good); hugeSeg.writeUInt32LE(0xfffffff0, 4);
      expectEIO(() => lzoDecompress(hugeSeg, 5, 4096));
      const pastEnd = Buffer.from(good); pastEnd.writeUInt32LE(good.length, 4);
      expectEIO(() => lzoDecompress(pastEnd, 5, 4096));
      // A whole unused sector after the stated length is refused, as the kernel does.
      expectEIO(() => lzoDecompress(Buffer.concat([good, Buffer.alloc(8192)]), 5, 4096));
      // Inline: both lengths must match the item exactly.
      expect(lzoDecompress(good, 5, 4096, { inline: true }).toString()).to.equal('hello');
      expectEIO(() => lzoDecompress(Buffer.concat([good, Buffer.alloc(1)]), 5, 4096, { inline: true }));
    });
  });

  describe('zstd', () => {
    it('stops at the end of the frame and ignores what follows', () => {
      const v = index.vectors.find((x) => x.type === 3 && x.source === 'inline-200.txt')!;
      const raw = Buffer.concat([load(v), Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff])]);
      expect(sha(zstdDecompress(raw, 200))).to.equal(v.sha256);
    });
    it('finishes the frame hostile to fzstd (18 bytes, 98k sequences of 64 KiB matches) at once', () => {
      const body = [0x00, 255, 0xff, 0xff, 0x54, 0, 1, 52, 0x01];
      const bh = 1 | (2 << 1) | (body.length << 3);
      const frame = Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38, bh & 255, (bh >> 8) & 255, bh >> 16, ...body]);
      const t = Date.now();
      expectEIO(() => zstdDecompress(frame, 131072));
      expect(Date.now() - t).to.be.lessThan(1000);
    });
    it('refuses windows over 128 KiB, dictionaries, skippable frames and reserved bits', () => {
      // window descriptor exponent 8 -> 256 KiB
      expectEIO(() => zstdDecompress(Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x40, 1, 0, 0]), 10));
      // dictionary id 7
      expectEIO(() => zstdDecompress(Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x21, 7, 5, 1, 0, 0]), 10));
      expectEIO(() => zstdDecompress(Uint8Array.from([0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]), 10));
      expectEIO(() => zstdDecompress(Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x08, 0x38, 1, 0, 0]), 10));
    });
    it('raw and RLE blocks, content size and checksum checks', () => {
      // single segment, FCS 1 byte = 6, raw block "abc" then last RLE block 'z' x3
      const raw3 = (3 << 3) | 0;
      const rle3 = (3 << 3) | (1 << 1) | 1;
      const f = Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, 6, raw3, 0, 0, 0x61, 0x62, 0x63, rle3, 0, 0, 0x7a]);
      expect(zstdDecompress(f, 6).toString()).to.equal('abczzz');
      const wrongSize = Uint8Array.from(f); wrongSize[5] = 7;
      expectEIO(() => zstdDecompress(wrongSize, 10));
    });
    it('checks the content checksum when a frame has one', () => {
      const raw3 = (3 << 3) | 0;
      const rle3 = (3 << 3) | (1 << 1) | 1;
      const body = [raw3, 0, 0, 0x61, 0x62, 0x63, rle3, 0, 0, 0x7a];
      const sum = xxh64low('abczzz');
      const f = Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x24, 6, ...body, sum & 255, (sum >> 8) & 255, (sum >> 16) & 255, sum >>> 24]);
      expect(zstdDecompress(f, 6).toString()).to.equal('abczzz');
      const bad = Uint8Array.from(f); bad[bad.length - 1] ^= 1;
      expectEIO(() => zstdDecompress(bad, 6));
    });
  });

  describe('random input', () => {
    it('random bytes never crash, hang or overrun (seeded)', function () {
      this.timeout(120000);
      const seed = Number(process.env.COMPRESS_SEED ?? (Date.now() * 7) % 1e9);
      console.log(`      random-input seed ${seed} (COMPRESS_SEED=${seed} to replay)`);
      const r = rng(seed);
      const byte = () => Math.floor(r() * 256);
      const t0 = Date.now();
      for (let i = 0; i < 3000; i++) {
        const type = 1 + (i % 3);
        const len = 1 + Math.floor(r() * 600);
        const b = new Uint8Array(len);
        for (let j = 0; j < len; j++) b[j] = byte();
        // Give each decoder a plausible start so the fuzz reaches past the first check.
        if (type === 1 && len > 2) { b[0] = 0x78; b[1] = 0x9c; }
        if (type === 3 && len > 5) { b[0] = 0x28; b[1] = 0xb5; b[2] = 0x2f; b[3] = 0xfd; b[4] &= 0xe7; }
        if (type === 2 && len > 8) { b[0] = len & 255; b[1] = len >> 8; b[2] = 0; b[3] = 0; b[4] = (len - 8) & 255; b[5] = (len - 8) >> 8; b[6] = 0; b[7] = 0; }
        const outLen = Math.floor(r() * 4097);
        decodesOrEIO(type, b, outLen, { inline: r() < 0.3 });
      }
      expect(Date.now() - t0).to.be.lessThan(60000);
    });
  });
});

/** Reference xxh64 low word via BigInt, written independently of the decoder's. */
function xxh64low(s: string): number {
  const M = (1n << 64n) - 1n;
  const P1 = 0x9E3779B185EBCA87n, P2 = 0xC2B2AE3D27D4EB4Fn, P3 = 0x165667B19E3779F9n, P4 = 0x85EBCA77C2B2AE63n, P5 = 0x27D4EB2F165667C5n;
  const rot = (x: bigint, r: bigint) => ((x << r) | (x >> (64n - r))) & M;
  const d = Buffer.from(s);
  let h = (P5 + BigInt(d.length)) & M;
  let p = 0;
  for (; p + 4 <= d.length; p += 4) h = (rot(h ^ ((BigInt(d.readUInt32LE(p)) * P1) & M), 23n) * P2 + P3) & M;
  for (; p < d.length; p++) h = (rot(h ^ ((BigInt(d[p]!) * P5) & M), 11n) * P1) & M;
  h ^= h >> 33n; h = (h * P2) & M; h ^= h >> 29n; h = (h * P3) & M; h ^= h >> 32n;
  return Number(h & 0xffffffffn);
}
