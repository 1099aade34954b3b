/** A progress bar on a terminal and nothing when stderr is piped (cli-progress). */
import cliProgress from 'cli-progress';

export class Progress {
  private bar?: cliProgress.SingleBar;
  private stopped = false;

  static start(label: string): Progress | undefined {
    if (!process.stderr.isTTY) return undefined;
    const p = new Progress();
    p.bar = new cliProgress.SingleBar({
      format: `${label} | {files} files | {mib} MiB`,
      stream: process.stderr,
      hideCursor: true,
    }, cliProgress.Presets.shades_classic);
    p.bar.start(0, 0, { files: 0, mib: '0.0' });
    return p;
  }

  update(files: number, bytes: number): void {
    this.bar?.update(0, { files, mib: (bytes / 1048576).toFixed(1) });
  }

  stop(): void {
    if (!this.stopped) { this.stopped = true; this.bar?.stop(); }
  }
}
