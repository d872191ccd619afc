#include "client/meta_link.h"

namespace tessera::client {

MetaLink::MetaLink(kj::Network& network, kj::Timer& timer, Address address,
                   uint64_t connectTimeoutMs, uint64_t retryForMs, uint64_t callTimeoutMs)
    : network_(network),
      timer_(timer),
      address_(kj::mv(address)),
      connectTimeoutMs_(connectTimeoutMs),
      retryForMs_(retryForMs),
      callTimeoutMs_(callTimeoutMs) {}

kj::Promise<Result<proto::MetaService::Client>> MetaLink::client() {
  KJ_IF_MAYBE(s, service_) { return Result<proto::MetaService::Client>(*s); }
  if (!connectingNow_) {
    connectingNow_ = true;
    connecting_ = Connection::open(network_, timer_, address_, connectTimeoutMs_)
                      .then([this](Result<kj::Own<Connection>> c) {
                        connectingNow_ = false;
                        if (!c) {
                          lastConnect_ = c.error();
                          return;
                        }
                        lastConnect_ = Status();
                        connection_ = kj::mv(*c);
                        service_ = connection_->bootstrap<proto::MetaService>();
                        watch_ = connection_->onDisconnect()
                                     .then([this] { failed(); }, [this](kj::Exception&&) { failed(); })
                                     .eagerlyEvaluate(nullptr);
                      })
                      .fork();
  }
  KJ_IF_MAYBE(c, connecting_) {
    return c->addBranch().then([this]() -> Result<proto::MetaService::Client> {
      KJ_IF_MAYBE(s, service_) { return *s; }
      if (!lastConnect_) return lastConnect_.error();
      return Error{Errc::kUnavailable, "meta server at " + address_.toString() + " went away"};
    });
  }
  KJ_UNREACHABLE;
}

kj::Promise<Status> MetaLink::connect() {
  return client().then([](Result<proto::MetaService::Client> c) -> Status {
    if (!c) return c.error();
    return Status();
  });
}

void MetaLink::failed() {
  if (service_ == nullptr && !connection_) return;
  service_ = nullptr;
  // The watch may be what called us: destroy it and the connection on a later turn.
  auto conn = kj::mv(connection_);
  auto watch = kj::mv(watch_);
  watch_ = kj::evalLater([c = kj::mv(conn), w = kj::mv(watch)]() mutable {}).eagerlyEvaluate(nullptr);
}

}  // namespace tessera::client
