import react from '@vitejs/plugin-react'
import { defineConfig } from 'vitest/config'

// The dev and preview servers proxy the engine, so the app's default same-origin URLs work:
// /api/* to the REST API (prefix removed), /graphql to the federation gateway.
const api = process.env.API_PROXY_TARGET ?? 'http://127.0.0.1:8080'
const gateway = process.env.GRAPHQL_PROXY_TARGET ?? 'http://127.0.0.1:4000'
const proxy = {
  '/api': { target: api, changeOrigin: true, rewrite: (p: string) => p.replace(/^\/api/, '') },
  '/graphql': { target: gateway, changeOrigin: true },
}

export default defineConfig({
  plugins: [react()],
  // The seed's REACT_APP_API_URL / REACT_APP_GRAPHQL_URL are read as aliases of VITE_*.
  envPrefix: ['VITE_', 'REACT_APP_'],
  // Not 3000: that is where the local runner serves the built app (scripts/start).
  server: { port: 5173, proxy },
  preview: { port: 4173, proxy },
  build: { sourcemap: true, chunkSizeWarningLimit: 1024 },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}'],
    coverage: { provider: 'v8', include: ['src/**/*.{ts,tsx}'], reporter: ['text-summary', 'text'] },
  },
})
