"""The rollout service: continue token-id prefixes, reporting per-token log-probs and entropies.

`engine` defines the interface and picks an implementation (`hf`: transformers + torch, CPU default,
also CUDA; `vllm`: GPU hosts). `app` is the FastAPI app (`create_app`), `client` what the agent workers
and the learner call, `__main__` the entry point (`python -m arpo.services.rollout`).
"""
