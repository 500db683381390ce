// A real MCP server (the official TypeScript SDK, streamable HTTP, stateless) for the browser
// tests: the admin screen registers it and lists its tools through the engine.
import { createServer } from 'node:http'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'

const port = Number(process.env.MCP_PORT ?? 0)

function server() {
  const s = new McpServer({ name: 'web-test-tools', version: '1.0.0' })
  s.registerTool(
    'add',
    { description: 'Adds two numbers', inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }),
  )
  s.registerTool(
    'shout',
    { description: 'Says it louder', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text: text.toUpperCase() }] }),
  )
  return s
}

createServer(async (req, res) => {
  if (req.method === 'GET' && req.url === '/health') {
    res.writeHead(200).end('ok')
    return
  }
  let body = ''
  req.on('data', (c) => (body += c))
  req.on('end', async () => {
    // Stateless: a server and transport per request, as the SDK documents for this mode.
    const s = server()
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    res.on('close', () => {
      void transport.close()
      void s.close()
    })
    await s.connect(transport)
    await transport.handleRequest(req, res, body ? JSON.parse(body) : undefined)
  })
}).listen(port, '127.0.0.1', () => console.log(`MCP server on ${port}`))
