// client/meta_link.h — the client's connection to the meta cluster (3 or 5 Raft replicas, or one
// server). It keeps one connection, to the server it believes leads, and hides failover from its
// callers: call() and mutate() resolve to the leader's answer, or to an Error once the call's
// time is up.
//
// Finding the leader. The link starts with the configured addresses and a current one (the
// first). Every attempt of a call goes to the current server:
//   - it answers (anything but kNotLeader): that is the result. If it is not the server that
//     answered last, the link logs "meta leader is now X" (one line per leader change).
//   - kNotLeader with a leader hint "HOST:PORT": the hint becomes current (added to the list if
//     unknown) and the call is tried there at once. Immediate retries are limited (a few per
//     backoff), so two servers with stale hints cannot make a call spin; a hint naming a server
//     this call already failed to reach is ignored, as stale.
//   - kNotLeader without a hint (an election): the next address becomes current (round robin);
//     retried after the backoff.
//   - the connection fails, the connect or the attempt times out (`callTimeoutMs`): the
//     connection is dropped, the next address becomes current; retried after the backoff. The
//     first such failure after the leader answered logs one warning; not one per retry.
// The backoff of one call starts at kFirstBackoffMs and doubles to kMaxBackoffMs; it does not
// hammer a cluster that is electing. Concurrent calls share the connection and the current
// server: a failure seen on a connection that was already replaced moves nothing.
//
// Giving up. A call is tried until `retryForMs` after it started (mount flag --meta-timeout),
// then fails with kUnavailable naming what it last saw. A call that is not idempotent is not
// repeated once it may have reached a server (kUnavailable, or kTimedOut if it timed out), but a
// kNotLeader answer, or a failure before it was sent, is always retried: nothing was done.
//
// Not thread-safe: lives on the client's event loop. The dialer and timer outlive it.
#pragma once
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/timer.h>

#include "fs/log.h"
#include "fs/options.h"
#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"

namespace tessera::client {

// How the link opens connections. The production one uses TCP; tests hand out in-process pipes.
class MetaDialer {
 public:
  virtual ~MetaDialer() noexcept(false) = default;
  // kUnavailable (or kTimedOut) if nothing answered at `address` within `timeoutMs`.
  virtual kj::Promise<Result<kj::Own<Connection>>> dial(const Address& address,
                                                        uint64_t timeoutMs) = 0;
};

class TcpMetaDialer final : public MetaDialer {
 public:
  TcpMetaDialer(kj::Network& network, kj::Timer& timer) : network_(network), timer_(timer) {}
  kj::Promise<Result<kj::Own<Connection>>> dial(const Address& address,
                                                uint64_t timeoutMs) override {
    return Connection::open(network_, timer_, address, timeoutMs);
  }

 private:
  kj::Network& network_;
  kj::Timer& timer_;
};

class MetaLink {
 public:
  struct Config {
    std::vector<Address> addresses;     // at least one
    uint64_t connectTimeoutMs = 5'000;  // one connection attempt to one server
    uint64_t callTimeoutMs = 5'000;     // one attempt of a call on one server
    uint64_t retryForMs = 30'000;       // a call's whole life, every retry included
  };
  static constexpr uint64_t kFirstBackoffMs = 50;
  static constexpr uint64_t kMaxBackoffMs = 1'000;

  // Over TCP.
  MetaLink(kj::Network& network, kj::Timer& timer, Config config);
  // Over `dialer`, which must outlive the link.
  MetaLink(MetaDialer& dialer, kj::Timer& timer, Config config);

  template <typename T>
  using Fn = std::function<kj::Promise<Result<T>>(proto::MetaService::Client)>;

  // Runs `call` against the meta leader, finding it and retrying as the header says. `call`
  // turns the reply's `error` into the Result (fromWire keeps kNotLeader and its hint), so a
  // kNotLeader answer is never seen by the caller unless the call's time ran out.
  template <typename T>
  kj::Promise<Result<T>> call(kj::StringPtr what, bool idempotent, Fn<T> call) {
    return attempt<T>(newTry(what, idempotent), kj::mv(call));
  }

