/** `tsbtrfs check IMAGE`: a read-only fsck, reported like btrfs check; exit 1 when errors are found. */
import type { Command } from 'commander';
import { checkImage, formatFinding, reportToJson } from '../../index.js';
import { fail, write } from '../util.js';

export function register(program: Command): void {
  program
    .command('check')
    .description('check a btrfs image for consistency (read-only); exit 0 only when no errors are found')
    .argument('<image>', 'filesystem image')
    .option('--check-data-csum', 'also read every data block and verify its checksum')
    .option('--json', 'print the report as JSON')
    .action(async (image: string, opts: { checkDataCsum?: boolean; json?: boolean }) => {
      try {
        const progress = !opts.json && process.stderr.isTTY ? (phase: string) => { process.stderr.write(`\r\x1b[K[${phase}]`); } : undefined;
        const r = await checkImage(image, { checkDataCsum: opts.checkDataCsum ?? false, onProgress: progress });
        if (progress) process.stderr.write('\r\x1b[K');
        if (opts.json) {
          await write(JSON.stringify(reportToJson(r), null, 2) + '\n');
        } else {
          await write(`Checking filesystem on ${r.image}\n`);
          for (const f of r.findings) await write(formatFinding(f) + '\n');
          if (r.dropped) await write(`... and ${r.dropped} more findings not shown\n`);
          const s = r.stats;
          await write(`checked ${s.trees} trees, ${s.treeBlocks} tree blocks, ${s.extentItems} extent items, ${s.blockGroups} block groups, ` +
            `${s.inodes} inodes${opts.checkDataCsum ? `, ${s.bytesChecked} data bytes` : ''} in ${(r.elapsedMs / 1000).toFixed(2)}s\n`);
          await write(r.clean
            ? `no error found${r.warnings ? ` (${r.warnings} warning${r.warnings === 1 ? '' : 's'})` : ''}\n`
            : `found ${r.errors} error${r.errors === 1 ? '' : 's'}${r.warnings ? ` and ${r.warnings} warning${r.warnings === 1 ? '' : 's'}` : ''}\n`);
        }
        process.exitCode = r.clean ? 0 : 1;
      } catch (e) {
        fail(e);
      }
    });
}
