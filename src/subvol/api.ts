/**
 * Subvolumes by path, as `btrfs subvolume` and `btrfs property` take them:
 * create, snapshot, delete, sync (the cleaner), read-only, default. Each
 * call commits, as the kernel's ioctls are durable when they return.
 *
 * Works on any FsWriter; WritableFilesystem hands its own over so paths
 * resolve against its uncommitted changes too.
 */
import { BtrfsError } from '../util/errors.js';
import { S_IFMT, S_IFDIR, ROOT_DIR_INO } from '../format/constants.js';
import type { BlockDevice } from '../device/block-device.js';
import { FsWriter } from '../transaction/writer.js';
import { FileDevice } from '../device/file-device.js';
import { Filesystem, type Resolved } from '../fs/filesystem.js';
import { createSnapshot, createSubvolume, type SubvolLink } from './create.js';
import { RootLocks, isReadOnly } from './root-lock.js';
import { deleteSubvolume, setReadOnly, setDefaultSubvolume, syncDeleted, getDefaultSubvolume, type SubvolContext } from './manage.js';

export class Subvolumes {
  readonly locks = new RootLocks();
  /** kernel-style warnings of refused operations (the kernel logs them) */
  readonly warnings: string[] = [];

  constructor(readonly writer: FsWriter, private readonly device: BlockDevice, readonly imagePath?: string) {}

  /**
   * Opens an image for subvolume operations (taking its write lock);
   * `lockWaitMs`: how long to wait for another process's hold on it (default 0: EBUSY at once).
   */
  static async open(image: string, opts: { lockWaitMs?: number } = {}): Promise<Subvolumes> {
    const device = await FileDevice.open(image, { lockWaitMs: opts.lockWaitMs });
    try {
      return new Subvolumes(await FsWriter.open(device), device, image);
    } catch (e) {
      await device.close().catch(() => undefined);
      throw e;
    }
  }

  /** Closes the image (everything was committed by the operations). */
  async close(): Promise<void> {
    await this.writer.close();
  }

  private queue: Promise<unknown> = Promise.resolve();

  /** One operation at a time: their transactions share the writer (an abort must not take another's changes). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const job = this.queue.then(fn);
    this.queue = job.catch(() => undefined);
    return job;
  }

  private ctx(): SubvolContext {
    return { writer: this.writer, locks: this.locks, imagePath: this.imagePath, now: () => this.writer.now(), warn: (m) => this.warnings.push(m) };
  }

  private async view(): Promise<Filesystem> {
    await this.writer.syncView();
    return Filesystem.view(this.writer.info, this.device);
  }

  /** Where a new subvolume named by `path` is linked; EEXIST if the name is taken. */
  private async linkAt(path: string): Promise<SubvolLink> {
    const v = await this.view();
    const parts = path.split('/').filter((c) => c !== '' && c !== '.');
    const name = parts.pop();
    if (!name || name === '..') throw new BtrfsError('EINVAL', 'a subvolume needs a name', { path });
    const dir = await v.resolve('/' + parts.join('/'), true);
    if ((dir.item.mode & S_IFMT) !== S_IFDIR) throw new BtrfsError('ENOTDIR', 'not a directory', { path });
    if (dir.placeholder) throw new BtrfsError('EPERM', 'inside a subvolume placeholder', { path });
    if (await v.exists(path)) throw new BtrfsError('EEXIST', 'file exists', { path });
    return { parentTree: dir.subvol, parentDir: dir.ino, name: Buffer.from(name, 'utf8') };
  }

  /** The subvolume whose root `path` is (EINVAL for any other directory, as btrfs says "not a subvolume"). */
  async idOf(path: string): Promise<bigint> {
    const r: Resolved = await (await this.view()).resolve(path, true);
    if (r.ino !== ROOT_DIR_INO || r.placeholder) throw new BtrfsError('EINVAL', 'not a subvolume', { path });
    return r.subvol;
  }

  create(path: string, opts: { mode?: number; uid?: number; gid?: number } = {}): Promise<bigint> {
    return this.serial(async () => {
      const link = await this.linkAt(path);
      const t = this.writer.transaction();
      try {
        const id = await createSubvolume(t, link, this.writer.now(), opts);
        await this.writer.commit();
        return id;
      } catch (e) {
        if (this.writer.dirty) await this.writer.abort();
        throw e;
      }
    });
  }

  /** A snapshot of the subvolume at `source`, linked at `dest`; read-only with `readonly`. */
  snapshot(source: string, dest: string, opts: { readonly?: boolean } = {}): Promise<bigint> {
    return this.serial(async () => {
      const src = await this.idOf(source);
      const link = await this.linkAt(dest);
      // blocks of a running transaction are changed in place: none may be shared
      await this.writer.commit();
      const t = this.writer.transaction();
      try {
        const id = await createSnapshot(t, src, link, this.writer.now(), opts);
        await this.writer.commit();
        return id;
      } catch (e) {
        if (this.writer.dirty) await this.writer.abort();
        throw e;
      }
    });
  }

  delete(path: string): Promise<bigint> {
    return this.serial(async () => {
      const id = await this.idOf(path);
      await deleteSubvolume(this.ctx(), id);
      return id;
    });
  }

  deleteById(id: bigint): Promise<void> {
    return this.serial(() => deleteSubvolume(this.ctx(), id));
  }

  /** Drops every deleted subvolume's tree; returns the ids cleaned. */
  sync(opts: { budget?: number } = {}): Promise<bigint[]> {
    return this.serial(() => syncDeleted(this.ctx(), opts));
  }

  setReadOnly(path: string, ro: boolean): Promise<void> {
    return this.serial(async () => setReadOnly(this.ctx(), await this.idOf(path), ro));
  }

  isReadOnly(path: string): Promise<boolean> {
    return this.serial(async () => {
      const id = await this.idOf(path);
      const { item } = await this.writer.transaction().rootItem(id);
      return isReadOnly(this.locks.peek(id)?.peek().flags ?? item.flags);
    });
  }

  setDefault(pathOrId: string | bigint): Promise<void> {
    return this.serial(async () => {
      const id = typeof pathOrId === 'bigint' ? pathOrId : await this.idOf(pathOrId);
      await setDefaultSubvolume(this.ctx(), id);
    });
  }

  getDefault(): Promise<bigint> {
    return this.serial(() => getDefaultSubvolume(this.writer.transaction()));
  }
}

