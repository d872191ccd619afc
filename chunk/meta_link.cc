#include "chunk/meta_link.h"

#include <sys/random.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <sstream>

#include "chunk/inventory.h"
#include "fs/log.h"
#include "fs/wire.h"

namespace tessera::chunk {
namespace {

constexpr const char* kIdentityFile = "server.id";
constexpr const char* kTokenFile = "server.token";

// 128 bits from the kernel's random source, as 32 hex digits.
Result<std::string> newToken() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error{Errc::kIo, std::string("getrandom: ") + strerror(errno)};
    got += size_t(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 15]);
  }
  return token;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

}  // namespace

TcpMetaDialer::TcpMetaDialer(kj::Network& network, kj::Timer& timer)
    : network_(network), timer_(timer) {}

kj::Promise<Result<proto::MetaService::Client>> TcpMetaDialer::dial(const Address& address,
                                                                    uint64_t timeoutMs) {
  connection_ = nullptr;
  return Connection::open(network_, timer_, address, timeoutMs)
      .then([this](Result<kj::Own<Connection>> c) -> Result<proto::MetaService::Client> {
        if (!c) return c.error();
        connection_ = kj::mv(*c);
        return connection_->bootstrap<proto::MetaService>();
      });
}

MetaLink::MetaLink(MetaDialer& dialer, kj::Timer& timer, DiskSet& disk, Config config)
    : dialer_(dialer),
      timer_(timer),
      disk_(disk),
      config_(std::move(config)),
      addresses_(config_.meta) {
  KJ_REQUIRE(!addresses_.empty(), "a meta link needs at least one address");
}

Status MetaLink::parseIdentity(const std::string& text) {
  std::string path = kIdentityFile + std::string(" in ") + disk_.dirs();
  auto bad = [&](const std::string& why) {
    return Error{Errc::kCorruption, path + " is malformed: " + why};
  };
  uint64_t id = 0;
  std::string cluster;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) return bad("expected 'key = value'");
    std::string key = trim(line.substr(0, eq));
    std::string value = trim(line.substr(eq + 1));
    if (key == "id") {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), id);
      if (ec != std::errc() || end != value.data() + value.size() || id == 0) {
        return bad("bad id '" + value + "'");
      }
    } else if (key == "cluster") {
      cluster = value;
    } else {
      return bad("unknown key '" + key + "'");
    }
  }
  if (id == 0 || cluster.empty()) return bad("needs both id and cluster");
  id_ = ServerId(id);
  clusterId_ = cluster;
  return Status();
}

kj::Promise<Status> MetaLink::start() {
  return disk_.readFile(kIdentityFile)
      .then([this](Result<std::string> text) -> kj::Promise<Status> {
        if (text) {
          if (auto s = parseIdentity(*text); !s) return s;
        } else if (text.code() != Errc::kNotFound) {
          return Status(text.error());
        }
        return loadToken();
      })
      .then([this](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        deadline_ = timer_.now() + int64_t(config_.connectTimeoutMs) * kj::MILLISECONDS;
        return registerUntilDeadline(kFirstBackoffMs);
      });
}

kj::Promise<Status> MetaLink::loadToken() {
  return disk_.readFile(kTokenFile).then([this](Result<std::string> text) -> kj::Promise<Status> {
    if (text) {
      std::string token = *text;
      while (!token.empty() && isspace(uint8_t(token.back()))) token.pop_back();
      if (auto s = checkServerToken(token); !s) {
        return Status(Error{Errc::kCorruption, std::string(kTokenFile) + " in " + disk_.dirs() +
                                                   " is malformed: " + s.error().detail});
      }
      token_ = std::move(token);
      return Status();
    }
    if (text.code() != Errc::kNotFound) return Status(text.error());
    // Durable before the first registration sends it: a server that restarts before it heard
    // its id must present the same token, or the meta cluster would give it a second id.
    auto token = newToken();
    if (!token) return Status(token.error());
    return disk_.writeFile(kTokenFile, *token + "\n")
        .then([this, token = *token](Status s) -> Status {
          if (!s) return Error{s.code(), "cannot save the identity token: " + s.error().detail};
          token_ = token;
          return s;
        });
  });
}

