"""The learner: completed trees -> advantages -> policy updates -> published weights (DESIGN.md §4.4-§4.6).

`batches` turns trees into training sequences and token-bounded micro-batches; `torch_backend` computes
log-probs and takes optimizer steps with plain torch (the CPU default); `step` trains on one step's
trees and reports its `StepMetrics`; `publish` writes a policy version and has the rollout servers load
it behind the probe guard; `checkpoint` saves and restores everything a run needs to continue exactly.
The step loop (seeding trees, waiting for them, publishing, checkpointing, metrics to Redis), the entry
point and the DeepSpeed backend are not built yet (milestone 5/10 continues).
"""
