// bench_meta_lib --meta HOST:PORT[,...] [--files N] [--clients C]: metadata throughput through
// the client library, without FUSE. C client::Client instances share one event loop, each with
// its own session on the meta cluster; each issues strictly one request at a time (the next
// when the last was answered), so C is the number of requests in flight. In a fresh directory
// under the root they create N empty regular files in total (mknod, split evenly among the
// clients), then look each one up (lookup of the name: the attributes a cold stat needs), then
// unlink each. Prints the aggregate ops/s of each phase as "create <ops/s>\nstat <ops/s>\n
// unlink <ops/s>"; the directory is removed at the end. A benchmark: nothing passes or fails.
// Any error: one line on stderr, exit 1.
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <kj/async-io.h>

#include "client/client.h"
#include "fs/log.h"
#include "fs/options.h"

namespace po = boost::program_options;
using namespace tessera;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::cerr << "bench_meta_lib: error: " << what << std::endl;
  _exit(1);
}

double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// One operation on file `i` of the benchmark directory.
using Op = std::function<kj::Promise<Status>(client::Client&, uint64_t)>;

// Files [i, end) one after another on one client; stops at the first error.
kj::Promise<Status> serial(client::Client& c, uint64_t i, uint64_t end, const Op& op) {
  if (i >= end) return Status();
  return op(c, i).then([&c, i, end, &op](Status s) -> kj::Promise<Status> {
    if (!s) return s;
    return serial(c, i + 1, end, op);
  });
}

std::string fileName(uint64_t i) { return "f" + std::to_string(i); }

}  // namespace

int main(int argc, char** argv) {
  po::options_description flags("bench_meta_lib options");
  flags.add_options()
      ("meta", po::value<std::string>(), "the meta servers, HOST:PORT[,HOST:PORT...]")
      ("files", po::value<uint64_t>()->default_value(10'000), "files in total")
      ("clients", po::value<uint64_t>()->default_value(1),
       "client sessions, each with one request in flight");
  auto opts = parseOptions(argc, argv, flags,
                           "usage: bench_meta_lib --meta HOST:PORT[,HOST:PORT...] [--files N] "
                           "[--clients C]\n"
                           "Creates, looks up and unlinks N files through C client sessions.");
  if (!opts) die(opts.error().detail);
  if (opts->help) return 0;
  auto& vm = opts->values;
  if (!vm.count("meta")) die("--meta HOST:PORT[,HOST:PORT...] is required");
  auto meta = parseAddressList(vm["meta"].as<std::string>());
  if (!meta) die("--meta: " + meta.error().detail);
  uint64_t files = vm["files"].as<uint64_t>();
  uint64_t clients = vm["clients"].as<uint64_t>();
  if (files == 0) die("--files must be at least 1");
  if (clients == 0 || clients > 1024) die("--clients must be 1..1024");
  if (clients > files) clients = files;

  // Errors are reported once, by the line that exits; the link's retries are not news here.
  log::setMinLevel(log::Level::kError);
  log::setTag("bench");
  signal(SIGPIPE, SIG_IGN);
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;

  std::vector<kj::Own<client::Client>> sessions;
  kj::Vector<kj::Promise<Status>> starting;
  for (uint64_t c = 0; c < clients; ++c) {
    client::ClientConfig config;
    config.meta = *meta;
    config.host = "bench_meta_lib:" + std::to_string(getpid()) + ":" + std::to_string(c);
    config.mountpoint = "-";
    sessions.push_back(
        kj::heap<client::Client>(io.provider->getNetwork(), io.provider->getTimer(), config));
    starting.add(sessions.back()->start());
  }
  for (auto& s : kj::joinPromises(starting.releaseAsArray()).wait(ws)) {
    if (!s) die("cannot reach the meta servers at " + joinAddresses(*meta) + ": " +
                s.error().toString());
  }

  uint32_t uid = getuid(), gid = getgid();
  std::string dirName = "bench-meta-lib-" + std::to_string(getpid()) + "-" +
                        std::to_string(uint64_t(now() * 1e6));
  auto made = sessions[0]->mknod(kRootInode, dirName, S_IFDIR | 0755, 0, uid, gid).wait(ws);
  if (!made) die("mkdir /" + dirName + ": " + made.error().toString());
  InodeId dir = made->inode;

  // Runs `op` on every file, client c on its share [c*N/C, (c+1)*N/C); returns the wall time.
  auto phase = [&](const char* what, const Op& op) {
    double t0 = now();
    kj::Vector<kj::Promise<Status>> running;
    for (uint64_t c = 0; c < clients; ++c) {
      running.add(serial(*sessions[c], c * files / clients, (c + 1) * files / clients, op));
    }
    auto results = kj::joinPromises(running.releaseAsArray()).wait(ws);
    double elapsed = now() - t0;
    for (auto& s : results) {
      if (!s) die(std::string(what) + " in /" + dirName + ": " + s.error().toString());
    }
    return elapsed;
  };

  double create = phase("create", [&](client::Client& c, uint64_t i) {
    return c.mknod(dir, fileName(i), S_IFREG | 0644, 0, uid, gid)
        .then([i](Result<Attr> a) -> Status {
          if (!a) return Error(a.error().code, fileName(i) + ": " + a.error().toString());
          return Status();
        });
  });
  double stat = phase("stat", [&](client::Client& c, uint64_t i) {
    return c.lookup(dir, fileName(i)).then([i](Result<Attr> a) -> Status {
      if (!a) return Error(a.error().code, fileName(i) + ": " + a.error().toString());
      return Status();
    });
  });
  double unlink = phase("unlink", [&](client::Client& c, uint64_t i) {
    return c.unlink(dir, fileName(i), false).then([i](Status s) -> Status {
      if (!s) return Error(s.error().code, fileName(i) + ": " + s.error().toString());
      return s;
    });
  });
  auto removed = sessions[0]->unlink(kRootInode, dirName, true).wait(ws);
  if (!removed) die("rmdir /" + dirName + ": " + removed.error().toString());

  printf("create %.0f\nstat %.0f\nunlink %.0f\n", double(files) / create, double(files) / stat,
         double(files) / unlink);
  fflush(stdout);
  return 0;
}
