/**
 * @ipvs-node-controller/backend — the contract every kernel backend of ipvs-node-controller
 * fulfils, and everything they share: the shared applier (what the kernel holds, whether to trust
 * it, a change or a full sync), the one process seam every kernel tool is started through, the
 * errors a tool can end in, and an in-memory backend for tests.
 *
 * @packageDocumentation
 */
export { createBackend } from "./applier.js";
export type { Applied, ApplyResult, Backend, ChangeOutcome, Kernel } from "./contract.js";
export {
  BackendError,
  ToolNotStartedError,
  ToolRefusedError,
  ToolTimedOutError,
} from "./errors.js";
export { FakeBackend, type FakeBackendCall } from "./fake.js";
export {
  type CommandResult,
  type CommandRunner,
  createToolRunner,
  DEFAULT_TOOL_TIMEOUT_MS,
  runTool,
  type ToolRunnerOptions,
} from "./run-tool.js";
export { SerialQueue } from "./serial-queue.js";
