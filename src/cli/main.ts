#!/usr/bin/env node
/**
 * tsbtrfs COMMAND IMAGE ... — btrfs images without root or a kernel mount.
 * Each command lives in commands/; this file wires them up and turns every
 * error into one line on stderr and a non-zero exit.
 */
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';
import { register as registerInspect } from './commands/inspect.js';
import { register as registerFiles } from './commands/files.js';
import { register as registerCheck } from './commands/check.js';
import { register as registerMkfs } from './commands/mkfs.js';
import { register as registerProperty } from './commands/subvolume.js';
import { register as registerWrite } from './commands/write.js';
import { register as registerReceive } from './commands/receive.js';
import { register as registerSend } from './commands/send.js';
import { fail } from './util.js';

const require = createRequire(import.meta.url);
const pkg = require('../../../package.json') as { version: string };

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('tsbtrfs')
    .description('Read btrfs filesystem images offline: inspect trees, list subvolumes, read and extract files, check consistency.\nPaths in the image are absolute from the top-level subvolume.')
    .version(pkg.version)
    .showHelpAfterError()
    .exitOverride();
  registerInspect(program);
  registerFiles(program);
  registerCheck(program);
  registerMkfs(program);
  registerProperty(program);
  registerWrite(program);
  registerReceive(program);
  registerSend(program);
  return program;
}

async function main(): Promise<void> {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
    fail(e);
  }
}

await main();