  // A mutating request's identity (fs/proto/common.capnp RequestId).
  struct Req {
    uint64_t session = 0, seq = 0, ackedBelow = 0;
    void fill(proto::RequestId::Builder b) const {
      b.setSession(session);
      b.setSeq(seq);
      b.setAckedBelow(ackedBelow);
    }
  };
  // Runs a mutating call under one request id for all its attempts, on whichever server: the
  // meta cluster applies it once however often it is sent, so it is retried like an idempotent
  // call. `fn` must take the session from the Req it is given (not from elsewhere): a request
  // answered stale because its session expired is sent once more, under the new session, once
  // onStaleSession has opened one (a stale answer means it was not applied).
  template <typename T>
  using MutateFn = std::function<kj::Promise<Result<T>>(proto::MetaService::Client, Req)>;
  template <typename T>
  kj::Promise<Result<T>> mutate(kj::StringPtr what, MutateFn<T> fn) {
    uint64_t seq = nextSeq_++;
    inflight_.insert(seq);
    auto done = kj::defer([this, seq] { inflight_.erase(seq); });
    lastMutation_ = timer_.now();
    return mutateAs<T>(what, seq, fn)
        .then([this, what, seq, fn](std::pair<uint64_t, Result<T>> sent) mutable
              -> kj::Promise<Result<T>> {
          auto& [session, r] = sent;
          if (r.code() != Errc::kStale || !onStaleSession || session == 0) return kj::mv(r);
          return onStaleSession(session).then(
              [this, what, seq, fn = kj::mv(fn), r = kj::mv(r)](bool renewed) mutable
              -> kj::Promise<Result<T>> {
                if (!renewed) return kj::mv(r);
                return mutateAs<T>(what, seq, fn).then(
                    [](std::pair<uint64_t, Result<T>> again) { return kj::mv(again.second); });
              });
        })
        .attach(kj::mv(done));
  }
  // Requests carry this session from now on.
  void setSession(uint64_t session) { session_ = session; }
  // Called with the session of a mutation answered stale: resolves true once the link carries
  // a new session (the mutation is then sent again), false to pass the stale answer on.
  std::function<kj::Promise<bool>(uint64_t session)> onStaleSession;
  // When the last mutation (which counts as contact for the session) started.
  kj::TimePoint lastMutation() const { return lastMutation_; }

  // Connects to one of the meta servers, trying each address once in turn: kUnavailable naming
  // them if none accepts a connection. Which one leads is found by the first call.
  kj::Promise<Status> connect();

  // The server calls go to now (the leader, once one answered).
  const Address& current() const { return addresses_[current_]; }
  // Every address known: the configured ones, then those learned from hints.
  const std::vector<Address>& addresses() const { return addresses_; }

 private:
  // One call's progress through its attempts.
  struct Try {
    std::string what;
    bool idempotent = true;
    kj::TimePoint deadline = kj::origin<kj::TimePoint>();
    uint64_t backoffMs = kFirstBackoffMs;
    unsigned quick = 0;           // retries without a pause since the last pause
    std::string unreachable;      // the last server this call failed to reach
    Error last;                   // what the last attempt saw
    bool sentAndLost = false;     // a non-idempotent call may have been applied: stop
  };
  enum class Next { kNow, kLater, kGiveUp };
  template <typename T>
  struct Outcome {
    Result<T> result;
    bool transport;  // the connection failed or timed out; `result` holds why
  };

  template <typename T>
  kj::Promise<Result<T>> attempt(Try t, Fn<T> fn) {
    uint64_t gen = generation_;
    std::string address = current().toString();
    return target(t).then([this, t = kj::mv(t), fn = kj::mv(fn), gen,
                           address = kj::mv(address)](
                              Result<proto::MetaService::Client> c) mutable
                          -> kj::Promise<Result<T>> {
      if (!c) {
        Next next = unsent(t, gen, address, c.error());
        return retry<T>(kj::mv(t), kj::mv(fn), next);
      }
      kj::String what = kj::str(t.what);
      return timer_.timeoutAfter(attemptTimeout(t), fn(kj::mv(*c)))
          .then([](Result<T> r) { return Outcome<T>{kj::mv(r), false}; },
                [what = kj::mv(what)](kj::Exception&& e) {
                  return Outcome<T>{errorFromException(e, what), true};
                })
          .then([this, t = kj::mv(t), fn = kj::mv(fn), gen,
                 address = kj::mv(address)](Outcome<T> o) mutable -> kj::Promise<Result<T>> {
            if (o.transport || o.result.code() == Errc::kNotLeader) {
              Next next = o.transport ? lost(t, gen, address, o.result.error())
                                      : notLeader(t, gen, address, o.result.error());
              return retry<T>(kj::mv(t), kj::mv(fn), next);
            }
            answered(gen, address);
            return kj::mv(o.result);
          });
    });
  }

