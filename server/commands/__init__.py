"""The command line's batch commands: `embed` (with its engines and progress) and `cache`."""
