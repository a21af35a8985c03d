"""demo churn: the Monte Carlo graph while workers join, retire and crash; demo adapt: bursts of it on
an adaptive group; demo owner: the workstation's owner arriving mid-job, on a cluster of its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ClusterError
from . import app
from .common import ConfigOption, JsonOption, config, out, user_errors

DEFAULT_SCHEDULE = "2:add 2,5:retire 1,8:kill 1,11:add 1"  # churn.DEFAULT_SCHEDULE, without importing numpy

demo_app = typer.Typer(help="Demonstrations on the running cluster (demo owner runs its own).\n\nExample: clusterctl demo churn; clusterctl demo adapt; clusterctl demo owner", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


@demo_app.command("churn")
@user_errors
def churn(
    schedule: Annotated[str, typer.Option(help="SECONDS:ACTION [COUNT],... with ACTION add|retire|kill.")] = DEFAULT_SCHEDULE,
    tasks: Annotated[int, typer.Option(help="Number of tasks.")] = 1200,
    min_points: Annotated[int, typer.Option(help="Points in the smallest task.")] = 1_000_000,
    max_points: Annotated[int, typer.Option(help="Points in the largest task.")] = 20_000_000,
    seed: Annotated[int, typer.Option(help="Seed of the job and of the undisturbed reference run.")] = 42,
    group: Annotated[Optional[str], typer.Option("--group", "-g", help="Worker group to add to and remove from.")] = None,
    chart: Annotated[Optional[Path], typer.Option(help="PNG chart to write.")] = Path("churn.png"),
    file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the Monte Carlo graph while workers are added, retired and killed on a schedule,
    then prove every result equals an undisturbed run with the same seed.

    Example: clusterctl demo churn --schedule "2:add 2,5:retire 1,8:kill 1" --chart churn.png
    """
    from ..client.churn import parse_schedule, run_churn
    from ..jobs.montecarlo import MonteCarloSpec

    cfg = config(file)
    events = parse_schedule(schedule)
    spec = MonteCarloSpec(tasks=tasks, min_points=min_points, max_points=max_points, seed=seed)
    echo = (lambda line: None) if as_json else (lambda line: out.print(line, markup=False))
    report = run_churn(cfg, spec, events, chart=chart, echo=echo, group=group)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        if report.identical:
            out.print(f"OK: all {report.tasks} results equal the undisturbed run with seed {seed}.")
        else:
            out.print(f"MISMATCH: {len(report.mismatched)} of {report.tasks} results differ (tasks {report.mismatched[:10]}).")
        out.print(f"{report.recomputed} tasks were recomputed (results lost with a killed worker); "
                  f"{report.interrupted} runs were cut short and restarted elsewhere; retired workers' results moved, none recomputed.")
        if report.chart:
            out.print(f"chart: {report.chart}")
    if not report.identical:
        raise ClusterError("results differ from the undisturbed run")


