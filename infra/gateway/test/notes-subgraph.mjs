// A second subgraph, as another team would run one: it extends the engine's `Workflow` and
// `User` entities with fields of its own (notes kept in memory, keyed by entity id). The
// federation tests run it beside the engine's subgraph behind the gateway.
//
//   PORT=4001 node test/notes-subgraph.mjs
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { parse } from 'graphql';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { readFileSync } from 'node:fs';

export const typeDefsText = readFileSync(new URL('./notes.graphql', import.meta.url), 'utf8');

const resolvers = {
  Workflow: {
    __resolveReference: (ref) => ({ id: ref.id }),
    // Says so if a caller's token reached this subgraph (the gateway must not forward it here).
    note: (w, _args, context) =>
      `note for ${w.id}${context.authorization ? ' [a bearer token reached the notes subgraph]' : ''}`,
  },
  User: {
    __resolveReference: (ref) => ({ id: ref.id }),
    noteCount: (u) => u.id.length,
  },
};

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const server = new ApolloServer({
    schema: buildSubgraphSchema({ typeDefs: parse(typeDefsText), resolvers }),
  });
  const { url } = await startStandaloneServer(server, {
    listen: { host: '127.0.0.1', port: Number(process.env.PORT ?? 4001) },
    context: async ({ req }) => ({ authorization: req.headers.authorization }),
  });
  console.log(`notes subgraph listening on ${url}`);
}
