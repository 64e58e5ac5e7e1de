"""The device pool: TLS, runs, searches and profiles on a real Dask scheduler and loopback sshd boards."""
