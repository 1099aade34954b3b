/**
 * Hostile send streams: each is refused with one clear BtrfsError — never a
 * crash, a hang or an allocation the size of a lying length field — and a
 * seeded fuzz loop over mutated kernel streams holds the parser, the strict
 * checks and the dump to that. FUZZ_SEED=n repeats a run; FUZZ_MS sets its
 * time budget (default 4 s).
 */
import { expect } from 'chai';
import {
  CommandBuilder, SEND_CMD, SEND_ATTR, encodeStreamHeader, decodeCommand, parseStream, bufferChunks, commandCrc,
  type SendCommand,
} from '../../src/format/send-stream.js';
import { readOps, decodeOp } from '../../src/receive/parse.js';
import { dumpSendStream } from '../../src/receive/dump.js';
import { BtrfsError } from '../../src/util/errors.js';
import { mulberry32 } from '../../src/util/random.js';
import { loadStream, mutateStream, fuzzSeed } from './hostile-mutate.js';

const A = SEND_ATTR;
const C = SEND_CMD;
const uuid = Buffer.alloc(16, 0x5a);

function cmd(version: number, c: number, fill: (b: CommandBuilder) => CommandBuilder = (b) => b): Buffer {
  return fill(new CommandBuilder(version).begin(c)).end();
}
const subvol = (v = 1) => cmd(v, C.SUBVOL, (b) => b.string(A.PATH, 'sv').uuid(A.UUID, uuid).u64(A.CTRANSID, 7));
const end = (v = 1) => cmd(v, C.END);
function stream(version: number, ...cmds: Buffer[]): Buffer {
  return Buffer.concat([encodeStreamHeader(version), ...cmds]);
}

async function drain(it: AsyncIterable<unknown>): Promise<number> {
  let n = 0;
  for await (const _ of it) n++;
  return n;
}

/** Runs the strict reader and the dump over `s`; both must refuse it with `code` and `text`. */
async function refused(s: Buffer, code: string, text: string | RegExp, opts: { dumpAccepts?: boolean; maxCommandSize?: number } = {}): Promise<BtrfsError> {
  let err: BtrfsError | undefined;
  try {
    await drain(readOps(bufferChunks(s, 7), { maxCommandSize: opts.maxCommandSize }));
  } catch (e) {
    if (!(e instanceof BtrfsError)) throw e;
    err = e;
  }
  expect(err, 'strict reader should refuse').to.be.instanceOf(BtrfsError);
  expect(err!.code).to.equal(code);
  if (typeof text === 'string') expect(err!.message).to.contain(text);
  else expect(err!.message).to.match(text);
  let dumpErr: unknown;
  try {
    await dumpSendStream(bufferChunks(s, 7), () => undefined, { maxCommandSize: opts.maxCommandSize, timeZone: 'utc' });
  } catch (e) {
    dumpErr = e;
  }
  if (opts.dumpAccepts) expect(dumpErr).to.equal(undefined);
  else expect(dumpErr, 'dump should refuse').to.be.instanceOf(BtrfsError);
  return err!;
}

function withCrc(b: Buffer): Buffer {
  b.writeUInt32LE(commandCrc(b, 0, b.readUInt32LE(0)), 6);
  return b;
}

