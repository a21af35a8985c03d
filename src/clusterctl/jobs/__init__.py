"""Jobs that clusterctl can run on a supervised Dask cluster."""
