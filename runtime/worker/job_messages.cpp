#include "runtime/worker/job_messages.h"

#include <fmt/format.h>

#include <numeric>

#include "runtime/base/errors.h"
#include "runtime/net/wire_codec.h"

namespace moreh::runtime {

std::string group_context_name(const std::vector<int>& ranks) {
  std::string name = "group";
  for (int r : ranks) name += " " + std::to_string(r);
  return name;
}

namespace {
constexpr uint32_t kMaxWorkers = 4096;
constexpr uint64_t kMaxCheckElements = 1ull << 28;  // 1 GiB of float32 per device
}  // namespace

uint64_t JobOpen::first_device() const {
  return std::accumulate(devices_per_worker.begin(), devices_per_worker.begin() + worker, uint64_t{0});
}
uint64_t JobOpen::total_devices() const {
  return std::accumulate(devices_per_worker.begin(), devices_per_worker.end(), uint64_t{0});
}

std::string encode(const JobOpen& m) {
  return WireWriter().u32(m.worker).u64s(m.devices_per_worker).u64(m.collective_timeout_ms).bytes(m.data_host).take();
}

JobOpen decode_job_open(std::string_view payload) {
  WireReader r(payload);
  JobOpen m;
  m.worker = r.u32();
  m.devices_per_worker = r.u64s(kMaxWorkers);
  m.collective_timeout_ms = r.u64();
  m.data_host = r.bytes(256);
  r.finish();
  if (m.worker >= m.workers())
    throw ProtocolError(fmt::format("job_open: worker {} of {} workers", m.worker, m.workers()));
  for (uint64_t d : m.devices_per_worker)
    if (d == 0 || d > 4096) throw ProtocolError(fmt::format("job_open: a worker with {} devices", d));
  if (m.collective_timeout_ms == 0) throw ProtocolError("job_open: a collective timeout of 0 ms");
  return m;
}

std::string encode(const CheckRequest& m) {
  return WireWriter().u8(static_cast<uint8_t>(m.kind)).u64(m.elements).u32(m.seed).u32(m.repeats).take();
}

CheckRequest decode_check_request(std::string_view payload) {
  WireReader r(payload);
  CheckRequest m;
  const uint8_t kind = r.u8();
  if (kind > 2) throw ProtocolError(fmt::format("run_check: unknown collective {}", kind));
  m.kind = static_cast<CheckKind>(kind);
  m.elements = r.u64();
  m.seed = r.u32();
  m.repeats = r.u32();
  r.finish();
  if (m.elements == 0 || m.elements > kMaxCheckElements)
    throw ProtocolError(fmt::format("run_check: {} elements per device (1 to {})", m.elements, kMaxCheckElements));
  if (m.repeats == 0 || m.repeats > 1000) throw ProtocolError(fmt::format("run_check: {} repeats (1 to 1000)", m.repeats));
  return m;
}

std::string encode(const CheckResult& m) {
  WireWriter w;
  w.u32(static_cast<uint32_t>(m.devices.size()));
  for (const auto& d : m.devices) w.u64(d.rank).u64(d.hash).u64(d.bytes_sent);
  return w.f64(m.seconds).take();
}

CheckResult decode_check_result(std::string_view payload) {
  WireReader r(payload);
  CheckResult m;
  const uint32_t n = r.u32();
  if (n > 4096) throw ProtocolError(fmt::format("check_result: {} devices", n));
  for (uint32_t i = 0; i < n; ++i) {
    CheckResult::Device d;
    d.rank = r.u64();
    d.hash = r.u64();
    d.bytes_sent = r.u64();
    m.devices.push_back(d);
  }
  m.seconds = r.f64();
  r.finish();
  return m;
}

float check_value(uint64_t rank, uint64_t i, uint32_t seed) {
  return static_cast<float>((rank * 31 + i * 7 + seed) % 1009);
}

std::vector<float> check_expected(const CheckRequest& q, uint64_t devices) {
  std::vector<float> out;
  switch (q.kind) {
    case CheckKind::kAllReduce:
      out.assign(q.elements, 0.0f);
      for (uint64_t r = 0; r < devices; ++r)
        for (uint64_t i = 0; i < q.elements; ++i) out[i] += check_value(r, i, q.seed);
      break;
    case CheckKind::kAllGather:
      for (uint64_t r = 0; r < devices; ++r)
        for (uint64_t i = 0; i < q.elements; ++i) out.push_back(check_value(r, i, q.seed));
      break;
    case CheckKind::kBroadcast:
      for (uint64_t i = 0; i < q.elements; ++i) out.push_back(check_value(devices - 1, i, q.seed));
      break;
  }
  return out;
}

uint64_t fnv1a(const void* data, uint64_t bytes) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const unsigned char*>(data);
  for (uint64_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace moreh::runtime
