// The binaries and the README's scripts: bad input gives one clear line and a non-zero exit,
// never a stack trace or a hang; tools/up and tools/down work against real processes.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

std::string bin(const std::string& rel) { return buildDir() + "/" + rel; }

// One line on stderr naming the program, exit 1, and no sign of a crash.
void expectCleanFailure(const RunResult& r, const std::string& program, const std::string& words) {
  CAPTURE(r.output);
  CHECK_FALSE(r.timedOut);
  CHECK(r.exitCode == 1);
  CHECK(r.output.find(program + ": error: ") == 0);
  CHECK(r.output.find(words) != std::string::npos);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

// A port on 127.0.0.1 where nothing listens.
int deadPort() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

}  // namespace

TEST_CASE("cli: --help works and bad flags are one clear line with exit 1") {
  for (auto [path, name] : std::vector<std::pair<std::string, std::string>>{
           {"meta/tessera-meta", "tessera-meta"}, {"chunk/tessera-chunk", "tessera-chunk"},
           {"client/tessera-mount", "tessera-mount"}, {"tools/tessera", "tessera"}}) {
    CAPTURE(name);
    auto help = run({bin(path), "--help"}, 10'000);
    CHECK(help.exitCode == 0);
    CHECK(help.output.find("usage:") != std::string::npos);
    expectCleanFailure(run({bin(path), "--no-such-flag"}, 10'000), name, "no-such-flag");
  }
  TempDir tmp;
  expectCleanFailure(run({bin("meta/tessera-meta")}, 10'000), "tessera-meta", "--dir");
  expectCleanFailure(run({bin("meta/tessera-meta"), "--dir", tmp.path(), "--listen", "nonsense"}, 10'000),
                     "tessera-meta", "address");
  expectCleanFailure(run({bin("meta/tessera-meta"), "--dir", tmp.path(), "--default-policy", "ec(0,2)"}, 10'000),
                     "tessera-meta", "policy");
  expectCleanFailure(run({bin("chunk/tessera-chunk"), "--meta", "127.0.0.1:1"}, 10'000),
                     "tessera-chunk", "--data");
  expectCleanFailure(run({bin("chunk/tessera-chunk"), "--data", tmp.path(), "--meta",
                          "127.0.0.1:1", "--log-memory", "64K"}, 10'000),
                     "tessera-chunk", "--log-memory");
  expectCleanFailure(run({bin("chunk/tessera-chunk"), "--data", tmp.path(), "--meta",
                          "127.0.0.1:1", "--log-memory", "lots"}, 10'000),
                     "tessera-chunk", "--log-memory");
  expectCleanFailure(run({bin("tools/tessera"), "policy", "set", tmp.path(), "raid5"}, 10'000),
                     "tessera", "policy");
  expectCleanFailure(run({bin("tools/tessera"), "policy", "get", tmp.path()}, 10'000), "tessera",
                     "not on a Tessera mount");
  expectCleanFailure(run({bin("tools/tessera"), "frobnicate"}, 10'000), "tessera", "unknown command");
}

TEST_CASE("cli: unusable data directories and unreachable peers are clear errors, not hangs") {
  TESSERA_REQUIRE_FUSE();  // runs as root: permission bits alone would not stop us
  TempDir tmp;
  writeAll(tmp / "a-file", "x");
  expectCleanFailure(run({bin("meta/tessera-meta"), "--dir", tmp / "a-file/sub"}, 10'000),
                     "tessera-meta", "a-file");
  expectCleanFailure(run({bin("chunk/tessera-chunk"), "--data", tmp / "a-file", "--meta",
                          "127.0.0.1:1"}, 10'000),
                     "tessera-chunk", "a-file");
  expectCleanFailure(run({bin("chunk/tessera-chunk"), "--data", "/proc/version/x", "--meta",
                          "127.0.0.1:1"}, 10'000),
                     "tessera-chunk", "/proc/version");
  std::string dead = "127.0.0.1:" + std::to_string(deadPort());
  REQUIRE(mkdir((tmp / "data").c_str(), 0755) == 0);
  expectCleanFailure(run({bin("chunk/tessera-chunk"), "--data", tmp / "data", "--meta", dead,
                          "--connect-timeout", "2s"}, 30'000),
                     "tessera-chunk", "cannot reach meta server");
  REQUIRE(mkdir((tmp / "mnt").c_str(), 0755) == 0);
  expectCleanFailure(run({bin("client/tessera-mount"), "--meta", dead, "--meta-timeout", "2s",
                          tmp / "mnt"}, 30'000),
                     "tessera-mount", "cannot reach meta server");
  expectCleanFailure(run({bin("client/tessera-mount"), "--meta", dead, tmp / "nowhere"}, 10'000),
                     "tessera-mount", "nowhere");
  expectCleanFailure(run({bin("tools/tessera"), "--meta", dead, "--timeout", "2s", "status"}, 30'000),
                     "tessera", "cannot reach meta server");
}

TEST_CASE("cli: a second meta server on the same directory and a second mount on a busy mount point are refused") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  expectCleanFailure(run({bin("meta/tessera-meta"), "--dir", cluster.metaDir(0)}, 10'000),
                     "tessera-meta", "another tessera-meta");
  expectCleanFailure(run({bin("client/tessera-mount"), "--meta", cluster.meta(), cluster.mnt()}, 10'000),
                     "tessera-mount", "busy");
  // The first mount is unharmed.
  writeAll(cluster.mnt() + "/still", "works");
  CHECK(readAll(cluster.mnt() + "/still") == "works");
  // Daemonised mode: the parent exits 0 only once the mount works; a second host mounts too.
  std::string second = cluster.dir() + "/second";
  REQUIRE(mkdir(second.c_str(), 0755) == 0);
  auto r = run({bin("client/tessera-mount"), "--meta", cluster.meta(), "--log-file",
                cluster.dir() + "/second-mount.log", second}, 30'000);
  REQUIRE_MESSAGE(r.exitCode == 0, r.output);
  CHECK(readAll(second + "/still") == "works");
  CHECK(run({"/usr/bin/fusermount3", "-u", second}, 10'000).exitCode == 0);
}

TEST_CASE("cli: tools/up starts and mounts a cluster, reuses it, adds a mount — tools/down stops it") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp;
  std::string root = TESSERA_SOURCE_DIR;
  std::string env = "TESSERA_BIN=" + buildDir() + " ";
  std::string args = " --dir " + tmp / "var" + " --mount " + tmp / "mnt";
  struct Down {
    std::string cmd;
    ~Down() { sh(cmd, 120'000); }
  } down{root + "/tools/down --dir " + tmp / "var"};

  auto up = sh(env + root + "/tools/up" + args + " 2>&1", 300'000);
  REQUIRE_MESSAGE(up.exitCode == 0, up.output);
  CHECK(up.output.find("Tessera is mounted at " + tmp / "mnt") != std::string::npos);
  CHECK(up.output.find("chunk servers: 6 up, 0 down") != std::string::npos);
  for (auto f : {"meta1.pid", "chunk1.pid", "chunk6.pid", "mount-mnt.pid", "meta1.log"}) {
    CHECK(access((tmp / "var/" + f).c_str(), R_OK) == 0);
  }
  writeAll(tmp / "mnt/hello", "hello");

  auto again = sh(env + root + "/tools/up" + args + " 2>&1", 300'000);
  REQUIRE_MESSAGE(again.exitCode == 0, again.output);
  CHECK(again.output.find("meta1 is running") != std::string::npos);
  CHECK(again.output.find("mount-mnt is running") != std::string::npos);

  auto second = sh(env + root + "/tools/up --dir " + tmp / "var" + " --mount " + tmp / "mnt2 2>&1", 300'000);
  REQUIRE_MESSAGE(second.exitCode == 0, second.output);
  CHECK(readAll(tmp / "mnt2/hello") == "hello");

  auto stopped = sh(root + "/tools/down --dir " + tmp / "var" + " 2>&1", 120'000);
  REQUIRE_MESSAGE(stopped.exitCode == 0, stopped.output);
  CHECK(sh("pgrep -f -- '" + tmp.path() + "/var'").exitCode == 1);
  CHECK(access((tmp / "mnt/hello").c_str(), F_OK) != 0);  // unmounted: the file is not there

  auto restarted = sh(env + root + "/tools/up" + args + " 2>&1", 300'000);
  REQUIRE_MESSAGE(restarted.exitCode == 0, restarted.output);
  CHECK(readAll(tmp / "mnt/hello") == "hello");
}
