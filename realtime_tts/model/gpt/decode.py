"""Semantic-code generation for UnifiedVoice v2.

Three modes:

* ``beam_sample`` (default, = official): beam search whose candidates are *sampled*, exactly as
  the transformers 4.52 ``_beam_search`` with ``do_sample=True`` that infer_v2 runs. Each step:
  log_softmax -> repetition penalty -> temperature -> top-k -> top-p (both keep >= 2) -> add the
  running beam score -> softmax over beams*vocab -> draw 2*beams distinct candidates -> sort ->
  keep ``beams`` non-stop continuations; a stop token among the top ``beams`` closes a hypothesis.
* ``sample`` (fast, NOT the official default): plain multinomial sampling of one sequence, equal
  to transformers' ``_sample`` (what the official code does with ``num_beams=1``). The
  processors then act on raw logits, not on log-probs.
* ``greedy``: argmax after the repetition penalty (tests, debugging).

Faithful details: the repetition penalty sees every id "so far", including the dummy prompt ids
1 and ``start_mel`` that the official generate() is fed; the fed-back code k sits at mel position
k+2 (``hf_position_quirk``).

Randomness: ``generator`` is one ``torch.Generator`` for the whole batch (the draws of all
requests come from one stream, as upstream does for a batch), or a list with one generator per
request: request i then draws from generator i exactly what it would draw alone (same calls, same
shapes, same order), and nothing once it has finished, so a batched request equals its batch-of-one
run with the same seed.

Memory: one KV cache for prompt + code budget is allocated before the prefill; each step writes
one slot per row in place. The decode-step inputs (codes, positions, slots) are [rows] tensors
updated in place, so a step has fixed shapes; beam search reorders cache rows between steps.

Duration control (``target_codes``, not official): the v2 checkpoint has no duration input (its
two speed slots are constant), so the decoder itself is constrained: the stop token is masked
until exactly ``target_codes`` codes exist, and generation ends there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from .unified_voice import UnifiedVoice, mel_position

Mode = Literal["beam_sample", "sample", "greedy"]


class Cancel(Protocol):
    def raise_if_cancelled(self) -> None: ...


@dataclass(frozen=True)
class SamplingParams:
    mode: Mode = "beam_sample"
    num_beams: int = 3
    top_k: int = 30
    top_p: float = 0.8
    temperature: float = 0.8
    repetition_penalty: float = 10.0
    length_penalty: float = 0.0
    max_mel_tokens: int = 1500
    # Short-text runaway guard: at most runaway_base + runaway_per_token * text_tokens codes
    # (2 s + 0.5 s per text token at 50 codes/s). Official has no such cap; it only changes the
    # result when generation would otherwise run past that length without a stop token.
    runaway_guard: bool = True
    runaway_base: int = 100
    runaway_per_token: int = 25
    hf_position_quirk: bool = True
    target_codes: int | None = None  # duration control: exactly this many codes (see module doc)

    def __post_init__(self) -> None:
        if self.mode not in ("beam_sample", "sample", "greedy"):
            raise ValueError(f"unknown decode mode {self.mode!r}")
        if self.num_beams < 1:
            raise ValueError("num_beams must be >= 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0 (0 disables it)")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.max_mel_tokens < 1:
            raise ValueError("max_mel_tokens must be >= 1")
        if self.target_codes is not None and not 1 <= self.target_codes <= self.max_mel_tokens:
            raise ValueError(f"target_codes must be in [1, max_mel_tokens={self.max_mel_tokens}]")

    def code_budget(self, text_tokens: int) -> int:
        if self.target_codes is not None:
            return self.target_codes
        if not self.runaway_guard:
            return self.max_mel_tokens
        return min(self.max_mel_tokens, self.runaway_base + self.runaway_per_token * text_tokens)


def codes_for_speed(natural_codes: int, speed: float) -> int:
    """Target code count for a speaking-rate factor: ``speed`` 2.0 halves the duration."""
    if natural_codes < 1:
        raise ValueError("natural_codes must be >= 1")
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    return max(1, round(natural_codes / speed))


@dataclass
class Generation:
    codes: list[torch.Tensor]  # per request, [L_i] long, stop token excluded
    stopped: list[bool]  # False: the code budget (or target_codes) ended it, not a stop token


# ---- logits processors (same arithmetic as transformers 4.52) --------------------------

def repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Seen ids: negative scores are multiplied by ``penalty``, positive ones divided."""
    if penalty == 1.0:
        return scores
    hit = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, hit, scores)


