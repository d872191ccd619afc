// tools/meta_cluster.h — the admin command's view of the meta cluster (a Raft group of 1, 3 or
// 5 tessera-meta servers). It asks every meta server it knows for its status in parallel, finds
// the leader, and runs admin calls on the leader, following kNotLeader hints.
//
// Which servers it knows: the addresses it was given (--meta), then every address a server
// names as a member or as the leader. Each server's answer is that server's own view (term,
// role, commit, applied); the member list with match/lag/active is the leader's view.
//
// Everything is bounded by one deadline (the command's --timeout), set at construction; each
// question to one server is bounded by the time left (but at least kMinAskMs) and at most
// kAskMs, so a stopped server does not eat the whole budget of a survey.
//
// Synchronous: it waits on the caller's event loop (io.waitScope). For a command-line tool only;
// the connections it opens live as long as it does.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <kj/async-io.h>

#include "fs/options.h"
#include "fs/proto/meta.capnp.h"
#include "fs/result.h"
#include "fs/rpc.h"

namespace tessera::tools {

// One member as the leader knows it.
struct MemberInfo {
  uint64_t id = 0;
  std::string address;
  std::string role;
  uint64_t match = 0;
  uint64_t lag = 0;  // the leader's commit - match
  bool active = false;
};

// One meta server's answer to `status`, or why it gave none.
struct ServerView {
  std::string address;  // where we asked
  bool reachable = false;
  Error error;          // why not, if not reachable
  uint64_t id = 0, term = 0, leader = 0, commit = 0, applied = 0, lastIndex = 0;
  uint64_t snapshotIndex = 0, uptimeMs = 0;
  std::string role, leaderAddress, clusterId;
  std::vector<MemberInfo> members;  // sorted by id
  // The whole reply (chunk servers and capacity are filled by the leader only).
  std::optional<capnp::Response<proto::MetaService::StatusResults>> reply;

  bool isMember(uint64_t memberId) const;
  const MemberInfo* member(uint64_t memberId) const;
};

struct Survey {
  std::vector<ServerView> views;  // one per known address, in the order they became known
  int leader = -1;                // index into views, -1 if no server leads

  const ServerView* leaderView() const { return leader < 0 ? nullptr : &views[leader]; }
  // The view of the server asked at `address`, if it was asked.
  const ServerView* at(const std::string& address) const;
  bool anyReachable() const;
};

class MetaCluster {
 public:
  static constexpr uint64_t kAskMs = 2'000;     // one question to one server, at most
  static constexpr uint64_t kMinAskMs = 300;    // ... and at least, even past the deadline
  static constexpr uint64_t kPauseMs = 200;     // between rounds while there is no leader

  template <typename T>
  using Fn = std::function<kj::Promise<Result<T>>(proto::MetaService::Client)>;

  // `addresses` must not be empty. `io` outlives this.
  MetaCluster(kj::AsyncIoContext& io, std::vector<Address> addresses, uint64_t timeoutMs);

  // Asks every known server once (in parallel) and picks the leader: the server that says it
  // leads with the highest term. Learns addresses from the answers and asks those too.
  Survey survey();
  // Asks the server at `address` alone, without learning the addresses it names.
  ServerView askOne(const std::string& address);
  // Surveys until a server leads or the deadline passes; the last survey.
  Survey findLeader();

  // Runs `fn` on the leader until it answers anything but kNotLeader or kBusy, following leader
  // hints and surveying again when there is none; kUnavailable/kTimedOut naming the last thing
  // seen once the deadline passed. A call whose connection failed after it was sent is not
  // repeated: kUnavailable "may or may not have been applied" — the caller checks.
  template <typename T>
  Result<T> onLeader(const std::string& what, Fn<T> fn);

  // "a:1,b:2": every address known so far.
  std::string known() const;
  uint64_t leftMs() const;
  bool expired() const { return leftMs() == 0; }
  uint64_t timeoutMs() const { return timeoutMs_; }
  void sleepMs(uint64_t ms);
  kj::Timer& timer() { return timer_; }
  kj::WaitScope& waitScope() { return io_.waitScope; }

 private:
  kj::Promise<ServerView> ask(std::string address, uint64_t ms);
  kj::Promise<Result<proto::MetaService::Client>> client(const std::string& address, uint64_t ms);
  void drop(const std::string& address);
  void learn(const std::string& address);
  enum class How { kAnswered, kUnsent, kLost };  // kLost: sent, then the connection failed
  template <typename T>
  struct Outcome {
    Result<T> result;
    How how;
  };
  // One attempt of `fn` at `address`, bounded by the time left.
  template <typename T>
  Outcome<T> attempt(const std::string& address, const std::string& what, Fn<T>& fn);

  kj::AsyncIoContext& io_;
  kj::Timer& timer_;
  std::vector<std::string> known_;
  std::map<std::string, kj::Own<Connection>> connections_;
  uint64_t timeoutMs_;
  kj::TimePoint deadline_;
  std::string leader_;  // the leader's address as last seen, "" if unknown
};

// --- templates -------------------------------------------------------------------------------

template <typename T>
MetaCluster::Outcome<T> MetaCluster::attempt(const std::string& address, const std::string& what,
                                              Fn<T>& fn) {
  uint64_t ms = std::max<uint64_t>(leftMs(), 1);
  auto c = client(address, ms).wait(io_.waitScope);
  if (!c) return {Result<T>(c.error()), How::kUnsent};
  auto o = timer_.timeoutAfter(ms * kj::MILLISECONDS, fn(kj::mv(*c)))
               .then([](Result<T> r) { return Outcome<T>{kj::mv(r), How::kAnswered}; },
                     [&what](kj::Exception&& e) {
                       return Outcome<T>{Result<T>(errorFromException(e, what)), How::kLost};
                     })
               .wait(io_.waitScope);
  if (o.how == How::kLost) drop(address);
  return o;
}

template <typename T>
Result<T> MetaCluster::onLeader(const std::string& what, Fn<T> fn) {
  Error last{Errc::kUnavailable, "no meta server leads (asked " + known() + ")"};
  std::string target = leader_;
  int hops = 0;
  while (true) {
    if (target.empty()) {
      Survey s = findLeader();
      if (!s.leaderView()) {
        if (!s.anyReachable()) {
          return Error{Errc::kUnavailable, "cannot reach meta server at " + known()};
        }
        return last;
      }
      target = s.leaderView()->address;
    }
    auto o = attempt<T>(target, what, fn);
    if (o.result.ok()) {
      leader_ = target;
      return kj::mv(o.result);
    }
    last = o.result.error();
    if (o.how == How::kLost) {
      // It reached the server, or not: the caller checks whether it happened.
      if (last.code != Errc::kTimedOut) last.code = Errc::kUnavailable;
      last.detail = what + " at " + target + ": " + last.detail +
                    " (it may or may not have been applied)";
      return last;
    }
    if (o.how == How::kAnswered && last.code != Errc::kNotLeader && last.code != Errc::kBusy) {
      return last;
    }
    if (expired()) {
      last.detail = what + " at " + target + ": " + last.detail;
      return last;
    }
    if (o.how == How::kAnswered && last.code == Errc::kNotLeader && !last.leaderHint.empty() &&
        last.leaderHint != target && hops < 5) {
      ++hops;
      learn(last.leaderHint);
      target = last.leaderHint;
      continue;
    }
    hops = 0;
    leader_.clear();
    target.clear();
    sleepMs(kPauseMs);
  }
}

}  // namespace tessera::tools
