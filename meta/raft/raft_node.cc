#include "meta/raft/raft_node.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <unistd.h>

#include <cstring>

#include "fs/checksum.h"
#include "fs/log.h"
#include "fs/wire.h"
#include "fs/options.h"
#include "meta/raft/raft_wire.h"

namespace tessera::meta::raft {

void RaftNode::ErrorHandler::taskFailed(kj::Exception&& e) {
  log::error("raft node task failed: ", e.getDescription());
}

namespace {

// We cannot know what reached the disk: acting on it could break Raft's promises.
[[noreturn]] bool fatalLogError(const Error& e) {
  log::error("raft log: ", e.toString().c_str(), "; stopping");
  _exit(1);
}

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
  // The state machine is durable on its own and may be ahead of the log's commit index (which
  // is synced lazily) or of what the log still holds (it installed a snapshot and stopped before
  // the log recorded it). The core starts from what it may call applied; apply() skips every
  // entry the store has, so nothing is applied twice, and nothing past it is skipped.
  applied_ = ns_.appliedIndex();
  uint64_t snapshotIndex = storage_.snapshot().index.value;
  if (applied_ < snapshotIndex) {
    // main() refuses to start like this; the log's snapshot would hide entries the store lacks.
    log::error("raft node: the store applied ", applied_, " but the log starts after ",
               snapshotIndex);
  }
  uint64_t startAt = std::min(applied_, storage_.hardState().commit.value);
  startAt = std::max(startAt, snapshotIndex);
  core_ = std::make_unique<RaftCore>(withApplied(config.raft, startAt), storage_, rng_);
  for (auto& m : ns_.members()) addresses_[NodeId(m.id)] = m.address;
  log::info("raft node ", config.raft.id.value, ": term ", core_->term().value, ", log ",
            core_->firstIndex().value, "..", core_->lastIndex().value, " (snapshot at ",
            snapshotIndex, "), commit ", core_->commit().value, ", store applied ", applied_);
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
  if (processing_) return;
  // A received snapshot replaces the store between two Readies: none is half applied, and no
  // compaction is syncing the store.
  if (pendingInstall_) {
    PendingInstall p = std::move(*pendingInstall_);
    pendingInstall_.reset();
    install(std::move(p));
  }
  if (!core_->hasReady()) return;
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
    if (!s) fatalLogError(s.error());
    if (auto c = storage_.commit(*batch); !c) fatalLogError(c.error());
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
    return maybeCompact().then([this] {
      processing_ = false;
      kick();
    });
  });
}

// Runs inside the Ready pipeline (processing_), so nothing applies to the store meanwhile.
kj::Promise<void> RaftNode::maybeCompact() {
  if (config_.snapshotEntries == 0) return kj::READY_NOW;
  LogIndex snapshot = storage_.snapshot().index;
  LogIndex applied = core_->applied();
  if (applied.value < snapshot.value + config_.snapshotEntries + config_.snapshotKeepEntries) {
    return kj::READY_NOW;
  }
  auto meta = core_->snapshotMeta(applied - config_.snapshotKeepEntries);
  if (!meta) {
    log::warn("raft: no snapshot at ", applied.value - config_.snapshotKeepEntries, ": ",
              meta.error().toString().c_str());
    return kj::READY_NOW;
  }
  auto batch = std::make_shared<FileStorage::Batch>();
  batch->snapshot = *meta;
  // The log may forget entries only once the store that holds their effects is durable.
  return disk_.run([this] { return ns_.sync(); })
      .then([this, batch](Status synced) -> kj::Promise<bool> {
        if (!synced) {
          log::warn("raft: not compacting, the store did not sync: ",
                    synced.error().toString().c_str());
          return false;
        }
        Status written = storage_.write(*batch);
        if (!written) return fatalLogError(written.error());
        return disk_.run([this] {
                 Status s = storage_.sync();
                 return s ? storage_.rotate() : s;
               })
            .then([](Status s) -> bool {
              if (!s) fatalLogError(s.error());
              return true;
            });
      })
      .then([this, batch](bool compacted) {
        if (!compacted) return;
        if (auto c = storage_.commit(*batch); !c) fatalLogError(c.error());
        log::info("raft node ", id().value, ": compacted the log up to ",
                  batch->snapshot->index.value, ", ", storage_.segmentCount(),
                  " segment(s) left");
      });
}

