/**
 * commander, suggesting what was meant by an unknown option. Its own suggestion is by edit
 * distance alone, so a shortened option (`--temp`) was offered `--help` (two letters away)
 * rather than `--temperature`, which it begins: a long option that begins with what was
 * typed is offered first.
 */
import { Command } from "commander";

export class MlxsCommand extends Command {
  override createCommand(name?: string): MlxsCommand {
    return new MlxsCommand(name);
  }

  /** commander calls this (an undocumented hook of its own) for each unknown option. */
  unknownOption(flag: string): never {
    const begun = flag.startsWith("--") ? this.longOptions().filter((long) => long.startsWith(flag)) : [];
    if (begun.length > 0) {
      const suggestion = begun.length === 1 ? begun[0] : `one of ${begun.join(", ")}`;
      this.error(`error: unknown option '${flag}'\n(Did you mean ${suggestion}?)`, { code: "commander.unknownOption" });
    }
    return (Command.prototype as unknown as { unknownOption(this: Command, flag: string): never }).unknownOption.call(this, flag);
  }

  /** This command's long options and its parents', as commander's own suggestion looks at them. */
  private longOptions(): string[] {
    const longs: string[] = [];
    for (let command: Command | null = this; command; command = command.parent) {
      longs.push(...command.options.filter((option) => !option.hidden && option.long).map((option) => option.long!));
    }
    return [...new Set(longs)];
  }
}
