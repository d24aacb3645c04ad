#!/usr/bin/env bash
# Wheels the device machine (Python 3.12, torch preinstalled, no network) lacks, into .whl/ at the
# repository root (git-ignored), for `run` calls that name `.whl` in `carry` (tools/gpu/run.sh
# installs them). Pins follow pyproject.toml; espeakng-loader is left out (the IndexTTS2 benches
# do not load eSpeak) to stay under the 64 MiB a device call carries. tiktoken is IndexTTS-2.5's
# vocabulary; its Japanese word splitting (fugashi + the 48 MB unidic-lite) does not fit, and the
# random-weight 2.5 benches run without it (tools/bench/random_weights.py BenchFrontEnd).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    soxr==1.1.0 av==18.1.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 starlette==1.10.0 uvicorn==0.54.0 \
    websockets==17.4 python-multipart==0.0.34 wetext==0.1.8 contractions==0.1.73 kaldifst==1.8.3 \
    textsearch==0.0.24 anyascii==0.3.3 pyahocorasick==2.3.1 tiktoken==0.14.0
du -sh .whl