void RaftNode::apply(const std::vector<Entry>& committed) {
  for (const Entry& e : committed) {
    // The store has it already (restart, or a snapshot installed past it).
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
    if (m.type == MessageType::kSnap) {
      // Its data never came: stepping it would make the core believe the store has it.
      log::warn("raft: dropped a snapshot message without its data from ", m.from.value);
      continue;
    }
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
      startSnapshot(m.to);
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
  auto route = config_.routes.find(to);
  std::string address = route != config_.routes.end() ? route->second : addressOf(to);
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

// --- snapshots -----------------------------------------------------------------------------

// The core asks for a snapshot of what it compacted; we send the store as it is now, which
// has applied at least that much, under its own index: what the follower's core is told then
// matches what its store holds.
void RaftNode::startSnapshot(NodeId to) {
  if (outbound_.count(to)) return;  // one stream per follower; it reports when it ends
  if (peers_[to].service == nullptr) {
    connect(to);
    core_->reportSnapshot(to, false);
    return;
  }
  auto out = std::make_unique<Outbound>();
  out->reader = std::make_unique<SnapshotReader>(ns_);
  auto meta = core_->snapshotMeta(LogIndex(out->reader->appliedIndex()));
  if (!meta) {
    log::warn("raft: no snapshot for member ", to.value, " at index ",
              out->reader->appliedIndex(), ": ", meta.error().toString().c_str());
    core_->reportSnapshot(to, false);
    return;
  }
  out->meta = *meta;
  out->term = core_->term();
  log::info("raft node ", id().value, ": sending a snapshot at index ", meta->index.value,
            " (term ", meta->term.value, ") to member ", to.value);
  Outbound& ref = *out;
  outbound_.emplace(to, std::move(out));
  ref.task = kj::evalLater([this, to] { return sendSnapshotPiece(to); })
                 .eagerlyEvaluate([this, to, stream = &ref](kj::Exception&& e) {
                   // A fault the chain did not turn into an end (a malformed reply).
                   auto it = outbound_.find(to);
                   if (it != outbound_.end() && it->second.get() == stream) {
                     endSnapshot(to, false, e.getDescription().cStr());
                   }
                 });
}

// One piece per call, the next once the follower has written it: one piece in memory on each
// side, and a follower that fails stops the stream at once.
kj::Promise<void> RaftNode::sendSnapshotPiece(NodeId to) {
  auto it = outbound_.find(to);
  if (it == outbound_.end()) return kj::READY_NOW;
  Outbound& out = *it->second;
  if (!isLeader() || core_->term() != out.term) {
    endSnapshot(to, false, "no longer the leader");
    return kj::READY_NOW;
  }
  proto::MetaService::Client* service = nullptr;
  KJ_IF_MAYBE (s, peers_[to].service) { service = s; }
  if (!service) {
    endSnapshot(to, false, "disconnected");
    return kj::READY_NOW;
  }
  uint64_t offset = out.reader->offset();
  auto piece = out.reader->next(config_.snapshotPieceBytes);
  if (!piece) {
    endSnapshot(to, false, piece.error().toString());
    return kj::READY_NOW;
  }
  bool done = out.reader->done();
  auto req = service->raftSnapshotRequest();
  req.setFrom(id().value);
  req.setTerm(out.term.value);
  toWire(out.meta, req.initMeta());
  req.setOffset(offset);
  req.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(piece->data()), piece->size()));
  req.setCrc(crc32c(piece->data(), piece->size()));
  req.setDone(done);
  req.setTotal(out.reader->offset());
  return withTimeout(timer_, config_.snapshotCallTimeoutMs, req.send())
      .then(
          [this, to, done](capnp::Response<proto::MetaService::RaftSnapshotResults>&& r)
              -> kj::Promise<void> {
            if (Status s = tessera::fromWire(r.getError()); !s) {
              endSnapshot(to, false, "member refused it: " + s.error().toString());
            } else if (r.getComplete()) {
              endSnapshot(to, true, "");
            } else if (done) {
              endSnapshot(to, false, "member did not install it");
            } else {
              return sendSnapshotPiece(to);
            }
            return kj::READY_NOW;
          },
          [this, to](kj::Exception&& e) {
            endSnapshot(to, false, e.getDescription().cStr());
          });
}

void RaftNode::endSnapshot(NodeId to, bool ok, const std::string& why) {
  auto it = outbound_.find(to);
  if (it == outbound_.end()) return;
  std::unique_ptr<Outbound> out = std::move(it->second);
  outbound_.erase(it);
  out->reader.reset();  // releases the LevelDB snapshot now
  if (ok) {
    ++snapshotsSent_;
    log::info("raft node ", id().value, ": member ", to.value, " has the snapshot at index ",
              out->meta.index.value);
  } else {
    log::warn("raft: snapshot to member ", to.value, " failed: ", why.c_str());
  }
  if (isLeader() && core_->term() == out->term) {
    core_->reportSnapshot(to, ok);
    kick();
  }
  // We may be running inside out->task: it goes on a later turn.
  tasks_.add(kj::evalLater([o = std::move(out)]() mutable { o.reset(); }));
}

void RaftNode::cancelSnapshots() {
  std::vector<NodeId> ids;
  for (auto& [to, out] : outbound_) ids.push_back(to);
  for (NodeId to : ids) endSnapshot(to, false, "this node installs a snapshot itself");
}

// Releases Inbound::busy when the write of a piece ends, also when the call is cancelled
// (dropping the worker's promise waits for the write to finish first).
struct RaftNode::BusyGuard {
  std::unique_ptr<Inbound>* inbound;
  uint64_t seq;
  ~BusyGuard() {
    if (*inbound && (*inbound)->seq == seq) (*inbound)->busy = false;
  }
};

