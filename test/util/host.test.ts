import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as host from '../../src/util/host.js';
import { BtrfsError } from '../../src/util/errors.js';

function throws(fn: () => unknown, code: string): BtrfsError {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(BtrfsError);
    expect((e as BtrfsError).code).to.equal(code);
    return e as BtrfsError;
  }
  throw new Error(`expected ${code}`);
}

const { S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK } = fs.constants;

/** glibc's major()/minor() of a dev_t as Node reports it */
function majorMinor(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return [Number(major), Number(minor)];
}

describe('util/host (native helper)', function () {
  let dir: string;

  before(function () {
    if (!host.nativeHostAvailable()) {
      const why = 'build/Release/host.node missing: run npm rebuild';
      if (process.env.REQUIRE_NATIVE === '1') throw new Error(`${why} (REQUIRE_NATIVE=1)`);
      console.warn(`\n    !!! SKIPPING native host tests: ${why}\n`);
      this.skip();
    }
  });
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-host-')); });
  afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  describe('lutimensNs', () => {
    it('sets atime and mtime exact to the nanosecond', () => {
      const f = path.join(dir, 'f');
      fs.writeFileSync(f, 'x');
      host.lutimensNs(f, 1_234_567_890n, 123_456_789, 1_700_000_000n, 999_999_999);
      const st = fs.lstatSync(f, { bigint: true });
      expect(st.atimeNs).to.equal(1_234_567_890_123_456_789n);
      expect(st.mtimeNs).to.equal(1_700_000_000_999_999_999n);
      // odd nanoseconds a double would round away
      host.lutimensNs(f, 4_000_000_000n, 1, 1_600_000_000n, 7);
      const st2 = fs.lstatSync(f, { bigint: true });
      expect(st2.atimeNs).to.equal(4_000_000_000_000_000_001n);
      expect(st2.mtimeNs).to.equal(1_600_000_000_000_000_007n);
    });

    it('handles times before 1970', () => {
      const f = path.join(dir, 'old');
      fs.writeFileSync(f, 'x');
      host.lutimensNs(f, -1n, 500, -86_400n, 1);
      const st = fs.lstatSync(f, { bigint: true });
      expect(st.atimeNs).to.equal(-1_000_000_000n + 500n);
      expect(st.mtimeNs).to.equal(-86_400_000_000_000n + 1n);
    });

    it('acts on a symlink itself, not its target', () => {
      const target = path.join(dir, 'target');
      const link = path.join(dir, 'link');
      fs.writeFileSync(target, 'x');
      fs.symlinkSync('target', link);
      const targetBefore = fs.lstatSync(target, { bigint: true });
      host.lutimensNs(link, 1_000_000_001n, 42, 1_000_000_002n, 43);
      const ls = fs.lstatSync(link, { bigint: true });
      expect(ls.isSymbolicLink()).to.equal(true);
      expect(ls.atimeNs).to.equal(1_000_000_001_000_000_042n);
      expect(ls.mtimeNs).to.equal(1_000_000_002_000_000_043n);
      const targetAfter = fs.lstatSync(target, { bigint: true });
      expect(targetAfter.mtimeNs).to.equal(targetBefore.mtimeNs);
    });

    it('fails with code, syscall and path', () => {
      const p = path.join(dir, 'missing');
      const e = throws(() => host.lutimensNs(p, 0n, 0, 0n, 0), 'ENOENT');
      expect(e.path).to.equal(p);
      expect(e.syscall).to.equal('utimensat');
      expect(e.errno).to.equal(-os.constants.errno.ENOENT);
      expect(e.message).to.equal(`ENOENT: no such file or directory, utimensat '${p}'`);
      throws(() => host.lutimensNs(p, 0n, 1_000_000_000, 0n, 0), 'EINVAL');
      throws(() => host.lutimensNs(p, 0n, -1, 0n, 0), 'EINVAL');
      throws(() => host.lutimensNs(p, 0n, 0.5, 0n, 0), 'EINVAL');
      throws(() => host.lutimensNs(`${p}\0x`, 0n, 0, 0n, 0), 'EINVAL');
    });
  });

  describe('mknod', () => {
    it('makes a fifo and a socket', () => {
      const fifo = path.join(dir, 'fifo');
      const sock = path.join(dir, 'sock');
      host.mknod(fifo, S_IFIFO | 0o644, 0, 0);
      host.mknod(sock, S_IFSOCK | 0o600, 0, 0);
      expect(fs.lstatSync(fifo).isFIFO()).to.equal(true);
      expect(fs.lstatSync(sock).isSocket()).to.equal(true);
      expect(fs.lstatSync(sock).mode & 0o777).to.equal(0o600);
    });

    it('makes character and block devices with the right rdev', function () {
      if (process.getuid?.() !== 0) {
        console.warn('\n    !!! SKIPPING device-node mknod: needs root (CAP_MKNOD)\n');
        this.skip();
      }
      const chr = path.join(dir, 'null');
      const blk = path.join(dir, 'blk');
      const big = path.join(dir, 'big');
      host.mknod(chr, S_IFCHR | 0o666, 1, 3);
      host.mknod(blk, S_IFBLK | 0o600, 7, 200);
      host.mknod(big, S_IFCHR | 0o600, 300, 70_000); // needs the wide dev_t encoding
      const c = fs.lstatSync(chr, { bigint: true });
      const b = fs.lstatSync(blk, { bigint: true });
      const g = fs.lstatSync(big, { bigint: true });
      expect(c.isCharacterDevice()).to.equal(true);
      expect(majorMinor(c.rdev)).to.deep.equal([1, 3]);
      expect(b.isBlockDevice()).to.equal(true);
      expect(majorMinor(b.rdev)).to.deep.equal([7, 200]);
      expect(majorMinor(g.rdev)).to.deep.equal([300, 70_000]);
    });

    it('fails with EEXIST and the path', () => {
      const p = path.join(dir, 'fifo');
      host.mknod(p, S_IFIFO | 0o644);
      const e = throws(() => host.mknod(p, S_IFIFO | 0o644), 'EEXIST');
      expect(e.path).to.equal(p);
      expect(e.syscall).to.equal('mknod');
      throws(() => host.mknod(p, -1), 'EINVAL');
    });
  });

  describe('xattrs', () => {
    it('sets, gets, lists and removes user.* attributes', () => {
      const f = path.join(dir, 'f');
      fs.writeFileSync(f, 'x');
      const bin = Buffer.from([0, 1, 2, 255, 0, 128]);
      host.lsetxattr(f, 'user.text', Buffer.from('hello'));
      host.lsetxattr(f, 'user.bin', bin);
      host.lsetxattr(f, 'user.empty', Buffer.alloc(0));
      host.lsetxattr(f, 'user.u8', new Uint8Array([9, 8, 7]));
      expect(host.lgetxattr(f, 'user.text').toString()).to.equal('hello');
      expect(host.lgetxattr(f, 'user.bin').equals(bin)).to.equal(true);
      expect(host.lgetxattr(f, 'user.empty').length).to.equal(0);
      expect([...host.lgetxattr(f, 'user.u8')]).to.deep.equal([9, 8, 7]);
      expect(host.llistxattr(f).filter((n) => n.startsWith('user.')).sort())
        .to.deep.equal(['user.bin', 'user.empty', 'user.text', 'user.u8']);
      const big = Buffer.alloc(3000, 0x5a);
      host.lsetxattr(f, 'user.text', big);
      expect(host.lgetxattr(f, 'user.text').equals(big)).to.equal(true);
      host.lremovexattr(f, 'user.bin');
      expect(host.llistxattr(f)).to.not.include('user.bin');
      const e = throws(() => host.lgetxattr(f, 'user.bin'), 'ENODATA');
      expect(e.path).to.equal(f);
      expect(e.syscall).to.equal('lgetxattr');
      const r = throws(() => host.lremovexattr(f, 'user.bin'), 'ENODATA');
      expect(r.syscall).to.equal('lremovexattr');
    });

    it('honours XATTR_CREATE and XATTR_REPLACE', () => {
      const f = path.join(dir, 'f');
      fs.writeFileSync(f, 'x');
      host.lsetxattr(f, 'user.a', Buffer.from('1'), host.XATTR_CREATE);
      throws(() => host.lsetxattr(f, 'user.a', Buffer.from('2'), host.XATTR_CREATE), 'EEXIST');
      throws(() => host.lsetxattr(f, 'user.b', Buffer.from('2'), host.XATTR_REPLACE), 'ENODATA');
      host.lsetxattr(f, 'user.a', Buffer.from('3'), host.XATTR_REPLACE);
      expect(host.lgetxattr(f, 'user.a').toString()).to.equal('3');
      throws(() => host.lsetxattr(f, 'user.a', Buffer.from('3'), 7), 'EINVAL');
    });

    it('acts on a symlink itself (user.* is refused on symlinks by Linux)', () => {
      const target = path.join(dir, 'target');
      const link = path.join(dir, 'link');
      fs.writeFileSync(target, 'x');
      fs.symlinkSync('target', link);
      host.lsetxattr(target, 'user.t', Buffer.from('t'));
      // Linux allows user.* only on regular files and directories: on the
      // link itself this is EPERM, which proves the link was not followed.
      const e = throws(() => host.lsetxattr(link, 'user.x', Buffer.from('v')), 'EPERM');
      expect(e.path).to.equal(link);
      expect(host.llistxattr(link)).to.not.include('user.t');
      expect(host.llistxattr(target)).to.include('user.t');
    });

    it('sets trusted.* on a symlink as root', function () {
      if (process.getuid?.() !== 0) this.skip();
      const link = path.join(dir, 'link');
      fs.symlinkSync('nowhere', link);
      host.lsetxattr(link, 'trusted.t', Buffer.from('on the link'));
      expect(host.lgetxattr(link, 'trusted.t').toString()).to.equal('on the link');
      expect(host.llistxattr(link)).to.include('trusted.t');
      host.lremovexattr(link, 'trusted.t');
      expect(host.llistxattr(link)).to.not.include('trusted.t');
    });

    it('accepts raw-byte paths that are not UTF-8', () => {
      const raw = Buffer.concat([Buffer.from(`${dir}/`), Buffer.from([0xff, 0xfe, 0x41])]);
      fs.writeFileSync(raw, 'x');
      host.lsetxattr(raw, 'user.k', Buffer.from('v'));
      expect(host.lgetxattr(raw, 'user.k').toString()).to.equal('v');
      host.lutimensNs(raw, 5n, 6, 7n, 8);
      expect(fs.lstatSync(raw, { bigint: true }).mtimeNs).to.equal(7_000_000_008n);
    });

    it('reports errors with code and path', () => {
      const p = path.join(dir, 'missing');
      for (const fn of [
        () => host.lgetxattr(p, 'user.x'),
        () => host.llistxattr(p),
        () => host.lsetxattr(p, 'user.x', Buffer.from('v')),
        () => host.lremovexattr(p, 'user.x'),
      ]) {
        const e = throws(fn, 'ENOENT');
        expect(e.path).to.equal(p);
        expect(e.message).to.contain(`'${p}'`);
      }
      const f = path.join(dir, 'f');
      fs.writeFileSync(f, 'x');
      const ns = throws(() => host.lsetxattr(f, 'nonamespace', Buffer.from('v')), 'ENOTSUP');
      expect(ns.syscall).to.equal('lsetxattr');
    });
  });
});

