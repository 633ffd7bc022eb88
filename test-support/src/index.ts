export * from "./envtest.js";
export * from "./eventually.js";
export * from "./helm.js";
export * from "./http.js";
export * from "./netns.js";
export * from "./runner.js";
export * from "./tcp-bridge.js";
