/**
 * Keys typed before the chat is on the screen, while node, llama.cpp and the model start.
 * The terminal goes into raw mode at once, so that what is typed from then on is neither
 * echoed over the coming screen nor line-edited, and it is kept to be handed to the chat
 * as if typed there. What was typed even earlier went through the terminal's line
 * discipline, whose Enter arrives as "\n": here that is Enter ("\r") too, since a line
 * break (Ctrl-J in the chat) cannot be what anyone meant before there was a chat.
 */
export interface TypeAhead {
  /** stops listening; what was typed, Enter as "\r", for the chat to take */
  take(): string;
  /** stops listening and gives the terminal back (the chat will not open) */
  cancel(): void;
}

export function captureTypeAhead(stdin: NodeJS.ReadStream = process.stdin): TypeAhead {
  let typed = "";
  // 'readable', not 'data': the stream keeps reading once this listener is gone, and what
  // comes meanwhile waits in its buffer for the chat's own listener (after a pause() it
  // would not start reading again)
  const onReadable = () => {
    let chunk: Buffer | string | null;
    while ((chunk = stdin.read() as Buffer | string | null) !== null) {
      const text = chunk.toString();
      // raw mode keeps Ctrl-C from being a signal: while loading it still leaves
      if (text.includes("\x03")) {
        stdin.off("readable", onReadable);
        stdin.setRawMode(false);
        process.stderr.write("\n");
        process.exit(130);
      }
      typed += text;
    }
  };
  stdin.setRawMode(true);
  stdin.on("readable", onReadable);
  return {
    take() {
      stdin.off("readable", onReadable);
      return typed.replace(/\r?\n/g, "\r");
    },
    cancel() {
      stdin.off("readable", onReadable);
      stdin.pause();
      stdin.setRawMode(false);
    },
  };
}
