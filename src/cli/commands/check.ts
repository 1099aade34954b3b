/** `tsbtrfs check IMAGE`: a read-only fsck, reported like btrfs check; exit 1 when errors are found. */
import type { Command } from 'commander';
import { checkImage, formatFinding, reportToJson, type CheckOptions } from '../../check/index.js';
import { fail, write } from '../output.js';

type Progress = Parameters<NonNullable<CheckOptions['onProgress']>>[0];

/**
 * A progress bar on stderr, only when stderr is a terminal (a pipe or a log
 * file gets nothing); it is cleared when the check ends, before the report.
 */
async function progressBar(): Promise<{ update: (p: Progress) => void; stop: () => void } | undefined> {
  if (!process.stderr.isTTY) return undefined;
  // Loaded only for a terminal: most checks run in scripts, where its start-up would be wasted.
  const { default: cliProgress } = await import('cli-progress');
  const bar = new cliProgress.SingleBar({
    format: 'checking |{bar}| {percentage}% | {phase}{detail}',
    stream: process.stderr,
    hideCursor: true,
    clearOnComplete: true,
    barsize: 30,
  }, cliProgress.Presets.shades_classic);
  bar.start(1000, 0, { phase: 'opening filesystem', detail: '' });
  let stopped = false;
  return {
    update: (p) => bar.update(Math.round(p.fraction * 1000), { phase: p.phase.replace(/^checking /, ''), detail: p.detail ? ` (${p.detail})` : '' }),
    stop: () => { if (!stopped) { stopped = true; bar.stop(); } },
  };
}

export function register(program: Command): void {
  program
    .command('check')
    .description('check a btrfs image for consistency (read-only); exit 0 only when no errors are found')
    .argument('<image>', 'filesystem image')
    .option('--check-data-csum', 'also read every data block and verify its checksum')
    .option('--json', 'print the report as JSON')
    .action(async (image: string, opts: { checkDataCsum?: boolean; json?: boolean }) => {
      const bar = await progressBar();
      try {
        const r = await checkImage(image, { checkDataCsum: opts.checkDataCsum ?? false, onProgress: bar?.update });
        bar?.stop();
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
        bar?.stop();
        fail(e);
      }
    });
}
