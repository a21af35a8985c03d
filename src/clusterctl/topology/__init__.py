"""The topology: typed models of cluster.yaml, loaded safely, with one-line error messages.

>>> cfg = load_config("cluster.yaml")      # doctest: +SKIP
>>> [g.name for g in cfg.workers]
['default']
"""

from .limits import DEFAULT_MAX_WORKERS, MAX_FILE_BYTES, MAX_GROUP_WORKERS, MAX_WORKERS_CEILING
from .loading import default_config_path, load_config, parse_config
from .models import (
    LOCAL_HOST,
    ClusterConfig,
    HostConfig,
    RestartPolicy,
    SchedulerConfig,
    TlsConfig,
    Timeouts,
    WorkerGroup,
    is_loopback,
)

__all__ = [
    "DEFAULT_MAX_WORKERS", "LOCAL_HOST", "MAX_FILE_BYTES", "ClusterConfig", "HostConfig", "MAX_GROUP_WORKERS",
    "MAX_WORKERS_CEILING", "RestartPolicy", "SchedulerConfig",
    "TlsConfig", "Timeouts", "WorkerGroup", "default_config_path", "is_loopback", "load_config", "parse_config",
]
