"""Design-space sweeps: YAML specs, a resumable engine (process pool or Dask), reports."""
