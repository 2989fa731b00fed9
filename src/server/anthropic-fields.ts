/**
 * Every request field of Anthropic's Messages and count_tokens APIs (the API reference and
 * @anthropic-ai/sdk 1.14, beta fields included) and mlxs's own additions, each classed once:
 * honoured, accepted and ignored (it changes nothing here, and is never stored), or refused
 * with 400. The adapter checks bodies against these tables (validate.ts checkFields), the
 * README's Parameters table lists them, and tests/fields.test.js sends every one.
 */
import { honoured, ignored, isEmpty, refused, type FieldTable } from "./validate.js";

/** What both routes read to build the prompt, and count. */
const PROMPT: FieldTable = {
  model: honoured("a served model's name; the first one when absent"),
  messages: honoured("text, tool_use and tool_result blocks; consecutive turns of one role merged"),
  system: honoured("a string or text blocks"),
  tools: honoured("custom tools, held to their input_schema by a grammar"),
  tool_choice: honoured("auto, any, tool, none; disable_parallel_tool_use"),
  thinking: refused("extended thinking is not supported; send {\"type\": \"disabled\"} or nothing", (v) => (v as { type?: unknown }).type === "disabled"),
  mcp_servers: refused("is not supported", isEmpty),
  context_management: refused("is not supported: mlxs never edits the conversation it is sent"),
  keep_alive: honoured("Ollama's: how long the model stays loaded once idle"),
};

/** What identifies, bills, routes or caches a request at Anthropic: none of it changes an answer here. */
const ACCOUNTING: FieldTable = {
  cache_control: ignored("mlxs finds a cached prompt prefix by itself"),
  speed: ignored("one speed here"),
  user_profile_id: ignored("a header for the SDK; names who is billed"),
  workspace_id: ignored("a header for the SDK; names who is billed"),
  betas: ignored("a header for the SDK"),
  billing_policy: ignored("nothing is billed here"),
};

const FORMAT = honoured("json_schema: the answer's text block is JSON held to the schema by a grammar");

export const MESSAGES_FIELDS: FieldTable = {
  ...PROMPT,
  ...ACCOUNTING,
  max_tokens: honoured("required; caps the answer's tokens"),
  temperature: honoured("sampling, range-checked by the core"),
  top_p: honoured("sampling; -1 is unset"),
  top_k: honoured("sampling; -1 is unset"),
  seed: honoured("mlxs's: the same seed and request give the same answer"),
  stop_sequences: honoured("up to 16; stop_reason stop_sequence names the one met"),
  stream: honoured("Anthropic's event stream"),
  output_config: honoured("format as output_format; effort and task_budget change nothing (no separate reasoning here)"),
  output_format: FORMAT,
  metadata: ignored("user_id for Anthropic's abuse checks; never stored"),
  service_tier: ignored("one tier here"),
  inference_geo: ignored("inference runs on this machine"),
  diagnostics: ignored("asks why Anthropic's prompt cache missed"),
  fallbacks: ignored("mlxs's models never decline a request on policy, so no fallback model is ever tried"),
  fallback_credit_token: ignored("redeems a declined request, which never happens here"),
  container: refused("is not supported"),
  thread: refused("mlxs keeps no conversations; send the whole conversation in messages"),
  compaction: refused("is not supported: a compaction request asks for a summary in place of an answer"),
};

export const COUNT_TOKENS_FIELDS: FieldTable = {
  ...PROMPT,
  ...ACCOUNTING,
  output_config: ignored("a format is held by a grammar and adds no prompt tokens"),
  output_format: ignored("a format is held by a grammar and adds no prompt tokens"),
  compaction: ignored("counted for the conversation as sent, as Anthropic's count_tokens does"),
};
