#include "tests/support/qemu.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace tessera::test {

const char* const kQemuImg = "/usr/bin/qemu-img";
const char* const kQemuIo = "/usr/bin/qemu-io";
const char* const kQemuSystem = "/usr/bin/qemu-system-x86_64";

namespace {

using Clock = std::chrono::steady_clock;

const std::string kPrompt = "qemu-io> ";

// Polls `ready` every 20 ms until it holds or `timeoutMs` passed.
template <typename F>
bool waitUntil(int timeoutMs, F ready) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!ready()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling, bounded
  }
  return true;
}

int msLeft(Clock::time_point deadline) {
  return int(
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
}

// The whole file, "" if it cannot be read (a log not written yet).
std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// JSON string contents for QMP arguments.
std::string jsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// The string value of a JSON reply (what human-monitor-command returns), unescaped.
std::string jsonUnescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    switch (c) {
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u':
        i += 4;
        break;  // QEMU escapes only control characters this way
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

std::string qemuUnavailableReason() {
  for (const char* bin : {kQemuImg, kQemuIo, kQemuSystem}) {
    if (access(bin, X_OK) != 0) {
      return std::string(bin) + " is not installed (tools/deps --test installs qemu-utils and " +
             "qemu-system-x86)";
    }
  }
  return "";
}

std::string shellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

RunResult qemuImg(std::vector<std::string> args, int timeoutMs) {
  args.insert(args.begin(), kQemuImg);
  return run(args, timeoutMs);
}

RunResult qemuIo(const std::vector<std::string>& options, const std::string& image,
                 const std::vector<std::string>& commands, int timeoutMs) {
  std::vector<std::string> argv{kQemuIo};
  argv.insert(argv.end(), options.begin(), options.end());
  for (auto& c : commands) argv.insert(argv.end(), {"-c", c});
  argv.push_back(image);
  return run(argv, timeoutMs);
}

bool outputClean(const std::string& out) {
  return out.find("failed") == std::string::npos && out.find("rror") == std::string::npos;
}

bool ioClean(const RunResult& r) { return r.exitCode == 0 && outputClean(r.output); }

// --- QemuIoSession ---

QemuIoSession::QemuIoSession(const std::string& dir, const std::string& name,
                             const std::vector<std::string>& options, const std::string& image)
    : fifo_(dir + "/" + name + ".in"), log_(dir + "/" + name + ".out") {
  if (mkfifo(fifo_.c_str(), 0600) != 0) {
    throw std::runtime_error("mkfifo " + fifo_ + ": " + strerror(errno));
  }
  // Read-write, so that opening never blocks and qemu-io sees no end of input until we close.
  fd_ = open(fifo_.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("open " + fifo_ + ": " + strerror(errno));
  std::string cmd = "exec " + shellQuote(kQemuIo);
  for (auto& o : options) cmd += " " + shellQuote(o);
  cmd += " " + shellQuote(image) + " < " + shellQuote(fifo_);
  process_ = Process::spawn({"/bin/sh", "-c", cmd}, log_);
}

QemuIoSession::~QemuIoSession() {
  if (fd_ >= 0) close(fd_);
}

bool QemuIoSession::opened(std::string* why, int timeoutMs) {
  bool up = waitUntil(timeoutMs, [&] { return prompts() >= 1 || !process_.running(); });
  if (up && prompts() >= 1) {
    seen_ = 1;
    return true;
  }
  *why = slurp(log_);
  return false;
}

std::string QemuIoSession::command(const std::string& c, int timeoutMs) {
  std::string line = c + "\n";
  if (::write(fd_, line.data(), line.size()) != ssize_t(line.size())) {
    throw std::runtime_error("write to qemu-io: " + std::string(strerror(errno)));
  }
  if (!waitUntil(timeoutMs, [&] { return prompts() > seen_ || !process_.running(); }) ||
      prompts() <= seen_) {
    throw std::runtime_error("qemu-io did not answer '" + c + "':\n" + slurp(log_));
  }
  ++seen_;
  std::string out = slurp(log_);
  size_t end = out.rfind(kPrompt);
  size_t begin = out.rfind(kPrompt, end == 0 ? 0 : end - 1);
  return out.substr(begin + kPrompt.size(), end - begin - kPrompt.size());
}

bool QemuIoSession::quit(int timeoutMs) {
  if (::write(fd_, "quit\n", 5) != 5) return false;
  return process_.wait(timeoutMs) != -1;
}

size_t QemuIoSession::prompts() const {
  std::string out = slurp(log_);
  size_t n = 0;
  for (size_t at = out.find(kPrompt); at != std::string::npos; at = out.find(kPrompt, at + 1)) ++n;
  return n;
}

// --- Qmp ---

Qmp::Qmp(const std::string& socketPath, Process& qemu, int timeoutMs) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socketPath.size() >= sizeof addr.sun_path) {
    throw std::runtime_error("socket path too long: " + socketPath);
  }
  memcpy(addr.sun_path, socketPath.c_str(), socketPath.size() + 1);
  bool connected = waitUntil(timeoutMs, [&] {
    if (!qemu.running()) return true;
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return true;
    close(fd_);
    fd_ = -1;
    return false;
  });
  if (!connected || fd_ < 0) throw std::runtime_error("no QMP socket at " + socketPath);
  std::string greeting = readLine(timeoutMs);
  if (greeting.find("\"QMP\"") == std::string::npos) {
    throw std::runtime_error("unexpected QMP greeting: " + greeting);
  }
  std::string r = execute(R"({"execute": "qmp_capabilities"})");
  if (r.rfind("{\"return\"", 0) != 0) throw std::runtime_error("qmp_capabilities: " + r);
}

Qmp::~Qmp() {
  if (fd_ >= 0) close(fd_);
}

std::string Qmp::execute(const std::string& json, int timeoutMs) {
  std::string line = json + "\n";
  if (send(fd_, line.data(), line.size(), MSG_NOSIGNAL) != ssize_t(line.size())) {
    throw std::runtime_error("QMP send: " + std::string(strerror(errno)));
  }
  auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (true) {
    std::string reply = readLine(std::max(msLeft(deadline), 0));
    if (reply.rfind("{\"return\"", 0) == 0 || reply.rfind("{\"error\"", 0) == 0) return reply;
  }
}

std::string Qmp::hmp(const std::string& commandLine, int timeoutMs) {
  std::string r =
      execute(R"({"execute": "human-monitor-command", "arguments": {"command-line": ")" +
                  jsonEscape(commandLine) + "\"}}",
              timeoutMs);
  const std::string head = "{\"return\": \"";
  if (r.rfind(head, 0) != 0) return "QMP error: " + r;
  size_t end = r.rfind('"');
  return jsonUnescape(r.substr(head.size(), end - head.size()));
}

