/**
 * The seed's protocol under every interleaving: a deterministic scheduler
 * runs send, delete, set-read-write and a deletion that fails, pausing each
 * at its await points and trying every order in which they can resume (no
 * sleeps, no timing). Each order starts from the same in-memory image and
 * must keep the invariants:
 *  - no send ever reads a dead root (counted in, its root stays alive and
 *    read-only until it lets go);
 *  - a refused delete changes nothing (the root is alive, DEAD clear);
 *  - a failed delete leaves DEAD clear, in memory and on disk;
 *  - a delete succeeds only if no send was counted in when it set DEAD;
 *  - send_in_progress is back to 0 on every path, also when the stream's
 *    consumer fails.
 */
import { expect } from 'chai';
import { MemoryDevice } from '../../src/device/memory-device.js';
import { FsWriter } from '../../src/transaction/writer.js';
import { mkfs } from '../../src/mkfs/index.js';
import { OBJ, ROOT_FLAG } from '../../src/format/constants.js';
import { createSnapshot } from '../../src/subvol/create.js';
import { RootLocks } from '../../src/subvol/root-lock.js';
import { deleteSubvolume, setReadOnly, type SubvolContext } from '../../src/subvol/manage.js';
import { acquireSendGuards } from '../../src/send/guards.js';
import { isBtrfsError } from '../../src/util/errors.js';
import { addRawFile } from '../helpers/raw-files.js';

const NOW = { sec: 1_800_000_000n, nsec: 0 };
const SENT = 256n;
const OTHER = 257n;

type Point = (label: string) => Promise<void>;
interface Task { name: string; run: (point: Point) => Promise<void> }

/**
 * Runs the tasks, resuming one paused task at a time: `choices[k]` picks
 * which of the runnable tasks goes at step k (0 when past the end).
 * Returns how many were runnable at each step, to enumerate the rest.
 */
async function runSchedule(tasks: Task[], choices: number[]): Promise<{ branching: number[]; order: string[] }> {
  const paused: ((() => void) | undefined)[] = tasks.map(() => undefined);
  const finished: boolean[] = tasks.map(() => false);
  let arrived: () => void = () => undefined;
  const order: string[] = [];
  const errors: unknown[] = [];
  const start = (i: number): Promise<void> => new Promise<void>((settle) => {
    arrived = settle;
    tasks[i]!.run((label) => new Promise<void>((resume) => {
      order.push(`${tasks[i]!.name}:${label}`);
      paused[i] = resume;
      arrived();
    })).catch((e) => { errors.push(e); }).finally(() => {
      finished[i] = true;
      arrived();
    });
  });
  for (let i = 0; i < tasks.length; i++) await start(i);
  const branching: number[] = [];
  for (let step = 0; ; step++) {
    const runnable = tasks.map((_, i) => i).filter((i) => paused[i] && !finished[i]);
    if (runnable.length === 0) break;
    branching.push(runnable.length);
    const i = runnable[choices[step] ?? 0]!;
    const resume = paused[i]!;
    paused[i] = undefined;
    await new Promise<void>((settle) => {
      arrived = settle;
      resume();
    });
  }
  if (errors.length) throw errors[0];
  return { branching, order };
}

/** The next schedule in odometer order, or undefined when all were run. */
function nextChoices(choices: number[], branching: number[]): number[] | undefined {
  for (let k = branching.length - 1; k >= 0; k--) {
    const c = choices[k] ?? 0;
    if (c + 1 < branching[k]!) return [...choices.slice(0, k), c + 1];
  }
  return undefined;
}

