// Analyse KQL files with Kusto's own language service (@kusto/language-service-next, the
// Kusto.Language engine behind the Azure portal's query editor), against the classic Application
// Insights schema in appinsights-schema.json.
//
//   node analyse.mjs [--conventions] FILE.kql...  every diagnostic as file:line:col: severity code:
//                                                 message; exit 1 if any is an error
//   node analyse.mjs --expect-errors [--conventions] FILE.kql...
//                                                 self-test: each file must draw at least one error,
//                                                 and every code named on a `// expect: CODE` line
//
// --conventions also holds each file to the repository's rules for infra/queries
// (infra/queries/README.md): a `// ...` comment on the first line, then the defaults, one
// `let <name> = <value>;` per line (Bicep rewrites those lines), including a `window` default.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
// bridge.js defines the Bridge.NET runtime as a global; Kusto.Language.Bridge.js then defines
// globalThis.Kusto.Language on top of it.
require('@kusto/language-service-next/bridge.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.js');
const K = globalThis.Kusto.Language;

function globals() {
  const schema = JSON.parse(readFileSync(path.join(here, 'appinsights-schema.json'), 'utf8'));
  const tables = Object.entries(schema.tables).map(([name, columns]) => {
    const cols = Object.entries(columns).map(([c, t]) => `['${c}']:${t}`).join(', ');
    return new K.Symbols.TableSymbol.$ctor7(name, `(${cols})`, null);
  });
  const db = new K.Symbols.DatabaseSymbol.$ctor1(schema.database, tables, false);
  return K.GlobalState.Default.WithDatabase(db);
}

function lineCol(text, offset) {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const col = offset - (before.lastIndexOf('\n') + 1) + 1;
  return [line, col];
}

function list(netList) {
  const out = [];
  for (let i = 0; i < netList.Count; i++) out.push(netList.getItem(i));
  return out;
}

// The repository's own rules for query files; reported like Kusto's diagnostics.
const LET_LINE = /^let [A-Za-z_][A-Za-z0-9_]* = [^;]+;$/;
function conventions(text) {
  const found = [];
  const lines = text.split('\n');
  if (!/^\/\/ \S/.test(lines[0])) {
    found.push({ offset: 0, code: 'CONV1', message: 'the first line must be a `// ...` comment saying what the query is' });
  }
  let offset = 0;
  let sawWindow = false;
  for (const line of lines) {
    if (line.startsWith('let ') && !line.trimEnd().endsWith(';')) {
      break; // a `let` spread over lines (a tabular one) is the query, not a default
    } else if (line.startsWith('let ')) {
      if (!LET_LINE.test(line)) {
        found.push({ offset, code: 'CONV2', message: 'a default must be alone on its line as `let <name> = <value>;`' });
      }
      if (/^let window = /.test(line)) sawWindow = true;
    } else if (line.trim() !== '' && !line.startsWith('//')) {
      break; // the defaults end where the query begins
    }
    offset += line.length + 1;
  }
  if (!sawWindow) {
    found.push({ offset: 0, code: 'CONV3', message: 'no `let window = <value>;` default before the query' });
  }
  return found;
}

function analyse(file, g, checkConventions) {
  const text = readFileSync(file, 'utf8').replace(/\r\n/g, '\n');
  const code = K.KustoCode.ParseAndAnalyze(text, g);
  const diags = list(code.GetDiagnostics()).map((d) => ({
    offset: d.Start, severity: d.Severity, code: d.Code, message: d.Message,
  }));
  if (checkConventions) {
    for (const c of conventions(text)) diags.push({ ...c, severity: 'Error' });
  }
  diags.sort((a, b) => a.offset - b.offset);
  for (const d of diags) {
    const [line, col] = lineCol(text, d.offset);
    console.log(`${file}:${line}:${col}: ${d.severity.toLowerCase()} ${d.code}: ${d.message}`);
  }
  return { text, diags, errors: diags.filter((d) => d.severity === 'Error') };
}

const args = process.argv.slice(2);
const expectErrors = args.includes('--expect-errors');
const checkConventions = args.includes('--conventions');
const files = args.filter((a) => !a.startsWith('--'));
if (files.length === 0 || args.some((a) => a.startsWith('--') && !['--expect-errors', '--conventions'].includes(a))) {
  console.error('usage: analyse.mjs [--expect-errors] [--conventions] FILE.kql...');
  process.exit(2);
}
const g = globals();
let failed = 0;
for (const file of files) {
  const { text, errors } = analyse(file, g, checkConventions);
  if (expectErrors) {
    const wanted = [...text.matchAll(/^\/\/ expect: (\S+)/gm)].map((m) => m[1]);
    const missing = wanted.filter((w) => !errors.some((e) => e.code === w));
    if (errors.length === 0 || missing.length > 0) {
      console.log(`${file}: SELF-TEST FAILED: expected error(s) ${wanted.join(', ') || '(any)'}; got ${errors.map((e) => e.code).join(', ') || 'none'}`);
      failed++;
    } else {
      console.log(`${file}: refused as expected (${errors.map((e) => e.code).join(', ')})`);
    }
  } else if (errors.length > 0) {
    failed++;
  }
}
if (expectErrors) {
  console.log(`self-test: ${files.length - failed} of ${files.length} bad queries refused`);
} else {
  console.log(`analysed ${files.length} file(s): ${failed} with errors`);
}
process.exit(failed ? 1 : 0);
