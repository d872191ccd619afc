#include "tools/meta_cluster.h"

#include <algorithm>
#include <set>

#include "fs/wire.h"

namespace tessera::tools {

bool ServerView::isMember(uint64_t memberId) const { return member(memberId) != nullptr; }

const MemberInfo* ServerView::member(uint64_t memberId) const {
  for (auto& m : members) {
    if (m.id == memberId) return &m;
  }
  return nullptr;
}

const ServerView* Survey::at(const std::string& address) const {
  for (auto& v : views) {
    if (v.address == address) return &v;
  }
  return nullptr;
}

bool Survey::anyReachable() const {
  return std::any_of(views.begin(), views.end(), [](const ServerView& v) { return v.reachable; });
}

namespace {

// Addresses as the servers print them (Address::toString), so one server is one entry.
std::string canonical(const std::string& text) {
  auto a = Address::parse(text);
  return a ? a->toString() : text;
}

ServerView viewOf(std::string address, capnp::Response<proto::MetaService::StatusResults> r) {
  ServerView v;
  v.address = std::move(address);
  if (auto s = fromWire(r.getError()); !s) {
    v.error = s.error();
    return v;
  }
  v.reachable = true;
  auto raft = r.getRaft();
  v.id = raft.getId();
  v.term = raft.getTerm();
  v.role = raft.getRole().cStr();
  v.leader = raft.getLeader();
  v.leaderAddress = raft.getLeaderAddress().cStr();
  v.commit = raft.getCommit();
  v.applied = raft.getApplied();
  v.lastIndex = raft.getLastIndex();
  v.snapshotIndex = raft.getSnapshotIndex();
  v.uptimeMs = r.getUptimeMs();
  v.clusterId = r.getClusterId().cStr();
  for (auto m : raft.getMembers()) {
    v.members.push_back(MemberInfo{m.getId(), canonical(m.getAddress().cStr()), m.getRole().cStr(),
                                   m.getMatch(), m.getLag(), m.getActive()});
  }
  std::sort(v.members.begin(), v.members.end(),
            [](const MemberInfo& a, const MemberInfo& b) { return a.id < b.id; });
  v.reply.emplace(kj::mv(r));
  return v;
}

}  // namespace

MetaCluster::MetaCluster(kj::AsyncIoContext& io, std::vector<Address> addresses,
                         uint64_t timeoutMs)
    : io_(io),
      timer_(io.provider->getTimer()),
      timeoutMs_(timeoutMs),
      deadline_(timer_.now() + int64_t(timeoutMs) * kj::MILLISECONDS) {
  KJ_REQUIRE(!addresses.empty(), "the admin command needs a meta address");
  for (auto& a : addresses) learn(a.toString());
}

uint64_t MetaCluster::leftMs() const {
  auto now = timer_.now();
  return now >= deadline_ ? 0 : uint64_t((deadline_ - now) / kj::MILLISECONDS);
}

void MetaCluster::sleepMs(uint64_t ms) {
  ms = std::min(ms, leftMs());
  if (ms) timer_.afterDelay(ms * kj::MILLISECONDS).wait(io_.waitScope);
}

std::string MetaCluster::known() const {
  std::string out;
  for (auto& a : known_) out += (out.empty() ? "" : ",") + a;
  return out;
}

void MetaCluster::learn(const std::string& address) {
  if (address.empty() || !Address::parse(address)) return;
  std::string a = canonical(address);
  if (std::find(known_.begin(), known_.end(), a) == known_.end()) known_.push_back(a);
}

void MetaCluster::drop(const std::string& address) { connections_.erase(address); }

kj::Promise<Result<proto::MetaService::Client>> MetaCluster::client(const std::string& address,
                                                                    uint64_t ms) {
  auto it = connections_.find(address);
  if (it != connections_.end()) {
    return Result<proto::MetaService::Client>(it->second->bootstrap<proto::MetaService>());
  }
  auto parsed = Address::parse(address);
  if (!parsed) return Result<proto::MetaService::Client>(parsed.error());
  return Connection::open(io_.provider->getNetwork(), timer_, *parsed, ms)
      .then([this, address](Result<kj::Own<Connection>> c) -> Result<proto::MetaService::Client> {
        if (!c) return c.error();
        auto service = (*c)->bootstrap<proto::MetaService>();
        connections_[address] = kj::mv(*c);
        return service;
      });
}

kj::Promise<ServerView> MetaCluster::ask(std::string address, uint64_t ms) {
  auto down = [address](Error e) {
    ServerView v;
    v.address = address;
    v.error = std::move(e);
    return v;
  };
  auto answer =
      client(address, ms).then([this, address, down](Result<proto::MetaService::Client> c)
                                   -> kj::Promise<ServerView> {
        if (!c) return down(c.error());
        return c->statusRequest().send().then(
            [address](capnp::Response<proto::MetaService::StatusResults> r) {
              return viewOf(address, kj::mv(r));
            });
      });
  return timer_.timeoutAfter(ms * kj::MILLISECONDS, kj::mv(answer))
      .catch_([this, address, down](kj::Exception&& e) {
        drop(address);
        return down(errorFromException(e, "status"));
      });
}

Survey MetaCluster::survey() {
  Survey s;
  std::set<std::string> asked;
  // Answers name more servers (members, the leader): ask those too, in a second wave.
  while (asked.size() < known_.size()) {
    uint64_t ms = std::clamp<uint64_t>(leftMs(), kMinAskMs, kAskMs);
    kj::Vector<kj::Promise<ServerView>> wave;
    for (auto& a : std::vector<std::string>(known_)) {
      if (asked.insert(a).second) wave.add(ask(a, ms));
    }
    auto views = kj::joinPromises(wave.releaseAsArray()).wait(io_.waitScope);
    for (auto& v : views) {
      if (v.reachable) {
        learn(v.leaderAddress);
        for (auto& m : v.members) learn(m.address);
      }
      s.views.push_back(kj::mv(v));
    }
  }
  for (size_t i = 0; i < s.views.size(); ++i) {
    auto& v = s.views[i];
    if (!v.reachable || v.role != "leader") continue;
    if (s.leader < 0 || v.term > s.views[s.leader].term) s.leader = int(i);
  }
  leader_ = s.leader < 0 ? std::string() : s.views[s.leader].address;
  return s;
}

ServerView MetaCluster::askOne(const std::string& address) {
  return ask(canonical(address), std::clamp<uint64_t>(leftMs(), kMinAskMs, kAskMs)).wait(io_.waitScope);
}

Survey MetaCluster::findLeader() {
  Survey s = survey();
  // A survey with too little time left would call slow servers down: keep the last full one.
  while (!s.leaderView() && leftMs() >= kPauseMs + kMinAskMs) {
    sleepMs(kPauseMs);
    s = survey();
  }
  return s;
}

}  // namespace tessera::tools