describe('subvolumes: send / delete / read-write under every interleaving (deterministic scheduler)', function () {
  this.timeout(900_000);
  let base: Buffer;

  before(async () => {
    const dev = new MemoryDevice(40 * 1024 * 1024);
    await mkfs(dev, { size: 40 * 1024 * 1024, metadataProfile: 'single', now: NOW });
    const w = await FsWriter.open(dev, { now: () => NOW });
    let t = w.transaction();
    for (let i = 0; i < 40; i++) await addRawFile(t, `f${i}`, Buffer.alloc(i % 4 === 0 ? 4096 : 0, i));
    await w.commit();
    for (const name of ['sent', 'other']) {
      t = w.transaction();
      await createSnapshot(t, OBJ.FS_TREE, { parentTree: OBJ.FS_TREE, parentDir: 256n, name: Buffer.from(name) }, NOW, { readonly: true });
      await w.commit();
    }
    base = dev.snapshot();
    await w.close();
  });

  interface World {
    w: FsWriter;
    locks: RootLocks;
    log: string[];
    ctx(point: Point, failAt?: string): SubvolContext;
  }

  async function world(): Promise<World> {
    const w = await FsWriter.open(MemoryDevice.fromBuffer(Buffer.from(base)), { now: () => NOW });
    const locks = new RootLocks();
    const log: string[] = [];
    return {
      w, locks, log,
      ctx: (point, failAt) => ({
        writer: w, locks, now: () => NOW,
        point: async (label) => {
          if (label === failAt) throw Object.assign(new Error(`injected failure at ${label}`), { code: 'EIO' });
          // a deletion's tree changes and commit run as one step, as operations
          // on one writer do (its queue serializes them); the protocol's await
          // points are around the root_item_lock sections
          if (label === 'delete:before-commit') return;
          await point(label);
        },
      }),
    };
  }

  function sendTask(W: World, consumerFails: boolean): Task {
    return {
      name: 'send',
      run: async (point) => {
        await point('start');
        let guards;
        try {
          guards = await acquireSendGuards(W.w.info, [SENT], { locks: W.locks });
        } catch (e) {
          expect(isBtrfsError(e, 'EPERM') || isBtrfsError(e, 'ENOENT'), String(e)).to.equal(true);
          W.log.push('send:refused');
          return;
        }
        W.log.push('send:counted');
        try {
          await point('streaming');
          // what a send reads while it runs: its root must be alive and read-only
          const g = W.locks.peek(SENT)!.peek();
          expect(g.flags & ROOT_FLAG.SUBVOL_DEAD, 'a send saw its root DEAD').to.equal(0n);
          expect(g.flags & ROOT_FLAG.SUBVOL_RDONLY, 'a send saw its root read-write').to.equal(ROOT_FLAG.SUBVOL_RDONLY);
          const { item } = await W.w.transaction().rootItem(SENT);
          expect(item.refs, 'a send saw its root unlinked').to.equal(1);
          await point('streamed');
          if (consumerFails) throw Object.assign(new Error('consumer went away'), { code: 'EPIPE' });
        } catch (e) {
          if ((e as { code?: string }).code !== 'EPIPE') throw e;
        } finally {
          await guards.release();
          W.log.push('send:released');
        }
      },
    };
  }

  function deleteTask(W: World, id: bigint, name: string, failAt?: string): Task {
    return {
      name,
      run: async (point) => {
        await point('start');
        try {
          await deleteSubvolume(W.ctx(async (l) => {
            if (l === 'delete:dead-set') W.log.push(`${name}:dead-set`);
            await point(l);
          }, failAt), id);
          W.log.push(`${name}:done`);
        } catch (e) {
          W.log.push(`${name}:${(e as { code?: string }).code}`);
        }
      },
    };
  }

  function readWriteTask(W: World): Task {
    return {
      name: 'rw',
      run: async (point) => {
        await point('start');
        try {
          await setReadOnly(W.ctx(point), SENT, false);
          W.log.push('rw:done');
        } catch (e) {
          W.log.push(`rw:${(e as { code?: string }).code}`);
        }
      },
    };
  }

  async function explore(make: (W: World) => Task[], check: (W: World) => Promise<void>): Promise<number> {
    let choices: number[] | undefined = [];
    let runs = 0;
    while (choices) {
      const W = await world();
      try {
        const { branching, order } = await runSchedule(make(W), choices);
        try {
          await check(W);
        } catch (e) {
          throw new Error(`schedule ${JSON.stringify(choices)} (${order.join(' ')}) log ${W.log.join(' ')}: ${(e as Error).message}`);
        }
        choices = nextChoices(choices, branching);
      } finally {
        await W.w.close();
      }
      runs++;
    }
    return runs;
  }

  async function common(W: World): Promise<void> {
    for (const id of [SENT, OTHER]) {
      const l = W.locks.peek(id);
      if (l) expect(l.peek().sendInProgress, `send_in_progress of ${id}`).to.equal(0);
    }
    const counted = W.log.indexOf('send:counted');
    const released = W.log.indexOf('send:released');
    const deadSet = W.log.indexOf('del:dead-set');
    // the protocol's core: DEAD is never set while the send is counted in
    if (counted >= 0 && deadSet >= 0) expect(deadSet < counted || deadSet > released, 'DEAD set during a send').to.equal(true);
    await W.w.commit();
    // whatever happened, what is on disk agrees with the locks and the outcome
    const t = W.w.transaction();
    const sent = await t.rootItem(SENT);
    const deleted = W.log.includes('del:done');
    expect(sent.item.refs).to.equal(deleted ? 0 : 1);
    expect((sent.item.flags & ROOT_FLAG.SUBVOL_DEAD) !== 0n).to.equal(deleted);
    if (W.log.includes('del:EPERM')) expect(counted >= 0 && W.log.includes('send:counted')).to.equal(true);
  }

  it('send, delete and set-read-write: every order', async () => {
    const runs = await explore((W) => [sendTask(W, false), deleteTask(W, SENT, 'del'), readWriteTask(W)], common);
    expect(runs).to.be.greaterThan(50);
  });

  it('send whose consumer fails, delete, and a deletion of another root that fails after setting DEAD: every order', async () => {
    const runs = await explore(
      (W) => [sendTask(W, true), deleteTask(W, SENT, 'del'), deleteTask(W, OTHER, 'fail', 'delete:before-commit')],
      async (W) => {
        await common(W);
        // the failed deletion undid what it set
        expect(W.log).to.include('fail:EIO');
        expect(W.locks.peek(OTHER)!.peek().flags & ROOT_FLAG.SUBVOL_DEAD).to.equal(0n);
        const { item } = await W.w.transaction().rootItem(OTHER);
        expect(item.flags & ROOT_FLAG.SUBVOL_DEAD).to.equal(0n);
        expect(item.refs).to.equal(1);
      },
    );
    expect(runs).to.be.greaterThan(50);
  });
});
