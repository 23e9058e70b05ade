"""The learner: completed trees -> advantages -> policy updates -> published weights (DESIGN.md §4.4-§4.6).

`batches` turns trees into training sequences and token-bounded micro-batches; `torch_backend` computes
log-probs and takes optimizer steps with plain torch (the CPU default); `publish` writes a policy
version and has the rollout servers load it behind the probe guard; `checkpoint` saves and restores
everything a run needs to continue exactly. The step loop, the DeepSpeed backend and per-step metrics
are not built yet (milestone 5/10 continues).
"""
