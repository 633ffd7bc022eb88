/**
 * SIGKILL of `iptables-legacy-restore` in the middle of a full sync of 10,000 mappings (both
 * families): see kill-mid-apply.ts.
 */

import { MAPPINGS } from "./kill-mid-apply.js";
import { defineIptablesKillSuite } from "./kill-mid-apply-iptables.js";

await defineIptablesKillSuite("legacy", MAPPINGS);
