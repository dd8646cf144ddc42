#!/usr/bin/env bash
# Builds and checks moreh on the lent GPU machine in one call: run from the repo root there, with `.debs`
# carried (tools/gpu-debs.sh downloads it here). The machine has PyTorch (CUDA), nvcc, CMake and ninja
# but no network and none of moreh's C++ dependencies.
#
#   tools/gpu-check.sh [--local] [PHASE...]
#
# Phases (default: all, in this order):
#   env        what the machine has: GPU, driver, nvcc, cmake, gcc, glibc, python3, torch, Python.h
#   unpack     `dpkg -x` every .debs/*.deb into build-gpu/prefix (inside the repo, never into /; not
#              into .debs itself, which would make the carried folder 170 MB if unpacked here)
#   build      CMake + ninja against that prefix and python3's torch, -DMOREH_WITH_CUDA=ON, all cores.
#              Probes first: if Debian's libspdlog/libfmt do not load there, header-only spdlog/fmt
#              (package shims in build-gpu/shim); if libgtest.a does not link, GoogleTest is built from
#              the googletest package's sources.
#   install    torch_moreh for python3: pip install --no-build-isolation --no-deps --no-index -e .
#              (entry point "torch.backends" = autoload, console scripts); if pip fails, a dist-info
#              with the entry point in build-gpu/pyshim on PYTHONPATH. Checks that `import torch`
#              loads this checkout's torch_moreh. (--local: only the shim, the machine's global
#              install is left alone.)
#   ctest      the GoogleTest binary (all suites, one process)
#   pytest     the foundation training suites, MOREH_NUM_DEVICES=1      (alias `tests` = ctest pytest dp)
#   dp         tests/python/test_data_parallel.py, MOREH_NUM_DEVICES=2 (its cases start their own
#              1/2/4-device workers)
#   mp         model parallelism on logical devices of the GPU: tests/python/test_pipeline_parallel.py and
#              test_sharded_optimizer.py, the cases on 2 and 4 devices (1F1B, GPipe, rings, the deferred
#              loss division, distribute_param). Not in `all`: name it (`... install mp`).
#   bench      bench/bench_gpu_gpt2.py: GPT-2 small, native CUDA eager vs moreh, fp32 and bf16 (with and
#              without fusion; 2 more steps each under torch.profiler: GPU busy time, kernels, syncs)
#
# On the GPU machine MOREH_DEVICE_KIND=cuda is exported unless set (moreh's logical devices on the GPU).
# --local (alias --dry-run): for a CPU-only dev machine: the same phases, but -DMOREH_WITH_CUDA=AUTO (as
# tools/setup.sh), no pip install, host devices (MOREH_DEVICE_KIND unset), the bench with --tiny
# --baseline-device cpu, budget and timeouts x10. Uses the same build folder (build-gpu/, ignored), so a
# second run only rebuilds what changed.
#
# Results go to $OUT if set, else ./gpu-check-out: summary.txt, summary.json (status and wall seconds per
# phase), all.log (everything printed, appended as it runs), logs.tar.gz (one log per phase, CMake cache,
# JUnit XML, moreh logs; rewritten after each phase), bench.json. That is 5 files: the device tool brings
# back at most 8. Every phase runs even after one fails; exit status 1 if any failed or timed out.
#
# Time: each phase has a timeout, and all phases together stay inside GPU_CHECK_BUDGET seconds (default
# 540), so the whole call ends well inside the device tool's 600 s limit; a phase's timeout also keeps
# back a few seconds for each selected phase after it (RESERVE), so a slow one cannot starve the bench.
# A timed-out phase gets SIGINT first: pytest prints the test it was stuck in, python its traceback.
# Override a phase's timeout with e.g. GPU_CHECK_TIMEOUT_BUILD=300. Other knobs: PYTEST_ARGS (extra
# pytest arguments), BENCH_ARGS (replaces the bench's arguments), MOREH_GPU_HEADER_ONLY /
# MOREH_GPU_GTEST_FROM_SOURCE = auto|0|1, MOREH_DEVICE_KIND (default cuda there).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SELF="$ROOT/tools/gpu-check.sh"
export PYTHONUNBUFFERED=1
export ROOT

