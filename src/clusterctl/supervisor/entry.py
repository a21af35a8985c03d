"""The background supervisor's entry point: ``python -m clusterctl.supervisor CONFIG [--require-all]``."""

from __future__ import annotations

import sys

from ..errors import ClusterError
from ..topology import load_config
from .loop import Supervisor


def main(argv: list[str] | None = None) -> int:
    """Entry point of the background supervisor: ``python -m clusterctl.supervisor CONFIG [--require-all]``."""
    args = list(argv if argv is not None else sys.argv[1:])
    require_all = "--require-all" in args
    args = [a for a in args if a != "--require-all"]
    if len(args) != 1:
        print("usage: python -m clusterctl.supervisor CONFIG [--require-all]", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args[0])
        sup = Supervisor(cfg, echo=lambda s: print(s, flush=True), require_all=require_all)
        return sup.run()
    except ClusterError as e:
        print(str(e), file=sys.stderr, flush=True)
        return e.exit_code

