"""Crash tests: workflows run in a subprocess on a SQLite file, SIGKILLed, and resumed."""
