"""Golden vectors for realtime_tts/model/emotion.py from the official IndexTTS2 code (1eafa93).

Run in the oracle venv (transformers 4.52.1):

    PYTHONPATH=/work/official/index-tts-1eafa93 /work/venvs/official/bin/python tools/golden/emotion.py

Writes tests/fixtures/emotion/:
  matrix.safetensors   fixed random feat1 [73,192], feat2 [73,1280], style [1,192], emovec [1,1280]
                       and the official results per weight case (selected rows, mix, final vector)
  maths.json           weight cases: normalize_emo_vec (bias on/off), alpha scaling, indices
  parse_cases.json     raw answers fed through the official QwenEmotion.inference parsing
  tiny_qwen/           a tiny Qwen3 model + tokenizer (see build_tiny_qwen)
  tiny_qwen_golden.json official QwenEmotion.inference results on tiny_qwen/ (+ the prompt text)

Official pieces that are inline statements rather than functions (the emo_alpha scaling, the
row mix and the final ``mix + (1 - sum w) * emovec``) are restated here from the facts in
infer_v2.py (infer_generator); everything else calls the official functions.
"""

from __future__ import annotations

import json
import random
import sys
import types
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "emotion"

# The official module imports modelscope only for AutoModelForCausalLM (a thin wrapper of the
# transformers class for local dirs) and asks for device_map="auto" (needs accelerate); on this
# CPU-only machine "auto" means CPU, so the shim drops it.


class _ModelscopeAuto:
    @staticmethod
    def from_pretrained(path, *args, device_map=None, **kwargs):
        return transformers.AutoModelForCausalLM.from_pretrained(path, *args, **kwargs)


sys.modules["modelscope"] = types.SimpleNamespace(AutoModelForCausalLM=_ModelscopeAuto)
import indextts.infer_v2 as official  # noqa: E402

EMO_NUM = [3, 17, 2, 8, 4, 5, 10, 24]

WEIGHT_CASES = {
    "zero": [0.0] * 8,
    "happy_one": [1.0, 0, 0, 0, 0, 0, 0, 0],
    "small_mix": [0.1, 0.0, 0.2, 0.0, 0.05, 0.0, 0.1, 0.1],
    "flat_0.2": [0.2] * 8,
    "all_one": [1.0] * 8,
    "text_like_over_1": [1.2, 0.0, 0.9, 0.0, 0.0, 0.3, 0.0, 0.0],
    "odd_digits": [0.123456, 0.654321, 0.0, 0.333333, 0.0, 0.0, 0.987654, 0.0],
}
ALPHAS = [1.0, 0.5, 0.65, 1.5, -0.2]
RANDOM_SEEDS = [0, 1, 42]


def official_scale(vec, alpha):
    scale = max(0.0, min(1.0, alpha))
    if scale != 1.0:
        return [int(x * scale * 10000) / 10000 for x in vec]
    return list(vec)


def maths() -> None:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1234)
    feat1 = torch.randn(73, 192, generator=g)
    feat2 = torch.randn(73, 1280, generator=g) * 0.5
    style = torch.randn(1, 192, generator=g)
    emovec = torch.randn(1, 1280, generator=g)
    spk_groups = torch.split(feat1, EMO_NUM)
    emo_groups = torch.split(feat2, EMO_NUM)
    indices = [int(official.find_most_similar_cosine(style, m)) for m in spk_groups]

    tensors = {"feat1": feat1, "feat2": feat2, "style": style, "emovec": emovec}
    cases = {}
    for name, vec in WEIGHT_CASES.items():
        case = {
            "weights": vec,
            "normalized": official.IndexTTS2.normalize_emo_vec(None, vec, apply_bias=True),
            "normalized_no_bias": official.IndexTTS2.normalize_emo_vec(None, vec, apply_bias=False),
            "alpha": {str(a): official_scale(vec, a) for a in ALPHAS},
        }
        # infer_generator: weight tensor, chosen rows, weighted sum, then the final vector
        w = torch.tensor(vec)
        rows = torch.cat([m[i].unsqueeze(0) for i, m in zip(indices, emo_groups)], 0)
        mix = torch.sum(w.unsqueeze(1) * rows, 0).unsqueeze(0)
        final = mix + (1 - torch.sum(w)) * emovec
        tensors[f"{name}.mix"] = mix.contiguous()
        tensors[f"{name}.final"] = final.contiguous()
        cases[name] = case
    random_indices = {}
    for seed in RANDOM_SEEDS:
        random.seed(seed)
        random_indices[str(seed)] = [random.randint(0, x - 1) for x in EMO_NUM]
    save_file(tensors, OUT / "matrix.safetensors")
    (OUT / "maths.json").write_text(json.dumps(
        {"emo_num": EMO_NUM, "indices": indices, "random_indices": random_indices, "cases": cases},
        ensure_ascii=False, indent=1))


