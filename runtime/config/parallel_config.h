// A parallel layout chosen by hand, as MoAI's configuration line writes it (seed 000):
//   num_stages : 2, num_micro_batches : 4, batch_per_device : 1, No TP, recomputation : 0,
//   distribute_param : true, distribute_low_prec_param : false
// parsed by field name (any order, missing fields take their defaults), checked against a device count,
// and printed back in that order, so that a dump's line can be pasted into MOREH_PARALLELISM. One field is
// moreh's own: `pipeline_schedule : gpipe` (default 1f1b), printed only when it is not the default.
#pragma once
#include <string>
#include <string_view>

#include "runtime/plan/rank_layout.h"

namespace moreh::runtime {

// The order of a pipeline's micro-batches (scheduler/lowering/pipeline_schedule.h).
enum class PipelineSchedule { k1F1B, kGPipe };

struct ParallelConfig {
  int num_stages = 1;         // pipeline stages (pp)
  int num_micro_batches = 1;  // micro-batches per step in a pipeline
  int batch_per_device = 0;   // samples per device and micro-batch; 0: not given (the script's batch decides)
  int tp = 1;                 // tensor-parallel degree ("No TP" is 1)
  int recomputation = 0;      // 0 or 1
  bool distribute_param = false;
  bool distribute_low_prec_param = false;
  PipelineSchedule pipeline_schedule = PipelineSchedule::k1F1B;
  bool operator==(const ParallelConfig&) const = default;
};

// Parses a configuration line. Fields are `name : value` separated by commas, plus `No TP`; an unknown,
// repeated or malformed field throws ConfigError naming the field and what it accepts.
ParallelConfig parse_parallel_config(std::string_view line);

// The line in MoAI's order and spelling (batch_per_device 0 when not given); parse_parallel_config reads it back.
std::string format_parallel_config(const ParallelConfig& config);

// The dp × pp × tp layout of `config` over `devices` devices: dp = devices / (num_stages × tp). Throws
// ConfigError naming the field when the stages outnumber the devices or the product does not divide them.
ParallelSizes parallel_layout(const ParallelConfig& config, int devices);

}  // namespace moreh::runtime
