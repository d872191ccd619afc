// VM images on Tessera with the real QEMU tools (issue 5), two mounts of one cluster standing
// for two hypervisor hosts: qemu-img create/convert/compare/check, qemu-io with O_DIRECT and
// native AIO or io_uring, discard, QEMU's image locking across mounts, live migration of a
// running (guestless, TCG) qemu-system-x86_64 from a disk on one mount to the same image on the
// other, also with a chunk server killed at the handover, and durability of flushed writes
// across kill -9 of the mount and of m chunk servers.
//
// Every QEMU process is a test::Process (tests/support/qemu.h): SIGKILLed when it goes out of
// scope, also when a check fails; every wait is bounded. Skipped with the reason when the QEMU
// binaries are missing (tools/deps --test installs them).
#include "tests/support/qemu.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = 1 << 20;

#define TESSERA_REQUIRE_QEMU()                      \
  do {                                              \
    TESSERA_REQUIRE_FUSE();                         \
    std::string whyQemu_ = qemuUnavailableReason(); \
    if (!whyQemu_.empty()) {                        \
      MESSAGE("skipped: " << whyQemu_);             \
      return;                                       \
    }                                               \
  } while (0)

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Polls `ready` every 20 ms until it holds or `timeoutMs` passed.
template <typename F>
bool waitUntil(int timeoutMs, F ready) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!ready()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling, bounded
  }
  return true;
}

std::string slurp(const std::string& path) {
  try {
    return readAll(path);
  } catch (...) {
    return "";
  }
}

#define CHECK_IO(r) \
  CHECK_MESSAGE(ioClean(r), "qemu-io exit " << (r).exitCode << ":\n" << (r).output)
#define REQUIRE_IO(r) \
  REQUIRE_MESSAGE(ioClean(r), "qemu-io exit " << (r).exitCode << ":\n" << (r).output)

uint64_t allocated(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    throw std::runtime_error("stat " + path + ": " + strerror(errno));
  return uint64_t(st.st_blocks) * 512;
}

uint64_t sizeOf(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    throw std::runtime_error("stat " + path + ": " + strerror(errno));
  return uint64_t(st.st_size);
}

// KiB used on disk by every chunk server's data directory together (du).
uint64_t chunkServerKiB(Cluster& cluster) {
  std::string dirs;
  for (int i = 0; i < cluster.chunks(); ++i) dirs += " " + shellQuote(cluster.chunkDir(i));
  auto r = sh("du -sk -c" + dirs + " | tail -1");
  return r.exitCode == 0 ? std::stoull(r.output) : 0;
}

// The two storage policies a VM image directory gets in these tests, as directory names under
// a mount: "ec" (ec(4,2)) and "rep" (replica(3)).
const std::vector<std::pair<std::string, std::string>> kPolicies{{"ec", "ec(4,2)"},
                                                                 {"rep", "replica(3)"}};

void makePolicyDirs(const std::string& mnt) {
  for (auto& [name, policy] : kPolicies) {
    std::string dir = mnt + "/" + name;
    REQUIRE(mkdir(dir.c_str(), 0755) == 0);
    auto set = run({adminBin(), "policy", "set", dir, policy}, 30'000);
    REQUIRE_MESSAGE(set.exitCode == 0, set.output);
  }
}

}  // namespace

