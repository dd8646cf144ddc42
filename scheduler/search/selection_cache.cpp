#include "scheduler/search/selection_cache.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

namespace moreh::scheduler {

namespace {

struct Fnv {
  uint64_t h = 0xcbf29ce484222325ull;
  void byte(uint8_t b) { h = (h ^ b) * 0x100000001b3ull; }
  void word(uint64_t w) {
    for (int i = 0; i < 8; ++i) byte(static_cast<uint8_t>(w >> (8 * i)));
  }
  void text(const std::string& s) {
    word(s.size());
    for (char c : s) byte(static_cast<uint8_t>(c));
  }
};

}  // namespace

uint64_t stable_graph_hash(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical) {
  Fnv f;
  auto ref = [&](const runtime::TensorRef& r, uint32_t slot) {
    f.word(slot);
    f.word(r.sizes.size());
    for (int64_t d : r.sizes) f.word(static_cast<uint64_t>(d));
    for (int64_t d : r.strides) f.word(static_cast<uint64_t>(d));
    f.word(static_cast<uint64_t>(static_cast<uint8_t>(r.dtype)));
    f.word(r.itemsize);
  };
  for (size_t n = 0; n < graph.size(); ++n) {
    const runtime::Node& node = graph.nodes()[n];
    f.text(runtime::op_name(node.op));
    f.word(node.inputs.size());
    for (size_t i = 0; i < node.inputs.size(); ++i) ref(node.inputs[i], canonical.node_inputs[n][i]);
    for (uint16_t w : node.written) f.word(w);
    f.word(node.outputs.size());
    for (size_t k = 0; k < node.outputs.size(); ++k) ref(node.outputs[k], canonical.node_outputs[n][k]);
  }
  for (const auto& b : canonical.buffers) {
    f.word(b.bytes);
    f.word(static_cast<uint64_t>(b.origin));
  }
  return f.h;
}

std::string SelectionCache::path(uint64_t graph_hash, const std::string& flavor, int devices) const {
  return fmt::format("{}/{}-{}-{:016x}.conf", dir_, flavor, devices, graph_hash);
}

std::optional<runtime::ParallelConfig> SelectionCache::find(uint64_t graph_hash, const std::string& flavor,
                                                            int devices) const {
  if (dir_.empty()) return std::nullopt;
  std::ifstream in(path(graph_hash, flavor, devices));
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  try {
    runtime::ParallelConfig config = runtime::parse_parallel_config(line);
    runtime::parallel_layout(config, devices);  // still a layout of these devices
    return config;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool SelectionCache::store(uint64_t graph_hash, const std::string& flavor, int devices,
                           const runtime::ParallelConfig& config) const {
  if (dir_.empty()) return false;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  const std::string file = path(graph_hash, flavor, devices), tmp = file + ".tmp";
  {
    std::ofstream out(tmp);
    out << runtime::format_parallel_config(config) << "\n";
    if (!out) return false;
  }
  std::filesystem::rename(tmp, file, ec);
  return !ec;
}

}  // namespace moreh::scheduler
