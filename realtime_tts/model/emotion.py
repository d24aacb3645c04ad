"""IndexTTS2 emotion maths and the Qwen text classifier.

An emotion request always ends up as 8 weights in ``EMOTIONS`` order (happy, angry,
sad, afraid, disgusted, melancholic, surprised, calm). The engine turns the weights
into a 1280-d GPT conditioning vector with ``EmotionMatrix``:

    index_g  = argmax_i cos(style, spk_matrix[g][i])          # one row per group g
    mix      = sum_g w_g * emo_matrix[g][index_g]             # [1280]
    final    = mix + (1 - sum_g w_g) * base_emovec            # base = speaker's own emotion

``spk_matrix`` (feat1.pt, [73, 192]) and ``emo_matrix`` (feat2.pt, [73, 1280]) hold 73
reference clips split into 8 groups of ``EMO_NUM`` rows; row i of both comes from the
same clip.

How a request flows (official precedence text > vector > reference > speaker clip; the request
forms and label maps that produce the weights live in ``realtime_tts.server.emotion_forms``):
  - text: ``QwenEmotion.analyze`` -> weights (not damped, may sum > 1);
  - vector or text: ``scale_by_alpha(weights, alpha)``, then ``final_emotion_vector`` with the
    speaker clip's own emotion vector as the base (row selection once per request);
  - reference: no weights; the GPT merges the reference's emotion with ``alpha``;
  - none: the speaker clip is its own emotion reference, alpha forced to 1.0.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .emotion_names import CHINESE_KEYS, EMOTIONS

_CN_TO_EN = dict(zip(CHINESE_KEYS, EMOTIONS))
_EN_TO_CN = dict(zip(EMOTIONS, CHINESE_KEYS))

# Per-emotion damping the official web UI applies to user vectors; surprised and calm
# are damped most because strong values of those give odd prosody.
EMOTION_BIAS: tuple[float, ...] = (0.9375, 0.875, 1.0, 1.0, 0.9375, 0.9375, 0.6875, 0.5625)
MAX_EMOTION_SUM = 0.8

# Rows per emotion group in feat1.pt / feat2.pt (73 in total).
EMO_NUM: tuple[int, ...] = (3, 17, 2, 8, 4, 5, 10, 24)


# ----------------------------------------------------------------------------- weight maths


def _check_weights(weights: Sequence[float], name: str = "emotion vector") -> list[float]:
    values = list(weights)
    if len(values) != len(EMOTIONS):
        raise ValueError(f"{name} needs {len(EMOTIONS)} weights ({', '.join(EMOTIONS)}), got {len(values)}")
    return [float(v) for v in values]


def normalize_emotion_vector(weights: Sequence[float], apply_bias: bool = True) -> list[float]:
    """Damp a user vector [8] the way the official UI does: bias, then cap the sum at 0.8.

    An all-zero vector stays all zero (no division by the sum happens below the cap).
    """
    w = _check_weights(weights)
    if apply_bias:
        w = [x * b for x, b in zip(w, EMOTION_BIAS)]
    total = sum(w)
    if total > MAX_EMOTION_SUM:
        factor = MAX_EMOTION_SUM / total
        w = [x * factor for x in w]
    return w


def scale_by_alpha(weights: Sequence[float], alpha: float) -> list[float]:
    """Scale weights [8] by ``alpha`` clamped to [0, 1], as the official vector/text modes do.

    When the clamped alpha is not exactly 1 each product is truncated (toward zero) to 4
    decimals; the official code does this for printing, and it changes the numbers, so we
    keep it for parity.
    """
    w = _check_weights(weights)
    a = max(0.0, min(1.0, float(alpha)))
    if a == 1.0:
        return w
    return [int(x * a * 10000) / 10000 for x in w]


class EmotionMatrix:
    """The 73 emotion reference rows, split into the 8 emotion groups.

    spk_matrix: [73, 192] CAMPPlus style of each reference clip (feat1.pt)
    emo_matrix: [73, 1280] GPT-space emotion vector of the same clips (feat2.pt)
    """

    def __init__(self, spk_matrix: torch.Tensor, emo_matrix: torch.Tensor, emo_num: Sequence[int] = EMO_NUM):
        emo_num = [int(n) for n in emo_num]
        if len(emo_num) != len(EMOTIONS):
            raise ValueError(f"emo_num needs {len(EMOTIONS)} group sizes, got {len(emo_num)}")
        total = sum(emo_num)
        if spk_matrix.dim() != 2 or spk_matrix.shape[0] != total:
            raise ValueError(f"spk_matrix must be [{total}, D], got {list(spk_matrix.shape)}")
        if emo_matrix.dim() != 2 or emo_matrix.shape[0] != total:
            raise ValueError(f"emo_matrix must be [{total}, D], got {list(emo_matrix.shape)}")
        self.emo_num = emo_num
        self.spk_groups = torch.split(spk_matrix, emo_num)  # 8 x [n_g, 192]
        self.emo_groups = torch.split(emo_matrix, emo_num)  # 8 x [n_g, 1280]

    @classmethod
    def from_files(cls, spk_path: str | Path, emo_path: str | Path,
                   emo_num: Sequence[int] = EMO_NUM) -> "EmotionMatrix":
        """feat1.pt, feat2.pt (each one tensor) -> EmotionMatrix on CPU."""
        loaded = []
        for path in (spk_path, emo_path):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, torch.Tensor):
                raise ValueError(f"{path}: expected one tensor, got {type(obj).__name__}")
            loaded.append(obj)
        return cls(loaded[0], loaded[1], emo_num)

    def to(self, device: torch.device | str) -> "EmotionMatrix":
        self.spk_groups = tuple(g.to(device) for g in self.spk_groups)
        self.emo_groups = tuple(g.to(device) for g in self.emo_groups)
        return self

    def select(self, style: torch.Tensor, rng: random.Random | None = None) -> list[int]:
        """Pick one row per group: the one whose style is closest (cosine) to ``style`` [192].

        With ``rng`` a uniformly random row is taken instead (the official ``use_random``);
        the chosen clip then no longer resembles the speaker, which costs voice similarity.
        """
        if rng is not None:
            return [rng.randint(0, n - 1) for n in self.emo_num]
        query = style.reshape(1, -1).float()  # [1, 192]
        return [int(torch.argmax(F.cosine_similarity(query, g.float(), dim=1))) for g in self.spk_groups]

    def mix(self, weights: Sequence[float], style: torch.Tensor | None = None,
            indices: Sequence[int] | None = None) -> torch.Tensor:
        """Weighted sum of the selected emotion rows: [8] weights -> [1280]."""
        w = torch.tensor(_check_weights(weights), dtype=torch.float32, device=self.emo_groups[0].device)  # [8]
        if indices is None:
            if style is None:
                raise ValueError("mix needs either a style vector or explicit row indices")
            indices = self.select(style)
        rows = torch.stack([g[i] for g, i in zip(self.emo_groups, indices)])  # [8, 1280]
        return (w.unsqueeze(1) * rows).sum(0)  # [1280]

    def final_emotion_vector(self, weights: Sequence[float], style: torch.Tensor | None,
                             base_emovec: torch.Tensor, indices: Sequence[int] | None = None) -> torch.Tensor:
        """mix + (1 - sum w) * base_emovec; base [..., 1280] -> same shape.

        The sum is not capped: text-mode weights may each reach 1.2, so sum w can exceed 1
        and the speaker's own emotion then enters with a negative coefficient. That is the
        official behaviour and we keep it (user vectors are capped at 0.8 beforehand by
        ``normalize_emotion_vector``).
        """
        w = _check_weights(weights)
        mixed = self.mix(w, style, indices).to(base_emovec.dtype)
        rest = 1 - torch.tensor(w, dtype=torch.float32).sum()
        return mixed + rest.to(base_emovec.device, base_emovec.dtype) * base_emovec


# ----------------------------------------------------------------------------- Qwen classifier

QWEN_SYSTEM_PROMPT = "文本情感分类"
THINK_END_ID = 151668  # "</think>" in the Qwen3 vocabulary
MAX_SCORE = 1.2
# Words in the input that mean "melancholic": the fine-tune cannot tell 低落 from 悲伤,
# so the two scores are swapped when the text asks for melancholy explicitly.
MELANCHOLIC_WORDS = ("低落", "melancholy", "melancholic", "depression", "depressed", "gloomy")
_LABEL_FIELDS = ("emotion", "label", "情感", "情绪")
_PAIR_RE = re.compile(r'([^\s":.,]+?)"?\s*:\s*([\d.]+)')


def strip_thinking(ids: Sequence[int], think_end_id: int = THINK_END_ID) -> list[int]:
    """Keep only the ids after the last ``</think>`` (all ids when there is none)."""
    ids = list(ids)
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == think_end_id:
            return ids[i + 1:]
    return ids


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _cn_key(key: Any) -> str | None:
    key = str(key).strip()
    if key in _CN_TO_EN:
        return key
    return _EN_TO_CN.get(key.lower())


def _scores_from_text(text: str) -> dict[str, float]:
    """Chinese-keyed scores from raw model text: JSON first, then ``key: number`` pairs."""
    try:
        content = json.loads(text)
    except ValueError:
        content = None
    if isinstance(content, str) and _cn_key(content):
        return {_cn_key(content): 1.0}  # bare label, e.g. "sad"
    if isinstance(content, Mapping):
        scores: dict[str, float] = {}
        for key, value in content.items():
            cn = _cn_key(key)
            if cn is not None and (x := _score(value)) is not None:
                scores[cn] = x
        if not scores:
            # label-only answers such as {"emotion": "sad"} mean that emotion at full weight
            for field in _LABEL_FIELDS:
                if isinstance(content.get(field), str) and (cn := _cn_key(content[field])):
                    scores[cn] = 1.0
                    break
        return scores
    scores = {}
    for m in _PAIR_RE.finditer(text):
        cn = _cn_key(m.group(1))
        try:
            value = float(m.group(2))
        except ValueError:
            continue
        if cn is not None:
            scores[cn] = value
    if not scores and (cn := _cn_key(text.strip().strip('"').strip())):
        scores[cn] = 1.0
    return scores


def parse_qwen_output(text_out: str, input_text: str) -> dict[str, float]:
    """Classifier answer (text after ``</think>``) -> {emotion: weight} in EMOTIONS order.

    Scores are clamped to [0, 1.2] (not normalised, not capped in sum); when nothing
    positive is found the result is calm = 1.0. Differences from the official parser
    (commit 1eafa93), all for answers it would crash on or misread: non-numeric scores are
    skipped instead of raising, English keys are accepted, and label-only answers
    (``{"emotion": "sad"}``, ``"sad"``) give that emotion 1.0 (as later official code does).
    """
    scores = _scores_from_text(text_out)
    lowered = input_text.lower()
    if any(word in lowered for word in MELANCHOLIC_WORDS):
        scores["悲伤"], scores["低落"] = scores.get("低落", 0.0), scores.get("悲伤", 0.0)
    result = {_CN_TO_EN[cn]: max(0.0, min(MAX_SCORE, scores.get(cn, 0.0))) for cn in CHINESE_KEYS}
    if all(v <= 0.0 for v in result.values()):
        result["calm"] = 1.0
    return result


class QwenEmotion:
    """Text -> 8 emotion weights with the fine-tuned Qwen3-0.6B in ``qwen0.6bemo4-merge/``.

    Nothing is loaded until the first ``analyze`` call, so servers that never receive text
    emotion requests do not pay the ~1.2 GB. Weights are fp16 on CUDA (as the official code)
    and fp32 elsewhere (fp16 matmuls are slow or unsupported on CPU). Decoding follows the
    model dir's ``generation_config.json``. ``max_new_tokens`` bounds a runaway answer (the
    official code allows 32768; a normal answer is well under 100 tokens).
    """

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu", max_new_tokens: int = 512):
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        self.max_new_tokens = max_new_tokens
        self.tokenizer = None
        self.model = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        with self._lock:
            if self.model is not None:
                return
            if not (self.model_dir / "config.json").is_file():
                raise FileNotFoundError(
                    f"emotion text needs the Qwen emotion model, not found at {self.model_dir} "
                    "(run `realtime-tts download` without --no-qwen)")
            from transformers import AutoModelForCausalLM, AutoTokenizer

            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype)
            self.model = model.to(self.device).eval()

    def _think_end_id(self) -> int:
        tid = self.tokenizer.convert_tokens_to_ids("</think>")
        return tid if isinstance(tid, int) and tid != self.tokenizer.unk_token_id else THINK_END_ID

    @torch.inference_mode()
    def generate_ids(self, text: str) -> list[int]:
        """Answer token ids (prompt removed) for ``text``."""
        self.load()
        messages = [{"role": "system", "content": QWEN_SYSTEM_PROMPT}, {"role": "user", "content": text}]
        prompt = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
        inputs = self.tokenizer([prompt], return_tensors="pt").to(self.device)
        with self._lock:
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=self.tokenizer.eos_token_id)
        return out[0, inputs["input_ids"].shape[1]:].tolist()

    def analyze(self, text: str) -> dict[str, float]:
        """{emotion: weight} in EMOTIONS order (each in [0, 1.2]) for a free-text description."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("emotion text must be a non-empty string")
        ids = strip_thinking(self.generate_ids(text), self._think_end_id())
        answer = self.tokenizer.decode(ids, skip_special_tokens=True)
        return parse_qwen_output(answer, text)