TEST_CASE("qemu: qemu-img create makes sparse raw and qcow2 images") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  for (auto& [name, policy] : kPolicies) {
    CAPTURE(policy);
    std::string raw = cluster.mnt() + "/" + name + "/disk.raw";
    std::string qcow2 = cluster.mnt() + "/" + name + "/disk.qcow2";
    auto r = qemuImg({"create", "-f", "raw", raw, "1G"});
    REQUIRE_MESSAGE(r.exitCode == 0, r.output);
    r = qemuImg({"create", "-f", "qcow2", qcow2, "1G"});
    REQUIRE_MESSAGE(r.exitCode == 0, r.output);
    CHECK(sizeOf(raw) == 1024 * kMiB);
    auto du = sh("du -k " + shellQuote(raw) + " " + shellQuote(qcow2));
    MESSAGE(policy << ": raw 1G uses " << allocated(raw) << " bytes, qcow2 1G uses "
                   << allocated(qcow2) << " bytes (file size " << sizeOf(qcow2) << "); du -k:\n"
                   << du.output);
    // QEMU writes the first 4 KiB of a raw image (to probe O_DIRECT alignment later) and about
    // 200 KiB of qcow2 metadata. st_blocks counts the MiBs written (capped at the file's
    // size): one for the raw image, none of the 1G it was not written.
    CHECK(allocated(raw) <= 1 * kMiB);
    CHECK(allocated(qcow2) <= 1 * kMiB);
    MESSAGE(policy << ": the chunk servers' directories hold " << chunkServerKiB(cluster)
                   << " KiB in all");
    auto info = qemuImg({"info", "--output=json", qcow2});
    CHECK_MESSAGE(info.exitCode == 0, info.output);
    CHECK(info.output.find("\"virtual-size\": 1073741824") != std::string::npos);
    auto check = qemuImg({"check", qcow2});
    CHECK_MESSAGE(check.exitCode == 0, check.output);
  }
}

TEST_CASE("qemu: qemu-img convert in and out compares clean, qemu-img check is clean") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  // A local image with patterns in three of its four 64 MiB chunks, chunk 2 a hole.
  TempDir local("qemu-local");
  std::string source = local / "source.raw";
  REQUIRE(qemuImg({"create", "-f", "raw", source, "256M"}).exitCode == 0);
  REQUIRE_IO(qemuIo({"-f", "raw"}, source,
                    {"write -P 0xab 0 1M", "write -P 0xcd 70M 3M", "write -P 0x11 200M 64k",
                     "write -P 0x5e 255M 1M"}));
  for (auto& [name, policy] : kPolicies) {
    CAPTURE(policy);
    std::string dir = cluster.mnt() + "/" + name;
    for (std::string format : {"qcow2", "raw"}) {
      CAPTURE(format);
      std::string image = dir + "/in." + format;
      auto start = Clock::now();
      // In, with the destination opened O_DIRECT (-t none) as a VM would.
      auto in = qemuImg({"convert", "-p", "-f", "raw", "-O", format, "-t", "none", source, image});
      REQUIRE_MESSAGE(in.exitCode == 0, in.output);
      MESSAGE(policy << " " << format << ": convert in took " << secondsSince(start)
                     << " s, image uses " << allocated(image) << " bytes");
      auto cmp = qemuImg({"compare", "-f", "raw", "-F", format, source, image});
      CHECK_MESSAGE(cmp.exitCode == 0, cmp.output);
      CHECK(cmp.output.find("Images are identical") != std::string::npos);
      if (format == "qcow2") {
        auto check = qemuImg({"check", image});
        CHECK_MESSAGE(check.exitCode == 0, check.output);
        CHECK(check.output.find("No errors were found") != std::string::npos);
      }
      // Out, the source on the mount read O_DIRECT (-T none).
      std::string out = local / ("out-" + name + "." + format);
      auto back = qemuImg({"convert", "-f", format, "-T", "none", "-O", format, image, out});
      REQUIRE_MESSAGE(back.exitCode == 0, back.output);
      cmp = qemuImg({"compare", "-f", format, "-F", format, image, out});
      CHECK_MESSAGE(cmp.exitCode == 0, cmp.output);
      cmp = qemuImg({"compare", "-f", "raw", "-F", format, source, out});
      CHECK_MESSAGE(cmp.exitCode == 0, cmp.output);
      // And the patterns themselves, read O_DIRECT from the mount.
      CHECK_IO(qemuIo({"-f", format, "-t", "none", "-i", "native", "-r"}, image,
                      {"read -P 0xab 0 1M", "read -P 0xcd 70M 3M", "read -P 0x11 200M 64k",
                       "read -P 0x5e 255M 1M", "read -P 0 1M 1M", "read -P 0 140M 1M"}));
    }
  }
}

