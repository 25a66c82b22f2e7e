"""Options shared by the commands of `cli.py` and `store/cli.py` (both import them from here, downward)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from .devices import DEVICE_HELP
from .errors import LifelongError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the CLI's and the server's


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`--set KEY=VALUE` pairs (a key's dashes read as underscores)."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise LifelongError(f"--set {p!r}: expected KEY=VALUE")
        k, v = p.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def setup_logging(level: str | None = None) -> None:
    """INFO by default; LIFELONG_LOG_LEVEL (set by --quiet / --verbose, so child processes of `bench` follow)."""
    level = (level or os.environ.get("LIFELONG_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, datefmt="%H:%M:%S")
    logging.getLogger("lifelong").setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    for noisy in ("httpx", "urllib3", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _level(level: str):
    def apply(value: bool) -> bool:
        if value:
            os.environ["LIFELONG_LOG_LEVEL"] = level
            setup_logging(level)
        return value

    return apply


def _config_file(ctx: typer.Context, value: Path | None) -> Path | None:
    if value is not None:
        from .configfile import defaults

        ctx.default_map = {**(ctx.default_map or {}), **defaults(value, ctx.command.params)}
    return value


DeviceOption = Annotated[str, typer.Option(help=DEVICE_HELP, envvar="LIFELONG_DEVICE")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", is_eager=True, callback=_level("WARNING"),
                                           help="Only warnings and errors; no progress bars.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", is_eager=True, callback=_level("DEBUG"),
                                             help="Debug log lines too.")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", metavar="FILE", is_eager=True, callback=_config_file,
    help="YAML or JSON file of this command's options (keys as the flags; `settings`: a mapping of --set pairs); "
         "flags on the command line win. A run's results.json rebuilds that run.")]
