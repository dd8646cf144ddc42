// What of a step's kernel payloads one worker needs: the nodes its devices' programs run, and of a host
// tensor copied into the batch (x.to("moreh") split by rows), only the rows its devices take.
#pragma once
#include <vector>

#include "runtime/plan/program.h"
#include "runtime/worker/step_codec.h"

namespace moreh::runtime {

// Per node of a plan's step graph, for the programs of `devices`: withheld where none of them runs it; the
// union of their rows for a host_input node every one of their launches reads by rows; whole otherwise.
// `host_input[n]`: whether node n copies a host tensor in (Node::host_input).
std::vector<PayloadShare> payload_shares(const Plan& plan, const std::vector<int>& devices,
                                         const std::vector<bool>& host_input);

// Per node: whether a program of `devices` runs it (a launch, or a fused kernel standing for it).
std::vector<bool> launched_nodes(const Plan& plan, const std::vector<int>& devices);

}  // namespace moreh::runtime
