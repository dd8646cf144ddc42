#include "scheduler/search/candidates.h"

#include <algorithm>

namespace moreh::scheduler {

namespace {

std::vector<int> divisors(int64_t n, int most) {
  std::vector<int> out;
  for (int d = 1; d <= most && d <= n; ++d)
    if (n % d == 0) out.push_back(d);
  return out;
}

}  // namespace

std::vector<runtime::ParallelConfig> enumerate_candidates(const CandidateSpace& space) {
  std::vector<runtime::ParallelConfig> out;
  const int n = std::max(space.devices, 1);
  for (int tp = 1; tp <= n; ++tp) {
    if (n % tp != 0) continue;
    for (int pp = 1; pp <= n / tp; ++pp) {
      if ((n / tp) % pp != 0) continue;
      const int dp = n / (tp * pp);
      // Each replica an equal part of the batch (TP's layout is a replica's, the same in each); without a known
      // batch, one replica only (replicas would run the same rows).
      if (dp > 1 && (space.batch <= 0 || space.batch % dp != 0)) continue;
      const int64_t rows = space.batch > 0 ? space.batch / dp : 0;
      std::vector<int> micro{1};
      if ((pp > 1 || space.micro_batches_without_stages) && rows > 0)
        micro = divisors(rows, std::max(space.max_micro_batches, 1));
      for (int m : micro)
        for (int rc = 0; rc <= 1; ++rc)
          for (int zero = 0; zero <= (dp > 1 ? 1 : 0); ++zero)
            for (int low = 0; low <= (dp > 1 && space.autocast ? 1 : 0); ++low) {
              runtime::ParallelConfig c;
              c.num_stages = pp;
              c.tp = tp;
              c.num_micro_batches = m;
              c.recomputation = rc;
              c.distribute_param = zero == 1;
              c.distribute_low_prec_param = low == 1;
              runtime::parallel_layout(c, n);  // the devices hold it (throws otherwise: a bug here)
              out.push_back(c);
            }
    }
  }
  return out;
}

}  // namespace moreh::scheduler
