#include "runtime/base/fork_guard.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace moreh::runtime {
namespace {

// Forks; the child exits with `child()`'s value. Returns the child's exit status (-1 if it did not exit
// normally within 10 s).
template <class F>
int in_child(F child) {
  pid_t pid = fork();
  if (pid == 0) _exit(child());
  EXPECT_GT(pid, 0);
  int status = 0;
  for (int i = 0; i < 1000; ++i) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

TEST(ForkGuardTest, MarksChildrenForkedAfterInstallOnly) {
  install_fork_guard();
  install_fork_guard();  // idempotent
  EXPECT_FALSE(in_forked_child());
  EXPECT_EQ(in_child([] { return in_forked_child() ? 7 : 3; }), 7);
  // A grandchild is a forked child too.
  EXPECT_EQ(in_child([] { return in_child([] { return in_forked_child() ? 9 : 4; }); }), 9);
  EXPECT_FALSE(in_forked_child());  // the parent is not marked
}

TEST(ForkGuardTest, MessageTellsWhatToDo) {
  std::string message = forked_child_message();
  EXPECT_NE(message.find("forked child"), std::string::npos);
  EXPECT_NE(message.find("'spawn'"), std::string::npos);
  EXPECT_NE(message.find("Dataset"), std::string::npos);
}

}  // namespace
}  // namespace moreh::runtime
