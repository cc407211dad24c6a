/**
 * The shape docs/architecture.md draws: dependency-cruiser finds no module
 * cycle and no import into another folder's internals, and the folder graph
 * it finds has no cycle and is exactly the "may import" column of the table.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, '../..');

interface Cruise {
  modules: Array<{
    source: string;
    dependencies: Array<{ resolved: string; coreModule: boolean }>;
  }>;
  summary: { violations: Array<{ rule: { name: string }; from: string; to: string }> };
}

let cruise: Cruise;

beforeAll(async () => {
  // depcruise exits non-zero when it finds violations; the JSON is printed either way.
  const result = await run(
    'npx',
    ['depcruise', 'src', '--config', '.dependency-cruiser.cjs', '--output-type', 'json'],
    { cwd: repo, maxBuffer: 64 * 1024 * 1024 },
  ).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? '' }));
  cruise = JSON.parse(result.stdout) as Cruise;
}, 120_000);

/** The unit a src file belongs to: a folder of src/core, `index.ts`, the kernel, or cli/commands. */
function unitOf(file: string): string | undefined {
  const core = /^src\/core\/([^/]+)(\/)?/.exec(file);
  if (core !== null) {
    if (core[2] === '/') return core[1];
    return core[1] === 'index.ts' ? 'index.ts' : 'kernel';
  }
  const top = /^src\/([^/]+)\//.exec(file);
  return top?.[1];
}

function folderGraph(): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const module of cruise.modules) {
    const from = unitOf(module.source);
    if (from === undefined) continue;
    if (!graph.has(from)) graph.set(from, new Set());
    for (const dependency of module.dependencies) {
      if (dependency.coreModule) continue;
      const to = unitOf(dependency.resolved);
      if (to !== undefined && to !== from) graph.get(from)!.add(to);
    }
  }
  return graph;
}

/** The table of docs/architecture.md: folder → the folders it may import. */
function documentedGraph(): Map<string, Set<string>> {
  const doc = fs.readFileSync(path.join(repo, 'docs/architecture.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| `([^`]+)` \| [^\n]*\| ([^|\n]+) \|$/gm)];
  return new Map(
    rows.map((row) => [
      row[1]!,
      new Set([...row[2]!.matchAll(/`([^`]+)`/g)].map((name) => name[1]!)),
    ]),
  );
}

describe('the architecture of src/', () => {
  it('has no module cycle and no import past a folder index (dependency-cruiser)', () => {
    expect(cruise.modules.length).toBeGreaterThan(100);
    const violations = cruise.summary.violations.map(
      (violation) => `${violation.rule.name}: ${violation.from} → ${violation.to}`,
    );
    expect(violations).toEqual([]);
  });

  it('has no cycle between folders', () => {
    const graph = folderGraph();
    const done = new Set<string>();
    const visiting: string[] = [];
    const visit = (unit: string): void => {
      if (done.has(unit)) return;
      if (visiting.includes(unit)) {
        expect.fail(
          `folder cycle: ${[...visiting.slice(visiting.indexOf(unit)), unit].join(' → ')}`,
        );
      }
      visiting.push(unit);
      for (const next of graph.get(unit) ?? []) visit(next);
      visiting.pop();
      done.add(unit);
    };
    for (const unit of graph.keys()) visit(unit);
  });

  it('imports between folders exactly as docs/architecture.md says', () => {
    const documented = documentedGraph();
    const actual = folderGraph();
    const folders = fs
      .readdirSync(path.join(repo, 'src/core'), { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name);
    expect([...documented.keys()].sort()).toEqual([...folders, 'index.ts'].sort());
    for (const [unit, allowed] of documented) {
      const uses = [...(actual.get(unit) ?? [])].filter((to) => to !== 'kernel').sort();
      expect({ unit, uses }).toEqual({ unit, uses: [...allowed].sort() });
    }
    for (const unit of ['cli', 'commands']) {
      const uses = [...(actual.get(unit) ?? [])].filter((to) => to !== 'cli' && to !== 'commands');
      expect({ unit, uses }).toEqual({ unit, uses: ['index.ts'] });
    }
    expect([...(actual.get('kernel') ?? [])]).toEqual([]);
  });
});
