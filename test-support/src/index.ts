export * from "./envtest.js";
export * from "./eventually.js";
export * from "./http.js";
export * from "./kube-proxy.js";
export * from "./netns.js";
export * from "./runner.js";
export * from "./snapshot.js";
export * from "./tcp-bridge.js";
