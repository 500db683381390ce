// The federation gateway: Apollo Gateway over a supergraph composed at start from the engine's
// committed SDL and any other subgraphs, forwarding each caller's `Authorization` to the
// engine's subgraph (only). `GET /health` answers while it runs.
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

// Headers every subgraph gets: the request ids, to correlate logs.
const CORRELATION = ['x-request-id', 'x-correlation-id'];

// The caller's bearer token is a key to the whole engine API: only the engine's subgraph gets
// it, never a subgraph another team runs (EXTRA_SUBGRAPHS).
class ForwardingDataSource extends RemoteGraphQLDataSource {
  constructor(options, { forwardAuthorization }) {
    super(options);
    this.forwardAuthorization = forwardAuthorization;
  }

  willSendRequest({ request, context }) {
    const names = this.forwardAuthorization ? ['authorization', ...CORRELATION] : CORRELATION;
    for (const name of names) {
      const value = context?.headers?.[name];
      if (typeof value === 'string' && value.length > 0) request.http.headers.set(name, value);
    }
  }
}

/**
 * What a client sees of an error: the subgraph's code and message, never a subgraph's URL, the
 * body of its HTTP answer, or a stack trace. A subgraph that answered with an HTTP error (the
 * engine's rate limiter) or could not be reached gets a code a client can act on.
 */
export function formatError(formatted) {
  const ext = { ...(formatted.extensions ?? {}) };
  const response = ext.response;
  delete ext.response;
  delete ext.exception;
  delete ext.stacktrace;
  const service = ext.serviceName ?? 'a';
  let message = formatted.message;
  if (response && typeof response.status === 'number') {
    const body = typeof response.body === 'object' && response.body !== null ? response.body : {};
    if (response.status === 429) {
      ext.code = 'RATE_LIMITED';
      message = body.detail ?? 'too many requests; retry later';
    } else if (response.status === 401) {
      ext.code = 'UNAUTHENTICATED';
      message = body.detail ?? 'the access token was refused';
    } else {
      ext.code = 'SERVICE_UNAVAILABLE';
      message = `the ${service} subgraph answered HTTP ${response.status}`;
    }
  } else if (/^request to .* failed/.test(message)) {
    ext.code = 'SERVICE_UNAVAILABLE';
    message = `the ${service} subgraph cannot be reached`;
  }
  return { ...formatted, message, extensions: ext };
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
    buildService: ({ name, url }) =>
      new ForwardingDataSource({ url }, { forwardAuthorization: name === 'engine' }),
  });
  const introspection = process.env.GRAPHQL_INTROSPECTION === 'true';
  // Stack traces are the gateway's internals: never in an answer.
  const server = new ApolloServer({
    gateway,
    introspection,
    includeStacktraceInErrorResponses: false,
    formatError,
  });
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
