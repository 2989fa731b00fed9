/** Reads server-sent events from a response body: each event's name and joined data lines. */
export async function* readSse(body: AsyncIterable<Buffer | string>): AsyncGenerator<{ event?: string; data: string }> {
  let buffer = "";
  for await (const chunk of body) {
    buffer += chunk.toString();
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) yield { event: /^event: *(.*)$/m.exec(block)?.[1], data };
    }
  }
}
