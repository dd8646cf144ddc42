// A buffer's whole value brought to device 0, or read to the host, from wherever a plan left it over the devices.
#pragma once
#include <vector>

#include "runtime/device/device.h"
#include "runtime/memory/buffer.h"

namespace moreh::runtime {

// Makes device 0 hold b's whole value and the only copy: rows of a kShard buffer gathered, the addends of a
// kPartial one summed, other devices' copies dropped; the placement becomes kHome. For host reads and eager
// ops, which use device 0's memory; call it with the devices idle. A no-op with one device or at home.
void gather_home(Buffer& b, const std::vector<PhysicalDevice*>& devices);

// Copies b's whole value into `dst` (b.bytes() of host memory) from wherever a plan left it, and leaves it
// there (a host read of a parameter resting in rows does not bring it home, nor need room on device 0).
// False with one device, at home, or with no value to copy: the caller reads device 0's block.
bool read_whole(const Buffer& b, const std::vector<PhysicalDevice*>& devices, void* dst);

}  // namespace moreh::runtime
