"""The learner: completed trees -> advantages -> policy updates -> published weights (DESIGN.md §4.4-§4.6).

`batches` turns trees into training sequences and token-bounded micro-batches; `torch_backend` computes
log-probs and takes optimizer steps with plain torch (the CPU default); `step` trains on one step's
trees and reports its `StepMetrics`; `publish` writes a policy version and has the rollout servers load
it behind the probe guard; `checkpoint` saves and restores everything a run needs to continue exactly.
`data` reads a run's prompts; `loop` is the synchronous step loop (seed trees, wait for the agent
workers, train, publish, checkpoint, metrics to the run's stream; resumes from the last checkpoint).
`python -m arpo.services.learner` runs it for one run. Not built yet (milestone 5/10 continues): the
DeepSpeed backend, TensorBoard, and the rollout-side timing split (generate vs tool wait).
"""
