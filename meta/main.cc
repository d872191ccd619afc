// tessera-meta: a metadata server, one member of the meta Raft group. Keeps the namespace in
// LevelDB under DIR/meta.db and its Raft log under DIR/raft, and serves proto::MetaService on
// --listen until SIGTERM or SIGINT. Alone (no --peers) it is a group of one.
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
#include "meta/raft/file_storage.h"
#include "meta/raft/raft_node.h"

namespace po = boost::program_options;
using namespace tessera;
namespace raft = tessera::meta::raft;

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

// "1=127.0.0.1:7001,2=127.0.0.1:7002": the members of the group and where they listen.
Result<std::map<raft::NodeId, std::string>> parsePeers(const std::string& text) {
  std::map<raft::NodeId, std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    auto eq = item.find('=');
    if (eq == std::string::npos) {
      return Error{Errc::kInvalid, "bad --peers entry '" + item + "' (expected ID=HOST:PORT)"};
    }
    uint64_t id = 0;
    try {
      size_t used = 0;
      id = std::stoull(item.substr(0, eq), &used);
      if (used != eq) id = 0;
    } catch (const std::exception&) {
      id = 0;
    }
    if (id == 0) return Error{Errc::kInvalid, "bad member id in --peers entry '" + item + "'"};
    auto address = Address::parse(item.substr(eq + 1));
    if (!address) return Error{Errc::kInvalid, "--peers: " + address.error().detail};
    if (!out.emplace(raft::NodeId(id), address->toString()).second) {
      return Error{Errc::kInvalid, "--peers names member " + std::to_string(id) + " twice"};
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
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
      ("repair-grace", po::value<std::string>()->default_value("10m"),
       "a chunk server down this long has its shards rebuilt on the others")
      ("placement", po::value<std::string>()->default_value("strict"),
       "strict: refuse to place a chunk on fewer servers than its shards, or with more shards "
       "in one site/rack/host than its policy can lose; degraded: place it anyway")
      ("session-timeout", po::value<std::string>()->default_value("60s"),
       "a mount silent this long loses its session: its open files are released")
      ("lease-timeout", po::value<std::string>()->default_value("10s"),
       "a write lease whose holder is silent this long may move to another mount")
      ("recall-hold", po::value<std::string>()->default_value("5s"),
       "a write lease recalled for a move (repair, drain, rebalance) is refused to new grants "
       "this long at most while the move waits or runs; then writers get it back")
      ("id", po::value<uint64_t>()->default_value(1), "this server's member id in the group")
      ("peers", po::value<std::string>(),
       "every member of a new group, this one included: ID=HOST:PORT,ID=HOST:PORT,...")
      ("raft-route", po::value<std::string>(),
       "send Raft traffic for some members elsewhere than their --peers address (a replication "
       "network, a tunnel): ID=HOST:PORT,...; clients are still told the --peers addresses")
      ("join", "start outside the group, to be added to a running one (tessera meta add)")
      ("tick", po::value<std::string>()->default_value("100ms"), "Raft tick")
      ("election-ticks", po::value<int>()->default_value(10),
       "ticks without a leader before an election (randomized up to twice that)")
      ("snapshot-entries", po::value<uint64_t>()->default_value(10000),
       "compact the Raft log once this many entries were applied past its snapshot (0: never)")
      ("snapshot-keep", po::value<uint64_t>()->default_value(1000),
       "entries a compaction leaves in the log for followers that are a little behind")
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
  auto repairGrace = parseDurationMs(vm["repair-grace"].as<std::string>());
  if (!repairGrace) return fail("--repair-grace: " + repairGrace.error().detail);
  auto sessionTimeout = parseDurationMs(vm["session-timeout"].as<std::string>());
  if (!sessionTimeout || *sessionTimeout == 0) return fail("bad --session-timeout");
  auto leaseTimeout = parseDurationMs(vm["lease-timeout"].as<std::string>());
  if (!leaseTimeout || *leaseTimeout == 0) return fail("bad --lease-timeout");
  auto recallHold = parseDurationMs(vm["recall-hold"].as<std::string>());
  if (!recallHold || *recallHold == 0) return fail("bad --recall-hold");
  auto placement = meta::parsePlacementMode(vm["placement"].as<std::string>());
  if (!placement) return fail("--placement: " + placement.error().detail);
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
  // The group: --peers for a new group, nobody (learn it from the leader) with --join, else
  // this server alone.
  raft::NodeId self(vm["id"].as<uint64_t>());
  if (!self) return fail("--id must be positive");
  std::map<raft::NodeId, std::string> peers;
  if (vm.count("peers")) {
    auto parsed = parsePeers(vm["peers"].as<std::string>());
    if (!parsed) return fail(parsed.error().detail);
    peers = std::move(*parsed);
    if (!peers.count(self)) return fail("--peers does not name this server's --id");
  }
  raft::ConfState initial;
  if (!vm.count("join")) {
    if (peers.empty()) initial.voters.push_back(self);
    for (auto& [id, address] : peers) initial.voters.push_back(id);
  }
  auto storage = raft::FileStorage::open(dir + "/raft", initial);
  if (!storage) return fail("cannot open the raft log in " + dir + "/raft: " + storage.error().toString());
  if ((*storage)->tornBytes()) {
    log::warn("raft log: dropped a torn tail of ", (*storage)->tornBytes(),
              " bytes (a crash mid-write); the others have those entries");
  }
  // Compaction drops log entries only once the store holding their effects is synced, and an
  // installed snapshot is in the store before the log records it: a store behind the log's
  // snapshot lost synced data, and the entries it lacks are gone from the log.
  if ((*ns)->appliedIndex() < (*storage)->snapshot().index.value) {
    return fail("the namespace in " + dir + "/meta.db applied " +
                std::to_string((*ns)->appliedIndex()) + " but the raft log starts after " +
                std::to_string((*storage)->snapshot().index.value) +
                ": the store lost data; move " + dir + " away and --join to resync");
  }
  auto tick = parseDurationMs(vm["tick"].as<std::string>());
  if (!tick || *tick == 0) return fail("bad --tick");

  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  signal(SIGPIPE, SIG_IGN);
  auto io = kj::setupAsyncIo();
  // Listen first (the port may be chosen now), serve the service once it exists.
  auto ready = kj::newPromiseAndFulfiller<proto::MetaService::Client>();
  capnp::Capability::Client bootstrap(kj::mv(ready.promise));
  auto server = RpcServer::listen(io.provider->getNetwork(), io.waitScope, *listen, bootstrap);
  if (!server) return fail(server.error().detail);
  std::string bound = listen->host + ":" + std::to_string((*server)->port());
  if (!peers.count(self)) peers[self] = bound;

  raft::NodeConfig nodeConfig;
  nodeConfig.raft.id = self;
  nodeConfig.raft.electionTick = vm["election-ticks"].as<int>();
  nodeConfig.raft.heartbeatTick = 1;
  if (auto v = nodeConfig.raft.validate(); !v) return fail(v.error().detail);
  nodeConfig.tickMs = *tick;
  if (vm.count("raft-route")) {
    auto routes = parsePeers(vm["raft-route"].as<std::string>());
    if (!routes) return fail("--raft-route: " + routes.error().detail);
    nodeConfig.routes = std::move(*routes);
  }
  nodeConfig.seed = randomU64();
  nodeConfig.snapshotEntries = vm["snapshot-entries"].as<uint64_t>();
  nodeConfig.snapshotKeepEntries = vm["snapshot-keep"].as<uint64_t>();
  raft::RaftNode node(nodeConfig, **storage, **ns, io.provider->getTimer(),
                      io.provider->getNetwork(), peers);

  meta::MetaConfig config;
  config.address = bound;
  config.serverTimeoutMs = *timeout;
  config.repairGraceMs = *repairGrace;
  config.sessionTimeoutMs = *sessionTimeout;
  config.leaseTimeoutMs = *leaseTimeout;
  config.recallHoldMs = *recallHold;
  config.seed = randomU64();
  config.placement = *placement;
  config.rootPolicy = *policy;
  config.newClusterId = newClusterId();
  auto service = kj::heap<meta::MetaService>(**ns, node, io.provider->getTimer(), config);
  auto& serviceRef = *service;
  serviceRef.enableRepair(io.provider->getNetwork());
  ready.fulfiller->fulfill(proto::MetaService::Client(kj::mv(service)));
  log::info("member ", self.value, " serving on ", bound.c_str(),
            (*ns)->initialized() ? " (cluster " + (*ns)->clusterId() + ")" : std::string(" (new)"),
            ", placement seed ", config.seed, ", election seed ", nodeConfig.seed);
  if (vm.count("port-file")) {
    auto s = writeFileAtomic(vm["port-file"].as<std::string>(),
                             std::to_string((*server)->port()) + "\n");
    if (!s) return fail(s.error().detail);
  }
  auto running = node.run().eagerlyEvaluate([](kj::Exception&& e) {
    log::error("raft node stopped: ", e.getDescription());
  });
  auto sweeping = serviceRef.run().eagerlyEvaluate([](kj::Exception&& e) {
    log::error("liveness sweep stopped: ", e.getDescription());
  });
  auto term = io.unixEventPort.onSignal(SIGTERM).exclusiveJoin(io.unixEventPort.onSignal(SIGINT));
  auto sig = term.wait(io.waitScope);
  log::info("signal ", sig.si_signo, ": stopping");
  if (auto s = (*ns)->sync(); !s) log::error("final sync: ", s.error().toString().c_str());
  return 0;
}
