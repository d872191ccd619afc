// tessera-mount: mounts a Tessera cluster through FUSE.
//   tessera-mount --meta HOST:PORT[,HOST:PORT...] [-f] [options] MOUNTPOINT
// --meta lists the meta servers of the cluster (all of them, or any that can name the leader).
// Without -f it daemonises once the mount is up; the parent exits 0 only after the mount works,
// and with the reason and exit 1 when it does not (meta server unreachable, mount point busy...).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include <kj/async-unix.h>

#include "client/client.h"
#include "client/fuse/fuse_adapter.h"
#include "fs/log.h"
#include "fs/options.h"
#include "fs/rpc.h"

namespace po = boost::program_options;
using namespace tessera;

namespace {

int statusFd = -1;  // daemon child: where to tell the parent how start-up went

[[noreturn]] void die(const std::string& what) {
  std::string line = "tessera-mount: error: " + what + "\n";
  if (statusFd >= 0) {
    ssize_t n = ::write(statusFd, line.data(), line.size());
    (void)n;
  } else {
    std::cerr << line << std::flush;
  }
  _exit(1);
}

// /proc/self/mountinfo field 5 is the mount point, with spaces etc. as \ooo escapes.
bool isMountPoint(const std::string& path) {
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string id, parent, dev, root, mp;
    in >> id >> parent >> dev >> root >> mp;
    std::string decoded;
    for (size_t i = 0; i < mp.size(); ++i) {
      if (mp[i] == '\\' && i + 3 < mp.size()) {
        decoded += char(std::stoi(mp.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        decoded += mp[i];
      }
    }
    if (decoded == path) return true;
  }
  return false;
}

// Forks; the parent waits for the child's report and exits with it. Returns in the child.
void daemonize() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) die(std::string("pipe: ") + strerror(errno));
  pid_t pid = fork();
  if (pid < 0) die(std::string("fork: ") + strerror(errno));
  if (pid > 0) {
    close(fds[1]);
    std::string report;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) report.append(buf, size_t(n));
    if (report == "ok\n") _exit(0);
    if (report.empty()) {
      int status = 0;
      waitpid(pid, &status, 0);
      report = "tessera-mount: error: the mount process died during start-up\n";
    }
    std::cerr << report << std::flush;
    _exit(1);
  }
  close(fds[0]);
  statusFd = fds[1];
  setsid();
}

