#include "tests/support/cluster.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

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
  chunks_.resize(options_.chunks);
  chunkPorts_.resize(options_.chunks);
  startMeta();
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
  meta_.stop(5'000);
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

void Cluster::startMeta() {
  std::string portFile = dir() + "/meta.port";
  unlink(portFile.c_str());
  std::string listen = "127.0.0.1:" + std::to_string(metaPort_);  // 0 the first time
  std::vector<std::string> argv{buildDir() + "/meta/tessera-meta", "--dir", dir() + "/meta",
                                "--listen", listen, "--port-file", portFile, "--default-policy",
                                options_.policy, "--server-timeout", options_.serverTimeout,
                                "--log-level", logLevel()};
  argv.insert(argv.end(), options_.metaArgs.begin(), options_.metaArgs.end());
  meta_ = Process::spawn(argv, dir() + "/meta.log");
  bool up = waitFor(15'000, [&] { return access(portFile.c_str(), R_OK) == 0 || !meta_.running(); });
  if (!up || !meta_.running()) throw std::runtime_error("tessera-meta did not start:\n" + slurp(dir() + "/meta.log"));
  metaPort_ = uint16_t(std::stoi(slurp(portFile)));
}

void Cluster::stopMeta(int sig) {
  if (sig == SIGTERM) {
    meta_.stop();
  } else {
    meta_.signal(sig);
    if (sig == SIGKILL) meta_.wait(5'000);
  }
}

void Cluster::startChunk(int i) {
  std::string d = chunkDir(i);
  mkdir(d.c_str(), 0755);
  std::string portFile = dir() + "/chunk" + std::to_string(i) + ".port";
  unlink(portFile.c_str());
  chunkPorts_[i] = 0;
  chunks_[i] = Process::spawn(
      {buildDir() + "/chunk/tessera-chunk", "--data", d, "--meta", meta(), "--host",
       "host" + std::to_string(i), "--heartbeat", options_.heartbeat, "--port-file", portFile},
      dir() + "/chunk" + std::to_string(i) + ".log");
  bool listening = waitFor(15'000, [&] {
    return access(portFile.c_str(), R_OK) == 0 || !chunks_[i].running();
  });
  if (!listening || !chunks_[i].running()) {
    throw std::runtime_error("tessera-chunk did not start:\n" +
                             slurp(dir() + "/chunk" + std::to_string(i) + ".log"));
  }
  chunkPorts_[i] = uint16_t(std::stoi(slurp(portFile)));
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
                           "--io-timeout", options_.ioTimeout, "--meta-timeout", "20s",
                           "--log-level", logLevel(), mountpoint_},
                          dir() + "/mount.log");
  bool up = waitFor(15'000, [&] { return isMountPoint(mountpoint_) || !mount_.running(); });
  if (!up || !mount_.running()) {
    throw std::runtime_error("tessera-mount did not mount:\n" + slurp(dir() + "/mount.log"));
  }
}

void Cluster::unmount() {
  for (int attempt = 0; attempt < 50 && isMountPoint(mountpoint_); ++attempt) {
    auto r = run({"/usr/bin/fusermount3", "-u", mountpoint_}, 10'000);
    if (r.exitCode == 0) break;
    usleep(100'000);  // the kernel may still hold a closing file; bounded retries
  }
  if (mount_.wait(15'000) == -1) {
    mount_.stop(0);
    run({"/usr/bin/fusermount3", "-u", "-z", mountpoint_}, 10'000);
    throw std::runtime_error("tessera-mount did not exit after unmount");
  }
}

// Up means: the meta server lists every running chunk server at the address it listens on now
// (a restarted server has a new port; until it registers, the meta server still shows the old
// instance as up for the server timeout) and counts `n` up in all.
bool Cluster::waitChunksUp(int n, int timeoutMs) {
  return waitFor(timeoutMs, [&] {
    auto r = run({buildDir() + "/tools/tessera", "--meta", meta(), "status"}, 10'000);
    if (r.exitCode != 0) return false;
    auto pos = r.output.find("chunk servers: ");
    if (pos == std::string::npos || std::atoi(r.output.c_str() + pos + 15) != n) return false;
    for (size_t i = 0; i < chunks_.size(); ++i) {
      if (!chunks_[i].running() || chunkPorts_[i] == 0) continue;
      std::string address = " 127.0.0.1:" + std::to_string(chunkPorts_[i]) + " ";
      auto at = r.output.find(address);
      if (at == std::string::npos) return false;
      auto lineEnd = r.output.find('\n', at);
      if (r.output.substr(at, lineEnd - at).find(" up ") == std::string::npos) return false;
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
