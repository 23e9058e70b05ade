"""The platform's processes, one package each with one `python -m arpo.services.<name>` entry point.

rollout (generation with per-token log-probs and entropy), tools (sandboxed Python, search), agent
(the ARPO tree rollout workers), learner (advantages, loss, updates, weight publishing) and controller
(REST API and dashboard) arrive with their milestones; see DESIGN.md §2.
"""