kj::Promise<Status> MetaLink::registerUntilDeadline(uint64_t backoffMs) {
  int64_t leftMs = (deadline_ - timer_.now()) / kj::MILLISECONDS;
  uint64_t timeoutMs = std::min(uint64_t(std::max<int64_t>(leftMs, 1)), config_.callTimeoutMs);
  needRegister_ = true;
  return exchange(timeoutMs, addresses_.size() + 1)
      .then([this, backoffMs](Status s) -> kj::Promise<Status> {
        if (s || s.code() == Errc::kWrongCluster) return s;
        // The last attempt is often cut short by the deadline; an earlier refusal or failed
        // lookup says more than "timed out".
        bool timedOut =
            s.code() == Errc::kTimedOut || s.error().detail.find("timed out") != std::string::npos;
        if (!timedOut || startError_.empty()) startError_ = s.error().detail;
        kj::TimePoint now = timer_.now();
        if (now >= deadline_) {
          return Status(Error{Errc::kUnavailable, "cannot reach " + where() + ": " + startError_});
        }
        log::debug("registering with ", tried_.c_str(), ": ", s.error().toString().c_str(),
                   "; retrying");
        kj::Duration delay = std::min(int64_t(backoffMs) * kj::MILLISECONDS, deadline_ - now);
        return timer_.afterDelay(delay).then([this, backoffMs] {
          return registerUntilDeadline(std::min(backoffMs * 2, kMaxBackoffMs));
        });
      });
}

kj::Promise<Status> MetaLink::exchange(uint64_t timeoutMs, unsigned quick) {
  return exchangeOnce(timeoutMs).then([this, timeoutMs, quick](Status s) -> kj::Promise<Status> {
    if (s) {
      accepted();
      return s;
    }
    bool again = false;
    switch (s.code()) {
      case Errc::kWrongCluster:
        return s;
      case Errc::kNotLeader: {
        const std::string& text = s.error().leaderHint;
        auto hint = Address::parse(text);
        if (!text.empty() && !hint) {
          log::debug("meta server at ", tried_.c_str(), " gave a bad leader hint '", text.c_str(),
                     "'");
        }
        if (hint && hint->toString() != tried_ && hint->toString() != unreachable_) {
          log::debug("meta server at ", tried_.c_str(), " says the leader is ",
                     hint->toString().c_str());
          switchTo(*hint);
          again = true;
        } else {
          // An election, or a stale view: ask the next one after a pause.
          moveOn();
        }
        break;
      }
      case Errc::kNotFound:
        // A heartbeat to a leader that does not know this server (heartbeat() asked for a
        // registration): register at once, so it counts this server's capacity.
        again = needRegister_;
        break;
      case Errc::kUnavailable:
      case Errc::kTimedOut:
        // Answered by a server that cannot serve now (one that lost its majority, say), or the
        // connection failed (already moved on): try the others.
        if (tried_ == current().toString()) moveOn();
        break;
      default:
        break;
    }
    if (!again || quick == 0) return s;
    // On a later turn: the reply that sent us elsewhere is still on the stack of the connection
    // that dialing the next server closes.
    return kj::evalLater([this, timeoutMs, quick] { return exchange(timeoutMs, quick - 1); });
  });
}

kj::Promise<Status> MetaLink::exchangeOnce(uint64_t timeoutMs) {
  tried_ = current().toString();
  return connected(timeoutMs).then(
      [this, timeoutMs](Result<proto::MetaService::Client> c) -> kj::Promise<Status> {
        if (!c) return Status(c.error());
        if (needRegister_) return registerOnce(kj::mv(*c), timeoutMs);
        return heartbeat(kj::mv(*c), timeoutMs);
      });
}

kj::Promise<Result<proto::MetaService::Client>> MetaLink::connected(uint64_t timeoutMs) {
  using R = Result<proto::MetaService::Client>;
  KJ_IF_MAYBE(c, client_) {
    return R(*c);
  }
  return dialer_.dial(current(), timeoutMs).then([this](R c) -> R {
    if (!c) {
      unreachable_ = tried_;
      moveOn();
      return c.error();
    }
    client_ = *c;
    return c;
  });
}

