// The spdlog logger itself, for runtime/ and scheduler/ code that formats its messages with fmt.
#pragma once
#include <spdlog/spdlog.h>

#include "runtime/base/logging.h"

namespace moreh::runtime {

spdlog::logger& log();

}  // namespace moreh::runtime
