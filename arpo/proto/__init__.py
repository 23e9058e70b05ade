"""The typed contract every service speaks (DESIGN.md §5).

Every HTTP body and every Redis payload is one of these pydantic models; nothing else crosses a
service boundary. `keys` names every Redis key. `schema` exports JSON Schemas of all messages to the
top-level `proto/` folder, the language-neutral copy of this contract.

Conventions: the loss mask is 1 for tokens sampled by the model (trained) and 0 for prompt and tool
output tokens; per-token arrays of one object have equal lengths; every rollout product carries the
`policy_version` that produced it.
"""
