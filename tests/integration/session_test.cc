// Sessions with real processes: a mount killed with SIGKILL loses its session after the
// session timeout, and with it the files it held open (an unlinked one is deleted, its chunks
// collected); a mount that is merely idle keeps its session through keepalives; a mount that
// was stopped past the timeout opens a new session and keeps working.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

// --session-timeout of these clusters: short, with room for keepalives on a loaded machine.
constexpr int kTimeoutS = 3;

double nowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

size_t countOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// "files   N inodes, M chunks" of `tessera status`.
std::pair<long, long> inodesAndChunks(Cluster& c) {
  std::string s = c.status();
  auto at = s.find("files ");
  REQUIRE_MESSAGE(at != std::string::npos, s);
  long inodes = 0, chunks = 0;
  REQUIRE(sscanf(s.c_str() + at, "files %ld inodes, %ld chunks", &inodes, &chunks) == 2);
  return {inodes, chunks};
}

// Polls until `ready` holds, at most `seconds`.
template <typename F>
bool waitUntil(double seconds, F ready) {
  double end = nowSeconds() + seconds;
  while (nowSeconds() < end) {
    if (ready()) return true;
    usleep(100'000);  // polling the cluster's status, bounded
  }
  return ready();
}

}  // namespace

TEST_CASE("sessions: a killed mount's orphan goes after the session timeout, an idle mount lives on") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  options.metaArgs = {"--session-timeout", std::to_string(kTimeoutS) + "s"};
  Cluster c(options);
  std::mt19937_64 rng(7);

  // The idle mount (the cluster's) holds an unlinked file open: it stays while the session does.
  std::string idleContent = randomBytes(rng, 300'000);
  writeAll(c.mnt() + "/idle-held", idleContent);
  int idleFd = open((c.mnt() + "/idle-held").c_str(), O_RDONLY);
  REQUIRE(idleFd >= 0);
  REQUIRE(unlink((c.mnt() + "/idle-held").c_str()) == 0);

  // The doomed mount holds an unlinked file (one chunk), then dies.
  auto doomed = std::make_unique<ExtraMount>(c, "doomed", "", std::vector<std::string>{"--meta-timeout", "20s"});
  writeAll(doomed->path + "/doomed-held", randomBytes(rng, 1 << 20));
  int doomedFd = open((doomed->path + "/doomed-held").c_str(), O_RDONLY);
  REQUIRE(doomedFd >= 0);
  REQUIRE(unlink((doomed->path + "/doomed-held").c_str()) == 0);
  auto [inodes, chunks] = inodesAndChunks(c);
  CHECK(inodes == 3);  // the root and two orphans
  CHECK(chunks == 2);
  double killedAt = nowSeconds();
  doomed->process.signal(SIGKILL);
  doomed->process.wait(5'000);
  close(doomedFd);

  // After the timeout (and the leader's 1 s sweep) the doomed orphan is gone, chunks and all;
  // the idle mount's orphan is not.
  REQUIRE(waitUntil(5 * kTimeoutS + 5, [&] { return inodesAndChunks(c).first == 2; }));
  double tookS = nowSeconds() - killedAt;
  MESSAGE("orphan of the killed mount deleted after " << tookS << " s");
  // Its last contact may precede the kill by up to two keepalive intervals (2/3 timeout).
  CHECK(tookS >= kTimeoutS / 3.0);
  CHECK(inodesAndChunks(c).second == 1);
  doomed.reset();

  // The idle mount stays idle for several timeouts: its keepalives keep the session.
  usleep(useconds_t(4 * kTimeoutS * 1'000'000));  // idling is the point of this test
  CHECK(inodesAndChunks(c).first == 2);
  std::string back(idleContent.size(), '\0');
  CHECK(pread(idleFd, back.data(), back.size(), 0) == ssize_t(back.size()));
  CHECK((back == idleContent));
  // It keeps working, and never needed a new session.
  writeAll(c.mnt() + "/after", "still here");
  CHECK(readAll(c.mnt() + "/after") == "still here");
  CHECK(close(idleFd) == 0);
  CHECK(waitUntil(10, [&] { return inodesAndChunks(c).first == 2; }));  // root + "after"
  std::string meta = slurp(c.metaLog(0));
  CHECK(countOf(meta, "expired; its open files released") == 1);
  CHECK(countOf(slurp(c.dir() + "/mount.log"), "expired on the meta servers") == 0);
}

TEST_CASE("sessions: a mount stopped past the session timeout opens a new session and carries on") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  options.metaArgs = {"--session-timeout", std::to_string(kTimeoutS) + "s"};
  Cluster c(options);

  ExtraMount sleeper(c, "sleeper", "", {"--meta-timeout", "20s"});
  std::string path = sleeper.path + "/held";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(pwrite(fd, "before ", 7, 0) == 7);
  REQUIRE(fsync(fd) == 0);

  sleeper.process.signal(SIGSTOP);
  bool expired = waitUntil(5 * kTimeoutS + 5, [&] {
    return countOf(slurp(c.metaLog(0)), "expired; its open files released") == 1;
  });
  sleeper.process.signal(SIGCONT);
  REQUIRE(expired);

  // The held file is written and synced through the new session, and closes cleanly.
  CHECK(pwrite(fd, "after", 5, 7) == 5);
  CHECK(fsync(fd) == 0);
  CHECK(close(fd) == 0);
  CHECK(readAll(c.mnt() + "/held") == "before after");
  CHECK(waitUntil(10, [&] {
    return countOf(slurp(sleeper.log), "expired on the meta servers") == 1;
  }));
  // Its open handle was re-opened and then released: nothing holds the file now.
  REQUIRE(unlink((c.mnt() + "/held").c_str()) == 0);
  CHECK(waitUntil(10, [&] { return inodesAndChunks(c).first == 1; }));
}