std::string Qmp::field(const std::string& reply, const std::string& key) {
  std::string k = "\"" + key + "\": \"";
  size_t at = reply.find(k);
  if (at == std::string::npos) return "";
  at += k.size();
  return reply.substr(at, reply.find('"', at) - at);
}

std::string Qmp::readLine(int timeoutMs) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (true) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    int left = msLeft(deadline);
    if (left <= 0) throw std::runtime_error("QMP: no answer in time");
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char buf[4096];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) throw std::runtime_error("QMP: connection closed");
    buffer_.append(buf, size_t(n));
  }
}

// --- Vm ---

Vm::Vm(const std::string& dir, const std::string& name, const std::string& image,
       const std::string& incoming)
    : qmpSocket(dir + "/" + name + ".qmp"), log(dir + "/" + name + ".log") {
  std::vector<std::string> argv{kQemuSystem,    "-name",       name,       "-machine",
                                "pc,accel=tcg", "-nodefaults", "-display", "none",
                                "-m",           "64",          "-smp",     "1"};
  argv.insert(argv.end(), {"-drive", "file=" + image +
                                         ",format=qcow2,if=none,id=drive0,cache=none,aio=native"});
  argv.insert(argv.end(), {"-device", "virtio-blk-pci,drive=drive0,id=disk0"});
  argv.insert(argv.end(), {"-qmp", "unix:" + qmpSocket + ",server=on,wait=off"});
  if (!incoming.empty()) argv.insert(argv.end(), {"-incoming", incoming});
  process = Process::spawn(argv, log);
  qmp = std::make_unique<Qmp>(qmpSocket, process);
}

std::string Vm::io(const std::string& command) {
  size_t before = slurp(log).size();
  std::string reply = qmp->hmp("qemu-io drive0 \"" + command + "\"");
  return reply + slurp(log).substr(before);
}

bool Vm::quit() {
  try {
    qmp->execute(R"({"execute": "quit"})");
  } catch (const std::exception&) {
    // QEMU may close the socket before its reply: the exit below is what counts.
  }
  return process.wait(30'000) != -1;
}

std::string waitMigration(Qmp& qmp, const std::string& waitFor, int timeoutMs) {
  std::string status;
  waitUntil(timeoutMs, [&] {
    status = Qmp::field(qmp.execute(R"({"execute": "query-migrate"})"), "status");
    return status == waitFor || status == "completed" || status == "failed" ||
           status == "cancelled";
  });
  return status;
}

}  // namespace tessera::test
