// Fetch one URL from Node.js configured as docs/CLIENTS.md says; print one JSON line.
// Usage: node node_fetch.mjs MODE URL
//   undici-agent  undici's fetch with an explicit ProxyAgent built from HTTPS_PROXY
//   undici-global setGlobalDispatcher(new EnvHttpProxyAgent()), then the built-in fetch
//   env           the built-in fetch alone (Node.js >= 24 with NODE_USE_ENV_PROXY=1)
// The CA comes from NODE_EXTRA_CA_CERTS, read by Node.js at start-up.
// A refused CONNECT surfaces as an exception: printed as {"error", "message"}.

const [mode, url] = process.argv.slice(2);

async function client() {
  if (mode === "env") return globalThis.fetch;
  const undici = await import("undici");
  if (mode === "undici-agent") {
    const agent = new undici.ProxyAgent(process.env.HTTPS_PROXY);  // credentials in the URL are sent
    return (u, opts = {}) => undici.fetch(u, { ...opts, dispatcher: agent });
  }
  if (mode === "undici-global") {
    undici.setGlobalDispatcher(new undici.EnvHttpProxyAgent());
    return globalThis.fetch;
  }
  throw new Error(`unknown mode ${mode}`);
}

try {
  const fetchFn = await client();
  const res = await fetchFn(url, { signal: AbortSignal.timeout(20000) });
  const body = await res.text();
  console.log(JSON.stringify({ status: res.status, headers: Object.fromEntries(res.headers), body }));
} catch (e) {
  // fetch wraps the network error; the proxy's answer is in the innermost cause:
  // "Proxy response (403) !== 200 when HTTP Tunneling"
  const chain = [];
  for (let c = e; c; c = c.cause) chain.push(`${c.name}: ${c.message}`);
  console.log(JSON.stringify({ error: e.name, message: chain.join(" <- ") }));
}