TEST_CASE("qemu: qemu-io with O_DIRECT and native AIO or io_uring verifies its patterns") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  ExtraMount b(cluster, "mnt-b");
  // Stripe-aligned and not (an ec(4,2) stripe is 256 KiB, a cell 64 KiB), 512-byte sectors,
  // requests across a chunk boundary (64 MiB), and asynchronous requests in flight together.
  const std::vector<std::string> writes{"write -P 0xab 0 1M",
                                        "write -P 0xc1 200704 300032",  // 392 and 586 sectors
                                        "write -P 0x51 1049088 512",
                                        "write -P 0x52 1050112 512",  // single sectors
                                        "write -P 0x53 1051136 7680",
                                        "write -P 0x77 67043328 131072",  // over 64 MiB
                                        "aio_write -P 0x31 8M 64k",
                                        "aio_write -P 0x32 8256k 64k",
                                        "aio_write -P 0x33 8320k 4k",
                                        "aio_write -P 0x34 8388096 512",
                                        "aio_flush"};
  const std::vector<std::string> reads{"read -P 0xab 0 200704",      "read -P 0xc1 200704 300032",
                                       "read -P 0xab 500736 547840", "read -P 0 1M 512",
                                       "read -P 0x51 1049088 512",   "read -P 0 1049600 512",
                                       "read -P 0x52 1050112 512",   "read -P 0 1050624 512",
                                       "read -P 0x53 1051136 7680",  "read -P 0x77 67043328 131072",
                                       "read -P 0x31 8M 64k",        "read -P 0x32 8256k 64k",
                                       "read -P 0x33 8320k 4k",      "read -P 0 8523776 8192",
                                       "read -P 0x34 8388096 512"};
  for (auto& [name, policy] : kPolicies) {
    for (std::string format : {"raw", "qcow2"}) {
      for (std::string aio : {"native", "io_uring"}) {
        CAPTURE(policy);
        CAPTURE(format);
        CAPTURE(aio);
        std::string file = name + "/" + aio + "." + format;
        std::string image = cluster.mnt() + "/" + file;
        REQUIRE(qemuImg({"create", "-f", format, image, "128M"}).exitCode == 0);
        std::vector<std::string> options{"-f", format, "-t", "none", "-i", aio};
        auto start = Clock::now();
        std::vector<std::string> all = writes;
        all.insert(all.end(), reads.begin(), reads.end());
        CHECK_IO(qemuIo(options, image, all));
        MESSAGE(policy << " " << format << " aio=" << aio << ": " << writes.size() << " writes and "
                       << reads.size() << " verified reads in " << secondsSince(start) << " s");
        // A new process, and the other mount, read the same.
        CHECK_IO(qemuIo(options, image, reads));
        CHECK_IO(qemuIo(options, b.path + "/" + file, reads));
        if (format == "qcow2") {
          auto check = qemuImg({"check", image});
          CHECK_MESSAGE(check.exitCode == 0, check.output);
        }
      }
    }
  }
}

TEST_CASE("qemu: an O_DIRECT write through one mount is read at once through the other") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  ExtraMount b(cluster, "mnt-b");
  TempDir work("qemu-io");
  for (auto& [name, policy] : kPolicies) {
    for (std::string format : {"raw", "qcow2"}) {
      CAPTURE(policy);
      CAPTURE(format);
      std::string file = name + "/shared." + format;
      REQUIRE(qemuImg({"create", "-f", format, cluster.mnt() + "/" + file, "64M"}).exitCode == 0);
      std::vector<std::string> options{"-f", format, "-t", "none", "-i", "native"};
      // Separate processes, each opening the image anew: A writes, B reads at once, and back.
      for (int round = 0; round < 3; ++round) {
        char pa[8], pb[8];
        snprintf(pa, sizeof pa, "0x%02x", 0x10 + round);
        snprintf(pb, sizeof pb, "0x%02x", 0x20 + round);
        CHECK_IO(qemuIo(options, cluster.mnt() + "/" + file,
                        {std::string("write -P ") + pa + " 4096 1M"}));
        CHECK_IO(qemuIo(options, b.path + "/" + file,
                        {std::string("read -P ") + pa + " 4096 1M",
                         std::string("write -P ") + pb + " 1M 512"}));
        CHECK_IO(qemuIo(options, cluster.mnt() + "/" + file,
                        {std::string("read -P ") + pa + " 4096 1044480",
                         std::string("read -P ") + pb + " 1M 512",
                         std::string("read -P ") + pa + " 1049088 3584"}));
      }
      // B keeps the image open (read-only, sharing it with a writer: -r -U) and reads what A
      // writes meanwhile: nothing it read before may come back from a cache.
      if (format == "raw") {
        QemuIoSession reader(work.path(), name + "-reader",
                             {"-r", "-U", "-f", format, "-t", "none", "-i", "native"},
                             b.path + "/" + file);
        std::string why;
        REQUIRE_MESSAGE(reader.opened(&why), why);
        for (int round = 0; round < 3; ++round) {
          char p[8];
          snprintf(p, sizeof p, "0x%02x", 0x40 + round);
          CHECK_IO(qemuIo({"-f", format, "-t", "none", "-i", "native"}, cluster.mnt() + "/" + file,
                          {std::string("write -P ") + p + " 0 256k"}));
          auto out = reader.command(std::string("read -P ") + p + " 0 256k");
          CHECK_MESSAGE(outputClean(out), "round " << round << ": " << out);
        }
        CHECK(reader.quit());
      }
    }
  }
}

