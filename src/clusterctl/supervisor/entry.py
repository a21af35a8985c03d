"""The supervisor's entry point: ``python -m clusterctl.supervisor CONFIG [--require-all]``.

`clusterctl up` starts it so (exec'd, or forked and this ``main`` found by its name), and
`up --foreground` becomes it: the client and the CLI never import the supervisor."""

from __future__ import annotations

import sys

from ..errors import ClusterError
from ..topology import load_config
from .loop import Supervisor


def main(argv: list[str] | None = None) -> int:
    """Run the supervisor of the topology file CONFIG until the cluster stops; its exit code (0, 1 start-up
    failed, 2 bad config, 4 refused: another supervisor runs it)."""
    args = list(argv if argv is not None else sys.argv[1:])
    require_all = "--require-all" in args
    args = [a for a in args if a != "--require-all"]
    if len(args) != 1:
        print("usage: python -m clusterctl.supervisor CONFIG [--require-all]", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args[0])
        sup = Supervisor(cfg, echo=lambda s: print(s, flush=True), require_all=require_all)
        code = sup.run()
        if code == 1 and sup.error:  # `up` reads it from the ledger; `up --foreground` shows it here
            print(f"error: {sup.error}", file=sys.stderr, flush=True)
        return code
    except ClusterError as e:
        print(str(e), file=sys.stderr, flush=True)
        return e.exit_code

