/** What a chunk of typed keys does to the input line: text typed fast, pasted, or typed ahead. */

/**
 * The input after `typed`: printable text is added (a Enter inside the chunk is a line break
 * of what was pasted), Backspace deletes, other control keys and escape sequences are
 * dropped; `send` when the chunk ends with Enter, as a person finishing a line means it.
 */
export function typeInto(current: string, typed: string): { text: string; send: boolean } {
  const send = typed.endsWith("\r");
  const keys = (send ? typed.slice(0, -1) : typed)
    .replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[O][@-~]|\x1b./g, "")
    .replace(/\r\n?/g, "\n");
  let text = current;
  for (const key of keys) {
    if (key === "\x7f" || key === "\b") text = text.slice(0, -1);
    else if (key === "\n" || key === "\t" || key >= " ") text += key;
  }
  return { text, send };
}
