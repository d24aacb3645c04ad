"""CAM++ speaker verifier (3D-Speaker), weight-compatible with funasr/campplus
`campplus_cn_common.bin` (strict load, official parameter names).

IndexTTS2 feeds it the Kaldi fbank of the 16 kHz speaker prompt, mean-subtracted per mel bin
over time, and uses the 192-d output as the S2M "style" vector and to pick emotion-matrix rows.

Layout: FCM 2-D ResNet front end (32 channels, frequency stride 8 -> 32 * 10 = 320 channels)
-> TDNN (k5, stride 2) -> three densely connected CAM-TDNN blocks (12/24/16 layers) each followed
by a halving transit layer -> BN-ReLU -> mean+std pooling -> 1x1 dense + affine-free BN.
The constructor keeps the official options (growth_rate, bn_size, init_channels, embedding_size)
so that small test models can be built; the checkpoint uses the defaults below.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from realtime_tts.audio.features import fbank


def bn_relu(channels: int) -> nn.Sequential:
    # Sequential with named children, matching the checkpoint's "<layer>.batchnorm.*" keys
    seq = nn.Sequential()
    seq.add_module("batchnorm", nn.BatchNorm1d(channels))
    seq.add_module("relu", nn.ReLU())
    return seq


class ResBlock2d(nn.Module):
    def __init__(self, in_ch: int, ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, ch, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class FCM(nn.Module):
    """2-D convolutional front end; frequency is downsampled by 8 and folded into channels."""

    def __init__(self, feat_dim: int = 80, ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, ch, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.layer1 = nn.Sequential(ResBlock2d(ch, ch, 2), ResBlock2d(ch, ch, 1))
        self.layer2 = nn.Sequential(ResBlock2d(ch, ch, 2), ResBlock2d(ch, ch, 1))
        self.conv2 = nn.Conv2d(ch, ch, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.out_channels = ch * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, F, T] -> [B, ch * F/8, T]
        h = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        h = self.layer2(self.layer1(h))
        h = F.relu(self.bn2(self.conv2(h)))  # [B, ch, F/8, T]
        return h.flatten(1, 2)


class TDNN(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)
        self.nonlinear = bn_relu(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Local conv gated by a context vector from the utterance mean plus 100-frame segment means."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int, seg_len: int = 100):
        super().__init__()
        self.seg_len = seg_len
        self.linear_local = nn.Conv1d(in_ch, out_ch, kernel, padding=(kernel - 1) // 2 * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(in_ch, in_ch // 2, 1)
        self.linear2 = nn.Conv1d(in_ch // 2, out_ch, 1)

    def segment_means(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, T] -> each frame gets the mean of its 100-frame segment (last one partial)
        seg = F.avg_pool1d(x, self.seg_len, self.seg_len, ceil_mode=True)  # [B, C, ceil(T/100)]
        return seg.repeat_interleave(self.seg_len, dim=-1)[..., : x.shape[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = x.mean(-1, keepdim=True) + self.segment_means(x)
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return self.linear_local(x) * gate


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, bn_ch: int, kernel: int, dilation: int):
        super().__init__()
        self.nonlinear1 = bn_relu(in_ch)
        self.linear1 = nn.Conv1d(in_ch, bn_ch, 1, bias=False)
        self.nonlinear2 = bn_relu(bn_ch)
        self.cam_layer = CAMLayer(bn_ch, out_ch, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.Module):
    """Densely connected: every layer's output is appended to the running feature map."""

    def __init__(self, num_layers: int, in_ch: int, growth: int, bn_ch: int, kernel: int, dilation: int):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"tdnnd{i + 1}", CAMDenseTDNNLayer(in_ch + i * growth, growth, bn_ch, kernel, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.nonlinear = bn_relu(in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C, T] -> [B, 2C]: mean and unbiased std over time
        return torch.cat([x.mean(-1), x.std(-1, unbiased=True)], dim=-1)


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = nn.Sequential()
        self.nonlinear.add_module("batchnorm", nn.BatchNorm1d(out_ch, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in] -> [B, out]
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    def __init__(self, feat_dim: int = 80, embedding_size: int = 192, growth_rate: int = 32,
                 bn_size: int = 4, init_channels: int = 128):
        super().__init__()
        self.feat_dim = feat_dim
        self.head = FCM(feat_dim)
        self.xvector = nn.Sequential()
        self.xvector.add_module("tdnn", TDNN(self.head.out_channels, init_channels, 5, stride=2))
        ch = init_channels
        for i, (layers, dilation) in enumerate(zip((12, 24, 16), (1, 2, 2))):
            self.xvector.add_module(f"block{i + 1}", CAMDenseTDNNBlock(layers, ch, growth_rate,
                                                                       bn_size * growth_rate, 3, dilation))
            ch += layers * growth_rate
            self.xvector.add_module(f"transit{i + 1}", TransitLayer(ch, ch // 2))
            ch //= 2
        self.xvector.add_module("out_nonlinear", bn_relu(ch))
        self.xvector.add_module("stats", StatsPool())
        self.xvector.add_module("dense", DenseLayer(ch * 2, embedding_size))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # feats: [B, T, feat_dim] (T >= 3) -> [B, embedding_size]
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ValueError(f"expected [B, T, {self.feat_dim}] features, got {tuple(feats.shape)}")
        if feats.shape[1] < 3:
            raise ValueError(f"need at least 3 feature frames, got {feats.shape[1]}")
        return self.xvector(self.head(feats.transpose(1, 2)))

    @torch.no_grad()
    def style(self, wav_16k: torch.Tensor) -> torch.Tensor:
        """IndexTTS2 speaker style of one 16 kHz clip: wav [1, N] or [N] -> [1, embedding_size]."""
        feat = fbank(wav_16k, num_mel_bins=self.feat_dim, sample_rate=16000)  # [F, 80]
        feat = feat - feat.mean(dim=0, keepdim=True)
        return self(feat.unsqueeze(0))

    @classmethod
    def from_file(cls, path: str) -> "CAMPPlus":
        """Load `campplus_cn_common.bin` (a torch state dict, or a .safetensors copy) strictly."""
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        model.load_state_dict(sd, strict=True)
        return model.eval()
