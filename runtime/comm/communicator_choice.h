// Which communicator carries the collectives of N devices: host devices meet in host memory (or through a
// host-memory NCCL stand-in, for tests), logical devices on one GPU through CUDA events, one per GPU through
// NCCL, several per GPU over several GPUs through both.
#pragma once
#include <memory>
#include <vector>

#include "runtime/comm/communicator.h"
#include "runtime/config/config.h"

namespace moreh::runtime {

// nullptr for one device. Waits are bounded by config.collective_timeout_s. Throws ConfigError where this
// build has no communicator for the devices (CUDA devices without CUDA support).
std::unique_ptr<Communicator> make_communicator(const Config& config, const std::vector<PhysicalDevice*>& devices);

}  // namespace moreh::runtime
