// tests/support/link_proxy.h — a TCP forwarder on 127.0.0.1 that a test can cut and heal: the
// fault-injecting link between two meta servers in partition tests. One proxy carries one
// direction of calls (the connections member A opens to member B), so cutting the proxies of a
// member in both directions partitions it from the others while clients still reach it.
//
// A cut behaves like a network partition, not like a crash of the peer: connections stay open
// and every byte is dropped both ways, so the endpoints only learn of it from their timeouts.
// New connections are accepted and starved the same way. Healing closes the connections that
// lost bytes (their streams cannot be resumed) and forwards on new ones.
//
// The forwarding runs on a thread of its own; cut() and heal() return once it acted on them.
#pragma once
#include <cstdint>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace tessera::test {

class LinkProxy {
 public:
  // Listens on a free port of 127.0.0.1 and forwards to 127.0.0.1:`target`.
  explicit LinkProxy(uint16_t target);
  ~LinkProxy();
  LinkProxy(const LinkProxy&) = delete;
  LinkProxy& operator=(const LinkProxy&) = delete;

  uint16_t port() const { return port_; }
  void cut();
  void heal();

 private:
  void run();
  void request(bool cut);

  uint16_t target_;
  uint16_t port_ = 0;
  int listenFd_ = -1;
  int wake_[2] = {-1, -1};
  std::mutex mu_;
  std::condition_variable changed_;
  bool wantCut_ = false;
  uint64_t requested_ = 0;  // state changes asked for
  uint64_t applied_ = 0;    // state changes the thread acted on
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace tessera::test
