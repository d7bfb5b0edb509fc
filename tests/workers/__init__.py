"""Tests of workers: several worker processes on one store (a SQLite file, or a namespace on
each server store), started by ``harness.Workers`` and running the workflows of ``app``."""
