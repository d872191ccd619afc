#include "meta/raft/raft_node.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <unistd.h>

#include <cstring>

#include "fs/log.h"
#include "fs/options.h"
#include "meta/raft/raft_wire.h"

namespace tessera::meta::raft {

void RaftNode::ErrorHandler::taskFailed(kj::Exception&& e) {
  log::error("raft node task failed: ", e.getDescription());
}

namespace {

RaftConfig withApplied(RaftConfig c, uint64_t applied) {
  c.applied = LogIndex(applied);
  return c;
}

}  // namespace

RaftNode::RaftNode(const NodeConfig& config, FileStorage& storage, Namespace& ns,
                   kj::Timer& timer, kj::Network& network,
                   std::map<NodeId, std::string> addresses)
    : config_(config),
      storage_(storage),
      ns_(ns),
      timer_(timer),
      network_(network),
      rng_(config.seed),
      addresses_(std::move(addresses)),
      tasks_(errorHandler_) {
  // The state machine may be ahead of the snapshot (its writes go to LevelDB with every apply):
  // entries up to what it applied are not delivered again.
  applied_ = std::max(ns_.appliedIndex(), storage_.snapshot().index.value);
  uint64_t startAt = std::min(applied_, storage_.hardState().commit.value);
  startAt = std::max(startAt, storage_.snapshot().index.value);
  applied_ = startAt;
  core_ = std::make_unique<RaftCore>(withApplied(config.raft, startAt), storage_, rng_);
  for (auto& m : ns_.members()) addresses_[NodeId(m.id)] = m.address;
  log::info("raft node ", config.raft.id.value, ": term ", core_->term().value, ", log ",
            core_->firstIndex().value, "..", core_->lastIndex().value, ", applied ", applied_);
}

RaftNode::~RaftNode() = default;

std::string RaftNode::addressOf(NodeId id) const {
  auto it = addresses_.find(id);
  return it == addresses_.end() ? std::string() : it->second;
}

Error RaftNode::notLeader() const {
  NodeId l = core_->leader();
  std::string where = l && l != core_->id() ? addressOf(l) : std::string();
  return Error{Errc::kNotLeader,
               l == core_->id() ? "this meta server leads but is catching up"
               : l               ? "meta server " + std::to_string(l.value) + " leads"
                                 : "no meta server leads right now (election)",
               where};
}

kj::Promise<void> RaftNode::run() {
  // A group of one needs no election timeout to find out that it leads.
  const ConfState& conf = core_->conf();
  if (conf.voters.size() == 1 && conf.voters[0] == core_->id()) {
    core_->campaign();
    kick();
  }
  return tick();
}

kj::Promise<void> RaftNode::tick() {
  return timer_.afterDelay(config_.tickMs * kj::MILLISECONDS).then([this] {
    core_->tick();
    kick();
    return tick();
  });
}

void RaftNode::kick() {
  if (processing_ || !core_->hasReady()) return;
  processing_ = true;
  tasks_.add(handleReady());
}

// Persist before send: the Ready's snapshot, entries and hard state are written and (if the
// core says so) fsynced — on the disk thread, while the loop keeps taking messages and
// proposals for the next Ready — and only then are its messages sent and its committed
// entries applied.
kj::Promise<void> RaftNode::handleReady() {
  auto rd = std::make_shared<Ready>(core_->ready());
  auto batch = std::make_shared<FileStorage::Batch>();
  batch->snapshot = rd->snapshot;
  batch->installSnapshot = rd->snapshot.has_value();
  batch->entries = rd->entries;
  batch->hardState = rd->hardState;
  Status written = storage_.write(*batch);
  kj::Promise<Status> durable = written;
  if (written && rd->mustSync) {
    durable = disk_.run([this] { return storage_.sync(); });
  }
  return durable.then([this, rd, batch](Status s) {
    if (!s) {
      // We cannot know what reached the disk: acting on it could break Raft's promises.
      log::error("raft log write failed: ", s.error().toString().c_str(), "; stopping");
      _exit(1);
    }
    if (auto c = storage_.commit(*batch); !c) {
      log::error("raft log view: ", c.error().toString().c_str(), "; stopping");
      _exit(1);
    }
    if (rd->softState) {
      const SoftState& ss = *rd->softState;
      if (ss.role == Role::kLeader) {
        if (leaderTerm_ != core_->term()) {
          leaderTerm_ = core_->term();
          leaderReady_ = false;
          log::info("raft node ", id().value, ": leader for term ", leaderTerm_.value);
        }
      } else {
        if (leaderReady_ || leaderTerm_) {
          leaderReady_ = false;
          leaderTerm_ = Term();
          failPending(notLeader());
          if (onLeadershipLost) onLeadershipLost();
        }
        if (ss.leader) {
          log::info("raft node ", id().value, ": follower of ", ss.leader.value, " in term ",
                    core_->term().value);
        }
      }
    }
    send(std::move(rd->messages));
    apply(rd->committedEntries);
    for (const ReadState& rs : rd->readStates) {
      if (rs.requestId != roundId_ || roundId_ == 0) continue;
      for (auto& f : inRound_) waitingForApply_.emplace(rs.index.value, kj::mv(f));
      inRound_.clear();
      roundId_ = 0;
      if (!waitingForRound_.empty()) startReadRound();
    }
    serveReads();
    core_->advance(*rd);
    processing_ = false;
    kick();
  });
}

void RaftNode::apply(const std::vector<Entry>& committed) {
  for (const Entry& e : committed) {
    if (e.index.value <= applied_) continue;
    Result<Applied> result = Applied{};
    if (e.type == Entry::Type::kConfChange || e.data.empty()) {
      if (auto s = ns_.markApplied(e.index.value); !s) result = s.error();
    } else if (e.data.size() % sizeof(capnp::word) != 0) {
      if (auto s = ns_.markApplied(e.index.value); !s) result = s.error();
      result = Error{Errc::kInvalid, "log entry is not a message"};
    } else {
      auto words = kj::heapArray<capnp::word>(e.data.size() / sizeof(capnp::word));
      memcpy(words.begin(), e.data.data(), e.data.size());
      std::optional<Result<Applied>> out;
      KJ_IF_MAYBE(ex, kj::runCatchingExceptions([&] {
        capnp::FlatArrayMessageReader reader(words);
        auto op = reader.getRoot<proto::Op>();
        out.emplace(ns_.apply(op, e.index.value));
        if (op.isSetMember() && out->ok()) {
          auto m = op.getSetMember();
          if (m.getRemove()) {
            addresses_.erase(NodeId(m.getMember()));
          } else {
            addresses_[NodeId(m.getMember())] = std::string(m.getAddress().cStr());
          }
        }
      })) {
        (void)ns_.markApplied(e.index.value);
        out.emplace(Error{Errc::kInvalid, std::string("log entry: ") + ex->getDescription().cStr()});
      }
      result = std::move(*out);
    }
    applied_ = e.index.value;
    auto p = pending_.find(e.index);
    if (p != pending_.end()) {
      // Another leader's entry took this index: ours was lost.
      p->second.fulfiller->fulfill(p->second.term == e.term ? std::move(result)
                                                            : Result<Applied>(notLeader()));
      pending_.erase(p);
    }
    auto c = confWaiters_.find(e.index);
    if (c != confWaiters_.end()) {
      c->second->fulfill(Status());
      confWaiters_.erase(c);
    }
    if (isLeader() && !leaderReady_ && e.term == leaderTerm_) {
      leaderReady_ = true;
      log::info("raft node ", id().value, ": leader ready at index ", applied_);
      if (onLeaderReady) onLeaderReady();
    }
  }
}

void RaftNode::failPending(const Error& error) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [index, p] : pending) p.fulfiller->fulfill(Result<Applied>(error));
  for (auto& f : inRound_) f->fulfill(Status(error));
  inRound_.clear();
  for (auto& f : waitingForRound_) f->fulfill(Status(error));
  waitingForRound_.clear();
  for (auto& [index, f] : waitingForApply_) f->fulfill(Status(error));
  waitingForApply_.clear();
  roundId_ = 0;
}

