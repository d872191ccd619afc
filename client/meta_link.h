// client/meta_link.h — the client's connection to the meta server: connects on first use,
// reconnects after a fault, and retries calls that are safe to repeat until a deadline.
// Not thread-safe: lives on the client's event loop.
#pragma once
#include <functional>
#include <set>

#include <kj/async.h>
#include <kj/timer.h>

#include "fs/log.h"
#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"

namespace tessera::client {

class MetaLink {
 public:
  MetaLink(kj::Network& network, kj::Timer& timer, Address address, uint64_t connectTimeoutMs,
           uint64_t retryForMs, uint64_t callTimeoutMs);

  // Runs `call` against the meta server. A transport fault (disconnect, timeout) drops the
  // connection; if `idempotent`, the call is repeated on a new connection with backoff until
  // `retryForMs` has passed, then fails with kUnavailable. A call that is not idempotent is not
  // repeated once sent (it may have been applied).
  template <typename T>
  kj::Promise<Result<T>> call(kj::StringPtr what, bool idempotent,
                              std::function<kj::Promise<Result<T>>(proto::MetaService::Client)> call) {
    return attempt<T>(kj::str(what), idempotent, kj::mv(call), timer_.now(), 0);
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
  // Runs a mutating call under one request id for all its attempts: the meta server applies it
  // once however often it is sent, so it is always retried like an idempotent call.
  template <typename T>
  kj::Promise<Result<T>> mutate(kj::StringPtr what,
                                std::function<kj::Promise<Result<T>>(proto::MetaService::Client, Req)> fn) {
    uint64_t seq = nextSeq_++;
    inflight_.insert(seq);
    auto done = kj::defer([this, seq] { inflight_.erase(seq); });
    return call<T>(what, true,
                   [this, seq, fn = kj::mv(fn)](proto::MetaService::Client c) {
                     // Every reply below the oldest request still waiting has reached us.
                     return fn(kj::mv(c), Req{session_, seq, *inflight_.begin()});
                   })
        .attach(kj::mv(done));
  }
  // Requests carry this session from now on.
  void setSession(uint64_t session) { session_ = session; }

  // Connects now; kUnavailable if the meta server does not answer within the connect timeout.
  kj::Promise<Status> connect();

  const Address& address() const { return address_; }

 private:
  template <typename T>
  kj::Promise<Result<T>> attempt(kj::String what, bool idempotent,
                                 std::function<kj::Promise<Result<T>>(proto::MetaService::Client)> fn,
                                 kj::TimePoint started, int tries) {
    return client().then([this, what = kj::mv(what), idempotent, fn = kj::mv(fn), started,
                          tries](Result<proto::MetaService::Client> c) mutable
                         -> kj::Promise<Result<T>> {
      if (!c) {
        // Not connected: the call was never sent, so trying again is always safe.
        return retryOrFail<T>(kj::mv(what), idempotent, true, kj::mv(fn), started, tries, c.error());
      }
      auto sent = withTimeout(timer_, callTimeoutMs_, fn(*c));
      return sent.then([](Result<T> r) -> kj::Promise<Result<T>> { return kj::mv(r); },
                       [this, what = kj::str(what), idempotent, fn, started,
                        tries](kj::Exception&& e) mutable -> kj::Promise<Result<T>> {
                         failed();
                         return retryOrFail<T>(kj::mv(what), idempotent, false, kj::mv(fn),
                                               started, tries, errorFromException(e, what));
                       });
    });
  }

  template <typename T>
  kj::Promise<Result<T>> retryOrFail(kj::String what, bool idempotent, bool unsent,
                                     std::function<kj::Promise<Result<T>>(proto::MetaService::Client)> fn,
                                     kj::TimePoint started, int tries, Error error) {
    bool expired = timer_.now() - started >= retryForMs_ * kj::MILLISECONDS;
    if ((!idempotent && !unsent) || expired) {
      if (error.code != Errc::kTimedOut) error.code = Errc::kUnavailable;
      return Result<T>(kj::mv(error));
    }
    if (tries == 0) log::warn("meta server: ", error.toString().c_str(), "; retrying");
    uint64_t backoff = std::min<uint64_t>(100u << std::min(tries, 4), 1000);
    return timer_.afterDelay(backoff * kj::MILLISECONDS)
        .then([this, what = kj::mv(what), idempotent, fn = kj::mv(fn), started, tries]() mutable {
          return attempt<T>(kj::mv(what), idempotent, kj::mv(fn), started, tries + 1);
        });
  }

  kj::Promise<Result<proto::MetaService::Client>> client();
  void failed();

  kj::Network& network_;
  kj::Timer& timer_;
  Address address_;
  uint64_t connectTimeoutMs_, retryForMs_, callTimeoutMs_;
  kj::Own<Connection> connection_;
  kj::Maybe<proto::MetaService::Client> service_;
  kj::Promise<void> watch_ = nullptr;
  kj::Maybe<kj::ForkedPromise<void>> connecting_;
  bool connectingNow_ = false;
  Status lastConnect_;
  uint64_t session_ = 0;
  uint64_t nextSeq_ = 1;
  std::set<uint64_t> inflight_;
};

}  // namespace tessera::client
