"""Semantic-code generation for UnifiedVoice v2 (IndexTTS-2 and IndexTTS-2.5 GPTs alike).

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

Randomness: each request draws from its own ``torch.Generator`` (or torch's global RNG) exactly
what it would draw alone: one ``[1, N]`` multinomial per step, nothing once it has finished. A
batch passed to ``generate`` with one generator shares that stream, request by request.

Batching (``DecodePool``): requests join a running decode at any step boundary and leave as soon
as they finish or are dropped, so new requests never wait for a batch to end. The pool's KV cache
([layers, rows, heads, max_len, head_dim]) outlives requests and grows only when a longer one
arrives; each request owns a block of rows, each row its own positions and slots; the decode step
runs every row with fixed shapes except the attended span. Beam search keeps each beam in a row
of its request's block (read best-first through an index) and copies a row's history only when
two new beams continue the same beam.

Per step the loop keeps its state on the device: rows' slots, positions and code counts advance
in place, the request set is re-read only when it changes, and the only host sync is the one
read of the chosen codes (and, for beams, their scores), plus reading a sequence that ends.

Duration control (``target_codes``, not official): the v2 checkpoint has no duration input (its
two speed slots are constant), so the decoder itself is constrained: the stop token is masked
until exactly ``target_codes`` codes exist, and generation ends there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from .base import CodeGPT, mel_position
from .unified_voice25 import LangText

Mode = Literal["beam_sample", "sample", "greedy"]


class Cancel(Protocol):
    def raise_if_cancelled(self) -> None: ...


@dataclass(frozen=True)
class CodeOverride:
    """Benchmarks and warm-up only, never serving: how many codes each text piece gets.

    ``codes``: a count, or a function of the segment's text giving one (the engine evaluates it).
    ``exact``: the stop (and start) code is forbidden, so exactly that many codes come out;
    otherwise the count is only the piece's code budget."""

    codes: int | Callable[[str], int]
    exact: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.codes, int) and self.codes < 1:
            raise ValueError(f"a forced code count must be >= 1, got {self.codes}")


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
    override: CodeOverride | None = None  # benchmark-only forced code counts (never when serving)

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


def place_beams(sources: list[int], rows: list[int], copies: list[tuple[int, int]]) -> list[int]:
    """Cache rows (of a request's ``rows``) for its new beams, best first, which continue the beams
    in rows ``sources``: the first continuation of a row stays in it (nothing moves); a second one
    of the same row takes a row that nobody continues, and its history is to be copied there
    (``copies`` gets (destination, source)). Sources are never overwritten, so copies need no order."""
    placed: list[int | None] = []
    taken = set()
    for src in sources:
        placed.append(None if src in taken else src)
        taken.add(src)
    spare = [row for row in rows if row not in taken]
    for j, src in enumerate(sources):
        if placed[j] is None:
            placed[j] = spare.pop(0)
            copies.append((placed[j], src))
    return placed