kj::Promise<Result<Applied>> RaftNode::propose(kj::Array<capnp::word> op) {
  if (!leaderReady()) return Result<Applied>(notLeader());
  auto bytes = op.asBytes();
  auto index = core_->propose(std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size()));
  if (!index) {
    if (index.code() == Errc::kNotLeader) return Result<Applied>(notLeader());
    return Result<Applied>(index.error());
  }
  auto paf = kj::newPromiseAndFulfiller<Result<Applied>>();
  pending_.emplace(*index, Pending{core_->term(), kj::mv(paf.fulfiller)});
  kick();
  return kj::mv(paf.promise);
}

kj::Promise<Status> RaftNode::readBarrier() {
  if (!leaderReady()) return Status(notLeader());
  auto paf = kj::newPromiseAndFulfiller<Status>();
  waitingForRound_.push_back(kj::mv(paf.fulfiller));
  if (roundId_ == 0) startReadRound();
  return kj::mv(paf.promise);
}

// One ReadIndex round answers every read that was waiting when it started; reads that come
// while it is in flight wait for the next one (they may have been issued after its index).
void RaftNode::startReadRound() {
  roundId_ = nextReadId_++;
  inRound_ = std::move(waitingForRound_);
  waitingForRound_.clear();
  if (auto s = core_->readIndex(roundId_); !s) {
    Error e = s.code() == Errc::kNotLeader ? notLeader() : s.error();
    for (auto& f : inRound_) f->fulfill(Status(e));
    inRound_.clear();
    roundId_ = 0;
    return;
  }
  kick();
}

void RaftNode::serveReads() {
  while (!waitingForApply_.empty() && waitingForApply_.begin()->first <= applied_) {
    waitingForApply_.begin()->second->fulfill(Status());
    waitingForApply_.erase(waitingForApply_.begin());
  }
}

