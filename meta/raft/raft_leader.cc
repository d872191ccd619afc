// The leader's side of RaftCore: proposals, replication and commitment, ReadIndex,
// leadership transfer, and configuration changes (which every role tracks).
#include <algorithm>

#include "meta/raft/assert.h"
#include "meta/raft/raft_core.h"

namespace tessera::meta::raft {

namespace {

Error notLeader(NodeId leader) {
  if (!leader) return Error{Errc::kNotLeader, "no leader known"};
  return Error{Errc::kNotLeader, "leader " + std::to_string(leader.value)};
}

}  // namespace

// ---- Requests -------------------------------------------------------------------------------

Result<LogIndex> RaftCore::propose(std::string data) {
  if (role_ != Role::kLeader) return notLeader(leader_);
  // Dissertation §3.10: during a transfer "the prior leader stops accepting new client
  // requests".
  if (leadTransferee_) return Error{Errc::kBusy, "leadership transfer in progress"};
  if (data.empty()) return Error{Errc::kInvalid, "empty proposal (reserved for the no-op)"};
  LogIndex index = log_.lastIndex().next();
  std::vector<Entry> ents(1);
  ents[0].data = std::move(data);
  appendEntries(std::move(ents));
  return index;
}

Result<LogIndex> RaftCore::proposeConfChange(const ConfChange& change) {
  if (role_ != Role::kLeader) return notLeader(leader_);
  if (leadTransferee_) return Error{Errc::kBusy, "leadership transfer in progress"};
  // One change at a time: two uncommitted single-server changes could produce disjoint
  // majorities. And a new leader must first commit an entry of its term, or an uncommitted
  // change from an earlier term could be lost after we based this one on it.
  if (confs_.rbegin()->first > log_.committed()) {
    return Error{Errc::kBusy, "a configuration change is pending"};
  }
  if (!committedEntryInCurrentTerm()) {
    return Error{Errc::kBusy, "the leader has not committed an entry of its term yet"};
  }
  if (!change.node) return Error{Errc::kInvalid, "configuration change of node 0"};
  const ConfState& c = conf();
  if (change.op == ConfChange::Op::kAddVoter && c.contains(change.node)) {
    return Error{Errc::kExists, "already a voter"};
  }
  if (change.op == ConfChange::Op::kRemoveVoter) {
    if (!c.contains(change.node)) return Error{Errc::kNotFound, "not a voter"};
    if (c.voters.size() == 1) return Error{Errc::kInvalid, "cannot remove the last voter"};
  }
  ConfEntry payload{change, c};
  auto pos =
      std::lower_bound(payload.voters.voters.begin(), payload.voters.voters.end(), change.node);
  if (change.op == ConfChange::Op::kAddVoter) {
    payload.voters.voters.insert(pos, change.node);
  } else {
    payload.voters.voters.erase(pos);
  }
  LogIndex index = log_.lastIndex().next();
  std::vector<Entry> ents(1);
  ents[0].type = Entry::Type::kConfChange;
  ents[0].data = payload.encode();
  appendEntries(std::move(ents));
  return index;
}

Status RaftCore::readIndex(uint64_t requestId) {
  if (role_ == Role::kLeader) {
    handleReadRequest(id(), requestId);
    return {};
  }
  if (!leader_) return notLeader(leader_);
  // Dissertation §6.4: a follower "issues a request to the leader just to learn the current
  // readIndex".
  Message m;
  m.type = MessageType::kReadIndex;
  m.to = leader_;
  m.context = requestId;
  send(std::move(m));
  return {};
}

Status RaftCore::transferLeadership(NodeId target) {
  if (role_ != Role::kLeader) {
    if (!leader_) return notLeader(leader_);
    if (!conf().contains(target)) return Error{Errc::kNotFound, "transfer target not a voter"};
    Message m;
    m.type = MessageType::kTransferLeader;
    m.to = leader_;
    m.target = target;
    send(std::move(m));
    return {};
  }
  if (!conf().contains(target)) return Error{Errc::kNotFound, "transfer target not a voter"};
  if (target == id() || target == leadTransferee_) return {};
  leadTransferee_ = target;
  // The transfer must finish within an election timeout (tick() aborts it).
  electionElapsed_ = 0;
  // Dissertation §3.10: bring the target's log up to date, then send TimeoutNow.
  if (progress_.at(target).match == log_.lastIndex()) {
    sendTimeoutNow(target);
  } else {
    sendAppend(target);
  }
  return {};
}

void RaftCore::reportUnreachable(NodeId peer) {
  Message m;
  m.type = MessageType::kUnreachable;
  m.from = peer;
  m.to = id();
  (void)step(m);
}

void RaftCore::reportSnapshot(NodeId peer, bool ok) {
  Message m;
  m.type = MessageType::kSnapStatus;
  m.from = peer;
  m.to = id();
  m.reject = !ok;
  (void)step(m);
}

// ---- Replication ----------------------------------------------------------------------------

void RaftCore::appendEntries(std::vector<Entry> ents) {
  // §5.3 Leader Append-Only: "a leader never overwrites or deletes entries in its log; it
  // only appends new entries."
  LogIndex last = log_.lastIndex();
  for (size_t i = 0; i < ents.size(); ++i) {
    ents[i].term = term_;
    ents[i].index = last + (i + 1);
  }
  bool changed = recordConfChanges(ents);
  log_.append(std::move(ents));
  progress_.at(id()).maybeUpdate(log_.lastIndex());
  appendPending_ = true;
  if (changed) onConfChanged();
  // A group of one commits on its own.
  if (role_ == Role::kLeader) maybeCommit();
}

bool RaftCore::maybeSendAppend(NodeId to, bool sendIfEmpty) {
  Progress& pr = progress_.at(to);
  if (pr.isPaused()) return false;
  LogIndex prev = pr.next.prev();
  auto prevTerm = log_.term(prev);
  Result<std::vector<Entry>> ents = std::vector<Entry>();
  if (prevTerm && pr.next <= log_.lastIndex()) {
    LogIndex hi = std::min(log_.lastIndex().next(), pr.next + config_.maxMsgEntries);
    ents = log_.entries(pr.next, hi, config_.maxMsgBytes);
  }
  bool compacted = (!prevTerm && prevTerm.code() == Errc::kNotFound) ||
                   (!ents && ents.code() == Errc::kNotFound);
  if (compacted) {
    // §7: "the leader must occasionally send snapshots to followers that lag behind."
    // Not to a peer that is not answering (the node would stream it into the void), and not
    // while our own snapshot is not installed yet.
    if (!pr.recentActive || log_.unstableSnapshot()) return false;
    Message m;
    m.type = MessageType::kSnap;
    m.to = to;
    m.snapshot = log_.snapshotMeta();
    pr.becomeSnapshot(m.snapshot->index);
    send(std::move(m));
    return true;
  }
  TESSERA_RAFT_ASSERT(prevTerm.ok() && ents.ok(),
                      "leader log unreadable at " + std::to_string(pr.next.value));
  if (ents->empty() && !sendIfEmpty) return false;
  Message m;
  m.type = MessageType::kApp;
  m.to = to;
  m.index = prev;
  m.logTerm = *prevTerm;
  m.entries = std::move(*ents);
  m.commit = log_.committed();
  bool hadEntries = !m.entries.empty();
  LogIndex last = hadEntries ? m.entries.back().index : prev;
  send(std::move(m));
  pr.sentAppend(last, hadEntries);
  return true;
}

void RaftCore::sendAppend(NodeId to) {
  // Fill the pipeline: in the replicate state several appends may go at once.
  if (!maybeSendAppend(to, true)) return;
  while (maybeSendAppend(to, false)) {
  }
}

void RaftCore::bcastAppend() {
  for (auto& [peer, pr] : progress_) {
    if (peer != id()) sendAppend(peer);
  }
}

void RaftCore::bcastHeartbeat(uint64_t round) {
  for (auto& [peer, pr] : progress_) {
    if (peer == id()) continue;
    Message m;
    m.type = MessageType::kHeartbeat;
    m.to = peer;
    // Only what the follower is known to hold: its entries past match may not be ours.
    m.commit = std::min(pr.match, log_.committed());
    m.context = round;
    send(std::move(m));
  }
}

template <typename F>
uint64_t RaftCore::quorumValue(F valueOf) const {
  const auto& voters = conf().voters;
  if (voters.empty()) return 0;
  std::vector<uint64_t> values;
  values.reserve(voters.size());
  for (NodeId v : voters) {
    auto it = progress_.find(v);
    values.push_back(it == progress_.end() ? 0 : valueOf(v, it->second));
  }
  std::sort(values.begin(), values.end(), std::greater<>());
  return values[voters.size() / 2];
}

bool RaftCore::maybeCommit() {
  LogIndex index(quorumValue([](NodeId, const Progress& pr) { return pr.match.value; }));
  // §5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only
  // log entries from the leader's current term are committed by counting replicas".
  if (index <= log_.committed() || log_.termOrZero(index) != term_) return false;
  log_.commitTo(index);
  onCommitAdvanced();
  return true;
}

void RaftCore::onCommitAdvanced() {
  if (role_ != Role::kLeader) return;
  if (!readsBeforeCommit_.empty() && committedEntryInCurrentTerm()) {
    auto reads = std::move(readsBeforeCommit_);
    readsBeforeCommit_.clear();
    for (const PendingRead& r : reads) handleReadRequest(r.from, r.requestId);
  }
  // A leader that removed itself leads until that change is committed (dissertation §4.2.2),
  // then steps down, handing over to a voter whose log is complete if there is one.
  if (!conf().contains(id()) && confs_.rbegin()->first <= log_.committed()) {
    for (NodeId v : conf().voters) {
      if (progress_.at(v).match == log_.lastIndex()) {
        sendTimeoutNow(v);
        break;
      }
    }
    becomeFollower(term_, NodeId());
  }
}

bool RaftCore::committedEntryInCurrentTerm() const {
  return log_.termOrZero(log_.committed()) == term_;
}

bool RaftCore::quorumActive() const {
  return quorumValue([this](NodeId peer, const Progress& pr) -> uint64_t {
           return peer == id() || pr.recentActive;
         }) != 0;
}

void RaftCore::sendTimeoutNow(NodeId to) {
  Message m;
  m.type = MessageType::kTimeoutNow;
  m.to = to;
  send(std::move(m));
}

void RaftCore::stepLeader(const Message& m) {
  auto it = progress_.find(m.from);
  switch (m.type) {
    case MessageType::kAppResp:
      if (it != progress_.end()) handleAppendResponse(m, it->second);
      break;
    case MessageType::kHeartbeatResp:
      if (it != progress_.end()) handleHeartbeatResponse(m, it->second);
      break;
    case MessageType::kReadIndex:
      handleReadRequest(m.from, m.context);
      break;
    case MessageType::kTransferLeader:
      (void)transferLeadership(m.target);
      break;
    case MessageType::kSnapStatus:
      if (it == progress_.end() || it->second.state != ProgressState::kSnapshot) break;
      // Failed: start over from what the follower is known to have. Done: go on after the
      // snapshot. Either way, wait for an answer before sending more.
      if (m.reject) it->second.pendingSnapshot = LogIndex();
      it->second.becomeProbe();
      it->second.probeSent = true;
      break;
    case MessageType::kUnreachable:
      // Appends in flight were probably lost: stop pipelining and probe.
      if (it != progress_.end() && it->second.state == ProgressState::kReplicate) {
        it->second.becomeProbe();
      }
      break;
    default:
      break;
  }
}

void RaftCore::handleAppendResponse(const Message& m, Progress& pr) {
  pr.recentActive = true;
  if (m.reject) {
    LogIndex hint = m.rejectHint;
    if (m.logTerm) hint = log_.findConflictByTerm(m.rejectHint, m.logTerm);
    if (pr.maybeDecrTo(m.index, hint)) {
      if (pr.state == ProgressState::kReplicate) pr.becomeProbe();
      sendAppend(m.from);
    }
    return;
  }
  if (m.index > log_.lastIndex()) return;  // not something we sent
  bool wasPaused = pr.isPaused();
  if (!pr.maybeUpdate(m.index)) return;
  switch (pr.state) {
    case ProgressState::kProbe:
      pr.becomeReplicate();
      break;
    case ProgressState::kSnapshot:
      if (pr.match >= pr.pendingSnapshot || pr.match.next() >= log_.firstIndex()) {
        pr.becomeProbe();
        pr.becomeReplicate();
      }
      break;
    case ProgressState::kReplicate:
      pr.inflights.freeLE(m.index);
      break;
  }
  NodeId from = m.from;
  if (maybeCommit()) {
    // A leader that removed itself may have stepped down.
    if (role_ != Role::kLeader) return;
    bcastAppend();
  } else if (wasPaused) {
    sendAppend(from);
  } else {
    while (maybeSendAppend(from, false)) {
    }
  }
  if (from == leadTransferee_ && progress_.at(from).match == log_.lastIndex()) {
    sendTimeoutNow(from);
  }
}

void RaftCore::handleHeartbeatResponse(const Message& m, Progress& pr) {
  pr.recentActive = true;
  pr.probeSent = false;
  // An append in flight may have been lost: make room for one more.
  if (pr.state == ProgressState::kReplicate && pr.inflights.full()) pr.inflights.freeFirstOne();
  if (pr.match < log_.lastIndex()) sendAppend(m.from);
  if (m.context > pr.ackedRound) {
    pr.ackedRound = m.context;
    releaseReads();
  }
}

// ---- Reads ----------------------------------------------------------------------------------

void RaftCore::handleReadRequest(NodeId from, uint64_t requestId) {
  // Dissertation §6.4: "If the leader has not yet marked an entry from its current term
  // committed, it waits until it has done so."
  if (!committedEntryInCurrentTerm()) {
    readsBeforeCommit_.push_back(PendingRead{from, requestId, LogIndex(), 0});
    return;
  }
  // "The leader saves its current commit index in a local variable readIndex" and "issues a
  // new round of heartbeats and waits for their acknowledgments from a majority".
  pendingReads_.push_back(PendingRead{from, requestId, log_.committed(), ++readRound_});
  releaseReads();
  if (!pendingReads_.empty()) readBroadcastPending_ = true;
}

void RaftCore::releaseReads() {
  uint64_t confirmed = quorumValue([this](NodeId peer, const Progress& pr) {
    return peer == id() ? readRound_ : pr.ackedRound;
  });
  while (!pendingReads_.empty() && pendingReads_.front().round <= confirmed) {
    const PendingRead& r = pendingReads_.front();
    answerRead(r.from, r.requestId, r.index);
    pendingReads_.pop_front();
  }
}

void RaftCore::answerRead(NodeId from, uint64_t requestId, LogIndex index) {
  if (from == id()) {
    readStates_.push_back(ReadState{index, requestId});
    return;
  }
  Message m;
  m.type = MessageType::kReadIndexResp;
  m.to = from;
  m.index = index;
  m.context = requestId;
  send(std::move(m));
}

// ---- Configuration --------------------------------------------------------------------------

bool RaftCore::recordConfChanges(const std::vector<Entry>& appended) {
  if (appended.empty()) return false;
  // Entries from the first one on replace what the log had there, and with them any
  // configuration those carried.
  auto from = confs_.lower_bound(appended.front().index);
  bool changed = from != confs_.end();
  confs_.erase(from, confs_.end());
  for (const Entry& e : appended) {
    if (e.type != Entry::Type::kConfChange) continue;
    // An entry that does not decode (a leader never writes one) is a no-op on every server
    // alike.
    auto payload = ConfEntry::decode(e.data);
    if (!payload) continue;
    // Dissertation §4.1: "a server always uses the latest configuration in its log,
    // regardless of whether the entry is committed."
    confs_[e.index] = std::move(payload->voters);
    changed = true;
  }
  return changed;
}

void RaftCore::onConfChanged() {
  if (role_ != Role::kLeader) return;
  const ConfState& c = conf();
  for (NodeId v : c.voters) {
    if (progress_.count(v)) continue;
    Progress pr(config_.maxInflight);
    pr.next = log_.lastIndex().next();
    // Give a new member an election timeout before check-quorum counts it as silent.
    pr.recentActive = true;
    progress_.emplace(v, std::move(pr));
  }
  for (auto it = progress_.begin(); it != progress_.end();) {
    if (it->first != id() && !c.contains(it->first)) {
      it = progress_.erase(it);
    } else {
      ++it;
    }
  }
  if (leadTransferee_ && !c.contains(leadTransferee_)) abortLeaderTransfer();
  // With fewer voters a smaller quorum may already hold entries and read rounds.
  releaseReads();
  if (maybeCommit() && role_ == Role::kLeader) appendPending_ = true;
}

void RaftCore::pruneConfHistory() {
  // Keep the configuration at the start of the log and every later one.
  auto keep = confs_.upper_bound(log_.firstIndex().prev());
  TESSERA_RAFT_ASSERT(keep != confs_.begin(), "no configuration at the start of the log");
  confs_.erase(confs_.begin(), std::prev(keep));
}

}  // namespace tessera::meta::raft
