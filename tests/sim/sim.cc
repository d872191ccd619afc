// The simulated world around the cores: nodes with disks, the network, clients and faults.
// The invariant checker is in checker.cc.
#include "tests/sim/sim.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "meta/raft/assert.h"
#include "tests/sim/sim_internal.h"

namespace tessera::meta::raft::sim {

namespace {

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::vector<uint64_t> seeds(size_t defaultRuns, const std::vector<uint64_t>& pinned) {
  if (const char* s = std::getenv("TESSERA_SIM_SEED"); s && *s) {
    return {std::strtoull(s, nullptr, 0)};
  }
  size_t runs = defaultRuns;
  if (const char* r = std::getenv("TESSERA_SIM_RUNS"); r && *r) runs = std::strtoull(r, nullptr, 0);
  std::vector<uint64_t> out = pinned;
  std::random_device device;
  uint64_t base = (uint64_t(device()) << 32) ^ device();
  for (size_t i = 0; i < runs; ++i) out.push_back(splitmix(base + i));
  return out;
}

Cluster::Cluster(const Options& options, uint64_t seed)
    : options_(options), seed_(seed), rng_(seed) {
  const char* v = std::getenv("TESSERA_SIM_TRACE");
  verbose_ = v && *v && *v != '0';
  // Small batches and short pipelines make partial replication (Figure 8's raw material)
  // common; large ones exercise batching.
  static const size_t kEntries[] = {1, 2, 8, 64};
  static const size_t kInflight[] = {1, 2, 4, 16};
  maxMsgEntries_ = kEntries[below(4)];
  maxInflight_ = kInflight[below(4)];
  heartbeatTick_ = std::min(options_.heartbeatTick + int(below(2)), options_.electionTick - 1);
  ConfState conf;
  for (int i = 1; i <= options_.nodes; ++i) conf.voters.push_back(NodeId(i));
  for (int i = 1; i <= options_.nodes; ++i) restart(addNode(NodeId(i), conf));
  nextNodeId_ = uint64_t(options_.nodes) + 1;
  for (int i = 0; i < options_.clients; ++i) {
    auto c = std::make_unique<Client>();
    c->id = i;
    c->opsLeft = options_.opsPerClient;
    c->target = NodeId(1 + below(uint64_t(options_.nodes)));
    c->seen.assign(size_t(options_.keys), 0);
    clients_.push_back(std::move(c));
  }
}

Cluster::~Cluster() = default;

uint64_t Cluster::below(uint64_t n) { return n ? rng_() % n : 0; }

bool Cluster::chance(double p) { return double(rng_() >> 11) * 0x1.0p-53 < p; }

void Cluster::trace(const char* what, std::initializer_list<uint64_t> fields) {
  for (const char* p = what; *p; ++p) traceHash_ = fnv1a(p, 1, traceHash_);
  traceHash_ = fnv1a(&now_, sizeof now_, traceHash_);
  for (uint64_t f : fields) traceHash_ = fnv1a(&f, sizeof f, traceHash_);
  ++traceEvents_;
  if (verbose_) {
    std::fprintf(stderr, "[%lld] %s", static_cast<long long>(now_), what);
    for (uint64_t f : fields) std::fprintf(stderr, " %llu", static_cast<unsigned long long>(f));
    std::fprintf(stderr, "\n");
  }
}

void Cluster::violation(std::string what) {
  std::string v = "tick " + std::to_string(now_) + ": " + std::move(what);
  if (verbose_) std::fprintf(stderr, "VIOLATION %s\n", v.c_str());
  violations_.push_back(std::move(v));
}

Cluster::Node& Cluster::addNode(NodeId id, ConfState conf) {
  auto n = std::make_unique<Node>(id, conf, options_.keys);
  Node& ref = *n;
  nodes_[id] = std::move(n);
  return ref;
}

Cluster::Node* Cluster::leader() {
  Node* best = nullptr;
  for (auto& [id, n] : nodes_) {
    if (n->up && n->core->role() == Role::kLeader &&
        (!best || n->core->term() > best->core->term())) {
      best = n.get();
    }
  }
  return best;
}

bool Cluster::partitioned(NodeId a, NodeId b) const {
  if (oneWay_.count({a, b})) return true;
  auto ga = group_.find(a), gb = group_.find(b);
  return (ga == group_.end() ? 0 : ga->second) != (gb == group_.end() ? 0 : gb->second);
}

// ---- The run --------------------------------------------------------------------------------

void Cluster::run() {
  try {
    for (int t = 0; t < options_.ticks && violations_.empty(); ++t) tick();
    if (!violations_.empty()) return;
    // The faults stop: heal, bring everyone back, and let the cluster converge.
    faulty_ = false;
    group_.clear();
    oneWay_.clear();
    trace("heal", {});
    for (auto& [id, n] : nodes_) {
      if (!n->up) restart(*n);
    }
    bool done = false;
    for (int t = 0; t < options_.settleTicks && violations_.empty() && !done; ++t) {
      tick();
      done = converged();
    }
    if (!violations_.empty()) return;
    if (!done) {
      Node* l = leader();
      violation("no convergence " + std::to_string(options_.settleTicks) +
                " ticks after the faults stopped (leader " +
                (l ? std::to_string(l->id.value) : std::string("none")) + ")");
      return;
    }
    finalChecks();
  } catch (const RaftBug& e) {
    violation(e.what());
  }
}

void Cluster::tick() {
  ++now_;
  if (faulty_) faults();
  for (auto& [id, n] : nodes_) {
    if (!n->up && faulty_ && n->restartAt <= now_) restart(*n);
  }
  for (auto& [id, n] : nodes_) {
    // A node's clock occasionally lags: ticks are not in lockstep.
    if (n->up && !chance(0.05)) n->core->tick();
  }
  deliver();
  clientsAct(faulty_);
  processReadies();
  checkInvariants();
}

void Cluster::faults() {
  if (every(options_.partitionEvery)) {
    if (group_.empty() && oneWay_.empty()) {
      // Isolate one node (often the leader), split the cluster in two, or break links in one
      // direction only (a node that hears but is not heard, or the reverse).
      Node* l = leader();
      auto pick = [&] {
        auto it = nodes_.begin();
        std::advance(it, below(nodes_.size()));
        return it->first;
      };
      uint64_t kind = below(3);
      if (kind == 0) {
        group_[l && chance(0.5) ? l->id : pick()] = 1;
      } else if (kind == 1) {
        for (auto& [id, n] : nodes_) group_[id] = int(below(2));
      } else {
        NodeId victim = l && chance(0.5) ? l->id : pick();
        bool outgoing = chance(0.5);
        for (auto& [id, n] : nodes_) {
          if (id != victim && chance(0.7)) {
            oneWay_.insert(outgoing ? std::make_pair(victim, id) : std::make_pair(id, victim));
          }
        }
      }
      stats_["partitions"]++;
      trace("partition", {kind});
    } else {
      group_.clear();
      oneWay_.clear();
      trace("heal", {});
    }
  }
  if (every(options_.crashEvery)) {
    std::vector<Node*> up;
    for (auto& [id, n] : nodes_) {
      if (n->up) up.push_back(n.get());
    }
    // Leaders crash more often than the rest: that is where the hard cases are.
    Node* l = leader();
    if (l && chance(0.5)) {
      crash(*l);
    } else if (!up.empty()) {
      crash(*up[below(up.size())]);
    }
  }
  if (every(options_.compactEvery)) {
    auto it = nodes_.begin();
    std::advance(it, below(nodes_.size()));
    Node& n = *it->second;
    LogIndex at = n.up ? n.core->applied() : LogIndex();
    if (n.up && at >= n.core->firstIndex()) {
      TESSERA_RAFT_ASSERT(at == n.kvApplied, "state machine and core disagree on applied");
      auto meta = n.core->snapshotMeta(at);
      if (!meta) {
        violation("snapshotMeta(applied) failed: " + meta.error().toString());
      } else if (!n.disk.write(DiskOp::snapshotOp(DiskOp::Kind::kCompact, *meta, n.kv.encode())) ||
                 !n.disk.sync()) {
        violation("compaction refused by storage");
      }
      stats_["compactions"]++;
      trace("compact", {n.id.value, at.value});
    }
  }
  if (every(options_.membershipEvery)) {
    if (Node* l = leader()) {
      const ConfState& conf = l->core->conf();
      int size = int(conf.voters.size());
      if (size < options_.maxVoters && (size <= options_.minVoters || chance(0.5))) {
        NodeId id(nextNodeId_);
        auto r = l->core->proposeConfChange(ConfChange{ConfChange::Op::kAddVoter, id});
        trace("add", {id.value, r.ok()});
        if (r) {
          ++nextNodeId_;
          restart(addNode(id, ConfState()));
          stats_["adds"]++;
        }
      } else if (size > options_.minVoters) {
        NodeId victim = conf.voters[below(conf.voters.size())];
        auto r = l->core->proposeConfChange(ConfChange{ConfChange::Op::kRemoveVoter, victim});
        trace("remove", {victim.value, r.ok()});
        if (r) stats_["removes"]++;
      }
    }
  }
  if (every(options_.transferEvery)) {
    if (Node* l = leader()) {
      const auto& voters = l->core->conf().voters;
      NodeId target = voters[below(voters.size())];
      Status s = l->core->transferLeadership(target);
      trace("transfer", {l->id.value, target.value, s.ok()});
      stats_["transfers"]++;
    }
  }
}

void Cluster::crash(Node& n) {
  trace("crash", {n.id.value, n.disk.unsynced()});
  stats_["crashes"]++;
  n.up = false;
  n.core.reset();
  n.pending.reset();
  n.disk.crash(below(n.disk.unsynced() + 1));
  n.writes.clear();
  n.reads.clear();
  n.snapInbox.clear();
  n.restartAt = now_ + 10 + int64_t(below(100));
}

void Cluster::restart(Node& n) {
  n.up = true;
  ++n.incarnation;
  RaftConfig cfg;
  cfg.id = n.id;
  cfg.electionTick = options_.electionTick;
  cfg.heartbeatTick = heartbeatTick_;
  cfg.preVote = true;
  cfg.checkQuorum = options_.checkQuorum;
  cfg.maxMsgEntries = maxMsgEntries_;
  cfg.maxInflight = maxInflight_;
  n.core = std::make_unique<RaftCore>(cfg, n.disk.live, rng_);
  const MemoryStorage& s = n.disk.live;
  n.kvApplied = s.snapshot().index;
  n.kv = s.snapshot().index ? Kv::decode(s.snapshotData()) : Kv(n.keys);
  n.commitSeen = n.core->commit();
  n.leaderCheckedTerm = Term();
  n.pending.reset();
  trace("restart", {n.id.value, n.core->term().value, n.core->commit().value});
}

// ---- Network --------------------------------------------------------------------------------

void Cluster::send(Node& from, Message m) {
  NodeId to = m.to;
  bool snap = m.type == MessageType::kSnap;
  std::string data;
  if (snap) {
    // The node streams the snapshot the message names; if it was replaced meanwhile, the
    // stream fails.
    if (from.disk.live.snapshot().index != m.snapshot->index) {
      from.core->reportSnapshot(to, false);
      return;
    }
    data = from.disk.live.snapshotData();
    stats_["snapshots sent"]++;
  }
  if (faulty_ && (partitioned(from.id, to) || chance(options_.dropRate))) {
    if (snap) from.core->reportSnapshot(to, false);
    if (partitioned(from.id, to) && chance(0.5)) from.core->reportUnreachable(to);
    return;
  }
  int copies = faulty_ && chance(options_.dupRate) ? 2 : 1;
  for (int i = 0; i < copies; ++i) {
    int64_t delay = 1 + int64_t(below(uint64_t(options_.maxDelay)));
    network_.push_back(InFlight{now_ + delay, sendSeq_++, from.incarnation, m, data});
  }
}

void Cluster::deliver() {
  std::vector<InFlight> due;
  auto split = std::stable_partition(network_.begin(), network_.end(),
                                     [&](const InFlight& f) { return f.at > now_; });
  std::move(split, network_.end(), std::back_inserter(due));
  network_.erase(split, network_.end());
  std::sort(due.begin(), due.end(), [](const InFlight& a, const InFlight& b) {
    return a.at != b.at ? a.at < b.at : a.seq < b.seq;
  });
  for (InFlight& f : due) {
    const Message& m = f.msg;
    auto toIt = nodes_.find(m.to);
    auto fromIt = nodes_.find(m.from);
    bool lost = toIt == nodes_.end() || !toIt->second->up || (faulty_ && partitioned(m.from, m.to));
    Node* sender = fromIt != nodes_.end() && fromIt->second->up &&
                           fromIt->second->incarnation == f.fromIncarnation
                       ? fromIt->second.get()
                       : nullptr;
    if (lost) {
      if (m.type == MessageType::kSnap && sender) sender->core->reportSnapshot(m.to, false);
      continue;
    }
    Node& to = *toIt->second;
    trace("deliver", {uint64_t(m.type), m.from.value, m.to.value, m.term.value, m.index.value,
                      m.logTerm.value, m.commit.value, m.entries.size(), m.reject, m.context});
    if (m.type == MessageType::kSnap) to.snapInbox[m.snapshot->index] = std::move(f.snapData);
    if (Status s = to.core->step(m); !s) {
      violation("node " + std::to_string(m.to.value) + " refused " + m.toString() + ": " +
                s.error().toString());
      return;
    }
    if (m.type == MessageType::kSnap && sender) sender->core->reportSnapshot(m.to, true);
  }
}

// ---- Readies --------------------------------------------------------------------------------

void Cluster::processReadies() {
  for (auto& [id, np] : nodes_) {
    Node& n = *np;
    for (int guard = 0; guard < 4 && n.up && violations_.empty(); ++guard) {
      if (n.pending) {
        if (n.pendingDoneAt > now_) break;
        completeReady(n);
        continue;
      }
      if (!n.core->hasReady()) break;
      startReady(n);
    }
  }
}

void Cluster::startReady(Node& n) {
  Ready rd = n.core->ready();
  checkReadyEntries(n, rd);
  n.pending = std::move(rd);
  // Persisting takes a while when there are faults: the core goes on meanwhile.
  n.pendingDoneAt = now_ + (faulty_ ? int64_t(below(3)) : 0);
}

void Cluster::completeReady(Node& n) {
  Ready rd = std::move(*n.pending);
  n.pending.reset();
  auto written = [&](Status s) {
    if (!s) violation("node " + std::to_string(n.id.value) + " storage: " + s.error().toString());
  };
  if (rd.snapshot) {
    auto it = n.snapInbox.find(rd.snapshot->index);
    if (it == n.snapInbox.end()) {
      violation("snapshot " + std::to_string(rd.snapshot->index.value) + " was never received");
      return;
    }
    written(n.disk.write(DiskOp::snapshotOp(DiskOp::Kind::kSnapshot, *rd.snapshot, it->second)));
    n.kv = Kv::decode(it->second);
    n.kvApplied = rd.snapshot->index;
    auto state = stateAt_.find(n.kvApplied);
    if (state != stateAt_.end() && state->second != n.kv.hash()) {
      violation("snapshot at " + std::to_string(n.kvApplied.value) + " differs from the state " +
                "others reached there");
    }
    n.snapInbox.erase(n.snapInbox.begin(), std::next(it));
    stats_["snapshots installed"]++;
    trace("install", {n.id.value, rd.snapshot->index.value});
  }
  if (!rd.entries.empty()) written(n.disk.write(DiskOp::appendOp(rd.entries)));
  if (rd.hardState) written(n.disk.write(DiskOp::hardStateOp(*rd.hardState)));
  if (rd.mustSync) written(n.disk.sync());
  // Only now, with the Ready durable, may its messages go out.
  for (Message& m : rd.messages) send(n, std::move(m));
  for (const Entry& e : rd.committedEntries) apply(n, e);
  for (const ReadState& r : rd.readStates) {
    auto it = n.reads.find(r.requestId);
    if (it != n.reads.end()) it->second.index = r.index;
  }
  serveReads(n);
  if (rd.softState && rd.softState->role == Role::kLeader) {
    stats_["elections"]++;
    trace("leader", {n.id.value, n.core->term().value});
  }
  n.core->advance(rd);
}

void Cluster::apply(Node& n, const Entry& e) {
  if (e.index != n.kvApplied.next()) {
    violation("node " + std::to_string(n.id.value) + " applied " + std::to_string(e.index.value) +
              " after " + std::to_string(n.kvApplied.value));
    return;
  }
  n.kvApplied = e.index;
  uint64_t h = fnv1a(e.data.data(), e.data.size(), uint64_t(e.type));
  auto [rec, fresh] = applied_.emplace(e.index, std::make_pair(e.term, h));
  if (!fresh && rec->second != std::make_pair(e.term, h)) {
    violation("state machine safety: node " + std::to_string(n.id.value) + " applied term " +
              std::to_string(e.term.value) + " at " + std::to_string(e.index.value) +
              ", another node term " + std::to_string(rec->second.first.value));
    return;
  }
  if (e.type == Entry::Type::kNormal && !e.data.empty()) {
    auto cmd = KvCommand::decode(e.data);
    if (!cmd) {
      violation("undecodable command at " + std::to_string(e.index.value));
      return;
    }
    auto result = n.kv.apply(*cmd);
    if (result && n.writes.erase({cmd->client, cmd->seq})) {
      auto [ack, first] = acked_.emplace(e.index, e.term);
      if (!first && ack->second != e.term) violation("two acked entries at one index");
      respond(cmd->client, cmd->seq, *result);
    }
  }
  auto [state, first] = stateAt_.emplace(e.index, n.kv.hash());
  if (!first && state->second != n.kv.hash()) {
    violation("state machine safety: node " + std::to_string(n.id.value) +
              " reached a different state at " + std::to_string(e.index.value));
  }
}

void Cluster::serveReads(Node& n) {
  for (auto it = n.reads.begin(); it != n.reads.end();) {
    const Node::Read& r = it->second;
    if (r.index && *r.index <= n.kvApplied) {
      respond(r.client, r.seq, n.kv.get(r.key));
      it = n.reads.erase(it);
    } else {
      ++it;
    }
  }
}

// ---- Clients --------------------------------------------------------------------------------

void Cluster::clientsAct(bool allowNew) {
  for (auto& cp : clients_) {
    Client& c = *cp;
    if (!c.busy) {
      if (!allowNew || c.opsLeft <= 0 || !chance(0.1)) continue;
      ++c.seq;
      KvOp op;
      op.client = c.id;
      op.key = int(below(uint64_t(options_.keys)));
      uint64_t kind = below(10);
      op.kind = kind < 4 ? KvOp::Kind::kPut : kind < 8 ? KvOp::Kind::kGet : KvOp::Kind::kCas;
      op.value = int64_t(c.id) * 1000000 + int64_t(c.seq);
      op.expected = c.seen[size_t(op.key)];
      op.call = ++clock_;
      c.op = history_.size();
      history_.push_back(op);
      c.busy = true;
      c.nextTryAt = now_;
      trace("call", {uint64_t(c.id), c.seq, uint64_t(op.kind), uint64_t(op.key)});
    }
    if (now_ >= c.nextTryAt) attempt(c);
  }
}

void Cluster::attempt(Client& c) {
  const KvOp& op = history_[c.op];
  bool read = op.kind == KvOp::Kind::kGet;
  NodeId target = c.target;
  // Half the reads go to any node: followers serve them after a ReadIndex round.
  if (read && chance(0.5)) {
    auto it = nodes_.begin();
    std::advance(it, below(nodes_.size()));
    target = it->first;
  }
  // A timed-out attempt: the node may lead a minority and never answer. Try another.
  if (c.waiting) {
    auto other = nodes_.begin();
    std::advance(other, below(nodes_.size()));
    target = c.target = other->first;
  }
  c.waiting = false;
  auto it = nodes_.find(target);
  if (it == nodes_.end() || !it->second->up) {
    auto other = nodes_.begin();
    std::advance(other, below(nodes_.size()));
    c.target = other->first;
    c.nextTryAt = now_ + 1 + int64_t(below(3));
    return;
  }
  Node& n = *it->second;
  Status s;
  if (read) {
    uint64_t req = nextRequestId_++;
    s = n.core->readIndex(req);
    if (s) n.reads[req] = Node::Read{c.id, c.seq, op.key, std::nullopt};
  } else {
    KvCommand cmd;
    cmd.kind = op.kind == KvOp::Kind::kPut ? KvCommand::Kind::kPut : KvCommand::Kind::kCas;
    cmd.client = c.id;
    cmd.seq = c.seq;
    cmd.key = op.key;
    cmd.value = op.value;
    cmd.expected = op.expected;
    auto r = n.core->propose(cmd.encode());
    if (r) n.writes.insert({c.id, c.seq});
    s = r.ok() ? Status() : Status(r.error());
  }
  trace("attempt", {uint64_t(c.id), c.seq, n.id.value, s.ok()});
  if (s) {
    c.nextTryAt = now_ + 4 * options_.electionTick;  // then retry, same sequence number
    c.waiting = true;
    return;
  }
  NodeId hint = n.core->leader();
  if (hint && nodes_.count(hint)) {
    c.target = hint;
  } else {
    auto other = nodes_.begin();
    std::advance(other, below(nodes_.size()));
    c.target = other->first;
  }
  c.nextTryAt = now_ + 1 + int64_t(below(3));
}

void Cluster::respond(int client, uint64_t seq, int64_t result) {
  Client& c = *clients_.at(size_t(client));
  if (!c.busy || c.seq != seq) return;
  KvOp& op = history_[c.op];
  op.ret = ++clock_;
  if (op.kind == KvOp::Kind::kGet) {
    op.out = result;
    c.seen[size_t(op.key)] = result;
  }
  if (op.kind == KvOp::Kind::kCas) op.ok = result == 1;
  c.busy = false;
  c.waiting = false;
  --c.opsLeft;
  stats_["ops"]++;
  trace("return", {uint64_t(client), seq, uint64_t(result)});
}

std::string Cluster::summary() const {
  std::string s = "seed " + std::to_string(seed_) + ", " + std::to_string(now_) + " ticks";
  for (const auto& [k, v] : stats_) s += ", " + std::to_string(v) + " " + k;
  s += ", maxMsgEntries " + std::to_string(maxMsgEntries_) + ", maxInflight " +
       std::to_string(maxInflight_) + ", heartbeatTick " + std::to_string(heartbeatTick_);
  return s;
}

}  // namespace tessera::meta::raft::sim
