// The token file's checks and the challenge–response proofs.
#include "runtime/net/token_auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()))).string();
}

std::string error_of(const std::string& path) {
  try {
    read_token_file(path);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(TokenAuthTest, ReadsAPrivateFileAndRefusesOpenEmptyMissingOrHugeOnes) {
  const std::string path = temp_path("moreh-token");
  write_token_file(path, "  secret-token \n");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(read_token_file(path), "secret-token");

  ::chmod(path.c_str(), 0640);
  EXPECT_NE(error_of(path).find("chmod 600"), std::string::npos) << error_of(path);
  ::chmod(path.c_str(), 0604);
  EXPECT_NE(error_of(path).find("open to other users"), std::string::npos);
  ::chmod(path.c_str(), 0600);

  std::ofstream(path, std::ios::trunc) << " \n";
  EXPECT_NE(error_of(path).find("empty"), std::string::npos);
  std::ofstream(path, std::ios::trunc) << std::string(kTokenFileBound + 1, 'x');
  EXPECT_NE(error_of(path).find("at most"), std::string::npos);
  std::filesystem::remove(path);
  EXPECT_NE(error_of(path).find("cannot be opened"), std::string::npos);
  EXPECT_NE(error_of("/tmp").find("not a regular file"), std::string::npos) << error_of("/tmp");
}

TEST(TokenAuthTest, ProofsDependOnTokenRoleAndBothNonces) {
  const std::string a = random_nonce(), b = random_nonce();
  EXPECT_EQ(a.size(), kNonceBytes);
  EXPECT_NE(a, b);
  const std::string w = worker_proof("tok", a, b);
  EXPECT_EQ(w.size(), kProofBytes);
  EXPECT_TRUE(same_proof(w, worker_proof("tok", a, b)));
  EXPECT_FALSE(same_proof(w, worker_proof("tok2", a, b)));
  EXPECT_FALSE(same_proof(w, worker_proof("tok", b, a)));
  EXPECT_FALSE(same_proof(w, client_proof("tok", a, b)));  // a worker's proof cannot be replayed as the client's
  EXPECT_FALSE(same_proof(w, w.substr(1)));
  // RFC 4231 test case 2.
  const std::string mac = hmac_sha256("Jefe", "what do ya want for nothing?");
  std::string hex;
  for (unsigned char c : mac) hex += "0123456789abcdef"[c >> 4], hex += "0123456789abcdef"[c & 15];
  EXPECT_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(new_token().size(), 2 * kNonceBytes);
}

}  // namespace
}  // namespace moreh::runtime