# ----------------------------------------------------------------------------- parsing

THINK = "</think>"
# (answer pieces as the model would emit them, user text). "</think>" becomes id 151668.
PARSE_CASES = [
    (['{"高兴": 0.1, "愤怒": 0.0, "悲伤": 0.8, "恐惧": 0.0, "反感": 0.0, "低落": 0.2, "惊讶": 0.0, "自然": 0.3}'],
     "我今天很难过"),
    (['{"高兴": 0.9, "惊讶": 0.4}'], "太好了！"),
    (['{"愤怒": 1.7, "恐惧": -0.3, "自然": 0.2}'], "滚出去"),
    (['{"高兴": 0.0, "悲伤": 0.0}'], "嗯"),
    (["高兴: 0.7\n悲伤: 0.2, 惊讶:1.5"], "messy pairs"),
    (['{"高兴": 0.6, "悲伤": 0.3'], "truncated json"),
    (['"愤怒": 0.5, "反感": 0.25 and then some text'], "pairs in prose"),
    (["<think>", "用户似乎很生气", THINK, '{"愤怒": 0.9}'], "with thinking"),
    (["<think>", "a", THINK, "noise", THINK, '{"恐惧": 0.4}'], "two think ends"),
    (['{"悲伤": 0.8, "低落": 0.1}'], "I feel so gloomy today"),
    (['{"悲伤": 0.8}'], "心情低落"),
    (['{"悲伤": 0.7}'], "DEPRESSED and sad"),
    ([""], "empty answer"),
    (['{"emotion": "sad"}'], "label only"),
    (['"sad"'], "bare label json"),
    (["sad"], "bare label"),
    (['{"happy": 0.5, "angry": 0.2}'], "english keys"),
    (['{"高兴": "high"}'], "non-numeric score"),
    (["[0.1, 0.2]"], "json list"),
    (["高兴: 1.2.3"], "bad number"),
]


class _Inputs(dict):
    def to(self, device):
        return self

    @property
    def input_ids(self):
        return self["input_ids"]


class _PieceTokenizer:
    """Stands in for the Qwen tokenizer: the answer is a list of text pieces, one id each."""

    eos_token_id = 151645

    def __init__(self):
        self.pieces: list[str] = []

    def apply_chat_template(self, messages, **kwargs):
        return "PROMPT"

    def __call__(self, texts, return_tensors=None):
        return _Inputs(input_ids=torch.tensor([[7, 7, 7]]))

    def ids(self) -> list[int]:
        return [151668 if p == THINK else 1000 + i for i, p in enumerate(self.pieces)]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i - 1000] for i in ids if i != 151668)


class _PieceModel:
    device = "cpu"

    def __init__(self, tok: _PieceTokenizer):
        self.tok = tok

    def generate(self, input_ids, **kwargs):
        return torch.cat([input_ids, torch.tensor([self.tok.ids()])], 1)


