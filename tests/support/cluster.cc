#include "tests/support/cluster.h"

#include <chrono>

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kj/async-io.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "fs/options.h"
#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"

namespace tessera::test {
namespace {

bool isMountPoint(const std::string& path) {
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string a, b, c, d, mp;
    in >> a >> b >> c >> d >> mp;
    if (mp == path) return true;
  }
  return false;
}

// Polls `ready` every 20 ms until it holds or `timeoutMs` passed.
template <typename F>
bool waitFor(int timeoutMs, F ready) {
  for (int waited = 0; waited <= timeoutMs; waited += 20) {
    if (ready()) return true;
    usleep(20'000);  // polling a condition, bounded by the timeout
  }
  return ready();
}

// TESSERA_LOG_LEVEL=debug makes the daemons of test clusters log more.
std::string logLevel() {
  const char* l = getenv("TESSERA_LOG_LEVEL");
  return l && *l ? l : "info";
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A port on 127.0.0.1 that nobody listens on now. Meta servers keep theirs across restarts:
// the other members and the mounts know them by it. It is picked below the kernel's ephemeral
// range (ip_local_port_range): a port from that range, once let go, can be taken as the source
// port of any outgoing connection (a mount's, a chunk server's) before the meta server binds
// it, or while it is down for a restart — "Address already in use" (seen in CI, 2026-11-27).
uint16_t freePort() {
  static std::mt19937 rng(std::random_device{}());
  unsigned low = 32768;
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  range >> low;
  const unsigned first = 10'000, last = low > first + 1'000 ? low - 1 : 30'000;
  for (int attempt = 0; attempt < 1'000; ++attempt) {
    uint16_t port = uint16_t(first + rng() % (last - first + 1));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + strerror(errno));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool free = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(fd);
    if (free) return port;
  }
  throw std::runtime_error("cannot pick a free port below " + std::to_string(last + 1));
}

// The status RPC of the meta server at `address`, handed to `use` on success; false if it does
// not answer within `timeoutMs`. Runs its own event loop (tests are synchronous).
template <typename F>
bool metaStatus(const std::string& address, int timeoutMs, F use) {
  auto parsed = Address::parse(address);
  if (!parsed) return false;
  auto io = kj::setupAsyncIo();
  auto& timer = io.provider->getTimer();
  auto conn = Connection::open(io.provider->getNetwork(), timer, *parsed, uint64_t(timeoutMs))
                  .wait(io.waitScope);
  if (!conn) return false;
  auto service = (*conn)->bootstrap<proto::MetaService>();
  bool ok = false;
  timer.timeoutAfter(timeoutMs * kj::MILLISECONDS,
                     service.statusRequest().send().then(
                         [&](capnp::Response<proto::MetaService::StatusResults>&& r) {
                           ok = true;
                           use(r);
                         }))
      .then([] {}, [](kj::Exception&&) {})
      .wait(io.waitScope);
  return ok;
}

}  // namespace

std::string buildDir() {
  const char* env = getenv("TESSERA_BUILD_DIR");
  if (env && *env) return env;
  return TESSERA_BUILD_DIR;  // compile definition
}

std::string fuseUnavailableReason() {
  if (access("/dev/fuse", R_OK | W_OK) != 0) return "no usable /dev/fuse";
  if (geteuid() != 0) return "integration tests mount FUSE as root";
  if (access("/usr/bin/fusermount3", X_OK) != 0) return "fusermount3 is not installed";
  return "";
}

Cluster::Cluster(Options options) : options_(options), tmp_("cluster") {
  metas_.resize(options_.metas);
  for (int i = 0; i < options_.metas; ++i) metaPorts_.push_back(freePort());
  if (options_.linkProxies) {
    links_.resize(options_.metas);
    for (int i = 0; i < options_.metas; ++i) {
      for (int j = 0; j < options_.metas; ++j) {
        links_[i].push_back(i == j ? nullptr : std::make_unique<LinkProxy>(metaPorts_[j]));
      }
    }
  }
  chunks_.resize(options_.chunks);
  chunkPorts_.resize(options_.chunks);
  for (int i = 0; i < options_.metas; ++i) startMeta(i);
  if (leader(20'000) < 0) throw std::runtime_error("no meta leader was elected");
  for (int i = 0; i < options_.chunks; ++i) startChunk(i);
  if (!waitChunksUp(options_.chunks)) {
    throw std::runtime_error("chunk servers did not come up:\n" + status());
  }
  if (options_.mount) mount();
}

Cluster::~Cluster() {
  if (!mountpoint_.empty() && isMountPoint(mountpoint_)) {
    run({"/usr/bin/fusermount3", "-u", "-z", mountpoint_}, 10'000);
  }
  mount_.stop(5'000);
  for (auto& c : chunks_) c.stop(5'000);
  for (auto& m : metas_) m.stop(5'000);
  // TESSERA_KEEP_LOGS=DIR keeps every cluster's logs for a look after the run.
  if (const char* keep = getenv("TESSERA_KEEP_LOGS"); keep && *keep) {
    std::error_code ec;
    std::string to = std::string(keep) + "/" + std::filesystem::path(dir()).filename().string();
    std::filesystem::create_directories(to, ec);
    for (auto& entry : std::filesystem::directory_iterator(dir(), ec)) {
      if (entry.path().extension() == ".log") {
        std::filesystem::copy_file(entry.path(), to + "/" + entry.path().filename().string(),
                                   std::filesystem::copy_options::overwrite_existing, ec);
      }
    }
  }
  auto problems = logProblems();
  if (!problems.empty() && std::uncaught_exceptions() == 0) {
    std::string all;
    for (auto& p : problems) all += p + "\n";
    FAIL_CHECK("daemon logs report problems:\n" << all);
  }
}

std::string Cluster::meta() const {
  std::string out;
  for (int i = 0; i < int(metaPorts_.size()); ++i) {
    if (!out.empty()) out += ",";
    out += metaAddress(i);
  }
  return out;
}

void Cluster::startMeta(int i) {
  std::string portFile = dir() + "/meta" + std::to_string(i + 1) + ".port";
  unlink(portFile.c_str());
  std::vector<std::string> argv = {buildDir() + "/meta/tessera-meta", "--dir", metaDir(i),
                                   "--listen", metaAddress(i), "--port-file", portFile,
                                   "--id", std::to_string(i + 1),
                                   "--default-policy", options_.policy,
                                   "--server-timeout", options_.serverTimeout,
                                   "--log-level", logLevel()};
  if (metas() > 1) {
    std::string peers, routes;
    for (int j = 0; j < metas(); ++j) {
      peers += (peers.empty() ? "" : ",") + std::to_string(j + 1) + "=" + metaAddress(j);
      if (!links_.empty() && j != i) {
        routes += (routes.empty() ? "" : ",") + std::to_string(j + 1) + "=127.0.0.1:" +
                  std::to_string(links_[i][j]->port());
      }
    }
    argv.insert(argv.end(), {"--peers", peers});
    if (!routes.empty()) argv.insert(argv.end(), {"--raft-route", routes});
  }
  argv.insert(argv.end(), options_.metaArgs.begin(), options_.metaArgs.end());
  metas_[i] = Process::spawn(argv, metaLog(i));
  bool up = waitFor(15'000, [&] { return access(portFile.c_str(), R_OK) == 0 || !metas_[i].running(); });
  if (!up || !metas_[i].running()) {
    throw std::runtime_error("tessera-meta " + std::to_string(i + 1) + " did not start:\n" +
                             slurp(metaLog(i)));
  }
}

void Cluster::stopMeta(int i, int sig) {
  if (sig == SIGTERM) {
    metas_[i].stop();
  } else {
    metas_[i].signal(sig);
    if (sig == SIGKILL) metas_[i].wait(5'000);
  }
}

void Cluster::isolateMeta(int i) {
  if (links_.empty()) throw std::logic_error("isolateMeta needs Options::linkProxies");
  for (int j = 0; j < metas(); ++j) {
    if (j == i) continue;
    links_[i][j]->cut();
    links_[j][i]->cut();
  }
}

void Cluster::healMetas() {
  for (auto& row : links_) {
    for (auto& link : row) {
      if (link) link->heal();
    }
  }
}

Cluster::MetaView Cluster::metaView(int i, int timeoutMs) {
  MetaView v;
  if (!metas_[i].running()) return v;
  metaStatus(metaAddress(i), timeoutMs, [&](auto& r) {
    auto raft = r.getRaft();
    v.reachable = true;
    v.id = raft.getId();
    v.term = raft.getTerm();
    v.leader = raft.getLeader();
    v.commit = raft.getCommit();
    v.applied = raft.getApplied();
    v.lastIndex = raft.getLastIndex();
    v.role = raft.getRole();
  });
  return v;
}

int Cluster::leader(int timeoutMs) {
  int found = -1;
  waitFor(timeoutMs, [&] {
    std::vector<MetaView> views;
    for (int i = 0; i < metas(); ++i) views.push_back(metaView(i, 1'000));
    found = -1;
    for (int i = 0; i < metas(); ++i) {
      if (views[i].reachable && views[i].role == "leader" &&
          (found < 0 || views[i].term > views[found].term)) {
        found = i;
      }
    }
    if (found < 0) return false;
    for (int i = 0; i < metas(); ++i) {
      if (i == found || !views[i].reachable) continue;
      if (views[i].term != views[found].term || views[i].leader != views[found].id) {
        found = -1;
        return false;
      }
    }
    return true;
  });
  return found;
}

void Cluster::startChunk(int i) {
  std::string d = chunkDir(i);
  mkdir(d.c_str(), 0755);
  std::string portFile = dir() + "/chunk" + std::to_string(i) + ".port";
  unlink(portFile.c_str());
  chunkPorts_[i] = 0;
  std::vector<std::string> argv = {buildDir() + "/chunk/tessera-chunk", "--meta", meta(),
                                   "--host", "host" + std::to_string(i), "--heartbeat",
                                   options_.heartbeat, "--port-file", portFile,
                                   "--log-level", logLevel()};
  auto data = options_.chunkData.find(i);
  for (auto& dataDir : data != options_.chunkData.end() ? data->second
                                                        : std::vector<std::string>{d}) {
    argv.insert(argv.end(), {"--data", dataDir});
  }
  argv.insert(argv.end(), options_.chunkArgs.begin(), options_.chunkArgs.end());
  if (size_t(i) < options_.chunkArgsOf.size()) {
    argv.insert(argv.end(), options_.chunkArgsOf[i].begin(), options_.chunkArgsOf[i].end());
  }
  chunks_[i] = Process::spawn(argv, dir() + "/chunk" + std::to_string(i) + ".log");
  bool listening = waitFor(15'000, [&] {
    return access(portFile.c_str(), R_OK) == 0 || !chunks_[i].running();
  });
  if (!listening || !chunks_[i].running()) {
    throw std::runtime_error("tessera-chunk did not start:\n" +
                             slurp(dir() + "/chunk" + std::to_string(i) + ".log"));
  }
  chunkPorts_[i] = uint16_t(std::stoi(slurp(portFile)));
}

int Cluster::addChunk() {
  int i = int(chunks_.size());
  chunks_.emplace_back();
  chunkPorts_.push_back(0);
  startChunk(i);
  return i;
}

void Cluster::stopChunk(int i, int sig) {
  if (sig == SIGTERM) {
    chunks_[i].stop();
  } else {
    chunks_[i].signal(sig);
    if (sig == SIGKILL) chunks_[i].wait(5'000);
  }
}

void Cluster::mount(const std::string& mountpoint) {
  mountpoint_ = mountpoint.empty() ? dir() + "/mnt" : mountpoint;
  mkdir(mountpoint_.c_str(), 0755);
  mount_ = Process::spawn({buildDir() + "/client/tessera-mount", "--meta", meta(), "-f",
                           "--io-timeout", options_.ioTimeout, "--meta-timeout", options_.metaTimeout,
                           "--log-level", logLevel(), mountpoint_},
                          dir() + "/mount.log");
  bool up = waitFor(15'000, [&] { return isMountPoint(mountpoint_) || !mount_.running(); });
  if (!up || !mount_.running()) {
    throw std::runtime_error("tessera-mount did not mount:\n" + slurp(dir() + "/mount.log"));
  }
}

ExtraMount::ExtraMount(Cluster& cluster, const std::string& name, const std::string& meta,
                       const std::vector<std::string>& args)
    : path(cluster.dir() + "/" + name), log(cluster.dir() + "/" + name + ".log") {
  mkdir(path.c_str(), 0755);
  std::vector<std::string> argv{buildDir() + "/client/tessera-mount",
                                "--meta", meta.empty() ? cluster.meta() : meta,
                                "-f", "--log-level", logLevel()};
  // The cluster's timeouts unless `args` set them (a flag may be given once).
  auto given = [&](const char* flag) {
    return std::find(args.begin(), args.end(), flag) != args.end();
  };
  if (!given("--io-timeout")) argv.insert(argv.end(), {"--io-timeout", cluster.options().ioTimeout});
  if (!given("--meta-timeout")) {
    argv.insert(argv.end(), {"--meta-timeout", cluster.options().metaTimeout});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(path);
  process = Process::spawn(argv, log);
  bool up = waitFor(15'000, [&] { return isMountPoint(path) || !process.running(); });
  if (!up || !process.running()) {
    throw std::runtime_error("tessera-mount " + name + " did not mount:\n" + slurp(log));
  }
}

ExtraMount::~ExtraMount() {
  process.signal(SIGCONT);
  if (isMountPoint(path)) run({"/usr/bin/fusermount3", "-u", "-z", path}, 10'000);
  process.stop(5'000);
}

void Cluster::unmount() {
  std::string last;
  for (int attempt = 0; attempt < 50 && isMountPoint(mountpoint_); ++attempt) {
    auto r = run({"/usr/bin/fusermount3", "-u", mountpoint_}, 10'000);
    if (r.exitCode == 0) break;
    last = r.output;
    usleep(100'000);  // the kernel may still hold a closing file; bounded retries
  }
  if (mount_.wait(15'000) == -1) {
    bool mounted = isMountPoint(mountpoint_);
    if (mounted) {
      // Who keeps it busy (an inherited descriptor, a working directory).
      auto holders = run({"/bin/sh", "-c",
                          "for p in /proc/[0-9]*; do ls -l $p/fd $p/cwd 2>/dev/null | grep -qF '" +
                              mountpoint_ + "' && echo \"$p $(tr '\\0' ' ' < $p/cmdline)\"; done"},
                         10'000);
      last += "; held by: " + holders.output;
    }
    mount_.stop(0);
    run({"/usr/bin/fusermount3", "-u", "-z", mountpoint_}, 10'000);
    throw std::runtime_error("tessera-mount did not exit after unmount" +
                             (mounted ? " (still mounted: " + last + ")" : std::string()));
  }
}

// Up means: the meta leader lists every running chunk server at the address it listens on now
// (a restarted server has a new port; until it registers, the leader still shows the old
// instance as up for the server timeout) and counts `n` up in all.
bool Cluster::waitLogsApplied(int timeoutMs) {
  auto start = std::chrono::steady_clock::now();
  return waitFor(timeoutMs, [&] {
    int l = leader(1'000);
    if (l < 0) return false;
    bool empty = true;
    // Taken before asking: a heartbeat younger than this, when the leader answers, came after
    // `start`.
    uint64_t since = uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - start)
                                  .count());
    bool answered = metaStatus(metaAddress(l), 2'000, [&](auto& r) {
      for (auto s : r.getServers()) {
        if (!s.getUp()) continue;
        if (s.getLastHeartbeatMs() >= since || s.getLogRecords() > 0) empty = false;
      }
    });
    return answered && empty;
  });
}

bool Cluster::waitChunksUp(int n, int timeoutMs) {
  return waitFor(timeoutMs, [&] {
    int l = leader(1'000);
    if (l < 0) return false;
    int up = 0;
    std::vector<std::string> upAt;
    bool answered = metaStatus(metaAddress(l), 2'000, [&](auto& r) {
      for (auto s : r.getServers()) {
        if (!s.getUp()) continue;
        ++up;
        upAt.push_back(s.getAddress());
      }
    });
    if (!answered || up != n) return false;
    for (size_t i = 0; i < chunks_.size(); ++i) {
      if (!chunks_[i].running() || chunkPorts_[i] == 0) continue;
      std::string address = "127.0.0.1:" + std::to_string(chunkPorts_[i]);
      if (std::find(upAt.begin(), upAt.end(), address) == upAt.end()) return false;
    }
    return true;
  });
}

std::string Cluster::status() {
  auto r = run({buildDir() + "/tools/tessera", "--meta", meta(), "status"}, 10'000);
  return r.output;
}

std::vector<std::string> Cluster::logProblems() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& entry : std::filesystem::directory_iterator(dir(), ec)) {
    if (entry.path().extension() != ".log") continue;
    std::ifstream f(entry.path());
    std::string line;
    while (std::getline(f, line)) {
      if (line.find("AddressSanitizer") != std::string::npos ||
          line.find("runtime error:") != std::string::npos ||
          line.find("LeakSanitizer") != std::string::npos) {
        out.push_back(entry.path().filename().string() + ": " + line);
      }
    }
  }
  return out;
}

std::string readAll(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + strerror(errno));
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      int e = errno;
      close(fd);
      throw std::runtime_error("read " + path + ": " + strerror(e));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  close(fd);
  return out;
}

void writeAll(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      int e = errno;
      close(fd);
      throw std::runtime_error("write " + path + ": " + strerror(e));
    }
    done += size_t(n);
  }
  if (close(fd) != 0) throw std::runtime_error("close " + path + ": " + strerror(errno));
}

int readErrno(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[1 << 16];
  int err = 0;
  while (true) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
  }
  close(fd);
  return err;
}

}  // namespace tessera::test
