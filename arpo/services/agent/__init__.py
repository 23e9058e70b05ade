"""The agent workers: ARPO tree rollouts from a Redis stream of branch requests (DESIGN.md §4.3, §6).

`store` is the queue and the tree store (Redis streams, hashes and Lua scripts), `trajectory` the
per-trajectory state machine, `worker` the loop that runs many trajectories per process, `__main__` the
entry point (`python -m arpo.services.agent`).
"""
