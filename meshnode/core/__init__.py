"""The sans-I/O core: wire format, jobs, scheduling and verification.

Nothing here does I/O, reads a clock or draws randomness: time and random
values arrive as arguments, so every decision can be replayed and tested.
"""
