#!/usr/bin/env bash
# The GPU check of issue 12: build the CUDA cm against the machine's own torch, run the tests, time
# cm against diffusers (eager and torch.compile) on the same random weights, and write a report.
# The GPU machine it is made for has no network, so everything it lacks is fetched beforehand.
# shellcheck disable=SC2317  # the phase functions are called through a child bash (export -f)
set -uo pipefail  # no -e: a failing phase is recorded and the script goes on where that makes sense
cd "$(dirname "$0")/.." || exit 1
root=$PWD
gpu=$root/.gpu

usage() {
  cat <<EOF
usage: bash scripts/gpu_check.sh [--prepare]

  --prepare  (on a Debian 12 machine with network) download what the GPU machine lacks into .gpu/:
             Debian packages (.gpu/deb), Python wheels for Python 3.12 (.gpu/whl), the golden
             vectors the tests read (.gpu/shared); prints the size of what will travel.
  (none)     (on the GPU machine, offline) unpack .gpu/, build build-cuda/ with
             scripts/build.sh --cuda, run ctest, time cm bench and diffusers, write the report.
             Output folder: \$OUT if set, else gpu-report/. Time budget: CM_GPU_BUDGET_S
             seconds (default 560); later phases are cut short or skipped to end inside it.
EOF
}

die() { echo "gpu_check: $*" >&2; exit 1; }

# Debian 12 packages the build needs that the GPU machine lacks: the -dev ones, and the runtime
# libraries the link and the run need (libgloo0 pulls hiredis and ibverbs; zlib1g, because
# zlib1g-dev's libz.so points into it). SLEEF and oneDNN come with LibTorch 2.x itself.
debs=(nlohmann-json3-dev libcli11-dev libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo
      zlib1g-dev zlib1g libgtest-dev libgloo-dev libgloo0 libhiredis0.14 libibverbs1 libnl-3-200
      libnl-route-3-200)
# diffusers 0.37.1 still has ConsistencyModelPipeline and CMStochasticIterativeScheduler and takes
# huggingface_hub >= 0.34, < 2 (the machine has 1.x). Its other needs (filelock, httpx, numpy,
# regex, requests, safetensors, Pillow) are there; importlib_metadata is used only before Python 3.8.
wheels=(diffusers==0.37.1)
limit_mib=60  # what travels may be 64 MiB in all; keep room for the source tree growing

