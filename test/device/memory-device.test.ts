import { expect } from 'chai';
import { MemoryDevice } from '../../src/device/index.js';
import { BtrfsError } from '../../src/util/errors.js';
import { rejects } from '../helpers/expect-error.js';


describe('device/MemoryDevice', () => {
  it('reads back what was written and starts zeroed', async () => {
    const d = new MemoryDevice(4096, { name: 'mem1' });
    expect(d.size).to.equal(4096);
    expect(d.readOnly).to.equal(false);
    expect((await d.read(0, 16)).equals(Buffer.alloc(16))).to.equal(true);
    await d.write(100, Buffer.from('hello'));
    expect((await d.read(98, 9)).toString('latin1')).to.equal('\0\0hello\0\0');
  });

  it('returns copies: later writes do not change an earlier read', async () => {
    const d = new MemoryDevice(64);
    await d.write(0, Buffer.from('aaaa'));
    const r = await d.read(0, 4);
    await d.write(0, Buffer.from('bbbb'));
    expect(r.toString()).to.equal('aaaa');
    const snap = d.snapshot();
    await d.write(0, Buffer.from('cccc'));
    expect(snap.subarray(0, 4).toString()).to.equal('bbbb');
  });

  it('accepts a plain Uint8Array', async () => {
    const d = new MemoryDevice(8);
    await d.write(2, new Uint8Array([1, 2, 3]));
    expect([...(await d.read(0, 6))]).to.deep.equal([0, 0, 1, 2, 3, 0]);
  });

  it('fails reads past the end with EIO naming the offset', async () => {
    const d = new MemoryDevice(4096, { name: 'mem2' });
    const e = await rejects(d.read(4000, 100), 'EIO', 'offset 4000');
    expect(e.path).to.equal('mem2');
    await d.read(4000, 96); // exactly to the end is fine
    await d.read(4096, 0);
  });

  it('fails writes past the end with ENOSPC unless growable', async () => {
    const d = new MemoryDevice(16);
    await rejects(d.write(10, Buffer.alloc(10)), 'ENOSPC', 'offset 10');
    const g = new MemoryDevice(16, { growable: true });
    await g.write(100, Buffer.from('x'));
    expect(g.size).to.equal(101);
    expect((await g.read(16, 84)).equals(Buffer.alloc(84))).to.equal(true);
    expect((await g.read(100, 1)).toString()).to.equal('x');
    await rejects(g.read(100, 2), 'EIO');
    for (let i = 0; i < 50; i++) await g.write(g.size, Buffer.alloc(1000, i));
    expect(g.size).to.equal(101 + 50_000);
    expect((await g.read(101 + 49_000, 1000)).equals(Buffer.alloc(1000, 49))).to.equal(true);
  });

  it('rejects bad arguments with EINVAL', async () => {
    const d = new MemoryDevice(16);
    await rejects(d.read(-1, 1), 'EINVAL');
    await rejects(d.read(0.5, 1), 'EINVAL');
    await rejects(d.read(0, -1), 'EINVAL');
    await rejects(d.write(Number.NaN, Buffer.alloc(1)), 'EINVAL');
  });

  it('is EROFS when read-only and EBADF once closed', async () => {
    const ro = MemoryDevice.fromBuffer(Buffer.from('abc'), { readOnly: true });
    expect(ro.size).to.equal(3);
    await rejects(ro.write(0, Buffer.from('x')), 'EROFS');
    await ro.flush();
    expect((await ro.read(0, 3)).toString()).to.equal('abc');
    await ro.close();
    await rejects(ro.read(0, 1), 'EBADF');
    await rejects(ro.write(0, Buffer.from('x')), 'EBADF');
    await rejects(ro.flush(), 'EBADF');
    await rejects(ro.close(), 'EBADF');
  });

  it('fromBuffer copies its input', async () => {
    const src = Buffer.from('abcd');
    const d = MemoryDevice.fromBuffer(src);
    src[0] = 0x7a;
    expect((await d.read(0, 1)).toString()).to.equal('a');
  });
});
