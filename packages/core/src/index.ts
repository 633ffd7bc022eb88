export * from "./backend.js";
export * from "./types.js";
