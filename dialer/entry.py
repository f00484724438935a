"""The `dialer` command's entry point, apart from the CLI so Ctrl-C while it loads ends quietly.

A KeyboardInterrupt raised while `dialer.cli` (click, the stdlib) is still being imported
can only be caught from outside that import: here.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from dialer.cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("dialer: interrupted\n")
        raise SystemExit(130) from None
    cli()
