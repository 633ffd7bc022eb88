/**
 * @ipvs-node-controller/controller — the node agent as a library: the CLI entry point and the
 * controller that `ipvs-node-controller run` starts.
 *
 * @packageDocumentation
 */
export { main } from "./cli.js";
export { type Clock, systemClock } from "./clock.js";
export {
  type ConntrackCleaner,
  type ConntrackCleanerOptions,
  createConntrackCleaner,
  destinationsWithFlows,
} from "./conntrack.js";
export { buildDoctorReport, type DoctorFacts } from "./doctor/evaluate.js";
export { type DoctorInput, type DoctorOptions, runDoctor } from "./doctor/gather.js";
export {
  DOCTOR_REPORT_VERSION,
  type DoctorReport,
  type DoctorSource,
  type DoctorVerdict,
  type Finding,
  type FindingCode,
  type MappingStatus,
  type ProbeOutcome,
  type ServiceStatus,
  type StaleRule,
} from "./doctor/schema.js";
export { formatDoctorReport } from "./doctor/text.js";
export { parseDuration } from "./duration.js";
export type { HealthSource, HealthState } from "./health.js";
export { InputFileError, readNode, readServicesFile } from "./input-files.js";
export { Reflector, type ReflectorEvent, type ReflectorOptions } from "./kube/reflector.js";
export { ControllerMetrics } from "./metrics.js";
export {
  describeLocality,
  inspectNodeNetwork,
  KUBE_IPVS_INTERFACE,
  type LocalityReport,
  localityOf,
  type NodeNetwork,
} from "./node-network.js";
export { type RunningController, type RunOptions, runController } from "./run.js";
export { SyncLoop, type SyncLoopOptions } from "./sync/sync-loop.js";
export type { DesiredState } from "./sync/syncer.js";