prepare() {
  command -v apt-get >/dev/null || die "--prepare needs apt-get (Debian 12)"
  rm -rf "$gpu/deb" "$gpu/whl" "$gpu/shared"
  mkdir -p "$gpu/deb" "$gpu/whl"
  (cd "$gpu/deb" && apt-get download -q "${debs[@]}") || die "apt-get download failed (run apt-get update?)"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$gpu/whl" "${wheels[@]}" || die "pip download of ${wheels[*]} failed"
  # The tests read golden vectors from outside the checkout (see tests/CMakeLists.txt), which does
  # not travel: copy them (and configs/ beside them) in.
  local golden=${CM_GOLDEN_DIR:-$root/../shared/golden}
  if [ -d "$golden" ]; then
    mkdir -p "$gpu/shared"
    cp -rL "$golden" "$gpu/shared/golden" && chmod -R u+w "$gpu/shared"
    [ -d "$golden/../configs" ] && cp -rL "$golden/../configs" "$gpu/shared/configs" && chmod -R u+w "$gpu/shared"
  else
    echo "gpu_check: no golden vectors found; the tests that need them will fail there" >&2
  fi
  # What travels: tracked and untracked-not-ignored files, plus .gpu/ (carried).
  local tree gpu_bytes
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null |
         awk '{s += $1} END {print s + 0}')
  gpu_bytes=$(du -sb "$gpu" | cut -f1)
  du -sh "$gpu"/* | sed 's/^/  /'
  local total_mib=$(( (tree + gpu_bytes) / 1048576 ))
  echo "gpu_check: source tree $(( tree / 1048576 )) MiB + .gpu $(( gpu_bytes / 1048576 )) MiB" \
       "= ${total_mib} MiB of 64 MiB"
  [ "$total_mib" -le "$limit_mib" ] || die "over ${limit_mib} MiB: drop something from .gpu/"
  echo "gpu_check: ready; on the GPU machine run: bash scripts/gpu_check.sh (carry .gpu)"
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --prepare) prepare; exit ;;
  "") ;;
  *) echo "gpu_check: unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac

# ---- The GPU machine ----
out=${OUT:-$root/gpu-report}
work=${TMPDIR:-/tmp}/cm-gpu-check  # big files (model folders) stay out of $OUT, which comes back
budget=${CM_GPU_BUDGET_S:-560}
reps=${CM_GPU_REPS:-10}
start=$(date +%s)
{ mkdir -p "$out" && rm -rf "$work" && mkdir -p "$work"; } || die "cannot create $out or $work"
log=$out/gpu_check.log
phases=$work/phases.tsv
: >"$log"
: >"$phases"
prefix=$gpu/prefix
# Debian 12 packages still put libraries in three places (libgloo in usr/lib, libnl in lib/).
libdir=$prefix/usr/lib/x86_64-linux-gnu:$prefix/usr/lib:$prefix/lib/x86_64-linux-gnu
cm=$root/build-cuda/cm
export PYTHONUNBUFFERED=1 PYTHONPATH=$gpu/site${PYTHONPATH:+:$PYTHONPATH}

left() { echo $(( budget - ($(date +%s) - start) )); }
# The unpacked libraries for running cm and the tests (libgloo's own needs are found only this
# way); not exported, so Python and torch keep their own libraries.
with_libs() { LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$@"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$phases"; }
skip() { echo "=== $1: skipped ($2)" | tee -a "$log"; record "$1" "skipped ($2)" 0; }

# phase NAME SECONDS CMD...: runs CMD (at most SECONDS) with its output in the log, prints a header
# and its wall time, records its status; on failure prints the end of its output.
phase() {
  local name=$1 limit=$2; shift 2
  if [ "$limit" -lt 10 ]; then skip "$name" "out of time"; return 1; fi
  echo "=== $name (at most ${limit}s)" | tee -a "$log"
  local t0 rc secs status
  t0=$(date +%s.%N)
  # timeout runs programs, not functions: the functions below are exported to a child bash.
  timeout -k 10 "$limit" bash -c 'set -o pipefail; "$@"' "$name" "$@" >"$work/phase.out" 2>&1
  rc=$?
  secs=$(echo "$(date +%s.%N) $t0" | awk '{printf "%.1f", $1 - $2}')
  cat "$work/phase.out" >>"$log"
  case $rc in 0) status=ok ;; 124) status="timed out" ;; *) status="failed (rc $rc)" ;; esac
  # The report shows the phase's last line of output with a failure: usually the reason.
  [ $rc -eq 0 ] || status="$status: $(grep -v '^[[:space:]]*$' "$work/phase.out" | tail -n 1 |
                                     tr '\t|' '  ' | cut -c 1-160)"
  echo "=== $name: $status, ${secs}s" | tee -a "$log"
  [ $rc -eq 0 ] || tail -n 30 "$work/phase.out"
  record "$name" "$status" "$secs"
  return "$rc"
}

unpack() {
  rm -rf "$prefix" && mkdir -p "$prefix"
  for d in "$gpu"/deb/*.deb; do dpkg -x "$d" "$prefix" || return 1; done  # never into /
  # Absolute links (libz.so -> /lib/.../libz.so.1.2.13) are re-pointed into the prefix.
  find "$prefix" -type l -lname '/*' | while read -r l; do
    t=$(readlink "$l"); [ -e "$prefix$t" ] && ln -sfn "$prefix$t" "$l"; done
  ls "$prefix/usr/lib/x86_64-linux-gnu"
}
install_wheels() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$gpu/site" "$gpu"/whl/*.whl && python3 -c 'import diffusers; print("diffusers", diffusers.__version__)'
}
build() {
  local args
  # build.sh puts python3's torch first on CMAKE_PREFIX_PATH and CM_PREFIX_PATH after it.
  # -rpath-link: ld finds libgloo's own needs (hiredis, ibverbs) in the prefix, without an
  # LD_LIBRARY_PATH that would hand the compiler the prefix's libraries too.
  args=(-DCM_HUB=OFF
        "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$libdir" "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath-link,$libdir")
  [ -d "$gpu/shared/golden" ] && args+=("-DCM_GOLDEN_DIR=$gpu/shared/golden")
  echo "CM_CMAKE_ARGS=${args[*]} ${CM_CMAKE_ARGS:-}"
  CM_PREFIX_PATH="$prefix/usr" CM_CMAKE_ARGS="${args[*]} ${CM_CMAKE_ARGS:-}" \
    bash scripts/build.sh --cuda --python python3
}
machine_info() {
  { nvidia-smi; python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
      "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'; nvcc --version | tail -n 2
    with_libs "$cm" info; } >"$out/info.txt" 2>&1
  local rc=$?; cat "$out/info.txt"; return "$rc"
}
ctest_run() { with_libs ctest --test-dir build-cuda --output-on-failure --no-tests=error "$@" | tee -a "$out/ctest.log"; }
save_models() {
  with_libs "$cm" bench --save "$work/models/lsun256" -m lsun256 &&
    with_libs "$cm" bench --save "$work/models/imagenet64" -m imagenet64
}
# cm_bench NAME ARGS...: cm bench's JSON rows into $work/cm_NAME.json, kept only when they parse.
cm_bench() {
  local name=$1; shift
  with_libs "$cm" bench --device cuda --json -m "$work/models/$name" --dtype float16 --cuda-graphs both \
    -r "$reps" "$@" >"$work/cm_$name.raw" || return 1
  cat "$work/cm_$name.raw"
  python3 -c 'import json, sys; assert isinstance(json.load(open(sys.argv[1])), list)' "$work/cm_$name.raw" &&
    mv "$work/cm_$name.raw" "$work/cm_$name.json"
}
diffusers_bench() {
  local name=$1; shift
  python3 scripts/bench_diffusers.py --model "$work/models/$name" --dtype float16 --compile both \
    -r "$(( reps < 5 ? reps : 5 ))" --out "$work/diffusers_$name.json" "$@"
}
# merge OUTFILE FILES...: one JSON array from the arrays that exist; absent when none does.
merge() {
  python3 - "$@" <<'EOF'
import json, os, sys
parts = [p for p in sys.argv[2:] if os.path.exists(p)]
if parts:
    rows = [r for p in parts for r in json.load(open(p))]
    json.dump(rows, open(sys.argv[1], "w"), indent=1)
EOF
}

export root gpu prefix libdir cm work out reps
export -f with_libs unpack install_wheels build machine_info ctest_run save_models cm_bench diffusers_bench

echo "gpu_check: output in $out, budget ${budget}s, $(nproc) cores"
if ls "$gpu"/deb/*.deb >/dev/null 2>&1; then phase unpack 60 unpack
else skip unpack "no .gpu/deb: using the system's packages"; fi
if ls "$gpu"/whl/*.whl >/dev/null 2>&1; then phase wheels 120 install_wheels
else skip wheels "no .gpu/whl"; fi
built=0
phase build "$(( $(left) - 120 ))" build && [ -x "$cm" ] && built=1
if [ $built = 1 ]; then
  phase info 60 machine_info
  # The GPU tests first (they say whether the timings below are of a working program); the
  # rest of the suite, long and also run by CI, at the end with whatever time is left.
  phase ctest-gpu "$(( $(left) < 150 ? $(left) - 60 : 150 ))" ctest_run -R cuda --timeout 120
  if phase save-models 120 save_models; then
    phase cm-bench-lsun256 "$(( $(left) < 120 ? $(left) : 120 ))" cm_bench lsun256 -b 1,4,16 --timesteps 17,0
    phase cm-bench-imagenet64 "$(( $(left) < 90 ? $(left) : 90 ))" cm_bench imagenet64 -b 64 --steps 1
    # The target row (batch 4) first: if time runs out, the rows already timed are kept.
    phase diffusers-lsun256 "$(( $(left) - 110 ))" diffusers_bench lsun256 --batch 4,16,1 --timesteps 17,0
    phase diffusers-imagenet64 "$(( $(left) - 30 ))" diffusers_bench imagenet64 --batch 64 --steps 1
  else
    for p in cm-bench-lsun256 cm-bench-imagenet64 diffusers-lsun256 diffusers-imagenet64; do
      skip $p "no model folders"; done
  fi
  phase ctest-rest "$(( $(left) - 15 ))" ctest_run -E cuda -j "$(nproc)" --timeout 120
else
  for p in info ctest-gpu save-models cm-bench diffusers ctest-rest; do skip $p "no build"; done
fi

merge "$out/cm_bench.json" "$work/cm_lsun256.json" "$work/cm_imagenet64.json"
merge "$out/diffusers.json" "$work/diffusers_lsun256.json" "$work/diffusers_imagenet64.json"
echo "=== report" | tee -a "$log"
python3 scripts/gpu_report.py --cm "$out/cm_bench.json" --diffusers "$out/diffusers.json" \
  --ctest "$out/ctest.log" --info "$out/info.txt" --phases "$phases" --out-dir "$out" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
echo "gpu_check: done in $(( $(date +%s) - start ))s; report: $out/gpu_report.md"
exit "$rc"
