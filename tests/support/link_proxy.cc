#include "tests/support/link_proxy.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace tessera::test {
namespace {

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// Writes all of `n` bytes to a blocking socket; false if the peer is gone.
bool writeAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

struct Pair {
  int a = -1;  // the caller's side
  int b = -1;  // the target's side
  bool starved = false;  // lost bytes to a cut: closed at the heal
  void close() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
    a = b = -1;
  }
};

}  // namespace

LinkProxy::LinkProxy(uint16_t target) : target_(target) {
  listenFd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listenFd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (listenFd_ < 0 || ::bind(listenFd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listenFd_, 64) != 0 ||
      ::getsockname(listenFd_, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
      ::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::runtime_error(std::string("link proxy: ") + strerror(errno));
  }
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { run(); });
}

LinkProxy::~LinkProxy() {
  stop_ = true;
  char c = 0;
  (void)!::write(wake_[1], &c, 1);
  thread_.join();
  ::close(listenFd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void LinkProxy::cut() { request(true); }
void LinkProxy::heal() { request(false); }

void LinkProxy::request(bool cut) {
  std::unique_lock lock(mu_);
  wantCut_ = cut;
  uint64_t mine = ++requested_;
  char c = 0;
  (void)!::write(wake_[1], &c, 1);
  if (!changed_.wait_for(lock, std::chrono::seconds(10), [&] { return applied_ >= mine; })) {
    throw std::runtime_error("link proxy did not act on a cut or heal within 10 s");
  }
}

void LinkProxy::run() {
  std::vector<Pair> pairs;
  bool cut = false;
  std::vector<char> buf(1 << 16);
  while (!stop_) {
    {
      std::lock_guard lock(mu_);
      if (applied_ != requested_) {
        cut = wantCut_;
        for (auto& p : pairs) {
          if (cut) p.starved = true;
          else if (p.starved) p.close();
        }
        applied_ = requested_;
        changed_.notify_all();
      }
    }
    std::erase_if(pairs, [](const Pair& p) { return p.a < 0; });

    std::vector<pollfd> fds;
    fds.push_back({listenFd_, POLLIN, 0});
    fds.push_back({wake_[0], POLLIN, 0});
    for (auto& p : pairs) {
      fds.push_back({p.a, POLLIN, 0});
      fds.push_back({p.b, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), 200) < 0 && errno != EINTR) break;
    if (fds[1].revents) {
      char drain[64];
      while (::read(wake_[0], drain, sizeof drain) > 0) {
      }
    }
    size_t existing = pairs.size();
    if (fds[0].revents & POLLIN) {
      int a = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (a >= 0) {
        int b = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in t = loopback(target_);
        if (b < 0 || ::connect(b, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
          // Nothing listens there (the member is down): the caller sees a refused link.
          ::close(a);
          if (b >= 0) ::close(b);
        } else {
          int one = 1;
          ::setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          ::setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          pairs.push_back({a, b, cut});
        }
      }
    }
    for (size_t i = 0; i < existing; ++i) {
      Pair& p = pairs[i];
      for (int side = 0; side < 2 && p.a >= 0; ++side) {
        const pollfd& f = fds[2 + 2 * i + side];
        if (!(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        int from = side == 0 ? p.a : p.b;
        int to = side == 0 ? p.b : p.a;
        ssize_t n = ::recv(from, buf.data(), buf.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          // A closed end closes the other, also under a cut: the process at that end is gone
          // (killed), which its peer would learn on a real network too, eventually.
          p.close();
          break;
        }
        if (p.starved) continue;  // dropped: the link is cut
        if (!writeAll(to, buf.data(), size_t(n))) p.close();
      }
    }
  }
  for (auto& p : pairs) p.close();
}

}  // namespace tessera::test
