// fs/rpc.h — Cap'n Proto connections between Tessera processes: connect with a bounded wait,
// bound every call with a timeout, and turn transport faults into Errors at the edge of the
// caller that handles them (STYLE.md §4: the retry loop, the FUSE adapter, the daemon).
#pragma once
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include "fs/options.h"
#include "fs/result.h"

namespace tessera {

// One two-party RPC connection to a server's bootstrap capability. Lives on the loop that
// opened it.
class Connection {
 public:
  // kUnavailable if nothing answers at `address` within `timeoutMs`.
  static kj::Promise<Result<kj::Own<Connection>>> open(kj::Network& network, kj::Timer& timer,
                                                       const Address& address,
                                                       uint64_t timeoutMs);

  explicit Connection(kj::Own<kj::AsyncIoStream> stream);

  template <typename T>
  typename T::Client bootstrap() {
    return client_.bootstrap().castAs<T>();
  }
  // Resolves when the peer hangs up or the stream breaks.
  kj::Promise<void> onDisconnect() { return client_.onDisconnect(); }

 private:
  kj::Own<kj::AsyncIoStream> stream_;
  capnp::TwoPartyClient client_;
};

// `promise`, or a DISCONNECTED exception "timed out after N ms" once `ms` passed.
template <typename T>
kj::Promise<T> withTimeout(kj::Timer& timer, uint64_t ms, kj::Promise<T> promise) {
  return timer.timeoutAfter(ms * kj::MILLISECONDS, kj::mv(promise));
}

// An RPC fault as an Error: kTimedOut for timeouts, kUnavailable for disconnects, kIo else.
Error errorFromException(const kj::Exception& e, kj::StringPtr what);

// Listens on `address` (port 0 picks a free one) and serves `bootstrap` to every connection
// until destroyed.
class RpcServer {
 public:
  static Result<kj::Own<RpcServer>> listen(kj::Network& network, kj::WaitScope& waitScope,
                                           const Address& address,
                                           capnp::Capability::Client bootstrap);
  RpcServer(kj::Own<kj::ConnectionReceiver> receiver, capnp::Capability::Client bootstrap);
  uint16_t port() const { return port_; }

 private:
  kj::Own<kj::ConnectionReceiver> receiver_;
  capnp::TwoPartyServer server_;
  uint16_t port_;
  kj::Promise<void> listening_;
};

// Writes `text` to `path` through a temporary file and rename, so readers see all or nothing.
Status writeFileAtomic(const std::string& path, const std::string& text);
// The whole file; kNotFound if absent.
Result<std::string> readFile(const std::string& path);

}  // namespace tessera
