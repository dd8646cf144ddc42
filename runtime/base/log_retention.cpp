#include "runtime/base/log_retention.h"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <signal.h>

namespace moreh::runtime {
namespace {

// The pid of a default-named run file ("moreh-123.log", "moreh-123.events.jsonl"), else -1.
int pid_of(const std::string& name) {
  constexpr std::string_view kPrefix = "moreh-";
  if (name.rfind(kPrefix, 0) != 0) return -1;
  size_t i = kPrefix.size(), digits = 0;
  long pid = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && digits < 9) pid = pid * 10 + (name[i++] - '0'), ++digits;
  if (digits == 0) return -1;
  const std::string rest = name.substr(i);
  return rest == ".log" || rest == ".events.jsonl" ? static_cast<int>(pid) : -1;
}

bool alive(int pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace

std::vector<std::string> prune_old_runs(const std::string& dir, uint64_t keep, int own_pid) {
  std::vector<std::string> removed;
  if (keep == 0) return removed;
  namespace fs = std::filesystem;
  struct RunFiles {
    fs::file_time_type newest = fs::file_time_type::min();
    std::vector<fs::path> files;
  };
  std::map<int, RunFiles> runs;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const int pid = pid_of(it->path().filename().string());
    if (pid < 0 || !it->is_regular_file(ec)) continue;
    RunFiles& r = runs[pid];
    r.files.push_back(it->path());
    const auto t = fs::last_write_time(it->path(), ec);
    if (!ec) r.newest = std::max(r.newest, t);
  }
  std::vector<std::pair<fs::file_time_type, int>> order;
  for (const auto& [pid, r] : runs) order.emplace_back(r.newest, pid);
  std::sort(order.begin(), order.end(), std::greater<>());
  for (size_t k = 0; k < order.size(); ++k) {
    const int pid = order[k].second;
    if (k < keep || pid == own_pid || alive(pid)) continue;
    for (const auto& f : runs[pid].files)
      if (fs::remove(f, ec)) removed.push_back(f.string());
  }
  return removed;
}

}  // namespace moreh::runtime