# ---------------------------------------------------------------------------------------------------
# Phase bodies. Each runs in its own bash (`gpu-check.sh __phase NAME`) under `timeout`.
BUILD=${GPU_CHECK_BUILD_DIR:-$ROOT/build-gpu}
PREFIX=$BUILD/prefix
MULTIARCH_LIB=$PREFIX/usr/lib/x86_64-linux-gnu
CMAKE_BUILD=$BUILD/moreh
export BUILD PREFIX MULTIARCH_LIB CMAKE_BUILD
CXX_BIN=${CXX:-$(command -v c++ || command -v g++ || echo c++)}   # for the probes (CMake finds its own)

# The foundation training suites (one logical device): training and AMP against CPU eager, everyday
# features, lazy recording, plan cache, checkpoints, device module/autoload, data loading, out-of-memory,
# the example script, Hugging Face models, RNNs, fallbacks, step analysis. Not here: test_opinfo (minutes
# of CPU-kernel comparisons), test_flavors / test_moreh_smi / test_logging (host-side tools).
PYTEST_SUITES=${PYTEST_SUITES:-"test_cuda_device.py test_attention.py test_fusion.py test_training.py test_amp.py test_everyday.py
  test_lazy_recording.py test_graph_cache.py test_checkpoint.py test_device_module.py test_data_loading.py
  test_out_of_memory.py test_example.py test_hf_models.py test_rnn.py test_fallbacks.py test_step_analysis.py"}

log() { echo "[gpu-check $(date +%H:%M:%S)] $*"; }

python_env() {
  # This checkout's torch_moreh first on the path; the entry point from the pip install, else the shim.
  export PYTHONPATH="$ROOT/backend${PYTHONPATH:+:$PYTHONPATH}"
  if [ -d "$BUILD/pyshim" ]; then export PYTHONPATH="$PYTHONPATH:$BUILD/pyshim"; fi
  export LD_LIBRARY_PATH="$MULTIARCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if [ "$LOCAL" = 0 ]; then export MOREH_DEVICE_KIND=${MOREH_DEVICE_KIND:-cuda}; fi
}

phase_env() {
  set +e
  echo "== uname: $(uname -a)"
  grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release
  echo "== glibc: $(ldd --version 2>&1 | head -1)"
  echo "== nproc: $(nproc)"; free -g | head -2
  echo "== disk:"; df -h "$ROOT" | tail -1
  echo "== nvidia-smi:"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1
  else echo "(no nvidia-smi)"; fi
  echo "== nvcc: $(command -v nvcc || echo none)"; nvcc --version 2>&1 | tail -2
  ls -d /usr/local/cuda* 2>/dev/null
  echo "== cmake: $(cmake --version 2>&1 | head -1) at $(command -v cmake)"
  echo "== ninja: $(ninja --version 2>&1) at $(command -v ninja)"
  echo "== c++: $(c++ --version 2>&1 | head -1)"
  echo "== dpkg: $(command -v dpkg || echo none), ar: $(command -v ar || echo none)"
  echo "== python3: $(command -v python3) $(python3 --version 2>&1)"
  TORCH_DEVICE_BACKEND_AUTOLOAD=0 python3 - <<'PY'
import sys, sysconfig, os
inc = sysconfig.get_paths()["include"]
print("Python.h:", os.path.exists(os.path.join(inc, "Python.h")), inc)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", "SMs", p.multi_processor_count)
    print("torch cmake:", torch.utils.cmake_prefix_path)
except Exception as e:  # noqa: BLE001
    print("torch import failed:", e)
for m in ("pytest", "pytest_timeout", "xdist", "transformers", "numpy", "expecttest", "hypothesis", "setuptools", "wheel"):
    try:
        mod = __import__(m)
        print(f"  {m} {getattr(mod, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001
        print(f"  {m} MISSING ({type(e).__name__})")
PY
  echo "== debs:"; ls -l "$ROOT"/.debs/*.deb 2>&1 | awk '{print "  " $5, $NF}'
  return 0
}

phase_unpack() {
  shopt -s nullglob
  local debs=("$ROOT"/.debs/*.deb)
  if [ ${#debs[@]} -eq 0 ]; then echo "no .debs/*.deb: run tools/gpu-debs.sh here and carry .debs"; return 1; fi
  local stamp; stamp=$(ls -l "${debs[@]}" | md5sum | cut -c1-32)
  if [ -f "$PREFIX/.stamp" ] && [ "$(cat "$PREFIX/.stamp")" = "$stamp" ]; then
    echo "prefix $PREFIX is up to date"; return 0
  fi
  rm -rf "$PREFIX"; mkdir -p "$PREFIX"
  for f in "${debs[@]}"; do
    echo "unpack $(basename "$f")"
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" "$PREFIX" || return 1
    else   # a .deb is an ar archive holding data.tar.{xz,zst,gz}
      local tmp; tmp=$(mktemp -d)
      (cd "$tmp" && ar x "$f") || return 1
      tar -xf "$tmp"/data.tar.* -C "$PREFIX" || return 1
      rm -rf "$tmp"
    fi
  done
  echo "$stamp" >"$PREFIX/.stamp"
  du -sh "$PREFIX"
  ls "$MULTIARCH_LIB/cmake"
}

# Does Debian's compiled spdlog/fmt load here? Prints OK and returns 0 if so.
probe_spdlog_shared() {
  local d=$BUILD/probe; mkdir -p "$d"
  cat >"$d/spdlog_probe.cpp" <<'EOF'
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <vector>
int main() {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>("probe.log", true);
  spdlog::logger logger("probe", sink);
  logger.info("{}", fmt::format("{}", std::vector<int>{1, 2, 3}));
  return fmt::format("{}", 42) == "42" ? 0 : 1;
}
EOF
  (cd "$d" && $CXX_BIN -std=c++20 -DSPDLOG_SHARED_LIB -DSPDLOG_COMPILED_LIB -DSPDLOG_FMT_EXTERNAL -DFMT_SHARED \
     -isystem "$PREFIX/usr/include" spdlog_probe.cpp -o spdlog_probe -L"$MULTIARCH_LIB" -lspdlog -lfmt -pthread \
     && LD_LIBRARY_PATH="$MULTIARCH_LIB" ./spdlog_probe && grep -q "\[1, 2, 3\]" probe.log)
}

probe_gtest_static() {
  local d=$BUILD/probe; mkdir -p "$d"
  cat >"$d/gtest_probe.cpp" <<'EOF'
#include <gtest/gtest.h>
TEST(Probe, Links) { EXPECT_EQ(1 + 1, 2); }
EOF
  (cd "$d" && $CXX_BIN -std=c++20 -isystem "$PREFIX/usr/include" gtest_probe.cpp -o gtest_probe \
     "$MULTIARCH_LIB/libgtest_main.a" "$MULTIARCH_LIB/libgtest.a" -pthread && ./gtest_probe --gtest_brief=1)
}

write_header_only_shims() {
  # fmt::fmt and spdlog::spdlog as header-only INTERFACE targets over the same Debian headers.
  mkdir -p "$BUILD/shim/fmt" "$BUILD/shim/spdlog"
  cat >"$BUILD/shim/fmt/fmt-config.cmake" <<EOF
# gpu-check.sh: header-only fmt (Debian's libfmt did not load on this machine).
if(NOT TARGET fmt::fmt)
  add_library(fmt::fmt INTERFACE IMPORTED)
  set_target_properties(fmt::fmt PROPERTIES
    INTERFACE_COMPILE_DEFINITIONS "FMT_HEADER_ONLY=1"
    INTERFACE_INCLUDE_DIRECTORIES "$PREFIX/usr/include")
endif()
set(fmt_FOUND TRUE)
EOF
  cat >"$BUILD/shim/spdlog/spdlogConfig.cmake" <<EOF
# gpu-check.sh: header-only spdlog over external header-only fmt.
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_dependency(fmt)
if(NOT TARGET spdlog::spdlog)
  add_library(spdlog::spdlog INTERFACE IMPORTED)
  set_target_properties(spdlog::spdlog PROPERTIES
    INTERFACE_COMPILE_DEFINITIONS "SPDLOG_HEADER_ONLY;SPDLOG_FMT_EXTERNAL"
    INTERFACE_INCLUDE_DIRECTORIES "$PREFIX/usr/include"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;fmt::fmt")
endif()
set(spdlog_FOUND TRUE)
EOF
}

phase_build() {
  [ -f "$PREFIX/.stamp" ] || { echo "prefix missing: unpacking first"; phase_unpack || return 1; }
  local cmake_dir=$MULTIARCH_LIB/cmake
  local spdlog_dir=$cmake_dir/spdlog fmt_dir=$cmake_dir/fmt gtest_dir=$cmake_dir/GTest
  local boost_dir; boost_dir=$(ls -d "$cmake_dir"/Boost-* | head -1)

  local header_only=${MOREH_GPU_HEADER_ONLY:-auto}
  if [ "$header_only" = auto ]; then
    if probe_spdlog_shared; then header_only=0; echo "probe: Debian's libspdlog/libfmt load here: using them"
    else header_only=1; echo "probe: Debian's libspdlog/libfmt do NOT load here: header-only spdlog/fmt"; fi
  fi
  if [ "$header_only" = 1 ]; then
    write_header_only_shims; spdlog_dir=$BUILD/shim/spdlog; fmt_dir=$BUILD/shim/fmt
  fi

  local gtest_src=${MOREH_GPU_GTEST_FROM_SOURCE:-auto}
  if [ "$gtest_src" = auto ]; then
    if probe_gtest_static; then gtest_src=0; echo "probe: Debian's libgtest.a links here: using it"
    else gtest_src=1; echo "probe: Debian's libgtest.a does NOT link here: building GoogleTest from source"; fi
  fi
  if [ "$gtest_src" = 1 ]; then
    cmake -S "$PREFIX/usr/src/googletest" -B "$BUILD/gtest-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON -DCMAKE_INSTALL_PREFIX="$BUILD/gtest-prefix" -DCMAKE_INSTALL_LIBDIR=lib \
      -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_POLICY_VERSION_MINIMUM=3.5 || return 1
    cmake --build "$BUILD/gtest-build" --target install -j "$(nproc)" || return 1
    gtest_dir=$BUILD/gtest-prefix/lib/cmake/GTest
  fi

  local cuda_args=()
  if [ "$LOCAL" = 1 ]; then
    cuda_args=(-DMOREH_WITH_CUDA=AUTO)   # as tools/setup.sh: ON where the CUDA headers are (compiles cuda_driver.cpp)
  else
    local nvcc; nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
    local cuda_root=/usr/local/cuda
    [ -n "$nvcc" ] && cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
    cuda_args=(-DMOREH_WITH_CUDA=ON -DCUDAToolkit_ROOT="$cuda_root" -DCMAKE_CUDA_ARCHITECTURES=90)
    [ -n "$nvcc" ] && cuda_args+=(-DCMAKE_CUDA_COMPILER="$nvcc")
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  fi

  local py; py=$(command -v python3)
  echo "configure: spdlog=$spdlog_dir fmt=$fmt_dir boost=$boost_dir gtest=$gtest_dir ${cuda_args[*]}"
  cmake -S "$ROOT" -B "$CMAKE_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$PREFIX/usr;$cmake_dir" \
    -Dspdlog_DIR="$spdlog_dir" -Dfmt_DIR="$fmt_dir" -DBoost_DIR="$boost_dir" -DGTest_DIR="$gtest_dir" \
    -DPython3_EXECUTABLE="$py" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 "${cuda_args[@]}" || return 1
  grep -E '^(spdlog_DIR|fmt_DIR|Boost_DIR|GTest_DIR|Torch_DIR|MOREH_WITH_CUDA|CUDAToolkit_ROOT|Python3_EXECUTABLE|CMAKE_CXX_COMPILER):' \
    "$CMAKE_BUILD/CMakeCache.txt"
  cmake --build "$CMAKE_BUILD" -j "$(nproc)" || return 1
  echo "== built:"; ls -l "$ROOT"/backend/torch_moreh/_C*.so "$ROOT"/backend/moreh_tools/_native*.so "$CMAKE_BUILD"/tests/cpp/moreh_cpp_tests
  echo "== ldd _C (libraries from the prefix must resolve there):"
  LD_LIBRARY_PATH="$MULTIARCH_LIB" ldd "$ROOT"/backend/torch_moreh/_C*.so | grep -E "spdlog|fmt|not found" || true
  if LD_LIBRARY_PATH="$MULTIARCH_LIB" ldd "$ROOT"/backend/torch_moreh/_C*.so | grep -q "not found"; then
    echo "unresolved libraries"; return 1
  fi
}

check_autoload() {
  # From another directory, so that only the entry point (not the cwd) can find torch_moreh.
  (cd /tmp && MOREH_CONFIG_DIR=$BUILD/moreh-config python3 - <<'PY'
import os, torch
import torch_moreh
where = os.path.dirname(torch_moreh.__file__)
print("torch_moreh from", where)
assert where == os.path.join(os.environ["ROOT"], "backend", "torch_moreh"), "not this checkout's torch_moreh"
x = torch.arange(6.0, device="moreh").reshape(2, 3)
print("moreh ok:", (x * 2).sum().item(), "physical devices", torch.moreh.physical_devices())
PY
  )
}

write_pyshim() {
  # What `pip install -e .` gives the autoload: a dist-info whose entry point names torch_moreh:_autoload.
  local d=$BUILD/pyshim/torch_moreh-0.1.0.dist-info
  mkdir -p "$d"
  printf 'Metadata-Version: 2.1\nName: torch_moreh\nVersion: 0.1.0\n' >"$d/METADATA"
  printf '[torch.backends]\ntorch_moreh = torch_moreh:_autoload\n' >"$d/entry_points.txt"
}

phase_install() {
  ls "$ROOT"/backend/torch_moreh/_C*.so >/dev/null 2>&1 || { echo "torch_moreh/_C*.so is not built (phase build)"; return 1; }
  if [ "$LOCAL" = 1 ]; then
    echo "--local: no pip install (this machine's global torch_moreh stays as it is); entry-point shim on PYTHONPATH"
    write_pyshim
  else
    rm -rf "$BUILD/pyshim"
    if ! python3 -m pip install --no-build-isolation --no-deps --no-index -e "$ROOT"; then
      echo "pip install -e failed: entry-point shim on PYTHONPATH instead (no console scripts)"
      write_pyshim
    fi
  fi
  python_env
  echo "PYTHONPATH=$PYTHONPATH"
  command -v moreh-smi || echo "(no moreh-smi on PATH)"
  check_autoload
}

phase_ctest() {
  python_env
  # The real NCCL for NcclGpuTest (one rank per GPU): pip's nvidia-nccl beside torch, unless set.
  if [ -z "${MOREH_NCCL_LIBRARY:-}" ]; then
    local nccl
    nccl=$(TORCH_DEVICE_BACKEND_AUTOLOAD=0 python3 -c "import nvidia.nccl as n, os; print(os.path.join(list(n.__path__)[0], 'lib', 'libnccl.so.2'))" 2>/dev/null || true)
    if [ -f "$nccl" ]; then export MOREH_NCCL_LIBRARY=$nccl; echo "MOREH_NCCL_LIBRARY=$nccl"; fi
  fi
  local bin=$CMAKE_BUILD/tests/cpp/moreh_cpp_tests
  [ -x "$bin" ] || { echo "$bin is not built (phase build)"; return 1; }
  (cd "$CMAKE_BUILD/tests/cpp" && "$bin" --gtest_brief=1 --gtest_output="xml:$LOGDIR/gtest.xml")
}

pytest_timeout_args() {
  python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout=${1}"
}

phase_pytest() {
  python_env
  export MOREH_NUM_DEVICES=1
  local files=(); for f in $PYTEST_SUITES; do files+=("tests/python/$f"); done
  # shellcheck disable=SC2046,SC2086
  python3 -m pytest "${files[@]}" -v -p no:cacheprovider -rfE --durations=15 $(pytest_timeout_args 120) \
    --junitxml="$LOGDIR/pytest.xml" ${PYTEST_ARGS:-}
}

phase_dp() {
  python_env
  export MOREH_TEST_FAKE_NCCL=$CMAKE_BUILD/tests/cpp/libmoreh_fake_nccl.so
  export MOREH_NUM_DEVICES=2
  # shellcheck disable=SC2046,SC2086
  python3 -m pytest tests/python/test_data_parallel.py -v -p no:cacheprovider -rfE --durations=10 \
    $(pytest_timeout_args 120) --junitxml="$LOGDIR/pytest-dp.xml" ${PYTEST_ARGS:-}
}

phase_mp() {
  python_env
  export MOREH_TEST_FAKE_NCCL=$CMAKE_BUILD/tests/cpp/libmoreh_fake_nccl.so
  # shellcheck disable=SC2046,SC2086
  python3 -m pytest tests/python/test_pipeline_parallel.py tests/python/test_sharded_optimizer.py -v \
    -p no:cacheprovider -rfE --durations=10 -k "not -8- and not dp4-pp2 and not dp2-pp4" \
    $(pytest_timeout_args 120) --junitxml="$LOGDIR/pytest-mp.xml" ${PYTEST_ARGS:-}
}

phase_bench() {
  python_env
  export MOREH_CONFIG_DIR=$BUILD/moreh-config; mkdir -p "$MOREH_CONFIG_DIR"
  export MOREH_LOG_FILE=$LOGDIR/moreh-bench.log
  local args
  if [ -n "${BENCH_ARGS:-}" ]; then args=$BENCH_ARGS
  elif [ "$LOCAL" = 1 ]; then args="--tiny --baseline-device cpu --steps 3 --warmup 1"
  else args="--dtype both --batch 8 --steps 20 --warmup 3 --moreh-budget-s 60 --moreh-unfused --profile 2"
  fi
  # shellcheck disable=SC2086
  python3 bench/bench_gpu_gpt2.py $args --json "$RESULTS/bench.json"
}

if [ "${1:-}" = __phase ]; then
  LOCAL=$2; LOGDIR=$3; RESULTS=$4; export LOCAL LOGDIR RESULTS
  "phase_$5"
  exit $?
fi

# ---------------------------------------------------------------------------------------------------
# Driver.
LOCAL=0
PHASES=()
ALL="env unpack build install ctest pytest dp bench"
for a in "$@"; do
  case $a in
    --local | --dry-run) LOCAL=1 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    all) PHASES+=($ALL) ;;
    tests) PHASES+=(ctest pytest dp) ;;
    env | unpack | build | install | ctest | pytest | dp | mp | bench) PHASES+=("$a") ;;
    *) echo "unknown argument '$a' (phases: $ALL, mp; --local)" >&2; exit 2 ;;
  esac
done
[ ${#PHASES[@]} -eq 0 ] && PHASES=($ALL)

RESULTS=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$RESULTS" "$BUILD"
LOGDIR=$BUILD/check-logs
rm -rf "$LOGDIR"; mkdir -p "$LOGDIR"
ALL_LOG=$RESULTS/all.log
: >"$ALL_LOG"
rm -f "$RESULTS/bench.json"

declare -A TIMEOUT=([env]=30 [unpack]=60 [build]=330 [install]=60 [ctest]=90 [pytest]=200 [dp]=150 [mp]=240 [bench]=200)
# Seconds kept back for each phase still to come, so that one slow phase cannot starve the later ones.
declare -A RESERVE=([env]=5 [unpack]=5 [build]=60 [install]=10 [ctest]=15 [pytest]=45 [dp]=45 [mp]=45 [bench]=100)
if [ "$LOCAL" = 1 ]; then
  # A 2-core dev machine builds and tests ~10x slower than the 16-core GPU machine.
  BUDGET=${GPU_CHECK_BUDGET:-7200}
  for k in "${!TIMEOUT[@]}"; do TIMEOUT[$k]=$((TIMEOUT[$k] * 10)); done
else
  BUDGET=${GPU_CHECK_BUDGET:-540}
fi
START=$(date +%s)
declare -a NAMES STATUS SECS RCS
mode=gpu; [ "$LOCAL" = 1 ] && mode=local
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)

write_summary() {
  local ok=true i
  {
    echo "gpu-check: mode=$mode commit=$commit (modified tracked files: $dirty) host=$(hostname) started=$(date -d @"$START" '+%F %T')"
    printf '%-8s %-8s %5s %8s\n' phase status rc seconds
    for i in "${!NAMES[@]}"; do
      printf '%-8s %-8s %5s %8s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${RCS[$i]}" "${SECS[$i]}"
      [ "${STATUS[$i]}" = pass ] || ok=false
    done
    echo "total: $(($(date +%s) - START)) s, $([ $ok = true ] && echo 'all passed' || echo 'FAILURES')"
  } >"$RESULTS/summary.txt"
  {
    printf '{"mode": "%s", "commit": "%s", "modified_tracked_files": %s, "started": %s, "total_seconds": %s, "ok": %s, "phases": [' \
      "$mode" "$commit" "$dirty" "$START" "$(($(date +%s) - START))" "$ok"
    for i in "${!NAMES[@]}"; do
      [ "$i" -gt 0 ] && printf ', '
      printf '{"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "log": "logs.tar.gz:%s.log"}' \
        "${NAMES[$i]}" "${STATUS[$i]}" "${RCS[$i]}" "${SECS[$i]}" "${NAMES[$i]}"
    done
    printf ']}\n'
  } >"$RESULTS/summary.json"
  [ -f "$CMAKE_BUILD/CMakeCache.txt" ] && cp "$CMAKE_BUILD/CMakeCache.txt" "$LOGDIR/"
  tar -czf "$RESULTS/logs.tar.gz" -C "$LOGDIR" . 2>/dev/null
  $ok
}

log "mode=$mode phases: ${PHASES[*]} results: $RESULTS budget ${BUDGET}s"
for idx in "${!PHASES[@]}"; do
  p=${PHASES[$idx]}
  used=$(($(date +%s) - START))
  later=0
  for q in "${PHASES[@]:$((idx + 1))}"; do later=$((later + RESERVE[$q])); done
  left=$((BUDGET - used - 10 - later))
  t=${TIMEOUT[$p]}
  override_var="GPU_CHECK_TIMEOUT_${p^^}"
  [ -n "${!override_var:-}" ] && t=${!override_var}
  [ "$t" -gt "$left" ] && t=$left
  NAMES+=("$p")
  if [ "$t" -le 5 ]; then
    log "phase $p: skipped, the budget of ${BUDGET}s is spent"
    STATUS+=(skipped); RCS+=(-1); SECS+=(0)
    write_summary; continue
  fi
  log "phase $p: start (timeout ${t}s)"
  t0=$(date +%s)
  # SIGINT first: pytest then prints where it was stuck and its summary, python the traceback.
  timeout -s INT -k 15 "$t" bash "$SELF" __phase "$LOCAL" "$LOGDIR" "$RESULTS" "$p" 2>&1 \
    | tee "$LOGDIR/$p.log" | tee -a "$ALL_LOG"
  rc=${PIPESTATUS[0]}
  dt=$(($(date +%s) - t0))
  case $rc in
    0) st=pass ;;
    124 | 137) st=TIMEOUT ;;
    *) st=FAIL ;;
  esac
  STATUS+=("$st"); RCS+=("$rc"); SECS+=("$dt")
  log "phase $p: $st (rc $rc, ${dt}s)" | tee -a "$ALL_LOG"
  write_summary
done

echo
for i in "${!NAMES[@]}"; do
  if [ "${STATUS[$i]}" != pass ] && [ "${STATUS[$i]}" != skipped ]; then
    echo "----- last 40 lines of ${NAMES[$i]} (${STATUS[$i]}) -----"
    tail -n 40 "$LOGDIR/${NAMES[$i]}.log"
    echo
  fi
done
echo "----- summary ($RESULTS) -----"
cat "$RESULTS/summary.txt"
[ -f "$RESULTS/bench.json" ] && echo "bench: $RESULTS/bench.json"
write_summary
