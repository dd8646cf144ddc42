#!/usr/bin/env bash
# Downloads (here, on the Debian 12 dev machine) the Debian packages that the lent GPU machine needs to
# build moreh, into .debs/ at the repo root. The GPU machine has no network and none of our C++
# dependencies; tools/gpu-check.sh there unpacks these .debs with `dpkg -x` into .debs/root (never into /)
# and builds against that prefix. Carry `.debs` with the `run` call.
#
# What and why (bookworm versions; 10.4 MiB of .debs in all, libboost1.74-dev is 9.1 MiB of it):
#   libspdlog-dev + libspdlog1.10, libfmt-dev + libfmt9
#       The compiled libraries, as on this machine: the build is then the same as the one CI runs. They need
#       glibc >= 2.34 and libstdc++ >= 12, which Ubuntu 24.04 (glibc 2.39, gcc 13) has. gpu-check.sh first
#       compiles and runs a probe program against them; if it does not load there, it switches to
#       header-only spdlog/fmt (SPDLOG_HEADER_ONLY / FMT_HEADER_ONLY, from the same headers) through small
#       CMake package shims, with no change to the project's CMakeLists.
#   libboost1.74-dev
#       Headers only (moreh uses boost/container/small_vector.hpp) plus the Boost::headers CMake config.
#       The libboost-dev meta package has no files and is not needed.
#   libgtest-dev + googletest
#       libgtest-dev has the static libgtest.a/libgtest_main.a (gcc 12 objects; they link with gcc 13) and
#       the GTest CMake config. googletest has the sources (/usr/src/googletest): if the gtest probe does
#       not link there, gpu-check.sh builds GoogleTest from them (seconds on 16 cores) and uses that.
#   Not downloaded: catch2 (a Depends of libspdlog-dev that the build does not use), cmake/ninja/g++ (the
#   GPU machine has its own), libstdc++-12-dev (Boost's Depends; the machine's compiler has its own).
#
# Idempotent: a package whose .deb (the candidate version) is already in .debs/ is not downloaded again,
# and .debs/ is added to the git excludes (of the common git dir: worktrees share it) only once.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libboost1.74-dev libgtest-dev googletest"

common=$(git rev-parse --git-common-dir)
mkdir -p "$common/info"
touch "$common/info/exclude"
grep -qxF '/.debs/' "$common/info/exclude" || { echo '/.debs/' >>"$common/info/exclude"; echo "[gpu-debs] added /.debs/ to $common/info/exclude"; }

mkdir -p .debs
cd .debs
for p in $PACKAGES; do
  version=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    echo "[gpu-debs] no candidate for $p (run apt-get update?)" >&2
    exit 1
  fi
  file_version=${version//:/%3a}   # apt-get download writes an epoch's ':' as %3a
  if ls "${p}_${file_version}_"*.deb >/dev/null 2>&1; then
    echo "[gpu-debs] have $p $version"
    continue
  fi
  rm -f "${p}_"*.deb   # another version of it
  echo "[gpu-debs] apt-get download $p=$version"
  apt-get download -q "$p=$version" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true
  ls "${p}_${file_version}_"*.deb >/dev/null 2>&1 || { echo "[gpu-debs] download of $p failed" >&2; exit 1; }
done

cd ..
echo "[gpu-debs] .debs/:"
ls -l .debs/*.deb | awk '{printf "  %9d  %s\n", $5, $9}'
total=$(cat .debs/*.deb | wc -c)
echo "[gpu-debs] total $(awk -v b="$total" 'BEGIN {printf "%.1f MiB", b / 1048576}') ($total bytes); carry '.debs' (the carried tree's limit is 64 MiB)"
if git check-ignore -q .debs/x.deb; then echo "[gpu-debs] .debs/ is ignored by git"; else echo "[gpu-debs] WARNING: .debs/ is not ignored" >&2; fi