def beam_candidates(r: "DecodeRequest", cand: list[float], scores: list[float], vocab: int, stop: int,
                    history: torch.Tensor) -> list[tuple[int, float, int]]:
    """The continuations (source row, score, code) of request ``r``'s next beams, from its sampled
    candidates (ids over beams x vocab, best first): a stop among the best ``beams`` closes a
    hypothesis (its history read from ``history``), other stops are skipped."""
    nb = len(r.beam_rows)
    picked: list[tuple[int, float, int]] = []
    for rank, (c, s) in enumerate(zip(cand, scores)):
        row, tok = r.beam_rows[int(c) // vocab], int(c) % vocab
        if tok == stop:
            if rank < nb:
                r.hyps.add(history[row, : r.step].tolist(), s, r.step + 1, stopped=True)
        else:
            picked.append((row, s, tok))
        if len(picked) == nb:
            break
    return picked


# ---- the decode pool: continuous batching ---------------------------------------------

class PoolFull(RuntimeError):
    """No free row block for another request."""


@dataclass(eq=False)
class DecodeRequest:
    """One request in a :class:`DecodePool`: its rows, its progress, and at the end its codes."""

    tag: object  # the caller's handle for it
    block: int  # it owns cache rows block*beams .. block*beams + beams - 1
    prompt_length: int
    budget: int
    generator: torch.Generator | None
    step: int = 0  # codes chosen so far
    hyps: Hypotheses | None = None  # beam search only
    codes: torch.Tensor | None = None  # when finished: [L] long, stop token excluded
    stopped: bool = False  # finished by a stop token (False: by its budget)
    forbid: tuple[int, ...] = ()  # codes it may never choose (forced code counts in benchmarks)
    beam_rows: list[int] = field(default_factory=list)  # cache row of each beam, best beam first


class DecodePool:
    """Semantic-code decoding with requests joining and leaving at step boundaries.

    The pool owns one KV cache of ``capacity`` row blocks (``num_beams`` rows each in
    ``beam_sample`` mode, one otherwise) and ``max_len`` slots per row. ``admit`` prefills new
    requests into free blocks; ``step`` chooses one code for every request in the pool (each with
    its own step count, positions and slots), retires the requests that finish, and runs one decode
    step for all rows; ``drop`` frees a request at once (cancellation).

    A request draws only from its own generator, with the calls, shapes and order of a batch of one
    (a ``[1, N]`` multinomial per step), and nothing once it has finished; every per-row operation
    (penalties, filters, softmax) is row-wise. So a request's codes do not depend on what else is
    in the pool or when it joined: equal, up to float rounding of the batched matmuls, to
    ``generate`` of it alone with the same generator. Requests that share one generator object draw
    from it in block order.
    """

    def __init__(self, model: CodeGPT, params: SamplingParams, capacity: int, max_len: int,
                 max_codes: int | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        cfg = model.cfg
        self.model, self.params = model, params
        self.beams = params.num_beams if params.mode == "beam_sample" else 1
        self.capacity = capacity
        self.max_codes = min(max_codes or params.max_mel_tokens, cfg.max_mel_tokens)
        rows = capacity * self.beams
        p = model.mel_head.weight
        dev = p.device
        self.cache = model.gpt.new_cache(rows, max_len, device=dev, dtype=p.dtype)
        self.tokens = torch.zeros(rows, dtype=torch.long, device=dev)  # the code each row feeds back
        self.positions = torch.zeros_like(self.tokens)
        self.slots = torch.zeros_like(self.tokens)
        self.logits = torch.zeros(rows, cfg.number_mel_codes, device=dev)  # pending, fp32
        self.seen = torch.zeros(rows, cfg.number_mel_codes, dtype=torch.bool, device=dev)
        self.history = torch.zeros(rows, self.max_codes, dtype=torch.long, device=dev)
        self.beam_scores = torch.zeros(rows, device=dev)
        self.live = torch.zeros_like(self.tokens)  # 1 on the rows of requests in the pool
        self.step_of = torch.zeros_like(self.tokens)  # codes each row has chosen so far
        self.requests: dict[int, DecodeRequest] = {}  # by block
        self.free = list(range(capacity))
        self._active: tuple[list[DecodeRequest], torch.Tensor | slice] | None = None  # see _active_rows

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    def __len__(self) -> int:
        return len(self.requests)

    def _rows(self, r: DecodeRequest) -> range:
        return range(r.block * self.beams, (r.block + 1) * self.beams)

    def _active_rows(self) -> tuple[list[DecodeRequest], torch.Tensor | slice]:
        """The requests in the pool (block order) and their cache rows: a slice when the blocks are
        consecutive (row state is then read through views, not gathered), else an index tensor.
        Kept until a request joins or leaves."""
        if self._active is None or self.beams > 1:  # beams change rows every step
            active = [self.requests[k] for k in sorted(self.requests)]
            rows = [row for r in active for row in r.beam_rows]
            if rows == list(range(rows[0], rows[-1] + 1)):
                self._active = active, slice(rows[0], rows[-1] + 1)
            else:
                self._active = active, torch.tensor(rows, device=self.tokens.device)
        return self._active

    # ---- joining and leaving --------------------------------------------------------

    def admit(self, cond: torch.Tensor, texts: Sequence[torch.Tensor], budgets: Sequence[int],
              generators: Sequence[torch.Generator | None], tags: Sequence[object] | None = None,
              forbid: Sequence[Sequence[int]] | None = None) -> list[DecodeRequest]:
        """Prefill requests (one batched prefill) into free blocks.

        cond [B, K, C] or [1, K, C] (K = ``model.cfg.cond_len``); texts: B token-id tensors;
        texts: B text inputs of ``model.prompt``, passed through unread (token-id tensors; for
        IndexTTS-2.5 ``LangText`` pairs); budgets: B code budgets; forbid: per request, codes it
        may never choose. Rows grow to fit the longest request.
        Raises ``PoolFull`` when fewer than B blocks are free and ``ValueError`` when a request is
        out of bounds (nothing is admitted then)."""
        b = len(texts)
        tags = list(range(b)) if tags is None else list(tags)
        forbid = [()] * b if forbid is None else [tuple(f) for f in forbid]
        if not (len(budgets) == len(generators) == len(tags) == len(forbid) == b) or b == 0:
            raise ValueError(f"admit needs as many budgets, generators, tags and forbid lists as texts ({b})")
        if b > len(self.free):
            raise PoolFull(f"{b} requests for {len(self.free)} free blocks of {self.capacity}")
        emb, lengths = self.model.prompt(cond, texts)
        lengths_l = lengths.tolist()
        for budget, n in zip(budgets, lengths_l):
            if not 1 <= budget <= self.max_codes:
                raise ValueError(f"code budget {budget} outside [1, {self.max_codes}]")
        need = max(n + budget for n, budget in zip(lengths_l, budgets))
        if need > self.max_len:
            self.cache.grow(-(-need // 256) * 256)  # whole 256-slot steps: few distinct shapes
        nb = self.beams
        if nb > 1:
            emb, lengths = emb.repeat_interleave(nb, 0), lengths.repeat_interleave(nb, 0)
        blocks = [self.free.pop(0) for _ in range(b)]
        rows = torch.tensor([row for k in blocks for row in range(k * nb, (k + 1) * nb)], device=emb.device)
        self.logits[rows] = self.model.prefill(emb, lengths, self.cache, rows).float()
        cfg = self.model.cfg
        self.seen[rows] = False
        self.seen[rows, 1] = True  # the dummy prompt ids of the official generate()
        self.seen[rows, cfg.start_mel_token] = True
        first = torch.zeros(nb, device=emb.device)
        first[1:] = -1e9  # only beam 0 is live at first: the beams start identical
        self.beam_scores[rows] = first.repeat(b)
        # where code 0 goes once chosen (the decode step after it advances both by one: see step)
        self.slots[rows] = lengths
        self.positions[rows] = mel_position(0, self.params.hf_position_quirk)
        self.live[rows] = 1
        self.step_of[rows] = 0
        self._active = None
        out = []
        for k, tag, n, budget, g, ban in zip(blocks, tags, lengths_l, budgets, generators, forbid):
            r = DecodeRequest(tag, k, n, budget, g, forbid=ban, beam_rows=list(range(k * nb, (k + 1) * nb)),
                              hyps=Hypotheses(nb, self.params.length_penalty) if nb > 1 else None)
            self.requests[k] = r
            out.append(r)
        return out

    def drop(self, request: DecodeRequest) -> None:
        """Free a request's block now (it draws nothing more); a finished request is already gone."""
        if self.requests.get(request.block) is request:
            self._free(request)

    def _free(self, r: DecodeRequest) -> None:
        del self.requests[r.block]
        rows = self._rows(r)
        # an idle row still runs in the decode step: keep its inputs in range (it writes slot 0 of
        # its own row, which the next prefill overwrites)
        for t in (self.tokens, self.positions, self.slots, self.live, self.step_of):
            t[rows.start : rows.stop] = 0
        self.free.append(r.block)
        self.free.sort()
        self._active = None

    def _finish(self, r: DecodeRequest, codes: list[int], stopped: bool, done: list[DecodeRequest]) -> None:
        r.codes = torch.tensor(codes, dtype=torch.long)
        r.stopped = stopped
        self._free(r)
        done.append(r)

    # ---- one step -------------------------------------------------------------------

    def step(self) -> list[DecodeRequest]:
        """Choose the next code of every request, retire the finished ones (returned, oldest block
        first) and run the decode step for the rest."""
        if not self.requests:
            return []
        active, rows = self._active_rows()
        scores = self.logits[rows]  # a view when the rows are consecutive: edited in place, then replaced
        if self.params.target_codes is not None:
            scores[:, self.model.cfg.stop_mel_token] = float("-inf")  # duration control: only the budget ends it
        for a, r in enumerate(active):
            if r.forbid:
                scores[a * self.beams : (a + 1) * self.beams, list(r.forbid)] = float("-inf")
        done: list[DecodeRequest] = []
        if self.beams > 1:
            self._beam_step(active, rows, scores, done)
        else:
            self._single_step(active, rows, scores, done)
        if self.requests:
            # each live row feeds its new code back at slot prompt_length + step - 1 and mel
            # position mel_position(step - 1): what admit set for step 1, advanced once per step
            span = max(r.prompt_length + r.step for r in self.requests.values())
            self.logits = self.model.decode_step(self.tokens, self.positions, self.slots, self.cache, span).float()
            self.slots += self.live
            self.positions += self.live
        self.step_of += self.live
        return done

    def _record(self, rows: torch.Tensor | slice, tokens: torch.Tensor) -> None:
        """Rows [N] (an index or a slice) chose ``tokens`` [N] as their next code: history, the
        repetition penalty's seen set, and the next decode step's input."""
        steps = self.step_of[rows]  # codes each row had before this one
        if isinstance(rows, slice):  # views: write through them
            self.history[rows].scatter_(1, steps[:, None], tokens[:, None])
            self.seen[rows].scatter_(1, tokens[:, None], True)
        else:
            self.history[rows, steps] = tokens
            self.seen[rows, tokens] = True
        self.tokens[rows] = tokens

    def _single_step(self, active, rows, scores, done) -> None:
        p = self.params
        stop = self.model.cfg.stop_mel_token
        seen = self.seen[rows]
        if p.mode == "greedy":
            tokens = repetition_penalty(scores, seen, p.repetition_penalty).argmax(-1)
        else:
            probs = process(scores, seen, p, min_keep=1).softmax(-1)
            tokens = torch.empty(len(active), dtype=torch.long, device=probs.device)
            for a, r in enumerate(active):  # [1, V] like a batch of one: the same draw from the same stream
                tokens[a] = torch.multinomial(probs[a : a + 1], 1, generator=r.generator)[0, 0]
        self._record(rows, tokens)
        tokens_l = tokens.tolist()  # the step's one host sync
        for r, tok in zip(active, tokens_l):
            r.step += 1
            if tok == stop or r.step >= r.budget:
                n = r.step - 1 if tok == stop else r.step
                self._finish(r, self.history[r.block, :n].tolist(), tok == stop, done)

    def _beam_step(self, active, rows, scores, done) -> None:
        p = self.params
        stop = self.model.cfg.stop_mel_token
        nb, vocab = self.beams, scores.size(-1)
        scores = process(F.log_softmax(scores, dim=-1), self.seen[rows], p, min_keep=2)
        total = (scores + self.beam_scores[rows, None]).view(len(active), nb * vocab)
        probs = total.softmax(-1)
        cand = torch.empty(len(active), 2 * nb, dtype=torch.long, device=probs.device)  # max(2, 1 + stop ids) * beams
        for a, r in enumerate(active):
            cand[a : a + 1] = torch.multinomial(probs[a : a + 1], 2 * nb, generator=r.generator)
        cand_scores, order = torch.sort(torch.gather(total, -1, cand), descending=True, dim=1)
        # one host sync for ids and scores (ids < 2**24 are exact in float64, as are fp32 scores)
        cand_l, score_l = torch.stack((torch.gather(cand, -1, order).double(), cand_scores.double())).tolist()
        new_rows, copies, picks, moved = [], [], [], []
        for a, r in enumerate(active):
            step = r.step
            picked = beam_candidates(r, cand_l[a], score_l[a], vocab, stop, self.history)
            r.step += 1
            if r.hyps.is_done(score_l[a][0], step + 1):
                self._finish(r, *r.hyps.best()[1:], done)
                continue
            r.beam_rows = place_beams([row for row, _, _ in picked], r.beam_rows, copies)
            new_rows += r.beam_rows
            picks += [(tok, s) for _, s, tok in picked]
            moved.append(r)
        if not moved:
            return
        self._continue_beams(moved, new_rows, copies, picks)
        for m, r in enumerate(moved):  # a budget that ends here keeps the live beams as candidates
            if r.step >= r.budget:
                live = self.history[r.beam_rows, : r.step].tolist()
                for j in range(nb):
                    r.hyps.add(live[j], picks[m * nb + j][1], r.step, stopped=False)
                self._finish(r, *r.hyps.best()[1:], done)

    def _continue_beams(self, moved, rows: list[int], copies: list[tuple[int, int]], picks) -> None:
        """The new beams of the ``moved`` requests sit in cache ``rows`` (best first per request)
        with the picked (code, score); rows that continue another row's beam take over its
        history, seen set and cache first."""
        dev = self.tokens.device
        if copies:
            dst = torch.tensor([d for d, _ in copies], device=dev)
            src = torch.tensor([s for _, s in copies], device=dev)
            self.history[dst] = self.history[src]
            self.seen[dst] = self.seen[src]
            used = max(r.prompt_length + r.step - 1 for r in moved)
            for d, s in copies:
                self.cache.copy_row(d, s, used)
        index = torch.tensor(rows, device=dev)
        picked = torch.tensor(picks, dtype=torch.float64, device=dev)  # [N, 2]: code, score (one copy)
        self._record(index, picked[:, 0].long())
        self.beam_scores[index] = picked[:, 1].to(self.beam_scores.dtype)


@torch.inference_mode()
def generate(model: CodeGPT, cond: torch.Tensor, texts: Sequence[torch.Tensor],
             params: SamplingParams = SamplingParams(), cancel: Cancel | None = None,
             generator: torch.Generator | Sequence[torch.Generator] | None = None,
             budgets: Sequence[int | None] | None = None, forbid: Sequence[int] = (),
             langs: Sequence[int] | None = None) -> Generation:
    """Generate semantic codes for a batch of requests (a :class:`DecodePool` run to the end).

    cond: [B, K, C] from ``model.conditioning`` (or [1, K, C] shared by all texts);
    texts: B 1-D tensors of text token ids; langs: B language rows (IndexTTS-2.5 only).
    ``cancel.raise_if_cancelled()`` runs every step.
    generator: one for the batch, or B (one per request; see the module doc).
    budgets: B code budgets (None: ``params.code_budget``), e.g. forced counts in benchmarks.
    forbid: codes no request may choose (with the stop code: forced counts).
    """
    if not texts:
        raise ValueError("no texts to generate for")
    b = len(texts)
    if generator is None or isinstance(generator, torch.Generator):
        gens = [generator] * b
    else:
        gens = list(generator) if isinstance(generator, (list, tuple)) else []
        if len(gens) != b or not all(isinstance(g, torch.Generator) for g in gens):
            raise ValueError(f"generator must be one torch.Generator or a list of {b} (one per "
                             f"request), got {generator!r}")
    if budgets is None:
        budgets = [None] * b
    if len(budgets) != b or any(n is not None and n < 1 for n in budgets):
        raise ValueError(f"budgets must be {b} positive counts (or None), got {list(budgets)}")
    budgets = [params.code_budget(int(torch.as_tensor(t).numel())) if n is None else n
               for t, n in zip(texts, budgets)]
    longest = max(budgets)
    if longest > model.cfg.max_mel_tokens:
        raise ValueError(f"code budget {longest} exceeds the model's max_mel_tokens {model.cfg.max_mel_tokens}")
    prompt = cond.size(1) + 3 + max(int(torch.as_tensor(t).numel()) for t in texts)  # [cond | 0 text 1 | start]
    pool = DecodePool(model, params, capacity=b, max_len=prompt + longest, max_codes=longest)
    if langs is not None:  # the IndexTTS-2.5 GPT's text inputs carry their language
        if len(langs) != b:
            raise ValueError(f"{b} texts but {len(langs)} languages")
        texts = [LangText(torch.as_tensor(t), int(lang)) for t, lang in zip(texts, langs)]
    requests = pool.admit(cond, texts, budgets, gens, forbid=[forbid] * b)
    while len(pool):
        if cancel is not None:
            cancel.raise_if_cancelled()
        pool.step()
    return Generation([r.codes for r in requests], [r.stopped for r in requests])


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
