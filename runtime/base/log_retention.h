// Old runs' logs go: the default-named files (moreh-<pid>.log and its events) beyond the newest few runs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moreh::runtime {

// Deletes, in `dir`, the files of the runs (moreh-<pid>.log, moreh-<pid>.events.jsonl) older than the newest
// `keep` runs (by their files' latest change), never those of `own_pid` nor of a process still alive; keep 0:
// none. Returns the paths deleted. Files it cannot delete or read are left alone.
std::vector<std::string> prune_old_runs(const std::string& dir, uint64_t keep, int own_pid);

}  // namespace moreh::runtime
