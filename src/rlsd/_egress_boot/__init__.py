"""Holds the sitecustomize bootstrap of rlsd.perimeter (this folder goes on a guarded child's PYTHONPATH)."""