kj::Promise<Status> MetaLink::registerOnce(proto::MetaService::Client client, uint64_t timeoutMs) {
  return disk_.stats().then([this, timeoutMs, client = kj::mv(client)](DiskSet::Stats st) mutable {
    auto req = client.registerServerRequest();
    req.setId(id_.value);
    req.setClusterId(clusterId_);
    req.setAddress(config_.advertise);
    req.setSite(config_.site);
    req.setRack(config_.rack);
    req.setHost(config_.host);
    req.setCapacityBytes(st.capacityBytes);
    req.setUsedBytes(st.usedBytes);
    req.setFreeBytes(st.freeBytes);
    req.setShards(st.shards);
    req.setFsid(st.fsid);
    req.setToken(token_);
    using Response = capnp::Response<proto::MetaService::RegisterServerResults>;
    return withTimeout(timer_, timeoutMs, kj::Promise<Response>(req.send()))
        .then(
            [this](Response r) -> kj::Promise<Status> {
              if (auto s = fromWire(r.getError()); !s) {
                if (s.code() != Errc::kWrongCluster) return s;
                return Status(Error{Errc::kWrongCluster,
                                    "meta server at " + tried_ + " says data directory " +
                                        disk_.dirs() +
                                        " belongs to another cluster: " + s.error().detail});
              }
              return registered(r.getId(), r.getClusterId().cStr()).then([this](Status s) {
                if (s) {
                  needRegister_ = false;
                  startInventory();
                  lostSent_ = 0;  // a new leader hears of every lost shard
                }
                // This leader may be new and know none of the damage found so far.
                if (s && scrubber_) scrubber_->leaderChanged();
                return s;
              });
            },
            [this](kj::Exception&& e) -> kj::Promise<Status> {
              unreachable_ = tried_;
              moveOn();
              return Status(errorFromException(e, "registerServer"));
            });
  });
}

kj::Promise<Status> MetaLink::registered(uint64_t id, std::string clusterId) {
  if (id == 0 || clusterId.empty()) {
    return Status(Error{Errc::kIo, "meta server at " + tried_ +
                                       " registered this server without an id or cluster id"});
  }
  if (!clusterId_.empty() && clusterId != clusterId_) {
    return Status(Error{Errc::kWrongCluster,
                        "data directory " + disk_.dirs() + " belongs to cluster " + clusterId_ +
                            ", meta server at " + tried_ + " serves cluster " + clusterId});
  }
  if (id_ && id != id_.value) {
    log::warn("meta server gave this data directory a new id ", id, " (it had ", id_.value, ")");
  }
  bool changed = id != id_.value || clusterId != clusterId_;
  id_ = ServerId(id);
  clusterId_ = std::move(clusterId);
  log::setTag(kj::str("chunk", id));
  if (!changed) return Status();
  std::string text =
      "# written by tessera-chunk: this data directory's identity\nid = " + std::to_string(id) +
      "\ncluster = " + clusterId_ + "\n";
  return disk_.writeFile(kIdentityFile, text).then([](Status s) -> Status {
    if (!s) return Error{s.code(), "cannot save the server id: " + s.error().detail};
    return s;
  });
}

kj::Promise<Status> MetaLink::run() {
  uint64_t delayMs = outage_ ? backoffMs_ : config_.heartbeatMs;
  return timer_.afterDelay(int64_t(delayMs) * kj::MILLISECONDS)
      .then([this] { return step(); })
      .then([this](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return run();
      });
}

// One heartbeat, or one registration with a new leader. Resolves to an Error only when it is
// fatal.
kj::Promise<Status> MetaLink::step() {
  return exchange(config_.callTimeoutMs, addresses_.size() + 1).then([this](Status s) -> Status {
    if (s || s.code() == Errc::kWrongCluster) return s;
    // Whoever accepts this server next may not know it, or not know its figures: tell it.
    needRegister_ = true;
    lost(s.error());
    return Status();
  });
}

void MetaLink::moveOn() {
  client_ = nullptr;
  needRegister_ = true;
  current_ = (current_ + 1) % addresses_.size();
}

void MetaLink::switchTo(const Address& address) {
  std::string text = address.toString();
  size_t i = 0;
  while (i < addresses_.size() && addresses_[i].toString() != text) ++i;
  if (i == addresses_.size()) addresses_.push_back(address);
  if (i == current_) return;
  client_ = nullptr;
  needRegister_ = true;
  current_ = i;
}

void MetaLink::lost(const Error& e) {
  if (!outage_) {
    log::warn("lost the meta server at ", tried_.c_str(), ": ", e.toString().c_str(),
              "; still serving data, reconnecting");
    outage_ = true;
    backoffMs_ = kFirstBackoffMs;
  } else {
    log::debug("meta server at ", tried_.c_str(), ": ", e.toString().c_str(),
               "; still looking for the leader");
    backoffMs_ = std::min(backoffMs_ * 2, kMaxBackoffMs);
  }
}

void MetaLink::accepted() {
  unreachable_.clear();
  if (outage_) {
    outage_ = false;
    if (tried_ == leader_) {
      log::info("meta server at ", tried_.c_str(), " is back; registered as ", id_.value);
    } else {
      log::info("meta leader is now ", tried_.c_str(), "; registered as ", id_.value);
    }
  } else if (!leader_.empty() && tried_ != leader_) {
    log::info("meta leader is now ", tried_.c_str(), "; registered as ", id_.value);
  }
  leader_ = tried_;
}

