#include "client/meta_link.h"

#include <algorithm>

namespace tessera::client {

MetaLink::MetaLink(kj::Network& network, kj::Timer& timer, Config config)
    : ownDialer_(kj::heap<TcpMetaDialer>(network, timer)),
      dialer_(*ownDialer_),
      timer_(timer),
      addresses_(std::move(config.addresses)),
      connectTimeoutMs_(config.connectTimeoutMs),
      callTimeoutMs_(config.callTimeoutMs),
      retryForMs_(config.retryForMs) {
  KJ_REQUIRE(!addresses_.empty(), "a meta link needs at least one address");
}

MetaLink::MetaLink(MetaDialer& dialer, kj::Timer& timer, Config config)
    : dialer_(dialer),
      timer_(timer),
      addresses_(std::move(config.addresses)),
      connectTimeoutMs_(config.connectTimeoutMs),
      callTimeoutMs_(config.callTimeoutMs),
      retryForMs_(config.retryForMs) {
  KJ_REQUIRE(!addresses_.empty(), "a meta link needs at least one address");
}

// --- one call's attempts ----------------------------------------------------------------------

MetaLink::Try MetaLink::newTry(kj::StringPtr what, bool idempotent) const {
  Try t;
  t.what = what.cStr();
  t.idempotent = idempotent;
  t.deadline = timer_.now() + int64_t(retryForMs_) * kj::MILLISECONDS;
  return t;
}

bool MetaLink::expired(const Try& t) const { return timer_.now() >= t.deadline; }

kj::Duration MetaLink::attemptTimeout(const Try& t) const {
  kj::Duration left = std::max(t.deadline - timer_.now(), 1 * kj::MILLISECONDS);
  return std::min(int64_t(callTimeoutMs_) * kj::MILLISECONDS, left);
}

kj::Duration MetaLink::pause(Try& t) const {
  kj::Duration left = std::max(t.deadline - timer_.now(), 0 * kj::MILLISECONDS);
  kj::Duration delay = std::min(int64_t(t.backoffMs) * kj::MILLISECONDS, left);
  t.backoffMs = std::min(t.backoffMs * 2, kMaxBackoffMs);
  t.quick = 0;
  return delay;
}

Error MetaLink::giveUp(const Try& t) const {
  if (t.sentAndLost) {
    // It may have been applied: say so with the code (kTimedOut) or at least not retry it.
    Error e = t.last;
    if (e.code != Errc::kTimedOut) e.code = Errc::kUnavailable;
    return e;
  }
  log::debug("meta call ", t.what.c_str(), " gives up: ", t.last.toString().c_str());
  return Error{Errc::kUnavailable, t.what + ": no meta leader answered within " +
                                       std::to_string(retryForMs_) + " ms (" +
                                       joinAddresses(addresses_) + "); last: " +
                                       t.last.toString()};
}

MetaLink::Next MetaLink::quickly(Try& t) {
  if (expired(t)) return Next::kGiveUp;
  // One immediate retry per server and one more: enough to follow a hint to a leader that was
  // just elected, not enough to spin between two servers that point at each other.
  if (t.quick <= addresses_.size()) {
    ++t.quick;
    return Next::kNow;
  }
  return Next::kLater;
}

MetaLink::Next MetaLink::unsent(Try& t, uint64_t gen, const std::string& address,
                                const Error& e) {
  t.last = e;
  // The link switched servers while this call waited for a connection: nothing failed.
  if (e.code == Errc::kNotLeader) return quickly(t);
  // A failed connect moved the link on already (startConnect); a connect still under way when
  // this call's time ran out is left to the calls that still have time.
  t.unreachable = address;
  return expired(t) ? Next::kGiveUp : Next::kLater;
}

MetaLink::Next MetaLink::lost(Try& t, uint64_t gen, const std::string& address, const Error& e) {
  t.last = e;
  t.unreachable = address;
  moveOn(gen, e, true);
  if (!t.idempotent) {
    t.sentAndLost = true;
    return Next::kGiveUp;
  }
  return expired(t) ? Next::kGiveUp : Next::kLater;
}

MetaLink::Next MetaLink::notLeader(Try& t, uint64_t gen, const std::string& address,
                                   const Error& e) {
  t.last = e;
  // Another call has moved the link since this attempt was sent: follow it.
  if (gen != generation_) return quickly(t);
  if (!e.leaderHint.empty()) {
    auto hint = Address::parse(e.leaderHint);
    if (!hint) {
      log::debug("meta server at ", address.c_str(), " gave a bad leader hint '",
                 e.leaderHint.c_str(), "'");
    } else if (hint->toString() != address && hint->toString() != t.unreachable) {
      log::debug("meta server at ", address.c_str(), " says the leader is ",
                 hint->toString().c_str());
      switchTo(gen, *hint);
      return quickly(t);
    }
  }
  // No (usable) hint: an election, or a stale view. Ask the next one after a pause.
  moveOn(gen, e, address == leader_);
  return expired(t) ? Next::kGiveUp : Next::kLater;
}

void MetaLink::answered(uint64_t gen, const std::string& address) {
  if (gen != generation_) return;
  if (address != leader_ || searching_) log::info("meta leader is now ", address.c_str());
  leader_ = address;
  searching_ = false;
}

// --- the connection ---------------------------------------------------------------------------

kj::Promise<Result<proto::MetaService::Client>> MetaLink::target(const Try& t) {
  using R = Result<proto::MetaService::Client>;
  KJ_IF_MAYBE(s, service_) {
    return R(*s);
  }
  if (connectingGen_ != generation_) startConnect();
  uint64_t gen = generation_;
  auto connected = KJ_ASSERT_NONNULL(connecting_).addBranch().then([this, gen]() -> R {
    if (gen == generation_) {
      KJ_IF_MAYBE(s, service_) {
        return R(*s);
      }
    }
    if (gen == failedGen_) return failedWhy_;
    // Dropped unused: calls go where the link has moved to meanwhile.
    return Error{Errc::kNotLeader, "the meta link moved to another server"};
  });
  kj::Duration left = std::max(t.deadline - timer_.now(), 1 * kj::MILLISECONDS);
  return timer_.timeoutAfter(left, kj::mv(connected))
      .then([](R r) { return r; },
            [](kj::Exception&& e) -> R { return errorFromException(e, "connect"); });
}

void MetaLink::startConnect() {
  uint64_t gen = generation_;
  connectingGen_ = gen;
  connecting_ = dialer_.dial(addresses_[current_], connectTimeoutMs_)
                    .then([this, gen](Result<kj::Own<Connection>> c) {
                      if (!c) {
                        failedGen_ = gen;
                        failedWhy_ = c.error();
                        moveOn(gen, c.error(), true);
                        return;
                      }
                      if (gen != generation_) return;
                      connection_ = kj::mv(*c);
                      service_ = connection_->bootstrap<proto::MetaService>();
                      std::string where = addresses_[current_].toString();
                      watch_ = connection_->onDisconnect()
                                   .then(
                                       [this, gen, where] {
                                         moveOn(gen, Error{Errc::kUnavailable, where + " hung up"},
                                                true);
                                       },
                                       [this, gen](kj::Exception&& e) {
                                         moveOn(gen, errorFromException(e, "meta connection"),
                                                true);
                                       })
                                   .eagerlyEvaluate(nullptr);
                    })
                    .fork();
}

void MetaLink::moveOn(uint64_t gen, const Error& e, bool failed) {
  if (gen != generation_) return;
  if (failed && !searching_ && !leader_.empty()) {
    log::warn("meta server at ", current().toString().c_str(), ": ", e.toString().c_str(),
              "; looking for the leader");
    searching_ = true;
  }
  drop();
  current_ = (current_ + 1) % addresses_.size();
  ++generation_;
}

void MetaLink::switchTo(uint64_t gen, const Address& address) {
  if (gen != generation_) return;
  std::string text = address.toString();
  size_t i = 0;
  while (i < addresses_.size() && addresses_[i].toString() != text) ++i;
  if (i == addresses_.size()) addresses_.push_back(address);
  if (i == current_) return;
  drop();
  current_ = i;
  ++generation_;
}

void MetaLink::drop() {
  service_ = nullptr;
  if (!connection_) return;
  // This may run inside the connection's own callbacks (its watch): destroy it on a later turn.
  graveyard_ = kj::evalLater([c = kj::mv(connection_), w = kj::mv(watch_)]() mutable {
                 w = nullptr;
                 c = nullptr;
               }).eagerlyEvaluate(nullptr);
  watch_ = nullptr;
}

kj::Promise<Status> MetaLink::connect() {
  return connectRound(addresses_.size(), Error{Errc::kUnavailable, "no address"});
}

kj::Promise<Status> MetaLink::connectRound(size_t left, Error last) {
  if (left == 0) {
    if (addresses_.size() == 1) return Status(Error{Errc::kUnavailable, last.detail});
    return Status(Error{Errc::kUnavailable,
                        "no meta server accepts a connection (last: " + last.detail + ")"});
  }
  return target(newTry("connect", true))
      .then([this, left](Result<proto::MetaService::Client> c) -> kj::Promise<Status> {
        if (c) return Status();
        return connectRound(left - 1, c.error());
      });
}

}  // namespace tessera::client
