# The stand-in step modules under stubs/ are imported by kfp.local subprocesses, never collected.
collect_ignore = ["stubs"]
