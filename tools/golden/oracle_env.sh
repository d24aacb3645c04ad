#!/usr/bin/env bash
# Build the oracle: the OFFICIAL IndexTTS code at its two pinned commits and one venv that runs both.
# The golden fixtures under tests/fixtures/ are outputs of this code (tools/golden/*.py); CI never
# needs it. Usage:
#
#   tools/golden/oracle_env.sh [OFFICIAL_REPO]
#
# OFFICIAL_REPO: a git directory (bare or not) of github.com/index-tts/index-tts holding both
# commits, or a URL to clone it from (default: $OFFICIAL_REPO). Settings (environment):
#   ORACLE_VENV    the venv to build            (default /work/venvs/official)
#   ORACLE_SRC     where the checkouts go       (default /work/official)
#   ORACLE_PYTHON  a CPython 3.11 interpreter   (default python3.11; pynini ships cp311 wheels and
#                                                IndexTTS-2.5 wants Python >=3.10,<3.12)
#   ORACLE_TORCH   the torch requirement        (default torch==2.13.0; pip picks the +cpu wheel
#                  where a CPU index or a local wheel offers it, e.g. with
#                  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)
#
# Result: $ORACLE_SRC/index-tts-1eafa93 (v2) and $ORACLE_SRC/index-tts-ee40fa7 (IndexTTS-2.5),
# plain trees exported with `git archive`; $ORACLE_VENV with tools/golden/oracle_requirements.txt;
# the text-normaliser FST caches warmed in both trees; and $ORACLE_VENV/READY, one line per
# checkout path, written last, only after both official inference modules import. Re-running
# reuses what is already there (delete the venv or a checkout to rebuild it).
set -euo pipefail

V2_COMMIT=1eafa935e8887f9ba877f82cf7319fceddfc86cb
V25_COMMIT=ee40fa7d6c6b8a2c7f06105f9f1e65775b74868c
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${1:-${OFFICIAL_REPO:-}}
VENV=${ORACLE_VENV:-/work/venvs/official}
SRC=${ORACLE_SRC:-/work/official}
PY=${ORACLE_PYTHON:-python3.11}
TORCH=${ORACLE_TORCH:-torch==2.13.0}

say() { printf '[oracle] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ -n "$REPO" ] || die "give the official repository (a git dir or a URL) as \$1 or OFFICIAL_REPO"
mkdir -p "$SRC"
if [ ! -d "$REPO" ]; then
    say "cloning $REPO"
    git clone --bare --quiet "$REPO" "$SRC/index-tts.git"
    REPO="$SRC/index-tts.git"
fi
GIT=(git --git-dir="$(cd "$REPO" && cd "$(git rev-parse --git-dir)" && pwd)")
"${GIT[@]}" cat-file -e "$V2_COMMIT^{commit}" 2>/dev/null || die "$REPO lacks commit $V2_COMMIT"
"${GIT[@]}" cat-file -e "$V25_COMMIT^{commit}" 2>/dev/null || die "$REPO lacks commit $V25_COMMIT"

# export COMMIT DIR: a plain tree of the commit. Blobs absent from a partial clone (a demo video and
# an unused pitch-extractor checkpoint in the mirrors seen so far) are left out and named.
export_tree() {
    local commit=$1 dir=$2 missing=()
    if [ -f "$dir/.oracle-commit" ] && [ "$(cat "$dir/.oracle-commit")" = "$commit" ]; then
        say "$dir: already at $commit"
        return
    fi
    [ ! -e "$dir" ] || die "$dir exists but is not an export of $commit: move it away first"
    while read -r _ type hash path; do
        [ "$type" = blob ] || continue
        "${GIT[@]}" cat-file -e "$hash" 2>/dev/null || missing+=(":(exclude)$path")
    done < <("${GIT[@]}" ls-tree -r "$commit")
    for m in "${missing[@]}"; do say "$commit: blob not in the repository, left out: ${m#:(exclude)}"; done
    mkdir -p "$dir.tmp"
    "${GIT[@]}" archive --format=tar "$commit" -- . "${missing[@]}" 2> >(grep -v '^error: invalid object' >&2) \
        | tar -x -C "$dir.tmp"
    echo "$commit" > "$dir.tmp/.oracle-commit"
    mv "$dir.tmp" "$dir"
    say "$dir: exported $commit"
}
V2_DIR="$SRC/index-tts-${V2_COMMIT:0:7}"
V25_DIR="$SRC/index-tts-${V25_COMMIT:0:7}"
export_tree "$V2_COMMIT" "$V2_DIR"
export_tree "$V25_COMMIT" "$V25_DIR"

rm -f "$VENV/READY"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
        || die "$PY is not CPython 3.11 (set ORACLE_PYTHON)"
    say "creating $VENV"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
say "installing $TORCH"
"${PIP[@]}" "$TORCH"
# torchaudio 2.11.0 (PyPI's build, "+cu130") pins torch==2.11.0 and links its compiled ops against
# CUDA torch. The official code only uses its plain-torch parts (Resample, kaldi fbank), which is
# how the fixtures were made: it goes in without its pin and without its compiled ops (torchaudio
# then runs as pure Python: its loader skips an absent library).
say "installing torchaudio==2.11.0 (without its torch pin and compiled ops)"
"${PIP[@]}" --no-deps torchaudio==2.11.0
TA_LIB=$("$VENV/bin/python" -c 'import importlib.util as u, os; print(os.path.join(os.path.dirname(u.find_spec("torchaudio").origin), "lib"))')
rm -f "$TA_LIB"/*.so
say "installing tools/golden/oracle_requirements.txt"
"${PIP[@]}" --no-deps -r "$HERE/oracle_requirements.txt"

# check: both official inference modules import, and the normalisers of both branches work. The
# first WeTextProcessing use builds the official FST cache (about a minute per tree) into
# indextts/utils/tagger_cache: doing it here keeps later parallel users from racing to build it.
check() {
    local dir=$1 module=$2
    say "checking $module in $dir"
    (cd "$dir" && HF_HUB_OFFLINE=1 PYTHONPATH="$dir" "$VENV/bin/python" - "$module" <<'EOF'
import importlib, platform, sys
module = importlib.import_module(sys.argv[1])
from indextts.utils.front import TextNormalizer
for system in ("Linux", "Darwin"):  # WeTextProcessing branch, then the wetext branch
    real = platform.system
    platform.system = lambda: system
    try:
        tn = TextNormalizer()
        tn.load()
    finally:
        platform.system = real
    print(f"  {module.__name__} {system}: {tn.normalize('2024年3月5日 花了12.5元')} | "
          f"{tn.normalize('It costs $12.50 on Jan 5th.')}", file=sys.stderr)
EOF
    )
}
check "$V2_DIR" indextts.infer_v2
check "$V25_DIR" indextts.infer_v2_5

"$VENV/bin/python" - <<'EOF' >&2
import importlib.metadata as md, sys
names = ["torch", "torchaudio", "transformers", "librosa", "numpy", "soxr", "sentencepiece", "wetext",
         "WeTextProcessing", "pynini"]
print("[oracle] python", sys.version.split()[0], " ".join(f"{n}=={md.version(n)}" for n in names))
EOF
printf '%s\n%s\n' "$V2_DIR" "$V25_DIR" > "$VENV/READY.tmp"
mv "$VENV/READY.tmp" "$VENV/READY"
say "ready: $VENV (checkouts listed in $VENV/READY)"