def parse_cases() -> None:
    tok = _PieceTokenizer()
    orig_tok, orig_model = official.AutoTokenizer, official.AutoModelForCausalLM
    official.AutoTokenizer = types.SimpleNamespace(from_pretrained=lambda *a, **k: tok)
    official.AutoModelForCausalLM = types.SimpleNamespace(from_pretrained=lambda *a, **k: _PieceModel(tok))
    try:
        qwen = official.QwenEmotion("unused")
    finally:
        official.AutoTokenizer, official.AutoModelForCausalLM = orig_tok, orig_model
    out = []
    for pieces, text in PARSE_CASES:
        tok.pieces = pieces
        try:
            result = {"result": qwen.inference(text)}
        except Exception as e:  # recorded: the official parser crashes on some answers
            result = {"error": type(e).__name__}
        out.append({"pieces": pieces, "input": text, "official": result})
    (OUT / "parse_cases.json").write_text(json.dumps(out, ensure_ascii=False, indent=1))


# ----------------------------------------------------------------------------- tiny Qwen

# Answer the tiny model always gives: three non-special added tokens that read as one JSON object.
ANSWER_TOKENS = ['{"高兴": 0.6, ', '"悲伤": 0.9, ', '"惊讶": 0.3}']
SPECIALS = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
            ("<think>", False), ("</think>", False)]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
TINY_INPUTS = ["今天真开心", "I feel gloomy and depressed", "hello"]


def build_tiny_qwen(path: Path) -> None:
    """A 2-layer Qwen3 whose greedy answer is fixed: a bigram chain through the last token.

    Byte-level BPE without merges (256 byte symbols) + the answer tokens + Qwen's chat
    specials (their ids are small here, not Qwen's 151643+, to keep the fixture tiny; the
    </think> id handling is covered by parse_cases). Attention and MLP outputs are zero
    except layer 0's MLP, which maps the chain tokens' (orthonormal) embeddings to the next
    token: "\\n" -> answer[0] -> answer[1] -> answer[2] -> <|im_end|>. All other weights are
    random, so the model is a real Qwen3 whose behaviour survives fp16 and fp32 alike.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_tokens(ANSWER_TOKENS)
    for content, special in SPECIALS:
        if special:
            bpe.add_special_tokens([content])
        else:
            bpe.add_tokens([content])
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
        model_input_names=["input_ids", "attention_mask"])
    vocab = len(tok)

    cfg = transformers.Qwen3Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
        use_sliding_window=False, sliding_window=None,
        tie_word_embeddings=True, bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(cfg).eval()
    chain = [tok.convert_tokens_to_ids("Ċ")] + tok.convert_tokens_to_ids(ANSWER_TOKENS) + [tok.eos_token_id]
    with torch.no_grad():
        emb = model.model.embed_tokens.weight  # [V, 32], tied to lm_head
        emb.normal_(0, 0.01)
        emb[chain] = torch.eye(32)[: len(chain)]
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        mlp = model.model.layers[0].mlp  # input = rmsnorm(e_k) = sqrt(32) * u_k
        mlp.gate_proj.weight.zero_()
        mlp.up_proj.weight.zero_()
        for j, (src, dst) in enumerate(zip(chain[:-1], chain[1:])):
            mlp.gate_proj.weight[j] = emb[src]
            mlp.up_proj.weight[j] = emb[src]
            mlp.down_proj.weight[:, j] = emb[dst]  # adds ~32 * u_next to the residual
    model.generation_config = transformers.GenerationConfig(
        do_sample=False, eos_token_id=[tok.eos_token_id, tok.pad_token_id], pad_token_id=tok.pad_token_id,
        max_new_tokens=64)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def tiny_qwen() -> None:
    path = OUT / "tiny_qwen"
    build_tiny_qwen(path)
    qwen = official.QwenEmotion(str(path))
    prompts = []
    template = qwen.tokenizer.apply_chat_template

    def capture(*args, **kwargs):
        text = template(*args, **kwargs)
        prompts.append(text)
        return text

    qwen.tokenizer.apply_chat_template = capture
    records = []
    for text in TINY_INPUTS:
        result = qwen.inference(text)
        records.append({"input": text, "prompt": prompts[-1], "official": result})
    (OUT / "tiny_qwen_golden.json").write_text(json.dumps(records, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    maths()
    parse_cases()
    tiny_qwen()
    print("wrote", OUT)
