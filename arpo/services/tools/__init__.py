"""The tool service: sandboxed Python execution and search (DESIGN.md §4.1, §6)."""
