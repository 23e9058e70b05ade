"""The ARPO algorithm, pure: numbers and tensors in, numbers and tensors out.

Read in this order, following DESIGN.md §4:

1. `tags`        the text protocol of tool calls (§4.1): which call a segment ends with, how results look.
2. `entropy`     token entropy, exact from logits or estimated from top-K log-probs; segment means (§4.2).
3. `branching`   when to fork after a tool result, and the per-prompt budget of M trajectories (§4.3).
4. `tree`        the trajectory tree: nodes are segments, leaves are finished trajectories.
5. `rewards`     verifiable rewards: format check, exact match / F1, math equivalence, tool bonus (§4.4).
6. `advantages`  GRPO advantages over a prompt's leaves; soft and hard attribution over the tree (§4.5).
7. `loss`        the clipped policy loss with its options and diagnostics (§4.5).

Nothing here does I/O: no Redis, HTTP, vLLM or DeepSpeed (a test imports this package in a fresh
interpreter and checks). Randomness is passed in (a uniform draw, a `torch.Generator`), so every
decision is a deterministic function of its inputs.
"""
