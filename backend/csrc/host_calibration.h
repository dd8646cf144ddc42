// The host device profile's micro-benchmark: ATen's matmul and streaming rates and a boxed kernel call's
// overhead as host devices run them, measured in well under a second (scheduler/search/device_profile.h).
#pragma once
#include "scheduler/search/device_profile.h"

namespace moreh::backend {

scheduler::HostMeasurements measure_host();

}  // namespace moreh::backend
