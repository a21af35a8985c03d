"""Every limit the topology and the control channel enforce, written once."""

MAX_GROUP_WORKERS = 1024  # workers one group may have (count, scale, worker add)
# Workers of all groups together: `max_workers:` in cluster.yaml, default and ceiling. One
# supervisor keeps every worker as a child (a remote one is a local ssh process), so a few
# lines of YAML must not ask for 200,000 of them.
DEFAULT_MAX_WORKERS = 4096
MAX_WORKERS_CEILING = 16384
MAX_FILE_BYTES = 1 << 20  # a topology is a page of YAML, not a megabyte
MAX_NODES = 100_000  # YAML nodes after alias expansion: stops "billion laughs" documents
MAX_DEPTH = 64  # YAML nesting
MIN_MEMORY = 1 << 20  # a smaller nonzero memory limit is a unit slip ('512' meant '512MB')
PRIVILEGED_PORTS = 1024  # ports below this need root on POSIX (unless the kernel says otherwise)
