// The federation gateway: Apollo Gateway over a supergraph composed at start from the engine's
// committed SDL and any other subgraphs, forwarding each caller's `Authorization` to the
// subgraphs. `GET /health` answers while it runs.
//
// Environment:
//   PORT (4000), HOST (127.0.0.1)
//   ENGINE_GRAPHQL_URL   the engine's subgraph (default http://127.0.0.1:8080/graphql)
//   EXTRA_SUBGRAPHS      more subgraphs, comma-separated name=url=sdl-file
//   GRAPHQL_INTROSPECTION  true to answer introspection at the gateway (off by default)
//   CORS_ORIGINS         comma-separated origins allowed to call from a browser
//                        (default http://localhost:3000, the web app)
import { readFileSync } from 'node:fs';
import express from 'express';
import { ApolloServer } from '@apollo/server';
import { expressMiddleware } from '@as-integrations/express5';
import { ApolloGateway, RemoteGraphQLDataSource } from '@apollo/gateway';
import { compose, ENGINE_SDL, subgraphArg } from './compose.mjs';

// Headers a subgraph needs from the caller: who they are, and the request id to correlate logs.
const FORWARDED = ['authorization', 'x-request-id', 'x-correlation-id'];

class ForwardingDataSource extends RemoteGraphQLDataSource {
  willSendRequest({ request, context }) {
    for (const name of FORWARDED) {
      const value = context?.headers?.[name];
      if (typeof value === 'string' && value.length > 0) request.http.headers.set(name, value);
    }
  }
}

function subgraphs() {
  const engineUrl = process.env.ENGINE_GRAPHQL_URL || 'http://127.0.0.1:8080/graphql';
  const list = [{ name: 'engine', url: engineUrl, sdl: readFileSync(ENGINE_SDL, 'utf8') }];
  for (const arg of (process.env.EXTRA_SUBGRAPHS || '').split(',').filter(Boolean)) {
    list.push(subgraphArg(arg.trim()));
  }
  return list;
}

function cors(origins) {
  return (req, res, next) => {
    const origin = req.headers.origin;
    if (origin && origins.includes(origin)) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
      res.setHeader('Access-Control-Allow-Headers', 'authorization, content-type, x-request-id, apollo-require-preflight');
      res.setHeader('Access-Control-Allow-Methods', 'GET, POST, OPTIONS');
      res.setHeader('Access-Control-Max-Age', '600');
    }
    if (req.method === 'OPTIONS') return res.status(204).end();
    next();
  };
}

export async function start({ port, host }) {
  const supergraphSdl = compose(subgraphs());
  const gateway = new ApolloGateway({
    supergraphSdl,
    buildService: ({ url }) => new ForwardingDataSource({ url }),
  });
  const introspection = process.env.GRAPHQL_INTROSPECTION === 'true';
  // Stack traces are the gateway's internals: never in an answer.
  const server = new ApolloServer({ gateway, introspection, includeStacktraceInErrorResponses: false });
  await server.start();
  const app = express();
  const origins = (process.env.CORS_ORIGINS || 'http://localhost:3000')
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  app.use(cors(origins));
  app.get('/health', (_req, res) => res.json({ status: 'pass' }));
  app.use(
    '/graphql',
    express.json({ limit: '1mb' }),
    expressMiddleware(server, { context: async ({ req }) => ({ headers: req.headers }) }),
  );
  return new Promise((resolvePromise, reject) => {
    const listener = app.listen(port, host, () => {
      const { port: bound } = listener.address();
      resolvePromise({ listener, server, url: `http://${host}:${bound}` });
    });
    listener.on('error', reject);
  });
}

const port = Number(process.env.PORT ?? 4000);
const host = process.env.HOST || '127.0.0.1';
try {
  const { url, listener, server } = await start({ port, host });
  console.log(`gateway listening on ${url} (GraphQL at ${url}/graphql, health at ${url}/health)`);
  const stop = async () => {
    listener.close();
    await server.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} catch (e) {
  console.error(`gateway: ${e.message}`);
  process.exit(1);
}
