import { defineKernelSuite } from "./kernel-suite.js";

await defineKernelSuite("legacy");