TEST_CASE("qemu: discard makes a range read zeros and take no space again") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  for (auto& [name, policy] : kPolicies) {
    CAPTURE(policy);
    std::string image = cluster.mnt() + "/" + name + "/trim.raw";
    REQUIRE(qemuImg({"create", "-f", "raw", image, "256M"}).exitCode == 0);
    std::vector<std::string> options{"-f", "raw", "-t", "none", "-i", "native", "-d", "unmap"};
    // Data in chunks 0 and 1 (64 MiB each); then all of chunk 1 and part of chunk 0 discarded.
    REQUIRE_IO(qemuIo(options, image, {"write -P 0xab 0 4M", "write -P 0xcd 64M 64M"}));
    uint64_t before = allocated(image);
    auto discard = qemuIo(options, image, {"discard 64M 64M", "discard 1M 1M"});
    CHECK_IO(discard);
    uint64_t after = allocated(image);
    MESSAGE(policy << ": " << before << " bytes allocated before the discard, " << after
                   << " after");
    CHECK_IO(qemuIo(
        options, image,
        {"read -P 0xab 0 1M", "read -P 0 1M 1M", "read -P 0xab 2M 2M", "read -P 0 64M 64M"}));
    CHECK(after + 64 * kMiB <= before);
    // qemu-img map asks SEEK_DATA/SEEK_HOLE: the discarded chunk is a hole.
    auto map = qemuImg({"map", "--output=json", "-f", "raw", image});
    const std::string hole =
        R"("start": 67108864, "length": 201326592, "depth": 0, "present": true, )"
        R"("zero": true, "data": false)";
    CHECK_MESSAGE(map.output.find(hole) != std::string::npos, map.output);
  }
}

