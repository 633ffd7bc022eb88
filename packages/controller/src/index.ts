/**
 * @ipvs-node-controller/controller — the node agent as a library: the CLI entry point and the
 * controller that `ipvs-node-controller run` starts.
 *
 * @packageDocumentation
 */
export { main } from "./cli.js";
export { formatDuration, parseDuration } from "./duration.js";
export { InputFileError, podCIDRsOf, readNodePodCIDRs, readServicesFile } from "./input-files.js";
export { Reflector, type ReflectorEvent, type ReflectorOptions } from "./kube/reflector.js";
export {
  equivalentNodes,
  equivalentServices,
  type NodeFacts,
  trimNode,
  trimService,
} from "./kube/trim.js";
export { ControllerMetrics } from "./metrics.js";
export { type RunningController, type RunOptions, runController } from "./run.js";
export { SyncLoop, type SyncLoopOptions } from "./sync-loop.js";
