#include "client/chunk_servers.h"

#include "fs/log.h"

namespace tessera::client {

ChunkServers::ChunkServers(kj::Network& network, kj::Timer& timer, Resolver resolver,
                           uint64_t connectTimeoutMs)
    : network_(network),
      timer_(timer),
      resolver_(kj::mv(resolver)),
      connectTimeoutMs_(connectTimeoutMs) {}

kj::Promise<Result<proto::ChunkService::Client>> ChunkServers::get(ServerId id) {
  auto& e = servers_[id];
  KJ_IF_MAYBE(s, e.service) { return Result<proto::ChunkService::Client>(*s); }
  if (!e.inProgress) {
    // Replacing a finished attempt is safe here: we are not inside its continuation.
    e.inProgress = true;
    e.connecting = connect(id).fork();
  }
  KJ_IF_MAYBE(c, e.connecting) {
    return c->addBranch().then([this, id]() -> Result<proto::ChunkService::Client> {
      auto& e = servers_[id];
      KJ_IF_MAYBE(s, e.service) { return *s; }
      return e.lastError;
    });
  }
  KJ_UNREACHABLE;
}

// Resolves once `id` has a service or lastError says why not; never rejects.
kj::Promise<void> ChunkServers::connect(ServerId id) {
  auto unavailable = [this, id](std::string why) {
    auto& e = servers_[id];
    e.inProgress = false;
    e.lastError = Error{Errc::kUnavailable, "chunk server " + std::to_string(id.value) + " " + why};
  };
  return resolver_(id)
      .then([this, id, unavailable](Result<Location> where) -> kj::Promise<void> {
        auto& e = servers_[id];
        if (!where) {
          unavailable("has no known address: " + where.error().toString());
          return kj::READY_NOW;
        }
        if (!where->up) {
          unavailable("is down");
          return kj::READY_NOW;
        }
        if (where->address == e.failedAddress &&
            timer_.now() - e.failedAt < kRetryAfterMs * kj::MILLISECONDS) {
          unavailable("failed at " + where->address + " just now");
          return kj::READY_NOW;
        }
        auto parsed = Address::parse(where->address);
        if (!parsed) {
          unavailable("has a bad address: " + parsed.error().detail);
          return kj::READY_NOW;
        }
        std::string address = where->address;
        return Connection::open(network_, timer_, *parsed, connectTimeoutMs_)
            .then([this, id, address, unavailable](Result<kj::Own<Connection>> conn) {
              auto& e = servers_[id];
              if (!conn) {
                log::debug("chunk server ", id.value, ": ", conn.error().toString().c_str());
                e.failedAddress = address;
                e.failedAt = timer_.now();
                unavailable("unreachable at " + address);
                return;
              }
              e.inProgress = false;
              e.address = address;
              e.connection = kj::mv(*conn);
              e.service = e.connection->bootstrap<proto::ChunkService>();
              e.watch = e.connection->onDisconnect()
                            .then([this, id] { drop(id); }, [this, id](kj::Exception&&) { drop(id); })
                            .eagerlyEvaluate(nullptr);
            });
      })
      .catch_([unavailable](kj::Exception&& ex) {
        unavailable(std::string("failed: ") + ex.getDescription().cStr());
      });
}

void ChunkServers::failed(ServerId id, proto::ChunkService::Client& used,
                          const kj::Exception& why) {
  auto& e = servers_[id];
  KJ_IF_MAYBE(current, e.service) {
    // Copies of one service share its hook; a new connection has a new one.
    if (capnp::ClientHook::from(kj::cp(*current)).get() !=
        capnp::ClientHook::from(kj::cp(used)).get()) {
      log::debug("chunk server ", id.value, ": a call on an earlier connection failed (",
                 kj::str(why.getType()).cStr(), "); keeping the current one");
      return;
    }
    log::info("chunk server ", id.value, ": dropping its connection after a call failed (",
              kj::str(why.getType()).cStr(), "): ", why.getDescription().cStr());
  }
  drop(id);
}

void ChunkServers::drop(ServerId id) {
  auto& e = servers_[id];
  if (e.service == nullptr && !e.connection) return;
  e.service = nullptr;
  e.failedAddress = e.address;
  e.failedAt = timer_.now();
  // The watch may be what called us: let it finish before the connection goes.
  auto conn = kj::mv(e.connection);
  auto watch = kj::mv(e.watch);
  e.watch = kj::evalLater([c = kj::mv(conn), w = kj::mv(watch)]() mutable {}).eagerlyEvaluate(nullptr);
}

}  // namespace tessera::client
