/**
 * The send stream codec: constants as the kernel numbers them, every command
 * and attribute through CommandBuilder -> decodeCommand and back, the typed
 * getters, and parseStream over kernel-made fixtures fed in awkward chunks.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  SEND_CMD, SEND_ATTR, SEND_ATTR_KIND, SEND_CMD_MAX, SEND_ATTR_MAX, BTRFS_SEND_C_ENABLE_VERITY, BTRFS_SEND_A_VERITY_SIG_DATA,
  BTRFS_SEND_C_UPDATE_EXTENT, BTRFS_SEND_A_CLONE_LEN, CommandBuilder, encodeStreamHeader, decodeStreamHeader, decodeCommand,
  encodeCommand, parseStream, bufferChunks, getAttr, getU8, getU32, getU64, getUuid, getTimespec, getString, getStringBytes,
  getBytes, sendCmdName, sendAttrName, sendCmdMinVersion, sendAttrMinVersion, type SendCommand,
} from '../../src/format/send-stream.js';
import { sendCrc } from '../../src/util/checksum.js';
import { BtrfsError } from '../../src/util/errors.js';
import { repoRoot } from '../helpers/fixtures.js';

const STREAMS = path.join(repoRoot(), 'native-fixtures', 'streams');

function fixtureStream(name: string): Buffer {
  return gunzipSync(readFileSync(path.join(STREAMS, `${name}.stream.gz`)));
}

function throwsBtrfs(fn: () => unknown, code: string, text?: string | RegExp): BtrfsError {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(BtrfsError);
    expect((e as BtrfsError).code).to.equal(code);
    if (typeof text === 'string') expect((e as BtrfsError).message).to.contain(text);
    else if (text) expect((e as BtrfsError).message).to.match(text);
    return e as BtrfsError;
  }
  throw new Error(`expected BtrfsError ${code}`);
}

async function collect(it: AsyncIterable<{ version: number } | SendCommand>): Promise<Array<{ version: number } | SendCommand>> {
  const out: Array<{ version: number } | SendCommand> = [];
  for await (const x of it) out.push(x);
  return out;
}

/** A value of the right kind for an attribute, different per seed. */
function sample(type: number, seed: number): Buffer {
  const kind = SEND_ATTR_KIND[type]!;
  const b = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (seed * 31 + i * 7) & 0xff));
  switch (kind) {
    case 'u8': return b(1);
    case 'u32': return b(4);
    case 'u64': return b(8);
    case 'uuid': return b(16);
    case 'timespec': return b(12);
    case 'string': return Buffer.from(`name-${seed}/with space/\u00e9`);
    case 'binary': return b(seed % 300);
  }
}

