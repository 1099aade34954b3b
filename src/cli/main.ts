#!/usr/bin/env node
/**
 * tsbtrfs COMMAND IMAGE ... — btrfs images without root or a kernel mount.
 * Each command lives in commands/; this file wires them up and turns every
 * error into one line on stderr and a non-zero exit.
 */
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const pkg = require('../../../package.json') as { version: string };

type Register = (program: Command) => void;

/**
 * The commands, loaded when needed. `check` alone loads only the checker: it
 * is the command most often run in a loop (and timed against btrfs check),
 * and loading every module of the library would be a third of its time on
 * a small image.
 */
async function registrations(command: string | undefined): Promise<Register[]> {
  if (command === 'check') return [(await import('./commands/check.js')).register];
  const mods = await Promise.all([
    import('./commands/inspect.js'), import('./commands/files.js'), import('./commands/check.js'), import('./commands/mkfs.js'),
    import('./commands/subvolume.js'), import('./commands/write.js'), import('./commands/receive.js'), import('./commands/send.js'),
  ]);
  return mods.map((m) => m.register);
}

export async function buildProgram(command?: string): Promise<Command> {
  const program = new Command();
  program
    .name('tsbtrfs')
    .description('Read btrfs filesystem images offline: inspect trees, list subvolumes, read and extract files, check consistency.\nPaths in the image are absolute from the top-level subvolume.')
    .version(pkg.version)
    .showHelpAfterError()
    .exitOverride();
  for (const register of await registrations(command)) register(program);
  return program;
}

async function main(): Promise<void> {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  const program = await buildProgram(process.argv[2]);
  try {
    await program.parseAsync(process.argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
    (await import('./output.js')).fail(e);
  }
}

await main();
