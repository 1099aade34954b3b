import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { acquireImageLock, FileDevice, lockPathFor, readLockHolder } from '../../src/device/index.js';
import { BtrfsError } from '../../src/util/errors.js';
import { rejects } from '../helpers/expect-error.js';

const DEVICE_MODULE = new URL('../../src/device/index.js', import.meta.url).href;


/** Runs `body` as an ES module in a fresh node, with FileDevice and IMG in scope. */
function child(img: string, body: string): ChildProcess {
  const src = `import { FileDevice } from ${JSON.stringify(DEVICE_MODULE)};\nconst IMG = ${JSON.stringify(img)};\n${body}`;
  return spawn(process.execPath, ['--input-type=module', '-e', src], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Resolves with the first stdout line matching `re` (rejects if the child exits first). */
function waitFor(cp: ChildProcess, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    cp.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = out.split('\n').find((l) => re.test(l));
      if (m !== undefined) resolve(m);
    });
    cp.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    cp.on('exit', (code) => reject(new Error(`child exited (${code}) before /${re.source}/: ${out}${err}`)));
  });
}

function exited(cp: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (cp.exitCode !== null || cp.signalCode !== null) resolve();
    else cp.once('exit', () => resolve());
  });
}

const TRY_OPEN = `
try {
  const d = await FileDevice.open(IMG);
  console.log(JSON.stringify({ ok: true }));
  await d.close();
} catch (e) {
  console.log(JSON.stringify({ ok: false, code: e.code, message: e.message, name: e.name }));
}`;

const HOLD = `
const d = await FileDevice.open(IMG);
console.log('locked ' + process.pid);
setInterval(() => {}, 1000);`;

