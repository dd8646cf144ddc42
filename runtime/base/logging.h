// moreh's log: spdlog, "[2024-04-15 14:07:02.815] [info] message", to stderr and to a log file.
// This header stays free of spdlog/fmt so the backend (which sees torch's bundled fmt) can use it;
// runtime and scheduler code formats through runtime/base/spdlog_logger.h.
#pragma once
#include <string>
#include <string_view>

#include "runtime/config/config.h"

namespace moreh::runtime {

enum class LogLevel { kTrace, kDebug, kInfo, kWarning, kError, kCritical };

// Sets up the logger once (idempotent); prints the log file's path at info.
void init_logging(const Config& config);
void log_message(LogLevel level, std::string_view message);
bool log_enabled(LogLevel level);
// The file the log is appended to ("" before init_logging or if it could not be opened).
const std::string& log_file_path();
// "trace" ... "critical", "off"; also "warn".
void set_log_level(const std::string& level);
// Writes out what the sinks buffer (the file sink flushes by itself only from warnings up).
void flush_log();
LogLevel parse_log_level(const std::string& level);

}  // namespace moreh::runtime
