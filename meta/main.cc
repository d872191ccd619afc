// tessera-meta: the metadata server. Keeps the namespace in LevelDB under --dir and serves
// proto::MetaService on --listen until SIGTERM or SIGINT.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include <capnp/message.h>
#include <kj/async-unix.h>

#include "fs/log.h"
#include "fs/options.h"
#include "fs/rpc.h"
#include "fs/wire.h"
#include "meta/meta_service.h"

namespace po = boost::program_options;
using namespace tessera;

namespace {

int fail(const std::string& what) {
  std::cerr << "tessera-meta: error: " << what << std::endl;
  return 1;
}

uint64_t randomU64() {
  uint64_t v = 0;
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = ::read(fd, &v, sizeof v);
    (void)n;
    ::close(fd);
  }
  return v ^ uint64_t(getpid()) ^ uint64_t(time(nullptr));
}

std::string newClusterId() {
  char buf[40];
  snprintf(buf, sizeof buf, "%016lx%016lx", (unsigned long)randomU64(),
           (unsigned long)randomU64());
  return buf;
}

Status ensureDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Error{Errc::kIo, "cannot create directory " + dir + ": " + strerror(errno)};
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Error{Errc::kNotDir, dir + " is not a directory"};
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return Error{Errc::kAccess, "directory " + dir + " is not writable: " + strerror(errno)};
  }
  return Status();
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description flags("tessera-meta options");
  flags.add_options()
      ("dir", po::value<std::string>(), "state directory (the namespace lives in DIR/meta.db)")
      ("listen", po::value<std::string>()->default_value("127.0.0.1:0"), "HOST:PORT to serve on")
      ("port-file", po::value<std::string>(), "write the bound port to FILE once listening")
      ("default-policy", po::value<std::string>()->default_value("ec(4,2)"),
       "policy of the root directory when the cluster is created")
      ("server-timeout", po::value<std::string>()->default_value("5s"),
       "a chunk server without a heartbeat this long is down")
      ("log-level", po::value<std::string>()->default_value("info"), "debug, info, warn, error");
  auto opts = parseOptions(argc, argv, flags,
                           "usage: tessera-meta --dir DIR [--listen HOST:PORT] [options]\n"
                           "The Tessera metadata server.");
  if (!opts) return fail(opts.error().detail);
  if (opts->help) return 0;
  auto& vm = opts->values;
  if (!vm.count("dir")) return fail("--dir is required");
  std::string dir = vm["dir"].as<std::string>();
  auto listen = Address::parse(vm["listen"].as<std::string>());
  if (!listen) return fail(listen.error().detail);
  auto policy = Layout::parse(vm["default-policy"].as<std::string>());
  if (!policy) return fail(policy.error().detail);
  auto timeout = parseDurationMs(vm["server-timeout"].as<std::string>());
  if (!timeout) return fail(timeout.error().detail);
  std::string level = vm["log-level"].as<std::string>();
  if (level == "debug") log::setMinLevel(log::Level::kDebug);
  else if (level == "warn") log::setMinLevel(log::Level::kWarn);
  else if (level == "error") log::setMinLevel(log::Level::kError);
  else if (level != "info") return fail("bad --log-level '" + level + "'");
  log::setTag("meta");

  if (auto s = ensureDir(dir); !s) return fail(s.error().detail);
  auto ns = meta::Namespace::open(dir + "/meta.db");
  if (!ns) {
    std::string why = ns.error().detail;
    if (why.find("lock") != std::string::npos) {
      return fail("another tessera-meta is using " + dir + " (" + why + ")");
    }
    return fail("cannot open namespace in " + dir + ": " + why);
  }
  if (!(*ns)->initialized()) {
    capnp::MallocMessageBuilder message;
    auto op = message.initRoot<proto::Op>();
    op.setNowNs(int64_t(time(nullptr)) * 1'000'000'000);
    auto init = op.initInit();
    std::string cluster = newClusterId();
    init.setClusterId(cluster);
    toWire(*policy, init.initRootPolicy());
    auto r = (*ns)->apply(op.asReader());
    if (!r) return fail("cannot create the namespace: " + r.error().toString());
    if (auto s = (*ns)->sync(); !s) return fail("cannot sync the namespace: " + s.error().toString());
    log::info("created cluster ", cluster.c_str(), " with root policy ",
              policy->toString().c_str());
  }

  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  signal(SIGPIPE, SIG_IGN);
  auto io = kj::setupAsyncIo();
  meta::MetaConfig config;
  config.serverTimeoutMs = *timeout;
  config.seed = randomU64();
  auto service = kj::heap<meta::MetaService>(**ns, io.provider->getTimer(), config);
  auto& serviceRef = *service;
  capnp::Capability::Client bootstrap = kj::mv(service);
  auto server = RpcServer::listen(io.provider->getNetwork(), io.waitScope, *listen, bootstrap);
  if (!server) return fail(server.error().detail);
  std::string bound = listen->host + ":" + std::to_string((*server)->port());
  log::info("cluster ", (*ns)->clusterId().c_str(), " serving on ", bound.c_str(),
            " (placement seed ", config.seed, ")");
  if (vm.count("port-file")) {
    auto s = writeFileAtomic(vm["port-file"].as<std::string>(),
                             std::to_string((*server)->port()) + "\n");
    if (!s) return fail(s.error().detail);
  }
  auto sweeping = serviceRef.run().eagerlyEvaluate([](kj::Exception&& e) {
    log::error("liveness sweep stopped: ", e.getDescription());
  });
  auto term = io.unixEventPort.onSignal(SIGTERM).exclusiveJoin(io.unixEventPort.onSignal(SIGINT));
  auto sig = term.wait(io.waitScope);
  log::info("signal ", sig.si_signo, ": stopping");
  if (auto s = (*ns)->sync(); !s) log::error("final sync: ", s.error().toString().c_str());
  return 0;
}
