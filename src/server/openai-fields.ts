/**
 * Every request field of OpenAI's chat completions, completions, embeddings and Responses
 * APIs (openai-openapi f85dbe2, 2026-08-21) and mlxs's own additions, each classed once:
 * honoured, accepted and ignored (it changes nothing here, and is never stored), or refused
 * with 400. The adapters check bodies against these tables (validate.ts checkFields), the
 * README's Parameters table lists them, and tests/fields.test.js sends every one.
 */
import { SAMPLING_FIELDS } from "../core/sampling.js";
import { honoured, ignored, isEmpty, isValue, refused, type FieldTable } from "./validate.js";

export const KEEPS_NOTHING = "mlxs never keeps conversations";
const NO_LOGPROBS = "log probabilities are not supported";

/** mlxs's sampling fields (the core's table: temperature, top_p, top_k, min_p, seed, max_tokens, penalties), stop and keep_alive. */
const SAMPLING: FieldTable = {
  ...Object.fromEntries(SAMPLING_FIELDS.map((f) => [f.wire, honoured("sampling, range-checked by the core")])),
  max_completion_tokens: honoured("caps the answer's tokens, as max_tokens"),
  stop: honoured("up to 16 stop sequences; the answer ends before the first one"),
  keep_alive: honoured("Ollama's: how long the model stays loaded once idle"),
};

/** What identifies, bills, routes or caches a request at OpenAI: none of it changes an answer here. */
const ACCOUNTING: FieldTable = {
  metadata: ignored("tags for OpenAI's dashboard; never stored"),
  user: ignored("an end user's id for OpenAI's abuse checks; never stored"),
  safety_identifier: ignored("an end user's id for OpenAI's abuse checks; never stored"),
  service_tier: ignored("one tier here"),
  prompt_cache_key: ignored("mlxs finds a cached prompt prefix by itself, whatever the key"),
  prompt_cache_retention: ignored("mlxs keeps a prompt cache while its sequence holds it"),
  prompt_cache_options: ignored("mlxs keeps a prompt cache while its sequence holds it"),
};

const MODERATION = refused("moderation is not run here");
const VERBOSITY = refused("only medium (the default) verbosity is supported", isValue("medium"));

export const CHAT_FIELDS: FieldTable = {
  ...SAMPLING,
  ...ACCOUNTING,
  model: honoured("a served model's name; the first one when absent"),
  messages: honoured("system, developer, user, assistant (with tool_calls) and tool messages; text only"),
  stream: honoured("server-sent chunks"),
  stream_options: honoured("include_usage adds the usage chunk; include_obfuscation: no obfuscation field is sent"),
  tools: honoured("function tools, held to their schemas by a grammar"),
  tool_choice: honoured("auto, none, required or a named function"),
  parallel_tool_calls: honoured("false: at most one call an answer"),
  functions: honoured("the older tools"),
  function_call: honoured("the older tool_choice"),
  response_format: honoured("text, json_object, json_schema (held to it by a grammar)"),
  n: refused("only n = 1 is supported", isValue(1)),
  logprobs: refused(NO_LOGPROBS, isValue(false)),
  top_logprobs: refused(NO_LOGPROBS, isValue(0)),
  logit_bias: refused("is not supported", isEmpty),
  audio: refused("is not supported"),
  prediction: refused("is not supported"),
  web_search_options: refused("is not supported"),
  moderation: MODERATION,
  store: refused(`${KEEPS_NOTHING} (store: true asks it to)`, isValue(false)),
  modalities: refused("only text is supported", (v) => Array.isArray(v) && v.every((m) => m === "text")),
  verbosity: VERBOSITY,
  reasoning_effort: ignored("mlxs's answers carry no separate reasoning to spend effort on"),
  strict: ignored("sent by some clients beside their schemas; every schema is held by a grammar here"),
};

export const COMPLETION_FIELDS: FieldTable = {
  ...SAMPLING,
  model: honoured("a served model's name; the first one when absent"),
  prompt: honoured("a string, or a list of one string"),
  stream: honoured("server-sent chunks"),
  stream_options: honoured("include_usage adds the usage chunk; include_obfuscation: no obfuscation field is sent"),
  response_format: honoured("mlxs's: text, json_object, json_schema (held to it by a grammar)"),
  n: refused("only n = 1 is supported", isValue(1)),
  best_of: refused("only best_of = 1 is supported", isValue(1)),
  echo: refused("is not supported", isValue(false)),
  logprobs: refused(NO_LOGPROBS, isValue(false)),
  logit_bias: refused("is not supported", isEmpty),
  suffix: refused("is not supported"),
  user: ACCOUNTING.user,
};

export const EMBEDDING_FIELDS: FieldTable = {
  model: honoured("a served model's name; the first one when absent"),
  input: honoured("a string or a list of strings"),
  encoding_format: honoured("float or base64"),
  keep_alive: SAMPLING.keep_alive,
  dimensions: refused("is not supported"),
  user: ACCOUNTING.user,
};

export const RESPONSES_FIELDS: FieldTable = {
  ...SAMPLING,
  ...ACCOUNTING,
  model: honoured("a served model's name; the first one when absent"),
  input: honoured("a string, or message, function_call and function_call_output items"),
  instructions: honoured("the system message"),
  max_output_tokens: honoured("caps the answer's tokens"),
  stream: honoured("server-sent events, response.created ... response.completed"),
  text: honoured("format: text, json_object, json_schema (held to it by a grammar); verbosity: medium only"),
  tools: honoured("function tools, held to their schemas by a grammar"),
  tool_choice: honoured("auto, none, required or a named function"),
  parallel_tool_calls: honoured("false: at most one call an answer"),
  max_tool_calls: honoured("0: no call, 1: at most one"),
  store: refused(`${KEEPS_NOTHING}; send store: false`, isValue(false)),
  previous_response_id: refused(`${KEEPS_NOTHING}; send the whole conversation as input`),
  conversation: refused(`${KEEPS_NOTHING}; send the whole conversation as input`),
  background: refused("background responses are not supported", isValue(false)),
  prompt: refused("stored prompt templates are not supported"),
  top_logprobs: refused(NO_LOGPROBS, isValue(0)),
  include: refused(NO_LOGPROBS, (v) => Array.isArray(v) && !v.includes("message.output_text.logprobs")),
  moderation: MODERATION,
  context_management: refused("compaction is not supported: a conversation longer than the context is refused, never summarised"),
  stream_options: ignored("include_obfuscation: no obfuscation field is sent"),
  reasoning: ignored("mlxs's answers carry no separate reasoning to spend effort on or summarise"),
  truncation: ignored("a conversation longer than the context is refused with 400, never cut"),
};
