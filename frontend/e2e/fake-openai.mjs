// An OpenAI-compatible chat completions server for the browser tests (the real wire format:
// POST /v1/chat/completions with a bearer key, `usage` in the answer). No LLM runs here.
import { createServer } from 'node:http'

const port = Number(process.env.FAKE_OPENAI_PORT ?? 0)
const key = process.env.OPENAI_API_KEY

createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/health') {
    res.writeHead(200).end('ok')
    return
  }
  if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"not found"}}')
    return
  }
  if (key && req.headers.authorization !== `Bearer ${key}`) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"message":"Incorrect API key provided"}}')
    return
  }
  let body = ''
  req.on('data', (c) => (body += c))
  req.on('end', () => {
    const r = JSON.parse(body)
    const last = r.messages[r.messages.length - 1].content
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        id: 'chatcmpl-web',
        object: 'chat.completion',
        model: r.model,
        choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: `Hello! (${last})` } }],
        usage: { prompt_tokens: 1200, completion_tokens: 800, total_tokens: 2000 },
      }),
    )
  })
}).listen(port, '127.0.0.1', () => console.log(`fake OpenAI on ${port}`))