kj::Promise<Status> RaftNode::addMember(NodeId id, std::string address) {
  if (!leaderReady()) return Status(notLeader());
  if (!Address::parse(address)) return Status(Error{Errc::kInvalid, "bad address " + address});
  capnp::MallocMessageBuilder message;
  auto op = message.initRoot<proto::Op>();
  op.setNowNs(0);
  auto m = op.initSetMember();
  m.setMember(id.value);
  m.setAddress(address);
  return propose(capnp::messageToFlatArray(message)).then([this, id](Result<Applied> r)
                                                              -> kj::Promise<Status> {
    if (!r) return Status(r.error());
    auto index = core_->proposeConfChange(ConfChange{ConfChange::Op::kAddVoter, id});
    if (!index) {
      if (index.code() == Errc::kNotLeader) return Status(notLeader());
      return Status(index.error());
    }
    auto paf = kj::newPromiseAndFulfiller<Status>();
    confWaiters_.emplace(*index, kj::mv(paf.fulfiller));
    kick();
    return kj::mv(paf.promise);
  });
}

kj::Promise<Status> RaftNode::removeMember(NodeId id) {
  if (!leaderReady()) return Status(notLeader());
  auto index = core_->proposeConfChange(ConfChange{ConfChange::Op::kRemoveVoter, id});
  if (!index) {
    if (index.code() == Errc::kNotLeader) return Status(notLeader());
    return Status(index.error());
  }
  auto paf = kj::newPromiseAndFulfiller<Status>();
  confWaiters_.emplace(*index, kj::mv(paf.fulfiller));
  kick();
  return kj::mv(paf.promise);
}

Status RaftNode::transferLeadership(NodeId to) {
  Status s = core_->transferLeadership(to);
  kick();
  if (!s && s.code() == Errc::kNotLeader) return notLeader();
  return s;
}

void RaftNode::receive(std::vector<Message> messages) {
  for (const Message& m : messages) {
    if (auto s = core_->step(m); !s) {
      log::debug("raft: refused ", m.toString().c_str(), ": ", s.error().toString().c_str());
    }
  }
  kick();
}

// --- transport ---------------------------------------------------------------------------

void RaftNode::send(std::vector<Message> messages) {
  std::set<NodeId> touched;
  for (Message& m : messages) {
    if (m.type == MessageType::kSnap) {
      // TODO(cleanup): stream the state machine to members that need compacted entries. The
      // node does not compact its log yet, so a leader never has to.
      log::warn("raft: snapshot to ", m.to.value, " requested but not supported yet");
      core_->reportSnapshot(m.to, false);
      continue;
    }
    touched.insert(m.to);
    peers_[m.to].queue.push_back(std::move(m));
  }
  for (NodeId to : touched) flush(to);
}

void RaftNode::flush(NodeId to) {
  auto& peer = peers_[to];
  if (peer.queue.empty()) return;
  KJ_IF_MAYBE(service, peer.service) {
    auto req = service->raftStepRequest();
    auto list = req.initMessages(uint32_t(peer.queue.size()));
    for (size_t i = 0; i < peer.queue.size(); ++i) toWire(peer.queue[i], list[i]);
    peer.queue.clear();
    tasks_.add(withTimeout(timer_, config_.callTimeoutMs, req.send())
                   .then([](auto) {}, [this, to](kj::Exception&& e) {
                     log::debug("raft: sending to ", to.value, ": ", e.getDescription());
                     peerFailed(to);
                   }));
    return;
  }
  // Messages to an unreachable peer are dropped, not hoarded: Raft resends what matters.
  if (peer.queue.size() > 1024) peer.queue.erase(peer.queue.begin(), peer.queue.end() - 1024);
  connect(to);
}

void RaftNode::connect(NodeId to) {
  auto& peer = peers_[to];
  if (peer.connecting) return;
  std::string address = addressOf(to);
  auto parsed = Address::parse(address);
  if (!parsed) {
    log::warn("raft: no address for member ", to.value);
    peer.queue.clear();
    return;
  }
  peer.connecting = true;
  tasks_.add(Connection::open(network_, timer_, *parsed, config_.connectTimeoutMs)
                 .then([this, to](Result<kj::Own<Connection>> c) {
                   auto& peer = peers_[to];
                   peer.connecting = false;
                   if (!c) {
                     peer.queue.clear();
                     core_->reportUnreachable(to);
                     kick();
                     return;
                   }
                   peer.connection = kj::mv(*c);
                   peer.service = peer.connection->bootstrap<proto::MetaService>();
                   flush(to);
                 }));
}

void RaftNode::peerFailed(NodeId to) {
  auto& peer = peers_[to];
  if (peer.service == nullptr) return;
  peer.service = nullptr;
  // Destroyed on a later turn: we may be inside one of its promises.
  auto conn = kj::mv(peer.connection);
  tasks_.add(kj::evalLater([c = kj::mv(conn)]() mutable {}));
  core_->reportUnreachable(to);
  kick();
}

}  // namespace tessera::meta::raft
