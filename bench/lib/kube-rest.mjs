// A minimal Kubernetes REST client over kept-alive HTTPS connections. Creating 10,000 Services
// takes 20,000 requests: a TLS handshake for each (as a client without keep-alive makes them)
// would cost the API server more than the requests themselves on a small machine.

import { readFileSync } from "node:fs";
import { Agent, request } from "node:https";

/** A client of the test API server `api` (from startTestApiServer), as its admin. */
export function kubeClient(api, { connections = 16 } = {}) {
  const agent = new Agent({
    keepAlive: true,
    maxSockets: connections,
    ca: readFileSync(api.caFile),
  });
  const send = (method, path, body, contentType = "application/json") =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        `${api.serverUrl}${path}`,
        {
          method,
          agent,
          headers: {
            authorization: `Bearer ${api.adminToken}`,
            accept: "application/json",
            ...(payload === undefined
              ? {}
              : { "content-type": contentType, "content-length": Buffer.byteLength(payload) }),
          },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (chunk) => {
            text += chunk;
          });
          res.on("end", () => {
            if (res.statusCode >= 200 && res.statusCode < 300) resolve(JSON.parse(text));
            else reject(new Error(`${method} ${path}: ${res.statusCode} ${text.slice(0, 300)}`));
          });
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  return {
    create: (path, body) => send("POST", path, body),
    /** A JSON patch (RFC 6902), as load-balancer controllers send status updates. */
    jsonPatch: (path, operations) => send("PATCH", path, operations, "application/json-patch+json"),
    close: () => agent.destroy(),
  };
}
