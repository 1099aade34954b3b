/**
 * Registrations other processes can see: small records a process leaves
 * beside an image while it does something others must respect — today a
 * send in progress, which forbids deleting or un-read-onlying its roots.
 *
 * Each registration is one file `<kind>-<pid>-<nonce>.json` in the image's
 * registry directory (beside the image lock: `<image>.reg/`, or in the
 * shared lock directory for block devices), written atomically (temp file,
 * rename) and removed when released or when the process exits. A process
 * killed without cleanup leaves its file behind; readers judge it by the
 * owner record (pid, process start time, boot id, as the image lock does)
 * and delete it once its process is gone, so a crashed sender never blocks
 * a deletion for longer than it takes to notice.
 *
 * Consistency comes from the image write lock: a registration that must be
 * seen by writers is made while holding it, and writers read the registry
 * while holding it, so a check and the change it guards cannot interleave
 * with a registration.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { BtrfsError } from '../util/errors.js';
import { lockPathFor, processAlive, selfInfo, type ProcessRecord } from './image-lock.js';

export interface Registration<T> {
  readonly file: string;
  readonly data: T;
  /** Removes the record; further calls do nothing. */
  release(): Promise<void>;
}

interface RegRecord<T> { owner: ProcessRecord; kind: string; data: T; createdAt: string }

const mine = new Set<string>();
let exitHook = false;

function hookExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const f of mine) {
      try {
        fs.unlinkSync(f);
      } catch {
        // already gone
      }
    }
  });
}

async function registryDir(imagePath: string): Promise<string> {
  let real: string;
  let block = false;
  try {
    real = await fsp.realpath(imagePath);
    block = (await fsp.stat(real)).isBlockDevice();
  } catch (e) {
    throw new BtrfsError('ENOENT', `cannot resolve image: ${(e as Error).message}`, { path: imagePath });
  }
  return lockPathFor(real, block).replace(/\.lock$/, '.reg');
}

/** Leaves a record of `kind` with `data` beside the image until released. */
export async function register<T>(imagePath: string, kind: string, data: T): Promise<Registration<T>> {
  if (!/^[a-z][a-z0-9-]*$/.test(kind)) throw new BtrfsError('EINVAL', `bad registration kind '${kind}'`);
  const dir = await registryDir(imagePath);
  await fsp.mkdir(dir, { recursive: true });
  const name = `${kind}-${process.pid}-${crypto.randomBytes(6).toString('hex')}.json`;
  const file = path.join(dir, name);
  const rec: RegRecord<T> = { owner: selfInfo(), kind, data, createdAt: new Date().toISOString() };
  const tmp = `${file}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify(rec, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)));
  await fsp.rename(tmp, file);
  mine.add(file);
  hookExit();
  let released = false;
  return {
    file,
    data,
    release: async () => {
      if (released) return;
      released = true;
      mine.delete(file);
      await fsp.rm(file, { force: true });
    },
  };
}

/**
 * The data of every live registration of `kind` for the image. Records of
 * processes that are gone are deleted on the way; records from other
 * machines count as live.
 */
export async function liveRegistrations<T>(imagePath: string, kind: string): Promise<T[]> {
  const dir = await registryDir(imagePath);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const out: T[] = [];
  for (const n of names) {
    if (!n.startsWith(`${kind}-`) || !n.endsWith('.json')) continue;
    const file = path.join(dir, n);
    let rec: RegRecord<T>;
    try {
      rec = JSON.parse(await fsp.readFile(file, 'utf8')) as RegRecord<T>;
    } catch {
      // vanished between readdir and read, or half-written by a process killed mid-rename: judge by name
      const pid = Number(n.split('-')[1]);
      if (Number.isInteger(pid) && pid !== process.pid && !pidExists(pid)) await fsp.rm(file, { force: true });
      continue;
    }
    const alive = processAlive(rec.owner, () => mine.has(file));
    if (alive === false) {
      await fsp.rm(file, { force: true });
      continue;
    }
    out.push(rec.data);
  }
  return out;
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
