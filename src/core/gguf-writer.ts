/**
 * Writes small llama-architecture GGUF models with seeded random weights: the built-in
 * demo model, the test models and the benchmark model. Nothing can be downloaded on the
 * machines mlxs is tested on, so mlxs makes its own models.
 *
 * The weights are random, but shaped so that the output is readable word salad:
 * dimension 0 of the residual stream is held at a constant (embeddings set it to 1 and no
 * layer writes to it), so the output row of every token that should never be generated
 * (byte pieces, word prefixes, control tokens) carries a large negative weight there and
 * its logit is always far below the real words'. The text is therefore always valid UTF-8.
 */
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { once } from "node:events";

export interface TinyModelSpec {
  name: string;
  embeddingLength: number;
  blockCount: number;
  headCount: number;
  feedForwardLength: number;
  contextLength: number;
  /** how many of WORDS the vocabulary takes (all when absent) */
  wordCount?: number;
  /** false: end-of-turn is never generated, so every answer runs to its token limit (benchmarks) */
  canEnd?: boolean;
  /**
   * Ends as a small real model would (the demo model): answers within tens of tokens, and
   * JSON strings, arrays and objects within a few (see `closers`). Other models keep the
   * plain recipe, which the tests' expectations are measured on.
   */
  closes?: boolean;
  seed: number;
}

const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Common English words: the model's whole output vocabulary, with "." and ",".
const WORDS = (
  "the of and to in is it you that he was for on are with as his they be at one have this from or had by " +
  "word but what some we can out other were all there when up use your how said an each she which do their time " +
  "if will way about many then them write would like so these her long make thing see him two has look more day " +
  "could go come did number sound no most people my over know water than call first who may down side been now " +
  "find any new work part take get place made live where after back little only round man year came show every good " +
  "me give our under name very through just form sentence great think say help low line differ turn cause much mean " +
  "before move right boy old too same tell does set three want air well also play small end put home read hand port " +
  "large spell add even land here must big high such follow act why ask men change went light kind off need house " +
  "picture try us again animal point mother world near build self earth father head stand own page should country " +
  "found answer school grow study still learn plant cover food sun four between state keep eye never last let thought " +
  "city tree cross farm hard start might story saw far sea draw left late run while press close night real life few " +
  "north open seem together next white children begin got walk example ease paper group always music those both mark " +
  "often letter until mile river car feet care second book carry took science eat room friend began idea fish mountain " +
  "stop once base hear horse cut sure watch color face wood main enough plain girl usual young ready above ever red list " +
  "though feel talk bird soon body dog family direct pose leave song measure door product black short numeral class wind " +
  "question happen complete ship area half rock order fire south problem piece told knew pass since top whole king space " +
  "heard best hour better true during hundred five remember step early hold west ground interest reach fast verb sing " +
  "listen six table travel less morning ten simple several vowel toward war lay against pattern slow center love person " +
  "money serve appear road map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark " +
  "machine note wait plan figure star box noun field rest correct able pound done beauty drive stood contain front teach " +
  "week final gave green quick develop ocean warm free minute strong special mind behind clear tail produce fact street " +
  "inch multiply nothing course stay wheel full force blue object decide surface deep moon island foot system busy test " +
  "record boat common gold possible plane stead dry wonder laugh thousand ago ran check game shape equate hot miss brought " +
  "heat snow tire bring yes distant fill east paint language among hello user assistant system"
).split(" ");

const enum TokenType { Normal = 1, Unknown = 2, Control = 3, Byte = 6 }
const enum ValueType { U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9 }
const ALIGNMENT = 32;

interface Vocabulary {
  tokens: string[];
  scores: number[];
  types: number[];
  /** tokens the model may generate: whole words, punctuation and end-of-turn */
  generatable: boolean[];
  eos: number;
}

