// Coherence between mounts, the client's half (client/client.h: watch, coherent): a watcher
// registered with the meta leader and renewed, the invalidations it receives, and the lease
// that bounds how long this client trusts its caches without hearing from the leader.
//
// Why a lease: the leader reports every change to the watchers it knows, but a mount cut off
// from it (partition, failover, a leader stopped) hears nothing and cannot tell silence from
// no change. So a registration counts only until watchLeaseMs after the renewal the leader last
// confirmed was sent; past that, this client reports {all} and is not coherent() (the mount
// then drops its kernel caches and keeps them short) until a renewal is confirmed again.
#include "client/client.h"
#include "fs/log.h"
#include "fs/proto/meta.capnp.h"
#include "fs/wire.h"

namespace tessera::client {

namespace {
using MetaClient = proto::MetaService::Client;

// An invalidation larger than this is treated as {all}: no mount caches that much that
// dropping it entry by entry would be cheaper.
constexpr size_t kMaxListed = 100'000;
}  // namespace

class Client::WatcherImpl final : public proto::Watcher::Server {
 public:
  explicit WatcherImpl(Client& client) : client_(&client) {}
  void detach() { client_ = nullptr; }

 protected:
  kj::Promise<void> invalidate(InvalidateContext context) override {
    if (!client_) return kj::READY_NOW;
    auto p = context.getParams();
    Invalidation inv;
    inv.all = p.getAll() || p.getInodes().size() > kMaxListed || p.getEntries().size() > kMaxListed;
    if (!inv.all) {
      for (uint64_t ino : p.getInodes()) {
        if (ino != 0) inv.inodes.push_back(InodeId(ino));
      }
      for (auto e : p.getEntries()) {
        auto name = e.getName();
        // A name the kernel could not hold is nothing it caches.
        if (e.getParent() == 0 || name.size() == 0 || name.size() > kMaxNameLen) continue;
        inv.entries.emplace_back(InodeId(e.getParent()), std::string(name.cStr(), name.size()));
      }
    }
    context.releaseParams();
    // Answered at once: the kernel is told on the mount's notifier thread, later.
    uint64_t delay = client_->config_.faultInvalidationDelayMs;
    if (delay == 0) {
      client_->invalidated(kj::mv(inv));
    } else {
      Client* client = client_;
      client_->tasks_.add(client_->timer_.afterDelay(delay * kj::MILLISECONDS)
                              .then([client, inv = kj::mv(inv)]() mutable {
                                // Not after the client stopped watching (the tasks go with it).
                                if (client->watcherImpl_) client->invalidated(kj::mv(inv));
                              }));
    }
    return kj::READY_NOW;
  }

 private:
  Client* client_;
};

void Client::watch(std::function<void(const Invalidation&)> sink) {
  KJ_REQUIRE(watcherCap_ == nullptr, "Client::watch called twice");
  invalidationSink_ = kj::mv(sink);
  auto impl = kj::heap<WatcherImpl>(*this);
  watcherImpl_ = impl.get();
  watcherCap_ = proto::Watcher::Client(kj::mv(impl));
  renewWatch();
  watching_ = watchLoop().eagerlyEvaluate([](kj::Exception&& e) {
    log::error("coherence: watching for invalidations stopped: ", e.getDescription());
  });
}

void Client::stopWatching() {
  // The capability may outlive us in the RPC system: it must not call into a dead client.
  if (watcherImpl_) watcherImpl_->detach();
  watcherImpl_ = nullptr;
  watching_ = nullptr;
}

bool Client::coherent() const {
  return live_ && timer_.now() - confirmedAt_ < int64_t(config_.watchLeaseMs) * kj::MILLISECONDS;
}

kj::Promise<void> Client::watchLoop() {
  auto tick = std::max<int64_t>(int64_t(config_.watchLeaseMs) / 4, 50) * kj::MILLISECONDS;
  return timer_.afterDelay(tick).then([this] {
    if (live_ && !coherent()) {
      live_ = false;
      log::warn("coherence: no confirmed registration with the meta leader for ",
                config_.watchLeaseMs, " ms: dropping cached attributes and data, caching briefly "
                "until registered again");
      invalidated(Invalidation{{}, {}, true});
    }
    // One renewal at a time: a call still looking for a leader is not doubled.
    if (!watchInFlight_) renewWatch();
    return watchLoop();
  });
}

void Client::renewWatch() {
  KJ_IF_MAYBE(cap, watcherCap_) {
    watchInFlight_ = true;
    auto sentAt = timer_.now();
    uint64_t session = session_.value;
    (void)cap;
    tasks_.add(meta_
                   .call<bool>("watch", true,
                               [this, session](MetaClient m) {
                                 auto req = m.watchRequest();
                                 req.setSession(session);
                                 KJ_IF_MAYBE(watcher, watcherCap_) {
                                   req.setWatcher(*watcher);
                                 }
                                 return req.send().then([](auto r) -> Result<bool> {
                                   auto st = fromWire(r.getError());
                                   if (!st) return st.error();
                                   return r.getContinued();
                                 });
                               })
                   .then([this, sentAt, session](Result<bool> continued) {
                     watchInFlight_ = false;
                     if (!watcherImpl_) return;
                     if (!continued) {
                       // The keepalive renews an expired session; the next round registers it.
                       log::debug("coherence: watch: ", continued.error().toString().c_str());
                       return;
                     }
                     if (session != session_.value) return;  // renewed meanwhile: ask again
                     if (!*continued) {
                       // A fresh registration: what changed before it may never be reported.
                       log::info("coherence: the meta leader reports changes to this mount "
                                 "from now on (session ", session, ")");
                       invalidated(Invalidation{{}, {}, true});
                     }
                     live_ = true;
                     confirmedAt_ = std::max(confirmedAt_, sentAt);
                   }));
  }
}

}  // namespace tessera::client
