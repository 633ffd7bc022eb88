import { describe, expect, it } from "vitest";
import { parseDuration } from "../src/duration.js";

describe("Go-style durations", () => {
  it.each([
    ["0", 0],
    ["500ms", 500],
    ["30s", 30_000],
    ["1m", 60_000],
    ["1m30s", 90_000],
    ["1.5s", 1500],
    ["1h", 3_600_000],
  ])("%s is %i ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(["", "30", "s", "-1s", "1d", "1 s", "30s;"])("rejects %j", (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});
