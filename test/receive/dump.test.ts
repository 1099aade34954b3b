/**
 * `receive --dump` against what btrfs-progs 6.2 printed for the kernel-made
 * streams in native-fixtures/streams (stored, so no progs is needed here),
 * the line format in isolation, and the `tsbtrfs receive` command itself.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CommandBuilder, SEND_CMD, SEND_ATTR, encodeStreamHeader, bufferChunks } from '../../src/format/send-stream.js';
import { dumpSendStream, dumpSendStreamToBuffer, escapeDumpPath, formatDumpTime } from '../../src/receive/dump.js';
import { BtrfsError } from '../../src/util/errors.js';
import { builtPath } from '../helpers/fixtures.js';
import { STREAM_DIR, loadStream } from './hostile-mutate.js';

const CLI = builtPath('src/cli/main.js');
const A = SEND_ATTR;
const C = SEND_CMD;

interface Out { code: number | null; stdout: Buffer; stderr: string }

function tsbtrfs(args: string[], input?: Buffer, env: NodeJS.ProcessEnv = {}): Promise<Out> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TZ: 'UTC', ...env } });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
    p.stdin.on('error', () => undefined);
    p.stdin.end(input);
  });
}

const fixtures = readdirSync(STREAM_DIR).filter((f) => f.endsWith('.stream.gz')).map((f) => f.replace(/\.stream\.gz$/, '')).sort();

describe('receive --dump', function () {
  this.timeout(120_000);

  it('has the fixture streams', () => {
    expect(fixtures).to.include.members(['v1-full', 'v1-incremental', 'v2-full', 'v2-compressed', 'v1-no-data', 'v1-clone-source']);
  });

  for (const name of fixtures) {
    it(`prints exactly what btrfs receive --dump printed for ${name}`, async () => {
      const want = readFileSync(path.join(STREAM_DIR, `${name}.dump.txt`));
      const got = await dumpSendStreamToBuffer(loadStream(name), { timeZone: 'utc' });
      if (!got.equals(want)) {
        const g = got.toString('latin1').split('\n');
        const w = want.toString('latin1').split('\n');
        const i = g.findIndex((l, k) => l !== w[k]);
        expect(g[i], `first difference, line ${i + 1}`).to.equal(w[i]);
      }
      expect(got.equals(want)).to.equal(true);
    });
  }

  it('escapes paths as progs does: named escapes, "\\ ", "\\\\", octal for the rest', () => {
    const e = (b: Buffer | string) => escapeDumpPath(Buffer.isBuffer(b) ? b : Buffer.from(b, 'latin1')).toString('latin1');
    expect(e('plain/path-1.txt')).to.equal('plain/path-1.txt');
    expect(e('a b\\c')).to.equal('a\\ b\\\\c');
    expect(e('\x07\x08\x1b\x0c\n\r\t\x0b')).to.equal('\\a\\b\\e\\f\\n\\r\\t\\v');
    expect(e('\x01\x1f\x7f\x80\xff')).to.equal('\\001\\037\\177\\200\\377');
    expect(e(Buffer.from('é', 'utf8'))).to.equal('\\303\\251');
    expect(e('"\'$`~')).to.equal('"\'$`~');
  });

  it('formats times like glibc strftime("%FT%T%z") of localtime, whole seconds', () => {
    const f = (sec: bigint) => formatDumpTime({ sec, nsec: 999_999_999 }, 'utc');
    expect(f(0n)).to.equal('1970-01-01T00:00:00+0000');
    expect(f(-1n)).to.equal('1969-12-31T23:59:59+0000');
    expect(f(951782400n)).to.equal('2000-02-29T00:00:00+0000');
    expect(f(-62135596800n)).to.equal('1-01-01T00:00:00+0000');
    expect(f(-62167219201n)).to.equal('-1-12-31T23:59:59+0000');
    expect(f(253402300800n)).to.equal('10000-01-01T00:00:00+0000');
    expect(f(67767976233532799n)).to.equal('2147483647-12-31T23:59:59+0000');
    expect(f(67767976233532800n)).to.equal('-2147483648-01-01T00:00:00+0000'); // glibc's int year wraps
    expect(f(-67768040609740800n)).to.equal('-2147481748-01-01T00:00:00+0000');
    for (const bad of [-67768040609740801n, (1n << 63n) - 1n, -(1n << 63n)]) {
      expect(() => f(bad)).to.throw(BtrfsError, /failed to convert time/);
    }
  });

  it('pads paths to 32 columns with at least one space, and counts escapes in the width', async () => {
    const uuid = Buffer.alloc(16, 0xab);
    const s = Buffer.concat([
      encodeStreamHeader(1),
      new CommandBuilder(1).begin(C.SUBVOL).string(A.PATH, 's').uuid(A.UUID, uuid).u64(A.CTRANSID, 9).end(),
      new CommandBuilder(1).begin(C.TRUNCATE).string(A.PATH, 'x'.repeat(27)).u64(A.SIZE, 1).end(),
      new CommandBuilder(1).begin(C.TRUNCATE).string(A.PATH, 'x'.repeat(28)).u64(A.SIZE, 2).end(),
      new CommandBuilder(1).begin(C.TRUNCATE).string(A.PATH, ' '.repeat(14)).u64(A.SIZE, 3).end(),
      new CommandBuilder(1).begin(C.RMDIR).string(A.PATH, 'd/').end(),
      new CommandBuilder(1).begin(C.END).end(),
    ]);
    const out = (await dumpSendStreamToBuffer(s, { timeZone: 'utc' })).toString();
    expect(out.split('\n')).to.deep.equal([
      `${'subvol'.padEnd(16)}${'./s'.padEnd(32)}uuid=abababab-abab-abab-abab-abababababab transid=9`,
      `truncate        ./s/${'x'.repeat(27)} size=1`,
      `truncate        ./s/${'x'.repeat(28)} size=2`,
      `truncate        ./s/${'\\ '.repeat(14)} size=3`,
      'rmdir           ./s/d',
      '',
    ]);
  });

  it('a path reaching PATH_MAX: an error, except in symlink/link/rename, where progs prints only the destination and goes on', async () => {
    const long = 'p/'.repeat(2047) + 'x';
    const s = Buffer.concat([
      encodeStreamHeader(1),
      new CommandBuilder(1).begin(C.SYMLINK).string(A.PATH, long).u64(A.INO, 5).string(A.PATH_LINK, 'a b').end(),
      new CommandBuilder(1).begin(C.LINK).string(A.PATH, long).string(A.PATH_LINK, 'c').end(),
      new CommandBuilder(1).begin(C.UNLINK).string(A.PATH, long).end(),
    ]);
    const warnings: string[] = [];
    const parts: Buffer[] = [];
    try {
      await dumpSendStream(bufferChunks(s), (b) => { parts.push(b); }, { timeZone: 'utc', onWarning: (m) => warnings.push(m) });
      expect.fail('should throw');
    } catch (e) {
      expect((e as BtrfsError).code).to.equal('ENAMETOOLONG');
      expect((e as BtrfsError).message).to.contain('unlink: path invalid');
    }
    expect(Buffer.concat(parts).toString()).to.equal('a\\ b\nc\n');
    expect(warnings).to.have.length(2);
    expect(warnings[0]).to.contain('symlink: path invalid');
  });

  it('prints the lines before an error, then throws', async () => {
    const s = Buffer.concat([
      encodeStreamHeader(1),
      new CommandBuilder(1).begin(C.MKDIR).string(A.PATH, 'a').u64(A.INO, 1).end(),
      new CommandBuilder(1).begin(C.MKDIR).string(A.PATH, 'b').end(),
    ]);
    const parts: Buffer[] = [];
    try {
      await dumpSendStream(bufferChunks(s), (b) => { parts.push(b); }, { timeZone: 'utc' });
      expect.fail('should throw');
    } catch (e) {
      expect((e as BtrfsError).message).to.equal('EINVAL: command #1 mkdir (4) at offset 44: missing attribute ino (3)');
    }
    expect(Buffer.concat(parts).toString()).to.equal('mkdir           ./a\n');
  });

  describe('tsbtrfs receive', () => {
    let tmp: string;
    before(async () => { tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-dump-')); });
    after(async () => { await fsp.rm(tmp, { recursive: true, force: true }); });

    it('--dump -f FILE and --dump from stdin print the progs dump, exit 0', async () => {
      for (const name of ['v1-incremental', 'v2-compressed']) {
        const f = path.join(tmp, `${name}.stream`);
        await fsp.writeFile(f, loadStream(name));
        const want = readFileSync(path.join(STREAM_DIR, `${name}.dump.txt`));
        const a = await tsbtrfs(['receive', '--dump', '-f', f]);
        expect(a.code, a.stderr).to.equal(0);
        expect(a.stdout.equals(want)).to.equal(true);
        const b = await tsbtrfs(['receive', '--dump'], loadStream(name));
        expect(b.code, b.stderr).to.equal(0);
        expect(b.stdout.equals(want)).to.equal(true);
      }
    });

    it('a bad stream: the lines before it, then one error line and exit 1', async () => {
      const s = loadStream('v1-incremental');
      const bad = Buffer.from(s.subarray(0, 5000));
      const r = await tsbtrfs(['receive', '--dump'], bad);
      expect(r.code).to.equal(1);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
      expect(r.stderr).to.match(/^tsbtrfs: EINVAL: command #\d+ \w+ \(\d+\) at offset \d+: truncated/);
      const want = readFileSync(path.join(STREAM_DIR, 'v1-incremental.dump.txt'));
      expect(want.subarray(0, r.stdout.length).equals(r.stdout)).to.equal(true);
      expect(r.stdout.length).to.be.greaterThan(0);
      const missing = await tsbtrfs(['receive', '--dump', '-f', path.join(tmp, 'nope')]);
      expect(missing.code).to.equal(1);
      expect(missing.stderr).to.match(/^tsbtrfs: .*ENOENT/);
      const empty = await tsbtrfs(['receive', '--dump'], Buffer.alloc(0));
      expect(empty.code).to.equal(1);
      expect(empty.stderr).to.equal('tsbtrfs: ENODATA: send stream is empty\n');
    });

    it('usage: --help, a destination with --dump, no mode', async () => {
      const h = await tsbtrfs(['receive', '--help']);
      expect(h.code).to.equal(0);
      expect(h.stdout.toString()).to.match(/Usage: tsbtrfs receive/).and.to.match(/--dump/);
      const both = await tsbtrfs(['receive', '--dump', 'somewhere'], Buffer.alloc(0));
      expect(both.code).to.equal(2);
      expect(both.stderr).to.contain('--dump takes no image or destination');
      const half = await tsbtrfs(['receive', 'disk.img'], Buffer.alloc(0));
      expect(half.code).to.equal(2);
      expect(half.stderr).to.contain('receive needs IMAGE and DESTDIR');
      const none = await tsbtrfs(['receive'], Buffer.alloc(0));
      expect(none.code).to.equal(2);
    });

    it('prints times in the local zone, as progs does (TZ=Asia/Kolkata)', async function () {
      if (!readdirSync('/usr/share/zoneinfo', { withFileTypes: true }).some((d) => d.name === 'Asia')) this.skip();
      const r = await tsbtrfs(['receive', '--dump'], loadStream('v1-incremental'), { TZ: 'Asia/Kolkata' });
      expect(r.code).to.equal(0);
      expect(r.stdout.toString()).to.match(/atime=2000-01-01T05:30:00\+0530/);
    });
  });
});
