/**
 * The tsbtrfs command as a user runs it: output that matches btrfs-progs where
 * progs has the same command, clear errors with non-zero exits, --help
 * everywhere.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fixturePath, fixtureManifest, listFixtures, builtPath, repoRoot } from '../helpers/fixtures.js';
import { run } from '../helpers/kernel.js';

const CLI = builtPath('src/cli/main.js');

interface Out { code: number | null; stdout: Buffer; stderr: string }

function tsbtrfs(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Out> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TZ: 'UTC', ...env } });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
  });
}

async function progsAvailable(): Promise<boolean> {
  return (await run('btrfs', ['--version']).catch(() => ({ code: 1 }))).code === 0;
}

describe('cli', function () {
  this.timeout(300_000);
  const fixtures = ['subvols-snapshots-default-received', 'filetypes-links-modes-times', 'csum-xxhash', 'nodesize-64k', 'mixed'];

  it('--help works for the program and every command, exit 0', async () => {
    for (const args of [['--help'], ['dump-super', '--help'], ['dump-tree', '--help'], ['subvolume', '--help'], ['subvolume', 'list', '--help'],
      ['subvolume', 'show', '--help'], ['subvolume', 'get-default', '--help'], ['ls', '--help'], ['cat', '--help'], ['get', '--help'], ['check', '--help']]) {
      const r = await tsbtrfs(args);
      expect(r.code, args.join(' ')).to.equal(0);
      expect(r.stdout.toString(), args.join(' ')).to.match(/Usage: tsbtrfs/);
    }
  });

  it('one member of a multi-device filesystem: read degraded, with a warning naming the missing device', async function () {
    const src = path.resolve(repoRoot(), '..', 'shared', 'corpus', 'misc-tests', '034-metadata-uuid', 'disk1.raw.xz');
    if (!existsSync(src)) this.skip();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-cli-degraded-'));
    try {
      const img = path.join(dir, 'disk1.raw');
      const x = await run('sh', ['-c', `xz -dc ${JSON.stringify(src)} > ${JSON.stringify(img)}`]);
      expect(x.code, x.stderr).to.equal(0);
      const ls = await tsbtrfs(['ls', img, '/']);
      expect(ls.code, ls.stderr).to.equal(0);
      expect(ls.stderr).to.equal('tsbtrfs: warning: device 2 is missing; what only it holds cannot be read\n');
      const put = await tsbtrfs(['mkdir', img, '/x']);
      expect(put.code).to.equal(1);
      expect(put.stderr).to.match(/ENOTSUP: filesystem has 2 devices/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('usage errors exit 2 with a message; missing files and paths exit 1 with one clear line', async () => {
    const img = await fixturePath('filetypes-links-modes-times');
    const noArgs = await tsbtrfs(['cat']);
    expect(noArgs.code).to.equal(2);
    expect(noArgs.stderr).to.match(/missing required argument/);
    const unknown = await tsbtrfs(['frobnicate']);
    expect(unknown.code).to.equal(2);
    const noImage = await tsbtrfs(['ls', '/nonexistent/disk.img', '/']);
    expect(noImage.code).to.equal(1);
    expect(noImage.stderr).to.match(/^tsbtrfs: ENOENT/);
    const noPath = await tsbtrfs(['cat', img, '/no/such/file']);
    expect(noPath.code).to.equal(1);
    expect(noPath.stderr.trim().split('\n')).to.have.length(1);
    expect(noPath.stderr).to.match(/ENOENT.*\/no\/such\/file/);
    const dir = await tsbtrfs(['cat', img, '/']);
    expect(dir.code).to.equal(1);
    expect(dir.stderr).to.match(/EISDIR/);
    const notBtrfs = path.join(os.tmpdir(), `tsbtrfs-zero-${process.pid}.img`);
    await fsp.writeFile(notBtrfs, Buffer.alloc(1 << 20));
    try {
      const r = await tsbtrfs(['dump-super', notBtrfs]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/not a btrfs filesystem/);
    } finally {
      await fsp.rm(notBtrfs, { force: true });
    }
  });

  for (const name of fixtures) {
    it(`dump-super -f equals btrfs inspect-internal dump-super -f (${name})`, async function () {
      if (!(await progsAvailable())) this.skip();
      const img = await fixturePath(name);
      const ours = await tsbtrfs(['dump-super', '-f', img]);
      expect(ours.code, ours.stderr).to.equal(0);
      const theirs = await run('btrfs', ['inspect-internal', 'dump-super', '-f', img], { env: { ...process.env, TZ: 'UTC' } } as never);
      const strip = (s: string) => s.split('\n').filter((l) => !l.startsWith('btrfs-progs v')).join('\n');
      expect(strip(ours.stdout.toString())).to.equal(strip(theirs.stdout));
    });
  }

  it('subvolume list -u -q -R prints what btrfs subvolume list prints', async () => {
    const name = 'subvols-snapshots-default-received';
    const fx = await fixtureManifest(name);
    const r = await tsbtrfs(['subvolume', 'list', '-u', '-q', '-R', await fixturePath(name)]);
    expect(r.code, r.stderr).to.equal(0);
    const lines = r.stdout.toString().trim().split('\n');
    expect(lines).to.have.length(fx.subvolumes.length);
    for (const s of fx.subvolumes) {
      const want = `ID ${s.id} gen ${s.generation} top level ${s.top_level} parent_uuid ${(s.parent_uuid ?? '-').padEnd(36)} received_uuid ${(s.received_uuid ?? '-').padEnd(36)} uuid ${s.uuid} path ${s.path}`;
      expect(lines).to.include(want);
    }
    const def = await tsbtrfs(['subvolume', 'get-default', await fixturePath(name)]);
    expect(def.stdout.toString()).to.match(new RegExp(`^ID ${fx.default_subvolume} `));
  });

  it('subvolume list -d shows the deleted, not yet cleaned subvolume', async () => {
    const name = 'half-deleted-subvol';
    const fx = await fixtureManifest(name);
    const r = await tsbtrfs(['subvolume', 'list', '-d', await fixturePath(name)]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString().trim().split('\n').map((l) => Number(l.split(' ')[1]))).to.deep.equal(fx.deleted_subvolumes);
  });

  it('cat streams file contents exactly; ls -l shows ns mtimes, device numbers and link targets', async () => {
    const name = 'filetypes-links-modes-times';
    const fx = await fixtureManifest(name);
    const img = await fixturePath(name);
    const files = Object.entries(fx.tree).filter(([, e]) => e.type === 'file').slice(0, 20);
    for (const [p, e] of files) {
      const r = await tsbtrfs(['cat', img, p]);
      expect(r.code, r.stderr).to.equal(0);
      expect(createHash('sha256').update(r.stdout).digest('hex'), p).to.equal(e.sha256);
    }
    const ls = await tsbtrfs(['ls', '-l', '-R', img, '/']);
    expect(ls.code, ls.stderr).to.equal(0);
    const text = ls.stdout.toString();
    for (const [p, e] of Object.entries(fx.tree)) {
      if (p === '/' || p.includes('\n')) continue;
      const base = p.slice(p.lastIndexOf('/') + 1);
      const ns = BigInt(e.mtime_ns);
      const frac = (((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n).toString().padStart(9, '0');
      expect(text, p).to.include(`.${frac} ${base}`);
      if (e.rdev) expect(text, p).to.include(`${e.rdev.major}, ${e.rdev.minor}`);
      if (e.target !== undefined) expect(text, p).to.include(`${base} -> ${e.target}`);
    }
  });

  it('dump-tree -t fs and -b print one tree / one block', async () => {
    const img = await fixturePath('mixed');
    const t = await tsbtrfs(['dump-tree', '-t', 'fs', img]);
    expect(t.code, t.stderr).to.equal(0);
    expect(t.stdout.toString()).to.match(/owner FS_TREE/);
    expect(t.stdout.toString()).to.not.match(/owner EXTENT_TREE/);
    const bytenr = /^(?:leaf|node) (\d+) /m.exec(t.stdout.toString())![1]!;
    const b = await tsbtrfs(['dump-tree', '-b', bytenr, img]);
    expect(b.code, b.stderr).to.equal(0);
    expect(b.stdout.toString().split('\n')[0]).to.match(new RegExp(`^(leaf|node) ${bytenr} `));
  });

  it('get extracts a single file and a subtree', async () => {
    const name = 'subvols-snapshots-default-received';
    const fx = await fixtureManifest(name);
    const img = await fixturePath(name);
    const dest = await fsp.mkdtemp(path.join(os.tmpdir(), 'tsbtrfs-cli-get-'));
    try {
      const file = Object.entries(fx.tree).find(([p, e]) => e.type === 'file' && p.startsWith('/sv1/'))!;
      const r1 = await tsbtrfs(['get', '-q', img, file[0], path.join(dest, 'one')]);
      expect(r1.code, r1.stderr).to.equal(0);
      expect(createHash('sha256').update(await fsp.readFile(path.join(dest, 'one'))).digest('hex')).to.equal(file[1].sha256);
      const r2 = await tsbtrfs(['get', '-q', img, '/sv1', dest]);
      expect(r2.code, r2.stderr).to.equal(0);
      const names = (await fsp.readdir(path.join(dest, 'sv1'))).sort();
      const want = Object.keys(fx.tree).filter((p) => p.startsWith('/sv1/') && !p.slice(5).includes('/')).map((p) => p.slice(5)).sort();
      expect(names).to.deep.equal(want);
    } finally {
      await fsp.rm(dest, { recursive: true, force: true });
    }
  });

  it('check: exit 0 and "no error found" on a clean image, --json parses, exit 1 on a non-btrfs file', async () => {
    const img = await fixturePath('subvols-snapshots-default-received');
    const r = await tsbtrfs(['check', img]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.match(/no error found/);
    const j = await tsbtrfs(['check', '--json', img]);
    expect(j.code, j.stderr).to.equal(0);
    expect(JSON.parse(j.stdout.toString())).to.have.property('findings').that.deep.equals([]);
    const zero = path.join(os.tmpdir(), `tsbtrfs-check-zero-${process.pid}.img`);
    await fsp.writeFile(zero, Buffer.alloc(1 << 20));
    try {
      const z = await tsbtrfs(['check', zero]);
      expect(z.code).to.equal(1);
    } finally {
      await fsp.rm(zero, { force: true });
    }
  });

  it('every fixture opens through the CLI (ls -R) without errors', async () => {
    for (const name of await listFixtures()) {
      const r = await tsbtrfs(['ls', '-R', await fixturePath(name), '/']);
      expect(r.code, `${name}: ${r.stderr}`).to.equal(0);
    }
  });
});
