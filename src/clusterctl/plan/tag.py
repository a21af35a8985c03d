"""The cluster tag's variable: on every process a cluster starts, here or on another host, so a
stop or a sweep finds this cluster's processes by it, and never another's. A module of its own,
so the light processes (the remote agent, probe and fork server) import it without the models."""

TAG_ENV = "CLUSTERCTL_TAG"
KEEP_ENVIRON = {"SPT_NOENV": "1"}  # Dask's retitling must not wipe the tag from /proc/PID/environ
