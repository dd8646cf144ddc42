#include "runtime/config/user_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/base/errors.h"
#include "runtime/config/flavor_choice.h"

namespace moreh::runtime {
namespace {

namespace fs = std::filesystem;

class UserConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moreh_user_config_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path() const { return user_config_path(dir_.string()); }
  void write_raw(const std::string& text) {
    fs::create_directories(dir_);
    std::ofstream(path()) << text;
  }
  std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(UserConfigTest, MissingFileIsEmpty) { EXPECT_FALSE(read_user_config(path()).flavor); }

TEST_F(UserConfigTest, RoundTripCreatesTheDirectoryAndLeavesNoTemporary) {
  write_user_config(path(), UserConfig{"4xLarge.2048GB"});
  EXPECT_EQ(read_user_config(path()).flavor, "4xLarge.2048GB");
  write_user_config(path(), UserConfig{"Medium.128GB"});
  EXPECT_EQ(read_user_config(path()).flavor, "Medium.128GB");
  int files = 0;
  for (auto& entry : fs::directory_iterator(dir_)) files += entry.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST_F(UserConfigTest, CommentsBlankLinesAndCaseAreAccepted) {
  write_raw("# mine\n\n  flavor =  xlarge.512gb   # the usual\n");
  EXPECT_EQ(read_user_config(path()).flavor, "xLarge.512GB");
}

TEST_F(UserConfigTest, CorruptFilesNameThePathAndTheLine) {
  for (const char* text : {"garbage\n", "flavor = Huge.1GB\n", "colour = blue\n"}) {
    write_raw(text);
    std::string what = error_of([&] { read_user_config(path()); });
    EXPECT_NE(what.find(path()), std::string::npos) << text << ": " << what;
    EXPECT_NE(what.find("line 1"), std::string::npos) << what;
  }
  write_raw("flavor = Huge.1GB\n");
  EXPECT_NE(error_of([&] { read_user_config(path()); }).find("Small.64GB"), std::string::npos);
}

TEST_F(UserConfigTest, AByteOrderMarkIsNotPartOfTheFirstKey) {
  write_raw("\xEF\xBB\xBF" "flavor = Medium.128GB\n");
  EXPECT_EQ(read_user_config(path()).flavor, "Medium.128GB");
}

// The message must itself be text (Python turns it into a str) and name the file.
bool is_utf8_text(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;  // moreh's own messages are ASCII; any byte from the file would show here
  return true;
}

TEST_F(UserConfigTest, BinaryContentIsNamedWithoutRepeatingItsBytes) {
  std::string junk;
  for (int i = 0; i < 256; ++i) junk.push_back(static_cast<char>((i * 167 + 13) & 0xFF));
  write_raw(junk);
  std::string what = error_of([&] { read_user_config(path()); });
  EXPECT_NE(what.find(path()), std::string::npos) << what;
  EXPECT_NE(what.find("not UTF-8"), std::string::npos) << what;
  EXPECT_TRUE(is_utf8_text(what));
  write_raw(std::string("flavor = Small.64GB\0\n", 21));
  EXPECT_NE(error_of([&] { read_user_config(path()); }).find("NUL"), std::string::npos);
}

TEST_F(UserConfigTest, ADirectoryOrAFifoInThePlaceOfTheFileIsAnErrorNotAnEmptyConfigOrAHang) {
  fs::create_directories(path());
  std::string what = error_of([&] { read_user_config(path()); });
  EXPECT_NE(what.find("a directory"), std::string::npos) << what;
  EXPECT_NE(what.find(path()), std::string::npos) << what;
  fs::remove(path());
  ASSERT_EQ(mkfifo(path().c_str(), 0600), 0);
  what = error_of([&] { read_user_config(path()); });  // no writer: a blocking open would never return
  EXPECT_NE(what.find("a FIFO"), std::string::npos) << what;
  // moreh-switch-model replaces what it cannot read: writing over the FIFO gives a regular file again.
  write_user_config(path(), UserConfig{"Large.256GB"});
  EXPECT_EQ(read_user_config(path()).flavor, "Large.256GB");
}

TEST_F(UserConfigTest, ChoiceOrderIsEnvironmentThenFileThenDefault) {
  EXPECT_EQ(choose_flavor(nullptr, nullptr, path()).flavor.name, "Small.64GB");
  EXPECT_EQ(choose_flavor(nullptr, nullptr, path()).source, "default");
  write_user_config(path(), UserConfig{"Large.256GB"});
  auto persisted = choose_flavor(nullptr, nullptr, path());
  EXPECT_EQ(persisted.flavor.num_devices, 4);
  EXPECT_EQ(persisted.source, path());
  EXPECT_EQ(choose_flavor("xLarge.512GB", nullptr, path()).flavor.num_devices, 8);
  EXPECT_EQ(choose_flavor("", "2", path()).flavor.name, "Medium.128GB");
  EXPECT_EQ(choose_flavor(nullptr, "5", path()).flavor.name, "Custom.320GB");
  EXPECT_EQ(choose_flavor("xLarge.512GB", "8", path()).source, "MOREH_FLAVOR");
}

TEST_F(UserConfigTest, AClustersWorkersGiveNodeFlavors) {
  UserConfig c;
  c.flavor = "Nodes.2";
  c.workers = "10.0.0.2:7000, node3:7001";
  c.worker_token_file = "/shared/token";
  write_user_config(path(), c);
  const UserConfig back = read_user_config(path());
  EXPECT_EQ(back.flavor, "Nodes.2");
  EXPECT_EQ(back.worker_list(), (std::vector<std::string>{"10.0.0.2:7000", "node3:7001"}));
  EXPECT_EQ(back.worker_token_file, "/shared/token");
  const FlavorChoice nodes = choose_flavor(nullptr, nullptr, path());
  EXPECT_EQ(nodes.flavor.nodes, 2);
  EXPECT_EQ(nodes.flavor.num_devices, 1);  // this process's; the workers say how many they hold
  EXPECT_EQ(choose_flavor("nodes.1", nullptr, path()).flavor.name, "Nodes.1");
  for (const char* bad : {"Nodes.0", "Nodes.", "Nodes.x", "Nodes.01", "Nodes.99999"})
    EXPECT_FALSE(find_flavor(bad)) << bad;
  // A node flavor over more workers than the file lists, a malformed list, a key set twice.
  write_raw("workers = a:1,b:2\nflavor = Nodes.3\n");
  std::string more = error_of([&] { read_user_config(path()); });
  EXPECT_NE(more.find("line 2"), std::string::npos) << more;
  EXPECT_NE(more.find("lists 2"), std::string::npos) << more;
  write_raw("workers = a:notaport\n");
  EXPECT_NE(error_of([&] { read_user_config(path()); }).find("line 1"), std::string::npos);
  write_raw("flavor = Small.64GB\nflavor = Large.256GB\n");
  EXPECT_NE(error_of([&] { read_user_config(path()); }).find("set twice"), std::string::npos);
}

TEST_F(UserConfigTest, BadChoicesAreClearErrors) {
  std::string unknown = error_of([&] { choose_flavor("Huge.1GB", nullptr, path()); });
  EXPECT_NE(unknown.find("MOREH_FLAVOR='Huge.1GB'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("48xLarge.24576GB"), std::string::npos) << unknown;
  std::string clash = error_of([&] { choose_flavor("xLarge.512GB", "4", path()); });
  EXPECT_NE(clash.find("MOREH_NUM_DEVICES='4'"), std::string::npos) << clash;
  for (const char* bad : {"0", "-1", "two", "1.5", "99999"}) {
    std::string what = error_of([&] { choose_flavor(nullptr, bad, path()); });
    EXPECT_NE(what.find("MOREH_NUM_DEVICES"), std::string::npos) << bad;
  }
  write_raw("flavor: big\n");
  EXPECT_NE(error_of([&] { choose_flavor(nullptr, nullptr, path()); }).find(path()), std::string::npos);
  EXPECT_NO_THROW(choose_flavor(nullptr, "2", path()));  // a variable wins without reading the file
}

}  // namespace
}  // namespace moreh::runtime
