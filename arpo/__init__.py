"""arpo: train tool-using LLM agents with ARPO (Agentic Reinforced Policy Optimization).

Layout (see DESIGN.md §3): `arpo.core` is the pure algorithm, `arpo.proto` the typed contract every
service speaks, `arpo.services` the processes, `arpo.config` the one `RunConfig`, `arpo.cli` the `arpo`
command.
"""

__version__ = "0.1.0"
