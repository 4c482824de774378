"""The ``minitron`` command: ``minitron <command> key=value ...`` runs that command's recipe.

The commands are declared in :mod:`minitron.commands`. A Hydra command's arguments are config
overrides (``model.path=DIR``, ``parallel.tp=2``; ``--cfg job`` prints the composed config). They are
composed and validated here first, so that a misspelt key, a wrong type or an override Hydra cannot
parse ends in one ``error:`` line and exit status 2 (see :mod:`minitron.config.compose`). Run a
command under ``torchrun --nproc-per-node N $(which minitron) <command> ...`` for TP/PP/DP > 1.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys

from minitron import failures
from minitron.commands import COMMANDS, Command
from minitron.errors import MinitronError

USAGE = """usage: minitron <command> [key=value ...]

Compress Llama-family LLMs with the Minitron recipe on Megatron-Core.

commands:
{commands}

Examples:
  minitron info model.path=~/models/SmolLM2-135M
  minitron convert model.path=HF_DIR output=CKPT_DIR
  torchrun --nproc-per-node 2 $(which minitron) eval model.path=CKPT_DIR data.path=heldout.jsonl parallel.tp=2

`minitron <command> --help` lists a command's settings; `minitron <command> ... --cfg job` prints them composed."""


def usage() -> str:
    names = {name: " ".join(filter(None, (name, c.subcommand))) for name, c in COMMANDS.items()}
    width = max(map(len, names.values()))
    return USAGE.format(commands="\n".join(f"  {names[n]:<{width}}  {c.help}" for n, c in COMMANDS.items()))


def _print_error(message: str) -> None:
    """Rank 0 (or a lone process) prints the one error line."""
    if os.environ.get("RANK", "0") == "0" or os.environ.get("WORLD_SIZE", "1") == "1":
        print(f"error: {message}", file=sys.stderr, flush=True)


def command_help(command: Command) -> str:
    """What ``minitron <command> --help`` prints: the recipe's docstring and every setting with its comment."""
    from minitron.config.compose import compose
    from minitron.config.describe import describe

    module = importlib.import_module(command.module)
    doc = (module.__doc__ or command.help).strip()
    cfg = compose(command.config, [], command=f"minitron {command.name}", check=False)
    return f"{doc}\n\nsettings (key = value as composed  # meaning):\n{describe(cfg)}"


def _resolve(argv: list[str]) -> tuple[Command, list[str]]:
    """The command named by ``argv`` and its own arguments; MinitronError for an unknown one."""
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"did you mean `minitron {close[0]}`?" if close else "`minitron --help` lists them"
        raise MinitronError(f"unknown command {name!r}: {hint}")
    command = COMMANDS[name]
    if command.subcommand:
        if rest and rest[0] == command.subcommand:
            return command, rest[1:]
        if rest and rest[0] in ("-h", "--help", "help"):
            return command, rest
        given = f"unknown {name} sub-command {rest[0]!r}" if rest else f"missing {name} sub-command"
        raise MinitronError(f"{given}: use `minitron {name} {command.subcommand} key=value ...`")
    return command, rest


def run(command: Command, args: list[str]) -> int:
    """Validate ``args`` against ``command``'s config, then run its recipe (Hydra parses argv again)."""
    from minitron.config.compose import compose, expand_user, hydra_overrides

    module = importlib.import_module(command.module)
    if command.config is None:
        return module.main(args) or 0
    if any(arg in ("-h", "--help", "help") for arg in args):
        print(command_help(command))
        return 0
    args = expand_user(args)
    overrides = hydra_overrides(args)
    label = f"minitron {command.name}"
    if len(overrides) == len(args):  # a run: compose, then every schema check, before anything starts
        from minitron.config.schema import to_object

        to_object(compose(command.config, overrides, command=label))
    else:  # --cfg job, --info ...: Hydra prints, but a bad override still gets one line
        compose(command.config, overrides, command=label, check=False)
    sys.argv = [f"minitron-{command.name}", *args]
    module.main()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from minitron import __version__

        print(f"minitron {__version__}")
        return 0
    try:
        command, args = _resolve(argv)
        return failures.run_cleanly(command.name, lambda: run(command, args))
    except MinitronError as err:
        _print_error(str(err))
        return 2


if __name__ == "__main__":
    sys.exit(main())
