// The payloads of a job's requests between the script's process and a worker (runtime/net/wire_format.h
// names the message types): opening a job over the workers' devices, and the data plane's check.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moreh::runtime {

// The plans a worker keeps for a job, the oldest upload forgotten first; the client forgets the same ones.
constexpr size_t kWorkerPlanCache = 64;

// The name a group of devices across nodes connects its own Gloo context under (its keys' prefix in the job's
// rendezvous store): the same in every process of the job.
std::string group_context_name(const std::vector<int>& ranks);

// kJobOpen: this worker's place among the job's workers and devices.
struct JobOpen {
  uint32_t worker = 0;                      // this worker's index
  std::vector<uint64_t> devices_per_worker;  // every worker's devices, in worker order (rank order)
  uint64_t collective_timeout_ms = 0;
  std::string data_host;  // the address this worker's data plane binds to ("" : the worker's own choice)
  uint32_t workers() const { return static_cast<uint32_t>(devices_per_worker.size()); }
  uint64_t first_device() const;
  uint64_t total_devices() const;
};
std::string encode(const JobOpen& m);
JobOpen decode_job_open(std::string_view payload);

// kRunCheck: one collective over every device of the job, on values each device computes from its rank.
enum class CheckKind : uint8_t { kAllReduce = 0, kAllGather = 1, kBroadcast = 2 };
struct CheckRequest {
  CheckKind kind = CheckKind::kAllReduce;
  uint64_t elements = 0;  // float32 elements per device (all_gather: each device's slice)
  uint32_t seed = 0;
  uint32_t repeats = 1;   // the collective is run this many times (bench)
};
std::string encode(const CheckRequest& m);
CheckRequest decode_check_request(std::string_view payload);

// What each of the worker's devices holds after the check.
struct CheckResult {
  struct Device {
    uint64_t rank = 0;
    uint64_t hash = 0;        // FNV-1a of the result's bytes
    uint64_t bytes_sent = 0;  // by this device's rank, as the communicator counts
  };
  std::vector<Device> devices;
  double seconds = 0;  // the collectives' wall time on this worker
};
std::string encode(const CheckResult& m);
CheckResult decode_check_result(std::string_view payload);

// Element i of device `rank`'s input (small integers: sums over any device count stay exact in float32).
float check_value(uint64_t rank, uint64_t i, uint32_t seed);
// What every device must hold after the check over `devices` devices (broadcast's root: the last device).
std::vector<float> check_expected(const CheckRequest& request, uint64_t devices);
uint64_t fnv1a(const void* data, uint64_t bytes);

}  // namespace moreh::runtime
