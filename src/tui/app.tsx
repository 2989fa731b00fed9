/**
 * The terminal chat: transcript, streaming answer, a multi-line input with history, and a
 * status line. It talks to a ChatBackend (local core or remote server) and nothing else.
 */
import { Box, Text, useApp, useInput } from "ink";
import { useEffect, useRef, useState } from "react";
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { ChatBackend } from "../commands/chat-backend.js";
import type { ChatMessage, ResponseFormat, SamplingOptions } from "../core/types.js";
import { HELP, parseSlash } from "./commands.js";
import { typeInto } from "./keys.js";

// SIGINT is not here: in the raw-mode terminal Ctrl-C arrives as a key
const LEAVE_SIGNALS = ["SIGTERM", "SIGHUP"] as const;

type Entry = { role: "user" | "assistant" | "notice"; text: string };

export interface ChatAppProps {
  backend: ChatBackend;
  system?: string;
  sampling: SamplingOptions;
  /** `--json-schema`: every answer JSON valid against it */
  responseFormat?: ResponseFormat;
  /** keys typed before the chat was on the screen, Enter as "\r" (see type-ahead.ts) */
  typeAhead?: string;
}

interface Status {
  tokensPerSecond?: number;
  contextUsed?: number;
  contextSize?: number;
}

