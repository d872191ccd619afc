// bench_meta DIR [N]: creates N empty files in DIR/bench-meta (open O_CREAT + close), stats
// each (after the kernel's caches were dropped, if we may), unlinks each; prints ops/s of each
// phase as "create <ops/s>\nstat <ops/s>\nunlink <ops/s>".
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

int fail(const std::string& what) {
  fprintf(stderr, "bench_meta: error: %s: %s\n", what.c_str(), strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_meta DIR [N]\n");
    return 2;
  }
  std::string dir = std::string(argv[1]) + "/bench-meta";
  long n = argc > 2 ? atol(argv[2]) : 10'000;
  if (n <= 0) return fail("bad N");
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return fail("mkdir " + dir);
  auto name = [&](long i) { return dir + "/f" + std::to_string(i); };

  double t0 = now();
  for (long i = 0; i < n; ++i) {
    int fd = open(name(i).c_str(), O_CREAT | O_WRONLY | O_EXCL, 0644);
    if (fd < 0) return fail("create " + name(i));
    close(fd);
  }
  double t1 = now();
  sync();
  // Cold: drop the kernel's dentry and inode caches (needs root; skipped otherwise).
  int drop = open("/proc/sys/vm/drop_caches", O_WRONLY);
  if (drop >= 0) {
    ssize_t w = write(drop, "3", 1);
    (void)w;
    close(drop);
  }
  double t2 = now();
  struct stat st;
  for (long i = 0; i < n; ++i) {
    if (stat(name(i).c_str(), &st) != 0) return fail("stat " + name(i));
  }
  double t3 = now();
  for (long i = 0; i < n; ++i) {
    if (unlink(name(i).c_str()) != 0) return fail("unlink " + name(i));
  }
  double t4 = now();
  rmdir(dir.c_str());
  printf("create %.0f\nstat %.0f\nunlink %.0f\n", double(n) / (t1 - t0), double(n) / (t3 - t2),
         double(n) / (t4 - t3));
  return 0;
}
