"""Settings clusterctl gives the processes it starts, unless told otherwise.

Measured on 2 cores with the default job (scripts/bench, README "Performance"):

Dask's defaults wake every idle worker about 160 times a second (a 20 ms event-loop
health tick, a 10 ms statistical profiler, a 500 ms system monitor): 3.6% of a core
per idle worker and 2.2% for the scheduler, taken from the tasks. With the values
below an idle worker uses 0.8%. What they change:

- the tick only feeds the "event loop was unresponsive for 3 s" warning and a
  digest; at 500 ms it still catches every stall that warning is about;
- the profiler keeps running at 100 ms: the dashboard's Profile page fills up ten
  times more slowly, which matters only for jobs of a few seconds;
- the system monitor (the dashboard's System page, worker memory in heartbeats)
  samples every second and so keeps two hours of history instead of one.

glibc's malloc hands allocations over 128 KiB to mmap and trims free heap tops over
128 KiB, adjusting both only after the first large free. NumPy temporaries of a few
hundred KiB, made and freed in a loop on a worker's task thread, then cost a page
fault per 4 KiB each time: 36,000-70,000 faults per worker in one run of the
default job, and 10-30% more worker CPU than the same kernel in one process. Fixed
thresholds of 1 MiB (mmap) and 2 MiB (trim) keep such buffers in the heap; larger
arrays still go to mmap and return to the system when freed. (Dask's nanny sets
MALLOC_TRIM_THRESHOLD_=64 KiB instead, favouring prompt return of memory; set it in
a group's env: to get that.)

Workers run without a nanny by default, so they would miss the nanny's
``pre-spawn-environ``; its thread caps for OpenMP, MKL and OpenBLAS are set here
instead (one BLAS thread per Dask thread, as with a nanny).

Precedence: a group's ``env:`` in cluster.yaml, then the environment clusterctl runs
in, then these. Setting one of these variables yourself restores your value.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

DEFAULTS: dict[str, str] = {
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "500ms",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "1s",
    "DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL": "100ms",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(2 << 20),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def apply_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Add the defaults ``environ`` lacks; return what was added.

    Called by the supervisor (and a remote host's agent) before it starts anything, so
    that every child inherits them: exec'd ones and those forked from the warm server,
    whose malloc reads the MALLOC_* variables once when it starts."""
    added = {k: v for k, v in DEFAULTS.items() if k not in environ}
    environ.update(added)
    return added
