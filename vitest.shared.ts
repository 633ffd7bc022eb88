import { defineProject, type UserWorkspaceConfig } from "vitest/config";

// Workspace packages resolve to their TypeScript sources, also when a build left a dist/ behind
// or is missing (vitest runs tests in vite's server-side environment, which has its own list of
// conditions).
const conditions = ["source"];

/** The vitest project of one package: its tests and benchmarks under test/. */
export function packageProject(name: string): UserWorkspaceConfig {
  return defineProject({
    resolve: { conditions },
    ssr: { resolve: { conditions } },
    test: {
      name,
      include: ["test/**/*.test.ts"],
      // Kernel and API-server tests start processes and probe real traffic: on a busy 2-core
      // machine one test can take several seconds. A limit, never a measurement.
      testTimeout: 30_000,
      benchmark: { include: ["test/**/*.bench.ts"] },
    },
  });
}
