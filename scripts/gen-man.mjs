#!/usr/bin/env node
/**
 * Renders man pages from the same oclif command metadata that `--help` prints, so the two cannot
 * drift: man/elide.1 plus man/elide-<topic>-<command>.1 for every command.
 *
 *   node scripts/gen-man.mjs           write man/*.1 (run after `npm run build`)
 *   node scripts/gen-man.mjs --check   exit 1 if the committed pages differ from generated ones
 */
import { mkdir, readdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Config, toConfiguredId } from '@oclif/core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const manDir = path.join(root, 'man');
const check = process.argv.includes('--check');

const config = await Config.load({ root });
// Exit statuses come from the engine's error table, so the EXIT STATUS section cannot go stale.
const { errorCodes } = await import(pathToFileURL(path.join(root, 'dist/core/index.js')).href);

/** Escapes text for roff: backslashes, minus signs and control characters at line starts. */
function esc(text) {
  return String(text)
    .replaceAll('\\', '\\e')
    .replaceAll('-', '\\-')
    .split('\n')
    .map((line) => (/^[.']/.test(line) ? `\\&${line}` : line))
    .join('\n');
}

const bold = (text) => `\\fB${esc(text)}\\fR`;
const italic = (text) => `\\fI${esc(text)}\\fR`;
const displayId = (id) => toConfiguredId(id, config);
const pageName = (id) => `${config.bin}-${displayId(id).replaceAll(' ', '-')}`;

/**
 * Paragraphs separated by blank lines; single newlines stay line breaks. Inside a .TP item the
 * separator must be .IP, which keeps the item's indentation (.PP would reset it).
 */
function paragraphs(text, separator = '.PP') {
  return text
    .trim()
    .split(/\n\s*\n/)
    .map((paragraph) => esc(paragraph.trim()).replaceAll('\n', '\n.br\n'))
    .join(`\n${separator}\n`);
}

function assertNoTemplates(command, text) {
  // --help renders ejs templates (<%= config.bin %>) and a man page could not; keep text literal.
  if (typeof text === 'string' && text.includes('<%')) {
    throw new Error(`${command.id}: help text uses an oclif template; write it out literally`);
  }
}

const visibleFlags = (command) =>
  Object.values(command.flags ?? {})
    .filter((flag) => !flag.hidden)
    .sort((a, b) => {
      // Command flags first, then GLOBAL ones; alphabetical within each group, as --help does.
      const group = (flag) => (flag.helpGroup === 'GLOBAL' ? 1 : 0);
      return group(a) - group(b) || a.name.localeCompare(b.name);
    });

const visibleArgs = (command) => Object.values(command.args ?? {}).filter((arg) => !arg.hidden);

function flagValueName(flag) {
  if (flag.type !== 'option') return undefined;
  if (flag.helpValue) return [flag.helpValue].flat().join(' ');
  if (flag.options) return flag.options.join('|');
  return 'VALUE';
}

function flagSynopsis(flag) {
  const name = flag.char ? `-${flag.char}` : `--${flag.name}`;
  const value = flagValueName(flag);
  const text = value === undefined ? bold(name) : `${bold(name)} ${italic(value)}`;
  return flag.required ? text : `[${text}]`;
}

function synopsis(command) {
  const parts = [bold(`${config.bin} ${displayId(command.id)}`)];
  for (const arg of visibleArgs(command)) {
    // Same rule as --help: variadic args, or any arg of a non-strict command, take "...".
    const variadic = arg.multiple || command.strict === false;
    const name = arg.name.toUpperCase() + (variadic ? '...' : '');
    parts.push(arg.required ? italic(name) : `[${italic(name)}]`);
  }
  const flags = visibleFlags(command);
  parts.push(...flags.filter((f) => f.required).map(flagSynopsis));
  parts.push(...flags.filter((f) => !f.required).map(flagSynopsis));
  // Left-aligned so the option list wraps between options instead of stretching.
  return ['.ad l', parts.join(' '), '.ad'].join('\n');
}

function flagEntry(flag) {
  const names = [flag.char ? bold(`-${flag.char}`) : undefined, bold(`--${flag.name}`)]
    .filter(Boolean)
    .join(', ');
  const value = flagValueName(flag);
  const lines = ['.TP', value === undefined ? names : `${names} ${italic(value)}`];
  const body = [flag.summary, flag.description].filter(Boolean);
  if (body.length > 0) lines.push(paragraphs(body.join('\n\n'), '.IP'));
  const facts = [];
  if (flag.required) facts.push('Required.');
  if (flag.options) facts.push(`One of: ${flag.options.map(bold).join(', ')}.`);
  if (flag.default !== undefined && flag.type === 'option') {
    facts.push(`Default: ${bold(flag.default)}.`);
  }
  if (flag.env) facts.push(`Environment: ${bold(flag.env)}.`);
  if (facts.length > 0) lines.push('.IP', facts.join(' '));
  return lines.join('\n');
}

function environmentEntries(flags) {
  const entries = flags
    .filter((flag) => flag.env)
    .map((flag) => ['.TP', bold(flag.env), `Default for ${bold(`--${flag.name}`)}.`].join('\n'));
  entries.push(
    ['.TP', bold('ELIDE_DEBUG'), 'Set to 1 to print the stack trace and details of an error.'].join(
      '\n',
    ),
  );
  return entries.join('\n');
}

/** ELIDE_INTERRUPTED exits 128 + the number of the signal received; errorCodes holds SIGINT's. */
const interruptedStatuses = new Map([
  [130, 'SIGINT'],
  [143, 'SIGTERM'],
]);

function exitStatusSection() {
  const byStatus = new Map();
  for (const [code, [status]] of Object.entries(errorCodes)) {
    if (code === 'ELIDE_INTERRUPTED') continue;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  for (const status of interruptedStatuses.keys()) byStatus.set(status, ['ELIDE_INTERRUPTED']);
  const lines = [
    '.SH EXIT STATUS',
    `${bold('0')} on success. On failure a single line ${bold('elide: ')}${italic('message')}` +
      ' is written to standard error (with a stack trace only when ELIDE_DEBUG=1) and the' +
      ' exit status identifies the kind of error:',
  ];
  for (const status of [...byStatus.keys()].sort((a, b) => a - b)) {
    const codes = byStatus.get(status).map(bold).join(', ');
    const extra =
      status === 1
        ? ' (and any unexpected error)'
        : status === 2
          ? ' (and command-line usage errors)'
          : interruptedStatuses.has(status)
            ? ` (stopped by ${interruptedStatuses.get(status)}; a second signal exits at once)`
            : '';
    lines.push('.TP', bold(String(status)), `${codes}${esc(extra)}`);
  }
  return lines.join('\n');
}

function header(name, description) {
  return [
    `.\\" Generated by scripts/gen-man.mjs from the oclif command metadata. Do not edit.`,
    `.TH ${esc(name.toUpperCase())} 1 "" "${esc(`${config.name} ${config.version}`)}" "elide manual"`,
    // No hyphenation: flag names, error codes and paths must survive copy and paste.
    '.nh',
    '.SH NAME',
    `${esc(name)} \\- ${esc(description)}`,
  ].join('\n');
}

function seeAlso(pages) {
  return ['.SH SEE ALSO', pages.map((page) => `${bold(page)}(1)`).join(',\n')].join('\n');
}

function commandPage(command, commands) {
  for (const text of [command.summary, command.description]) assertNoTemplates(command, text);
  const flags = visibleFlags(command);
  const args = visibleArgs(command);
  const summary = command.summary ?? command.description?.split('\n')[0] ?? '';
  const sections = [header(pageName(command.id), summary), '.SH SYNOPSIS', synopsis(command)];
  sections.push('.SH DESCRIPTION', paragraphs(summary));
  if (command.description) sections.push('.PP', paragraphs(command.description));
  if (args.length > 0) {
    sections.push('.SH ARGUMENTS');
    for (const arg of args) {
      sections.push(
        '.TP',
        italic(arg.name.toUpperCase()),
        paragraphs(arg.description ?? '', '.IP'),
      );
    }
  }
  const own = flags.filter((flag) => flag.helpGroup !== 'GLOBAL');
  const global = flags.filter((flag) => flag.helpGroup === 'GLOBAL');
  if (flags.length > 0) sections.push('.SH OPTIONS');
  sections.push(...own.map(flagEntry));
  if (global.length > 0) sections.push('.SS Global options', ...global.map(flagEntry));
  const examples = [command.examples ?? []].flat();
  if (examples.length > 0) {
    sections.push('.SH EXAMPLES');
    for (const example of examples) {
      const { description, command: line } =
        typeof example === 'string' ? { description: undefined, command: example } : example;
      assertNoTemplates(command, line);
      if (description) sections.push('.PP', paragraphs(description));
      sections.push('.PP', '.RS 4', '.nf', esc(`$ ${line}`), '.fi', '.RE');
    }
  }
  sections.push('.SH ENVIRONMENT', environmentEntries(flags), exitStatusSection());
  const others = commands.filter((other) => other.id !== command.id).map((c) => pageName(c.id));
  sections.push(seeAlso([config.bin, ...others]));
  return `${sections.join('\n')}\n`;
}

/** Which commands take --json, from their flags (serve nbd, for one, prints no result). */
function jsonCommands(commands) {
  const without = commands.filter((command) => command.flags?.json === undefined);
  if (without.length === 0) return 'Every command accepts';
  const names = without.map((command) => bold(displayId(command.id)));
  const list =
    names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
  return `Every command but ${list} accepts`;
}

function mainPage(commands) {
  const description = config.pjson.description ?? '';
  const sections = [
    header(config.bin, description),
    '.SH SYNOPSIS',
    `${bold(config.bin)} ${italic('topic')} ${italic('command')} [${italic('arguments')}] [${italic('options')}]`,
    '.br',
    `${bold(config.bin)} ${italic('topic')} ${italic('command')} ${bold('--help')}`,
    '.br',
    `${bold(config.bin)} ${bold('--version')}`,
    '.SH DESCRIPTION',
    paragraphs(description),
    '.PP',
    `${jsonCommands(commands)} ${bold('--json')}, which prints its result as a bare JSON value on` +
      ' standard output and nothing else; errors still go to standard error.',
    '.SH COMMANDS',
  ];
  for (const command of commands) {
    const summary = command.summary ?? command.description?.split('\n')[0] ?? '';
    sections.push(
      '.TP',
      bold(`${config.bin} ${displayId(command.id)}`),
      `${esc(summary)} See ${bold(pageName(command.id))}(1).`,
    );
  }
  // The global flags are the same on every command; describe them once here. --json is not
  // on every command: the DESCRIPTION says which have it.
  const global = commands.length > 0 ? visibleFlags(commands[0]) : [];
  const globalFlags = global.filter((flag) => flag.helpGroup === 'GLOBAL' && flag.name !== 'json');
  sections.push('.SH GLOBAL OPTIONS', ...globalFlags.map(flagEntry));
  sections.push('.SH ENVIRONMENT', environmentEntries(globalFlags), exitStatusSection());
  sections.push(seeAlso(commands.map((command) => pageName(command.id))));
  return `${sections.join('\n')}\n`;
}

const commands = config.commands
  .filter((command) => !command.hidden)
  .sort((a, b) => a.id.localeCompare(b.id));
// Loading each command proves it imports cleanly; the page itself uses the cached metadata,
// which is exactly what --help renders (base flags and --json merged in).
await Promise.all(commands.map((command) => command.load()));

const pages = new Map([[`${config.bin}.1`, mainPage(commands)]]);
for (const command of commands)
  pages.set(`${pageName(command.id)}.1`, commandPage(command, commands));

const existing = (await readdir(manDir).catch(() => [])).filter(
  (file) => file.startsWith(`${config.bin}`) && file.endsWith('.1'),
);
const stale = existing.filter((file) => !pages.has(file));

if (check) {
  const problems = [...stale.map((file) => `${file}: no longer generated`)];
  for (const [file, text] of pages) {
    const current = await readFile(path.join(manDir, file), 'utf8').catch(() => undefined);
    if (current === undefined) problems.push(`${file}: missing`);
    else if (current !== text) problems.push(`${file}: out of date`);
  }
  if (problems.length > 0) {
    for (const problem of problems) process.stderr.write(`man/${problem}\n`);
    process.stderr.write(
      'man pages differ from the commands; run `npm run build && npm run man`\n',
    );
    process.exit(1);
  }
  process.stdout.write(`man pages up to date (${pages.size})\n`);
} else {
  await mkdir(manDir, { recursive: true });
  for (const [file, text] of pages) await writeFile(path.join(manDir, file), text);
  for (const file of stale) await unlink(path.join(manDir, file));
  process.stdout.write(`wrote ${pages.size} man pages to man/\n`);
}
