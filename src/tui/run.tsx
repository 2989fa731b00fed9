/** Runs the terminal chat until the person leaves; the terminal is restored on every path. */
import { render } from "ink";
import { ChatApp, type ChatAppProps } from "./app.js";

export async function runChatApp(props: ChatAppProps): Promise<void> {
  // Ctrl-C belongs to the app: it stops an answer before it ever leaves
  const app = render(<ChatApp {...props} />, { exitOnCtrlC: false, patchConsole: false });
  try {
    await app.waitUntilExit();
  } finally {
    app.unmount();
    app.cleanup();
  }
}
