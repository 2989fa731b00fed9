/**
 * `mlxs audit verify`'s work: the chains (chain.ts) and seals (seal.ts) of a store, or of
 * an export file, walked into one report per chain.
 */
import { ChainVerifier, checkPage, genesisLink, linkRowOf, verifyChains, type ChainCheckpoint, type ChainReport, type LinkRow, type SealPoint, type ChainView } from "./chain.js";
import { checkSeals, parseSealField, type Seal, type SealProblem, type VerificationKey } from "./seal.js";
import { readExportFile } from "./export-file.js";

export interface VerifyResult {
  /** rows read */
  rows: number;
  chains: ChainReport[];
  /**
   * every seal found, the ids of the keys that made them, those whose tags fail, those no
   * key given could check, and the keys given that made none here (their seals were removed,
   * or the key is not this log's: a break)
   */
  seals: { count: number; keyIds: string[]; forged: SealProblem[]; unchecked: number; keyed: boolean; keysWithoutSeals: string[] };
  /** whether every chain is whole and no seal fails */
  whole: boolean;
}

/** Each chain's seals by place: with keys, only those whose tags hold; without, all (matched against the rows only). */
function sealPoints(seals: readonly Seal[], keys: readonly VerificationKey[]) {
  const { valid, forged, unchecked } = keys.length > 0 ? checkSeals(seals, keys) : { valid: [...seals], forged: [], unchecked: [] };
  const byChain = new Map<string, SealPoint[]>();
  for (const seal of valid) {
    let points = byChain.get(seal.instance);
    if (!points) byChain.set(seal.instance, (points = []));
    points.push({ seq: Number(seal.seq), link: seal.link, sealed_at: Number(seal.sealed_at) });
  }
  for (const points of byChain.values()) points.sort((a, b) => a.seq - b.seq || a.sealed_at - b.sealed_at);
  return { byChain, forged, unchecked, keyed: keys.length > 0 };
}

function result(rows: number, chains: ChainReport[], seals: readonly Seal[], points: ReturnType<typeof sealPoints>, keys: readonly VerificationKey[]): VerifyResult {
  const keyIds = [...new Set(seals.map((s) => s.key_id))].sort();
  const keysWithoutSeals = keys.map((k) => k.key_id).filter((id) => !keyIds.includes(id));
  // a seal whose tag fails breaks its chain where nothing broke it before
  for (const { seal, detail } of points.forged) {
    let report = chains.find((c) => c.chain === seal.instance);
    if (!report) {
      report = { chain: seal.instance, records: 0, first_id: null, last_id: null, head: genesisLink(seal.instance), from: "genesis", skipped: 0, broken: null, sealed: null };
      chains.push(report);
    }
    report.broken ??= { id: seal.id, kind: "forged", detail: `its seal of epoch ${seal.epoch} does not hold: ${detail}` };
  }
  return {
    rows,
    chains,
    seals: {
      count: seals.length,
      keyIds,
      forged: points.forged,
      unchecked: points.unchecked.length,
      keyed: points.keyed,
      keysWithoutSeals,
    },
    whole: chains.every((c) => c.broken === null) && keysWithoutSeals.length === 0,
  };
}

/** A store's chains and seals, as one moment left them (a read transaction). */
export async function verifyStore(store: { chainView(): Promise<ChainView> }, keys: readonly VerificationKey[]): Promise<VerifyResult> {
  const view = await store.chainView();
  try {
    const seals = await view.seals();
    const points = sealPoints(seals, keys);
    const { rows, chains } = await verifyChains(view, seals.length > 0 ? points : undefined);
    return result(rows, chains, seals, points, keys);
  } finally {
    await view.end();
  }
}

/**
 * An export file's chains and seals. A chain is walked from the file's first row of it
 * (from its genesis when that is the chain's first row), in its order; every row in
 * between must be there. The file holds no kept head: rows cut off its end show only
 * against a seal past them.
 */
export async function verifyExportFile(path: string, keys: readonly VerificationKey[]): Promise<VerifyResult> {
  const byChain = new Map<string, LinkRow[]>();
  const seals: Seal[] = [];
  let rows = 0;
  for await (const row of readExportFile(path)) {
    rows++;
    const link = linkRowOf(row);
    let chain = byChain.get(link.chain);
    if (!chain) byChain.set(link.chain, (chain = []));
    chain.push(link);
    const seal = typeof row.chain_seal === "string" ? parseSealField(row.chain_seal) : undefined;
    if (seal && link.seq !== null && link.link !== null) seals.push({ ...seal, instance: link.chain, seq: link.seq, link: link.link, id: link.id });
  }
  const checkpoints = new Map<string, ChainCheckpoint>();
  for (const [chain, links] of byChain) {
    // a chain's order is its places (ids of one chain may interleave across writers on PostgreSQL)
    links.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0) || a.id - b.id);
    const first = links[0]!;
    const fromGenesis = first.seq === 1 && first.prev === genesisLink(chain);
    if (!fromGenesis && first.seq !== null && first.prev !== null) checkpoints.set(chain, { seq: first.seq - 1, link: first.prev, id: 0, file: true });
  }
  const points = sealPoints(seals, keys);
  const verifier = new ChainVerifier(checkpoints, new Map(), "chain", seals.length > 0 ? points : undefined);
  for (const links of byChain.values()) checkPage(verifier, links);
  return result(rows, verifier.finish(), seals, points, keys);
}
