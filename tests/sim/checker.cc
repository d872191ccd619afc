// The simulation's invariant checker: the Raft safety properties (paper Figure 3), checked
// after every tick, and the end-of-run checks (convergence, no acknowledged write lost,
// linearizability). Each check records what it saw, so a property is checked across all
// nodes and restarts without rescanning logs.
#include "tests/sim/sim.h"
#include "tests/sim/sim_internal.h"

namespace tessera::meta::raft::sim {

namespace {
std::string str(uint64_t v) { return std::to_string(v); }
}  // namespace

void Cluster::checkReadyEntries(Node& n, const Ready& rd) {
  // Log Matching: "if two logs contain an entry with the same index and term, then the logs
  // are identical in all entries up through the given index." By induction it is enough that
  // every (index, term) has one content and one predecessor term, on every node, ever.
  Term prevTerm;
  for (size_t k = 0; k < rd.entries.size(); ++k) {
    const Entry& e = rd.entries[k];
    if (k == 0) {
      auto t = n.core->termAt(e.index.prev());
      if (!t) {
        violation("node " + str(n.id.value) + " persists " + str(e.index.value) +
                  " without its predecessor");
        return;
      }
      prevTerm = *t;
    }
    Seen seen{fnv1a(e.data.data(), e.data.size(), uint64_t(e.type)), prevTerm};
    auto [it, fresh] = entries_.emplace(std::make_pair(e.index, e.term), seen);
    if (!fresh && (it->second.dataHash != seen.dataHash || it->second.prevTerm != prevTerm)) {
      violation("log matching: node " + str(n.id.value) + " has a different entry " +
                str(e.index.value) + "/t" + str(e.term.value));
      return;
    }
    prevTerm = e.term;
  }
}

void Cluster::checkLeaderHas(Node& n, LogIndex index, const Committed& c) {
  // Leader Completeness: "if a log entry is committed in a given term, then that entry will be
  // present in the logs of the leaders for all higher-numbered terms."
  if (c.inTerm >= n.core->term() || index < n.core->firstIndex()) return;
  auto t = n.core->termAt(index);
  if (!t || *t != c.term) {
    violation("leader completeness: leader " + str(n.id.value) + " of term " +
              str(n.core->term().value) + " lacks entry " + str(index.value) + "/t" +
              str(c.term.value) + " committed by term " + str(c.inTerm.value));
  }
}

void Cluster::checkInvariants() {
  newlyCommitted_.clear();
  for (auto& [id, np] : nodes_) {
    Node& n = *np;
    if (!n.up) continue;
    RaftCore& core = *n.core;
    // Election Safety: "at most one leader can be elected in a given term."
    if (core.role() == Role::kLeader) {
      auto [it, fresh] = leaderOfTerm_.emplace(core.term(), n.id);
      if (!fresh && it->second != n.id) {
        violation("election safety: nodes " + str(it->second.value) + " and " + str(id.value) +
                  " both lead term " + str(core.term().value));
      }
    }
    LogIndex commit = core.commit();
    if (commit < n.commitSeen) {
      violation("node " + str(id.value) + " commit moved back from " + str(n.commitSeen.value) +
                " to " + str(commit.value));
    }
    for (LogIndex i = n.commitSeen.next(); i <= commit; i = i.next()) {
      auto t = core.termAt(i);
      if (!t) continue;  // compacted: covered by the snapshot's state check
      auto [it, fresh] = committed_.emplace(i, Committed{*t, core.term()});
      if (fresh) {
        newlyCommitted_.push_back(i);
      } else if (it->second.term != *t) {
        violation("committed entries differ at " + str(i.value) + ": node " + str(id.value) +
                  " has term " + str(t->value) + ", another had " + str(it->second.term.value));
      } else if (core.term() < it->second.inTerm) {
        it->second.inTerm = core.term();
        newlyCommitted_.push_back(i);
      }
    }
    if (commit > n.commitSeen) n.commitSeen = commit;
  }
  for (auto& [id, np] : nodes_) {
    Node& n = *np;
    if (!n.up || n.core->role() != Role::kLeader) continue;
    if (n.leaderCheckedTerm != n.core->term()) {
      // A new leadership: everything committed so far.
      n.leaderCheckedTerm = n.core->term();
      for (const auto& [index, c] : committed_) checkLeaderHas(n, index, c);
    } else {
      for (LogIndex index : newlyCommitted_) checkLeaderHas(n, index, committed_.at(index));
    }
  }
  // Acknowledged writes are committed entries: nobody may commit anything else there.
  for (LogIndex index : newlyCommitted_) {
    auto ack = acked_.find(index);
    if (ack != acked_.end() && ack->second != committed_.at(index).term) {
      violation("acknowledged write at " + str(index.value) + " lost");
    }
  }
}

bool Cluster::converged() {
  Node* l = leader();
  if (!l) return false;
  for (auto& c : clients_) {
    if (c->busy) return false;
  }
  LogIndex commit = l->core->commit();
  if (commit != l->core->lastIndex()) return false;
  if (!acked_.empty() && acked_.rbegin()->first > commit) return false;
  for (NodeId v : l->core->conf().voters) {
    auto it = nodes_.find(v);
    if (it == nodes_.end() || !it->second->up) return false;
    Node& n = *it->second;
    if (n.pending || n.core->applied() != commit || n.core->leader() != l->id) return false;
  }
  return true;
}

void Cluster::finalChecks() {
  Node* l = leader();
  // No acknowledged write lost: each is committed, and every voter applied it (the applied
  // records then say they applied the same entry).
  for (const auto& [index, t] : acked_) {
    auto it = committed_.find(index);
    if (it == committed_.end() || it->second.term != t) {
      violation("acknowledged write at " + str(index.value) + " is not committed");
      return;
    }
    for (NodeId v : l->core->conf().voters) {
      if (nodes_.at(v)->kvApplied < index) {
        violation("node " + str(v.value) + " never applied acknowledged write " + str(index.value));
        return;
      }
    }
  }
  std::string why;
  if (!linearizable(history_, 0, &why)) violation("history not linearizable: " + why);
}

}  // namespace tessera::meta::raft::sim
