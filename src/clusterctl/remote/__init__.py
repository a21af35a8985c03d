"""Reaching the other workstations: ssh argv (ssh.py), the host probe run there (probe.py),
and the fleet-wide steps around a start and a stop (fleet.py)."""
