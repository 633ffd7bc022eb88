/**
 * SIGKILL of `iptables-nft-restore` in the middle of a full sync of 2,000 mappings (both
 * families): see kill-mid-apply.ts.
 */
import { defineIptablesKillSuite } from "./kill-mid-apply-iptables.js";

await defineIptablesKillSuite("nft", 2_000);
