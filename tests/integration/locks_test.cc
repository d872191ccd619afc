// Cluster-wide locks through real mounts: two mounts of one cluster stand for two hypervisor
// hosts. fcntl record locks, OFD locks (what QEMU's image locking takes) and flock taken through
// one mount hold against the other; they go with close, with the mount's death after the
// session timeout, and survive a meta leader failover; blocking waits wake on release and a
// signal interrupts them.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

double nowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

template <typename F>
bool waitUntil(double seconds, F ready) {
  double end = nowSeconds() + seconds;
  while (nowSeconds() < end) {
    if (ready()) return true;
    usleep(50'000);  // polling a condition, bounded
  }
  return ready();
}

// fcntl lock request on [start, start + len) (len 0: to the end); returns 0 or errno.
int lockOp(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = start;
  l.l_len = len;
  return fcntl(fd, cmd, &l) == 0 ? 0 : errno;
}

// What F_GETLK / F_OFD_GETLK reports for a would-be lock.
struct flock probe(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = start;
  l.l_len = len;
  REQUIRE(fcntl(fd, cmd, &l) == 0);
  return l;
}

bool refused(int err) { return err == EAGAIN || err == EACCES; }

int openRw(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE_MESSAGE(fd >= 0, path << ": " << strerror(errno));
  return fd;
}

Cluster::Options smallCluster() {
  Cluster::Options o;
  o.chunks = 3;
  o.policy = "replica(2)";
  return o;
}

void onSignal(int) {}

}  // namespace

TEST_CASE("locks: fcntl, OFD and flock locks of one mount hold against another until close") {
  TESSERA_REQUIRE_FUSE();
  Cluster c(smallCluster());
  ExtraMount b(c, "b");
  writeAll(c.mnt() + "/img", std::string(4096, 'x'));
  std::string onA = c.mnt() + "/img", onB = b.path + "/img";

  // fcntl record locks: the owner is this process, but each mount is another session.
  int a1 = openRw(onA), b1 = openRw(onB);
  REQUIRE(lockOp(a1, F_SETLK, F_WRLCK, 0, 10) == 0);
  CHECK(refused(lockOp(b1, F_SETLK, F_RDLCK, 5, 1)));
  CHECK(lockOp(b1, F_SETLK, F_WRLCK, 10, 10) == 0);  // the next byte on is free
  struct flock seen = probe(b1, F_GETLK, F_WRLCK, 0, 0);
  CHECK(seen.l_type == F_WRLCK);
  CHECK(seen.l_start == 0);
  CHECK(seen.l_len == 10);

  // OFD locks, as QEMU takes them: 1-byte read locks at 100+i, tested with F_OFD_GETLK.
  int a2 = openRw(onA), b2 = openRw(onB);
  REQUIRE(lockOp(a2, F_OFD_SETLK, F_RDLCK, 100, 1) == 0);
  REQUIRE(lockOp(a2, F_OFD_SETLK, F_RDLCK, 101, 1) == 0);
  CHECK(lockOp(b2, F_OFD_SETLK, F_RDLCK, 100, 1) == 0);  // shared: both may read
  CHECK(refused(lockOp(b2, F_OFD_SETLK, F_WRLCK, 101, 1)));
  seen = probe(b2, F_OFD_GETLK, F_WRLCK, 101, 1);
  CHECK(seen.l_type == F_RDLCK);
  CHECK(seen.l_start == 100);  // one owner's adjacent read locks are one lock, as POSIX says
  CHECK(seen.l_len == 2);
  CHECK(seen.l_pid == -1);  // OFD locks have no process
  // Two open file descriptions on one host are two owners.
  int a3 = openRw(onA);
  CHECK(refused(lockOp(a3, F_OFD_SETLK, F_WRLCK, 101, 1)));
  CHECK(probe(a3, F_OFD_GETLK, F_WRLCK, 101, 1).l_type == F_RDLCK);

  // flock: its own space, whole file.
  REQUIRE(flock(a3, LOCK_EX | LOCK_NB) == 0);
  CHECK(flock(b2, LOCK_SH | LOCK_NB) == -1);
  CHECK(errno == EWOULDBLOCK);

  // close(2) of any descriptor drops the process's fcntl locks (here: a1's, through mount A).
  REQUIRE(close(a1) == 0);
  CHECK(lockOp(b1, F_SETLK, F_WRLCK, 0, 10) == 0);
  // The OFD and flock locks of open descriptions still open stay...
  CHECK(refused(lockOp(b2, F_OFD_SETLK, F_WRLCK, 101, 1)));
  CHECK(flock(b2, LOCK_SH | LOCK_NB) == -1);
  // ...until their last close. The kernel sends that (FUSE release) after close(2) returned,
  // so the locks go a moment later.
  REQUIRE(close(a2) == 0);
  CHECK(waitUntil(10, [&] { return lockOp(b2, F_OFD_SETLK, F_WRLCK, 101, 1) == 0; }));
  REQUIRE(close(a3) == 0);
  CHECK(waitUntil(10, [&] { return flock(b2, LOCK_EX | LOCK_NB) == 0; }));
  // And an unlock is an unlock.
  CHECK(flock(b2, LOCK_UN) == 0);
  int a4 = openRw(onA);
  CHECK(flock(a4, LOCK_EX | LOCK_NB) == 0);
  close(a4);
  close(b1);
  close(b2);
  CHECK(c.logProblems().empty());
}

