// The moreh device as PyTorch sees it: guard, accelerator hooks, and the moreh random generator.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/ivalue.h>

namespace moreh::backend {

const at::Generator& default_generator();
// The seed of a random node: drawn from `generator` when it is a moreh generator, else from the
// default one, so runs repeat under torch.manual_seed and every step draws fresh numbers.
uint64_t next_seed(const c10::IValue& generator);

}  // namespace moreh::backend