// A daemon lets go of the terminal (stderr stays on the log file if there is one) and tells the
// waiting parent that the mount works.
void reportReady(const std::string& logFile) {
  if (statusFd < 0) return;  // foreground: keep stdio as it is
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    if (logFile.empty()) dup2(null, STDERR_FILENO);
    close(null);
  }
  ssize_t n = ::write(statusFd, "ok\n", 3);
  (void)n;
  close(statusFd);
  statusFd = -1;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description flags("tessera-mount options");
  flags.add_options()
      ("meta", po::value<std::string>(),
       "the meta servers, HOST:PORT[,HOST:PORT...] (any of them finds the leader)")
      ("foreground,f", "stay in the foreground")
      ("log-file", po::value<std::string>(), "append the log to FILE (default: stderr)")
      ("pid-file", po::value<std::string>(), "write the mount process id to FILE")
      ("name", po::value<std::string>(), "name of this mount in the cluster (default host:dir)")
      ("attr-timeout", po::value<std::string>()->default_value("1s"),
       "how long the kernel caches attributes and names while the meta leader's invalidations "
       "are not live (not registered, lease run out)")
      ("live-attr-timeout", po::value<std::string>()->default_value("30s"),
       "how long the kernel caches attributes and names while the meta leader pushes every "
       "other mount's changes here (never shorter than --attr-timeout)")
      ("watch-lease", po::value<std::string>()->default_value("3s"),
       "coherence: a mount whose registration for invalidations the meta leader has not "
       "confirmed for this long drops its caches and caches for --attr-timeout only until "
       "registered again; 0: do not register (always --attr-timeout, no kept page cache)")
      ("io-timeout", po::value<std::string>()->default_value("30s"),
       "a chunk server that does not answer this long has failed the request")
      ("meta-timeout", po::value<std::string>()->default_value("30s"),
       "how long an operation waits for a meta leader (through failovers) before EIO")
      ("keepalive", po::value<std::string>(),
       "how often an idle mount tells the meta leader it is alive (default: a third of the "
       "session timeout the meta server announces)")
      ("ec-log", po::value<std::string>()->default_value("on"),
       "on: small writes to erasure-coded chunks go through the chunk's replicated write log; "
       "off: read-modify-write in place (for comparison)")
      ("ec-log-apply-delay", po::value<std::string>()->default_value("200ms"),
       "how long logged writes of a chunk wait for more before they are applied to its stripes")
      ("lease-idle", po::value<std::string>()->default_value("5s"),
       "give a chunk's write lease back (after syncing what was written under it) once it was "
       "not used this long, so that repair, drain and rebalance can move the chunk; 0: keep "
       "leases until the file is closed")
      ("unmount-wait", po::value<std::string>()->default_value("10s"),
       "at unmount, how long to wait for the last requests to finish and for the write leases "
       "to go back, their chunks' write logs applied, before exiting anyway (what is left "
       "behind then waits for the lease to expire; 0: do not wait)")
      ("fault-invalidation-delay", po::value<std::string>()->default_value("0"),
       "testing only: act on each invalidation from the meta leader this much later, as over "
       "a slow network")
      ("fault-exit-after-parity", po::bool_switch(),
       "testing only: exit as soon as an apply of the ec write log has written its parity, "
       "before its data")
      ("fault-exit-after-data", po::bool_switch(),
       "testing only: exit as soon as a write straight to the stripes of an ec chunk has written "
       "its data, before its parity")
      ("log-level", po::value<std::string>()->default_value("info"), "debug, info, warn, error")
      ("option,o", po::value<std::vector<std::string>>(), "mount options (accepted: allow_other, "
       "default_permissions, rw, suid, dev, exec, noatime, relatime, _netdev)")
      ("mountpoint", po::value<std::string>(), "where to mount");
  po::positional_options_description positional;
  positional.add("mountpoint", 1);
  // parseOptions does not know positionals: give it the mount point as a flag.
  std::vector<std::string> args(argv, argv + argc);
  std::vector<std::string> rewritten{args[0]};
  bool sawMountpoint = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool takesValue = a == "--meta" || a == "--log-file" || a == "--pid-file" || a == "--name" ||
                      a == "--attr-timeout" || a == "--io-timeout" || a == "--meta-timeout" ||
                      a == "--live-attr-timeout" || a == "--watch-lease" ||
                      a == "--keepalive" || a == "--ec-log" || a == "--ec-log-apply-delay" ||
                      a == "--lease-idle" || a == "--unmount-wait" ||
                      a == "--fault-invalidation-delay" ||
                      a == "--log-level" || a == "-o" || a == "--option" || a == "--config";
    if (takesValue && i + 1 < args.size()) {
      rewritten.push_back(a);
      rewritten.push_back(args[++i]);
    } else if (!a.empty() && a[0] != '-' && !sawMountpoint) {
      rewritten.push_back("--mountpoint");
      rewritten.push_back(a);
      sawMountpoint = true;
    } else {
      rewritten.push_back(a);
    }
  }
  std::vector<const char*> cargs;
  for (auto& a : rewritten) cargs.push_back(a.c_str());
  auto opts = parseOptions(int(cargs.size()), cargs.data(), flags,
                           "usage: tessera-mount --meta HOST:PORT[,HOST:PORT...] [-f] [options] "
                           "MOUNTPOINT\n"
                           "Mounts a Tessera cluster. Unmount with: fusermount3 -u MOUNTPOINT");
  if (!opts) die(opts.error().detail);
  if (opts->help) return 0;
  auto& vm = opts->values;
  if (!vm.count("meta")) die("--meta HOST:PORT[,HOST:PORT...] is required");
  if (!vm.count("mountpoint")) die("a mount point is required");
  auto meta = parseAddressList(vm["meta"].as<std::string>());
  if (!meta) die("--meta: " + meta.error().detail);
  std::string metaList = joinAddresses(*meta);
  auto attrTimeout = parseDurationMs(vm["attr-timeout"].as<std::string>());
  if (!attrTimeout) die(attrTimeout.error().detail);
  auto liveAttrTimeout = parseDurationMs(vm["live-attr-timeout"].as<std::string>());
  if (!liveAttrTimeout) die("--live-attr-timeout: " + liveAttrTimeout.error().detail);
  auto watchLease = parseDurationMs(vm["watch-lease"].as<std::string>());
  if (!watchLease) die("--watch-lease: " + watchLease.error().detail);
  auto ioTimeout = parseDurationMs(vm["io-timeout"].as<std::string>());
  if (!ioTimeout) die(ioTimeout.error().detail);
  auto metaTimeout = parseDurationMs(vm["meta-timeout"].as<std::string>());
  if (!metaTimeout) die(metaTimeout.error().detail);
  if (*metaTimeout == 0) die("--meta-timeout must be more than 0");
  uint64_t keepaliveMs = 0;
  if (vm.count("keepalive")) {
    auto k = parseDurationMs(vm["keepalive"].as<std::string>());
    if (!k || *k == 0) die("bad --keepalive");
    keepaliveMs = *k;
  }
  auto leaseIdle = parseDurationMs(vm["lease-idle"].as<std::string>());
  if (!leaseIdle) die("--lease-idle: " + leaseIdle.error().detail);
  auto unmountWait = parseDurationMs(vm["unmount-wait"].as<std::string>());
  if (!unmountWait) die("--unmount-wait: " + unmountWait.error().detail);
  std::string level = vm["log-level"].as<std::string>();
  if (level == "debug") log::setMinLevel(log::Level::kDebug);
  else if (level == "warn") log::setMinLevel(log::Level::kWarn);
  else if (level == "error") log::setMinLevel(log::Level::kError);
  else if (level != "info") die("bad --log-level '" + level + "'");
  bool allowOther = false;
  if (vm.count("option")) {
    for (auto& group : vm["option"].as<std::vector<std::string>>()) {
      std::stringstream in(group);
      std::string o;
      while (std::getline(in, o, ',')) {
        if (o == "allow_other") allowOther = true;
        else if (o == "default_permissions" || o == "rw" || o == "suid" || o == "dev" ||
                 o == "exec" || o == "noatime" || o == "relatime" || o == "_netdev" ||
                 o == "defaults" || o.empty()) continue;
        else die("unsupported mount option '" + o + "'");
      }
    }
  }
  if (geteuid() == 0) allowOther = true;  // a shared file system, as root: everyone may use it

  char resolved[PATH_MAX];
  std::string given = vm["mountpoint"].as<std::string>();
  if (!realpath(given.c_str(), resolved)) die("mount point " + given + ": " + strerror(errno));
  std::string mountpoint = resolved;
  struct stat st;
  if (stat(mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    die("mount point " + mountpoint + " is not a directory");
  }
  if (isMountPoint(mountpoint)) die("mount point " + mountpoint + " is busy (already mounted)");
  if (access("/dev/fuse", R_OK | W_OK) != 0) die(std::string("/dev/fuse: ") + strerror(errno));

  std::string logFile = vm.count("log-file") ? vm["log-file"].as<std::string>() : "";
  if (!logFile.empty()) {
    int fd = open(logFile.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) die("cannot open log file " + logFile + ": " + strerror(errno));
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  std::string name = vm.count("name") ? vm["name"].as<std::string>()
                                      : std::string(host) + ":" + mountpoint;
  log::setTag("mount");

  bool foreground = vm.count("foreground") > 0;
  if (!foreground) daemonize();

  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  signal(SIGPIPE, SIG_IGN);
  auto io = kj::setupAsyncIo();
  client::ClientConfig config;
  config.meta = *meta;
  config.host = name;
  config.mountpoint = mountpoint;
  config.ioTimeoutMs = *ioTimeout;
  config.metaRetryMs = *metaTimeout;
  config.keepaliveMs = keepaliveMs;
  {
    std::string ecLog = vm["ec-log"].as<std::string>();
    if (ecLog != "on" && ecLog != "off") die("--ec-log must be on or off, not '" + ecLog + "'");
    config.ecLog = ecLog == "on";
    auto delay = parseDurationMs(vm["ec-log-apply-delay"].as<std::string>());
    if (!delay) die("--ec-log-apply-delay: " + delay.error().detail);
    config.ecLogApplyDelayMs = *delay;
  }
  config.leaseIdleMs = *leaseIdle;
  config.watchLeaseMs = *watchLease;
  auto invalidationDelay = parseDurationMs(vm["fault-invalidation-delay"].as<std::string>());
  if (!invalidationDelay) die("--fault-invalidation-delay: " + invalidationDelay.error().detail);
  config.faultInvalidationDelayMs = *invalidationDelay;
  config.faultExitAfterParity = vm["fault-exit-after-parity"].as<bool>();
  config.faultExitAfterData = vm["fault-exit-after-data"].as<bool>();
  config.connectTimeoutMs = std::min<uint64_t>(5000, *metaTimeout);
  client::Client client(io.provider->getNetwork(), io.provider->getTimer(), config);
  auto started = client.start().wait(io.waitScope);
  if (!started) {
    const char* whom = meta->size() == 1 ? "meta server at " : "meta servers at ";
    die("cannot reach " + std::string(whom) + metaList + ": " + started.error().toString());
  }

  client::MountOptions mountOptions;
  mountOptions.attrTimeout = double(*attrTimeout) / 1000.0;
  mountOptions.liveAttrTimeout = double(*liveAttrTimeout) / 1000.0;
  mountOptions.allowOther = allowOther;
  // FUSE splits its option string at commas: name the cluster by its first meta server.
  mountOptions.fsname = "tessera:" + meta->front().toString();
  client::FuseAdapter adapter(client, io.unixEventPort, mountOptions);
  if (auto s = adapter.mount(mountpoint); !s) die(s.error().detail);
  // Coherence: the meta leader reports other mounts' changes; the kernel drops them.
  if (*watchLease > 0) {
    client.watch([&adapter](const client::Invalidation& inv) { adapter.invalidate(inv); });
  }
  if (vm.count("pid-file")) {
    auto s = writeFileAtomic(vm["pid-file"].as<std::string>(), std::to_string(getpid()) + "\n");
    if (!s) die(s.error().detail);
  }
  log::info("mounted ", metaList.c_str(), " on ", mountpoint.c_str(), " as session ",
            client.session().value);
  reportReady(logFile);

  auto serving = adapter.run();
  auto signalled = io.unixEventPort.onSignal(SIGTERM)
                       .exclusiveJoin(io.unixEventPort.onSignal(SIGINT))
                       .then([](siginfo_t info) { log::info("signal ", info.si_signo, ": unmounting"); });
  serving.exclusiveJoin(kj::mv(signalled)).wait(io.waitScope);
  // A clean handover to the next writer of our chunks: the kernel's last requests (the
  // releases of files closed just before the unmount) finish, buffered data goes out, and every
  // write lease goes back with its chunk's write log applied. Left behind, a lease holds the
  // next writer up until it expires and makes it re-sync the whole chunk. The waits are bounded
  // by --unmount-wait: with the cluster unreachable, waiting longer gains nothing.
  auto& timer = io.provider->getTimer();
  auto deadline = timer.now() + *unmountWait * kj::MILLISECONDS;
  auto bounded = [&](kj::Promise<void> step, const char* what) {
    step.exclusiveJoin(timer.atTime(deadline).then([what] {
          log::warn("unmount: gave up waiting for ", what);
        }))
        .wait(io.waitScope);
  };
  bounded(adapter.settled(), "the requests under way");
  // Buffered data is written whatever the deadline (each write bounded by its own timeouts).
  auto flushed = client.flushAll().wait(io.waitScope);
  if (!flushed) log::error("flushing at unmount: ", flushed.error().toString().c_str());
  bounded(client.letGoAll(), "the write leases to go back");
  log::info("unmounted ", mountpoint.c_str());
  return 0;
}
