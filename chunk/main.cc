// chunk/main.cc — tessera-chunk: serves the shards in its data directories (one per disk) over
// proto::ChunkService and keeps the meta leader informed. Runs in the foreground, logs to
// stderr, exits 0 on SIGTERM or SIGINT. A bad flag, data directory or address, or a meta
// server that does not answer in time, prints one line "tessera-chunk: error: ..." and exits 1.
#include <kj/async-unix.h>
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <iostream>

#include "chunk/chunk_service.h"
#include "chunk/disk_set.h"
#include "chunk/meta_link.h"
#include "chunk/rebuilder.h"
#include "fs/chunk_peers.h"
#include "chunk/scrubber.h"
#include "fs/log.h"
#include "fs/options.h"
#include "fs/rpc.h"

namespace po = boost::program_options;

namespace tessera::chunk {
namespace {

constexpr const char* kUsage =
    "usage: tessera-chunk --data DIR [--data DIR...] --meta HOST:PORT[,HOST:PORT...] [options]\n"
    "Serves the shards of Tessera chunks stored in the DIRs (one per disk) and registers with\n"
    "the meta leader.";

int fail(std::string what) {
  for (char& c : what) {
    if (c == '\n') c = ' ';
  }
  std::string line = "tessera-chunk: error: " + what + "\n";
  ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  (void)n;
  return 1;
}

po::options_description flags() {
  auto text = [](const char* name) { return po::value<std::string>()->value_name(name); };
  po::options_description d("Options");
  // clang-format off
  d.add_options()
      ("data", po::value<std::vector<std::string>>()->value_name("DIR")->composing(),
       "data directory, created if missing (required; once per disk)")
      ("meta", text("HOST:PORT[,HOST:PORT...]"),
       "the meta servers (required; any of them finds the leader)")
      ("listen", text("HOST:PORT")->default_value("127.0.0.1:0"),
       "serve chunk RPC here (port 0 picks a free one)")
      ("advertise", text("HOST"),
       "host part of the address registered with the meta server (default: the listen host)")
      ("site", text("LABEL")->default_value(""), "site label")
      ("rack", text("LABEL")->default_value(""), "rack label")
      ("host", text("LABEL"), "host label (default: this machine's hostname)")
      ("capacity", text("SIZE"), "report at most SIZE of capacity per data directory (e.g. 500G)")
      ("disk-reserve", text("SIZE|PERCENT")->default_value("1%"),
       "a disk with less free space than this (e.g. 64M, or 1% of its capacity) takes no new "
       "shards")
      ("log-memory", text("SIZE")->default_value("256M"),
       "unapplied write-log records each disk holds at most (in memory too); appends past "
       "it are refused until applies make room, and writers ask again")
      ("port-file", text("FILE"), "write the bound port to FILE once listening")
      ("heartbeat", text("DURATION")->default_value("1s"), "heartbeat interval")
      ("connect-timeout", text("DURATION")->default_value("10s"),
       "how long the first registration with the meta server may take")
      ("inventory-interval", text("DURATION")->default_value("10m"),
       "report every shard held here to the meta leader this often (and at registration)")
      ("repair-rate", text("MB/s")->default_value("50"),
       "at most this many MB per second of shards rebuilt here on the meta leader's orders")
      ("scrub-rate", text("MB/s")->default_value("8"),
       "scrubber read rate in MB/s (10^6 bytes), more than 0; fractions allowed")
      ("scrub-interval", text("DURATION")->default_value("168h"),
       "time between the end of a scrub pass and the next (0: only on `tessera scrub --now`)")
      ("log-level", text("LEVEL")->default_value("info"), "debug, info, warn or error");
  // clang-format on
  return d;
}

std::string hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

Result<log::Level> parseLevel(const std::string& s) {
  if (s == "debug") return log::Level::kDebug;
  if (s == "info") return log::Level::kInfo;
  if (s == "warn") return log::Level::kWarn;
  if (s == "error") return log::Level::kError;
  return Error{Errc::kInvalid, "bad --log-level '" + s + "' (debug, info, warn or error)"};
}

// Sends what KJ itself logs (on this thread and on threads it starts, such as its DNS lookups)
// through fs/log, one line each, instead of raw multi-line text on stderr.
class KjLog final : public kj::ExceptionCallback {
 public:
  void logMessage(kj::LogSeverity severity, const char* file, int line, int contextDepth,
                  kj::String&& text) override {
    std::string message = text.cStr();
    for (char& c : message) {
      if (c == '\n') c = ' ';
    }
    while (!message.empty() && message.back() == ' ') message.pop_back();
    // A failed lookup of a host name also comes back as an Error to whoever asked; KJ's own
    // report of it from the lookup thread is noise.
    bool lookupNoise = message.find("detached thread") != std::string::npos &&
                       message.find("DNS lookup failed") != std::string::npos;
    log::Level level = log::Level::kDebug;
    if (!lookupNoise) {
      switch (severity) {
        case kj::LogSeverity::INFO:
          level = log::Level::kInfo;
          break;
        case kj::LogSeverity::WARNING:
          level = log::Level::kWarn;
          break;
        case kj::LogSeverity::ERROR:
        case kj::LogSeverity::FATAL:
          level = log::Level::kError;
          break;
        default:
          break;
      }
    }
    log::write(level, kj::str("kj: ", message.c_str()));
  }