TEST_CASE("locks: a blocking lock wakes when the holder on another mount releases — a signal interrupts it") {
  TESSERA_REQUIRE_FUSE();
  Cluster c(smallCluster());
  ExtraMount b(c, "b");
  writeAll(c.mnt() + "/img", "x");
  int a = openRw(c.mnt() + "/img");
  REQUIRE(lockOp(a, F_OFD_SETLK, F_WRLCK, 0, 0) == 0);

  // F_OFD_SETLKW through B waits...
  int b1 = openRw(b.path + "/img");
  std::atomic<int> result{-1};
  std::atomic<double> doneAt{0};
  std::thread waiter([&] {
    result = lockOp(b1, F_OFD_SETLKW, F_WRLCK, 0, 0);
    doneAt = nowSeconds();
  });
  // ...and has not got it while A holds it (the wait is the point: a bounded look).
  usleep(500'000);
  CHECK(result.load() == -1);
  double releasedAt = nowSeconds();
  REQUIRE(lockOp(a, F_OFD_SETLK, F_UNLCK, 0, 0) == 0);
  bool woke = waitUntil(20, [&] { return result.load() != -1; });
  if (!woke) {
    // Let the thread go before failing: closing A's handle cannot hurt here.
    close(a);
  }
  waiter.join();
  REQUIRE(woke);
  CHECK(result.load() == 0);
  MESSAGE("F_OFD_SETLKW woke " << (doneAt.load() - releasedAt) * 1000 << " ms after the release");
  CHECK(refused(lockOp(a, F_OFD_SETLK, F_RDLCK, 0, 1)));

  // Now A waits for B, and a signal ends the wait with EINTR.
  struct sigaction sa {};
  sa.sa_handler = onSignal;  // no SA_RESTART: the interrupted call returns EINTR
  struct sigaction old {};
  REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
  std::atomic<int> interrupted{-1};
  std::thread blocked([&] { interrupted = lockOp(a, F_OFD_SETLKW, F_WRLCK, 0, 0); });
  // A signal that lands before the thread is inside fcntl interrupts nothing: signal it again
  // until the wait ends, bounded. It cannot end otherwise: B holds the lock throughout.
  double signalledAt = nowSeconds();
  bool ended = waitUntil(20, [&] {
    pthread_kill(blocked.native_handle(), SIGUSR1);
    return interrupted.load() != -1;
  });
  if (!ended) close(b1);  // release it, so the thread can be joined
  blocked.join();
  sigaction(SIGUSR1, &old, nullptr);
  REQUIRE(ended);
  CHECK(interrupted.load() == EINTR);
  MESSAGE("the signal ended the wait after " << (nowSeconds() - signalledAt) * 1000 << " ms");
  // The interrupted request left no lock behind: once B lets go, A's non-blocking request works.
  REQUIRE(close(b1) == 0);
  CHECK(waitUntil(10, [&] { return lockOp(a, F_OFD_SETLK, F_WRLCK, 0, 0) == 0; }));
  close(a);
  CHECK(c.logProblems().empty());
}

TEST_CASE("locks: a meta leader failover keeps them — a killed mount's locks go with its session") {
  TESSERA_REQUIRE_FUSE();
  constexpr int kTimeoutS = 3;
  Cluster::Options options = smallCluster();
  options.metas = 3;
  options.metaArgs = {"--session-timeout", std::to_string(kTimeoutS) + "s"};
  Cluster c(options);
  writeAll(c.mnt() + "/img", "x");
  auto doomed = std::make_unique<ExtraMount>(c, "doomed", "",
                                             std::vector<std::string>{"--meta-timeout", "20s"});
  ExtraMount other(c, "other", "", {"--meta-timeout", "30s"});

  // The doomed mount's process holds an OFD write lock; the cluster's mount a read lock.
  int d = openRw(doomed->path + "/img");
  REQUIRE(lockOp(d, F_OFD_SETLK, F_WRLCK, 200, 1) == 0);
  int a = openRw(c.mnt() + "/img");
  REQUIRE(lockOp(a, F_OFD_SETLK, F_RDLCK, 100, 1) == 0);

  // The meta leader dies: the new one knows both locks.
  int leader = c.leader();
  REQUIRE(leader >= 0);
  c.stopMeta(leader, SIGKILL);
  int o = openRw(other.path + "/img");
  CHECK(refused(lockOp(o, F_OFD_SETLK, F_WRLCK, 100, 1)));
  CHECK(refused(lockOp(o, F_OFD_SETLK, F_RDLCK, 200, 1)));
  c.startMeta(leader);

  // The doomed mount dies: its lock outlives it for the session timeout, then goes.
  double killedAt = nowSeconds();
  doomed->process.signal(SIGKILL);
  doomed->process.wait(5'000);
  close(d);  // its mount is gone: this only drops our descriptor
  CHECK(refused(lockOp(o, F_OFD_SETLK, F_RDLCK, 200, 1)));
  bool freed = waitUntil(5 * kTimeoutS + 10, [&] { return lockOp(o, F_OFD_SETLK, F_RDLCK, 200, 1) == 0; });
  REQUIRE(freed);
  MESSAGE("the killed mount's lock went " << nowSeconds() - killedAt << " s after the kill");
  // The living mount's lock did not go with it.
  CHECK(refused(lockOp(o, F_OFD_SETLK, F_WRLCK, 100, 1)));
  doomed.reset();
  close(a);
  close(o);
}
