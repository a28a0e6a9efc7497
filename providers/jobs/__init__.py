"""Embedding jobs: runner, store, pipeline, input files, writers, allowed paths and the engine seam."""
