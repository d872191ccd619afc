#include "meta/raft/types.h"

#include <algorithm>

#include "meta/raft/assert.h"

namespace tessera::meta::raft {

void raftBug(const char* file, int line, const char* condition, const std::string& detail) {
  throw RaftBug(std::string(file) + ":" + std::to_string(line) + ": raft bug: " + condition +
                (detail.empty() ? "" : ": " + detail));
}

bool ConfState::contains(NodeId id) const {
  return std::binary_search(voters.begin(), voters.end(), id);
}

std::string ConfChange::encode() const {
  std::string out(9, '\0');
  out[0] = static_cast<char>(op);
  for (int i = 0; i < 8; ++i) out[1 + i] = static_cast<char>((node.value >> (8 * i)) & 0xff);
  return out;
}

Result<ConfChange> ConfChange::decode(std::string_view data) {
  if (data.size() != 9) return Error{Errc::kInvalid, "conf change: wrong size"};
  auto op = static_cast<uint8_t>(data[0]);
  if (op > static_cast<uint8_t>(Op::kRemoveVoter)) {
    return Error{Errc::kInvalid, "conf change: unknown op"};
  }
  uint64_t node = 0;
  for (int i = 0; i < 8; ++i) node |= uint64_t(static_cast<uint8_t>(data[1 + i])) << (8 * i);
  if (node == 0) return Error{Errc::kInvalid, "conf change: node 0"};
  return ConfChange{static_cast<Op>(op), NodeId(node)};
}

const char* messageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kPreVote: return "prevote";
    case MessageType::kPreVoteResp: return "prevoteResp";
    case MessageType::kVote: return "vote";
    case MessageType::kVoteResp: return "voteResp";
    case MessageType::kApp: return "app";
    case MessageType::kAppResp: return "appResp";
    case MessageType::kHeartbeat: return "heartbeat";
    case MessageType::kHeartbeatResp: return "heartbeatResp";
    case MessageType::kSnap: return "snap";
    case MessageType::kSnapStatus: return "snapStatus";
    case MessageType::kUnreachable: return "unreachable";
    case MessageType::kTimeoutNow: return "timeoutNow";
    case MessageType::kReadIndex: return "readIndex";
    case MessageType::kReadIndexResp: return "readIndexResp";
    case MessageType::kTransferLeader: return "transferLeader";
  }
  return "unknown";
}

const char* roleName(Role role) {
  switch (role) {
    case Role::kFollower: return "follower";
    case Role::kPreCandidate: return "preCandidate";
    case Role::kCandidate: return "candidate";
    case Role::kLeader: return "leader";
  }
  return "unknown";
}

std::string Message::toString() const {
  std::string s = messageTypeName(type);
  s += " " + std::to_string(from.value) + "->" + std::to_string(to.value);
  s += " t" + std::to_string(term.value);
  s += " i" + std::to_string(index.value) + "/t" + std::to_string(logTerm.value);
  if (!entries.empty()) {
    s += " n" + std::to_string(entries.size()) + "[" + std::to_string(entries.front().index.value) +
         ".." + std::to_string(entries.back().index.value) + "]";
  }
  if (commit) s += " c" + std::to_string(commit.value);
  if (reject) s += " reject hint" + std::to_string(rejectHint.value);
  if (snapshot) {
    s += " snap" + std::to_string(snapshot->index.value) + "/t" +
         std::to_string(snapshot->term.value);
  }
  if (context) s += " ctx" + std::to_string(context);
  if (target) s += " target" + std::to_string(target.value);
  if (transfer) s += " transfer";
  return s;
}

}  // namespace tessera::meta::raft
