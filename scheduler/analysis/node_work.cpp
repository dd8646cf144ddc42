#include "scheduler/analysis/node_work.h"

#include <string_view>

namespace moreh::scheduler {

namespace {

double numel(const runtime::Dims& sizes) {
  double n = 1;
  for (int64_t s : sizes) n *= static_cast<double>(s);
  return n;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// A node's shapes as one launch sees them: a device's local views where the launch has them (its rows of a
// split batch, its columns of a tensor-parallel weight), else the recorded ones.
struct Shapes {
  const runtime::Node& node;
  const runtime::LocalLaunch* local;
  const runtime::Dims& in(size_t i) const {
    if (local && i < local->inputs.size() && !local->inputs[i].sizes.empty()) return local->inputs[i].sizes;
    return node.inputs[i].sizes;
  }
  const runtime::Dims& out(size_t k) const {
    if (local && k < local->outputs.size() && !local->outputs[k].sizes.empty()) return local->outputs[k].sizes;
    return node.outputs[k].sizes;
  }
};

// Multiply-adds of the contraction a node runs (0 for the rest).
double multiply_adds(const Shapes& sh, std::string_view name) {
  const runtime::Node& node = sh.node;
  if (node.outputs.empty()) return 0;
  if (node.inputs.size() >= 2 && (starts_with(name, "aten::mm") || starts_with(name, "aten::addmm") ||
                                  starts_with(name, "aten::bmm") || starts_with(name, "aten::baddbmm"))) {
    const auto& a = sh.in(node.inputs.size() - 2);  // addmm's self comes first
    return a.empty() ? 0 : numel(sh.out(0)) * static_cast<double>(a.back());
  }
  if (name.find("scaled_dot_product") != std::string_view::npos && !node.inputs.empty() && sh.in(0).size() >= 2) {
    const auto& q = sh.in(0);  // (batch, heads, L, E): QK^T and PV, each L × L × E per head
    const double macs = 2.0 * numel(q) * static_cast<double>(q[q.size() - 2]);
    return name.find("backward") != std::string_view::npos ? 2 * macs : macs;
  }
  if (starts_with(name, "aten::convolution") && node.inputs.size() >= 2) {
    // Every output element takes the weight's elements of one output channel; the backward pass computes the
    // input's and the weight's gradients, twice the forward's work.
    const bool backward = name.find("backward") != std::string_view::npos;
    if (backward && node.inputs.size() < 3) return 0;
    const auto& weight = sh.in(backward ? 2 : 1);
    const auto& out = backward ? sh.in(0) : sh.out(0);  // grad_output has the output's shape
    if (weight.empty() || weight[0] == 0) return 0;
    const double macs = numel(out) * numel(weight) / static_cast<double>(weight[0]);
    return backward ? 2 * macs : macs;
  }
  return 0;
}

}  // namespace

NodeWork node_work(const runtime::Node& node, const runtime::LocalLaunch* local) {
  const Shapes sh{node, local};
  NodeWork w;
  for (size_t i = 0; i < node.inputs.size(); ++i)
    w.bytes_read += numel(sh.in(i)) * static_cast<double>(node.inputs[i].itemsize);
  for (size_t k = 0; k < node.outputs.size(); ++k) {
    w.bytes_written += numel(sh.out(k)) * static_cast<double>(node.outputs[k].itemsize);
    w.elements += numel(sh.out(k));
  }
  for (uint16_t wi : node.written) {
    w.bytes_written += numel(sh.in(wi)) * static_cast<double>(node.inputs[wi].itemsize);
    w.elements += numel(sh.in(wi));
  }
  const std::string_view name = runtime::op_name(node.op);
  w.multiply_adds = multiply_adds(sh, name);
  w.attention = w.multiply_adds > 0 && name.find("scaled_dot_product") != std::string_view::npos;
  for (std::string_view f : {"gelu", "erf", "tanh", "exp", "log", "sigmoid", "silu", "softmax", "softplus", "mish", "pow"})
    if (name.find(f) != std::string_view::npos) w.transcendental = true;
  if (w.multiply_adds > 0 && !node.inputs.empty()) w.low_precision = node.inputs[0].itemsize == 2;
  return w;
}

}  // namespace moreh::scheduler
