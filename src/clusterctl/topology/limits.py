"""Every limit the topology and the control channel enforce, written once."""

MAX_GROUP_WORKERS = 1024  # workers one group may have (count, scale, worker add)
MAX_FILE_BYTES = 1 << 20  # a topology is a page of YAML, not a megabyte
MAX_NODES = 100_000  # YAML nodes after alias expansion: stops "billion laughs" documents
MAX_DEPTH = 64  # YAML nesting
MIN_MEMORY = 1 << 20  # a smaller nonzero memory limit is a unit slip ('512' meant '512MB')