kj::Promise<Result<bool>> RaftNode::receiveSnapshot(SnapshotPiece p) {
  using R = Result<bool>;
  if (!p.from || p.from == id()) return R(Error{Errc::kInvalid, "snapshot from a bad sender"});
  if (p.term < core_->term()) {
    return R(Error{Errc::kStale, "snapshot from the leader of an older term"});
  }
  if (isLeader()) return R(Error{Errc::kBusy, "this node leads; it steps down first"});
  if (!p.meta.index) return R(Error{Errc::kInvalid, "snapshot at index 0"});
  const auto& voters = p.meta.conf.voters;
  for (size_t i = 0; i < voters.size(); ++i) {
    if (!voters[i] || (i > 0 && voters[i] <= voters[i - 1])) {
      return R(Error{Errc::kInvalid, "snapshot configuration not sorted and distinct"});
    }
  }
  if (pendingInstall_) return R(Error{Errc::kBusy, "installing a snapshot"});
  if (p.offset == 0) {
    if (inbound_ && inbound_->busy) return R(Error{Errc::kBusy, "writing a snapshot piece"});
    inbound_.reset();
    if (p.meta.index.value <= applied_) {
      // The store is there already; only the log needs to learn about the snapshot.
      log::info("raft node ", id().value, ": the store has applied ", applied_,
                ", at or past the snapshot at ", p.meta.index.value, " from member ",
                p.from.value);
      stepSnapshot(p.from, p.term, p.meta);
      kick();
      return R(true);
    }
    auto writer = SnapshotWriter::create(ns_);
    if (!writer) return R(writer.error());
    inbound_ = std::make_unique<Inbound>();
    inbound_->seq = ++inboundSeq_;
    inbound_->from = p.from;
    inbound_->term = p.term;
    inbound_->meta = p.meta;
    inbound_->writer = std::move(*writer);
    log::info("raft node ", id().value, ": receiving a snapshot at index ", p.meta.index.value,
              " (term ", p.meta.term.value, ") from member ", p.from.value);
  } else if (!inbound_ || inbound_->from != p.from || inbound_->term != p.term ||
             inbound_->meta != p.meta) {
    return R(Error{Errc::kInvalid, "snapshot piece at offset " + std::to_string(p.offset) +
                                       " of a stream that did not start here"});
  } else if (inbound_->busy) {
    return R(Error{Errc::kBusy, "writing a snapshot piece"});
  }
  Inbound* in = inbound_.get();
  in->busy = true;
  auto guard = std::make_shared<BusyGuard>(BusyGuard{&inbound_, in->seq});
  auto piece = std::make_shared<SnapshotPiece>(std::move(p));
  return snapDisk_
      .run([in, piece]() -> Status {
        Status s = in->writer->add(piece->offset, piece->data, piece->crc);
        if (s && piece->done) s = in->writer->finish(piece->total, piece->meta.index.value);
        return s;
      })
      .then([this, guard, piece](Status s) -> kj::Promise<Result<bool>> {
        if (!s) {
          log::warn("raft: refused a snapshot piece at offset ", piece->offset, " from member ",
                    piece->from.value, ": ", s.error().toString().c_str());
          inbound_.reset();  // the leader starts over
          return R(s.error());
        }
        if (!piece->done) return R(false);
        log::info("raft node ", id().value, ": received the whole snapshot at index ",
                  piece->meta.index.value, " (", piece->total, " bytes)");
        inbound_.reset();
        auto paf = kj::newPromiseAndFulfiller<Result<bool>>();
        pendingInstall_ =
            PendingInstall{piece->from, piece->term, piece->meta, kj::mv(paf.fulfiller)};
        kick();
        return kj::mv(paf.promise);
      });
}

void RaftNode::install(PendingInstall p) {
  if (p.term < core_->term() || isLeader()) {
    ns_.discardSnapshot();
    p.fulfiller->fulfill(Result<bool>(Error{Errc::kStale, "a newer term began meanwhile"}));
    return;
  }
  if (p.meta.index.value <= applied_) {
    ns_.discardSnapshot();  // applied past it meanwhile
  } else {
    cancelSnapshots();
    if (Status s = ns_.installSnapshot(); !s) {
      // The store may be closed now; the next start finishes the switch (snapshot.h).
      log::error("raft: installing the snapshot: ", s.error().toString().c_str(), "; stopping");
      _exit(1);
    }
    applied_ = ns_.appliedIndex();
    for (auto& m : ns_.members()) addresses_[NodeId(m.id)] = m.address;
    ++snapshotsInstalled_;
    log::info("raft node ", id().value, ": installed the snapshot at index ",
              p.meta.index.value, " from member ", p.from.value, " (InstallSnapshot)");
  }
  stepSnapshot(p.from, p.term, p.meta);
  p.fulfiller->fulfill(Result<bool>(true));
}

void RaftNode::stepSnapshot(NodeId from, Term term, const SnapshotMeta& meta) {
  Message m;
  m.type = MessageType::kSnap;
  m.from = from;
  m.to = id();
  m.term = term;
  m.snapshot = meta;
  if (auto s = core_->step(m); !s) {
    log::warn("raft: the core refused the snapshot message: ", s.error().toString().c_str());
  }
}

}  // namespace tessera::meta::raft