  kj::Function<void(kj::Function<void()>)> getThreadInitializer() override {
    return [](kj::Function<void()> func) {
      KjLog log;
      func();
    };
  }
};

// How a wait of main ended.
struct Outcome {
  bool signalled = false;
  Status status;
};

// Logs what escaped a background task and ends the process: such a fault is a bug.
class TaskErrors final : public kj::TaskSet::ErrorHandler {
 public:
  explicit TaskErrors(kj::PromiseFulfiller<Status>& fatal) : fatal_(fatal) {}
  void taskFailed(kj::Exception&& e) override {
    auto err = errorFromException(e, "internal error");
    log::error(err.detail.c_str());
    fatal_.fulfill(Status(err));
  }

 private:
  kj::PromiseFulfiller<Status>& fatal_;
};

int run(int argc, char** argv) {
  auto description = flags();
  auto parsed = parseOptions(argc, argv, description, kUsage);
  if (!parsed) return fail(parsed.error().detail);
  if (parsed->help) return 0;
  auto& vm = parsed->values;
  auto get = [&](const char* key) -> std::string {
    return vm.count(key) ? vm[key].as<std::string>() : std::string();
  };

  std::vector<std::string> dataDirs;
  if (vm.count("data")) dataDirs = vm["data"].as<std::vector<std::string>>();
  if (dataDirs.empty()) return fail("--data DIR is required");
  for (auto& d : dataDirs) {
    if (d.empty()) return fail("--data: empty directory name");
  }
  if (get("meta").empty()) return fail("--meta HOST:PORT[,HOST:PORT...] is required");
  auto meta = parseAddressList(get("meta"));
  if (!meta) return fail("--meta: " + meta.error().detail);
  auto listen = Address::parse(get("listen"));
  if (!listen) return fail("--listen: " + listen.error().detail);
  uint64_t capacity = 0;
  if (!get("capacity").empty()) {
    auto c = parseSize(get("capacity"));
    if (!c) return fail("--capacity: " + c.error().detail);
    if (*c == 0) return fail("--capacity must be more than 0");
    capacity = *c;
  }
  uint64_t reserveBytes = 0;
  double reserveFraction = 0;
  if (std::string r = get("disk-reserve"); !r.empty() && r.back() == '%') {
    char* end = nullptr;
    double pct = strtod(r.c_str(), &end);
    if (end != r.c_str() + r.size() - 1 || !(pct >= 0 && pct < 100)) {
      return fail("--disk-reserve: bad percentage '" + r + "'");
    }
    reserveFraction = pct / 100;
  } else {
    auto b = parseSize(r);
    if (!b) return fail("--disk-reserve: " + b.error().detail);
    reserveBytes = *b;
  }
  auto logMemory = parseSize(get("log-memory"));
  if (!logMemory) return fail("--log-memory: " + logMemory.error().detail);
  if (*logMemory < (1u << 20)) return fail("--log-memory must be at least 1M");
  auto heartbeat = parseDurationMs(get("heartbeat"));
  if (!heartbeat) return fail("--heartbeat: " + heartbeat.error().detail);
  if (*heartbeat == 0) return fail("--heartbeat must be more than 0");
  auto connectTimeout = parseDurationMs(get("connect-timeout"));
  if (!connectTimeout) return fail("--connect-timeout: " + connectTimeout.error().detail);
  if (*connectTimeout == 0) return fail("--connect-timeout must be more than 0");
  auto inventory = parseDurationMs(get("inventory-interval"));
  if (!inventory || *inventory == 0) return fail("--inventory-interval: expected a duration");
  uint64_t repairRate = 0;
  {
    const std::string text = get("repair-rate");
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), repairRate);
    if (ec != std::errc() || end != text.data() + text.size() || repairRate == 0 ||
        repairRate > (1u << 20)) {
      return fail("--repair-rate: expected MB/s between 1 and 1048576, got '" + text + "'");
    }
  }
  double scrubRate = 0;
  try {
    size_t used = 0;
    scrubRate = std::stod(get("scrub-rate"), &used);
    if (used != get("scrub-rate").size()) scrubRate = 0;
  } catch (const std::exception&) {
  }
  if (!(scrubRate > 0) || scrubRate > 1e6) {
    return fail("--scrub-rate: expected MB/s more than 0, got '" + get("scrub-rate") + "'");
  }
  auto scrubInterval = parseDurationMs(get("scrub-interval"));
  if (!scrubInterval) return fail("--scrub-interval: " + scrubInterval.error().detail);
  auto level = parseLevel(get("log-level"));
  if (!level) return fail(level.error().detail);
  std::string advertise = get("advertise");
  if (advertise.empty()) {
    advertise = listen->host;
    if (advertise == "0.0.0.0" || advertise == "::" || advertise == "*") advertise = hostname();
  }
  if (advertise.find_first_of(" \t/") != std::string::npos) {
    return fail("--advertise: bad host '" + advertise + "'");
  }
  std::string host = vm.count("host") ? get("host") : hostname();