  // One mutation's attempts under the current session; with the session it carried.
  template <typename T>
  kj::Promise<std::pair<uint64_t, Result<T>>> mutateAs(kj::StringPtr what, uint64_t seq,
                                                       MutateFn<T> fn) {
    uint64_t session = session_;
    return call<T>(what, true,
                   [this, seq, session, fn = kj::mv(fn)](proto::MetaService::Client c) {
                     // Every reply below the oldest request still waiting has reached us.
                     return fn(kj::mv(c), Req{session, seq, *inflight_.begin()});
                   })
        .then([session](Result<T> r) { return std::make_pair(session, kj::mv(r)); });
  }

  template <typename T>
  kj::Promise<Result<T>> retry(Try t, Fn<T> fn, Next next) {
    if (next == Next::kGiveUp) return Result<T>(giveUp(t));
    if (next == Next::kNow) return attempt<T>(kj::mv(t), kj::mv(fn));
    kj::Duration delay = pause(t);
    return timer_.afterDelay(delay).then([this, t = kj::mv(t), fn = kj::mv(fn)]() mutable {
      if (expired(t)) return kj::Promise<Result<T>>(Result<T>(giveUp(t)));
      return attempt<T>(kj::mv(t), kj::mv(fn));
    });
  }

  Try newTry(kj::StringPtr what, bool idempotent) const;
  bool expired(const Try& t) const;
  kj::Duration attemptTimeout(const Try& t) const;
  // The next backoff of `t`, no later than its deadline; doubles the one after.
  kj::Duration pause(Try& t) const;
  Error giveUp(const Try& t) const;

  // What to do after an attempt of `t` made at generation `gen` to `address`:
  // it could not be sent (no connection);
  Next unsent(Try& t, uint64_t gen, const std::string& address, const Error& e);
  // the connection failed or timed out after it was sent;
  Next lost(Try& t, uint64_t gen, const std::string& address, const Error& e);
  // the server does not lead.
  Next notLeader(Try& t, uint64_t gen, const std::string& address, const Error& e);
  // A retry without a pause while `t` has some left, else after one.
  Next quickly(Try& t);
  // The server at generation `gen` answered.
  void answered(uint64_t gen, const std::string& address);

  // The current server's capability, connecting if needed (bounded by `t`'s deadline).
  kj::Promise<Result<proto::MetaService::Client>> target(const Try& t);
  void startConnect();
  // If `gen` is still the current generation: drop its connection and make the next address
  // (round robin) current. `e` is logged if the leader was lost.
  void moveOn(uint64_t gen, const Error& e, bool failed);
  // If `gen` is still current: make `address` current (learning it if unknown).
  void switchTo(uint64_t gen, const Address& address);
  void drop();
  kj::Promise<Status> connectRound(size_t left, Error last);

  kj::Own<MetaDialer> ownDialer_;
  MetaDialer& dialer_;
  kj::Timer& timer_;
  std::vector<Address> addresses_;
  uint64_t connectTimeoutMs_, callTimeoutMs_, retryForMs_;
  size_t current_ = 0;
  // Bumped whenever the current server or its connection changes: news about an older one
  // (a failure, a hint) is stale and moves nothing.
  uint64_t generation_ = 1;
  kj::Own<Connection> connection_;
  kj::Maybe<proto::MetaService::Client> service_;
  kj::Promise<void> watch_ = nullptr;
  kj::Promise<void> graveyard_ = nullptr;
  kj::Maybe<kj::ForkedPromise<void>> connecting_;
  uint64_t connectingGen_ = 0;  // the generation connecting_ connects for, 0 if none
  uint64_t failedGen_ = 0;      // the last generation whose connect failed, and why
  Error failedWhy_;
  std::string leader_;          // the last server that answered
  bool searching_ = false;      // the leader was lost and no server has answered since
  uint64_t session_ = 0;
  kj::TimePoint lastMutation_ = kj::origin<kj::TimePoint>();
  uint64_t nextSeq_ = 1;
  std::set<uint64_t> inflight_;
};

}  // namespace tessera::client
