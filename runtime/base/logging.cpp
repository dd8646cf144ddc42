#include "runtime/base/logging.h"

#include "runtime/base/spdlog_logger.h"

#include "runtime/base/event_log.h"
#include "runtime/base/log_retention.h"

#include <unistd.h>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <filesystem>
#include <mutex>

namespace moreh::runtime {
namespace {

std::once_flag g_once;
std::shared_ptr<spdlog::logger> g_logger;
std::string g_path;

// Warnings and errors are events too (event_log.h), for moreh-log's errors table.
class EventSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    emit_event(msg.level >= spdlog::level::err ? "error" : "warning", "\"message\": " + json_string(text));
  }
  void flush_() override {}
};

std::shared_ptr<spdlog::logger> make_console_logger() {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("", sink);
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  return logger;
}

}  // namespace

void init_logging(const Config& config) {
  std::call_once(g_once, [&] {
    g_logger = make_console_logger();
    std::string file_error;
    try {
      std::filesystem::path p(config.log_file);
      if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
      auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.log_file, config.log_file_fresh);
      file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
      g_logger->sinks().push_back(file_sink);
      g_path = config.log_file;
    } catch (const std::exception& e) {
      file_error = e.what();
    }
    init_event_log(config);
    if (events_enabled()) {
      auto events = std::make_shared<EventSink>();
      events->set_level(spdlog::level::warn);
      g_logger->sinks().push_back(events);
    }
    set_log_level(config.log_level);
    g_logger->flush_on(spdlog::level::warn);
    // A default-named log's directory holds every run's: the oldest go beyond MOREH_LOG_KEEP runs.
    std::vector<std::string> pruned;
    if (!g_path.empty() && config.log_file_fresh)
      pruned = prune_old_runs(std::filesystem::path(config.log_file).parent_path().string(), config.log_keep, getpid());
    if (!g_path.empty())
      g_logger->info("moreh log file: {}", g_path);
    else
      g_logger->warn("moreh could not open the log file {}: {}", config.log_file, file_error);
    if (!pruned.empty())
      g_logger->debug("moreh: {} file(s) of older runs removed (MOREH_LOG_KEEP={})", pruned.size(), config.log_keep);
  });
}

spdlog::logger& log() {
  if (!g_logger) {
    static std::once_flag fallback;
    std::call_once(fallback, [] {
      if (!g_logger) g_logger = make_console_logger();
    });
  }
  return *g_logger;
}

const std::string& log_file_path() { return g_path; }

void set_log_level(const std::string& level) { log().set_level(spdlog::level::from_str(level)); }

void flush_log() { log().flush(); }

namespace {
spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace: return spdlog::level::trace;
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarning: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
    case LogLevel::kCritical: return spdlog::level::critical;
  }
  return spdlog::level::info;
}
}  // namespace

void log_message(LogLevel level, std::string_view message) { log().log(to_spdlog(level), "{}", message); }

bool log_enabled(LogLevel level) { return log().should_log(to_spdlog(level)); }

LogLevel parse_log_level(const std::string& level) {
  switch (spdlog::level::from_str(level)) {
    case spdlog::level::trace: return LogLevel::kTrace;
    case spdlog::level::debug: return LogLevel::kDebug;
    case spdlog::level::warn: return LogLevel::kWarning;
    case spdlog::level::err: return LogLevel::kError;
    case spdlog::level::critical: return LogLevel::kCritical;
    default: return LogLevel::kInfo;
  }
}

}  // namespace moreh::runtime
