export * from "./netns.js";
export * from "./runner.js";
