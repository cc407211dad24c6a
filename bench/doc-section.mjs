// Rewrites one generated section of docs/benchmarks.md: the text between
// `<!-- NAME:start -->` and `<!-- NAME:end -->`, or a new section under
// `## HEADING` at the end when the markers are not there yet. Other sections
// are left as they are.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const docPath = path.join(
  path.dirname(path.dirname(fileURLToPath(import.meta.url))),
  'docs',
  'benchmarks.md',
);

export function writeDocSection(name, heading, body) {
  const section = `<!-- ${name}:start -->\n${body}\n<!-- ${name}:end -->`;
  let doc = fs.existsSync(docPath) ? fs.readFileSync(docPath, 'utf8') : '# elide benchmarks\n';
  const pattern = new RegExp(`<!-- ${name}:start -->[\\s\\S]*<!-- ${name}:end -->`);
  // A replacer function, so `$` in the text is never read as a replacement pattern.
  doc = pattern.test(doc)
    ? doc.replace(pattern, () => section)
    : `${doc.trimEnd()}\n\n## ${heading}\n\n${section}\n`;
  fs.writeFileSync(docPath, doc);
}
