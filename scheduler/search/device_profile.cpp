#include "scheduler/search/device_profile.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "runtime/base/spdlog_logger.h"

namespace moreh::scheduler {

namespace {

// What dense kernels reach of a datasheet's peak (large GEMMs ~70%, streaming kernels ~80% of HBM, NCCL's
// bus bandwidth ~80% of NVLink's): a simulator that assumed the peak would favour compute-heavy layouts.
constexpr double kMatmulEfficiency = 0.7, kMemoryEfficiency = 0.8, kLinkEfficiency = 0.8;
constexpr double kAttentionEfficiency = 0.4;  // flash attention's share of the tensor cores' peak

DeviceProfile gpu(std::string name, double fp32_tflops, double bf16_tflops, double hbm_tb_s, double memory_gb,
                  double peer_gb_s, double network_gb_s) {
  DeviceProfile p;
  p.name = std::move(name);
  p.fp32_flops = fp32_tflops * 1e12 * kMatmulEfficiency;
  p.low_prec_flops = bf16_tflops * 1e12 * kMatmulEfficiency;
  p.attention_flops = bf16_tflops * 1e12 * kAttentionEfficiency;
  p.elementwise_flops = fp32_tflops * 1e12 * kMatmulEfficiency;
  p.memory_bytes_per_s = hbm_tb_s * 1e12 * kMemoryEfficiency;
  p.launch_s = 5e-6;
  p.memory_bytes = static_cast<uint64_t>(memory_gb * 1e9);
  p.intra_node = {10e-6, peer_gb_s * 1e9 * kLinkEfficiency};
  p.inter_node = {20e-6, network_gb_s * 1e9 * kLinkEfficiency};
  return p;
}

// Published figures: dense FP32 (no TF32, PyTorch's default for matmuls) and BF16 tensor TFLOP/s, HBM TB/s,
// memory GB, GPU-to-GPU bandwidth per direction inside a node (NVLink / Infinity Fabric), and the network per
// GPU between nodes (one InfiniBand NIC per GPU: NDR 400 Gb/s for Hopper, HDR 200 Gb/s for the others).
const std::map<std::string, DeviceProfile>& table() {
  static const std::map<std::string, DeviceProfile> t = {
      {"h100", gpu("h100", 67, 989.4, 3.35, 80, 450, 50)},
      {"h200", gpu("h200", 67, 989.4, 4.8, 141, 450, 50)},
      {"a100", gpu("a100", 19.5, 312, 2.039, 80, 300, 25)},
      {"mi250", gpu("mi250", 45.3, 362.1, 3.2, 128, 100, 25)},
  };
  return t;
}

std::string join(const std::vector<double>& values) {
  std::ostringstream out;
  out.precision(17);
  for (size_t i = 0; i < values.size(); ++i) out << (i ? "," : "") << values[i];
  return out.str();
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

// A figure measured alone and at 2, 4 and 8 streams, at `streams`: linear in log2(streams) between, flat beyond.
static double at_streams(double alone, const std::vector<double>& measured, int streams) {
  if (measured.size() != 3 || streams <= 1) return alone;
  const double x = std::min(std::log2(static_cast<double>(streams)), 3.0);
  const double points[4] = {alone, measured[0], measured[1], measured[2]};
  const int lo = std::min(static_cast<int>(x), 2);
  return points[lo] + (points[lo + 1] - points[lo]) * (x - lo);
}

double DeviceProfile::speedup(int streams) const {
  return stream_speedup.empty() ? streams : at_streams(1, stream_speedup, streams);
}

double DeviceProfile::launch_for(int streams) const { return at_streams(launch_s, stream_launch_s, streams); }

std::optional<DeviceProfile> named_profile(const std::string& name) {
  const std::string key = lower(name);
  auto it = table().find(key);
  if (it != table().end()) return it->second;
  return std::nullopt;
}

std::vector<std::string> profile_names() {
  std::vector<std::string> out;
  for (const auto& [name, p] : table()) out.push_back(name);
  return out;
}

std::optional<DeviceProfile> profile_for_device_name(const std::string& device_name) {
  const std::string name = lower(device_name);
  for (const char* key : {"h200", "h100", "a100", "mi250"})
    if (name.find(key) != std::string::npos) return named_profile(key);
  return std::nullopt;
}

std::string format_profile(const DeviceProfile& p) {
  std::ostringstream out;
  out.precision(17);
  out << "name = " << p.name << "\n"
      << "fp32_flops = " << p.fp32_flops << "\n"
      << "low_prec_flops = " << p.low_prec_flops << "\n"
      << "attention_flops = " << p.attention_flops << "\n"
      << "elementwise_flops = " << p.elementwise_flops << "\n"
      << "memory_bytes_per_s = " << p.memory_bytes_per_s << "\n"
      << "launch_s = " << p.launch_s << "\n"
      << "memory_bytes = " << p.memory_bytes << "\n"
      << "intra_node_latency_s = " << p.intra_node.latency_s << "\n"
      << "intra_node_bytes_per_s = " << p.intra_node.bytes_per_s << "\n"
      << "inter_node_latency_s = " << p.inter_node.latency_s << "\n"
      << "inter_node_bytes_per_s = " << p.inter_node.bytes_per_s << "\n"
      << "stream_speedup = " << join(p.stream_speedup) << "\n"
      << "stream_launch_s = " << join(p.stream_launch_s) << "\n"
      << "measured = " << (p.measured ? 1 : 0) << "\n"
      << "calibration = " << p.calibration << "\n"
      << "shared_memory = " << (p.shared_memory ? 1 : 0) << "\n";
  return out.str();
}

std::optional<DeviceProfile> parse_profile(const std::string& text) {
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) return std::nullopt;
    kv[line.substr(0, eq)] = line.substr(eq + 3);
  }
  DeviceProfile p;
  auto number = [&](const char* key, double& out) {
    auto it = kv.find(key);
    if (it == kv.end()) return false;
    const std::string& s = it->second;
    char* end = nullptr;
    errno = 0;
    out = std::strtod(s.c_str(), &end);
    return errno == 0 && end == s.c_str() + s.size() && !s.empty() && out >= 0;
  };
  double memory = 0, measured = 0, shared = 0;
  auto list = [&](const char* key, std::vector<double>& out) {
    auto it = kv.find(key);
    if (it == kv.end() || it->second.empty()) return true;  // none: independent devices
    std::istringstream items(it->second);
    std::string item;
    while (std::getline(items, item, ',')) {
      char* end = nullptr;
      const double v = std::strtod(item.c_str(), &end);
      if (end != item.c_str() + item.size() || !(v > 0)) return false;
      out.push_back(v);
    }
    return out.size() == 3;
  };
  if (!list("stream_speedup", p.stream_speedup) || !list("stream_launch_s", p.stream_launch_s)) return std::nullopt;
  if (!kv.count("name") ||
      !(number("fp32_flops", p.fp32_flops) && number("low_prec_flops", p.low_prec_flops) &&
        number("attention_flops", p.attention_flops) && number("elementwise_flops", p.elementwise_flops) && number("memory_bytes_per_s", p.memory_bytes_per_s) &&
        number("launch_s", p.launch_s) && number("memory_bytes", memory) &&
        number("intra_node_latency_s", p.intra_node.latency_s) &&
        number("intra_node_bytes_per_s", p.intra_node.bytes_per_s) &&
        number("inter_node_latency_s", p.inter_node.latency_s) &&
        number("inter_node_bytes_per_s", p.inter_node.bytes_per_s) &&
        number("measured", measured) && number("shared_memory", shared)))
    return std::nullopt;
  if (p.fp32_flops <= 0 || p.low_prec_flops <= 0 || p.memory_bytes_per_s <= 0 || p.intra_node.bytes_per_s <= 0)
    return std::nullopt;
  p.name = kv["name"];
  p.memory_bytes = static_cast<uint64_t>(memory);
  p.measured = measured != 0;
  p.shared_memory = shared != 0;
  double calibration = 1;  // files written before the key existed
  if (kv.count("calibration") && !number("calibration", calibration)) return std::nullopt;
  p.calibration = static_cast<int>(calibration);
  if (p.shared_memory) p.cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

DeviceProfile host_profile(const std::string& cache_file, const HostCalibration& calibrate, uint64_t memory_bytes) {
  auto finish = [&](DeviceProfile p) {
    p.memory_bytes = memory_bytes;
    return p;
  };
  if (!cache_file.empty()) {
    std::ifstream in(cache_file);
    if (in) {
      std::stringstream text;
      text << in.rdbuf();
      const auto p = parse_profile(text.str());
      if (p && p->name == "host" && p->calibration >= kHostCalibration) return finish(*p);
      if (p && p->name == "host")
        runtime::log().info("moreh: the host profile {} was measured by an older calibration ({}, now {}); measuring "
                            "the host again", cache_file, p->calibration, kHostCalibration);
      else
        runtime::log().info("moreh: the host profile {} cannot be read; measuring the host again", cache_file);
    }
  }
  DeviceProfile p;
  p.name = "host";
  double measured_handoff = 0;
  // Host devices pass values through memory: a copy at the memory's rate, and a thread's hand-over.
  if (!calibrate) {  // nothing measured: a modest machine's figures
    p.fp32_flops = 50e9, p.low_prec_flops = 20e9, p.attention_flops = 10e9, p.elementwise_flops = 2e9;
    p.memory_bytes_per_s = 5e9;
    p.launch_s = 20e-6, p.stream_speedup = {1, 1, 1}, p.stream_launch_s = {40e-6, 80e-6, 160e-6};
  } else {
    const HostMeasurements m = calibrate();
    p.fp32_flops = m.fp32_flops, p.low_prec_flops = m.low_prec_flops, p.memory_bytes_per_s = m.memory_bytes_per_s;
    p.attention_flops = m.attention_flops, p.elementwise_flops = m.elementwise_flops;
    p.launch_s = m.launch_s;
    measured_handoff = m.handoff_s;
    p.stream_speedup = m.speedup;
    p.stream_speedup.resize(3, p.stream_speedup.empty() ? 1.0 : p.stream_speedup.back());
    p.stream_launch_s = m.stream_launch_s;
    p.stream_launch_s.resize(3, p.stream_launch_s.empty() ? p.launch_s : p.stream_launch_s.back());
    p.measured = true;
    p.calibration = kHostCalibration;
  }
  p.shared_memory = true;
  p.cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // A message is a copy through memory (read and write) after the receiver's thread wakes up.
  p.intra_node = {calibrate ? std::max(measured_handoff, 1e-6) : 200e-6, p.memory_bytes_per_s / 2};
  p.inter_node = {100e-6, 1.25e9};                   // 10 Gb/s Ethernet between machines
  if (calibrate && !cache_file.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(cache_file).parent_path(), ec);
    const std::string tmp = cache_file + ".tmp";
    std::ofstream out(tmp);
    out << format_profile(p);
    out.close();
    if (!out || (std::filesystem::rename(tmp, cache_file, ec), ec))
      runtime::log().warn("moreh: could not keep the host profile in {}; the next run measures it again", cache_file);
    else
      runtime::log().info("moreh: host device profile measured and kept in {}", cache_file);
  }
  return finish(p);
}

}  // namespace moreh::scheduler