def top_k_filter(scores: torch.Tensor, k: int, min_keep: int) -> torch.Tensor:
    if k == 0:
        return scores
    k = min(max(k, min_keep), scores.size(-1))
    kth = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_filter(scores: torch.Tensor, p: float, min_keep: int) -> torch.Tensor:
    if p >= 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, descending=False)
    cum = sorted_scores.softmax(-1).cumsum(-1)
    drop = cum <= (1 - p)
    drop[..., -min_keep:] = False
    return scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def process(scores: torch.Tensor, seen: torch.Tensor, sp: SamplingParams, min_keep: int) -> torch.Tensor:
    scores = repetition_penalty(scores, seen, sp.repetition_penalty)
    if sp.temperature != 1.0:
        scores = scores / sp.temperature
    scores = top_k_filter(scores, sp.top_k, min_keep)
    return top_p_filter(scores, sp.top_p, min_keep)


# ---- beam bookkeeping (the BeamSearchScorer rules) -------------------------------------

class Hypotheses:
    """The n best finished hypotheses of one request."""

    def __init__(self, n: int, length_penalty: float):
        self.n = n
        self.length_penalty = length_penalty
        self.beams: list[tuple[float, list[int], bool]] = []  # (score, codes, ended by stop)
        self.worst = 1e9

    def add(self, codes: list[int], sum_logprobs: float, generated_len: int, stopped: bool) -> None:
        score = sum_logprobs / (generated_len ** self.length_penalty)
        if len(self.beams) < self.n or score > self.worst:
            self.beams.append((score, codes, stopped))
            if len(self.beams) > self.n:
                ranked = sorted((s, i) for i, (s, _, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprobs: float, generated_len: int) -> bool:
        if len(self.beams) < self.n:
            return False
        return self.worst >= best_sum_logprobs / generated_len ** self.length_penalty

    def best(self) -> tuple[float, list[int], bool]:
        # stable sort then last: among equal scores the latest added wins, like upstream
        return sorted(self.beams, key=lambda x: x[0])[-1]


# ---- generation -------------------------------------------------------------------------

class Draws:
    """The multinomial draws of a step: one shared stream, or one generator per request."""

    def __init__(self, generator: torch.Generator | Sequence[torch.Generator] | None, requests: int,
                 samples: int, device: torch.device):
        self.shared = generator if generator is None or isinstance(generator, torch.Generator) else None
        self.per_request: list[torch.Generator] | None = None
        if self.shared is None and generator is not None:
            gens = list(generator) if isinstance(generator, (list, tuple)) else None
            if gens is None or len(gens) != requests or not all(isinstance(g, torch.Generator) for g in gens):
                raise ValueError(f"generator must be one torch.Generator or a list of {requests} (one per "
                                 f"request), got {generator!r}")
            self.per_request = gens
            self.out = torch.zeros(requests, samples, dtype=torch.long, device=device)  # reused every step
        self.samples = samples

    def __call__(self, probs: torch.Tensor, active: Sequence[bool]) -> torch.Tensor:
        """probs [requests, N] -> ids [requests, samples] drawn without replacement; with per-request
        generators, rows not ``active`` draw nothing and keep stale ids (the caller ignores them)."""
        if self.per_request is None:
            return torch.multinomial(probs, self.samples, generator=self.shared)
        for i, g in enumerate(self.per_request):
            if active[i]:  # [1, N] like a batch of one: the same draw from the same stream
                torch.multinomial(probs[i : i + 1], self.samples, generator=g, out=self.out[i : i + 1])
        return self.out


@torch.inference_mode()
def generate(model: UnifiedVoice, cond: torch.Tensor, texts: Sequence[torch.Tensor],
             params: SamplingParams = SamplingParams(), cancel: Cancel | None = None,
             generator: torch.Generator | Sequence[torch.Generator] | None = None,
             budgets: Sequence[int | None] | None = None) -> Generation:
    """Generate semantic codes for a batch of requests.

    cond: [B, 34, C] from ``model.conditioning`` (or [1, 34, C] shared by all texts);
    texts: B 1-D tensors of text token ids. ``cancel.raise_if_cancelled()`` runs every step.
    generator: one for the batch, or B (one per request; see the module doc).
    budgets: B code budgets (None: ``params.code_budget``), e.g. forced counts in benchmarks.
    """
    if not texts:
        raise ValueError("no texts to generate for")
    beams = params.num_beams if params.mode == "beam_sample" else 1
    draws = Draws(generator, len(texts), 2 * beams if beams > 1 else 1, cond.device)
    cfg = model.cfg
    if budgets is None:
        budgets = [None] * len(texts)
    if len(budgets) != len(texts) or any(b is not None and b < 1 for b in budgets):
        raise ValueError(f"budgets must be {len(texts)} positive counts (or None), got {list(budgets)}")
    budgets = [params.code_budget(int(torch.as_tensor(t).numel())) if b is None else b
               for t, b in zip(texts, budgets)]
    longest = max(budgets)
    if longest > cfg.max_mel_tokens:
        raise ValueError(f"code budget {longest} exceeds the model's max_mel_tokens {cfg.max_mel_tokens}")
    emb, lengths = model.prompt(cond, texts)
    if beams > 1:
        emb, lengths = emb.repeat_interleave(beams, 0), lengths.repeat_interleave(beams, 0)
    rows = emb.size(0)
    cache = model.gpt.new_cache(rows, emb.size(1) + longest, device=emb.device, dtype=emb.dtype)
    logits = model.prefill(emb, lengths, cache)
    seen = torch.zeros(rows, cfg.number_mel_codes, dtype=torch.bool, device=emb.device)
    seen[:, 1] = True  # the dummy prompt ids of the official generate()
    seen[:, cfg.start_mel_token] = True
    step_in = StepInputs(lengths, params.hf_position_quirk)
    run = _beam_sample if beams > 1 else _single
    return run(model, logits, seen, step_in, cache, budgets, params, cancel, draws)


class StepInputs:
    """Position and cache-slot inputs of the decode step, [rows] each, updated in place.

    Code k of every row is embedded at mel position ``mel_position(k)`` and written into cache
    slot ``prompt_length + k`` of its row.
    """

    def __init__(self, prompt_lengths: torch.Tensor, hf_quirk: bool):
        self.slots = prompt_lengths.clone()
        self.positions = torch.empty_like(prompt_lengths)
        self.hf_quirk = hf_quirk
        self.max_prompt = int(prompt_lengths.max())

    def feed(self, model: UnifiedVoice, tokens: torch.Tensor, step: int, cache) -> torch.Tensor:
        """Run code ``step`` of every row [rows] -> logits [rows, V]."""
        self.positions.fill_(mel_position(step, self.hf_quirk))
        logits = model.decode_step(tokens, self.positions, self.slots, cache)
        self.slots += 1
        return logits


def _raw_scores(logits: torch.Tensor, stop: int, params: SamplingParams) -> torch.Tensor:
    scores = logits.float()
    if params.target_codes is not None:
        scores[:, stop] = float("-inf")  # duration control: the budget is the only way out
    return scores


def _single(model, logits, seen, step_in, cache, budgets, params, cancel, draws: Draws) -> Generation:
    cfg = model.cfg
    stop = cfg.stop_mel_token
    b = logits.size(0)
    history = torch.full((b, max(budgets)), stop, dtype=torch.long, device=logits.device)
    live = torch.ones(b, dtype=torch.bool, device=logits.device)
    stopped = torch.zeros_like(live)
    budget = torch.tensor(budgets, device=logits.device)
    row_ids = torch.arange(b, device=seen.device)
    live_l = [True] * b
    for step in range(max(budgets)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        scores = _raw_scores(logits, stop, params)
        if params.mode == "greedy":
            tokens = repetition_penalty(scores, seen, params.repetition_penalty).argmax(-1)
        else:
            probs = process(scores, seen, params, min_keep=1).softmax(-1)
            tokens = draws(probs, live_l).squeeze(1)
        tokens = torch.where(live, tokens, stop)  # finished rows are padded with the stop id
        history[:, step] = tokens
        seen[row_ids, tokens] = True
        stopped |= live & (tokens == stop)
        live &= (tokens != stop) & (step + 1 < budget)
        live_l = live.tolist()  # the step's one host sync
        if not any(live_l):
            break
        logits = step_in.feed(model, tokens, step, cache)
    codes = []
    for row in history.tolist():
        codes.append(torch.tensor(row[: row.index(stop)] if stop in row else row, dtype=torch.long))
    return Generation(codes, stopped.tolist())


def _beam_sample(model, logits, seen, step_in, cache, budgets, params, cancel, draws: Draws) -> Generation:
    cfg = model.cfg
    stop = cfg.stop_mel_token
    nb = params.num_beams
    rows, vocab = logits.shape
    b = rows // nb
    device = logits.device
    beam_scores = torch.zeros(b, nb, device=device)
    beam_scores[:, 1:] = -1e9  # only beam 0 is live at first: the beams start identical
    beam_scores = beam_scores.view(-1)
    history = torch.zeros(rows, max(budgets), dtype=torch.long, device=device)
    hyps = [Hypotheses(nb, params.length_penalty) for _ in range(b)]
    done = [False] * b
    n_cand = 2 * nb  # max(2, 1 + number of stop ids) * beams
    row_ids = torch.arange(rows, device=device)
    for step in range(max(budgets)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        scores = process(F.log_softmax(_raw_scores(logits, stop, params), dim=-1), seen, params, min_keep=2)
        total = (scores + beam_scores[:, None]).view(b, nb * vocab)
        cand = draws(total.softmax(-1), [not d for d in done])  # [b, n_cand]
        cand_scores = torch.gather(total, -1, cand)
        cand_scores, order = torch.sort(cand_scores, descending=True, dim=1)
        cand = torch.gather(cand, -1, order)
        next_scores = torch.zeros(b, nb, device=device)
        next_tokens = torch.full((b, nb), stop, dtype=torch.long, device=device)
        next_rows = torch.arange(rows, device=device).view(b, nb).clone()
        cand_l, score_l = cand.tolist(), cand_scores.tolist()
        hist_l = None
        for i in range(b):
            if done[i]:
                continue
            k = 0
            for rank, (c, s) in enumerate(zip(cand_l[i], score_l[i])):
                row, tok = i * nb + c // vocab, c % vocab
                if tok == stop:
                    if rank >= nb:
                        continue
                    if hist_l is None:
                        hist_l = history[:, :step].tolist()
                    hyps[i].add(hist_l[row], s, step + 1, stopped=True)
                else:
                    next_scores[i, k], next_tokens[i, k], next_rows[i, k] = s, tok, row
                    k += 1
                if k == nb:
                    break
            done[i] = hyps[i].is_done(score_l[i][0], step + 1)
        next_rows = next_rows.view(-1)
        beam_scores = next_scores.view(-1)
        tokens = next_tokens.view(-1)
        history = history[next_rows]
        history[:, step] = tokens
        seen = seen[next_rows]
        seen[row_ids, tokens] = True
        cache.reorder(next_rows, step_in.max_prompt + step)
        for i in range(b):  # requests whose budget ends here keep their live beams as candidates
            if not done[i] and step + 1 >= budgets[i]:
                live = history[i * nb:(i + 1) * nb, : step + 1].tolist()
                for j in range(nb):
                    hyps[i].add(live[j], float(beam_scores[i * nb + j]), step + 1, stopped=False)
                done[i] = True
        if all(done):
            break
        logits = step_in.feed(model, tokens, step, cache)
    codes, stopped = [], []
    for h in hyps:
        _, c, s = h.best()
        codes.append(torch.tensor(c, dtype=torch.long))
        stopped.append(s)
    return Generation(codes, stopped)


def remove_long_silence(codes: torch.Tensor, silent_token: int = 52, max_consecutive: int = 30,
                        keep: int = 10) -> torch.Tensor:
    """Upstream helper, dead code in v2 inference (kept off by default in our pipeline).

    If a code row holds more than ``max_consecutive`` silence codes in total, every run of
    silence codes is shortened to its first ``keep`` codes. 1-D codes (stop token already cut).
    """
    codes = torch.as_tensor(codes).flatten()
    if int((codes == silent_token).sum()) <= max_consecutive:
        return codes
    keep_idx, run = [], 0
    for i, c in enumerate(codes.tolist()):
        if c != silent_token:
            keep_idx.append(i)
            run = 0
        elif run < keep:
            keep_idx.append(i)
            run += 1
    return codes[keep_idx]
