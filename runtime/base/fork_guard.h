// fork() after the runtime started: the child has none of the parent's threads (the devices' workers
// are gone) and any lock those threads held stays locked forever, so the child must not touch the
// runtime at all. The guard marks forked children so callers can refuse with a clear error instead of
// hanging or crashing (DataLoader workers are forked children).
#pragma once

namespace moreh::runtime {

// Registers the fork handler (once per process; later calls do nothing).
void install_fork_guard();
// True in a process forked (directly or not) after install_fork_guard() ran.
bool in_forked_child();
// What to tell a forked child that tried to use moreh.
const char* forked_child_message();

}  // namespace moreh::runtime
