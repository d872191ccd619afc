// bench_meta DIR [N] [--threads T]: creates N empty files under DIR/bench-meta (open O_CREAT +
// close), stats each (after the kernel's caches were dropped, if we may), unlinks each; prints
// ops/s of each phase as "create <ops/s>\nstat <ops/s>\nunlink <ops/s>".
// With T threads (default 1) each thread works in its own subdirectory DIR/bench-meta/tK on its
// share of the N files; the phases are separated (every thread finishes creating before any
// stats) and each figure is the aggregate: all the phase's operations over its wall time.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

int fail(const std::string& what) {
  fprintf(stderr, "bench_meta: error: %s\n", what.c_str());
  return 1;
}

std::string errnoText(const std::string& what) { return what + ": " + strerror(errno); }

// The first error any thread saw; the phase stops being timed as a success.
class FirstError {
 public:
  void set(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (what_.empty()) what_ = std::move(what);
  }
  bool any() {
    std::lock_guard<std::mutex> lock(mu_);
    return !what_.empty();
  }
  std::string what() {
    std::lock_guard<std::mutex> lock(mu_);
    return what_;
  }

 private:
  std::mutex mu_;
  std::string what_;
};

struct Worker {
  std::string dir;
  long files = 0;
  std::string name(long i) const { return dir + "/f" + std::to_string(i); }
};

// Runs `op` on every file of every worker, one thread per worker; returns the wall time.
double phase(const std::vector<Worker>& workers, FirstError& error,
             const std::function<std::string(const std::string&)>& op) {
  double t0 = now();
  std::vector<std::thread> threads;
  for (const Worker& w : workers) {
    threads.emplace_back([&w, &error, &op] {
      for (long i = 0; i < w.files && !error.any(); ++i) {
        std::string failed = op(w.name(i));
        if (!failed.empty()) error.set(failed);
      }
    });
  }
  for (auto& t : threads) t.join();
  return now() - t0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage = "usage: bench_meta DIR [N] [--threads T]\n";
  std::vector<std::string> positional;
  long threads = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads") {
      if (i + 1 >= argc) return fail("--threads needs a number");
      char* end = nullptr;
      threads = strtol(argv[++i], &end, 10);
      if (*end != '\0' || threads <= 0 || threads > 1024) {
        return fail(std::string("bad --threads '") + argv[i] + "' (1..1024)");
      }
    } else if (a == "-h" || a == "--help") {
      fputs(usage, stdout);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      return fail("unknown flag '" + a + "'");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.empty() || positional.size() > 2) {
    fputs(usage, stderr);
    return 2;
  }
  std::string dir = positional[0] + "/bench-meta";
  long n = 10'000;
  if (positional.size() == 2) {
    char* end = nullptr;
    n = strtol(positional[1].c_str(), &end, 10);
    if (*end != '\0' || n <= 0) return fail("bad N '" + positional[1] + "'");
  }
  if (threads > n) threads = n;

  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return fail(errnoText("mkdir " + dir));
  std::vector<Worker> workers(static_cast<size_t>(threads));
  for (long t = 0; t < threads; ++t) {
    Worker& w = workers[size_t(t)];
    w.dir = threads == 1 ? dir : dir + "/t" + std::to_string(t);
    w.files = n / threads + (t < n % threads ? 1 : 0);
    if (threads > 1 && mkdir(w.dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return fail(errnoText("mkdir " + w.dir));
    }
  }

  FirstError error;
  double tCreate = phase(workers, error, [](const std::string& path) -> std::string {
    int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_EXCL, 0644);
    if (fd < 0) return errnoText("create " + path);
    close(fd);
    return {};
  });
  if (error.any()) return fail(error.what());
  sync();
  // Cold: drop the kernel's dentry and inode caches (needs root; skipped otherwise).
  int drop = open("/proc/sys/vm/drop_caches", O_WRONLY);
  if (drop >= 0) {
    ssize_t w = write(drop, "3", 1);
    (void)w;
    close(drop);
  }
  double tStat = phase(workers, error, [](const std::string& path) -> std::string {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return errnoText("stat " + path);
    return {};
  });
  if (error.any()) return fail(error.what());
  double tUnlink = phase(workers, error, [](const std::string& path) -> std::string {
    if (::unlink(path.c_str()) != 0) return errnoText("unlink " + path);
    return {};
  });
  if (error.any()) return fail(error.what());
  if (threads > 1) {
    for (const Worker& w : workers) rmdir(w.dir.c_str());
  }
  rmdir(dir.c_str());
  printf("create %.0f\nstat %.0f\nunlink %.0f\n", double(n) / tCreate, double(n) / tStat,
         double(n) / tUnlink);
  return 0;
}
