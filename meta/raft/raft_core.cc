// Roles, elections, message dispatch and the Ready hand-off. Replication, reads, leadership
// transfer and configuration changes are in raft_leader.cc.
#include "meta/raft/raft_core.h"

#include <algorithm>

#include "meta/raft/assert.h"

namespace tessera::meta::raft {

Status RaftConfig::validate() const {
  if (!id) return Error{Errc::kInvalid, "raft config: id 0"};
  if (electionTick <= 0 || heartbeatTick <= 0) {
    return Error{Errc::kInvalid, "raft config: ticks must be positive"};
  }
  if (heartbeatTick >= electionTick) {
    return Error{Errc::kInvalid, "raft config: heartbeatTick must be < electionTick"};
  }
  if (maxMsgEntries == 0 || maxMsgBytes == 0 || maxInflight == 0 || maxApplyBytes == 0) {
    return Error{Errc::kInvalid, "raft config: zero limit"};
  }
  return {};
}

RaftCore::RaftCore(const RaftConfig& config, const RaftStorage& storage, Rng& rng)
    : config_(config), rng_(rng), log_(storage, config.applied) {
  Status valid = config.validate();
  TESSERA_RAFT_ASSERT(valid.ok(), valid.error().toString());
  HardState hs = storage.hardState();
  term_ = hs.term;
  vote_ = hs.vote;
  const SnapshotMeta& snap = storage.snapshot();
  confs_[snap.index] = snap.conf;
  // The configuration in force is the latest in the log, committed or not: find the
  // configuration entries after the snapshot. TODO(perf): the node could index them.
  LogIndex last = storage.lastIndex();
  for (LogIndex lo = snap.index.next(); lo <= last;) {
    auto ents = storage.entries(lo, last.next(), 4 << 20);
    TESSERA_RAFT_ASSERT(ents.ok() && !ents->empty(), "storage cannot read its own log");
    recordConfChanges(*ents);
    lo = ents->back().index.next();
  }
  prevHardState_ = hs;
  becomeFollower(term_, NodeId());
  prevSoftState_ = SoftState{leader_, role_};
}

// ---- Roles ----------------------------------------------------------------------------------

void RaftCore::reset(Term term) {
  if (term_ != term) {
    term_ = term;
    vote_ = NodeId();
  }
  leader_ = NodeId();
  electionElapsed_ = 0;
  heartbeatElapsed_ = 0;
  resetRandomizedElectionTimeout();
  abortLeaderTransfer();
  votes_.clear();
  progress_.clear();
  appendPending_ = false;
  readBroadcastPending_ = false;
  pendingReads_.clear();
  readsBeforeCommit_.clear();
}

void RaftCore::resetRandomizedElectionTimeout() {
  randomizedElectionTimeout_ = config_.electionTick + int(rng_() % uint64_t(config_.electionTick));
}

void RaftCore::becomeFollower(Term term, NodeId leader) {
  reset(term);
  role_ = Role::kFollower;
  leader_ = leader;
}

void RaftCore::becomePreCandidate() {
  TESSERA_RAFT_ASSERT(role_ != Role::kLeader, "leader cannot become pre-candidate");
  // Pre-vote changes neither the term nor the vote: a server that cannot win disrupts nobody.
  votes_.clear();
  leader_ = NodeId();
  role_ = Role::kPreCandidate;
}

void RaftCore::becomeCandidate() {
  TESSERA_RAFT_ASSERT(role_ != Role::kLeader, "leader cannot become candidate");
  reset(term_.next());
  vote_ = id();
  role_ = Role::kCandidate;
}

void RaftCore::becomeLeader() {
  TESSERA_RAFT_ASSERT(role_ == Role::kCandidate, "only a candidate becomes leader");
  reset(term_);
  role_ = Role::kLeader;
  leader_ = id();
  LogIndex last = log_.lastIndex();
  auto addProgress = [&](NodeId peer) {
    Progress pr(config_.maxInflight);
    pr.next = last.next();
    if (peer == id()) pr.match = last;
    progress_.emplace(peer, std::move(pr));
  };
  addProgress(id());
  for (NodeId v : conf().voters) {
    if (v != id()) addProgress(v);
  }
  // §8: a new leader commits a blank entry of its own term; only then does it know which
  // entries are committed (and may serve reads or change the configuration).
  appendEntries(std::vector<Entry>(1));
}

bool RaftCore::promotable() const { return conf().contains(id()) && !log_.unstableSnapshot(); }

void RaftCore::campaign() {
  if (role_ == Role::kLeader) return;
  campaignAs(config_.preVote ? CampaignType::kPreElection : CampaignType::kElection);
}

void RaftCore::campaignAs(CampaignType type) {
  if (!promotable()) return;
  MessageType voteType;
  Term voteTerm;
  if (type == CampaignType::kPreElection) {
    becomePreCandidate();
    voteType = MessageType::kPreVote;
    voteTerm = term_.next();
  } else {
    becomeCandidate();
    voteType = MessageType::kVote;
    voteTerm = term_;
  }
  if (poll(id(), true) > 0) {
    // A group of one.
    if (type == CampaignType::kPreElection) {
      campaignAs(CampaignType::kElection);
    } else {
      becomeLeader();
    }
    return;
  }
  for (NodeId v : conf().voters) {
    if (v == id()) continue;
    Message m;
    m.type = voteType;
    m.to = v;
    m.term = voteTerm;
    m.index = log_.lastIndex();
    m.logTerm = log_.lastTerm();
    m.transfer = type == CampaignType::kTransfer;
    send(std::move(m));
  }
}

int RaftCore::poll(NodeId from, bool granted) {
  votes_.emplace(from, granted);
  size_t yes = 0, no = 0;
  const auto& voters = conf().voters;
  for (NodeId v : voters) {
    auto it = votes_.find(v);
    if (it == votes_.end()) continue;
    (it->second ? yes : no)++;
  }
  size_t quorum = voters.size() / 2 + 1;
  if (yes >= quorum) return 1;
  if (no > voters.size() - quorum) return -1;
  return 0;
}

// ---- Time -----------------------------------------------------------------------------------

void RaftCore::tick() {
  if (role_ != Role::kLeader) {
    ++electionElapsed_;
    if (promotable() && electionElapsed_ >= randomizedElectionTimeout_) {
      electionElapsed_ = 0;
      campaignAs(config_.preVote ? CampaignType::kPreElection : CampaignType::kElection);
    }
    return;
  }
  ++heartbeatElapsed_;
  ++electionElapsed_;
  if (electionElapsed_ >= config_.electionTick) {
    electionElapsed_ = 0;
    if (config_.checkQuorum) {
      // Check-quorum: a leader that cannot reach a majority steps down, so a partitioned
      // leader stops acting as one (and stops serving reads) within an election timeout.
      if (!quorumActive()) {
        becomeFollower(term_, NodeId());
        return;
      }
      for (auto& [peer, pr] : progress_) {
        if (peer != id()) pr.recentActive = false;
      }
    }
    // A transfer that did not finish within an election timeout is abandoned.
    abortLeaderTransfer();
  }
  if (heartbeatElapsed_ >= config_.heartbeatTick) {
    heartbeatElapsed_ = 0;
    bcastHeartbeat(readRound_);
  }
}

// ---- Messages -------------------------------------------------------------------------------

Status RaftCore::validate(const Message& m) const {
  if (m.to != id()) return Error{Errc::kInvalid, "raft: message for another node"};
  if (!m.from || m.from == id()) return Error{Errc::kInvalid, "raft: bad sender"};
  if (m.type > MessageType::kTransferLeader) return Error{Errc::kInvalid, "raft: unknown type"};
  if (m.type == MessageType::kApp) {
    Term prevTerm = m.logTerm;
    for (size_t i = 0; i < m.entries.size(); ++i) {
      const Entry& e = m.entries[i];
      if (e.index != m.index + (i + 1) || e.term < prevTerm || e.term > m.term ||
          e.type > Entry::Type::kConfChange) {
        return Error{Errc::kInvalid, "raft: malformed append"};
      }
      prevTerm = e.term;
    }
  }
  if (m.type == MessageType::kSnap) {
    if (!m.snapshot || !m.snapshot->index) {
      return Error{Errc::kInvalid, "raft: snapshot message without a snapshot"};
    }
    const auto& voters = m.snapshot->conf.voters;
    for (size_t i = 0; i < voters.size(); ++i) {
      if (!voters[i] || (i > 0 && voters[i] <= voters[i - 1])) {
        return Error{Errc::kInvalid, "raft: snapshot configuration not sorted and distinct"};
      }
    }
  }
  if (m.type == MessageType::kTransferLeader && !m.target) {
    return Error{Errc::kInvalid, "raft: transfer to nobody"};
  }
  return {};
}

Status RaftCore::step(const Message& m) {
  if (Status v = validate(m); !v) return v;
  if (m.type == MessageType::kSnapStatus || m.type == MessageType::kUnreachable) {
    if (role_ == Role::kLeader) stepLeader(m);
    return {};
  }
  bool isVoteRequest = m.type == MessageType::kPreVote || m.type == MessageType::kVote;
  if (m.term > term_) {
    if (isVoteRequest) {
      // §4.2.3 of the dissertation: a server that heard from a leader within the election
      // timeout neither updates its term nor grants its vote, so a removed or partitioned
      // server cannot depose a working leader. A transfer's campaign is exempt.
      bool inLease = config_.checkQuorum && leader_ && electionElapsed_ < config_.electionTick;
      if (inLease && !m.transfer) return {};
    }
    if (m.type == MessageType::kPreVote) {
      // Never change the term for a pre-vote.
    } else if (m.type == MessageType::kPreVoteResp && !m.reject) {
      // A granted pre-vote carries the term we would campaign in; we move there only once a
      // quorum granted it.
    } else if (m.type == MessageType::kApp || m.type == MessageType::kHeartbeat ||
               m.type == MessageType::kSnap) {
      becomeFollower(m.term, m.from);
    } else {
      becomeFollower(m.term, NodeId());
    }
  } else if (m.term < term_) {
    if ((config_.checkQuorum || config_.preVote) &&
        (m.type == MessageType::kApp || m.type == MessageType::kHeartbeat)) {
      // A leader of an older term. With check-quorum or pre-vote this node may have moved to
      // a term the others never reached (and will not follow it to): answer so that the old
      // leader steps down and a new election at our term can include us.
      Message resp;
      resp.type = MessageType::kAppResp;
      resp.to = m.from;
      send(std::move(resp));
    } else if (m.type == MessageType::kPreVote) {
      Message resp;
      resp.type = MessageType::kPreVoteResp;
      resp.to = m.from;
      resp.reject = true;
      send(std::move(resp));
    }
    // §5.1: "If a server receives a request with a stale term number, it rejects the request."
    return {};
  }

  if (isVoteRequest) {
    handleVote(m);
    return {};
  }
  switch (role_) {
    case Role::kFollower:
      stepFollower(m);
      break;
    case Role::kPreCandidate:
    case Role::kCandidate:
      stepCandidate(m);
      break;
    case Role::kLeader:
      stepLeader(m);
      break;
  }
  return {};
}

void RaftCore::handleVote(const Message& m) {
  // One vote per term, first come first served; a pre-vote for a future term commits to
  // nothing, so it may be granted regardless.
  bool canVote = vote_ == m.from || (!vote_ && !leader_) ||
                 (m.type == MessageType::kPreVote && m.term > term_);
  Message resp;
  resp.type = m.type == MessageType::kPreVote ? MessageType::kPreVoteResp : MessageType::kVoteResp;
  resp.to = m.from;
  if (canVote && log_.isUpToDate(m.index, m.logTerm)) {
    resp.term = m.term;
    if (m.type == MessageType::kVote) {
      electionElapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    resp.term = term_;
    resp.reject = true;
  }
  send(std::move(resp));
}

void RaftCore::stepFollower(const Message& m) {
  switch (m.type) {
    case MessageType::kApp:
      electionElapsed_ = 0;
      leader_ = m.from;
      handleAppend(m);
      break;
    case MessageType::kHeartbeat:
      electionElapsed_ = 0;
      leader_ = m.from;
      handleHeartbeat(m);
      break;
    case MessageType::kSnap:
      electionElapsed_ = 0;
      leader_ = m.from;
      handleSnapshot(m);
      break;
    case MessageType::kTimeoutNow:
      // Dissertation §3.10: "This request has the same effect as the target server's election
      // timer firing", except that pre-vote and leases are skipped: the leader asked.
      campaignAs(CampaignType::kTransfer);
      break;
    case MessageType::kReadIndexResp:
      readStates_.push_back(ReadState{m.index, m.context});
      break;
    default:
      break;
  }
}

void RaftCore::stepCandidate(const Message& m) {
  MessageType myVoteResp =
      role_ == Role::kPreCandidate ? MessageType::kPreVoteResp : MessageType::kVoteResp;
  switch (m.type) {
    case MessageType::kApp:
      // §5.2: a leader of our term exists; it is legitimate.
      becomeFollower(m.term, m.from);
      handleAppend(m);
      return;
    case MessageType::kHeartbeat:
      becomeFollower(m.term, m.from);
      handleHeartbeat(m);
      return;
    case MessageType::kSnap:
      becomeFollower(m.term, m.from);
      handleSnapshot(m);
      return;
    case MessageType::kReadIndexResp:
      readStates_.push_back(ReadState{m.index, m.context});
      return;
    default:
      break;
  }
  if (m.type != myVoteResp) return;
  int result = poll(m.from, !m.reject);
  if (result > 0) {
    if (role_ == Role::kPreCandidate) {
      campaignAs(CampaignType::kElection);
    } else {
      becomeLeader();
    }
  } else if (result < 0) {
    becomeFollower(term_, NodeId());
  }
}

void RaftCore::handleAppend(const Message& m) {
  Message resp;
  resp.type = MessageType::kAppResp;
  resp.to = m.from;
  if (m.index < log_.committed()) {
    // Everything up to our commit index is in the leader's log: tell it where to go on.
    resp.index = log_.committed();
    send(std::move(resp));
    return;
  }
  if (!log_.matchTerm(m.index, m.logTerm)) {
    // §5.3: "If the follower does not find an entry in its log with the same index and term,
    // then it refuses the new entries." The hint lets the leader skip a whole term at a time.
    LogIndex hint = log_.findConflictByTerm(std::min(m.index, log_.lastIndex()), m.logTerm);
    resp.index = m.index;
    resp.reject = true;
    resp.rejectHint = hint;
    resp.logTerm = log_.termOrZero(hint);
    send(std::move(resp));
    return;
  }
  LogIndex lastNew = m.index + m.entries.size();
  LogIndex conflict = log_.findConflict(m.entries);
  if (conflict) {
    TESSERA_RAFT_ASSERT(
        conflict > log_.committed(),
        "leader's entry " + std::to_string(conflict.value) + " conflicts with a committed one");
    std::vector<Entry> tail(m.entries.begin() + (conflict - m.index - 1), m.entries.end());
    bool changed = recordConfChanges(tail);
    log_.append(std::move(tail));
    if (changed) onConfChanged();
  }
  // Only the entries this message proved to match the leader's may be committed.
  log_.commitTo(std::min(m.commit, lastNew));
  resp.index = lastNew;
  send(std::move(resp));
}

void RaftCore::handleHeartbeat(const Message& m) {
  // The leader sends min(our match, its commit): entries we hold that match its log. A larger
  // value would be a broken leader; ignore it rather than commit what we cannot check.
  if (m.commit <= log_.lastIndex()) log_.commitTo(m.commit);
  Message resp;
  resp.type = MessageType::kHeartbeatResp;
  resp.to = m.from;
  resp.context = m.context;
  send(std::move(resp));
}

void RaftCore::handleSnapshot(const Message& m) {
  const SnapshotMeta& snap = *m.snapshot;
  Message resp;
  resp.type = MessageType::kAppResp;
  resp.to = m.from;
  if (snap.index <= log_.committed()) {
    resp.index = log_.committed();
  } else if (log_.matchTerm(snap.index, snap.term)) {
    // §7: "If instead the follower receives a snapshot that describes a prefix of its log ...
    // entries following the snapshot are still valid and must be retained."
    log_.commitTo(snap.index);
    resp.index = log_.committed();
  } else {
    // "the follower discards its entire log; it is all superseded by the snapshot".
    log_.restore(snap);
    confs_.clear();
    confs_[snap.index] = snap.conf;
    onConfChanged();
    resp.index = log_.lastIndex();
  }
  send(std::move(resp));
}

void RaftCore::send(Message m) {
  m.from = id();
  if (!m.term) m.term = term_;
  msgs_.push_back(std::move(m));
}

// ---- Ready ----------------------------------------------------------------------------------

bool RaftCore::hasReady() const {
  if (readyOutstanding_) return false;
  if (!msgs_.empty() || appendPending_ || readBroadcastPending_ || !readStates_.empty()) {
    return true;
  }
  if (log_.unstableSnapshot() || !log_.unstableEntries().empty()) return true;
  if (log_.hasNextCommittedEntries()) return true;
  if (HardState{term_, vote_, log_.committed()} != prevHardState_) return true;
  return SoftState{leader_, role_} != prevSoftState_;
}

Ready RaftCore::ready() {
  TESSERA_RAFT_ASSERT(!readyOutstanding_, "ready() before advance() of the previous Ready");
  // Proposals and reads since the last Ready go out together: one append per follower and one
  // heartbeat round, whatever their number.
  if (role_ == Role::kLeader && appendPending_) bcastAppend();
  if (role_ == Role::kLeader && readBroadcastPending_) bcastHeartbeat(readRound_);
  appendPending_ = false;
  readBroadcastPending_ = false;

  Ready rd;
  SoftState ss{leader_, role_};
  if (ss != prevSoftState_) {
    rd.softState = ss;
    prevSoftState_ = ss;
  }
  HardState hs{term_, vote_, log_.committed()};
  if (hs != prevHardState_) rd.hardState = hs;
  rd.snapshot = log_.unstableSnapshot();
  rd.entries = log_.unstableEntries();
  rd.messages = std::move(msgs_);
  msgs_.clear();
  rd.committedEntries = log_.nextCommittedEntries(config_.maxApplyBytes);
  rd.readStates = std::move(readStates_);
  readStates_.clear();
  // A commit index may be lost in a crash (it is learned again); a term, a vote, an entry or
  // a snapshot may not.
  rd.mustSync =
      rd.snapshot || !rd.entries.empty() ||
      (rd.hardState && (hs.term != prevHardState_.term || hs.vote != prevHardState_.vote));
  readyOutstanding_ = true;
  return rd;
}

void RaftCore::advance(const Ready& done) {
  TESSERA_RAFT_ASSERT(readyOutstanding_, "advance() without ready()");
  readyOutstanding_ = false;
  if (done.hardState) prevHardState_ = *done.hardState;
  if (done.snapshot) {
    log_.stableSnapshotTo(done.snapshot->index);
    log_.appliedTo(done.snapshot->index);
  }
  log_.stableTo(done.entries);
  if (!done.committedEntries.empty()) log_.appliedTo(done.committedEntries.back().index);
  pruneConfHistory();
}

// ---- Status ---------------------------------------------------------------------------------

RaftStatus RaftCore::status() const {
  RaftStatus s;
  s.id = id();
  s.term = term_;
  s.vote = vote_;
  s.role = role_;
  s.leader = leader_;
  s.firstIndex = log_.firstIndex();
  s.lastIndex = log_.lastIndex();
  s.commit = log_.committed();
  s.applied = log_.applied();
  s.conf = conf();
  s.leadTransferee = leadTransferee_;
  for (const auto& [peer, pr] : progress_) {
    s.peers.push_back(PeerStatus{peer, pr.match, pr.next, pr.state, pr.recentActive});
  }
  return s;
}

Result<SnapshotMeta> RaftCore::snapshotMeta(LogIndex index) const {
  if (index < log_.firstIndex().prev() || index > log_.applied()) {
    return Error{Errc::kRange, "raft: snapshot index outside [first - 1, applied]"};
  }
  auto t = log_.term(index);
  if (!t) return t.error();
  auto it = confs_.upper_bound(index);
  TESSERA_RAFT_ASSERT(it != confs_.begin(), "no configuration at the snapshot index");
  return SnapshotMeta{index, *t, std::prev(it)->second};
}

}  // namespace tessera::meta::raft
