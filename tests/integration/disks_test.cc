// A chunk server with several disks, and real faults on real disks: each disk is a small ext4
// file system in an image file, loop-mounted under the test's temp dir. A disk fills up (a
// filler file takes its room), or dies: FS_IOC_SHUTDOWN makes the kernel answer every later
// read, write and open on that file system with EIO — what ext4 does itself when its device
// fails (device-mapper, the usual way to fake a dead device, is not in this kernel). The server
// marks the disk full or failed, keeps serving its other disk, and `tessera status` says so;
// files stay readable and writable.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <sstream>

#include "tests/integration/helpers.h"
#include "tests/support/process.h"

using namespace tessera::test;
namespace stdfs = std::filesystem;

#ifndef FS_IOC_SHUTDOWN
#define FS_IOC_SHUTDOWN _IOR('X', 125, __u32)
#endif

namespace {

constexpr uint32_t kShutdownNoLogFlush = 2;  // EXT4_GOING_FLAGS_NOLOGFLUSH

bool waitUntil(int timeoutMs, const std::function<bool()>& done) {
  for (int waited = 0;; waited += 100) {
    if (done()) return true;
    if (waited >= timeoutMs) return false;
    usleep(100'000);
  }
}

// A small ext4 file system in `image`, loop-mounted at `mountpoint` for the life of the object
// (the loop device goes with the last unmount: mount -o loop sets autoclear). The data
// directory of the chunk server is dir() inside it.
class LoopDisk {
 public:
  LoopDisk(const std::string& image, const std::string& mountpoint, uint64_t bytes)
      : image_(image), mountpoint_(mountpoint) {
    auto fail = [&](const std::string& what, const RunResult& r) {
      throw std::runtime_error(what + ": " + r.output);
    };
    if (truncate(image.c_str(), 0) != 0 && errno != ENOENT) throw std::runtime_error("truncate");
    int fd = ::open(image.c_str(), O_CREAT | O_RDWR, 0644);
    if (fd < 0 || ftruncate(fd, off_t(bytes)) != 0) throw std::runtime_error("create " + image);
    ::close(fd);
    // -m 0: no blocks reserved for root, so the server sees the whole file system's room.
    auto mk = run({"/usr/sbin/mkfs.ext4", "-q", "-F", "-m", "0", image}, 60'000);
    if (mk.exitCode != 0) fail("mkfs.ext4 " + image, mk);
    mkdir(mountpoint.c_str(), 0755);
    auto m = run({"/usr/bin/mount", "-o", "loop", image, mountpoint}, 60'000);
    if (m.exitCode != 0) fail("mount -o loop " + image, m);
    mounted_ = true;
  }
  ~LoopDisk() {
    if (!mounted_) return;
    // The servers are gone by now (the Cluster goes first); a lazy unmount if anything lingers.
    if (run({"/usr/bin/umount", mountpoint_}, 30'000).exitCode != 0) {
      run({"/usr/bin/umount", "-l", mountpoint_}, 30'000);
    }
  }
  LoopDisk(const LoopDisk&) = delete;
  LoopDisk& operator=(const LoopDisk&) = delete;

  std::string dir() const { return mountpoint_ + "/data"; }
  const std::string& mountpoint() const { return mountpoint_; }

  // From now on every I/O on the file system fails with EIO, as after a dead device.
  void shutdown() {
    int fd = ::open(mountpoint_.c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(fd >= 0);
    uint32_t flags = kShutdownNoLogFlush;
    int r = ioctl(fd, FS_IOC_SHUTDOWN, &flags);
    int err = errno;
    ::close(fd);
    REQUIRE_MESSAGE(r == 0, "FS_IOC_SHUTDOWN: " << strerror(err));
  }

  uint64_t freeBytes() const {
    struct statvfs v;
    REQUIRE(statvfs(mountpoint_.c_str(), &v) == 0);
    return uint64_t(v.f_bavail) * v.f_frsize;
  }

  // Shard files in the data directory.
  int shards() const {
    int n = 0;
    for (auto& e : stdfs::recursive_directory_iterator(dir() + "/shards")) {
      if (e.is_regular_file() && e.path().extension() != ".tmp") ++n;
    }
    return n;
  }

 private:
  std::string image_, mountpoint_;
  bool mounted_ = false;
};

// Why loop-mounted ext4 file systems cannot be made here ("" when they can).
std::string loopDisksUnavailable(const std::string& tmp) {
  if (access("/usr/sbin/mkfs.ext4", X_OK) != 0) return "no /usr/sbin/mkfs.ext4 (e2fsprogs)";
  if (access("/usr/bin/mount", X_OK) != 0) return "no /usr/bin/mount";
  try {
    LoopDisk probe(tmp + "/probe.img", tmp + "/probe", 8 << 20);
  } catch (std::exception& e) {
    return std::string("cannot loop-mount an ext4 image: ") + e.what();
  }
  return "";
}

// The line of `tessera status` about the disk at `dir`, "" if it has none.
std::string diskLine(const std::string& status, const std::string& dir) {
  std::istringstream lines(status);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find(" disk ") != std::string::npos && line.find(dir + " ") != std::string::npos) {
      return line;
    }
  }
  return "";
}

// `count` files of 200 KB .. 1.5 MB under `prefix`, written through the mount.
std::map<std::string, std::string> writeFiles(Cluster& c, const std::string& prefix, int count,
                                              std::mt19937_64& rng) {
  std::map<std::string, std::string> files;
  for (int i = 0; i < count; ++i) {
    std::string name = prefix + std::to_string(i);
    files[name] = randomBytes(rng, 200'000 + rng() % 1'300'000);
    writeAll(c.mnt() + "/" + name, files[name]);
  }
  return files;
}

// Reads every file from the chunk servers (a fresh mount: nothing cached).
void checkFiles(Cluster& c, const std::map<std::string, std::string>& files) {
  c.unmount();
  c.mount();
  for (auto& [name, content] : files) {
    CAPTURE(name);
    std::string got = readAll(c.mnt() + "/" + name);
    CHECK(got.size() == content.size());
    CHECK((got == content));
  }
}

}  // namespace

TEST_CASE("disks: a chunk server whose disk fills up puts new shards on its other disk") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp("disks-full");
  if (std::string why = loopDisksUnavailable(tmp.path()); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  std::mt19937_64 rng(testSeed(41));
  LoopDisk a(tmp / "a.img", tmp / "a", 64 << 20);
  LoopDisk b(tmp / "b.img", tmp / "b", 64 << 20);
  Cluster::Options o;
  o.chunkData[0] = {a.dir(), b.dir()};
  o.chunkArgs = {"--disk-reserve", "8M"};
  Cluster c(o);

  auto files = writeFiles(c, "before", 8, rng);
  REQUIRE(a.shards() > 0);
  REQUIRE(b.shards() > 0);  // new shards spread over both

  // Something else fills disk b up to its last MiB.
  std::string filler = b.mountpoint() + "/filler";
  {
    int fd = ::open(filler.c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    uint64_t room = b.freeBytes();
    REQUIRE(room > (2 << 20));
    CHECK(fallocate(fd, 0, 0, off_t(room - (1 << 20))) == 0);
    ::close(fd);
  }
  std::string status;
  bool full = waitUntil(15'000, [&] {
    status = c.status();
    return diskLine(status, b.dir()).find("FULL") != std::string::npos;
  });
  INFO(status);
  REQUIRE(full);
  CHECK(diskLine(status, b.dir()).find("below the reserve") != std::string::npos);
  CHECK(diskLine(status, a.dir()).find(" ok ") != std::string::npos);

  int onA = a.shards(), onB = b.shards();
  auto more = writeFiles(c, "after", 8, rng);
  CHECK(b.shards() == onB);  // nothing new on the full disk
  CHECK(a.shards() > onA);   // the server still takes shards, on its other disk
  files.insert(more.begin(), more.end());
  checkFiles(c, files);

  // Room again: the disk takes shards again.
  REQUIRE(unlink(filler.c_str()) == 0);
  bool ok = waitUntil(15'000, [&] {
    status = c.status();
    return diskLine(status, b.dir()).find(" ok ") != std::string::npos;
  });
  INFO(status);
  CHECK(ok);
}

TEST_CASE("disks: a chunk server whose disk fails with EIO serves its other disk, files stay "
          "readable and writable") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp("disks-eio");
  if (std::string why = loopDisksUnavailable(tmp.path()); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  std::mt19937_64 rng(testSeed(43));
  LoopDisk a(tmp / "a.img", tmp / "a", 64 << 20);
  LoopDisk b(tmp / "b.img", tmp / "b", 64 << 20);
  Cluster::Options o;
  // Seven servers: with every disk of server 0 gone, ec(4,2) chunks still find six. Placement
  // weighs free space: capped, the others do not dwarf server 0's two small disks.
  o.chunks = 7;
  o.chunkData[0] = {a.dir(), b.dir()};
  o.chunkArgs = {"--capacity", "120M"};
  Cluster c(o);

  auto files = writeFiles(c, "before", 16, rng);
  INFO("shards on a: " << a.shards() << ", on b: " << b.shards() << "\n" << c.status());
  REQUIRE(a.shards() > 0);
  REQUIRE(b.shards() > 0);
  int onB = b.shards();

  a.shutdown();
  std::string status;
  bool failed = waitUntil(15'000, [&] {
    status = c.status();
    return diskLine(status, a.dir()).find("FAILED") != std::string::npos;
  });
  {
    INFO(status);
    REQUIRE(failed);
    CHECK(diskLine(status, a.dir()).find("Input/output error") != std::string::npos);
    CHECK(diskLine(status, b.dir()).find(" ok ") != std::string::npos);
    CHECK(status.find("takes no new shards") == std::string::npos);
    CHECK(status.find("7 up, 0 down") != std::string::npos);
  }
  // Shards on the dead disk are read around.
  checkFiles(c, files);

  // New files: the server keeps taking shards, on the disk that works.
  auto more = writeFiles(c, "after-a", 16, rng);
  CHECK(b.shards() > onB);
  files.insert(more.begin(), more.end());
  checkFiles(c, files);

  // Its last disk dies too: the server takes no new shards, the others take them all.
  b.shutdown();
  bool none = waitUntil(15'000, [&] {
    status = c.status();
    return status.find("takes no new shards") != std::string::npos;
  });
  {
    INFO(status);
    REQUIRE(none);
    CHECK(diskLine(status, b.dir()).find("FAILED") != std::string::npos);
  }
  more = writeFiles(c, "after-b", 10, rng);
  files.insert(more.begin(), more.end());
  checkFiles(c, files);
  CHECK(c.chunkRunning(0));
}
