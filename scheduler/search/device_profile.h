// What a device can do, for the cost simulator: peak arithmetic and memory rates, a kernel launch's overhead,
// and the links between devices. Named GPUs carry their published figures; host devices are measured.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace moreh::scheduler {

// A link between two devices: a message of b bytes takes latency_s + b / bytes_per_s.
struct LinkProfile {
  double latency_s = 0;
  double bytes_per_s = 0;  // each direction
};

struct DeviceProfile {
  std::string name;
  double fp32_flops = 0;       // FLOP/s a contraction reaches in fp32
  double low_prec_flops = 0;   // in bf16/fp16
  double attention_flops = 0;  // FLOP/s of a fused attention kernel (its softmax and tiling cost beside its matmuls)
  double elementwise_flops = 0;  // FLOP/s of elementwise arithmetic (the bound of transcendental functions)
  double memory_bytes_per_s = 0;
  double launch_s = 0;         // a kernel's fixed cost (launch, and on host devices the executor's dispatch)
  uint64_t memory_bytes = 0;   // one device's memory
  LinkProfile intra_node;      // between devices of one machine (NVLink; host devices: a memory copy)
  LinkProfile inter_node;      // between machines (InfiniBand)
  // Host devices share the machine's cores: the work 2, 4 and 8 devices' streams finish together per unit of
  // time, against one stream's (below their count: they take turns; below 1: they slow each other down).
  // Empty: each device has its own chip.
  std::vector<double> stream_speedup;
  // The speedup of `streams` devices running at once (interpolated; `streams` itself without a table).
  double speedup(int streams) const;
  // A launch's cost while 2, 4 and 8 devices launch at once (empty: launch_s whatever the count), and the
  // cost for `streams` devices (interpolated).
  std::vector<double> stream_launch_s;
  double launch_for(int streams) const;
  bool measured = false;       // calibrated on this machine rather than taken from a datasheet
  int calibration = 0;         // measured: which micro-benchmark (kHostCalibration); a file without one: 1
  // Host devices' collectives meet in shared memory: a reduction is two rendezvous (a reduce-scatter and an
  // all-gather, runtime/comm/host_communicator.h), a gather or a broadcast one, each a link latency, however
  // many devices take part; GPUs' run NCCL's rings, a latency per step.
  bool shared_memory = false;
  int cores = 0;  // host devices: the machine's cores, which their threads share (0: not shared)
};

// A named GPU's published figures (peak rates scaled by what dense kernels reach in practice): "h100"
// (H100 SXM 80 GB), "h200", "a100" (A100 SXM 80 GB), "mi250" (one MI250 OAM); nullopt for another name.
std::optional<DeviceProfile> named_profile(const std::string& name);
std::vector<std::string> profile_names();
// The named profile a CUDA device's name matches ("NVIDIA H100 80GB HBM3" -> h100), else nullopt.
std::optional<DeviceProfile> profile_for_device_name(const std::string& device_name);

// The host micro-benchmark's version. A profile kept by an older one is measured again: 2 times kernels on
// operands that fill more than the caches, as a step's do (the first timed them in cache, 3-24% fast).
constexpr int kHostCalibration = 2;

// What a short micro-benchmark on the host measures (backend/ runs it with ATen, which this layer cannot).
struct HostMeasurements {
  double fp32_flops = 0, low_prec_flops = 0, attention_flops = 0, elementwise_flops = 0, memory_bytes_per_s = 0;
  double launch_s = 0;
  std::vector<double> speedup;  // 2, 4 and 8 streams of kernels at once against one (DeviceProfile::stream_speedup)
  std::vector<double> stream_launch_s;  // a small kernel's launch with 2, 4 and 8 streams launching at once
  double handoff_s = 0;  // a value handed between two devices' threads while others compute
};
using HostCalibration = std::function<HostMeasurements()>;

// The host profile: read from `cache_file` when a calibration is there, else measured with `calibrate` and
// written there (best effort: a directory that cannot be written only costs the next run a calibration). A
// corrupt or partial file is measured again. `calibrate` empty: conservative defaults, not cached.
DeviceProfile host_profile(const std::string& cache_file, const HostCalibration& calibrate, uint64_t memory_bytes);

// The profile as `key = value` lines, and back (nullopt for a malformed text).
std::string format_profile(const DeviceProfile& p);
std::optional<DeviceProfile> parse_profile(const std::string& text);

}  // namespace moreh::scheduler
