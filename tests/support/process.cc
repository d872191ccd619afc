#include "tests/support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tessera::test {
namespace {

int64_t nowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

[[noreturn]] void execChild(const std::vector<std::string>& argv, int outFd) {
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  int null = open("/dev/null", O_RDONLY);
  dup2(null, STDIN_FILENO);
  dup2(outFd, STDOUT_FILENO);
  dup2(outFd, STDERR_FILENO);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  dprintf(STDERR_FILENO, "exec %s: %s\n", args[0], strerror(errno));
  _exit(127);
}

}  // namespace

Process Process::spawn(const std::vector<std::string>& argv, const std::string& logFile) {
  int fd = open(logFile.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("open " + logFile + ": " + strerror(errno));
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + strerror(errno));
  if (pid == 0) execChild(argv, fd);
  close(fd);
  Process p;
  p.pid_ = pid;
  return p;
}

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0) stop(0);
    pid_ = o.pid_;
    status_ = o.status_;
    o.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0) stop(0);
}

bool Process::running() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    status_ = status;
    pid_ = -1;
    return false;
  }
  return true;
}

void Process::signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

int Process::wait(int timeoutMs) {
  int64_t deadline = nowMs() + timeoutMs;
  while (pid_ > 0) {
    if (!running()) break;
    if (nowMs() >= deadline) return -1;
    usleep(10'000);  // polling a child's exit; bounded by the deadline
  }
  return status_;
}

void Process::stop(int graceMs) {
  if (pid_ <= 0) return;
  if (graceMs > 0) {
    ::kill(pid_, SIGTERM);
    if (wait(graceMs) != -1) return;
  }
  ::kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  status_ = status;
  pid_ = -1;
}

RunResult run(const std::vector<std::string>& argv, int timeoutMs) {
  int pipeFds[2];
  if (pipe2(pipeFds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    close(pipeFds[0]);
    execChild(argv, pipeFds[1]);
  }
  close(pipeFds[1]);
  fcntl(pipeFds[0], F_SETFL, O_NONBLOCK);
  RunResult r;
  int64_t deadline = nowMs() + timeoutMs;
  int status = 0;
  bool exited = false;
  char buf[4096];
  while (true) {
    ssize_t n;
    while ((n = read(pipeFds[0], buf, sizeof buf)) > 0) r.output.append(buf, size_t(n));
    if (!exited && waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (exited && n == 0) break;
    if (exited && n < 0 && errno == EAGAIN) {
      // Exited, but a grandchild may hold the pipe: take what is there and stop.
      break;
    }
    if (nowMs() >= deadline) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      if (!exited) waitpid(pid, &status, 0);
      r.timedOut = true;
      close(pipeFds[0]);
      return r;
    }
    usleep(5'000);  // polling output and exit; bounded by the deadline
  }
  close(pipeFds[0]);
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

RunResult sh(const std::string& script, int timeoutMs) {
  return run({"/bin/bash", "-c", script}, timeoutMs);
}

}  // namespace tessera::test
