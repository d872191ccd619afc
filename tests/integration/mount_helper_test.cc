// tools/mount.tessera, the mount(8) helper, run directly as mount(8) runs it
// (/sbin/mount.tessera SPEC DIR -o OPTIONS): it mounts, returns once the mount works, passes
// Tessera's options on to tessera-mount as flags and drops the ones mount(8) and fstab keep for
// themselves.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

std::string helper() { return std::string(TESSERA_SOURCE_DIR) + "/tools/mount.tessera"; }

// Runs the helper with TESSERA_MOUNT pointing at the tessera-mount of this build.
RunResult runHelper(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/usr/bin/env",
                                "TESSERA_MOUNT=" + buildDir() + "/client/tessera-mount", helper()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, 60'000);
}

bool mounted(const std::string& dir) {
  return run({"/usr/bin/mountpoint", "-q", dir}, 10'000).exitCode == 0;
}

// The command line of process `pid`, one element per argument.
std::vector<std::string> cmdline(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> out;
  std::string arg;
  while (std::getline(f, arg, '\0')) out.push_back(arg);
  return out;
}

bool hasPair(const std::vector<std::string>& args, const std::string& flag,
             const std::string& value) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == flag && args[i + 1] == value) return true;
  }
  return false;
}

// Unmounts `dir` and ends the daemon the helper started, also when a check fails.
struct HelperMount {
  std::string dir, pidFile;
  ~HelperMount() {
    if (mounted(dir)) run({"/usr/bin/fusermount3", "-u", "-z", dir}, 10'000);
    pid_t pid = pidOrZero();
    if (pid > 0 && kill(pid, 0) == 0) {
      kill(pid, SIGTERM);
      for (int i = 0; i < 500 && kill(pid, 0) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // bounded: 10 s
      }
      if (kill(pid, 0) == 0) kill(pid, SIGKILL);
    }
  }
  pid_t pidOrZero() const {
    try {
      return pid_t(std::stol(readAll(pidFile)));
    } catch (...) {
      return 0;
    }
  }
};

}  // namespace

TEST_CASE("mount.tessera: mounts as mount(8) calls it and passes the options on") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::string dir = cluster.dir() + "/via-helper";
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  HelperMount guard{dir, cluster.dir() + "/helper.pid"};
  std::string log = cluster.dir() + "/helper-mount.log";

  // As from an fstab line "META DIR tessera defaults,_netdev,nofail,attr_timeout=2s,... 0 0".
  auto r = runHelper({"tessera:" + cluster.meta(), dir, "-o",
                      "defaults,_netdev,nofail,noatime,attr_timeout=2s,io-timeout=7s,"
                      "lease-idle=3s,x-systemd.automount,log-file=" +
                          log + ",pid-file=" + guard.pidFile});
  REQUIRE_MESSAGE(r.exitCode == 0, r.output);
  // It returned once the mount works: no waiting here.
  REQUIRE(mounted(dir));
  writeAll(dir + "/through-helper", "written through the helper's mount\n");
  CHECK(readAll(cluster.mnt() + "/through-helper") == "written through the helper's mount\n");

  pid_t pid = guard.pidOrZero();
  REQUIRE(pid > 0);
  auto args = cmdline(pid);
  std::string all;
  for (auto& a : args) all += a + " ";
  CAPTURE(all);
  CHECK(args.at(0).find("tessera-mount") != std::string::npos);
  CHECK(hasPair(args, "--meta", cluster.meta()));
  CHECK(hasPair(args, "--attr-timeout", "2s"));
  CHECK(hasPair(args, "--io-timeout", "7s"));
  CHECK(hasPair(args, "--lease-idle", "3s"));
  CHECK(hasPair(args, "--log-file", log));
  CHECK(hasPair(args, "-o", "noatime"));
  for (const char* dropped : {"defaults", "_netdev", "nofail", "x-systemd"}) {
    CHECK_MESSAGE(all.find(dropped) == std::string::npos, dropped);
  }
  CHECK(readAll(log).find("mounted") != std::string::npos);

  // Mounting the same cluster there again is done already (so `mount -a` may run twice); any
  // other source on the busy mount point fails with mount(8)'s "mount failure" status.
  auto again = runHelper({cluster.meta(), dir, "-o", "log-file=" + log});
  CHECK_MESSAGE(again.exitCode == 0, again.output);
  CHECK(again.output.find("already mounted") != std::string::npos);
  CHECK(sh("grep -c ' " + dir + " ' /proc/self/mountinfo").output == "1\n");
  auto other = runHelper({"127.0.0.1:1", dir, "-o", "log-file=" + log});
  CHECK(other.exitCode == 32);

  // umount(8) unmounts it and the daemon exits.
  auto u = run({"/usr/bin/umount", dir}, 30'000);
  CHECK_MESSAGE(u.exitCode == 0, u.output);
  CHECK(!mounted(dir));
  bool exited = false;
  for (int i = 0; i < 750 && !exited; ++i) {
    exited = kill(pid, 0) != 0;
    if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // bounded: 15 s
  }
  CHECK(exited);
}

TEST_CASE("mount.tessera: -f only prints, bad options and sources are refused, -s drops them") {
  TempDir tmp("mount-helper");
  const std::string meta = "127.0.0.1:7001,127.0.0.1:7002";
  auto fake = runHelper({meta, tmp.path(), "-fv", "-o", "rw,user,attr-timeout=5s,allow_other"});
  CHECK_MESSAGE(fake.exitCode == 0, fake.output);
  CHECK(fake.output.find("--meta " + meta + " --attr-timeout 5s") != std::string::npos);
  CHECK(fake.output.find("-o rw,allow_other " + tmp.path()) != std::string::npos);
  CHECK(fake.output.find("user") == std::string::npos);
  CHECK(!mounted(tmp.path()));

  auto bogus = runHelper({meta, tmp.path(), "-f", "-o", "noatime,bogus=1"});
  CHECK(bogus.exitCode == 1);
  CHECK(bogus.output.find("unsupported option 'bogus=1'") != std::string::npos);
  auto ro = runHelper({meta, tmp.path(), "-f", "-o", "ro"});
  CHECK(ro.exitCode == 1);
  auto sloppy = runHelper({meta, tmp.path(), "-sfv", "-o", "noatime,bogus=1"});
  CHECK_MESSAGE(sloppy.exitCode == 0, sloppy.output);
  CHECK(sloppy.output.find("ignoring unsupported option 'bogus=1'") != std::string::npos);
  CHECK(sloppy.output.find("-o noatime " + tmp.path()) != std::string::npos);

  auto empty = runHelper({meta, tmp.path(), "-f", "-o", "attr-timeout="});
  CHECK(empty.exitCode == 1);
  auto source = runHelper({"not-a-server-list", tmp.path(), "-f"});
  CHECK(source.exitCode == 1);
  CHECK(source.output.find("not a list of meta servers") != std::string::npos);
  auto noDir = runHelper({meta, tmp.path() + "/missing", "-f"});
  CHECK(noDir.exitCode == 32);
  auto noArgs = runHelper({});
  CHECK(noArgs.exitCode == 1);
}