std::string MetaLink::where() const {
  if (addresses_.size() == 1) return "meta server at " + addresses_[0].toString();
  return "meta servers at " + joinAddresses(addresses_);
}

kj::Promise<Status> MetaLink::heartbeat(proto::MetaService::Client client, uint64_t timeoutMs) {
  return disk_.stats().then([this, timeoutMs, client = kj::mv(client)](DiskSet::Stats st) mutable {
    auto req = client.heartbeatRequest();
    req.setId(id_.value);
    req.setCapacityBytes(st.capacityBytes);
    req.setUsedBytes(st.usedBytes);
    req.setFreeBytes(st.freeBytes);
    req.setShards(st.shards);
    req.setFsid(st.fsid);
    size_t sent = removed_.size();
    auto list = req.initRemoved(sent);
    for (size_t i = 0; i < sent; ++i) list.set(i, removed_[i].value);
    Scrubber::Sent scrubSent;
    if (scrubber_) scrubSent = scrubber_->fillHeartbeat(req.initScrub());
    auto disks = req.initDisks(st.disks.size());
    for (size_t i = 0; i < st.disks.size(); ++i) {
      auto& d = st.disks[i];
      auto b = disks[i];
      b.setPath(d.dir);
      b.setState(d.state == DiskState::kOk     ? proto::DiskState::OK
                 : d.state == DiskState::kFull ? proto::DiskState::FULL
                                               : proto::DiskState::FAILED);
      b.setReason(d.reason);
      b.setCapacityBytes(d.capacityBytes);
      b.setUsedBytes(d.usedBytes);
      b.setFreeBytes(d.freeBytes);
      b.setShards(d.shards);
    }
    req.setNoNewShards(!st.acceptsShards);
    if (logs_) {
      auto logged = logs_->stats();
      req.setLogRecords(logged.records);
      req.setLogBytes(logged.bytes);
    }
    auto& lost = disk_.lostShards();
    size_t lostNow = std::min<size_t>(lost.size() - lostSent_, kMaxLostPerHeartbeat);
    auto refs = req.initLost(lostNow);
    for (size_t i = 0; i < lostNow; ++i) {
      refs[i].setChunk(lost[lostSent_ + i].chunk.value);
      refs[i].setShard(lost[lostSent_ + i].shard);
    }
    using Response = capnp::Response<proto::MetaService::HeartbeatResults>;
    return withTimeout(timer_, timeoutMs, kj::Promise<Response>(req.send()))
        .then(
            [this, sent, lostNow,
             scrubSent = std::move(scrubSent)](Response r) -> kj::Promise<Status> {
              if (auto s = fromWire(r.getError()); !s) {
                if (s.code() == Errc::kNotFound) needRegister_ = true;
                return s;
              }
              removed_.erase(removed_.begin(), removed_.begin() + sent);
              lostSent_ += lostNow;
              if (timer_.now() >= nextInventory_) startInventory();
              if (scrubber_) {
                scrubber_->heartbeatAccepted(scrubSent);
                scrubber_->request(r.getScrubNow());
              }
              auto orders = r.getRemove();
              if (orders.size() == 0) return Status();
              std::vector<ChunkId> ids;
              for (uint64_t id : orders) {
                if (id != 0) ids.push_back(ChunkId(id));
              }
              auto chunks = kj::heapArray<ChunkId>(ids.begin(), ids.end());
              return disk_.remove(kj::mv(chunks)).then([this, ids = std::move(ids)](Status s) {
                // Report only what is surely gone: an unreported chunk is ordered again.
                if (s) {
                  removed_.insert(removed_.end(), ids.begin(), ids.end());
                } else {
                  log::warn("removing ", ids.size(),
                            " chunks ordered by the meta server: ", s.error().toString().c_str());
                }
                return Status();
              });
            },
            [this](kj::Exception&& e) -> kj::Promise<Status> {
              unreachable_ = tried_;
              moveOn();
              return Status(errorFromException(e, "heartbeat"));
            });
  });
}

void MetaLink::startInventory() {
  KJ_IF_MAYBE(client, client_) {
    nextInventory_ = timer_.now() + int64_t(config_.inventoryMs) * kj::MILLISECONDS;
    inventory_ = sendInventory(*client, id_, disk_, timer_, config_.callTimeoutMs)
                     .then([](Status s) {
                       // Sent again in full at the next registration or interval.
                       if (!s) log::debug("inventory report: ", s.error().toString().c_str());
                     })
                     .eagerlyEvaluate(nullptr);
  }
}

}  // namespace tessera::chunk