describe('hostile send streams', function () {
  this.timeout(120_000);

  it('empty: ENODATA', async () => {
    await refused(Buffer.alloc(0), 'ENODATA', 'send stream is empty');
  });

  it('bad magic, short header', async () => {
    const s = stream(1, subvol(), end());
    s.write('BTRFS', 0, 'latin1');
    await refused(s, 'EINVAL', /not a btrfs send stream: bad magic at offset 0/);
    await refused(Buffer.from('btrfs-str'), 'EINVAL', 'truncated send stream header at offset 0: 9 of 17 bytes');
    const noNul = stream(1, subvol(), end());
    noNul[12] = 0x21; // "btrfs-stream!" is not the magic
    await refused(noNul, 'EINVAL', 'bad magic');
  });

  it('unknown versions', async () => {
    for (const v of [4, 0x100, 0xffffffff]) {
      const s = stream(1, subvol(), end());
      s.writeUInt32LE(v, 13);
      await refused(s, 'EINVAL', `send stream version ${v} is not supported`);
    }
    const v0 = stream(1, subvol(), end());
    v0.writeUInt32LE(0, 13);
    await refused(v0, 'EINVAL', 'version 0', { dumpAccepts: true }); // progs reads 0 as 1
  });

  it('bad crc: EIO naming the command and its offset', async () => {
    const bad = subvol();
    bad[bad.length - 1]! ^= 0x01;
    const e = await refused(stream(1, bad, end()), 'EIO', 'command #0 subvol (1) at offset 17: crc mismatch');
    expect(e.message).to.match(/stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}/);
  });

  it('a stream cut anywhere is refused as truncated (or, cut at a command boundary, as missing END)', async () => {
    const full = stream(2, subvol(2), cmd(2, C.WRITE, (b) => b.string(A.PATH, 'f').u64(A.FILE_OFFSET, 0).data(A.DATA, Buffer.alloc(300, 1))), end(2));
    for (let cut = 17; cut < full.length; cut++) {
      const e = await refused(full.subarray(0, cut), 'EINVAL', /truncated|without an END/);
      if (cut === 17) expect(e.message).to.contain('ends at offset 17 without an END command (after 0 commands)');
    }
    await refused(full.subarray(0, 20), 'EINVAL', 'truncated command #0 header at offset 17: 3 of 10 bytes');
  });

  it('length past the end of the buffer (decodeCommand) and of the stream', async () => {
    const c = subvol();
    c.writeUInt32LE(c.readUInt32LE(0) + 100, 0);
    withCrc(c);
    expect(() => decodeCommand(c, 0, 1)).to.throw(BtrfsError, /claims 138 payload bytes, only 38 follow/);
    await refused(stream(1, c), 'EINVAL', 'the stream ends after 38');
    expect(() => decodeCommand(Buffer.alloc(5), 0, 1)).to.throw(BtrfsError, /truncated command header at offset 0: 5 of 10 bytes/);
    expect(() => decodeCommand(subvol(), 1000, 1)).to.throw(BtrfsError, /truncated/);
  });

  it('unknown commands: refused when strict; skipped by the dump, as btrfs receive --dump skips them', async () => {
    for (const n of [0, 27, 99, 0xffff]) {
      await refused(stream(1, subvol(), cmd(1, n, (b) => b.string(A.PATH, 'x')), end()), 'EINVAL', `unknown command ${n} for send stream version 1`, { dumpAccepts: true });
    }
    const warnings: string[] = [];
    const lines: Buffer[] = [];
    await dumpSendStream(bufferChunks(stream(1, subvol(), cmd(1, 99), end())), (b) => { lines.push(b); }, { onWarning: (m) => warnings.push(m) });
    expect(warnings).to.deep.equal(['skipping command #1 cmd99 (99) at offset 65: no such command (btrfs receive --dump skips it too)']);
    // a command from a later protocol version
    await refused(stream(1, subvol(), cmd(1, C.FALLOCATE, (b) => b.string(A.PATH, 'f').u32(A.FALLOCATE_MODE, 0).u64(A.FILE_OFFSET, 0).u64(A.SIZE, 1)), end()),
      'EINVAL', 'unknown command 23 for send stream version 1 (known: 1 to 22)', { dumpAccepts: true });
  });

  it('attribute longer than its command, truncated attribute header, unknown attribute type', async () => {
    const long = cmd(1, C.MKDIR, (b) => b.string(A.PATH, 'dir').u64(A.INO, 1));
    long.writeUInt16LE(200, 12); // PATH claims 200 bytes
    withCrc(long);
    await refused(stream(1, subvol(), long, end()), 'EINVAL', 'command #1 mkdir (4) at offset 65: attribute path (15) at offset 75 claims 200 bytes, only 15 left in the command');
    const odd = Buffer.concat([cmd(1, C.RMDIR, (b) => b.string(A.PATH, 'd')), Buffer.from([0x0f])]);
    odd.writeUInt32LE(odd.readUInt32LE(0) + 1, 0);
    withCrc(odd);
    await refused(stream(1, subvol(), odd, end()), 'EINVAL', 'truncated attribute header at offset');
    const three = Buffer.concat([cmd(1, C.RMDIR, (b) => b.string(A.PATH, 'd')), Buffer.from([0x0f, 0x00, 0x01])]);
    three.writeUInt32LE(three.readUInt32LE(0) + 3, 0);
    withCrc(three);
    await refused(stream(1, subvol(), three, end()), 'EINVAL', 'truncated header of attribute path (15)');
    for (const t of [0, 36, 0xffff]) {
      await refused(stream(1, subvol(), cmd(1, C.RMDIR, (b) => b.string(A.PATH, 'd').bytes(t, Buffer.alloc(2))), end()), 'EINVAL', `unknown attribute type ${t}`);
    }
    // an attribute of a later version, fixed-size values of the wrong size: strict only
    await refused(stream(1, subvol(), cmd(1, C.RMDIR, (b) => b.string(A.PATH, 'd').u32(A.COMPRESSION, 1)), end()), 'EINVAL', 'is not part of send stream version 1', { dumpAccepts: true });
    await refused(stream(1, subvol(), cmd(1, C.RMDIR, (b) => b.string(A.PATH, 'd').bytes(A.INO, Buffer.alloc(4))), end()), 'EINVAL', 'ino (3) at offset 80 has 4 bytes, expected 8', { dumpAccepts: true });
    // ... but a wrong size where the command needs the value is an error for the dump too
    await refused(stream(1, subvol(), cmd(1, C.MKDIR, (b) => b.string(A.PATH, 'd').bytes(A.INO, Buffer.alloc(4))), end()), 'EINVAL', 'has 4 bytes, expected 8');
  });

  it('missing attributes name the command and the attribute', async () => {
    await refused(stream(1, subvol(), cmd(1, C.WRITE, (b) => b.string(A.PATH, 'f').data(A.DATA, Buffer.alloc(1))), end()),
      'EINVAL', 'command #1 write (15) at offset 65: missing attribute file_offset (18)');
    await refused(stream(1, cmd(1, C.SUBVOL, (b) => b.string(A.PATH, 'sv')), end()), 'EINVAL', 'missing attribute uuid (1)');
  });

  it('absurd lengths are refused before anything that size is allocated or read', async () => {
    const before = process.memoryUsage().arrayBuffers;
    let pulled = 0;
    async function* endless(): AsyncGenerator<Buffer> {
      const h = Buffer.concat([encodeStreamHeader(2), subvol(2)]);
      const claim = Buffer.alloc(10);
      claim.writeUInt32LE(0xfffffff0, 0); // a 4 GiB command
      claim.writeUInt16LE(C.WRITE, 4);
      yield Buffer.concat([h, claim]);
      const zeros = Buffer.alloc(1 << 20);
      for (;;) {
        pulled += zeros.length;
        yield zeros;
      }
    }
    try {
      await drain(parseStream(endless()));
      expect.fail('should refuse');
    } catch (e) {
      expect(e).to.be.instanceOf(BtrfsError);
      expect((e as BtrfsError).message).to.contain('command #1 write (15) at offset 65: length 4294967280 is over the limit of 16777216 bytes per command');
    }
    expect(pulled).to.be.lessThan(4 << 20);
    // a claim under the limit on a stream that ends: reads what is there, then refuses
    const s = Buffer.concat([encodeStreamHeader(2), subvol(2)]);
    const claim = Buffer.alloc(10);
    claim.writeUInt32LE(16 << 20, 0);
    claim.writeUInt16LE(C.WRITE, 4);
    await refused(Buffer.concat([s, claim, Buffer.alloc(100)]), 'EINVAL', 'over the limit', { maxCommandSize: 1 << 20 });
    await refused(Buffer.concat([s, claim, Buffer.alloc(100)]), 'EINVAL', 'the stream ends after 100', { maxCommandSize: 64 << 20 });
    expect(process.memoryUsage().arrayBuffers - before).to.be.lessThan(64 << 20);
  });

  it('strict checks of values: paths that could escape, bad modes, times, lengths, order', async () => {
    const S = (c: Buffer) => stream(1, subvol(), c, end());
    const ok = async (s: Buffer) => { await drain(readOps(bufferChunks(s))); };
    const mk = (p: string | Buffer) => cmd(1, C.MKFILE, (b) => b.string(A.PATH, p).u64(A.INO, 300));
    await ok(S(mk('a/b c/\u00e9')));
    for (const [p, why] of [
      ['../etc/passwd', "'..' component"], ['a/../../b', "'..' component"], ['./a', "'.' component"], ['/etc/passwd', 'absolute'],
      ['a//b', 'empty component'], ['a/', 'empty component'], ['', 'path is empty'], [Buffer.from('a\0b'), 'NUL'],
      ['x'.repeat(256), 'component of 256 bytes'],
    ] as Array<[string | Buffer, string]>) {
      await refused(S(mk(p)), 'EINVAL', why, { dumpAccepts: true });
    }
    // progs' dump refuses this one too: the joined path reaches PATH_MAX
    await refused(S(mk(`${'d/'.repeat(2048)}f`)), 'EINVAL', 'longer than PATH_MAX');
    await refused(S(cmd(1, C.RENAME, (b) => b.string(A.PATH, 'a').string(A.PATH_TO, '../x'))), 'EINVAL', "destination path \"../x\" has a '..' component", { dumpAccepts: true });
    await refused(S(cmd(1, C.LINK, (b) => b.string(A.PATH, 'a').string(A.PATH_LINK, '/x'))), 'EINVAL', 'link target "/x" is absolute', { dumpAccepts: true });
    await refused(S(cmd(1, C.CLONE, (b) => b.string(A.PATH, 'a').u64(A.FILE_OFFSET, 0).u64(A.CLONE_LEN, 1).uuid(A.CLONE_UUID, uuid).u64(A.CLONE_CTRANSID, 1).string(A.CLONE_PATH, '../../x').u64(A.CLONE_OFFSET, 0))),
      'EINVAL', 'clone source path', { dumpAccepts: true });
    await refused(stream(1, cmd(1, C.SUBVOL, (b) => b.string(A.PATH, 'a/b').uuid(A.UUID, uuid).u64(A.CTRANSID, 1)), end()), 'EINVAL', "has a '/'", { dumpAccepts: true });
    await refused(S(cmd(1, C.MKNOD, (b) => b.string(A.PATH, 'n').u64(A.INO, 1).u64(A.MODE, 0o100644).u64(A.RDEV, 0))), 'EINVAL', 'not that of a device', { dumpAccepts: true });
    await refused(S(cmd(1, C.CHMOD, (b) => b.string(A.PATH, 'n').u64(A.MODE, 0o104755))), 'EINVAL', 'bits besides permissions', { dumpAccepts: true });
    await refused(S(cmd(1, C.UTIMES, (b) => b.string(A.PATH, '').timespec(A.ATIME, { sec: 0n, nsec: 1e9 }).timespec(A.MTIME, { sec: 0n, nsec: 0 }).timespec(A.CTIME, { sec: 0n, nsec: 0 }))),
      'EINVAL', 'atime has 1000000000 nanoseconds', { dumpAccepts: true });
    await refused(S(cmd(1, C.TRUNCATE, (b) => b.string(A.PATH, 'f').u64(A.SIZE, 1n << 63n))), 'EINVAL', 'past the largest file size', { dumpAccepts: true });
    await refused(S(cmd(1, C.WRITE, (b) => b.string(A.PATH, 'f').u64(A.FILE_OFFSET, (1n << 63n) - 2n).data(A.DATA, Buffer.alloc(4)))), 'EINVAL', 'past the largest file size', { dumpAccepts: true });
    await refused(S(cmd(1, C.SET_XATTR, (b) => b.string(A.PATH, 'f').string(A.XATTR_NAME, '').bytes(A.XATTR_DATA, Buffer.alloc(1)))), 'EINVAL', 'xattr name', { dumpAccepts: true });
    const ew = (fill: (b: CommandBuilder) => CommandBuilder) => stream(2, subvol(2), cmd(2, C.ENCODED_WRITE, (b) => fill(b.string(A.PATH, 'f').u64(A.FILE_OFFSET, 0))), end(2));
    await drain(readOps(bufferChunks(ew((b) => b.u64(A.UNENCODED_FILE_LEN, 4096).u64(A.UNENCODED_LEN, 8192).u64(A.UNENCODED_OFFSET, 4096).u32(A.COMPRESSION, 2).data(A.DATA, Buffer.alloc(10))))));
    await refused(ew((b) => b.u64(A.UNENCODED_FILE_LEN, 8192).u64(A.UNENCODED_LEN, 8192).u64(A.UNENCODED_OFFSET, 4096).data(A.DATA, Buffer.alloc(10))), 'EINVAL', 'inconsistent lengths', { dumpAccepts: true });
    await refused(ew((b) => b.u64(A.UNENCODED_FILE_LEN, 1).u64(A.UNENCODED_LEN, 1).u64(A.UNENCODED_OFFSET, 0).u32(A.COMPRESSION, 8).data(A.DATA, Buffer.alloc(1))), 'EINVAL', 'unknown compression 8', { dumpAccepts: true });
    await refused(ew((b) => b.u64(A.UNENCODED_FILE_LEN, 1).u64(A.UNENCODED_LEN, 1).u64(A.UNENCODED_OFFSET, 0).u32(A.ENCRYPTION, 1).data(A.DATA, Buffer.alloc(1))), 'EINVAL', 'unknown encryption 1', { dumpAccepts: true });
    // DATA without a length outside write/encoded_write swallows the rest of the command: strict refuses it
    await refused(stream(2, subvol(2), cmd(2, C.RMDIR, (b) => b.string(A.PATH, 'd').data(A.DATA, Buffer.alloc(3))), end(2)), 'EINVAL', 'only valid in write and encoded_write', { dumpAccepts: true });
    // order: the first command makes the subvolume
    await refused(stream(1, mk('a'), end()), 'EINVAL', 'must start with a subvol or snapshot command', { dumpAccepts: true });
  });

  it('decodeOp works on a command built in memory, without offsets', () => {
    const c: SendCommand = { cmd: C.CHOWN, attrs: [{ type: A.PATH, value: Buffer.from('f') }, { type: A.UID, value: Buffer.alloc(8) }] };
    expect(() => decodeOp(c)).to.throw(BtrfsError, /^EINVAL: command chown \(19\): missing attribute gid \(7\)$/);
  });

  it('fuzz: mutated kernel streams are read or refused with a BtrfsError, never anything else (seeded)', async function () {
    const seed = fuzzSeed();
    const budget = Number(process.env.FUZZ_MS ?? 4000);
    console.log(`      fuzz seed ${seed} (FUZZ_SEED=${seed} to repeat), budget ${budget} ms`);
    const rnd = mulberry32(seed);
    // small streams, or the first commands of bigger ones, keep each case quick
    const bases = ['v1-incremental', 'v1-no-data', 'v2-incremental', 'v2-compressed', 'v1-full', 'v1-two-subvols-e']
      .map((n) => loadStream(n)).map((s) => s.subarray(0, Math.min(s.length, 40_000)));
    const started = Date.now();
    let cases = 0;
    const outcomes: Record<string, number> = {};
    while (Date.now() - started < budget) {
      const base = bases[Math.floor(rnd() * bases.length)]!;
      const s = mutateStream(base, rnd);
      for (const mode of ['strict', 'dump'] as const) {
        try {
          if (mode === 'strict') await drain(readOps(bufferChunks(s, 1 + Math.floor(rnd() * 9000)), { multiStream: rnd() < 0.5, maxCommandSize: 1 << 20 }));
          else await dumpSendStream(bufferChunks(s, 4096), () => undefined, { timeZone: 'utc', maxCommandSize: 1 << 20 });
          outcomes[`${mode}:ok`] = (outcomes[`${mode}:ok`] ?? 0) + 1;
        } catch (e) {
          if (!(e instanceof BtrfsError)) {
            throw new Error(`case ${cases} (seed ${seed}, ${mode}): not a BtrfsError: ${(e as Error).stack}`);
          }
          expect(e.message, `case ${cases} (seed ${seed})`).to.match(/^E[A-Z]+: /);
          outcomes[`${mode}:${e.code}`] = (outcomes[`${mode}:${e.code}`] ?? 0) + 1;
        }
      }
      cases++;
    }
    console.log(`      ${cases} mutated streams: ${JSON.stringify(outcomes)}`);
    expect(cases).to.be.greaterThan(50);
  });
});
