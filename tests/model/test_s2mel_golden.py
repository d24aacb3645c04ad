"""S2M (length regulator, DiT estimator, CFM solve, infer_v2 path) vs the official code.

Fixtures: tests/fixtures/s2mel/, made by tools/golden/s2mel.py from the official modules
at a tiny size; the state dict is in the official s2mel.pth layout and loads strictly.
"""

from pathlib import Path

import pytest
import torch

from realtime_tts.model.s2mel import CheckpointMismatch, S2Mel, S2MelConfig, target_lengths

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "s2mel"
ATOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return torch.load(FIX / "s2mel_golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def model():
    net = torch.load(FIX / "s2mel_tiny.pth", weights_only=True)["net"]
    m = S2Mel(S2MelConfig.tiny())
    m.load_official(net)
    return m.eval()


def close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err < ATOL, f"max abs error {err}"


def test_checkpoint_layout_loads_strictly_and_reports_mismatches():
    net = torch.load(FIX / "s2mel_tiny.pth", weights_only=True)["net"]
    assert any(k.endswith("weight_g") for k in net["cfm"])  # official weight-norm form
    bad = {k: dict(v) for k, v in net.items()}
    bad["cfm"].pop("estimator.skip_linear.bias")
    bad["cfm"]["estimator.bogus"] = torch.zeros(1)
    bad["length_regulator"]["content_in_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatch) as e:
        S2Mel(S2MelConfig.tiny()).load_official(bad)
    msg = str(e.value)
    assert "estimator.skip_linear.bias" in msg and "estimator.bogus" in msg
    bad = {k: dict(v) for k, v in net.items()}
    bad["length_regulator"]["content_in_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatch, match="content_in_proj.weight"):
        S2Mel(S2MelConfig.tiny()).load_official(bad)
    with pytest.raises(CheckpointMismatch, match="gpt_layer"):
        S2Mel(S2MelConfig.tiny()).load_official({"cfm": net["cfm"], "length_regulator": net["length_regulator"]})


@pytest.mark.parametrize("case", ["reg_a", "reg_b"])
def test_length_regulator(model, golden, case):
    out = model.length_regulator(golden[f"{case}_x"], golden[f"{case}_ylen"])
    close(out, golden[f"{case}_out"])


def test_estimator_single_call(model, golden):
    g = golden
    T = g["est_x"].size(-1)
    with torch.no_grad():
        v = model.cfm.estimator(g["est_x"], g["est_prompt_x"], torch.tensor([T, T]), g["est_t"], g["est_style"], g["est_mu"])
    close(v, g["est_out"])


def test_cfm_solve_25_steps(model, golden):
    g = golden
    z = g["cfm_z"]
    T, Tp = z.size(-1), g["cfm_prompt"].size(-1)
    x = model.cfm.solve(z, g["cfm_mu"], torch.tensor([T]), g["cfm_prompt"], torch.tensor([Tp]), g["cfm_style"],
                        steps=25, cfg_rate=0.7)
    close(x, g["cfm_out"])


def _path_inputs(model, g):
    prompt = model.prompt_condition(g["path_s_ref"], g["path_ref_mel"], g["path_style"])
    s_infer = model.semantic(g["path_code_emb"], g["path_latent"])
    return prompt, s_infer


def test_infer_v2_path_with_given_noise(model, golden):
    g = golden
    prompt, s_infer = _path_inputs(model, g)
    close(prompt.cond, g["path_prompt_condition"])
    mel, gen_lens = model.generate(s_infer, g["path_code_lens"], prompt, target_lens=target_lengths(g["path_code_lens"]),
                                   noise=g["path_noise"])
    assert gen_lens.tolist() == [int(g["path_code_lens"][0]) * 172 // 100]
    close(mel, g["path_mel"])


def test_infer_v2_path_with_seeded_generator(model, golden):
    """A generator seeded like the official global seed draws the same noise."""
    g = golden
    prompt, s_infer = _path_inputs(model, g)
    gen = torch.Generator().manual_seed(int(g["path_seed"]))
    mel, _ = model.generate(s_infer, g["path_code_lens"], prompt, target_lens=target_lengths(g["path_code_lens"]),
                            generator=gen)
    close(mel, g["path_mel"])


def test_target_lengths_official_and_speed():
    lens = torch.arange(1, 2000)
    official = (lens * 1.72).long()  # infer_v2's expression
    assert torch.equal(target_lengths(lens), official)
    assert torch.equal(target_lengths(lens, speed=1.0), official)
    fast = target_lengths(torch.tensor([100]), speed=1.25)
    slow = target_lengths(torch.tensor([100]), speed=0.8)
    assert fast.item() == int(172 / 1.25) and slow.item() == 215
    # bad speeds never get here: they are refused where requests enter (SynthesisOptions, tested
    # in tests/engine/test_pipeline.py)


class _CancelAfter:
    def __init__(self, n):
        self.n = n

    def raise_if_cancelled(self):
        self.n -= 1
        if self.n < 0:
            raise RuntimeError("cancelled")


def test_cancel_hook_checked_between_steps(model, golden):
    g = golden
    prompt, s_infer = _path_inputs(model, g)
    hook = _CancelAfter(3)
    with pytest.raises(RuntimeError, match="cancelled"):
        model.generate(s_infer, g["path_code_lens"], prompt, target_lens=target_lengths(g["path_code_lens"]),
                       noise=g["path_noise"], cancel=hook)
    assert hook.n == -1  # three steps ran, the fourth check raised


def manifest_layout(prefix: str) -> dict[str, tuple[int, ...]]:
    """Official full-size names/shapes (fixture copied from the reference manifest), with each
    weight-norm pair (weight_g, weight_v) mapped to the folded ``weight`` of weight_v's shape."""
    out = {}
    for line in (FIX / "manifest_full.txt").read_text().splitlines():
        if not line.startswith(prefix):
            continue
        where, key, dims = line.split()[:3]
        if key.endswith(".weight_g"):
            continue
        key = key[: -len("_v")] if key.endswith(".weight_v") else key
        out[f"{where.split(':', 1)[1]}.{key}"] = tuple(int(d) for d in dims.strip("[]").split(",") if d)
    return out


def test_full_size_layout_matches_official_manifest():
    with torch.device("meta"):
        model = S2Mel(S2MelConfig())
    got = {
        f"net.{name}.{k}": tuple(v.shape)
        for name in ("cfm", "length_regulator", "gpt_layer")
        for k, v in getattr(model, name).state_dict().items()
    }
    want = manifest_layout("s2mel.pth:")
    assert len(want) > 250
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}


def test_from_checkpoint_file_with_ddp_prefix(tmp_path, golden):
    net = torch.load(FIX / "s2mel_tiny.pth", weights_only=True)["net"]
    net = {**net, "cfm": {f"module.{k}": v for k, v in net["cfm"].items()}}  # DDP-saved keys
    torch.save({"net": net, "epoch": 3}, tmp_path / "s2mel.pth")
    m = S2Mel.from_checkpoint(tmp_path / "s2mel.pth", S2MelConfig.tiny())
    close(m.length_regulator(golden["reg_a_x"], golden["reg_a_ylen"]), golden["reg_a_out"])
    torch.save({"model": {}}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointMismatch, match="'net'"):
        S2Mel.from_checkpoint(tmp_path / "wrong.pth", S2MelConfig.tiny())
