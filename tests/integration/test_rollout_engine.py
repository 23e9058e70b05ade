"""The HF engine on a tiny random model: statistics, sampling controls, stops, batching, weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from arpo.proto.rollout import FinishReason, GenerateRequest, ProbeSequence, SamplingParams, WeightsUpdate
from arpo.services.rollout.engine import WeightsError, update_weights
from arpo.services.rollout.hf import HFEngine
from arpo.services.rollout.sampling import StopMatcher


def req(engine: HFEngine, text: str, **sampling: object) -> GenerateRequest:
    return GenerateRequest(
        prompt_token_ids=engine.encode(text), sampling=SamplingParams.model_validate(sampling)
    )


def reference(
    engine: HFEngine, prompt: list[int], tokens: list[int], temperature: float
) -> tuple[list, list]:
    """Log-probs and entropies from one full forward pass without cache or padding (the learner's view)."""
    ids = torch.tensor([prompt + tokens], device=engine.device)
    with torch.no_grad():
        logits = engine.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double() / temperature
    logp = torch.log_softmax(logits, -1)
    picked = logp.gather(-1, torch.tensor(tokens, device=engine.device)[:, None]).squeeze(-1)
    ents = -(logp.exp() * logp).sum(-1)
    return picked.tolist(), ents.tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_and_entropies_equal_a_full_forward(engine: HFEngine, temperature: float) -> None:
    requests = [
        req(engine, "<think>short", n=3, max_tokens=24, temperature=temperature, top_p=0.9),
        req(
            engine,
            "<python>print(12 * 34)</python> <result>\n408\n</result> so",
            n=2,
            max_tokens=16,
            temperature=temperature,
            top_k=20,
        ),
    ]
    for request, response in zip(requests, engine.generate(requests), strict=True):
        assert len(response.completions) == request.sampling.n and response.policy_version == 0
        for c in response.completions:
            logps, ents = reference(engine, request.prompt_token_ids, c.token_ids, temperature)
            assert c.logprobs == pytest.approx(logps, abs=1e-4)
            assert c.entropies == pytest.approx(ents, abs=1e-4)
            assert c.text == engine.decode(c.token_ids)


def test_mixed_lengths_in_one_batch_match_running_alone(engine: HFEngine) -> None:
    texts = ["<", "<think>I should compute", "The quick brown fox jumps over the lazy dog " * 3]
    batch = [req(engine, t, max_tokens=12, seed=i) for i, t in enumerate(texts)]
    together = engine.generate(batch)
    for request, response in zip(batch, together, strict=True):
        alone = engine.generate([request])[0].completions[0]
        assert response.completions[0].token_ids == alone.token_ids
        assert response.completions[0].logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_seeds_reproduce_and_samples_differ(engine: HFEngine) -> None:
    a = engine.generate([req(engine, "<think>", n=4, max_tokens=20, seed=7)])[0].completions
    b = engine.generate([req(engine, "<think>", n=4, max_tokens=20, seed=7)])[0].completions
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert len({tuple(c.token_ids) for c in a}) > 1  # n samples are not copies of one
    c = engine.generate([req(engine, "<think>", n=4, max_tokens=20, seed=8)])[0].completions
    assert [x.token_ids for x in c] != [x.token_ids for x in a]


def test_greedy_is_deterministic(engine: HFEngine) -> None:
    one = engine.generate([req(engine, "<answer>", max_tokens=10, temperature=0)])[0].completions[0]
    two = engine.generate([req(engine, "<answer>", max_tokens=10, temperature=0)])[0].completions[0]
    assert one.token_ids == two.token_ids
    ids = torch.tensor([engine.encode("<answer>") + one.token_ids[:1]], device=engine.device)
    with torch.no_grad():
        first = engine.model(input_ids=ids[:, :-1]).logits[0, -1]
    assert one.token_ids[0] == int(first.argmax())


def test_length_finish(engine: HFEngine) -> None:
    c = engine.generate([req(engine, "x", max_tokens=5, stop=[])])[0].completions[0]
    assert c.finish_reason == FinishReason.LENGTH and len(c.token_ids) == 5 and c.stop_string is None


def test_stop_string_across_a_token_boundary(engine: HFEngine) -> None:
    free = engine.generate([req(engine, "<think>", max_tokens=30, seed=3, stop=[])])[0].completions[0]
    pieces = [engine.decode([t]) for t in free.token_ids]
    # A stop string made of the end of token i and the start of token i + 1.
    i = next(
        i
        for i in range(2, len(pieces) - 1)
        if len(pieces[i]) >= 2 and pieces[i + 1] and "\ufffd" not in pieces[i] + pieces[i + 1]
    )
    stop = pieces[i][-1] + pieces[i + 1][0]
    first = next(k for k in range(len(pieces)) if stop in "".join(pieces[: k + 1]))
    stopped = engine.generate([req(engine, "<think>", max_tokens=30, seed=3, stop=[stop])])[0].completions[0]
    assert stopped.finish_reason == FinishReason.STOP and stopped.stop_string == stop
    assert stopped.token_ids == free.token_ids[: first + 1]  # the completing token is kept
    assert stop in stopped.text


def test_stop_matcher_with_the_real_tokenizer(engine: HFEngine) -> None:
    ids = engine.encode("<python>print(1)</python> more")
    matcher = StopMatcher(engine.decode, ["</python>", "</search>"], lambda t: engine.decode([t]))
    hits = [k for k in range(1, len(ids) + 1) if matcher.match(ids[:k])]
    assert len(hits) == 1
    assert engine.decode(ids[: hits[0]]).endswith("</python>") or "</python>" in engine.decode(ids[: hits[0]])
    assert "</python>" not in engine.decode(ids[: hits[0] - 1])


def test_end_of_sequence_finish(engine: HFEngine) -> None:
    first = (
        engine.generate([req(engine, "<answer>", max_tokens=1, temperature=0)])[0].completions[0].token_ids[0]
    )
    engine._eos = {first}  # make the greedy first token the end-of-sequence token
    c = engine.generate([req(engine, "<answer>", max_tokens=10, temperature=0)])[0].completions[0]
    assert c.finish_reason == FinishReason.EOS and c.token_ids == [first]


def perturbed_weights(engine: HFEngine, directory: Path, drop: str | None = None) -> ProbeSequence:
    """Save perturbed weights to `directory`; return the probe they produce."""
    state = {k: v.detach().cpu().clone() for k, v in engine.model.state_dict().items()}
    state["model.norm.weight"] = state["model.norm.weight"] * 1.5
    if drop:
        state.pop(drop)
    state = {k: v.contiguous() for k, v in state.items()}
    if "lm_head.weight" in state and "model.embed_tokens.weight" in state:
        state.pop("lm_head.weight")  # tied: saving both aliases would fail, as in save_pretrained
    directory.mkdir()
    save_file(state, str(directory / "model.safetensors"))
    other = HFEngine.from_pretrained(str(engine.model_name), dtype="float32", device=str(engine.device))
    other.model.load_state_dict(state, strict=False)
    probe_ids = engine.encode("<think>probe sequence</think>")
    return ProbeSequence(token_ids=probe_ids, logprobs=other.score(probe_ids))


def test_weight_update_changes_outputs_and_version(engine: HFEngine, tmp_path: Path) -> None:
    request = req(engine, "<think>", max_tokens=8, temperature=0)
    before = engine.generate([request])[0]
    probe = perturbed_weights(engine, tmp_path / "v1")
    status = update_weights(engine, WeightsUpdate(path=str(tmp_path / "v1"), policy_version=1, probe=probe))
    assert status.accepted and status.policy_version == 1 and status.probe_max_abs_error < 1e-4
    after = engine.generate([request])[0]
    assert after.policy_version == 1
    assert after.completions[0].logprobs != pytest.approx(before.completions[0].logprobs, abs=1e-3)


def test_probe_mismatch_is_refused_and_old_weights_kept(engine: HFEngine, tmp_path: Path) -> None:
    request = req(engine, "<think>", max_tokens=8, temperature=0)
    before = engine.generate([request])[0].completions[0]
    probe = perturbed_weights(engine, tmp_path / "v1")
    wrong = ProbeSequence(token_ids=probe.token_ids, logprobs=[x - 0.3 for x in probe.logprobs])
    status = update_weights(engine, WeightsUpdate(path=str(tmp_path / "v1"), policy_version=1, probe=wrong))
    assert not status.accepted and status.policy_version == 0 and "probe" in (status.reason or "")
    after = engine.generate([request])[0]
    assert after.policy_version == 0
    assert after.completions[0].logprobs == pytest.approx(before.logprobs, abs=1e-6)


def test_bad_updates_raise_and_change_nothing(engine: HFEngine, tmp_path: Path) -> None:
    perturbed_weights(engine, tmp_path / "partial", drop="model.norm.weight")
    with pytest.raises(WeightsError, match="missing from the update"):
        update_weights(engine, WeightsUpdate(path=str(tmp_path / "partial"), policy_version=1))
    with pytest.raises(WeightsError, match="does not exist"):
        update_weights(engine, WeightsUpdate(path=str(tmp_path / "nowhere"), policy_version=1))
    engine.set_version(3)
    with pytest.raises(WeightsError, match="newer than the served version 3"):
        update_weights(engine, WeightsUpdate(path=str(tmp_path / "partial"), policy_version=3))
    assert engine.policy_version == 3