TEST_CASE("qemu: image locking holds across mounts: a second writer on another host is refused") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  ExtraMount b(cluster, "mnt-b");
  TempDir work("qemu-lock");
  const std::string file = "ec/locked.qcow2";
  REQUIRE(qemuImg({"create", "-f", "qcow2", cluster.mnt() + "/" + file, "64M"}).exitCode == 0);
  std::vector<std::string> options{"-f", "qcow2", "-t", "none", "-i", "native"};

  // First, everything on one mount (the kernel's own locks answer): this proves the test asks
  // what QEMU refuses on a local disk.
  // Then the second process through mount B, as on a second host: the same answers need the
  // locks to be cluster-wide.
  for (std::string other : {cluster.mnt(), b.path}) {
    CAPTURE(other);
    QemuIoSession holder(work.path(), other == b.path ? "holder-b" : "holder-a", options,
                         cluster.mnt() + "/" + file);
    std::string why;
    REQUIRE_MESSAGE(holder.opened(&why), why);
    auto out = holder.command("write -P 0x7e 0 64k");
    REQUIRE_MESSAGE(outputClean(out), out);

    // Inspecting a running VM's image works with -U (force share), as on a local disk, where
    // `qemu-img info` without -U is refused while a writer holds the image.
    auto info = qemuImg({"info", "-U", other + "/" + file});
    CHECK_MESSAGE(info.exitCode == 0, info.output);
    CHECK(info.output.find("file format: qcow2") != std::string::npos);

    auto second = qemuIo(options, other + "/" + file, {"read 0 4k"}, 60'000);
    CHECK(second.exitCode != 0);
    CHECK_MESSAGE(second.output.find("Failed to get \"write\" lock") != std::string::npos,
                  second.output);
    auto reader = qemuIo({"-r", "-f", "qcow2", "-t", "none"}, other + "/" + file, {"read 0 4k"});
    CHECK(reader.exitCode != 0);
    CHECK_MESSAGE(reader.output.find("Failed to get shared \"write\" lock") != std::string::npos,
                  reader.output);

    // Once the holder has closed the image, the other opens it read-write.
    REQUIRE(holder.quit());
    CHECK_IO(qemuIo(options, other + "/" + file, {"read -P 0x7e 0 64k"}, 60'000));
  }
}

namespace {

// Live migration of a running VM whose disk is `image` through mount A (`imageA`) to a VM
// opening the same image through mount B (`imageB`); with `killChunk` >= 0 that chunk server is
// killed (SIGKILL) at the handover (QEMU's pause-before-switchover: after the RAM is copied,
// before the source's final flush and the destination's activation).
void migrate(Cluster& cluster, const std::string& imageA, const std::string& imageB,
             int killChunk) {
  TempDir work("qemu-mig");
  REQUIRE(qemuImg({"create", "-f", "qcow2", imageA, "256M"}).exitCode == 0);
  Vm source(work.path(), "src", imageA);
  auto out = source.io("write -P 0x5a 0 1M");
  REQUIRE_MESSAGE((outputClean(out) && out.find("wrote 1048576/1048576") != std::string::npos),
                  out);
  out = source.io("write -P 0x5b 100M 512k");
  REQUIRE_MESSAGE(outputClean(out), out);

  std::string channel = work / "migration.sock";
  Vm destination(work.path(), "dst", imageB, "unix:" + channel);
  if (killChunk >= 0) {
    auto r = source.qmp->execute(
        R"({"execute": "migrate-set-capabilities", "arguments": {"capabilities": )"
        R"([{"capability": "pause-before-switchover", "state": true}]}})");
    REQUIRE_MESSAGE(r.rfind("{\"return\"", 0) == 0, r);
  }
  auto start = Clock::now();
  auto r = source.qmp->execute(R"({"execute": "migrate", "arguments": {"uri": "unix:)" + channel +
                               "\"}}");
  REQUIRE_MESSAGE(r.rfind("{\"return\"", 0) == 0, r);
  std::string status;
  if (killChunk >= 0) {
    status = waitMigration(*source.qmp, "pre-switchover");
    REQUIRE(status == "pre-switchover");
    cluster.stopChunk(killChunk, SIGKILL);
    MESSAGE("killed chunk server " << killChunk << " at the switchover");
    r = source.qmp->execute(
        R"({"execute": "migrate-continue", "arguments": {"state": "pre-switchover"}})");
    REQUIRE_MESSAGE(r.rfind("{\"return\"", 0) == 0, r);
  }
  status = waitMigration(*source.qmp, "completed");
  MESSAGE("migration: " << status << " after " << secondsSince(start) << " s");
  REQUIRE_MESSAGE(status == "completed", slurp(source.log) << slurp(destination.log));
  // The destination runs once the migration is complete (it was started without -S).
  CHECK(waitUntil(30'000, [&] {
    return Qmp::field(destination.qmp->execute(R"({"execute": "query-status"})"), "status") ==
           "running";
  }));

  // The destination reads what the source wrote, and writes; the source is still there (as
  // under libvirt until it cleans up), its image inactive.
  out = destination.io("read -P 0x5a 0 1M");
  CHECK_MESSAGE((outputClean(out) && out.find("read 1048576/1048576") != std::string::npos), out);
  out = destination.io("read -P 0x5b 100M 512k");
  CHECK_MESSAGE(outputClean(out), out);
  auto writeStart = Clock::now();
  out = destination.io("write -P 0xa5 512k 1M");
  CHECK_MESSAGE((outputClean(out) && out.find("wrote 1048576/1048576") != std::string::npos), out);
  MESSAGE("the destination's first write took " << secondsSince(writeStart) << " s");
  out = destination.io("write -P 0xa6 200M 64k");
  CHECK_MESSAGE(outputClean(out), out);
  out = destination.io("read -P 0xa5 512k 1M");
  CHECK_MESSAGE(outputClean(out), out);
  CHECK(source.quit());
  CHECK(destination.quit());

  // Mount A reads the destination's writes and what stayed of the source's.
  CHECK_IO(qemuIo({"-f", "qcow2", "-t", "none", "-i", "native", "-r"}, imageA,
                  {"read -P 0x5a 0 512k", "read -P 0xa5 512k 1M", "read -P 0x5b 100M 512k",
                   "read -P 0xa6 200M 64k"}));
  auto check = qemuImg({"check", imageA});
  CHECK_MESSAGE(check.exitCode == 0, check.output);
}

}  // namespace

