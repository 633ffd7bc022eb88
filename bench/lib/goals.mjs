// The targets the figures are held to, checked against a report. Each check says what was
// measured, the target, and when missed, by how much.

const count = (n) => Number(n).toLocaleString("en-US");

function check(id, goal, measured, target, unit, { atLeast = false } = {}) {
  if (measured === undefined || Number.isNaN(measured)) {
    return {
      id,
      goal,
      target: `${atLeast ? "≥" : "≤"} ${target}${unit}`,
      measured: null,
      met: null,
    };
  }
  const met = atLeast ? measured >= target : measured <= target;
  const result = {
    id,
    goal,
    measured: Number(measured.toFixed(unit === "×" || unit === "" ? 3 : 2)),
    unit,
    target: `${atLeast ? "≥" : "≤"} ${target}${unit}`,
    met,
  };
  if (!met) {
    const by = Math.abs(measured - target);
    result.missedBy = `${Number(by.toFixed(2))}${unit} (${Math.round((by / target) * 100)} %)`;
  }
  return result;
}

/** Whether the ranges of two sets of runs overlap, i.e. their difference is within the noise. */
export function runsOverlap(a, b) {
  return Math.max(Math.min(...a), Math.min(...b)) <= Math.min(Math.max(...a), Math.max(...b));
}

/** Every goal that the report has figures for. */
export function evaluateGoals(report) {
  const goals = [];
  const sizes = report.parameters.sizes;
  const small = sizes[0];
  const large = sizes.at(-1);

  const incremental = report.incrementalSyncMs ?? {};
  const nft = incremental.nft;
  if (nft?.[large]) {
    goals.push(
      check(
        "incremental-nft",
        `One changed Service among ${count(large)}, nft: watch event → end of the transaction, p50`,
        nft[large].p50,
        15,
        " ms",
      ),
      check(
        "incremental-nft-growth",
        `… the same at ${count(large)} over the same at ${count(small)} Services`,
        nft[large].p50 / nft[small].p50,
        1.5,
        "×",
      ),
    );
  }
  for (const variant of ["iptables-nft", "iptables-legacy"]) {
    const figures = incremental[variant];
    if (!figures?.[large]) continue;
    goals.push(
      check(
        `incremental-${variant}`,
        `One changed Service among ${count(large)}, ${variant}: apply, p50`,
        figures[large].applyMs.p50,
        100,
        " ms",
      ),
      check(
        `incremental-${variant}-growth`,
        `… the same at ${count(large)} over the same at ${count(small)} Services`,
        figures[large].applyMs.p50 / figures[small].applyMs.p50,
        2,
        "×",
      ),
    );
  }

  const latency = report.programmingLatencyMs ?? {};
  if (latency.nft?.[large]) {
    const goal = check(
      "latency-nft",
      `Status patch → rule in the kernel, nft, ${count(large)} Services, p99`,
      latency.nft[large].p99,
      50,
      " ms",
    );
    // A change never seen has no latency, and none could be low enough.
    const { missed } = latency.nft[large];
    if (missed > 0) {
      goal.met = false;
      goal.missedBy = `${missed} change${missed === 1 ? "" : "s"} never seen`;
    }
    goals.push(goal);
  }
  for (const [backend, bySize] of Object.entries(latency)) {
    const burst = bySize[large]?.burst;
    if (!burst) continue;
    goals.push(
      check(
        `burst-${backend}`,
        `Burst of ${burst.changes} changes in 1 s, ${backend}, ${count(large)} Services: last patch → all landed, within --min-sync-period + one sync (${burst.boundMs} ms)`,
        burst.lastPatchToAllLandedMs,
        burst.boundMs,
        " ms",
      ),
    );
  }

  const rate = report.connectionRate;
  if (rate?.nft) {
    const result = check(
      "connections-nft",
      `New connections/s, nft: ${count(rate.services)} Services over 1 Service`,
      rate.nft.ratio,
      0.95,
      "",
      { atLeast: true },
    );
    if (runsOverlap(rate.nft[1].runs, rate.nft[rate.services].runs)) {
      result.note = "the runs of the two cases overlap: the difference is within the noise";
    }
    goals.push(result);
  }

  const memory = report.rssMiB;
  for (const backend of Object.keys(latency)) {
    const figures = memory?.[backend];
    if (!figures) continue;
    goals.push(
      check(
        `memory-${backend}`,
        `Memory of run, ${backend}, ${count(memory.services)} Services: peak over steady`,
        figures.peak / figures.steady,
        1.2,
        "×",
      ),
    );
  }
  if (memory?.heap) {
    goals.push(check("heap", "Heap per Service", memory.heap.perServiceKiB, 1, " KiB"));
  }
  if (report.footprint) goals.push(...footprintGoals(report.footprint));
  return goals;
}

/** Our backends in a footprint, in the order they ran. */
export function footprintBackends(footprint) {
  const names = Object.values(footprint.bySize).flatMap((programs) => Object.keys(programs));
  return [...new Set(names)].filter((name) => !name.startsWith("original-"));
}

/**
 * The footprint's goals for each of our backends: first rule and steady memory at 1,000 Services,
 * steady memory at 10,000, peak over steady at the largest size; and the size of each image. A
 * size the run left out (a quick run stops at 1,000) is "not measured".
 */
function footprintGoals(footprint) {
  const goals = [];
  const largest = Math.max(...Object.keys(footprint.bySize).map(Number));
  for (const backend of footprintBackends(footprint)) {
    const at = (n) => footprint.bySize[n]?.[backend];
    goals.push(
      check(
        `footprint-first-rule-${backend}`,
        `Start of run, ${backend}, 1,000 Services of 1 port: process start → first rule`,
        at(1000)?.firstRuleSeconds,
        0.6,
        " s",
      ),
    );
    for (const [n, target] of [
      [1000, 64],
      [10_000, 96],
    ]) {
      goals.push(
        check(
          `footprint-steady-${n}-${backend}`,
          `Memory of run, ${backend}, ${count(n)} Services of 1 port: steady RSS`,
          at(n)?.steadyMiB,
          target,
          " MiB",
        ),
      );
    }
    const s = at(largest);
    goals.push(
      check(
        `footprint-peak-${backend}`,
        `Memory of run, ${backend}, ${count(largest)} Services of 1 port: peak RSS over steady`,
        s && s.peakMiB / s.steadyMiB,
        1.2,
        "×",
      ),
    );
  }
  const images = Object.entries(footprint.image?.images ?? {});
  if (images.length === 0) {
    const goal = check("image", "Image", undefined, 120, " MiB");
    goal.note = footprint.image?.notMeasured;
    goals.push(goal);
  }
  for (const [arch, image] of images) {
    const goal = check(`image-${arch}`, `Image, linux/${arch}`, image.mib, 120, " MiB");
    if (image.failed || image.note) goal.note = image.failed ?? image.note;
    goals.push(goal);
  }
  return goals;
}
