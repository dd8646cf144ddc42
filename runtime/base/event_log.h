// moreh's events: one JSON object per line beside the log (moreh-<pid>.events.jsonl), read by moreh-log.
#pragma once
#include <string>
#include <string_view>

#include "runtime/config/config.h"

namespace moreh::runtime {

// The events file of a log file: its ".log" replaced by ".events.jsonl" (else ".events.jsonl" appended).
std::string events_path_for(const std::string& log_file);
// Opens the events file beside config.log_file unless config.log_events is false (MOREH_LOG_EVENTS=0); once.
// A default (per-pid) log starts a fresh events file; a log named by MOREH_LOG_FILE is appended to, as is its log.
void init_event_log(const Config& config);
// Sends events to `path` (emptied first when `fresh`, else appended to), closing any file open before; false
// when it cannot be opened (events are then off). close_event_log() turns them off.
bool open_event_log(const std::string& path, bool fresh);
void close_event_log();
// The file events go to ("" when off or it could not be opened).
const std::string& event_log_path();
bool events_enabled();
// Appends {"t": <seconds since the epoch>, "event": type, <fields>} as one line; `fields` holds a JSON
// object's members without the braces ("" for none). Thread-safe, written through at once (a crash loses
// no line already written).
void emit_event(std::string_view type, std::string_view fields = {});
// A JSON string literal of s (quotes, backslashes and control characters escaped; bytes above 0x7f as is).
std::string json_string(std::string_view s);
// Facts the run-start event carries that the runtime cannot know (the backend's torch version): `"key": value`
// members, set before the engine starts.
void add_run_fact(std::string_view key, std::string_view json_value);
const std::string& run_facts();

}  // namespace moreh::runtime