TEST_CASE("qemu: a running VM live-migrates between two mounts of one image") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  // Mount B hears of the source's writes 3 s late, as over a slow network: the destination must
  // not depend on the meta leader's invalidations arriving before it activates the image (they
  // race with the end of the migration; QEMU reads the image's length and metadata at once).
  ExtraMount b(cluster, "mnt-b", "", {"--fault-invalidation-delay", "3s"});
  for (auto& [name, policy] : kPolicies) {
    CAPTURE(policy);
    migrate(cluster, cluster.mnt() + "/" + name + "/vm.qcow2", b.path + "/" + name + "/vm.qcow2",
            -1);
  }
}

// Both VMs on one mount, as on one host: what the two-mount case must match. (It passes where the
// two-mount case fails for want of coherence between mounts, which shows the test is right.)
TEST_CASE("qemu: a running VM live-migrates to a VM on the same mount") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  std::string image = cluster.mnt() + "/ec/vm.qcow2";
  migrate(cluster, image, image, -1);
}

TEST_CASE("qemu: live migration completes with a chunk server killed at the handover") {
  TESSERA_REQUIRE_QEMU();
  Cluster::Options o;
  o.chunks = 7;  // new chunks still find six servers up
  Cluster cluster(o);
  makePolicyDirs(cluster.mnt());
  ExtraMount b(cluster, "mnt-b");
  migrate(cluster, cluster.mnt() + "/ec/vm.qcow2", b.path + "/ec/vm.qcow2", 3);
}

TEST_CASE("qemu: flushed writes survive kill -9 of the mount and of m chunk servers") {
  TESSERA_REQUIRE_QEMU();
  Cluster cluster;
  makePolicyDirs(cluster.mnt());
  auto mountA = std::make_unique<ExtraMount>(cluster, "mnt-a");
  // Through the page cache (qemu-io's default, cache=writeback) and O_DIRECT; raw and qcow2.
  struct Case {
    std::string file, format;
    std::vector<std::string> options;
  };
  std::vector<Case> cases;
  for (auto& [name, policy] : kPolicies) {
    cases.push_back({name + "/wb.raw", "raw", {"-f", "raw"}});
    cases.push_back({name + "/wb.qcow2", "qcow2", {"-f", "qcow2"}});
    cases.push_back(
        {name + "/direct.qcow2", "qcow2", {"-f", "qcow2", "-t", "none", "-i", "native"}});
  }
  const std::vector<std::string> writes{"write -P 0x42 0 3M", "write -P 0x43 5M 100k",
                                        "write -P 0x44 70M 4k", "flush"};
  const std::vector<std::string> reads{"read -P 0x42 0 3M", "read -P 0 3M 2M",
                                       "read -P 0x43 5M 100k", "read -P 0x44 70M 4k"};
  for (auto& c : cases) {
    std::string image = mountA->path + "/" + c.file;
    REQUIRE(qemuImg({"create", "-f", c.format, image, "128M"}).exitCode == 0);
    auto w = qemuIo(c.options, image, writes);
    REQUIRE_IO(w);
  }
  // The mount dies without a chance to write anything back, then two chunk servers.
  mountA->process.signal(SIGKILL);
  REQUIRE(mountA->process.wait(10'000) != -1);
  mountA.reset();
  cluster.stopChunk(1, SIGKILL);
  cluster.stopChunk(4, SIGKILL);
  ExtraMount again(cluster, "mnt-a2");
  for (auto& c : cases) {
    CAPTURE(c.file);
    CHECK_IO(qemuIo({"-f", c.format, "-t", "none", "-r"}, again.path + "/" + c.file, reads));
  }
}
