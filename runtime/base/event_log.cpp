#include "runtime/base/event_log.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>

namespace moreh::runtime {
namespace {

std::mutex g_mutex;
std::FILE* g_file = nullptr;
std::string g_path;
std::string g_facts;
bool g_started = false;

}  // namespace

std::string events_path_for(const std::string& log_file) {
  constexpr std::string_view kLog = ".log";
  if (log_file.size() > kLog.size() && log_file.compare(log_file.size() - kLog.size(), kLog.size(), kLog) == 0)
    return log_file.substr(0, log_file.size() - kLog.size()) + ".events.jsonl";
  return log_file + ".events.jsonl";
}

void init_event_log(const Config& config) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_started) return;
    g_started = true;
  }
  if (config.log_events && !config.log_file.empty())
    open_event_log(events_path_for(config.log_file), config.log_file_fresh);
}

bool open_event_log(const std::string& path, bool fresh) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::FILE* f = std::fopen(path.c_str(), fresh ? "w" : "a");
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_file) std::fclose(g_file);
  g_file = f;
  g_path = f ? path : std::string();
  return f != nullptr;
}

void close_event_log() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_file) std::fclose(g_file);
  g_file = nullptr;
  g_path.clear();
}

const std::string& event_log_path() { return g_path; }

bool events_enabled() { return g_file != nullptr; }

void emit_event(std::string_view type, std::string_view fields) {
  if (!g_file) return;
  const double t =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string line = fmt::format("{{\"t\": {:.6f}, \"event\": {}", t, json_string(type));
  if (!fields.empty()) line += fmt::format(", {}", fields);
  line += "}\n";
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_file) return;
  std::fwrite(line.data(), 1, line.size(), g_file);
  std::fflush(g_file);
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  out.reserve(s.size() + 2);
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<int>(c));
    else out += c;
  }
  return out + "\"";
}

void add_run_fact(std::string_view key, std::string_view json_value) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_facts.empty()) g_facts += ", ";
  g_facts += fmt::format("{}: {}", json_string(key), json_value);
}

const std::string& run_facts() { return g_facts; }

}  // namespace moreh::runtime
