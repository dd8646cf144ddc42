#include "runtime/config/parallel_config.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <set>
#include <vector>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

int parse_count(std::string_view field, std::string_view value, int min) {
  int v = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || end != value.data() + value.size() || v < min)
    throw ConfigError(fmt::format("parallel configuration: {} must be an integer of at least {}, got '{}'", field,
                                  min, value));
  return v;
}

bool parse_flag(std::string_view field, std::string_view value) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw ConfigError(fmt::format("parallel configuration: {} must be true or false, got '{}'", field, value));
}

}  // namespace

ParallelConfig parse_parallel_config(std::string_view line) {
  ParallelConfig c;
  std::set<std::string, std::less<>> seen;
  auto once = [&](std::string_view name) {
    if (!seen.emplace(name).second)
      throw ConfigError(fmt::format("parallel configuration: {} is given twice", name));
  };
  size_t start = 0;
  while (start <= line.size()) {
    size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) comma = line.size();
    const std::string_view field = trim(line.substr(start, comma - start));
    start = comma + 1;
    if (field.empty()) {
      if (comma == line.size()) break;  // a blank line (all defaults) or a trailing comma
      throw ConfigError(fmt::format("parallel configuration: an empty field in '{}'", line));
    }
    if (field == "No TP") {
      once("TP");
      c.tp = 1;
      continue;
    }
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos)
      throw ConfigError(fmt::format("parallel configuration: '{}' is not 'name : value' (or 'No TP')", field));
    const std::string_view name = trim(field.substr(0, colon)), value = trim(field.substr(colon + 1));
    if (name == "num_stages") {
      once(name);
      c.num_stages = parse_count(name, value, 1);
    } else if (name == "num_micro_batches") {
      once(name);
      c.num_micro_batches = parse_count(name, value, 1);
    } else if (name == "batch_per_device") {
      once(name);
      c.batch_per_device = parse_count(name, value, 0);
    } else if (name == "TP") {
      once(name);
      c.tp = parse_count(name, value, 1);
    } else if (name == "recomputation") {
      once(name);
      c.recomputation = parse_flag(name, value) ? 1 : 0;
    } else if (name == "distribute_param") {
      once(name);
      c.distribute_param = parse_flag(name, value);
    } else if (name == "distribute_low_prec_param") {
      once(name);
      c.distribute_low_prec_param = parse_flag(name, value);
    } else if (name == "pipeline_schedule") {
      once(name);
      if (value == "1f1b" || value == "1F1B") c.pipeline_schedule = PipelineSchedule::k1F1B;
      else if (value == "gpipe" || value == "GPipe") c.pipeline_schedule = PipelineSchedule::kGPipe;
      else
        throw ConfigError(fmt::format("parallel configuration: pipeline_schedule must be 1f1b or gpipe, got '{}'",
                                      value));
    } else {
      throw ConfigError(fmt::format(
          "parallel configuration: unknown field '{}' (fields: num_stages, num_micro_batches, batch_per_device, "
          "TP or No TP, recomputation, distribute_param, distribute_low_prec_param, pipeline_schedule)",
          name));
    }
  }
  return c;
}

std::string format_parallel_config(const ParallelConfig& c) {
  return fmt::format(
      "num_stages : {}, num_micro_batches : {}, batch_per_device : {}, {}, recomputation : {}, distribute_param : "
      "{}, distribute_low_prec_param : {}",
      c.num_stages, c.num_micro_batches, c.batch_per_device, c.tp > 1 ? fmt::format("TP : {}", c.tp) : "No TP",
      c.recomputation, c.distribute_param, c.distribute_low_prec_param) +
         (c.pipeline_schedule == PipelineSchedule::kGPipe ? ", pipeline_schedule : gpipe" : "");
}

ParallelSizes parallel_layout(const ParallelConfig& c, int devices) {
  if (c.num_stages < 1 || c.tp < 1 || c.num_micro_batches < 1)
    throw ConfigError(fmt::format("parallel configuration: num_stages, TP and num_micro_batches must be at least 1 "
                                  "(got {}, {}, {})", c.num_stages, c.tp, c.num_micro_batches));
  if (c.num_stages > devices)
    throw ConfigError(fmt::format("parallel configuration: num_stages : {} needs at least {} devices; the virtual "
                                  "device has {}", c.num_stages, c.num_stages, devices));
  if (c.tp > devices)
    throw ConfigError(fmt::format("parallel configuration: TP : {} needs at least {} devices; the virtual device "
                                  "has {}", c.tp, c.tp, devices));
  if (devices % (c.num_stages * c.tp) != 0)
    throw ConfigError(fmt::format("parallel configuration: num_stages : {} x TP : {} = {} does not divide the {} "
                                  "devices into data-parallel replicas", c.num_stages, c.tp, c.num_stages * c.tp,
                                  devices));
  ParallelSizes s;
  s.pp = c.num_stages;
  s.tp = c.tp;
  s.dp = devices / (c.num_stages * c.tp);
  return s;
}

}  // namespace moreh::runtime