  log::setTag("chunk");
  log::setMinLevel(*level);
  ::signal(SIGPIPE, SIG_IGN);
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  auto io = kj::setupAsyncIo();
  auto& network = io.provider->getNetwork();
  auto& timer = io.provider->getTimer();

  auto disk = DiskSet::open({.dirs = dataDirs,
                             .capacityCap = capacity,
                             .reserveBytes = reserveBytes,
                             .reserveFraction = reserveFraction});
  if (!disk) return fail(disk.error().detail);
  // Each disk keeps the write logs and lease epochs of its own chunks (chunk/disk_logs.h).
  ChunkLog::Config logConfig;
  logConfig.memoryLimit = *logMemory;
  auto logs = DiskLogs::open(**disk, logConfig);
  if (!logs) return fail(logs.error().toString());
  ChunkPeers peers(network, timer, *connectTimeout);
  Rebuilder rebuilder(**disk, peers, timer, {.rateBytesPerSec = repairRate << 20});
  capnp::Capability::Client service = kj::heap<ChunkServiceImpl>(**disk, **logs, &rebuilder);
  auto server = RpcServer::listen(network, io.waitScope, *listen, service);
  if (!server) return fail(server.error().detail);
  uint16_t port = (*server)->port();
  if (!get("port-file").empty()) {
    if (auto s = writeFileAtomic(get("port-file"), std::to_string(port) + "\n"); !s) {
      return fail("--port-file: " + s.error().detail);
    }
  }

  TcpMetaDialer dialer(network, timer);
  MetaLink link(dialer, timer, **disk,
                {.meta = *meta,
                 .advertise = Address{advertise, port}.toString(),
                 .site = get("site"),
                 .rack = get("rack"),
                 .host = host,
                 .heartbeatMs = *heartbeat,
                 .connectTimeoutMs = *connectTimeout,
                 .inventoryMs = *inventory});
  Scrubber scrubber(**disk, timer,
                    {.rateBytesPerSec = uint64_t(scrubRate * 1e6) ? uint64_t(scrubRate * 1e6) : 1,
                     .intervalMs = *scrubInterval});
  link.attach(scrubber);
  rebuilder.onLostBlocks = [&scrubber](ShardKey key, uint64_t blocks) {
    scrubber.noteLost(key, blocks);
  };
  link.attach(**logs);

  auto signals = io.unixEventPort.onSignal(SIGTERM)
                     .exclusiveJoin(io.unixEventPort.onSignal(SIGINT))
                     .then([](siginfo_t info) { return info.si_signo; })
                     .fork();
  auto untilSignal = [&](kj::Promise<Status> p) {
    return p.then([](Status s) {
              return Outcome{false, kj::mv(s)};
            })
        .exclusiveJoin(signals.addBranch().then([](int signo) {
          log::info("stopping on signal ", signo);
          return Outcome{true, Status()};
        }))
        .wait(io.waitScope);
  };

  Outcome started = untilSignal(link.start());
  if (started.signalled) return 0;
  if (!started.status) return fail(started.status.error().detail);
  log::info("serving ", (*disk)->dirs().c_str(), " on port ", port, " as chunk server ",
            link.id().value, " of cluster ", link.clusterId().c_str());

  auto fatal = kj::newPromiseAndFulfiller<Status>();
  TaskErrors errors(*fatal.fulfiller);
  kj::TaskSet tasks(errors);
  tasks.add(scrubber.run());
  tasks.add(
      link.run().then([&fulfiller = *fatal.fulfiller](Status s) { fulfiller.fulfill(kj::mv(s)); }));
  Outcome ended = untilSignal(kj::mv(fatal.promise));
  if (ended.signalled) return 0;
  log::error(ended.status ? "stopped" : ended.status.error().toString().c_str());
  return 1;
}

}  // namespace
}  // namespace tessera::chunk

int main(int argc, char** argv) {
  tessera::chunk::KjLog kjLog;
  int code = 1;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { code = tessera::chunk::run(argc, argv); })) {
    // A bug, not bad input: say it in one line all the same.
    return tessera::chunk::fail("internal error: " + std::string(e->getDescription().cStr()));
  }
  return code;
}
