"""The remote transports of the launch seam (runtime/launch.py), and the one function that chooses.

``choose`` decides before the start, from the spec and what is known about its host: a remote
process goes over its host's direct route while that route is usable (remote/routes.py), else
through an agent; a local one is forked from the warm server where that equals exec, else exec'd.
The choice is never revised inside a handle: a direct start that fails before its process exists
ends (``NOT_STARTED``), its route is marked, and the next start chooses again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..plan.specs import cluster_tag, number, remote_workdir
from ..plan.ssh import control_dir, remote_command, ssh_argv
from ..runtime import warm
from ..runtime.launch import ExecLaunch, Launch, Launched, Transport, WarmLaunch
from . import direct

if TYPE_CHECKING:
    from ..plan.resolve import Launcher
    from ..plan.specs import ProcessSpec
    from ..topology import ClusterConfig


def agent_argv(cfg: ClusterConfig, spec: ProcessSpec) -> tuple[str, ...]:
    """ssh to the spec's host, where ``clusterctl.remote.agent`` resolves Dask for that host and owns the
    process. The environment is not on this command line (`ps` on both machines would show it): only
    its keys are, and the agent reads the values from its stdin first (ProcessSpec.preamble)."""
    h = cfg.host(spec.at)
    agent = [
        h.python, "-m", "clusterctl.remote.agent",
        "--grace", number(cfg.timeouts.shutdown),
        "--cwd", remote_workdir(cfg, spec.at),
        "--tag", cluster_tag(cfg),
        "--launch", spec.role,
        "--lifeline-timeout", number(h.lifeline_timeout),
    ]
    if not spec.dashboard:
        agent.append("--no-dashboard-pages")
    if spec.nice is not None:
        agent += ["--nice", str(spec.nice)]
    for key in sorted(spec.remote_env):
        agent += ["--env-key", key]
    return tuple(ssh_argv(h, control_dir(cfg)) + [remote_command([*agent, "--", *spec.remote_args])])


class Remote:
    """What both remote transports share: the host is swept the same way. A stop begins by closing the
    lifeline (after wire.KILL with ``kill``): the far side stops the process, its ssh leaves."""

    def __init__(self, cfg: ClusterConfig):
        self.cfg = cfg

    def sweep(self, host: str, on_differ: Any = None) -> None:
        """Whatever this cluster left on the host stopped, its files again, a fresh fork server."""
        from . import fleet

        fleet.revive(self.cfg, host, on_differ=on_differ)


class AgentLaunch(Remote):
    """An ssh session running ``clusterctl.remote.agent``: its stdin is the lifeline, and carries the
    environment first (never on a command line)."""

    transport = Transport.AGENT

    def start(self, spec: ProcessSpec) -> Launched:
        argv = agent_argv(self.cfg, spec)
        return Launched(direct.over_agent(spec, argv), self.transport, argv)

    def ask(self, handle: Any, kill: bool) -> bool:
        return direct.shut_lifeline(handle.stdin, kill)  # the ssh's stdin is the agent's lifeline


class DirectLaunch(Remote):
    """One ``ssh -W`` channel to the host's fork server, which forks or execs the Dask process there."""

    transport = Transport.DIRECT

    def __init__(self, cfg: ClusterConfig, route: direct.Route):
        super().__init__(cfg)
        self.route = route

    def ask(self, handle: Any, kill: bool) -> bool:
        return handle.close_lifeline(kill)  # under its stop lock: the word only once its request went

    def start(self, spec: ProcessSpec) -> Launched:
        child = direct.spawn(self.cfg, spec, self.route)
        return Launched(child, self.transport, tuple(child.argv))


def choose(cfg: ClusterConfig, spec: ProcessSpec, launcher: Launcher | None, warm_ok: bool = True) -> Launch:
    """The one transport for this start."""
    if spec.remote:  # (a remote scheduler goes through its agent: no fork server precedes it there)
        way = direct.route(cluster_tag(cfg), spec.at) if spec.role == "worker" else None
        return DirectLaunch(cfg, way) if way is not None else AgentLaunch(cfg)
    if warm_ok and warm.usable(spec, launcher):
        return WarmLaunch()
    return ExecLaunch()