@demo_app.command("adapt")
@user_errors
def adapt(
    bursts: Annotated[int, typer.Option(help="Bursts of work.")] = 3,
    tasks: Annotated[int, typer.Option(help="Monte Carlo tasks per burst.")] = 200,
    min_points: Annotated[int, typer.Option(help="Points in a burst's smallest task.")] = 2_000_000,
    max_points: Annotated[int, typer.Option(help="Points in a burst's largest task.")] = 40_000_000,
    gap: Annotated[float, typer.Option(help="Idle seconds between a burst's end and the next burst.")] = 15.0,
    seed: Annotated[int, typer.Option(help="Seed of the first burst (burst k uses seed + k).")] = 42,
    settle: Annotated[float, typer.Option(help="Most seconds to wait for the group at its minimum, before and after.")] = 90.0,
    group: Annotated[Optional[str], typer.Option("--group", "-g", help="The adaptive group (needed when several are).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for demo-adapt.png and demo-adapt.json.")] = Path("."),
    file: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Queue bursts of Monte Carlo work on an adaptive group, with idle gaps between; print a live
    timeline of its size and the supervisor's adapt decisions; check every result against the same
    seeds computed serially, count the tasks recomputed, and chart it all.

    Example: clusterctl demo adapt --bursts 3 --tasks 200 --gap 15 --out docs/
    """
    from ..client.adaptdemo import BurstPlan, run_adapt

    cfg = config(file)
    plan = BurstPlan(bursts=bursts, tasks=tasks, min_points=min_points, max_points=max_points, seed=seed,
                     gap=gap, settle=settle)
    echo = (lambda line: None) if as_json else (lambda line: out.print(line, markup=False))
    report = run_adapt(cfg, plan, group=group, out_dir=out_dir, echo=echo)
    if as_json:
        out.print_json(json.dumps(report.summary()))
    else:
        f = report.figures
        sec = (lambda v: "-" if v is None else f"{v:.2f} s")
        out.print(f"burst queued to first new worker registered: {sec(f['burst_to_first_worker_s'])} (worst of "
                  + ", ".join(sec(b.first_new_worker) for b in report.bursts) + "; the supervisor decided after "
                  + ", ".join(sec(b.first_decision) for b in report.bursts) + ")", markup=False)
        out.print(f"idle to back at the minimum: {sec(f['idle_to_minimum_s'])} (worst of "
                  + ", ".join(sec(b.back_to_minimum) for b in report.bursts) + ")", markup=False)
        out.print(f"tasks recomputed: {len(report.recomputed)}; runs cut short: {len(report.interrupted)}")
        total = report.plan["bursts"] * report.plan["tasks"]
        if report.identical:
            out.print(f"OK: all {total} results equal the same seeds computed serially.")
        else:
            out.print(f"MISMATCH: {len(report.mismatched)} results differ (burst:task {report.mismatched[:10]}).")
        for note in report.notes:
            out.print(f"note: {note}", markup=False)
        out.print(f"chart: {report.chart}\nfigures: {report.data}", markup=False)
    if not report.identical:
        raise ClusterError("results differ from the serial run of the same seeds")
    if report.recomputed:
        raise ClusterError(f"{len(report.recomputed)} tasks were recomputed: a result was lost while the group adapted")


@demo_app.command("owner")
@user_errors
def owner(
    workers: Annotated[int, typer.Option(help="Workers on this machine, one thread each.")] = 2,
    arrive: Annotated[float, typer.Option(help="Seconds after the job is queued when the owner arrives.")] = 5.0,
    stay: Annotated[float, typer.Option(help="Seconds the owner stays.")] = 10.0,
    retire_after: Annotated[float, typer.Option(help="owner.retire_after: seconds paused before the workers retire.")] = 4.0,
    resume_after: Annotated[float, typer.Option(help="owner.resume_after: seconds of owner-idle before they come back.")] = 4.0,
    task_seconds: Annotated[float, typer.Option(help="About how long one task runs (its points are measured here).")] = 0.2,
    tail: Annotated[float, typer.Option(help="Seconds the workers run after they come back (the job is a steady stream until then).")] = 6.0,
    tasks: Annotated[int, typer.Option(help="Monte Carlo tasks queued at once (0: a steady stream, see --tail).")] = 0,
    points: Annotated[int, typer.Option(help="Points per task (0: measured for --task-seconds).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the job and of the serial reference run.")] = 42,
    out_path: Annotated[Path, typer.Option("--out", help="The PNG chart to write (its figures beside it, .json).")] = Path("demo-owner.png"),
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's temp dir (topology, logs, events.jsonl).")] = False,
    as_json: JsonOption = False,
) -> None:
    """The workstation's owner arrives mid-job: the workers pause, retire, and come back when the
    owner leaves. Runs its own cluster in a temp dir (free ports, the owner's presence is a flag
    file there), prints a live timeline, checks every result against a serial run, charts it all.

    Example: clusterctl demo owner --arrive 5 --stay 10 --out demo-owner.png
    """
    from ..client.ownerdemo import OwnerPlan, run_owner

    plan = OwnerPlan(workers=workers, arrive=arrive, stay=stay, retire_after=retire_after, resume_after=resume_after,
                     task_seconds=task_seconds, tail=tail, tasks=tasks, points=points, seed=seed)
    echo = (lambda line: None) if as_json else (lambda line: out.print(line, markup=False))
    report = run_owner(plan, out=out_path, echo=echo, keep=keep)
    if as_json:
        out.print_json(json.dumps(report.summary()))
    else:
        f = report.figures
        sec = (lambda v: "-" if v is None else f"{v:.2f} s")
        out.print(f"owner arrived -> workers paused: {sec(f['paused_s'])} (owner-active seen after "
                  f"{sec(f['owner_seen_s'])}); last task started {sec(f['last_start_s'])} after the owner arrived",
                  markup=False)
        out.print(f"paused -> retired: {sec(f['retired_s'])} (retire_after {plan.retire_after:g} s); "
                  f"owner left -> workers back: {sec(f['back_s'])} (resume_after {plan.resume_after:g} s), "
                  f"first task again after {sec(f['first_task_back_s'])}", markup=False)
        out.print(f"tasks recomputed: {len(report.recomputed)}")
        if report.identical:
            out.print(f"OK: all {report.tasks} results are identical to the same tasks computed serially.")
        else:
            out.print(f"MISMATCH: {len(report.mismatched)} of {report.tasks} results differ from the serial run "
                      f"(tasks {report.mismatched[:10]}).")
        for note in report.notes:
            out.print(f"note: {note}", markup=False)
        out.print(f"chart: {report.chart}\nfigures: {report.data}" + (f"\nkept: {report.kept}" if report.kept else ""),
                  markup=False)
    if not report.identical:
        raise ClusterError("results differ from the serial run of the same tasks")
