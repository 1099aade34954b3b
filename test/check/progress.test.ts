/**
 * `tsbtrfs check` draws a progress bar on stderr only when stderr is a
 * terminal: piped, stderr stays empty. The terminal case runs the CLI under
 * script(1), which gives it a pseudo-terminal.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { checkImage, type CheckOptions } from '../../src/check/index.js';
import { fixturePath, builtPath } from '../helpers/fixtures.js';

const cli = builtPath('src/cli/main.js');
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

describe('check: progress', function () {
  this.timeout(120_000);

  it('reports phases in order with a fraction that only grows, ending near 1', async () => {
    const seen: Parameters<NonNullable<CheckOptions['onProgress']>>[0][] = [];
    const r = await checkImage(await fixturePath('subvols-snapshots-default-received'), { onProgress: (p) => seen.push(p) });
    expect(r.clean).to.equal(true);
    expect(seen[0]!.phase).to.equal('opening filesystem');
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.fraction).to.be.at.least(seen[i - 1]!.fraction);
    expect(seen.at(-1)!.fraction).to.be.above(0.9);
    expect(seen.some((p) => p.phase === 'checking fs roots' && /inodes of root 256/.test(p.detail ?? ''))).to.equal(true);
  });

  it('writes nothing to stderr when it is not a terminal', async () => {
    const img = await fixturePath('empty');
    const r = spawnSync(process.execPath, [cli, 'check', img], { encoding: 'utf8' });
    expect(r.status).to.equal(0);
    expect(r.stderr).to.equal('');
    expect(r.stdout).to.match(/no error found/);
  });

  it('draws a bar on a terminal, and clears it before the report', async function () {
    if (spawnSync('script', ['--version']).error) this.skip();
    const img = await fixturePath('nodesize-4k-large-dir');
    // Only stderr is the terminal here: stdout goes to a file, as when a report is saved.
    const r = spawnSync('script', ['-qec', `${q(process.execPath)} ${q(cli)} check ${q(img)} >/dev/null`, '/dev/null'], { encoding: 'utf8' });
    expect(r.status).to.equal(0);
    expect(r.stdout).to.match(/checking \|[█░]+\| \d+% \| /);
  });
});
