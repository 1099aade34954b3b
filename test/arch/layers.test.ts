/**
 * The layer rule of ../shared/STYLE.md, enforced: a module imports only from
 * its own layer and the layers below it; the CLI only from index.ts, or from
 * one layer's own index.ts (its public face) for a command that loads only
 * that layer. A failure here is a design question, not a lint to silence.
 */
import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../helpers/fixtures.js';

const ORDER: Record<string, number> = {
  util: 0, device: 1, format: 2, verify: 3, volumes: 4, tree: 5, extent: 6, transaction: 7,
  fs: 8, subvol: 8, send: 9, receive: 9, check: 9, inspect: 9, mkfs: 9, types: -1,
};

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []);
}

describe('architecture: layer imports', () => {
  const src = path.join(repoRoot(), 'src');
  const files = walk(src);

  it('finds the sources', () => {
    expect(files.length).to.be.greaterThan(20);
  });

  it('every import goes to the same or a lower layer; cli imports only index.ts (or a layer\'s index.ts) and itself', () => {
    const problems: string[] = [];
    for (const f of files) {
      const rel = path.relative(src, f);
      const layer = rel.includes(path.sep) ? rel.split(path.sep)[0]! : rel.replace(/\.ts$/, '');
      const text = fs.readFileSync(f, 'utf8');
      for (const m of text.matchAll(/^\s*(?:import|export)[^'"]*from\s+'(\.[^']+)'/gm)) {
        const target = path.relative(src, path.resolve(path.dirname(f), m[1]!));
        const tlayer = target.includes(path.sep) ? target.split(path.sep)[0]! : target.replace(/\.js$/, '');
        if (layer === 'cli') {
          const layerFace = target.split(path.sep).length === 2 && path.basename(target) === 'index.js' && ORDER[tlayer] !== undefined;
          if (tlayer !== 'cli' && tlayer !== 'index' && !layerFace) problems.push(`${rel} imports ${target} (cli may import only index.ts or a layer's index.ts)`);
          continue;
        }
        if (layer === 'index') continue;
        const a = ORDER[layer];
        const b = ORDER[tlayer];
        if (a === undefined) { problems.push(`${rel}: unknown layer ${layer}`); continue; }
        if (b === undefined || b > a) problems.push(`${rel} (${layer}) imports ${target} (${tlayer})`);
      }
    }
    expect(problems).to.deep.equal([]);
  });
});