describe('device/image-lock', function () {
  this.timeout(30_000);
  let dir: string;
  let img: string;
  const children: ChildProcess[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsbtrfs-lock-'));
    img = path.join(dir, 'img');
    fs.writeFileSync(img, Buffer.alloc(4096));
  });
  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      await exited(c);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a second read-write open in the same process with EBUSY naming our pid', async () => {
    const a = await FileDevice.open(img);
    const e = await rejects(FileDevice.open(img), 'EBUSY', `image in use by pid ${process.pid}`);
    expect(e.path).to.equal(fs.realpathSync(img));
    // also through another path to the same file
    fs.symlinkSync(img, path.join(dir, 'alias'));
    await rejects(FileDevice.open(path.join(dir, 'alias')), 'EBUSY', `pid ${process.pid}`);
    await a.close();
    const b = await FileDevice.open(img);
    await b.close();
  });

  it('reports the holder and its record', async () => {
    expect(await readLockHolder(img)).to.equal(null);
    const a = await FileDevice.open(img);
    const h = await readLockHolder(img);
    expect(h).to.not.equal(null);
    expect(h!.lockPath).to.equal(`${fs.realpathSync(img)}.lock`);
    expect(h!.owner!.pid).to.equal(process.pid);
    expect(h!.owner!.hostname).to.equal(os.hostname());
    expect(h!.owner!.image).to.equal(fs.realpathSync(img));
    expect(Date.parse(h!.owner!.startedAt)).to.be.at.most(Date.now());
    expect(h!.alive).to.equal(true);
    expect(h!.stale).to.equal(false);
    expect(a.lock!.owner.pid).to.equal(process.pid);
    await a.close();
    expect(await readLockHolder(img)).to.equal(null);
  });

  it('refuses a writer in another process while we hold the lock', async () => {
    const a = await FileDevice.open(img);
    const cp = child(img, TRY_OPEN);
    children.push(cp);
    const r = JSON.parse(await waitFor(cp, /^\{/)) as { ok: boolean; code?: string; message?: string; name?: string };
    expect(r.ok).to.equal(false);
    expect(r.code).to.equal('EBUSY');
    expect(r.name).to.equal('BtrfsError');
    expect(r.message).to.contain(`image in use by pid ${process.pid}`);
    await a.close();
    const cp2 = child(img, TRY_OPEN);
    children.push(cp2);
    expect(JSON.parse(await waitFor(cp2, /^\{/))).to.deep.equal({ ok: true });
  });

  it('is refused while another process holds the lock, and free after it exits', async () => {
    const cp = child(img, `${HOLD}\nprocess.on('SIGTERM', async () => { await d.close(); process.exit(0); });`);
    children.push(cp);
    await waitFor(cp, /^locked /);
    await rejects(FileDevice.open(img), 'EBUSY', `image in use by pid ${cp.pid}`);
    const h = await readLockHolder(img);
    expect(h!.owner!.pid).to.equal(cp.pid);
    expect(h!.alive).to.equal(true);
    cp.kill('SIGTERM');
    await exited(cp);
    expect(await readLockHolder(img)).to.equal(null);
    const d = await FileDevice.open(img);
    await d.close();
  });

  it('waitMs: waits out another process that holds the lock for a moment, and gives up on one that keeps it', async () => {
    const brief = child(img, `const d = await FileDevice.open(IMG);\nconsole.log('locked');\nsetTimeout(async () => { await d.close(); process.exit(0); }, 400);`);
    children.push(brief);
    await waitFor(brief, /^locked/);
    await rejects(FileDevice.open(img), 'EBUSY', `image in use by pid ${brief.pid}`);
    const d = await FileDevice.open(img, { lockWaitMs: 10_000 });
    expect(d.lock!.owner.pid).to.equal(process.pid);
    await d.close();
    const keeper = child(img, HOLD);
    children.push(keeper);
    await waitFor(keeper, /^locked /);
    await rejects(acquireImageLock(img, { waitMs: 300 }), 'EBUSY', `image in use by pid ${keeper.pid}`);
  });

  it('waitMs does not wait for a lock this process holds (it would never be let go)', async () => {
    const d = await FileDevice.open(img);
    try {
      const t0 = Date.now();
      await rejects(acquireImageLock(img, { waitMs: 20_000 }), 'EBUSY', `image in use by pid ${process.pid}`);
      expect(Date.now() - t0, 'ms before the refusal').to.be.below(10_000);
    } finally {
      await d.close();
    }
  });

  it('releases the lock when the holder exits without closing', async () => {
    const cp = child(img, `const d = await FileDevice.open(IMG);\nconsole.log('locked');\nprocess.exit(0);`);
    children.push(cp);
    await waitFor(cp, /^locked/).catch(() => undefined);
    await exited(cp);
    expect(fs.existsSync(`${img}.lock`)).to.equal(false);
  });

  it('recovers a lock left by a SIGKILLed process at once', async () => {
    const cp = child(img, HOLD);
    children.push(cp);
    await waitFor(cp, /^locked /);
    cp.kill('SIGKILL');
    await exited(cp);
    // the lock is left behind, fresh by mtime: only the pid check can free it
    expect(fs.existsSync(`${img}.lock`)).to.equal(true);
    const h = await readLockHolder(img);
    expect(h!.owner!.pid).to.equal(cp.pid);
    expect(h!.alive).to.equal(false);
    expect(h!.stale).to.equal(true);
    const t0 = Date.now();
    const d = await FileDevice.open(img);
    expect(Date.now() - t0).to.be.lessThan(1500);
    expect((await readLockHolder(img))!.owner!.pid).to.equal(process.pid);
    await d.close();
  });

  it('treats a leftover lock with our own pid that we do not hold as stale', async () => {
    const lockPath = lockPathFor(fs.realpathSync(img), false);
    fs.mkdirSync(lockPath);
    fs.writeFileSync(path.join(lockPath, 'owner.json'), JSON.stringify({
      pid: process.pid, hostname: os.hostname(), startedAt: '2000-01-01T00:00:00.000Z', lockedAt: '2000-01-01T00:00:00.000Z', image: img,
    }));
    const d = await FileDevice.open(img);
    await d.close();
  });

  it('judges holders on other machines by mtime staleness', async () => {
    const lockPath = lockPathFor(fs.realpathSync(img), false);
    fs.mkdirSync(lockPath);
    fs.writeFileSync(path.join(lockPath, 'owner.json'), JSON.stringify({
      pid: 4242, hostname: 'elsewhere.example', startedAt: '2000-01-01T00:00:00.000Z', lockedAt: '2000-01-01T00:00:00.000Z', image: img,
    }));
    // fresh: refused, naming the remote holder
    await rejects(FileDevice.open(img), 'EBUSY', 'image in use by pid 4242 on elsewhere.example');
    const h = await readLockHolder(img);
    expect(h!.alive).to.equal(undefined);
    expect(h!.stale).to.equal(false);
    // not refreshed for a minute: taken over
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lockPath, old, old);
    expect((await readLockHolder(img))!.stale).to.equal(true);
    const d = await FileDevice.open(img);
    expect((await readLockHolder(img))!.owner!.pid).to.equal(process.pid);
    await d.close();
    expect(fs.existsSync(lockPath)).to.equal(false);
  });

  it('treats a lock without a holder record as held until it goes stale', async () => {
    const lockPath = lockPathFor(fs.realpathSync(img), false);
    fs.mkdirSync(lockPath);
    await rejects(FileDevice.open(img), 'EBUSY', 'image in use by another process');
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lockPath, old, old);
    const d = await FileDevice.open(img);
    await d.close();
  });

  for (const deadHolder of [false, true]) {
    it(`lets exactly one of many racing processes win${deadHolder ? ' the lock of a killed holder' : ''}`, async () => {
      if (deadHolder) {
        const cp = child(img, HOLD);
        children.push(cp);
        await waitFor(cp, /^locked /);
        cp.kill('SIGKILL');
        await exited(cp);
        expect((await readLockHolder(img))!.stale).to.equal(true);
      }
      await race();
    });
  }

  async function race(): Promise<void> {
    const cps = Array.from({ length: 6 }, () => child(img, `
try {
  const d = await FileDevice.open(IMG);
  console.log(JSON.stringify({ ok: true }));
  await new Promise((r) => setTimeout(r, 4000));
  await d.close();
} catch (e) {
  console.log(JSON.stringify({ ok: false, code: e.code }));
}`));
    children.push(...cps);
    const results = await Promise.all(cps.map(async (cp) => JSON.parse(await waitFor(cp, /^\{/)) as { ok: boolean; code?: string }));
    expect(results.filter((r) => r.ok)).to.have.length(1);
    for (const r of results.filter((x) => !x.ok)) expect(r.code).to.equal('EBUSY');
  }

  it('keys block-device locks by real path under the lock directory', () => {
    const p = lockPathFor('/dev/loop7', true);
    expect(p.startsWith(path.join(os.tmpdir(), 'tsbtrfs-locks'))).to.equal(true);
    expect(path.basename(p)).to.equal(`${encodeURIComponent('/dev/loop7')}.lock`);
    const long = lockPathFor(`/dev/${'x'.repeat(400)}`, true);
    expect(path.basename(long).length).to.be.lessThan(255);
  });

  it('refuses writes once the lock was taken away behind our back', async () => {
    const d = await FileDevice.open(img, { lockStaleMs: 2000 });
    await d.write(0, Buffer.from('ok'));
    fs.rmSync(`${img}.lock`, { recursive: true });
    // the refresh timer (every staleMs / 2) notices the loss
    await new Promise((r) => setTimeout(r, 1600));
    expect(d.lock!.compromised?.code).to.equal('EBUSY');
    await rejects(d.write(0, Buffer.from('no')), 'EBUSY', 'lock lost');
    await d.close();
    expect(fs.readFileSync(img).subarray(0, 2).toString()).to.equal('ok');
  });

  it('acquireImageLock can be used directly and release is idempotent', async () => {
    const l = await acquireImageLock(img);
    expect(l.compromised).to.equal(undefined);
    await rejects(acquireImageLock(img), 'EBUSY');
    await l.release();
    await l.release();
    const again = await acquireImageLock(img);
    await again.release();
  });
});