describe('send stream format', () => {
  it('numbers commands and attributes as the kernel does', () => {
    expect(SEND_CMD.SUBVOL).to.equal(1);
    expect(SEND_CMD.END).to.equal(21);
    expect(BTRFS_SEND_C_UPDATE_EXTENT).to.equal(22);
    expect(SEND_CMD.FALLOCATE).to.equal(23);
    expect(SEND_CMD.ENCODED_WRITE).to.equal(25);
    expect(BTRFS_SEND_C_ENABLE_VERITY).to.equal(26);
    expect(SEND_ATTR.PATH).to.equal(15);
    expect(SEND_ATTR.DATA).to.equal(19);
    expect(BTRFS_SEND_A_CLONE_LEN).to.equal(24);
    expect(SEND_ATTR.FALLOCATE_MODE).to.equal(25);
    expect(SEND_ATTR.ENCRYPTION).to.equal(31);
    expect(BTRFS_SEND_A_VERITY_SIG_DATA).to.equal(35);
    expect(SEND_CMD_MAX).to.deep.equal([0, 22, 25, 26]);
    expect(SEND_ATTR_MAX).to.deep.equal([0, 24, 31, 35]);
    expect(sendCmdName(15)).to.equal('write');
    expect(sendCmdName(99)).to.equal('cmd99');
    expect(sendAttrName(18)).to.equal('file_offset');
    expect(sendCmdMinVersion(22)).to.equal(1);
    expect(sendCmdMinVersion(23)).to.equal(2);
    expect(sendCmdMinVersion(26)).to.equal(3);
    expect(sendCmdMinVersion(27)).to.equal(undefined);
    expect(sendAttrMinVersion(31)).to.equal(2);
    expect(sendAttrMinVersion(32)).to.equal(3);
    for (let t = 1; t <= 35; t++) expect(SEND_ATTR_KIND[t], `kind of ${t}`).to.be.a('string');
  });

  it('encodes and decodes the stream header', () => {
    for (const v of [1, 2, 3]) {
      const h = encodeStreamHeader(v);
      expect(h.length).to.equal(17);
      expect(h.subarray(0, 13).toString('latin1')).to.equal('btrfs-stream\0');
      expect(decodeStreamHeader(h)).to.equal(v);
    }
    throwsBtrfs(() => encodeStreamHeader(0), 'EINVAL', 'version 0');
    throwsBtrfs(() => encodeStreamHeader(4), 'EINVAL', 'version 4');
    const h0 = encodeStreamHeader(1);
    h0.writeUInt32LE(0, 13);
    throwsBtrfs(() => decodeStreamHeader(h0), 'EINVAL', 'version 0');
    expect(decodeStreamHeader(h0, 0, { strict: false })).to.equal(0); // as progs reads it
  });

  it('crc is crc32c from 0 over the header with crc zeroed and the payload', () => {
    const c = new CommandBuilder(1).begin(SEND_CMD.MKDIR).string(SEND_ATTR.PATH, 'dir').u64(SEND_ATTR.INO, 257n).end();
    expect(c.readUInt32LE(0)).to.equal(c.length - 10);
    expect(c.readUInt16LE(4)).to.equal(SEND_CMD.MKDIR);
    const z = Buffer.from(c);
    z.writeUInt32LE(0, 6);
    expect(c.readUInt32LE(6)).to.equal(sendCrc(z));
    // TLV layout: type, len, value
    expect(c.readUInt16LE(10)).to.equal(SEND_ATTR.PATH);
    expect(c.readUInt16LE(12)).to.equal(3);
    expect(c.subarray(14, 17).toString()).to.equal('dir');
    expect(c.readUInt16LE(17)).to.equal(SEND_ATTR.INO);
    expect(c.readUInt16LE(19)).to.equal(8);
    expect(c.readBigUInt64LE(21)).to.equal(257n);
  });

  it('round-trips every command with every attribute its version has, in versions 1, 2 and 3', () => {
    for (const version of [1, 2, 3]) {
      for (let cmd = 1; cmd <= SEND_CMD_MAX[version]!; cmd++) {
        const b = new CommandBuilder(version).begin(cmd);
        const want: Array<{ type: number; value: Buffer }> = [];
        for (let type = 1; type <= SEND_ATTR_MAX[version]!; type++) {
          if (type === SEND_ATTR.DATA) continue; // last, below
          const value = sample(type, cmd * 100 + type);
          b.bytes(type, value);
          want.push({ type, value });
        }
        const data = sample(SEND_ATTR.DATA, cmd);
        // strict decoding allows unlengthed DATA only in write/encoded_write
        const withData = version === 1 || cmd === SEND_CMD.WRITE || cmd === SEND_CMD.ENCODED_WRITE;
        if (withData) {
          b.data(SEND_ATTR.DATA, data);
          want.push({ type: SEND_ATTR.DATA, value: data });
        }
        const bytes = b.end();
        const { command, next } = decodeCommand(bytes, 0, version);
        expect(next).to.equal(bytes.length);
        expect(command.cmd).to.equal(cmd);
        expect(command.size).to.equal(bytes.length);
        expect(command.attrs.map((a) => a.type)).to.deep.equal(want.map((a) => a.type));
        command.attrs.forEach((a, i) => expect(a.value.equals(want[i]!.value), `v${version} cmd ${cmd} attr ${a.type}`).to.equal(true));
        expect(encodeCommand(command, version).equals(bytes), `re-encode v${version} cmd ${cmd}`).to.equal(true);
      }
    }
  });

  it('puts DATA without a length in version 2+, and refuses attributes after it', () => {
    const data = Buffer.alloc(70000, 0xab); // more than a u16 length could say
    const c = new CommandBuilder(2).begin(SEND_CMD.WRITE).string(SEND_ATTR.PATH, 'f').u64(SEND_ATTR.FILE_OFFSET, 4096n).data(SEND_ATTR.DATA, data).end();
    expect(c.length).to.equal(10 + (4 + 1) + (4 + 8) + 2 + 70000);
    const { command } = decodeCommand(c, 0, 2);
    expect(getBytes(command, SEND_ATTR.DATA).equals(data)).to.equal(true);
    const b = new CommandBuilder(2).begin(SEND_CMD.WRITE).data(SEND_ATTR.DATA, Buffer.alloc(1));
    throwsBtrfs(() => b.u64(SEND_ATTR.FILE_OFFSET, 0), 'EINVAL', 'must be last');
    // version 1: lengthed, and a whole command fits 64 KiB
    const v1 = new CommandBuilder(1).begin(SEND_CMD.WRITE).string(SEND_ATTR.PATH, 'f').data(SEND_ATTR.DATA, Buffer.alloc(10)).end();
    expect(v1.readUInt16LE(10 + 5 + 2)).to.equal(10);
    throwsBtrfs(() => new CommandBuilder(1).begin(SEND_CMD.WRITE).data(SEND_ATTR.DATA, Buffer.alloc(70000)), 'EINVAL', 'longer than 65535');
    const big = new CommandBuilder(1).begin(SEND_CMD.WRITE);
    for (let i = 0; i < 2; i++) big.bytes(SEND_ATTR.DATA, Buffer.alloc(40000));
    throwsBtrfs(() => big.end(), 'EINVAL', 'version 1 limit');
  });

  it('checks builder values', () => {
    const b = new CommandBuilder(2).begin(SEND_CMD.CHOWN);
    throwsBtrfs(() => b.u64(SEND_ATTR.UID, -1n), 'EINVAL', 'not a u64');
    throwsBtrfs(() => b.u64(SEND_ATTR.UID, 1n << 64n), 'EINVAL', 'not a u64');
    throwsBtrfs(() => b.u64(SEND_ATTR.UID, 1.5), 'EINVAL', 'not a u64');
    throwsBtrfs(() => b.u32(SEND_ATTR.FALLOCATE_MODE, 2 ** 32), 'EINVAL', 'not a u32');
    throwsBtrfs(() => b.u8(SEND_ATTR.VERITY_ALGORITHM, 256), 'EINVAL', 'not a u8');
    throwsBtrfs(() => b.uuid(SEND_ATTR.UUID, Buffer.alloc(15)), 'EINVAL', '16 bytes');
    throwsBtrfs(() => b.timespec(SEND_ATTR.ATIME, { sec: 0n, nsec: -1 }), 'EINVAL', 'nanoseconds');
    throwsBtrfs(() => new CommandBuilder(2).u64(SEND_ATTR.UID, 0), 'EINVAL', 'begin()');
    throwsBtrfs(() => new CommandBuilder(2).end(), 'EINVAL', 'begin()');
    throwsBtrfs(() => new CommandBuilder(4), 'EINVAL', 'version 4');
    expect(b.u64(SEND_ATTR.UID, 0xffff_ffff_ffff_ffffn).u64(SEND_ATTR.GID, 7).size).to.equal(24);
    // after end() the builder is reusable
    const reuse = new CommandBuilder(1);
    const one = reuse.begin(SEND_CMD.RMDIR).string(SEND_ATTR.PATH, 'a').end();
    const two = reuse.begin(SEND_CMD.RMDIR).string(SEND_ATTR.PATH, 'a').end();
    expect(one.equals(two)).to.equal(true);
  });

  it('typed getters read values and name the command and attribute when one is missing or malformed', () => {
    const uuid = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const bytes = new CommandBuilder(3).begin(SEND_CMD.UTIMES)
      .string(SEND_ATTR.PATH, Buffer.from([0x66, 0xff]))
      .timespec(SEND_ATTR.ATIME, { sec: -1n, nsec: 999_999_999 })
      .timespec(SEND_ATTR.MTIME, { sec: 0xffff_ffff_ffffn, nsec: 0 })
      .uuid(SEND_ATTR.UUID, uuid)
      .u32(SEND_ATTR.VERITY_BLOCK_SIZE, 4096)
      .u8(SEND_ATTR.VERITY_ALGORITHM, 2)
      .u64(SEND_ATTR.SIZE, 12345678901234n)
      .end();
    const c = decodeCommand(bytes, 0, 3, { base: 1000, index: 7 }).command;
    expect(c.offset).to.equal(1000);
    expect(getTimespec(c, SEND_ATTR.ATIME)).to.deep.equal({ sec: -1n, nsec: 999_999_999 });
    expect(getTimespec(c, SEND_ATTR.MTIME).sec).to.equal(0xffff_ffff_ffffn);
    expect(getUuid(c, SEND_ATTR.UUID).equals(uuid)).to.equal(true);
    expect(getU32(c, SEND_ATTR.VERITY_BLOCK_SIZE)).to.equal(4096);
    expect(getU8(c, SEND_ATTR.VERITY_ALGORITHM)).to.equal(2);
    expect(getU64(c, SEND_ATTR.SIZE)).to.equal(12345678901234n);
    expect(getStringBytes(c, SEND_ATTR.PATH).equals(Buffer.from([0x66, 0xff]))).to.equal(true);
    expect(getString(c, SEND_ATTR.PATH)).to.equal('f\ufffd');
    const e = throwsBtrfs(() => getU64(c, SEND_ATTR.CTRANSID), 'EINVAL', 'missing attribute ctransid (2)');
    expect(e.message).to.contain('command #7 utimes (20) at offset 1000');
    throwsBtrfs(() => getU64(c, SEND_ATTR.VERITY_BLOCK_SIZE), 'EINVAL', 'has 4 bytes, a u64 has 8');
    throwsBtrfs(() => getUuid(c, SEND_ATTR.SIZE), 'EINVAL', 'a uuid has 16');
    throwsBtrfs(() => getTimespec(c, SEND_ATTR.SIZE), 'EINVAL', 'a timespec has 12');
    expect(getAttr(c, SEND_ATTR.CTIME)).to.equal(undefined);
  });

  it('the last of a repeated attribute wins when not strict (as progs reads it); strict refuses it', () => {
    const bytes = new CommandBuilder(1).begin(SEND_CMD.TRUNCATE).string(SEND_ATTR.PATH, 'a').u64(SEND_ATTR.SIZE, 1).u64(SEND_ATTR.SIZE, 2).end();
    expect(getU64(decodeCommand(bytes, 0, 1, { strict: false }).command, SEND_ATTR.SIZE)).to.equal(2n);
    throwsBtrfs(() => decodeCommand(bytes, 0, 1), 'EINVAL', 'appears twice');
  });

  it('decodes commands one after another in a buffer', () => {
    const cmds = [
      new CommandBuilder(1).begin(SEND_CMD.MKDIR).string(SEND_ATTR.PATH, 'a').u64(SEND_ATTR.INO, 1).end(),
      new CommandBuilder(1).begin(SEND_CMD.RMDIR).string(SEND_ATTR.PATH, 'a').end(),
      new CommandBuilder(1).begin(SEND_CMD.END).end(),
    ];
    const buf = Buffer.concat(cmds);
    let off = 0;
    const seen: number[] = [];
    while (off < buf.length) {
      const { command, next } = decodeCommand(buf, off, 1);
      seen.push(command.cmd);
      expect(command.offset).to.equal(off);
      off = next;
    }
    expect(seen).to.deep.equal([SEND_CMD.MKDIR, SEND_CMD.RMDIR, SEND_CMD.END]);
  });

  for (const name of ['v1-full', 'v1-incremental', 'v2-full', 'v2-compressed', 'v1-two-subvols', 'v1-two-subvols-e']) {
    it(`parses the kernel's ${name} stream in any chunking and re-encodes it byte for byte`, async function () {
      const raw = fixtureStream(name);
      const manifest = JSON.parse(readFileSync(path.join(STREAMS, `${name}.json`), 'utf8')) as { version: number; streams: number; commands: Record<string, number> };
      const all = await collect(parseStream(bufferChunks(raw, raw.length), { multiStream: true }));
      const versions = all.filter((x): x is { version: number } => !('cmd' in x));
      const cmds = all.filter((x): x is SendCommand => 'cmd' in x);
      expect(versions.length).to.equal(manifest.streams);
      expect(versions[0]!.version).to.equal(manifest.version);
      const counts: Record<string, number> = {};
      for (const c of cmds) counts[sendCmdName(c.cmd)] = (counts[sendCmdName(c.cmd)] ?? 0) + 1;
      expect(counts).to.deep.equal(manifest.commands);
      // re-encoding gives the kernel's bytes back
      const again = Buffer.concat(all.map((x) => ('cmd' in x ? encodeCommand(x, manifest.version) : encodeStreamHeader(x.version))));
      expect(again.equals(raw)).to.equal(true);
      // the same commands whatever the chunk sizes, 1 byte included (on a prefix, to keep it quick)
      for (const size of [1, 7, 4096, 65537]) {
        const src = size === 1 ? raw.subarray(0, 20000) : raw;
        const it = parseStream(bufferChunks(src, size), { multiStream: true });
        let n = 0;
        try {
          for await (const x of it) {
            if ('cmd' in x) {
              expect(x.offset).to.equal(cmds[n]!.offset);
              expect(x.size).to.equal(cmds[n]!.size);
              n++;
            }
          }
          if (size !== 1) expect(n).to.equal(cmds.length);
        } catch (e) {
          // the 20000-byte prefix ends mid-command
          expect(size).to.equal(1);
          expect((e as BtrfsError).code).to.equal('EINVAL');
          expect(n).to.be.greaterThan(10);
        }
      }
    });
  }

  it('stops after END unless multiStream, without reading further', async () => {
    const raw = fixtureStream('v1-two-subvols');
    let pulled = 0;
    async function* counting(): AsyncGenerator<Buffer> {
      for await (const c of bufferChunks(raw, 4096)) {
        pulled += c.length;
        yield c;
      }
    }
    const one = await collect(parseStream(counting()));
    expect(one.filter((x) => !('cmd' in x))).to.have.length(1);
    const last = one[one.length - 1] as SendCommand;
    expect(last.cmd).to.equal(SEND_CMD.END);
    expect(pulled).to.be.lessThan(raw.length);
    const both = await collect(parseStream(bufferChunks(raw), { multiStream: true }));
    expect(both.filter((x) => !('cmd' in x))).to.have.length(2);
  });

  it('bounds memory: a command larger than maxCommandSize is refused before it is buffered', async () => {
    const big = new CommandBuilder(2).begin(SEND_CMD.WRITE).string(SEND_ATTR.PATH, 'f').u64(SEND_ATTR.FILE_OFFSET, 0).data(SEND_ATTR.DATA, Buffer.alloc(100_000)).end();
    const s = Buffer.concat([encodeStreamHeader(2), big, new CommandBuilder(2).begin(SEND_CMD.END).end()]);
    const ok = await collect(parseStream(bufferChunks(s)));
    expect(ok).to.have.length(3);
    try {
      await collect(parseStream(bufferChunks(s), { maxCommandSize: 65536 }));
      expect.fail('should refuse');
    } catch (e) {
      expect((e as BtrfsError).code).to.equal('EINVAL');
      expect((e as BtrfsError).message).to.match(/command #0 write \(15\) at offset 17: length 100019 is over the limit of 65536/);
    }
  });
});