describe('util/host without the addon', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-host-')); });
  afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  it('reports a missing addon as ENOTSUP only when called', () => {
    // A copy of the compiled module in a package without build/ stands in for an unbuilt install.
    const here = path.dirname(fileURLToPath(import.meta.url));
    const utilDir = path.resolve(here, '../../src/util');
    const pkg = path.join(dir, 'pkg');
    fs.mkdirSync(path.join(pkg, 'src/util'), { recursive: true });
    fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: 'tsbtrfs', type: 'module' }));
    for (const f of ['host.js', 'errors.js']) fs.copyFileSync(path.join(utilDir, f), path.join(pkg, 'src/util', f));
    const script = `
      const host = await import(${JSON.stringify(new URL(`file://${path.join(pkg, 'src/util/host.js')}`).href)});
      const out = { available: host.nativeHostAvailable() };
      try { host.llistxattr('/'); } catch (e) { out.name = e.name; out.code = e.code; out.message = e.message; }
      console.log(JSON.stringify(out));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout) as { available: boolean; name: string; code: string; message: string };
    expect(out.available).to.equal(false);
    expect(out.name).to.equal('BtrfsError');
    expect(out.code).to.equal('ENOTSUP');
    expect(out.message).to.contain('native helper not built: run npm rebuild');
  });
});
