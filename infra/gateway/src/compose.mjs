// Composes subgraph SDLs into a supergraph with Apollo's own composition library, and refuses
// any error or hint that matters. Used by the gateway at start and by scripts/test-federation.sh.
//
//   node src/compose.mjs [--out supergraph.graphql] name=url=file.graphql ...
//
// Without arguments it composes the engine's committed SDL with the test subgraph's.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { parse } from 'graphql';
import { composeServices } from '@apollo/composition';

const here = dirname(fileURLToPath(import.meta.url));
export const ENGINE_SDL = resolve(here, '../../graphql/schema.graphql');

// Hints that say nothing is wrong for a supergraph of independently owned subgraphs.
const BENIGN_HINTS = new Set([
  // Subgraphs may describe a shared type in their own words.
  'INCONSISTENT_DESCRIPTION',
]);

/** Composes `[{name, url, sdl}]`; returns the supergraph SDL or throws with every problem. */
export function compose(subgraphs) {
  const result = composeServices(
    subgraphs.map(({ name, url, sdl }) => ({ name, url, typeDefs: parse(sdl) })),
  );
  if (result.errors && result.errors.length > 0) {
    const lines = result.errors.map((e) => `  ${e.extensions?.code ?? 'ERROR'}: ${e.message}`);
    throw new Error(`composition failed:\n${lines.join('\n')}`);
  }
  const hints = (result.hints ?? []).filter((h) => !BENIGN_HINTS.has(h.definition.code));
  if (hints.length > 0) {
    const lines = hints.map((h) => `  ${h.definition.code}: ${h.message}`);
    throw new Error(`composition hints that need a decision:\n${lines.join('\n')}`);
  }
  return result.supergraphSdl;
}

/** `name=url=path` → `{name, url, sdl}`; the URL may hold `=` in its query, the path may not. */
export function subgraphArg(arg) {
  const first = arg.indexOf('=');
  const last = arg.lastIndexOf('=');
  if (first < 1 || last === first) {
    throw new Error(`a subgraph is name=url=sdl-file, got ${JSON.stringify(arg)}`);
  }
  return {
    name: arg.slice(0, first),
    url: arg.slice(first + 1, last),
    sdl: readFileSync(arg.slice(last + 1), 'utf8'),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  let out;
  const outAt = args.indexOf('--out');
  if (outAt >= 0) {
    out = args[outAt + 1];
    args.splice(outAt, 2);
  }
  try {
    const subgraphs = args.length > 0
      ? args.map(subgraphArg)
      : [
          { name: 'engine', url: 'http://127.0.0.1:8080/graphql', sdl: readFileSync(ENGINE_SDL, 'utf8') },
          {
            name: 'notes',
            url: 'http://127.0.0.1:4001/graphql',
            sdl: (await import('../test/notes-subgraph.mjs')).typeDefsText,
          },
        ];
    const supergraph = compose(subgraphs);
    if (out) writeFileSync(out, supergraph);
    console.log(
      `composed ${subgraphs.map((s) => s.name).join(' + ')}: ${supergraph.length} bytes of supergraph, no errors, no hints that matter`,
    );
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
