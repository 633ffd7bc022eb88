import { defineProject } from "vitest/config";

// Workspace packages resolve to their TypeScript sources, also when a build left a dist/ behind
// or is missing (vitest runs tests in vite's server-side environment, which has its own list of
// conditions).
const conditions = ["source"];

export default defineProject({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    name: "backend-iptables",
    include: ["test/**/*.test.ts"],
    benchmark: { include: ["test/**/*.bench.ts"] },
  },
});