export function ChatApp({ backend, system: initialSystem, sampling: initialSampling, responseFormat, typeAhead }: ChatAppProps) {
  const { exit } = useApp();
  const [entries, setEntries] = useState<Entry[]>([{ role: "notice", text: "Type a message and press Enter. /help lists the commands; Ctrl-D leaves." }]);
  // the input lives in a ref (key handlers read it between renders) mirrored into state (to draw it)
  const inputRef = useRef("");
  const [input, setInputState] = useState("");
  const setInput = (next: string | ((current: string) => string)) => {
    inputRef.current = typeof next === "function" ? next(inputRef.current) : next;
    setInputState(inputRef.current);
  };
  const [streaming, setStreaming] = useState<string | undefined>(undefined);
  const [status, setStatus] = useState<Status>({});
  const [model, setModel] = useState(backend.model);
  // handlers run between renders: they read the transcript from here
  const entriesRef = useRef(entries);
  entriesRef.current = entries;
  const history = useRef<string[]>([]);
  const historyIndex = useRef<number>(-1);
  const conversation = useRef<ChatMessage[]>([]);
  const system = useRef<string | undefined>(initialSystem);
  const sampling = useRef<SamplingOptions>({ ...initialSampling });
  const answering = useRef<AbortController | undefined>(undefined);
  // lines sent while an answer was still coming: sent in turn once it has ended
  const queued = useRef<string[]>([]);
  const [queuedCount, setQueuedCount] = useState(0);
  const leaving = useRef(false);

  // a stop signal (the terminal closed, a kill): stop the answer as Ctrl-C does, and leave
  // once it has ended, so that its audit record is written
  useEffect(() => {
    const leave = () => {
      leaving.current = true;
      if (answering.current) answering.current.abort();
      else exit();
    };
    for (const signal of LEAVE_SIGNALS) process.on(signal, leave);
    return () => { for (const signal of LEAVE_SIGNALS) process.off(signal, leave); };
  }, [exit]);

  // the status line's context size, again whenever /model changes the model
  useEffect(() => {
    setStatus((s) => ({ ...s, contextSize: undefined, contextUsed: undefined }));
    void backend.contextSize().then((size) => setStatus((s) => ({ ...s, contextSize: size })), () => undefined);
  }, [backend, model]);

  const notice = (text: string) => setEntries((e) => [...e, { role: "notice", text }]);

  /** Drops the oldest turns until the conversation fits the context, and says so. */
  async function fitted(): Promise<ChatMessage[]> {
    const withSystem = () => (system.current ? [{ role: "system" as const, content: system.current }, ...conversation.current] : conversation.current);
    const size = await backend.contextSize().catch(() => undefined);
    if (!size || !backend.countTokens) return withSystem();
    const reserve = Math.min(sampling.current.maxTokens ?? 512, Math.floor(size / 2));
    let dropped = 0;
    while (conversation.current.length > 1 && (await backend.countTokens(withSystem())) + reserve > size) {
      conversation.current = conversation.current.slice(conversation.current[1]?.role === "assistant" ? 2 : 1);
      dropped++;
    }
    if (dropped > 0) notice(`Dropped the ${dropped} oldest turn${dropped > 1 ? "s" : ""} so the conversation fits the ${size}-token context.`);
    return withSystem();
  }

  async function ask(text: string) {
    conversation.current = [...conversation.current, { role: "user", content: text }];
    setEntries((e) => [...e, { role: "user", text }]);
    const controller = new AbortController();
    answering.current = controller;
    setStreaming("");
    let answer = "";
    let stopped = false;
    try {
      const messages = await fitted();
      for await (const event of backend.stream(messages, { ...sampling.current, responseFormat }, controller.signal)) {
        if (event.type === "delta") {
          answer += event.text;
          setStreaming(answer);
          continue;
        }
        if (event.type !== "done") continue;
        const used = event.usage.promptTokens + event.usage.completionTokens;
        setStatus((s) => ({ ...s, tokensPerSecond: event.timings.tokensPerSecond, contextUsed: used }));
        stopped = event.finishReason === "cancelled";
      }
      conversation.current = [...conversation.current, { role: "assistant", content: answer }];
      setEntries((e) => [...e, { role: "assistant", text: answer }]);
      // under the answer it ends, as it is read
      if (stopped) notice("(answer stopped)");
    } catch (error) {
      // the question stays unanswered in the transcript, and out of the conversation
      conversation.current = conversation.current.slice(0, -1);
      if (answer) setEntries((e) => [...e, { role: "assistant", text: answer }]);
      // stopped before it began (waiting for the model or a sequence): stopped all the same
      if (controller.signal.aborted) notice("(answer stopped)");
      else notice(error instanceof Error ? error.message.split("\n")[0]! : String(error));
    } finally {
      answering.current = undefined;
      setStreaming(undefined);
      if (leaving.current) exit();
      else sendNext();
    }
  }

  function sendNext() {
    const next = queued.current.shift();
    setQueuedCount(queued.current.length);
    if (next !== undefined) send(next);
  }

  function send(text: string) {
    if (answering.current) {
      queued.current.push(text);
      setQueuedCount(queued.current.length);
      return;
    }
    if (text.startsWith("/")) void command(text).then(() => { if (!answering.current) sendNext(); });
    else void ask(text);
  }

  async function command(line: string) {
    const action = parseSlash(line);
    switch (action.kind) {
      case "help": return notice(HELP);
      case "exit": return exit();
      case "clear":
        conversation.current = [];
        setEntries([{ role: "notice", text: "New conversation." }]);
        return setStatus((s) => ({ ...s, contextUsed: undefined }));
      case "system":
        system.current = action.text || undefined;
        return notice(action.text ? "System prompt set." : "System prompt cleared.");
      case "set":
        sampling.current = { ...sampling.current, [action.key]: action.value };
        return notice(`${line.trim().split(/\s+/)[1]} = ${action.value}`);
      case "show-settings":
        return notice(`Settings: ${JSON.stringify(sampling.current)}${system.current ? " (with a system prompt)" : ""}`);
      case "model":
        if (!backend.models().includes(action.name)) return notice(`No model "${action.name}". Served: ${backend.models().join(", ") || "(unknown)"}`);
        backend.model = action.name;
        setModel(action.name);
        return notice(`Now answering with ${action.name}.`);
      case "save": {
        const path = resolve(action.file);
        const markdown = entriesRef.current.filter((e) => e.role !== "notice")
          .map((e) => `## ${e.role === "user" ? "You" : "Assistant"}\n\n${e.text}\n`).join("\n");
        try {
          await writeFile(path, `# mlxs chat with ${model}\n\n${system.current ? `System: ${system.current}\n\n` : ""}${markdown}`);
          return notice(`Saved the transcript to ${path}.`);
        } catch (error) {
          return notice(`Cannot save to ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
        }
      }
      case "error": return notice(action.message);
    }
  }

  function submit() {
    const input = inputRef.current;
    // a line ending in a backslash continues on the next line
    if (input.endsWith("\\")) return setInput(input.slice(0, -1) + "\n");
    const text = input.trim();
    setInput("");
    historyIndex.current = -1;
    if (!text) return;
    history.current = [...history.current.filter((h) => h !== text), text];
    send(text);
  }

  // what was typed before the chat was on the screen: each finished line is sent, in
  // order, and the unfinished rest waits in the input box
  useEffect(() => {
    if (!typeAhead) return;
    const lines = typeAhead.split("\r");
    const rest = lines.pop()!;
    for (const line of lines) {
      setInput(typeInto("", line).text);
      submit();
    }
    setInput(typeInto(inputRef.current, rest).text);
    // once, at mount: the keys were typed once
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  useInput((typed, key) => {
    if (key.ctrl && typed === "c") {
      // stops this answer only: a line sent meanwhile was meant, and goes out next
      if (answering.current) return answering.current.abort();
      if (inputRef.current) return setInput("");
      return exit();
    }
    if (key.ctrl && typed === "d") {
      if (!inputRef.current && !answering.current) exit();
      return;
    }
    // typing goes on while an answer comes; what is sent then waits for it to end
    if (key.return) return submit();
    if (key.upArrow || key.downArrow) {
      const list = history.current;
      if (list.length === 0) return;
      let index = historyIndex.current === -1 ? list.length : historyIndex.current;
      index = key.upArrow ? Math.max(0, index - 1) : index + 1;
      historyIndex.current = index >= list.length ? -1 : index;
      return setInput(index >= list.length ? "" : list[index]!);
    }
    if (key.backspace || key.delete) return setInput((s) => s.slice(0, -1));
    if (key.escape || key.tab || key.leftArrow || key.rightArrow) return;
    if (!typed) return;
    // keys typed fast (or pasted) arrive together: a final Enter among them still sends
    const { text, send: sends } = typeInto(inputRef.current, typed);
    setInput(text);
    if (sends) submit();
  });

  const statusLine = [
    model || "(no model)",
    backend.label,
    status.tokensPerSecond ? `${status.tokensPerSecond.toFixed(1)} tok/s` : undefined,
    status.contextSize ? `ctx ${status.contextUsed ?? 0}/${status.contextSize}` : status.contextUsed ? `ctx ${status.contextUsed}` : undefined,
    queuedCount ? `${queuedCount} queued` : undefined,
    "Ctrl-J newline",
    "/help",
  ].filter(Boolean).join(" · ");

  return (
    <Box flexDirection="column">
      {entries.map((entry, i) => (
        <Box key={i} marginBottom={entry.role === "assistant" ? 1 : 0}>
          {entry.role === "user" ? <Text color="cyan">{`› ${entry.text}`}</Text>
            : entry.role === "notice" ? <Text color="yellow">{entry.text}</Text>
              : <Text>{entry.text}</Text>}
        </Box>
      ))}
      {streaming !== undefined && <Text>{streaming}<Text dimColor>▍</Text></Text>}
      <Box borderStyle="round" borderColor={streaming !== undefined ? "gray" : "green"} paddingX={1}>
        <Text>{streaming !== undefined && !input ? <Text dimColor>answering… Ctrl-C stops</Text> : <>{"> "}{input}<Text inverse> </Text></>}</Text>
      </Box>
      <Text dimColor>{statusLine}</Text>
    </Box>
  );
}
