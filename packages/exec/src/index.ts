/**
 * @ipvs-node-controller/exec — how ipvs-node-controller starts the kernel tools, and how a
 * backend runs its operations one at a time.
 *
 * @packageDocumentation
 */
export {
  createToolRunner,
  DEFAULT_TOOL_TIMEOUT_MS,
  runTool,
  type ToolRunnerOptions,
} from "./run-tool.js";
export { SerialQueue } from "./serial-queue.js";
