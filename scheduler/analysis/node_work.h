// What a node asks of a device: its floating-point operations and the bytes it reads and writes (a roofline's
// two axes), from the shapes recorded in the step graph.
#pragma once
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"

namespace moreh::scheduler {

// Floating-point operations counted per element of a transcendental function (GELU's erf, exp, tanh, softmax):
// what a roofline charges them, and what the host profile's measurement of GELU assumes.
inline constexpr double kTranscendentalFlops = 16;

struct NodeWork {
  double multiply_adds = 0;  // of a matmul's, attention's or convolution's contraction (0 for the rest)
  double elements = 0;       // it writes
  bool attention = false;    // a fused attention kernel (its multiply-adds run at the attention rate)
  bool transcendental = false;  // elementwise, but each element evaluates a transcendental function
  double bytes_read = 0;     // its inputs' elements
  double bytes_written = 0;  // its fresh outputs and the inputs it writes in place
  bool low_precision = false;  // the contraction runs in a 2-byte type (tensor cores' rate on a GPU)
  // Floating-point operations: 2 per multiply-add of a contraction, else per element written 1 (or
  // kTranscendentalFlops).
  double flops() const {
    return multiply_adds > 0 ? 2 * multiply_adds : elements * (transcendental ? kTranscendentalFlops : 1);
  }
};

// `local`: a launch's own views (a device's rows, a tensor-parallel rank's columns) in place of the recorded
// shapes where it has them.
NodeWork node_work(const runtime::Node& node, const runtime::LocalLaunch* local = nullptr);

}  // namespace moreh::scheduler