function buildVocabulary(wordCount: number, canEnd: boolean): Vocabulary {
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  const generatable: boolean[] = [];
  const seen = new Set<string>();
  const add = (piece: string, type: number, canGenerate: boolean) => {
    if (seen.has(piece)) {
      if (canGenerate) generatable[tokens.indexOf(piece)] = true;
      return;
    }
    seen.add(piece);
    tokens.push(piece);
    // SentencePiece merges toward the highest score: longer pieces win, so whole words form.
    scores.push(type === TokenType.Normal ? piece.length : 0);
    types.push(type);
    generatable.push(canGenerate);
  };
  add("<unk>", TokenType.Unknown, false);
  add("<s>", TokenType.Control, false);
  add("</s>", TokenType.Control, false);
  add("<|im_start|>", TokenType.Control, false);
  add("<|im_end|>", TokenType.Control, canEnd);
  for (let b = 0; b < 256; b++) {
    add(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`, TokenType.Byte, false);
  }
  add("▁", TokenType.Normal, false);
  for (let c = 33; c < 127; c++) add(String.fromCharCode(c), TokenType.Normal, false);
  add(".", TokenType.Normal, true);
  add(",", TokenType.Normal, true);
  // SentencePiece only reaches a piece through pieces it can merge, so every prefix is in.
  for (const word of WORDS.slice(0, wordCount)) {
    const piece = "▁" + word;
    for (let end = 2; end < piece.length; end++) add(piece.slice(0, end), TokenType.Normal, false);
    add(piece, TokenType.Normal, true);
  }
  return { tokens, scores, types, generatable, eos: tokens.indexOf("<|im_end|>") };
}

/** mulberry32: small, fast, and the same numbers on every platform */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class ByteWriter {
  private chunks: Buffer[] = [];
  length = 0;
  private push(buf: Buffer) { this.chunks.push(buf); this.length += buf.length; }
  u32(v: number) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.push(b); }
  i32(v: number) { const b = Buffer.alloc(4); b.writeInt32LE(v); this.push(b); }
  u64(v: number) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.push(b); }
  f32(v: number) { const b = Buffer.alloc(4); b.writeFloatLE(v); this.push(b); }
  bool(v: boolean) { this.push(Buffer.from([v ? 1 : 0])); }
  str(s: string) { const b = Buffer.from(s, "utf8"); this.u64(b.length); this.push(b); }
  raw(b: Buffer) { this.push(b); }
  pad(alignment: number) { const r = this.length % alignment; if (r) this.push(Buffer.alloc(alignment - r)); }
  buffer() { return Buffer.concat(this.chunks); }
}

type MetaValue =
  | { type: ValueType.U32 | ValueType.I32 | ValueType.F32; value: number }
  | { type: ValueType.Bool; value: boolean }
  | { type: ValueType.String; value: string }
  | { type: ValueType.Array; of: ValueType.String; value: string[] }
  | { type: ValueType.Array; of: ValueType.F32 | ValueType.I32; value: number[] };

function writeMetaValue(w: ByteWriter, m: MetaValue) {
  w.u32(m.type);
  switch (m.type) {
    case ValueType.U32: w.u32(m.value); break;
    case ValueType.I32: w.i32(m.value); break;
    case ValueType.F32: w.f32(m.value); break;
    case ValueType.Bool: w.bool(m.value); break;
    case ValueType.String: w.str(m.value); break;
    case ValueType.Array:
      w.u32(m.of);
      w.u64(m.value.length);
      for (const v of m.value) {
        if (m.of === ValueType.String) w.str(v as string);
        else if (m.of === ValueType.F32) w.f32(v as number);
        else w.i32(v as number);
      }
  }
}

interface TensorPlan {
  name: string;
  /** innermost first, as GGUF stores them */
  dims: number[];
  /** fills one row (ne0 floats) of the tensor */
  fill: (row: number, out: Float32Array, random: () => number) => void;
}

function uniform(std: number) {
  const a = std * Math.sqrt(3);
  return (_row: number, out: Float32Array, random: () => number) => {
    for (let i = 0; i < out.length; i++) out[i] = (random() * 2 - 1) * a;
  };
}
const ones = (_row: number, out: Float32Array) => out.fill(1);
/** a projection that never writes the residual dimensions below `kept`, which carry what they were given */
function sparing(kept: number, std: number) {
  const fill = uniform(std);
  return (row: number, out: Float32Array, random: () => number) => {
    fill(row, out, random);
    if (row < kept) out.fill(0);
  };
}

/*
 * How a closing model (`closes`) ends its JSON strings: two residual dimensions beside the
 * constant 0, which no layer writes but the ones below. IS_QUOTE is set by the embedding of
 * `"`. SAW_QUOTE is written by head 0 of block 0, which attends to the quotes in the context
 * (its query is the constant, its key IS_QUOTE, on the slowest-turning rope pair so that
 * distance hardly matters) and copies IS_QUOTE: about 1 once a quote was written, 0 before.
 * The output rows then make `"` likely once a quote was seen (a JSON string, a key, a tool
 * call's arguments) but not right after one (no empty strings), and `]` and `}` likely
 * there too (an array or object ends); without a quote in the context they are as unlikely
 * as ever, so free text stays words.
 */
const IS_QUOTE = 1;
const SAW_QUOTE = 2;
/** the quote head's query and key scale: attention to a quote outweighs thousands of other tokens */
const QUOTE_ATTENTION = 8;
/** logit weights on [constant, IS_QUOTE, SAW_QUOTE]: a closing token's row, and a closing model's end of turn */
const CLOSING: Record<string, [number, number, number]> = {
  // measured on the demo model (temperature 0.8): a string of 1 to 10 words, 2 or 3 at the median
  "\"": [-10, -40, 19],
  // in a string, less likely than words; where the grammar only allows "," or a closer, likelier than ","
  "]": [-12, 0, 15],
  "}": [-12, 0, 15],
};
/** end of turn: a plain model's weight on the constant, and a closing model's (answers of 20 to 30 tokens at the median) */
const END_WEIGHT = 3;
const CLOSING_END_WEIGHT = 5;

/** Head 0 of block 0 of a closing model: the quote detector (above). */
function quoteHead(headDim: number) {
  const designed = (set: (row: number, out: Float32Array) => void, std: number) => {
    const fill = uniform(std);
    return (row: number, out: Float32Array, random: () => number) => {
      fill(row, out, random);
      if (row >= headDim) return;
      out.fill(0);
      set(row, out);
    };
  };
  // rope turns the pairs (2i, 2i+1); the last pair turns slowest
  const pair = headDim - 2;
  return {
    q: (std: number) => designed((row, out) => { if (row === pair) out[0] = QUOTE_ATTENTION; }, std),
    k: (std: number) => designed((row, out) => { if (row === pair) out[IS_QUOTE] = QUOTE_ATTENTION; }, std),
    v: (std: number) => designed((row, out) => { if (row === 0) out[IS_QUOTE] = 1; }, std),
    /** the head's first value lands on SAW_QUOTE, and nowhere else */
    output: (std: number) => {
      const fill = sparing(SAW_QUOTE + 1, std);
      return (row: number, out: Float32Array, random: () => number) => {
        fill(row, out, random);
        if (row === SAW_QUOTE) out[0] = 1;
        else out.fill(0, 0, headDim);
      };
    },
  };
}

function planTensors(spec: TinyModelSpec, vocab: Vocabulary): TensorPlan[] {
  const d = spec.embeddingLength;
  const ff = spec.feedForwardLength;
  const nVocab = vocab.tokens.length;
  const closes = spec.closes === true;
  // residual dimensions no layer writes: the constant, and a closing model's two
  const kept = closes ? SAW_QUOTE + 1 : 1;
  const closing = new Map(closes ? Object.entries(CLOSING).map(([piece, weights]) => [vocab.tokens.indexOf(piece), weights] as const) : []);
  const quote = vocab.tokens.indexOf('"');
  const plans: TensorPlan[] = [
    {
      name: "token_embd.weight", dims: [d, nVocab],
      fill: (row, out, random) => {
        uniform(1)(row, out, random);
        out[0] = 1;
        if (closes) {
          out[IS_QUOTE] = row === quote ? 1 : 0;
          out[SAW_QUOTE] = 0;
        }
      },
    },
  ];
  for (let b = 0; b < spec.blockCount; b++) {
    const p = `blk.${b}.`;
    const head = closes && b === 0 ? quoteHead(d / spec.headCount) : undefined;
    const std = 1 / Math.sqrt(d);
    plans.push(
      { name: p + "attn_norm.weight", dims: [d], fill: ones },
      { name: p + "attn_q.weight", dims: [d, d], fill: head ? head.q(std) : uniform(std) },
      { name: p + "attn_k.weight", dims: [d, d], fill: head ? head.k(std) : uniform(std) },
      { name: p + "attn_v.weight", dims: [d, d], fill: head ? head.v(std) : uniform(std) },
      { name: p + "attn_output.weight", dims: [d, d], fill: head ? head.output(std) : sparing(kept, std) },
      { name: p + "ffn_norm.weight", dims: [d], fill: ones },
      { name: p + "ffn_gate.weight", dims: [d, ff], fill: uniform(std) },
      { name: p + "ffn_up.weight", dims: [d, ff], fill: uniform(std) },
      { name: p + "ffn_down.weight", dims: [ff, d], fill: sparing(kept, 1 / Math.sqrt(ff)) },
    );
  }
  const wordLogits = uniform(2.5 / Math.sqrt(d));
  plans.push(
    { name: "output_norm.weight", dims: [d], fill: ones },
    {
      name: "output.weight", dims: [d, nVocab],
      fill: (token, out, random) => {
        const weights = closing.get(token);
        if (vocab.generatable[token]) {
          wordLogits(token, out, random);
          // end-of-turn a little likelier than any one word: answers end on their own
          out[0] = token === vocab.eos ? (closes ? CLOSING_END_WEIGHT : END_WEIGHT) : 0;
          if (closes) out[IS_QUOTE] = out[SAW_QUOTE] = 0;
        } else if (weights) {
          out.fill(0);
          [out[0], out[IS_QUOTE], out[SAW_QUOTE]] = weights;
        } else {
          out.fill(0);
          out[0] = -1000;
        }
      },
    },
  );
  return plans;
}

function buildHeader(spec: TinyModelSpec, vocab: Vocabulary, plans: TensorPlan[]): Buffer {
  const d = spec.embeddingLength;
  const meta: [string, MetaValue][] = [
    ["general.architecture", { type: ValueType.String, value: "llama" }],
    ["general.name", { type: ValueType.String, value: spec.name }],
    ["general.alignment", { type: ValueType.U32, value: ALIGNMENT }],
    ["general.file_type", { type: ValueType.U32, value: 0 }],
    ["llama.context_length", { type: ValueType.U32, value: spec.contextLength }],
    ["llama.embedding_length", { type: ValueType.U32, value: d }],
    ["llama.block_count", { type: ValueType.U32, value: spec.blockCount }],
    ["llama.feed_forward_length", { type: ValueType.U32, value: spec.feedForwardLength }],
    ["llama.attention.head_count", { type: ValueType.U32, value: spec.headCount }],
    ["llama.attention.head_count_kv", { type: ValueType.U32, value: spec.headCount }],
    ["llama.rope.dimension_count", { type: ValueType.U32, value: d / spec.headCount }],
    ["llama.attention.layer_norm_rms_epsilon", { type: ValueType.F32, value: 1e-5 }],
    ["tokenizer.ggml.model", { type: ValueType.String, value: "llama" }],
    ["tokenizer.ggml.tokens", { type: ValueType.Array, of: ValueType.String, value: vocab.tokens }],
    ["tokenizer.ggml.scores", { type: ValueType.Array, of: ValueType.F32, value: vocab.scores }],
    ["tokenizer.ggml.token_type", { type: ValueType.Array, of: ValueType.I32, value: vocab.types }],
    ["tokenizer.ggml.bos_token_id", { type: ValueType.U32, value: vocab.tokens.indexOf("<s>") }],
    ["tokenizer.ggml.eos_token_id", { type: ValueType.U32, value: vocab.eos }],
    ["tokenizer.ggml.unknown_token_id", { type: ValueType.U32, value: 0 }],
    ["tokenizer.ggml.add_bos_token", { type: ValueType.Bool, value: true }],
    ["tokenizer.chat_template", { type: ValueType.String, value: CHATML_TEMPLATE }],
  ];
  const w = new ByteWriter();
  w.raw(Buffer.from("GGUF", "ascii"));
  w.u32(3);
  w.u64(plans.length);
  w.u64(meta.length);
  for (const [key, value] of meta) { w.str(key); writeMetaValue(w, value); }
  let offset = 0;
  for (const t of plans) {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const dim of t.dims) w.u64(dim);
    w.u32(0); // F32
    w.u64(offset);
    offset += alignUp(tensorBytes(t), ALIGNMENT);
  }
  w.pad(ALIGNMENT);
  return w.buffer();
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;
const tensorBytes = (t: TensorPlan) => t.dims.reduce((a, b) => a * b, 1) * 4;

/**
 * Writes the model to `path` (through a temporary file and a rename, so a reader never
 * sees half a model). The same spec always gives the same bytes.
 */
export async function writeTinyModel(path: string, spec: TinyModelSpec): Promise<void> {
  const vocab = buildVocabulary(spec.wordCount ?? WORDS.length, spec.canEnd ?? true);
  const plans = planTensors(spec, vocab);
  const random = seededRandom(spec.seed);
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.${process.pid}.tmp`;
  const out = createWriteStream(temp);
  const write = async (buf: Buffer) => {
    if (!out.write(buf)) await once(out, "drain");
  };
  try {
    await write(buildHeader(spec, vocab, plans));
    for (const t of plans) {
      const rowLength = t.dims[0];
      const rows = tensorBytes(t) / 4 / rowLength;
      // rows are written in blocks of about 1 MB to keep memory flat for big models
      const rowsPerBlock = Math.max(1, Math.floor(262144 / rowLength));
      for (let first = 0; first < rows; first += rowsPerBlock) {
        const count = Math.min(rowsPerBlock, rows - first);
        const block = new Float32Array(count * rowLength);
        for (let r = 0; r < count; r++) t.fill(first + r, block.subarray(r * rowLength, (r + 1) * rowLength), random);
        await write(Buffer.from(block.buffer, block.byteOffset, block.byteLength));
      }
      const padding = alignUp(tensorBytes(t), ALIGNMENT) - tensorBytes(t);
      if (padding) await write(Buffer.alloc(padding));
    }
    out.end();
    await once(out, "finish");
    await rename(temp, path);
  } catch (error) {
    out.destroy();
    await rm(temp, { force: true });
    throw error;
  }
}

/** The built-in demo model: about 1 MB, loads in milliseconds. */
export const DEMO_MODEL: TinyModelSpec = {
  name: "mlxs-demo", embeddingLength: 64, blockCount: 2, headCount: 4, feedForwardLength: 128,
  contextLength: 4096, closes: true,
  // the demo's file name carries the seed: change it whenever the demo's weights change, so
  // that a file written by an older mlxs is not taken for this one
  seed: 20261202,
};

/** The benchmark model: the same recipe at about 100 MB, so that inference dominates. */
export const BENCH_MODEL: TinyModelSpec = {
  name: "mlxs-bench", embeddingLength: 512, blockCount: 7, headCount: 8, feedForwardLength: 1536,
  contextLength: 4096, canEnd: false, seed: 7,
};
