"""Golden vectors for the IndexTTS-2.5 text front end (tiktoken vocabulary, language ids,
normalisation per language, case rules, annotations, Japanese word split, segmentation).

Runs in the ORACLE venv against the official code at ee40fa7 (never in CI):

    PYTHONHASHSEED=0 PYTHONPATH=/work/official/index-tts-ee40fa7 \
        /work/venvs/official/bin/python tools/golden/indextts25_text.py [--out tests/fixtures/indextts25]

Reads the vocabulary fixture ``multilingual_zh_ja_yue_char_del.tiktoken`` from the output
folder and writes ``text_frontend.json`` there.

The whole text path runs through the official ``IndexTTS2.infer_generator`` itself: an
instance is made without ``__init__`` and given the real tokenizer, ``TextNormalizer``
(WeTextProcessing, the Linux branch) and ``JapaneseG2PProcessor(g2p_ratio=0)``, plus speaker
and emotion caches holding placeholders so that no audio is touched. The stand-in GPT's
``merge_emovec``, the first model call after the text has become token ids, reads the
generator's local variables (processed text, segments, segment ids, language id) and stops
the run. The same cases run a second time with ``platform.system`` patched to "Darwin", the
official branch that uses ``wetext`` instead of WeTextProcessing; results that differ are
stored beside the Linux ones. NeMo is not installed (as in the official lock), so Spanish
takes the official pass-through branch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch

# infer_v2_5 imports modelscope only for the Qwen emotion model, which is not loaded here
sys.modules.setdefault("modelscope", types.SimpleNamespace(AutoModelForCausalLM=None))

VOCAB = "multilingual_zh_ja_yue_char_del.tiktoken"
VOCAB_SHA256 = "747979631e813193436aabcff7c1c235d37de8097b71c563ec8b63b7a515c718"

ZH_LONG = (
    "《盗梦空间》是由美国华纳兄弟影片公司出品的电影，由克里斯托弗·诺兰执导并编剧，莱昂纳多·迪卡普里奥、"
    "玛丽昂·歌迪亚、约瑟夫·高登-莱维特等联袂主演，2010年7月16日在美国上映，2010年9月1日在中国内地上映。"
    "影片剧情游走于梦境与现实之间，被定义为“发生在意识结构内的当代动作科幻片”，讲述了由莱昂纳多·迪卡普里奥"
    "扮演的造梦师，带领特工团队进入他人梦境，从他人的潜意识中盗取机密，并重塑他人梦境的故事。票房超过8.3亿美元！"
)
EN_LONG = (
    "The quick brown fox jumps over the lazy dog, again and again; it never seems to tire. "
    "On March 3rd, 2024, at 10:30 AM, about 1,250 people gathered in the park to watch. "
    "Tickets cost $12.50 each (children paid half), and the event raised over 15,000 dollars! "
    "Was it worth it? Most said yes. The organisers plan to repeat it next year, weather permitting, "
    "with more music, more food and, hopefully, fewer foxes."
)
JA_LONG = (
    "そうですね、ほんと1年前、まあコロナだったので家のリビングからあの話して、すごい緊張してしまって、"
    "もう手が冷たくなったのを今でも覚えてるんですけど、新潟にいるメンバーが応援してくれました。"
    "また、青少年健全育成などに功績がある、市内の団体を表彰する団体省令の推薦も合わせて受け付けています。"
    "実は昨年、11kgの減量にも成功していたという。<明日|あした>は<東京|とうきょう>へ行きます！"
)
ES_LONG = (
    "¿Sabías que el año pasado más de 3.500 personas visitaron el museo? ¡Es increíble! "
    "La exposición, que abrió sus puertas el 12 de marzo, reunió obras de artistas de toda España; "
    "muchas de ellas nunca se habían mostrado al público. Mañana, a las 10:30, habrá una visita guiada "
    "gratuita para estudiantes y jubilados, así que no te la pierdas."
)
AR_LONG = (
    "مرحبا بكم في برنامجنا اليوم، حيث نتحدث عن تاريخ المدينة القديمة وأسواقها الشهيرة التي يعود بعضها إلى "
    "أكثر من ألف عام، كما نستعرض مع ضيوفنا الكرام أهم المعالم السياحية التي يزورها الناس من كل مكان في "
    "العالم؟ وفي نهاية الحلقة سنجيب عن أسئلتكم التي أرسلتموها عبر الموقع الإلكتروني والبريد وشبكات التواصل"
)
NO_PUNCT_LONG = "一二三四五六七八九十" * 16  # no mark to cut after: cut character by character

# (language as the request writes it, text)
CASES = [
    ("zh", "今天是2025年1月1日，气温-3.5°C。"),
    ("zh", "你好<行|XING2>不行！我爱你！"),
    ("zh", "这件衣服¥199.99，打8折，电话：135-4567-8900"),
    ("zh", "晕XUAN4是一种GAN3觉，约瑟夫·高登-莱维特是演员"),
    ("zh", "今天是个好日子 it's a good day!"),
    ("zh", "“我爱你”的英语是“I love you”（真的）"),
    ("zh", "<重|CHONG2>新开始，<going|G OW1 . IH0 NG>吧"),
    ("ZH", "请说<|HAPPY|>开心一点"),
    ("zh", ZH_LONG),
    ("zh", NO_PUNCT_LONG),
    ("en", "Hello world! This is a test."),
    ("en", "I have 3 apples and <going|G OW1 . IH0 NG>."),
    ("en", "The meeting is at 10:30 AM on Jan. 5th, 2024; it costs $12.50."),
    ("en", 'He said "wow" (really)! Call 555-1234 now!!'),
    ("en", "GPT-5-Nano is the smallest; where's the money?"),
    ("en", "<read|R EH1 D> it, then <行|XING2> too"),
    ("EN", "Say <|happy|> now and <|sad|> later <|en|>"),
    ("en", EN_LONG),
    ("ja", "明日は<明日|あした>晴れです。"),
    ("ja", "<東京|TOKYO>に行きます。"),
    ("ja", "<行|XING2>と<今日|キョウ>、<今日|きょうキョウ>"),
    ("ja", "今日は2025年1月1日です！ｶﾀｶﾅとカタカナ、ひらがな？"),
    ("ja", "「こんにちは」と言った。  二つの  空白"),
    ("JA", JA_LONG),
    ("es", "¿Cómo estás? Tengo 25 años."),
    ("es", "El precio es 3,50 €. ¡Qué barato! <hola|O L A> amigo"),
    ("es", "Mañana a las 10:30: «ñandú» y Ü"),
    ("es", ES_LONG),
    ("ar", "مرحبا بكم، كيف حالكم؟"),
    ("ar", "لدي 3 تفاحات! وعدد ١٢٣ كتاب."),
    ("ar", "<مرحبا|MARHABAN> يا صديقي (Ahmed)"),
    ("ar", AR_LONG),
    ("AR", "Hello مرحبا: OK!"),
]
# shorter budgets on a few cases, so that more cuts happen (max_text_tokens_per_segment)
BUDGET_CASES = [(c, n) for c in (CASES[6], CASES[12], CASES[21], CASES[25], CASES[30], CASES[17])
                for n in (8, 16, 30)]
NO_TN_CASES = [("zh", "今天是2025年1月1日，<行|XING2>"), ("en", "It costs $12.50!"), ("es", "Tengo 25 años.")]

TOKENIZE_CASES = [
    "", " ", "  \n\t ", "!", '"', "!!", " !", "hello world", "Hello World", "HELLO",
    "<|zh|> 你好", "<|en|><|ja|><|es|><|ar|><|zhen|>", "<|SPECIAL_TOKEN_1|>G OW1<|SPECIAL_TOKEN_1|>",
    "<|endoftext|><|startoftranscript|><|notimestamps|><|0.00|><|29.98|><|30.00|><|TTS/SP13|>",
    "<|Speech|><|/BGM|><|HAPPY|><|NEUTRAL|><|translate|>", "<|SPECIAL_TOKEN_31|>", "<|HAPPY",
    "日本語のテキスト、カタカナ", "ｶﾀｶﾅ", "مرحبا بكم؟", "¿Qué tal? ¡Ñandú!", "emoji 😀👍🏽 🇨🇳",
    "it's they're we've I'm you'll he'd", "123 4567 3.14 1,000", "tabs\tand\nnew  lines   ",
    "a\u00a0b\u200bc\ufeffd", "Ǆemo ǅ ǆ", "\U0002a6a5\U00020000 𠀀",
]
ANNOTATION_CASES = [
    "<行|xing2>", "<going|g ow1 . ih0 ng>", "<明日|あした>", "<今日|キョウ>", "<今日|きょうキョウ>",
    "<東京|tokyo>", "<a|b><c|d>", "<x|y|z>", "<no pipe>", "<|SPECIAL_TOKEN_1|>", "<行|>",
    "<|xing>", "<行\n|x>", "<行|x\ny>", "<語|ー>", "<語|ゝゞ>", "前<行|XING2>后<going|GO>",
]
JA_SPLIT_CASES = [
    "今日はいい天気ですね。", "明日  は 雨", " 先頭の空白", "末尾の空白 ", "<|SPECIAL_TOKEN_2|>XING2<|SPECIAL_TOKEN_2|>",
    "ｶﾀｶﾅとカタカナ", "2025年1月1日", "abc def", "\t tab", "",
]
SPLIT_CASES = [  # (processed text, max_tokens, language prefix) through split_text_by_tokens directly
    ("<|SPECIAL_TOKEN_1|>G OW1 . IH0 NG . G OW1 . IH0 NG<|SPECIAL_TOKEN_1|> go go go, go.", 6, "<|en|> "),
    ("a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p.", 4, "<|en|> "),
    ("word " * 40, 10, "<|en|> "),
    ("你好，世界！今天天气很好。我们去公园吧？好的；走吧：出发、快点\n下一行", 5, "<|zh|> "),
    ("x", 1, "<|en|> "),
    ("abc", 1, "<|zhen|> "),
    ("a.b.c", 1000, "<|en|> "),
]


class _Captured(Exception):
    pass


class _StandInGPT:
    """What infer_generator touches of the GPT before any model call."""

    def __init__(self):
        self.text_pos_embedding = types.SimpleNamespace(emb=types.SimpleNamespace(num_embeddings=602))

    def merge_emovec(self, *args, **kwargs):
        frame = sys._getframe(1)
        names = ("text", "segments", "segment_tokens", "lang")
        raise _Captured({k: frame.f_locals[k] for k in names})


def make_tts(model_dir: str, wetext: bool):
    from indextts.infer_v2_5 import IndexTTS2
    from indextts.utils.front import TextNormalizer
    from indextts.utils.ja_g2p import JapaneseG2PProcessor
    from indextts.utils.tokenizer import get_tokenizer

    tts = IndexTTS2.__new__(IndexTTS2)
    tts.gr_progress = None
    tts.device = "cpu"
    tts.dtype = None
    tts.qwen_emo = None
    tts.gpt = _StandInGPT()
    tts.tokenizer = get_tokenizer(multilingual=True, model_dir=model_dir)
    tts.ja_text_process = JapaneseG2PProcessor(g2p_ratio=0)
    tts.text_process = TextNormalizer(enable_glossary=True)
    real = platform.system
    if wetext:
        platform.system = lambda: "Darwin"
    try:
        tts.text_process.load()
    finally:
        platform.system = real
    placeholder = torch.zeros(1, 1, 1)
    tts.cache_spk_cond, tts.cache_spk_audio_prompt = placeholder, "speaker.wav"
    tts.cache_s2mel_style = tts.cache_s2mel_prompt = tts.cache_mel = None
    tts.cache_emo_cond, tts.cache_emo_audio_prompt = placeholder, "speaker.wav"
    return tts


def run_case(tts, lang: str, text: str, max_tokens: int = 120, text_normalization: bool = True) -> dict:
    seen: dict = {}
    real_normalize = tts.text_process.normalize

    def normalize(t):
        seen["tn_in"] = t
        seen["tn_out"] = real_normalize(t)
        return seen["tn_out"]

    tts.text_process.normalize = normalize
    gen = tts.infer_generator("speaker.wav", text, None, lang, max_text_tokens_per_segment=max_tokens,
                              text_normalization=text_normalization)
    try:
        next(gen)
    except _Captured as c:
        got = c.args[0]
    else:
        raise RuntimeError("infer_generator did not reach the GPT")
    finally:
        tts.text_process.normalize = real_normalize
    out = {"lang": lang, "text": text, "max_tokens": max_tokens, "text_normalization": text_normalization,
           "processed": got["text"], "segments": got["segments"],
           "ids": [t.squeeze(0).tolist() for t in got["segment_tokens"]], "lang_id": int(got["lang"][0])}
    if "tn_out" in seen:
        out["zh_en_tn"] = {"in": seen["tn_in"], "out": seen["tn_out"]}
    return out


def pipeline_cases(tts) -> list[dict]:
    runs = [run_case(tts, lang, text) for lang, text in CASES]
    runs += [run_case(tts, lang, text, max_tokens=n) for (lang, text), n in BUDGET_CASES]
    runs += [run_case(tts, lang, text, text_normalization=False) for lang, text in NO_TN_CASES]
    runs.append(run_case(tts, "en", ""))
    return runs


def component_cases(tts) -> dict:
    from indextts.infer_v2_5 import apply_pronunciation_annotations
    from indextts.utils.tokenizer import LANGUAGES, lang_to_token

    enc = tts.tokenizer.encoding
    specials = sorted(enc._special_tokens.items(), key=lambda kv: kv[1])
    codes = list(LANGUAGES) + ["zhen", "ZH", "Ja", "xx", "", "zh-cn", "chinese"]
    return {
        "n_vocab": enc.n_vocab,
        "specials": [name for name, _ in specials],
        "first_special_id": specials[0][1],
        "lang_to_token": {c: lang_to_token(c) for c in codes},
        "encode": [{"text": t, "ids": enc.encode(t, allowed_special="all")} for t in TOKENIZE_CASES],
        "annotations": [{"text": t, "out": apply_pronunciation_annotations(t)} for t in ANNOTATION_CASES],
        "ja_split": [{"text": t, "out": tts.ja_text_process.process_ja_text(t)} for t in JA_SPLIT_CASES],
        "split": [{"text": t, "max_tokens": n, "prefix": p, "segments": tts.split_text_by_tokens(t, n, p)}
                  for t, n, p in SPLIT_CASES],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/indextts25"))
    args = ap.parse_args()
    vocab = args.out / VOCAB
    digest = hashlib.sha256(vocab.read_bytes()).hexdigest()
    if digest != VOCAB_SHA256:
        raise SystemExit(f"{vocab}: sha256 {digest}, expected {VOCAB_SHA256}")
    with tempfile.TemporaryDirectory() as model_dir:
        shutil.copy(vocab, Path(model_dir) / VOCAB)
        linux = make_tts(model_dir, wetext=False)
        res = {"commit": "ee40fa7d6c6b8a2c7f06105f9f1e65775b74868c", "vocab_sha256": digest,
               "zh_en_backend": "WeTextProcessing (official Linux branch)",
               "components": component_cases(linux), "cases": pipeline_cases(linux)}
        wetext_runs = pipeline_cases(make_tts(model_dir, wetext=True))
    for case, other in zip(res["cases"], wetext_runs):
        diff = {k: other[k] for k in ("processed", "segments", "ids", "zh_en_tn") if other.get(k) != case.get(k)}
        if diff:
            case["wetext"] = diff
    path = args.out / "text_frontend.json"
    text = json.dumps(res, ensure_ascii=False, indent=1)
    text = re.sub(r"\[(?:\s*-?\d+,?)+\s*\]", lambda m: re.sub(r"\s+", "", m.group()), text)  # ids on one line
    path.write_text(text + "\n", encoding="utf-8")
    n_diff = sum("wetext" in c for c in res["cases"])
    print(f"wrote {path} ({path.stat().st_size} bytes): {len(res['cases'])} cases, "
          f"{n_diff} differ between WeTextProcessing and wetext", file=sys.stderr)


if __name__ == "__main__":
    main()
